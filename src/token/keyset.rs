//! Key sets: an issuer's keys at one moment, and where they come from (config, a remote JWKS,
//! or code in this process). Readers take the current set without a lock.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::Jwk;

use super::alg::{Alg, AlgSet};
use super::jwks::RemoteJwks;
use super::keys::{KeyError, VerifyingKey};

/// An issuer's keys at one moment: by kid, plus keys without a kid.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<Box<str>, Arc<VerifyingKey>>,
    unnamed: Vec<Arc<VerifyingKey>>,
}

impl KeySet {
    /// A set of keys; two keys with one kid are an error.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Result<KeySet, KeyError> {
        let mut set = KeySet::default();
        for k in keys {
            set.add(k)?;
        }
        Ok(set)
    }

    fn add(&mut self, k: VerifyingKey) -> Result<(), KeyError> {
        match k.kid().map(Box::<str>::from) {
            Some(kid) if self.by_kid.contains_key(&kid) => Err(KeyError::DuplicateKid(kid.into())),
            Some(kid) => {
                self.by_kid.insert(kid, Arc::new(k));
                Ok(())
            }
            None => {
                self.unnamed.push(Arc::new(k));
                Ok(())
            }
        }
    }

    /// Parse a JWKS document. Keys we cannot or must not use are skipped, each with the
    /// reason (for the log); a document with no usable key at all is an error.
    pub fn from_jwks(json: &[u8], allowed: AlgSet) -> Result<(KeySet, Vec<String>), KeyError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(json).map_err(|e| KeyError::Json(e.to_string()))?;
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for (i, v) in doc.keys.into_iter().enumerate() {
            let jwk: Jwk = match serde_json::from_value(v) {
                Ok(j) => j,
                Err(e) => {
                    skipped.push(format!("keys[{i}]: {e}"));
                    continue;
                }
            };
            let name = jwk
                .common
                .key_id
                .as_deref()
                .unwrap_or("(no kid)")
                .to_owned();
            if let Err(e) = VerifyingKey::from_jwk(&jwk, allowed).and_then(|k| set.add(k)) {
                skipped.push(format!("keys[{i}] {name:.64}: {e}"));
            }
        }
        if set.is_empty() {
            let why = if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join("; "))
            };
            return Err(KeyError::Empty(why));
        }
        Ok((set, skipped))
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The kids in the set (for logs and tests).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.by_kid.keys().map(|k| &**k)
    }

    /// Whether the token's kid names a key in this set (an unknown kid may mean a rotation).
    pub(crate) fn knows_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The keys to try for a token: the one its kid names, else the keys without a kid (a kid
    /// is a hint, RFC 7515 4.1.4). Only keys allowed to check `alg`.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'a Arc<VerifyingKey>> + 'a {
        let named = kid.and_then(|k| self.by_kid.get(k));
        let rest = if named.is_some() {
            &[][..]
        } else {
            &self.unnamed[..]
        };
        named
            .into_iter()
            .chain(rest.iter())
            .filter(move |k| k.algorithms().contains(alg))
    }

    /// Whether this exact key (not an equal copy) is still in the set.
    pub(crate) fn contains(&self, key: &Arc<VerifyingKey>) -> bool {
        match key.kid() {
            Some(kid) => self.by_kid.get(kid).is_some_and(|k| Arc::ptr_eq(k, key)),
            None => self.unnamed.iter().any(|k| Arc::ptr_eq(k, key)),
        }
    }

    /// This set, with every key unchanged since `previous` replaced by the previous `Arc`.
    pub fn reuse_unchanged(mut self, previous: &KeySet) -> KeySet {
        for (kid, k) in self.by_kid.iter_mut() {
            if let Some(old) = previous.by_kid.get(kid).filter(|old| old.same_as(k)) {
                *k = old.clone();
            }
        }
        for k in self.unnamed.iter_mut() {
            if let Some(old) = previous.unnamed.iter().find(|old| old.same_as(k)) {
                *k = old.clone();
            }
        }
        self
    }
}

// === KeySource ===

/// Where an issuer's keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// PEM files, a JWKS file or a shared secret, loaded with the config.
    Static(Arc<KeySet>),
    /// A JWKS URL, kept fresh by a background task ([`super::TokenVerifier::spawn_refresh`]).
    Remote(Arc<RemoteJwks>),
    /// Keys pushed by code in this process (the gateway's own issuer).
    Pushed(PushedKeys),
}

impl KeySource {
    pub(crate) fn with_keys<R>(&self, f: impl FnOnce(&KeySet) -> R) -> R {
        match self {
            KeySource::Static(set) => f(set),
            KeySource::Remote(remote) => f(&remote.keys.load()),
            KeySource::Pushed(pushed) => f(&pushed.0.load()),
        }
    }

    /// A token named a kid we do not have: ask the fetch task for a refetch. Never waits.
    pub(crate) fn unknown_kid(&self) {
        match self {
            KeySource::Remote(remote) => remote.request_refetch(),
            KeySource::Static(_) | KeySource::Pushed(_) => {}
        }
    }
}

/// A key set that code in this process replaces (the issuer rotating its signing keys).
#[derive(Clone, Default)]
pub struct PushedKeys(Arc<ArcSwap<KeySet>>);

impl PushedKeys {
    pub fn new(initial: KeySet) -> Self {
        PushedKeys(Arc::new(ArcSwap::from_pointee(initial)))
    }

    /// Replace the keys. Unchanged keys keep their identity, so their cached tokens stay
    /// cached; tokens of a removed key are refused from the next request on.
    pub fn replace(&self, keys: KeySet) {
        let previous = self.0.load();
        self.0.store(Arc::new(keys.reuse_unchanged(&previous)));
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.0.load_full()
    }
}
