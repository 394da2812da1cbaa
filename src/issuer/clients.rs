//! The client registry: who may ask for tokens, with which scopes, and how they prove it.
//!
//! A client has a secret (32 random bytes, base64url), shown once when made or rotated and
//! stored only as an argon2id hash, and/or certificate pins for RFC 8705
//! `tls_client_auth`. Verifying a secret is deliberately slow (argon2id's defaults: 19 MiB,
//! two passes), so the token endpoint runs it off the async threads, a few at a time, and
//! throttles failures (`throttle.rs`).

use std::sync::OnceLock;
use std::time::Duration;

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;

use super::config::{MAX_ACCESS_TTL, MIN_ACCESS_TTL, is_label};
use crate::identity::{ClientIdentity, format_spki_pin, parse_spki_pin};
use crate::state::issuer::{ClientRecord, IssuerState, StoreError};
use crate::token::is_scope_token;

/// A client secret in clear: only ever printed once. Debug does not show it.
pub struct Secret(String);

impl Secret {
    /// 256 random bits, base64url without padding (43 characters).
    pub fn generate() -> Result<Secret, StoreError> {
        Ok(Secret(random_b64url::<32>()?))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `N` random bytes as base64url without padding.
pub(crate) fn random_b64url<const N: usize>() -> Result<String, StoreError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| StoreError::Crypto("the system random source failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The argon2id PHC string of `secret`, with a random 16-byte salt.
pub fn hash_secret(secret: &Secret) -> Result<String, StoreError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| StoreError::Crypto("the system random source failed"))?;
    Argon2::default()
        .hash_password_with_salt(secret.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| StoreError::Crypto("argon2 hashing failed"))
}

/// Whether `presented` matches `hash`. With no hash (unknown client, or one without a
/// secret) a fixed hash is checked instead, so the answer takes as long either way and
/// timing does not tell which client ids exist.
pub fn verify_secret(presented: &[u8], hash: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let (hash, real) = match hash {
        Some(h) => (h, true),
        None => {
            let dummy = DUMMY.get_or_init(|| {
                Secret::generate()
                    .and_then(|s| hash_secret(&s))
                    .unwrap_or_default()
            });
            (dummy.as_str(), false)
        }
    };
    let ok = Argon2::default().verify_password(presented, hash).is_ok();
    ok && real
}

/// Whether the connection's certificate is one the client registered.
pub fn cert_matches(client: &ClientRecord, identity: Option<&ClientIdentity>) -> bool {
    let Some(id) = identity else {
        return false;
    };
    client
        .cert_pins
        .iter()
        .filter_map(|p| parse_spki_pin(p).ok())
        .any(|pin| aws_lc_rs::constant_time::verify_slices_are_equal(&pin, &id.spki_sha256).is_ok())
}

// === Registry operations (CLI and, later, admin) ===

/// A client to register.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub id: String,
    pub scopes: Vec<String>,
    /// SPKI SHA-256 of certificates it may authenticate with.
    pub cert_pins: Vec<[u8; 32]>,
    /// No secret: certificate authentication only (needs `cert_pins`).
    pub cert_only: bool,
    pub access_token_ttl: Option<Duration>,
}

/// Why a registry operation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("a client with id \"{0}\" already exists")]
    Exists(String),
    #[error("no client with id \"{0}\"")]
    NotFound(String),
    /// An argument is unusable: the message says which and why.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Register `new` at `now` (Unix seconds). Returns the record and the secret, to print once.
pub fn add(
    store: &dyn IssuerState,
    new: &NewClient,
    now: u64,
) -> Result<(ClientRecord, Option<Secret>), RegistryError> {
    if !is_label(&new.id) {
        return Err(RegistryError::Invalid(format!(
            "client id \"{}\" must be 1-64 characters of A-Z a-z 0-9 _ . -",
            new.id
        )));
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in new
        .scopes
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        if !is_scope_token(s) {
            return Err(RegistryError::Invalid(format!(
                "{s:?} is not a scope (printable ASCII without space, '\"' or '\\')"
            )));
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_owned());
        }
    }
    if new.cert_only && new.cert_pins.is_empty() {
        return Err(RegistryError::Invalid(
            "a certificate-only client needs at least one --cert-pin".into(),
        ));
    }
    let ttl = match new.access_token_ttl {
        None => None,
        Some(d) if d < MIN_ACCESS_TTL || d > MAX_ACCESS_TTL => {
            return Err(RegistryError::Invalid(format!(
                "the access-token lifetime must be {} to {}",
                humantime::format_duration(MIN_ACCESS_TTL),
                humantime::format_duration(MAX_ACCESS_TTL)
            )));
        }
        Some(d) => Some(d.as_secs()),
    };
    let secret = if new.cert_only {
        None
    } else {
        Some(Secret::generate()?)
    };
    let record = ClientRecord {
        id: new.id.clone(),
        secret_hash: secret.as_ref().map(hash_secret).transpose()?,
        scopes,
        cert_pins: new.cert_pins.iter().map(format_spki_pin).collect(),
        access_token_ttl: ttl,
        disabled: false,
        created_at: now,
        secret_rotated_at: None,
    };
    let inserted = store.write(|tx| {
        if tx.client(&record.id)?.is_some() {
            return Ok(false);
        }
        tx.put_client(&record)?;
        Ok(true)
    })?;
    if !inserted {
        return Err(RegistryError::Exists(record.id));
    }
    Ok((record, secret))
}

/// Every client, by id.
pub fn list(store: &dyn IssuerState) -> Result<Vec<ClientRecord>, RegistryError> {
    Ok(store.read(|rx| rx.clients())?)
}

/// Disable `id`: its credentials stop working at once and its refresh tokens are refused
/// (they are checked against the client on every use).
pub fn disable(store: &dyn IssuerState, id: &str) -> Result<ClientRecord, RegistryError> {
    update(store, id, |c| c.disabled = true)
}

/// A new secret for `id`; the old one stops working at once.
pub fn rotate_secret(
    store: &dyn IssuerState,
    id: &str,
    now: u64,
) -> Result<(ClientRecord, Secret), RegistryError> {
    let secret = Secret::generate()?;
    let hash = hash_secret(&secret)?;
    let record = update(store, id, |c| {
        c.secret_hash = Some(hash.clone());
        c.secret_rotated_at = Some(now);
    })?;
    Ok((record, secret))
}

fn update(
    store: &dyn IssuerState,
    id: &str,
    mut f: impl FnMut(&mut ClientRecord),
) -> Result<ClientRecord, RegistryError> {
    store
        .write(|tx| {
            let Some(mut c) = tx.client(id)? else {
                return Ok(None);
            };
            f(&mut c);
            tx.put_client(&c)?;
            Ok(Some(c))
        })?
        .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::issuer::Embedded;

    #[test]
    fn a_secret_verifies_against_its_hash_only() {
        let s = Secret::generate().expect("secret");
        assert_eq!(s.expose().len(), 43);
        let h = hash_secret(&s).expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains(s.expose()));
        assert!(verify_secret(s.expose().as_bytes(), Some(&h)));
        assert!(!verify_secret(b"wrong", Some(&h)));
        assert!(!verify_secret(s.expose().as_bytes(), None));
        assert!(!format!("{s:?}").contains(s.expose()));
    }

    #[test]
    fn add_disable_and_rotate_change_the_stored_client() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Box<dyn IssuerState> =
            Box::new(Embedded::open(&dir.path().join("c.redb")).expect("open"));
        let new = NewClient {
            id: "erp-1".into(),
            scopes: vec!["orders:read".into(), " orders:read ".into(), "stock".into()],
            ..NewClient::default()
        };
        let (rec, secret) = add(&*store, &new, 10).expect("add");
        assert_eq!(rec.scopes, ["orders:read", "stock"]);
        let secret = secret.expect("a secret");
        assert!(matches!(
            add(&*store, &new, 11),
            Err(RegistryError::Exists(_))
        ));
        let (rotated, new_secret) = rotate_secret(&*store, "erp-1", 12).expect("rotate");
        let hash = rotated.secret_hash.as_deref();
        assert!(verify_secret(new_secret.expose().as_bytes(), hash));
        assert!(!verify_secret(secret.expose().as_bytes(), hash));
        assert!(disable(&*store, "erp-1").expect("disable").disabled);
        assert!(matches!(
            disable(&*store, "nobody"),
            Err(RegistryError::NotFound(_))
        ));
        assert_eq!(list(&*store).expect("list").len(), 1);
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_is_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Box<dyn IssuerState> =
            Box::new(Embedded::open(&dir.path().join("c.redb")).expect("open"));
        let cases = [
            NewClient {
                id: "has space".into(),
                ..NewClient::default()
            },
            NewClient {
                id: "ok".into(),
                scopes: vec!["a\"b".into()],
                ..NewClient::default()
            },
            NewClient {
                id: "ok".into(),
                cert_only: true,
                ..NewClient::default()
            },
            NewClient {
                id: "ok".into(),
                access_token_ttl: Some(Duration::from_secs(5)),
                ..NewClient::default()
            },
        ];
        for c in cases {
            assert!(
                matches!(add(&*store, &c, 1), Err(RegistryError::Invalid(_))),
                "{c:?}"
            );
        }
        assert!(list(&*store).expect("list").is_empty());
    }
}
