//! Signing keys: ES256 (P-256) or EdDSA (Ed25519) key pairs made with aws-lc-rs, stored in
//! the issuer's database, one current for signing, and the key ring the JWKS and the
//! gateway's verifier publish.
//!
//! # Rotation
//! A new key becomes current at once. The previous one is retired and its public key stays
//! published until `retired_at + longest access-token lifetime + leeway`: every token it
//! signed has expired by then. Pruning then deletes it, private half included.
//!
//! # At rest
//! With a `[vault]`, the private half is sealed under the vault's data key (AES-256-GCM,
//! bound to the kid and algorithm), and a store written before the vault is sealed when the
//! issuer opens with one. A store whose keys are sealed is never given a key in clear: a
//! rotation without the vault is refused.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use serde_json::{Value, json};

use zeroize::Zeroizing;

use crate::state::issuer::{
    IssuerRead, IssuerTx, KeyRecord, META_ACCESS_TTL, META_CURRENT_KID, PrivateKey, TxError,
};
use crate::token::{AlgSet, KeySet, VerifyingKey};
use crate::vault::Sealer;

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
    pub fn generate(alg: SigningAlg) -> Result<(SigningKey, Zeroizing<Vec<u8>>), TxError> {
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
        let der = Zeroizing::new(der);
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

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("kids", &self.kids())
            .finish()
    }
}

impl KeyRing {
    /// The ring the stored keys describe. `Ok(None)`: no current key yet.
    pub fn from_records(
        records: &[KeyRecord],
        current_kid: Option<&str>,
        sealer: Option<&Sealer>,
    ) -> Result<Option<KeyRing>, TxError> {
        let mut current = None;
        let mut published = Vec::new();
        for rec in records {
            let der = private_der(rec, sealer)?;
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
    sealer: Option<&Sealer>,
) -> Result<Rotated, TxError> {
    if sealer.is_none()
        && let Some(sealed) = tx
            .keys()?
            .iter()
            .find_map(|k| k.sealed_with().map(str::to_owned))
    {
        return Err(TxError::Sealed(format!(
            "its signing keys are sealed under vault data key {sealed}: a new key needs that \
             vault (give --config with its [vault]), never one in clear beside them"
        )));
    }
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
        private: store_der(&key.kid, alg, &der, sealer)?,
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
pub fn load(rx: &dyn IssuerRead, sealer: Option<&Sealer>) -> Result<Option<KeyRing>, TxError> {
    let current = rx.meta(META_CURRENT_KID)?;
    KeyRing::from_records(&rx.keys()?, current.as_deref(), sealer)
}

/// Seal every key still stored in clear (a store from before the vault); returns how many.
pub fn seal_plain(tx: &mut dyn IssuerTx, sealer: &Sealer) -> Result<usize, TxError> {
    let mut sealed = 0;
    for mut rec in tx.keys()? {
        if let PrivateKey::Plain(_) = rec.private {
            let der = private_der(&rec, None)?;
            rec.private = store_der(&rec.kid, rec.alg, &der, Some(sealer))?;
            tx.put_key(&rec)?;
            sealed += 1;
        }
    }
    Ok(sealed)
}

/// A key is bound to its kid and algorithm: sealed under another, it does not open.
fn key_aad(kid: &str, alg: SigningAlg) -> Vec<u8> {
    let mut aad = b"portcullis issuer signing key v1\0".to_vec();
    aad.extend_from_slice(kid.as_bytes());
    aad.push(0);
    aad.extend_from_slice(alg.name().as_bytes());
    aad
}

/// The private half as the store keeps it: sealed when there is a vault.
fn store_der(
    kid: &str,
    alg: SigningAlg,
    der: &[u8],
    sealer: Option<&Sealer>,
) -> Result<PrivateKey, TxError> {
    Ok(match sealer {
        Some(s) => PrivateKey::Sealed {
            key_id: s.id().to_owned(),
            sealed: s
                .seal(&key_aad(kid, alg), der)
                .map_err(|_| TxError::Crypto("sealing a signing key failed"))?,
        },
        None => PrivateKey::Plain(base64::engine::general_purpose::STANDARD.encode(der)),
    })
}

/// The PKCS#8 DER of a stored key, unsealed with the vault's data key if it is sealed.
fn private_der(rec: &KeyRecord, sealer: Option<&Sealer>) -> Result<Zeroizing<Vec<u8>>, TxError> {
    match (&rec.private, sealer) {
        (PrivateKey::Plain(b64), _) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Zeroizing::new)
            .map_err(|_| TxError::Corrupt(format!("key {:.64}: not base64", rec.kid))),
        (PrivateKey::Sealed { key_id, .. }, None) => Err(TxError::Sealed(format!(
            "signing key {:.64} is sealed under vault data key {key_id:.32}: configure the \
             [vault] that holds it",
            rec.kid
        ))),
        (PrivateKey::Sealed { key_id, sealed }, Some(s)) => {
            if key_id != s.id() {
                return Err(TxError::Sealed(format!(
                    "signing key {:.64} is sealed under vault data key {key_id:.32}, but the \
                     configured vault's data key is {}: is this the vault it was sealed with?",
                    rec.kid,
                    s.id()
                )));
            }
            s.open(&key_aad(&rec.kid, rec.alg), sealed).ok_or_else(|| {
                TxError::Sealed(format!(
                    "signing key {:.64} does not open under the vault's data key: the record \
                     was altered",
                    rec.kid
                ))
            })
        }
    }
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
            .write(|tx| rotate(tx, SigningAlg::ES256, 1000, leeway, None))
            .expect("first");
        assert_eq!(first.retired, None);
        let second = store
            .write(|tx| rotate(tx, SigningAlg::EdDSA, 2000, leeway, None))
            .expect("second");
        assert_eq!(second.retired, Some((first.kid.clone(), 2605)));
        let ring = store
            .read(|rx| load(rx, None))
            .expect("load")
            .expect("ring");
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
        let ring = store
            .read(|rx| load(rx, None))
            .expect("load")
            .expect("ring");
        assert_eq!(ring.kids(), vec![second.kid.as_str()]);
    }

    fn sealer() -> Sealer {
        let master = crate::vault::MasterKey::generate().expect("master");
        crate::vault::Vault::create(std::path::Path::new("unused.vault"), &master)
            .expect("vault")
            .sealer()
    }

    /// Whether `hay` holds `needle` anywhere.
    fn holds(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn with_a_vault_the_private_key_is_sealed_and_opens_only_with_that_vault() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("k.redb");
        let store: Box<dyn IssuerState> = Box::new(Embedded::open(&path).expect("open"));
        let leeway = Duration::from_secs(5);
        let vault = sealer();
        let first = store
            .write(|tx| rotate(tx, SigningAlg::ES256, 1000, leeway, Some(&vault)))
            .expect("rotate");
        let records = store.read(|rx| rx.keys()).expect("keys");
        assert_eq!(records[0].sealed_with(), Some(vault.id()));
        let der = private_der(&records[0], Some(&vault)).expect("unseal");
        let ring = store
            .read(|rx| load(rx, Some(&vault)))
            .expect("load")
            .expect("ring");
        assert_eq!(ring.current().kid(), first.kid);
        drop(store);
        let file = std::fs::read(&path).expect("read store");
        assert!(
            !holds(&file, &der[der.len() - 32..]),
            "no key byte run in clear"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der[..]);
        assert!(!holds(&file, &b64.as_bytes()[b64.len() - 32..]));

        let store: Box<dyn IssuerState> = Box::new(Embedded::open(&path).expect("reopen"));
        let no_vault = store.read(|rx| load(rx, None)).expect_err("no vault");
        assert!(no_vault.to_string().contains(&first.kid), "{no_vault}");
        assert!(no_vault.to_string().contains("[vault]"), "{no_vault}");
        let other = store
            .read(|rx| load(rx, Some(&sealer())))
            .expect_err("another vault");
        assert!(other.to_string().contains(vault.id()), "{other}");
        // A key in clear is never put beside sealed ones.
        let refused = store
            .write(|tx| rotate(tx, SigningAlg::ES256, 2000, leeway, None))
            .expect_err("rotation without the vault");
        assert!(refused.to_string().contains("sealed"), "{refused}");
        assert_eq!(store.read(|rx| rx.keys()).expect("keys").len(), 1);
    }

    #[test]
    fn a_sealed_key_moved_under_another_kid_or_altered_does_not_open() {
        let vault = sealer();
        let (key, der) = SigningKey::generate(SigningAlg::EdDSA).expect("generate");
        let rec = KeyRecord {
            kid: key.kid().to_owned(),
            alg: SigningAlg::EdDSA,
            private: store_der(key.kid(), SigningAlg::EdDSA, &der, Some(&vault)).expect("seal"),
            created_at: 1,
            retired_at: None,
            retain_until: None,
        };
        assert_eq!(&*private_der(&rec, Some(&vault)).expect("opens"), &*der);
        let moved = KeyRecord {
            kid: "another-kid".into(),
            ..rec.clone()
        };
        let e = private_der(&moved, Some(&vault)).expect_err("moved");
        assert!(
            matches!(e, TxError::Sealed(ref m) if m.contains("altered")),
            "{e:?}"
        );
        let PrivateKey::Sealed { key_id, sealed } = &rec.private else {
            panic!("sealed");
        };
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .expect("b64");
        bytes[20] ^= 1;
        let flipped = KeyRecord {
            private: PrivateKey::Sealed {
                key_id: key_id.clone(),
                sealed: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
            ..rec.clone()
        };
        assert!(private_der(&flipped, Some(&vault)).is_err());
    }

    #[test]
    fn a_store_from_before_the_vault_is_sealed_in_place_and_keeps_its_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("k.redb");
        let store: Box<dyn IssuerState> = Box::new(Embedded::open(&path).expect("open"));
        let leeway = Duration::from_secs(5);
        store
            .write(|tx| rotate(tx, SigningAlg::ES256, 1000, leeway, None))
            .expect("first");
        let old = store
            .write(|tx| rotate(tx, SigningAlg::ES256, 2000, leeway, None))
            .expect("second");
        let before = store
            .read(|rx| load(rx, None))
            .expect("load")
            .expect("ring")
            .kids()
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>();
        let clear = std::fs::read(&path).expect("read store");
        let vault = sealer();
        assert_eq!(store.write(|tx| seal_plain(tx, &vault)).expect("seal"), 2);
        assert_eq!(store.write(|tx| seal_plain(tx, &vault)).expect("again"), 0);
        let ring = store
            .read(|rx| load(rx, Some(&vault)))
            .expect("load")
            .expect("ring");
        assert_eq!(ring.current().kid(), old.kid);
        assert_eq!(ring.kids(), before);
        let records = store.read(|rx| rx.keys()).expect("keys");
        assert!(records.iter().all(|r| r.sealed_with() == Some(vault.id())));
        let ders: Vec<_> = records
            .iter()
            .map(|r| private_der(r, Some(&vault)).expect("unseal"))
            .collect();
        drop(store);
        let file = std::fs::read(&path).expect("read store");
        // Sealed in place, the clear copies are gone from the file (redb reuses the pages
        // it freed), not only unreachable.
        for der in ders {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&der[..]);
            let tail = &b64.as_bytes()[b64.len() - 32..];
            assert!(
                holds(&clear, tail),
                "the store held the key in clear before"
            );
            assert!(!holds(&file, tail), "the clear key lingers in the file");
        }
    }

    #[test]
    fn a_plain_record_written_before_the_vault_still_reads() {
        // The stored form of a key from before sealing existed.
        let (key, der) = SigningKey::generate(SigningAlg::ES256).expect("generate");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der[..]);
        let text = format!(
            r#"{{"kid":"{}","alg":"ES256","private_pkcs8":"{b64}","created_at":5}}"#,
            key.kid()
        );
        let rec: KeyRecord = serde_json::from_str(&text).expect("old record");
        assert_eq!(rec.private, PrivateKey::Plain(b64));
        let sealed = KeyRecord {
            private: store_der(key.kid(), SigningAlg::ES256, &der, Some(&sealer())).expect("seal"),
            ..rec
        };
        let json = serde_json::to_string(&sealed).expect("json");
        assert!(json.contains("\"sealed_pkcs8\":{\"key_id\""), "{json}");
        assert!(!json.contains("private_pkcs8"), "{json}");
        let back: KeyRecord = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, sealed);
    }
}
