//! Loading PEM files (rustls-pki-types `PemObject`) into rustls types, with errors that name
//! the file and say what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::provider;

/// A certificate this close to expiry is loaded with a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file could not be read at all.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
        is_key: bool,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{} is not PEM: expected a \"-----BEGIN {expected}-----\" block", path.display())]
    NotPem {
        path: PathBuf,
        expected: &'static str,
        is_key: bool,
    },
    /// A PEM block is malformed (bad base64, missing END line).
    #[error("{} has a malformed PEM block: {reason}", path.display())]
    BadPem {
        path: PathBuf,
        reason: String,
        is_key: bool,
    },
    /// The certificate's DER does not parse as X.509.
    #[error("{} holds a certificate that is not valid X.509: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    /// The private key is of a type or curve rustls cannot sign with.
    #[error("{} holds a private key that cannot be used: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    /// The key file holds a valid key, but for another certificate.
    #[error("the private key in {} does not match the certificate in {}", key.display(), chain.display())]
    KeyMismatch { chain: PathBuf, key: PathBuf },
    /// The end-entity certificate's validity period is over.
    #[error("the certificate in {} expired on {not_after}", path.display())]
    Expired { path: PathBuf, not_after: String },
    /// The end-entity certificate is not valid yet.
    #[error("the certificate in {} is not valid before {not_before}", path.display())]
    NotYetValid { path: PathBuf, not_before: String },
    /// A certificate in the chain is signed with a broken hash or has a key too small.
    #[error("the certificate \"{subject}\" in {} {reason}", path.display())]
    Weak {
        path: PathBuf,
        subject: String,
        reason: String,
    },
}

impl TlsFileError {
    /// Which config key the error belongs to: `chain` or `key`.
    pub fn key_field(&self) -> &'static str {
        match self {
            TlsFileError::Read { is_key, .. }
            | TlsFileError::NotPem { is_key, .. }
            | TlsFileError::BadPem { is_key, .. } => {
                if *is_key {
                    "key"
                } else {
                    "chain"
                }
            }
            TlsFileError::BadKey { .. } | TlsFileError::KeyMismatch { .. } => "key",
            TlsFileError::BadCertificate { .. }
            | TlsFileError::Expired { .. }
            | TlsFileError::NotYetValid { .. }
            | TlsFileError::Weak { .. } => "chain",
        }
    }
}

/// A server certificate ready to serve, with what validation learnt about it.
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// Lower-cased DNS names from the SAN extension (may start with `*.`).
    pub names: Vec<String>,
    /// IP addresses from the SAN extension (a client reaching the listener by address
    /// verifies the certificate against these).
    pub ips: Vec<std::net::IpAddr>,
    pub not_after: SystemTime,
    /// Set when the certificate expires within [`EXPIRY_WARNING`] of `now`.
    pub expiry_warning: Option<String>,
}

fn read(path: &Path, is_key: bool) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_path_buf(),
        source,
        is_key,
    })
}

fn pem_error(path: &Path, e: pem::Error, expected: &'static str, is_key: bool) -> TlsFileError {
    match e {
        pem::Error::NoItemsFound => TlsFileError::NotPem {
            path: path.to_path_buf(),
            expected,
            is_key,
        },
        other => TlsFileError::BadPem {
            path: path.to_path_buf(),
            reason: other.to_string(),
            is_key,
        },
    }
}

/// All certificates in a PEM file, in order; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(path, false)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e, "CERTIFICATE", false))?;
    if certs.is_empty() {
        return Err(pem_error(
            path,
            pem::Error::NoItemsFound,
            "CERTIFICATE",
            false,
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read(path, true)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_error(path, e, "PRIVATE KEY", true))
}

/// A CA bundle for verifying client certificates.
pub fn load_client_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsFileError> {
    let certs = load_certs(path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsFileError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// A certificate revocation list, and when its issuer promised the next one (Unix seconds;
/// past it, revocations made since are unknown).
#[derive(Debug, Clone)]
pub struct LoadedCrl {
    pub der: rustls_pki_types::CertificateRevocationListDer<'static>,
    pub next_update: Option<i64>,
}

/// The CRLs in `path`: PEM (`X509 CRL` blocks) or one DER CRL.
pub fn load_crls(path: &Path) -> Result<Vec<LoadedCrl>, TlsFileError> {
    use rustls_pki_types::CertificateRevocationListDer;
    use rustls_pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| TlsFileError::Read {
        path: path.to_path_buf(),
        source: e,
        is_key: false,
    })?;
    let bad = |reason: String| TlsFileError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let ders: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("a CRL PEM block is malformed: {e}")))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if ders.is_empty() {
        return Err(TlsFileError::NotPem {
            path: path.to_path_buf(),
            expected: "X509 CRL",
            is_key: false,
        });
    }
    ders.into_iter()
        .map(|der| {
            let (_, crl) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
                    .map_err(|e| bad(format!("not a certificate revocation list: {e}")))?;
            let next_update = crl.next_update().map(|t| t.timestamp());
            Ok(LoadedCrl { der, next_update })
        })
        .collect()
}

/// Load a chain and its key, check they match and that the certificate is valid at `now`.
pub fn load_server_cert(
    chain: &Path,
    key: &Path,
    now: SystemTime,
) -> Result<LoadedCert, TlsFileError> {
    let certs = load_certs(chain)?;
    for c in &certs {
        refuse_weak(chain, c)?;
    }
    let der = load_key(key)?;
    let (names, ips, not_before, not_after) = inspect_leaf(chain, &certs[0])?;

    let now_secs = unix_secs(now);
    if now_secs > not_after {
        return Err(TlsFileError::Expired {
            path: chain.to_path_buf(),
            not_after: rfc3339(not_after),
        });
    }
    if now_secs < not_before {
        return Err(TlsFileError::NotYetValid {
            path: chain.to_path_buf(),
            not_before: rfc3339(not_before),
        });
    }
    let expiry_warning = (not_after - now_secs < EXPIRY_WARNING.as_secs() as i64).then(|| {
        format!(
            "the certificate in {} expires soon, on {}",
            chain.display(),
            rfc3339(not_after)
        )
    });

    let signing =
        provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| TlsFileError::BadKey {
                path: key.to_path_buf(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) => {}
        // The provider could not tell (no public key exposed): rustls itself accepts this.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsFileError::KeyMismatch {
                chain: chain.to_path_buf(),
                key: key.to_path_buf(),
            });
        }
        // The certificate itself cannot serve (an X.509 v1 certificate, which webpki refuses,
        // or an encoding it does not accept): say so, not that the key is wrong.
        Err(e) => {
            return Err(TlsFileError::BadCertificate {
                path: chain.to_path_buf(),
                reason: format!(
                    "it cannot be used for TLS ({e}); an X.509 v3 certificate is needed"
                ),
            });
        }
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        ips,
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64),
        expiry_warning,
    })
}

/// DNS and IP SANs and validity bounds (unix seconds) of an end-entity certificate.
fn inspect_leaf(
    path: &Path,
    der: &CertificateDer<'_>,
) -> Result<(Vec<String>, Vec<std::net::IpAddr>, i64, i64), TlsFileError> {
    let bad = |reason: String| TlsFileError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let validity = cert.validity();
    let (mut names, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        ips.push(std::net::IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        ips.push(std::net::IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok((
        names,
        ips,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Signature algorithms whose hash is broken (collisions can be made): MD2, MD5 and SHA-1,
/// with RSA, DSA or ECDSA.
const BROKEN_SIGNATURES: [(&str, &str); 6] = [
    ("1.2.840.113549.1.1.2", "MD2"),
    ("1.2.840.113549.1.1.4", "MD5"),
    ("1.2.840.113549.1.1.5", "SHA-1"),
    ("1.2.840.10045.4.1", "SHA-1"),
    ("1.2.840.10040.4.3", "SHA-1"),
    ("1.3.14.3.2.29", "SHA-1"),
];

/// Refuse a certificate signed with a broken hash (unless it is self-signed: a trust
/// anchor's own signature is never checked) or carrying an RSA key under 2048 bits or an EC
/// key under 256 bits.
fn refuse_weak(path: &Path, der: &CertificateDer<'_>) -> Result<(), TlsFileError> {
    use x509_parser::public_key::PublicKey;
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        // Parse errors are reported by the leaf inspection with their reason.
        return Ok(());
    };
    let weak = |reason: String| TlsFileError::Weak {
        path: path.to_path_buf(),
        subject: cert.subject().to_string(),
        reason,
    };
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    if let Some((_, hash)) = BROKEN_SIGNATURES.iter().find(|(o, _)| *o == oid)
        && cert.subject() != cert.issuer()
    {
        return Err(weak(format!(
            "is signed with {hash}, which is broken: have it reissued with SHA-256 or better"
        )));
    }
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() < 2048 => Err(weak(format!(
            "has a {}-bit RSA key: at least 2048 bits are needed",
            rsa.key_size()
        ))),
        Ok(PublicKey::EC(ec)) if ec.key_size() < 256 => Err(weak(format!(
            "has a {}-bit EC key: at least 256 bits (P-256) are needed",
            ec.key_size()
        ))),
        _ => Ok(()),
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(secs: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
