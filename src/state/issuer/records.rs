//! What the issuer's store holds, as plain data: clients, refresh-token families and
//! signing keys. Stored as JSON, so a field added later reads old records with its default.

use serde::{Deserialize, Serialize};

use crate::token::Alg;

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub id: String,
    /// argon2id PHC string; `None`: the client authenticates by certificate only.
    pub secret_hash: Option<String>,
    /// Scopes the client may be granted.
    pub scopes: Vec<String>,
    /// SPKI pins (`sha256/<base64>`) of certificates it may authenticate with (RFC 8705
    /// `tls_client_auth`).
    #[serde(default)]
    pub cert_pins: Vec<String>,
    /// Its access-token lifetime in seconds; `None`: the issuer's.
    #[serde(default)]
    pub access_token_ttl: Option<u64>,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: u64,
    #[serde(default)]
    pub secret_rotated_at: Option<u64>,
}

/// One chain of refresh tokens, from one client-credentials grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRecord {
    pub id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub created_at: u64,
    /// Absolute expiry.
    pub expires_at: u64,
    /// Last issuance from this family (the idle expiry counts from here).
    pub last_used: u64,
    /// Hex SHA-256 of the one refresh token that may be used now.
    pub current: String,
    pub generation: u64,
    #[serde(default)]
    pub revoked_at: Option<u64>,
    /// `(jti, exp)` of the family's access tokens that may not have expired yet: revoking
    /// the family revokes them too.
    #[serde(default)]
    pub access: Vec<(String, u64)>,
}

/// A signing key. The private half is PKCS#8 DER, sealed under the vault's data key when
/// the gateway has a `[vault]`; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kid: String,
    pub alg: SigningAlg,
    #[serde(flatten)]
    pub private: PrivateKey,
    pub created_at: u64,
    /// When another key replaced it for signing.
    #[serde(default)]
    pub retired_at: Option<u64>,
    /// Its public key stays published until then: every token it signed has expired.
    #[serde(default)]
    pub retain_until: Option<u64>,
}

/// The private half of a signing key as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivateKey {
    /// PKCS#8 DER in base64, protected by the file's mode only: a store without a vault
    /// (and every store written before the vault existed, until a vault seals it).
    #[serde(rename = "private_pkcs8")]
    Plain(String),
    /// PKCS#8 DER sealed with AES-256-GCM under the vault data key `key_id`, bound to the
    /// key's kid and algorithm.
    #[serde(rename = "sealed_pkcs8")]
    Sealed { key_id: String, sealed: String },
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivateKey::Plain(_) => f.write_str("Plain(<redacted>)"),
            PrivateKey::Sealed { key_id, .. } => write!(f, "Sealed({key_id}, <redacted>)"),
        }
    }
}

impl KeyRecord {
    /// The vault data key this record's private half is sealed under, if it is sealed.
    pub fn sealed_with(&self) -> Option<&str> {
        match &self.private {
            PrivateKey::Plain(_) => None,
            PrivateKey::Sealed { key_id, .. } => Some(key_id),
        }
    }
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("sealed_with", &self.sealed_with())
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("retain_until", &self.retain_until)
            .finish_non_exhaustive()
    }
}

/// The algorithms the issuer signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlg {
    ES256,
    EdDSA,
}

impl SigningAlg {
    pub fn parse(s: &str) -> Option<SigningAlg> {
        match s {
            "ES256" => Some(SigningAlg::ES256),
            "EdDSA" => Some(SigningAlg::EdDSA),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::ES256 => "ES256",
            SigningAlg::EdDSA => "EdDSA",
        }
    }
    pub(crate) fn alg(self) -> Alg {
        match self {
            SigningAlg::ES256 => Alg::ES256,
            SigningAlg::EdDSA => Alg::EdDSA,
        }
    }
}
