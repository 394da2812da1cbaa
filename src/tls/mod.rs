//! TLS termination: building a rustls `ServerConfig` per listener from the snapshot.
//!
//! # Defaults
//! TLS 1.2 and 1.3 only, rustls' default suites (AEAD with ECDHE: no CBC, no RSA key
//! exchange) in the server's order of preference, AES-128-GCM first (see [`provider`]),
//! ALPN `h2` then `http/1.1`. SSLv3, TLS 1.0 and 1.1 are not implemented by
//! rustls at all, so they can never be negotiated whatever the config says.

mod load;
mod pinned;
mod revoked;
mod sni;
mod socket;
pub mod upstream;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

pub use load::{
    LoadedCert, TlsFileError, load_certs, load_client_roots, load_crls, load_key, load_server_cert,
    rfc3339,
};
pub use pinned::PinnedClientVerifier;
pub use revoked::{RevocationChecking, RevokedKeys, SpkiHash, Window};
pub use sni::SniResolver;
pub use socket::Socket;

/// The one crypto provider (aws-lc-rs), built once, with its default suites reordered so
/// that AES-128-GCM with SHA-256 comes first; listeners choose by this order, not the
/// client's ([`server_config_with`] sets `ignore_client_order`).
///
/// Why: every suite here is an AEAD with forward secrecy, and the key exchanges (X25519,
/// P-256) are at the 128-bit level, so AES-256 adds no effective strength. But SHA-384
/// (the AES-256 suites' hash, used all through the handshake's key schedule) runs without
/// hardware help in aws-lc on CPUs without SHA-512 instructions, while SHA-256 uses SHA-NI:
/// measured on the bench machine (AMD EPYC) SHA-512 blocks were 13% of a full TLS 1.3
/// handshake's CPU. Rustls clients and OpenSSL both list AES-256 first, so without this
/// every handshake paid for it.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            // TLS 1.3 suites first, then by rank; the sort is stable, so ECDSA stays
            // before RSA among TLS 1.2 suites of one rank.
            provider.cipher_suites.sort_by_key(|suite| {
                let tls12 = suite.version().version != rustls::ProtocolVersion::TLSv1_3;
                (tls12, suite_rank(suite.suite()))
            });
            Arc::new(provider)
        })
        .clone()
}

/// The key-exchange groups a listener offers when its config names none, in order of
/// preference: the post-quantum hybrid X25519MLKEM768 first (ML-KEM-768 with X25519, so a
/// recording of today's traffic cannot be decrypted by a future quantum computer, and the
/// classical half keeps today's strength if ML-KEM falls), then X25519 and P-256 for clients
/// without it. Chosen here rather than left to a dependency's default, which can change.
pub const DEFAULT_KEY_EXCHANGE: [&str; 3] = ["X25519MLKEM768", "X25519", "secp256r1"];

/// The key-exchange group called `name` (as in `key_exchange`), if aws-lc-rs has it.
pub fn kx_group(name: &str) -> Option<&'static dyn rustls::crypto::SupportedKxGroup> {
    use rustls::crypto::aws_lc_rs::kx_group as g;
    Some(match name {
        "X25519MLKEM768" => g::X25519MLKEM768,
        "SECP256R1MLKEM768" => g::SECP256R1MLKEM768,
        "X25519" => g::X25519,
        "secp256r1" | "P-256" => g::SECP256R1,
        "secp384r1" | "P-384" => g::SECP384R1,
        _ => return None,
    })
}

/// The names [`kx_group`] knows, for error messages.
pub const KX_GROUP_NAMES: &str =
    "X25519MLKEM768, SECP256R1MLKEM768, X25519, secp256r1 (P-256), secp384r1 (P-384)";

/// The default groups, resolved.
pub fn default_kx_groups() -> Vec<&'static dyn rustls::crypto::SupportedKxGroup> {
    DEFAULT_KEY_EXCHANGE
        .iter()
        .filter_map(|n| kx_group(n))
        .collect()
}

fn with_crls(
    b: rustls::server::ClientCertVerifierBuilder,
    crls: &ClientCrls,
) -> rustls::server::ClientCertVerifierBuilder {
    if crls.crls.is_empty() {
        return b;
    }
    let b = b
        .with_crls(crls.crls.iter().cloned())
        .only_check_end_entity_revocation();
    if crls.refuse_when_expired {
        b.enforce_revocation_expiration()
    } else {
        b
    }
}

/// Preference within one protocol version: AES-128-GCM, then AES-256-GCM, then
/// ChaCha20-Poly1305 (for clients without AES hardware, which also offer it).
fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

/// Lowest protocol version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinTls {
    V1_2,
    V1_3,
}

/// Revocation lists a listener checks client certificates against.
#[derive(Debug, Clone, Default)]
pub struct ClientCrls {
    pub crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
    /// Refuse every client certificate while a list is past its next update.
    pub refuse_when_expired: bool,
    /// Keys revoked while running (enrolled machines), refused in the handshake.
    pub live: Option<Arc<RevokedKeys>>,
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
    server_config_kx(min, client_auth, certs, resumption, &default_kx_groups())
}

/// As [`server_config_with`], offering the key-exchange groups `kx` in that order.
pub fn server_config_kx(
    min: MinTls,
    client_auth: ClientAuth,
    certs: Vec<LoadedCert>,
    resumption: bool,
    kx: &[&'static dyn rustls::crypto::SupportedKxGroup],
) -> Result<ServerConfig, rustls::Error> {
    server_config_full(
        min,
        client_auth,
        certs,
        resumption,
        kx,
        &ClientCrls::default(),
    )
}

/// As [`server_config_kx`], checking client certificates against `crls` (with roots only).
/// Only the client's own certificate is checked, and a certificate no list covers is
/// refused: every CA in `client_ca` that issues clients needs its CRL.
pub fn server_config_full(
    min: MinTls,
    client_auth: ClientAuth,
    certs: Vec<LoadedCert>,
    resumption: bool,
    kx: &[&'static dyn rustls::crypto::SupportedKxGroup],
    crls: &ClientCrls,
) -> Result<ServerConfig, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        MinTls::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTls::V1_3 => &[&rustls::version::TLS13],
    };
    let listener_provider = Arc::new(CryptoProvider {
        kx_groups: kx.to_vec(),
        ..(*provider()).clone()
    });
    let builder =
        ServerConfig::builder_with_provider(listener_provider).with_protocol_versions(versions)?;
    let verifier = match client_auth {
        ClientAuth::None => None,
        ClientAuth::Pinned => Some(Ok(Arc::new(PinnedClientVerifier::new(provider()))
            as Arc<dyn rustls::server::danger::ClientCertVerifier>)),
        ClientAuth::Optional(roots) => Some(
            with_crls(
                WebPkiClientVerifier::builder_with_provider(roots, provider()),
                crls,
            )
            .allow_unauthenticated()
            .build(),
        ),
        ClientAuth::Required(roots) => Some(
            with_crls(
                WebPkiClientVerifier::builder_with_provider(roots, provider()),
                crls,
            )
            .build(),
        ),
    };
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(v) => {
            let v = v.map_err(|e| rustls::Error::General(format!("client CA bundle: {e}")))?;
            builder.with_client_cert_verifier(match &crls.live {
                Some(live) => Arc::new(RevocationChecking::new(v, Arc::clone(live))),
                None => v,
            })
        }
    };
    let resolver = SniResolver::new(certs)
        .ok_or_else(|| rustls::Error::General("no server certificate".into()))?;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The suite order in `provider()` is a deliberate choice (see there).
    config.ignore_client_order = true;
    if !resumption {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}
