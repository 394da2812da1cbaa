//! Signing keys: ES256 (P-256) or EdDSA (Ed25519) key pairs made with aws-lc-rs, stored in
//! the issuer's database, one current for signing, and the key ring the JWKS and the
//! gateway's verifier publish.
//!
//! # Rotation
//! A new key becomes current at once. The previous one is retired and its public key stays
//! published until `retired_at + longest access-token lifetime + leeway`: every token it
//! signed has expired by then. Pruning then deletes it, private half included.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::state::issuer::{
    IssuerRead, IssuerTx, KeyRecord, META_ACCESS_TTL, META_CURRENT_KID, TxError,
};
use crate::token::{AlgSet, KeySet, VerifyingKey};

pub use crate::config::issuer::SigningAlg;

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A key pair that signs access tokens. Debug shows the kid only.
pub struct SigningKey {
    kid: String,
    alg: SigningAlg,
    pair: Pair,
    /// The public JWK as the JWKS serves it.
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

const CRYPTO: TxError = TxError::Crypto("key generation or parsing failed");

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl SigningKey {
    /// A new key pair, and its PKCS#8 DER for the store.
    pub fn generate(alg: SigningAlg) -> Result<(SigningKey, Vec<u8>), TxError> {
        let rng = SystemRandom::new();
        let der = match alg {
            SigningAlg::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| CRYPTO)?
                    .as_ref()
                    .to_vec()
            }
            SigningAlg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| CRYPTO)?
                .as_ref()
                .to_vec(),
        };
        Ok((SigningKey::from_pkcs8(alg, &der)?, der))
    }

    /// A stored key. The kid is the RFC 7638 thumbprint of the public key, so it is
    /// derived, never trusted from the record.
    pub fn from_pkcs8(alg: SigningAlg, der: &[u8]) -> Result<SigningKey, TxError> {
        let (pair, thumb_input, mut jwk) = match alg {
            SigningAlg::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| CRYPTO)?;
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err(CRYPTO);
                }
                let (x, y) = (b64url(&point[1..33]), b64url(&point[33..]));
                let thumb = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
                (Pair::Ecdsa(pair), thumb, jwk)
            }
            SigningAlg::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|_| CRYPTO)?;
                let x = b64url(pair.public_key().as_ref());
                let thumb = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
                (Pair::Ed25519(pair), thumb, jwk)
            }
        };
        let kid = b64url(&crate::identity::sha256(thumb_input.as_bytes()));
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg.name());
        jwk["use"] = json!("sig");
        Ok(SigningKey {
            kid,
            alg,
            pair,
            jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }
    /// The public JWK (`kty`, `crv`, `x`, `y`, `kid`, `alg`, `use`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A compact JWS of `claims` with header `{"alg","typ":"at+jwt","kid"}` (RFC 9068).
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, TxError> {
        let header = json!({"alg": self.alg.name(), "typ": "at+jwt", "kid": self.kid});
        let body = serde_json::to_vec(claims).map_err(|e| TxError::Corrupt(e.to_string()))?;
        let header = serde_json::to_vec(&header).map_err(|e| TxError::Corrupt(e.to_string()))?;
        let input = format!("{}.{}", b64url(&header), b64url(&body));
        let sig = match &self.pair {
            Pair::Ecdsa(p) => p
                .sign(&SystemRandom::new(), input.as_bytes())
                .map_err(|_| TxError::Crypto("ECDSA signing failed"))?
                .as_ref()
                .to_vec(),
            Pair::Ed25519(p) => p.sign(input.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{input}.{}", b64url(&sig)))
    }

    /// The public key as the token stage verifies with it: built from the same JWK the
    /// JWKS serves, so the gateway trusts exactly what it publishes.
    fn verifying_key(&self) -> Option<VerifyingKey> {
        let jwk = serde_json::from_value(self.jwk.clone()).ok()?;
        VerifyingKey::from_jwk(&jwk, AlgSet::of(&[self.alg.alg()])).ok()
    }
}

// === KeyRing ===

/// The current signing key and every key still published.
pub struct KeyRing {
    current: Arc<SigningKey>,
    /// `(key, retain_until)`; `None` for the current key.
    published: Vec<(Arc<SigningKey>, Option<u64>)>,
}

impl KeyRing {
    /// The ring the stored keys describe. `Ok(None)`: no current key yet.
    pub fn from_records(
        records: &[KeyRecord],
        current_kid: Option<&str>,
    ) -> Result<Option<KeyRing>, TxError> {
        let mut current = None;
        let mut published = Vec::new();
        for rec in records {
            let der = base64::engine::general_purpose::STANDARD
                .decode(&rec.private_pkcs8)
                .map_err(|_| TxError::Corrupt(format!("key {:.64}: not base64", rec.kid)))?;
            let key = Arc::new(SigningKey::from_pkcs8(rec.alg, &der)?);
            if key.kid != rec.kid {
                return Err(TxError::Corrupt(format!(
                    "key {:.64}: the kid does not match the key",
                    rec.kid
                )));
            }
            if Some(rec.kid.as_str()) == current_kid {
                current = Some(key.clone());
                published.push((key, None));
            } else if rec.retain_until.is_some() {
                published.push((key, rec.retain_until));
            }
        }
        Ok(current.map(|current| KeyRing { current, published }))
    }

    pub fn current(&self) -> &Arc<SigningKey> {
        &self.current
    }

    /// `{"keys": [...]}`: the public keys still needed at `now` (Unix seconds).
    pub fn jwks(&self, now: u64) -> Value {
        let keys: Vec<&Value> = self
            .published
            .iter()
            .filter(|(_, until)| until.is_none_or(|t| t >= now))
            .map(|(k, _)| k.jwk())
            .collect();
        json!({ "keys": keys })
    }

    /// The published keys for the gateway's verifier.
    pub fn key_set(&self) -> KeySet {
        let keys = self.published.iter().filter_map(|(k, _)| {
            let v = k.verifying_key();
            if v.is_none() {
                tracing::error!(kid = %k.kid, "issuer key cannot be used for verification");
            }
            v
        });
        // Kids are thumbprints of distinct keys, so they cannot clash.
        KeySet::new(keys).unwrap_or_default()
    }

    /// The kids published, current first (for logs and the CLI).
    pub fn kids(&self) -> Vec<&str> {
        self.published.iter().map(|(k, _)| k.kid()).collect()
    }
}

// === Rotation (inside a store transaction) ===

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub kid: String,
    pub alg: SigningAlg,
    /// The previous key and when its public key stops being published (Unix seconds).
    pub retired: Option<(String, u64)>,
}

/// Make a new current key with `alg`; retire the current one (published until its tokens
/// have expired); prune keys past retention. `leeway` is the verifier's clock skew.
pub fn rotate(
    tx: &mut dyn IssuerTx,
    alg: SigningAlg,
    now: u64,
    leeway: Duration,
) -> Result<Rotated, TxError> {
    let (key, der) = SigningKey::generate(alg)?;
    let mut retired = None;
    if let Some(old_kid) = tx.meta(META_CURRENT_KID)?
        && let Some(mut old) = tx.key(&old_kid)?
    {
        let until = now
            .saturating_add(longest_access_ttl(tx)?)
            .saturating_add(leeway.as_secs());
        old.retired_at = Some(now);
        old.retain_until = Some(until);
        tx.put_key(&old)?;
        retired = Some((old_kid, until));
    }
    tx.put_key(&KeyRecord {
        kid: key.kid.clone(),
        alg,
        private_pkcs8: base64::engine::general_purpose::STANDARD.encode(&der),
        created_at: now,
        retired_at: None,
        retain_until: None,
    })?;
    tx.set_meta(META_CURRENT_KID, &key.kid)?;
    Ok(Rotated {
        kid: key.kid.clone(),
        alg,
        retired,
    })
}

/// The longest lifetime an access token signed now could have: the issuer's (as the
/// gateway last recorded it) or any client's own.
fn longest_access_ttl(tx: &dyn IssuerTx) -> Result<u64, TxError> {
    let issuer = tx
        .meta(META_ACCESS_TTL)?
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(super::config::MAX_ACCESS_TTL.as_secs());
    let clients = tx
        .clients()?
        .iter()
        .filter_map(|c| c.access_token_ttl)
        .max()
        .unwrap_or(0);
    Ok(issuer.max(clients))
}

/// The ring as stored now.
pub fn load(rx: &dyn IssuerRead) -> Result<Option<KeyRing>, TxError> {
    let current = rx.meta(META_CURRENT_KID)?;
    KeyRing::from_records(&rx.keys()?, current.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::issuer::{Embedded, IssuerState};

    #[test]
    fn both_algorithms_sign_tokens_that_their_published_key_verifies() {
        for alg in [SigningAlg::ES256, SigningAlg::EdDSA] {
            let (key, der) = SigningKey::generate(alg).expect("generate");
            let again = SigningKey::from_pkcs8(alg, &der).expect("reload");
            assert_eq!(key.kid(), again.kid(), "the kid is derived from the key");
            let token = key
                .sign_jwt(&json!({"sub": "x", "exp": 4_000_000_000u64}))
                .expect("sign");
            let (input, sig) = token.rsplit_once('.').expect("three parts");
            let v = key.verifying_key().expect("verifying key");
            assert!(v.verify(alg.alg(), input.as_bytes(), sig), "{alg:?}");
            assert!(!v.verify(alg.alg(), b"other.input", sig));
            let jwk = key.jwk().to_string();
            assert!(!jwk.contains("\"d\""), "no private part in the JWK: {jwk}");
        }
    }

    #[test]
    fn a_rotation_keeps_the_old_public_key_published_until_its_tokens_expired() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Box<dyn IssuerState> =
            Box::new(Embedded::open(&dir.path().join("k.redb")).expect("open"));
        let leeway = Duration::from_secs(5);
        store
            .write(|tx| tx.set_meta(META_ACCESS_TTL, "600"))
            .expect("ttl");
        let first = store
            .write(|tx| rotate(tx, SigningAlg::ES256, 1000, leeway))
            .expect("first");
        assert_eq!(first.retired, None);
        let second = store
            .write(|tx| rotate(tx, SigningAlg::EdDSA, 2000, leeway))
            .expect("second");
        assert_eq!(second.retired, Some((first.kid.clone(), 2605)));
        let ring = store.read(load).expect("load").expect("ring");
        assert_eq!(ring.current().kid(), second.kid);
        let kids = |now| -> Vec<String> {
            ring.jwks(now)["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(kids(2605).len(), 2);
        assert_eq!(kids(2606), vec![second.kid.clone()]);
        assert_eq!(ring.key_set().len(), 2);
        // After retention, pruning deletes the old key, private half included.
        store.write(|tx| tx.prune(2606, 5)).expect("prune");
        let ring = store.read(load).expect("load").expect("ring");
        assert_eq!(ring.kids(), vec![second.kid.as_str()]);
    }
}
