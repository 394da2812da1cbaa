//! TLS termination: building a rustls `ServerConfig` per listener from the snapshot.
//!
//! # Defaults
//! TLS 1.2 and 1.3 only, rustls' default suites (AEAD with ECDHE: no CBC, no RSA key
//! exchange), ALPN `h2` then `http/1.1`. SSLv3, TLS 1.0 and 1.1 are not implemented by
//! rustls at all, so they can never be negotiated whatever the config says.

mod load;
mod pinned;
mod sni;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

pub use load::{
    EXPIRY_WARNING, LoadedCert, TlsFileError, load_certs, load_client_roots, load_key,
    load_server_cert, rfc3339,
};
pub use pinned::PinnedClientVerifier;
pub use sni::SniResolver;

/// The one crypto provider (aws-lc-rs), built once.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Lowest protocol version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinTls {
    V1_2,
    V1_3,
}

/// Whether and how a listener asks for client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No certificate requested.
    None,
    /// Requested; a presented one must chain to the roots, none is also accepted.
    Optional(Arc<RootCertStore>),
    /// Required and verified against the roots.
    Required(Arc<RootCertStore>),
    /// Required, any issuer (self-signed included); admitted later only by pins.
    Pinned,
}

/// Build a listener's server config. The first certificate is the default for clients that
/// send no SNI or a name no certificate carries.
pub fn server_config(
    min: MinTls,
    client_auth: ClientAuth,
    certs: Vec<LoadedCert>,
) -> Result<ServerConfig, rustls::Error> {
    server_config_with(min, client_auth, certs, true)
}

/// As [`server_config`]; without `resumption` no session is cached and no TLS 1.3 ticket
/// is sent, which saves the work (and memory) for clients that never resume.
pub fn server_config_with(
    min: MinTls,
    client_auth: ClientAuth,
    certs: Vec<LoadedCert>,
    resumption: bool,
) -> Result<ServerConfig, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        MinTls::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTls::V1_3 => &[&rustls::version::TLS13],
    };
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let verifier = match client_auth {
        ClientAuth::None => None,
        ClientAuth::Pinned => Some(Ok(Arc::new(PinnedClientVerifier::new(provider()))
            as Arc<dyn rustls::server::danger::ClientCertVerifier>)),
        ClientAuth::Optional(roots) => Some(
            WebPkiClientVerifier::builder_with_provider(roots, provider())
                .allow_unauthenticated()
                .build(),
        ),
        ClientAuth::Required(roots) => {
            Some(WebPkiClientVerifier::builder_with_provider(roots, provider()).build())
        }
    };
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(
            v.map_err(|e| rustls::Error::General(format!("client CA bundle: {e}")))?,
        ),
    };
    let resolver = SniResolver::new(certs)
        .ok_or_else(|| rustls::Error::General("no server certificate".into()))?;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if !resumption {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}
