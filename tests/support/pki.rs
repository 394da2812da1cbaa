//! A throw-away PKI written to a temp dir: a CA, ECDSA P-256 server certificates, an RSA server
//! certificate (on demand), and client identities (valid, from another CA, expired).
//!
//! Files in the dir (all PEM, keys PKCS#8):
//! `ca.pem`, `server.pem`/`server.key` (localhost, 127.0.0.1), `other.pem`/`other.key`
//! (other.test), `other-ca.pem`, and after [`Pki::rsa_server`] `rsa.pem`/`rsa.key`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;

/// A client certificate chain and its key, for a rustls client.
#[derive(Clone, Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
}

impl Identity {
    /// A certificate and its PKCS#8 key made elsewhere (an enrolled machine's).
    pub fn from_parts(cert: CertificateDer<'static>, key_pkcs8: Vec<u8>) -> Identity {
        Identity {
            chain: vec![cert],
            key_pkcs8,
        }
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// The end-entity certificate (DER).
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The end-entity certificate as a PEM block.
    pub fn cert_pem(&self) -> String {
        cert_pem(self.cert())
    }
}

/// A self-signed client certificate (ECDSA P-256, clientAuth, valid 2020-2099) with subject
/// `CN=<cn>`: no CA involved, the kind `client_auth = "pinned"` is for.
pub fn self_signed_client(cn: &str) -> Identity {
    let key = KeyPair::generate().expect("self-signed client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("self-signed params");
    params.distinguished_name = dn(cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
    let cert = params.self_signed(&key).expect("self-sign client");
    Identity {
        chain: vec![cert.der().clone()],
        key_pkcs8: key.serialize_der(),
    }
}

/// `der` as a `-----BEGIN CERTIFICATE-----` PEM block (64-column base64).
pub fn cert_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

pub struct Pki {
    dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
    pub ca: CertificateDer<'static>,
    /// `server.pem`: SAN localhost, 127.0.0.1.
    pub server: CertificateDer<'static>,
    /// `other.pem`: SAN other.test.
    pub other_server: CertificateDer<'static>,
    /// Signed by the CA, clientAuth, valid.
    pub client: Identity,
    /// Signed by an unrelated CA.
    pub foreign_client: Identity,
    /// Signed by the CA, expired in 2020.
    pub expired_client: Identity,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn new_ca(cn: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name = dn(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date_time_ymd(2015, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert, Issuer::new(params, key))
}

enum Validity {
    Current,
    Expired,
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    key: &KeyPair,
    cn: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    validity: Validity,
) -> rcgen::Certificate {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<String>>())
            .expect("leaf params");
    params.distinguished_name = dn(cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    match validity {
        Validity::Current => {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2099, 12, 31);
        }
        Validity::Expired => {
            params.not_before = date_time_ymd(2019, 1, 1);
            params.not_after = date_time_ymd(2020, 1, 1);
        }
    }
    params.signed_by(key, issuer).expect("sign leaf")
}

fn client_identity(issuer: &Issuer<'_, KeyPair>, cn: &str, validity: Validity) -> Identity {
    let key = KeyPair::generate().expect("client key");
    let cert = leaf(
        issuer,
        &key,
        cn,
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        validity,
    );
    Identity {
        chain: vec![cert.der().clone()],
        key_pkcs8: key.serialize_der(),
    }
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-test-")
            .tempdir()
            .expect("temp dir");
        let (ca, issuer) = new_ca("Portcullis Test CA");
        let (other_ca, other_issuer) = new_ca("Unrelated Test CA");

        let server_key = KeyPair::generate().expect("server key");
        let server = leaf(
            &issuer,
            &server_key,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        );
        let other_key = KeyPair::generate().expect("other key");
        let other_server = leaf(
            &issuer,
            &other_key,
            "other.test",
            &["other.test"],
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        );

        let pki = Pki {
            client: client_identity(&issuer, "good client", Validity::Current),
            foreign_client: client_identity(&other_issuer, "foreign client", Validity::Current),
            expired_client: client_identity(&issuer, "expired client", Validity::Expired),
            ca: ca.der().clone(),
            server: server.der().clone(),
            other_server: other_server.der().clone(),
            issuer,
            dir,
        };
        pki.write("ca.pem", &ca.pem());
        pki.write("other-ca.pem", &other_ca.pem());
        pki.write("server.pem", &server.pem());
        pki.write("server.key", &server_key.serialize_pem());
        pki.write("other.pem", &other_server.pem());
        pki.write("other.key", &other_key.serialize_pem());
        pki
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// A new client identity (ECDSA P-256, clientAuth, valid) with subject `CN=<cn>`, signed
    /// by the CA: another machine the listener's `client_ca` accepts, with its own SPKI pin.
    pub fn new_client(&self, cn: &str) -> Identity {
        client_identity(&self.issuer, cn, Validity::Current)
    }

    /// Writes `expired-server.pem`/`.key`: localhost/127.0.0.1, signed by the CA, expired in
    /// 2020.
    pub fn expired_server(&self) {
        let key = KeyPair::generate().expect("key");
        let cert = leaf(
            &self.issuer,
            &key,
            "expired server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Expired,
        );
        self.write("expired-server.pem", &cert.pem());
        self.write("expired-server.key", &key.serialize_pem());
    }

    /// Writes `<stem>.pem`/`<stem>.key`: a server certificate from the CA with exactly
    /// `sans` (DNS names, `*.` wildcards, IP addresses; none at all for an empty slice).
    pub fn server_named(&self, stem: &str, sans: &[&str]) {
        let key = KeyPair::generate().expect("key");
        let cert = leaf(
            &self.issuer,
            &key,
            stem,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        );
        self.write(&format!("{stem}.pem"), &cert.pem());
        self.write(&format!("{stem}.key"), &key.serialize_pem());
    }

    /// Writes `renewed-server.pem`/`.key`: a new key and certificate for localhost/127.0.0.1
    /// from the same CA, as a renewal would bring; returns the certificate.
    pub fn renewed_server(&self) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let cert = leaf(
            &self.issuer,
            &key,
            "renewed server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        );
        self.write("renewed-server.pem", &cert.pem());
        self.write("renewed-server.key", &key.serialize_pem());
        cert.der().clone()
    }

    /// Writes `foreign-server.pem`/`.key`: localhost/127.0.0.1, valid, signed by a CA of its
    /// own that nothing trusts.
    pub fn foreign_server(&self) {
        let (_, issuer) = new_ca("Foreign Server CA");
        let key = KeyPair::generate().expect("key");
        let cert = leaf(
            &issuer,
            &key,
            "foreign server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        );
        self.write("foreign-server.pem", &cert.pem());
        self.write("foreign-server.key", &key.serialize_pem());
    }

    /// Writes `<name>.pem`/`<name>.key` for `id` (a client identity the gateway can present).
    pub fn write_identity(&self, name: &str, id: &Identity) {
        self.write(&format!("{name}.pem"), &cert_pem(id.cert().as_ref()));
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&id.key_pkcs8);
        let mut key = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            key.push_str(std::str::from_utf8(line).expect("ASCII"));
            key.push('\n');
        }
        key.push_str("-----END PRIVATE KEY-----\n");
        self.write(&format!("{name}.key"), &key);
    }

    /// A rustls server config for an upstream: `<cert>.pem`/`<cert>.key` from the dir, and,
    /// with `client_ca`, client certificates required and verified against it.
    pub fn upstream_tls(
        &self,
        cert: &str,
        client_ca: Option<&str>,
    ) -> std::sync::Arc<rustls::ServerConfig> {
        self.upstream_tls_with(cert, client_ca, rustls::DEFAULT_VERSIONS)
    }

    /// [`Pki::upstream_tls`] speaking only `versions`.
    pub fn upstream_tls_with(
        &self,
        cert: &str,
        client_ca: Option<&str>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::sync::Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject as _;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.path(&format!("{cert}.pem")))
                .expect("chain")
                .collect::<Result<_, _>>()
                .expect("chain PEM");
        let key = PrivateKeyDer::from_pem_file(self.path(&format!("{cert}.key"))).expect("key");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .expect("versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(self.path(ca)).expect("ca") {
                    roots.add(c.expect("ca PEM")).expect("root");
                }
                builder.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        std::sync::Arc::new(roots),
                        provider,
                    )
                    .build()
                    .expect("verifier"),
                )
            }
        };
        let mut config = builder.with_single_cert(chain, key).expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    }

    /// Writes `rsa.pem`/`rsa.key`: an RSA-2048 server certificate for localhost/127.0.0.1,
    /// signed by the CA. Returns the certificate.
    /// Write `name`: a CRL from the test CA revoking `revoked`, due for renewal at
    /// `next_update` (its issue date a day before, or `next_update` minus a day if earlier).
    pub fn write_crl(&self, name: &str, revoked: &[&Identity], next_update: time::OffsetDateTime) {
        use rcgen::{
            CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber,
        };
        let this_update = next_update - time::Duration::days(1);
        let revoked_certs = revoked
            .iter()
            .map(|id| {
                let (_, cert) =
                    x509_parser::parse_x509_certificate(id.cert().as_ref()).expect("parse");
                RevokedCertParams {
                    serial_number: SerialNumber::from_slice(cert.raw_serial()),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                }
            })
            .collect();
        let crl = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .expect("sign the CRL");
        self.write(name, &crl.pem().expect("CRL PEM"));
    }

    pub fn rsa_server(&self) -> CertificateDer<'static> {
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).expect("RSA-2048 key generation");
        let cert = leaf(
            &self.issuer,
            &key,
            "localhost (RSA)",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        );
        self.write("rsa.pem", &cert.pem());
        self.write("rsa.key", &key.serialize_pem());
        cert.der().clone()
    }
}
