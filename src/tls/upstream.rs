//! TLS to upstreams: one rustls `ClientConfig` per route's upstream, built at config load.
//!
//! - Roots: the upstream's `ca` bundle, or else Mozilla's root program as compiled into
//!   `webpki-roots`. Why that crate and not the OS store (`rustls-native-certs`): the same
//!   binary trusts the same roots on every machine and in minimal containers without a CA
//!   package, and a private CA is named explicitly with `ca` rather than by editing the host.
//! - Pins: after the chain verifies, the end-entity certificate's SPKI SHA-256 must be one of
//!   `pins`; a certificate the CA signed for another key is refused all the same.
//! - TLS 1.2 and 1.3 (or 1.3 only), the listeners' provider and suite order.
//! - Sessions are resumed (rustls' in-memory client cache, 256 sessions): a new pooled
//!   connection to a known upstream pays an abbreviated handshake.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{MinTls, provider};

/// What a route's upstream connects with over TLS.
pub struct UpstreamTls {
    pub connector: tokio_rustls::TlsConnector,
    /// SNI and the name the certificate must carry; `None`: each target's own host.
    pub server_name: Option<ServerName<'static>>,
    /// A digest of every setting and file the config was built from: a reload with the same
    /// digest keeps the upstream's warm connections.
    pub digest: [u8; 32],
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}
impl Eq for UpstreamTls {}

/// Mozilla's roots (webpki-roots), built once.
pub fn default_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

/// The client config for one upstream: verify the chain against `roots` (and the name),
/// then the pins if any; present `client` (chain, key) when the upstream asks.
pub fn client_config(
    roots: Arc<RootCertStore>,
    pins: Vec<[u8; 32]>,
    min: MinTls,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        MinTls::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTls::V1_3 => &[&rustls::version::TLS13],
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| rustls::Error::General(format!("upstream CA bundle: {e}")))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier {
            inner: webpki,
            pins: pins.into(),
        }));
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
    };
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Chain and name by webpki, then the SPKI pins.
#[derive(Debug)]
struct PinnedServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// Empty: no pinning.
    pins: Box<[[u8; 32]]>,
}

/// The end-entity key is not one of the upstream's pins (a metric reason of its own).
#[derive(Debug)]
pub struct PinMismatch;

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream's certificate key is not one of its pins")
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if self.pins.is_empty() {
            return Ok(verified);
        }
        let spki = crate::identity::ClientIdentity::from_der(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?
            .spki_sha256;
        if self.pins.contains(&spki) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why a TLS handshake with an upstream failed, as a bounded metric label. `e` is the I/O
/// error tokio-rustls reports (the rustls error inside it, if any).
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::CertificateError as C;
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::TimedOut => "timeout",
            _ => "handshake",
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "unknown_issuer",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::NotValidForName | C::NotValidForNameContext { .. } => "wrong_name",
            C::Revoked => "revoked",
            C::Other(o) if o.0.downcast_ref::<PinMismatch>().is_some() => "pin_mismatch",
            _ => "bad_certificate",
        },
        rustls::Error::AlertReceived(_) => "refused_by_upstream",
        rustls::Error::NoApplicationProtocol => "no_common_protocol",
        _ => "handshake",
    }
}

/// The reason of a TLS failure anywhere in `e`'s source chain: in TLS 1.3 an upstream that
/// refuses the gateway's client certificate says so with an alert after the handshake, so
/// the failure surfaces on the first exchange rather than on connect.
pub fn failure_in(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
        {
            return Some(failure_reason(io));
        }
        next = err.source();
    }
    None
}
