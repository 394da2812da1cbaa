//! What ties the issuer to the gateway's token stage: the public keys it pushes and the
//! revoked access tokens (by `jti`, until their `exp`) the verifier consults on every
//! verification and every cache hit.

use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;

use super::{Denylist, PushedKeys};

/// Revoked access-token ids, in memory (the store holds the same, for restarts).
#[derive(Debug, Default)]
pub struct Revocations {
    /// `jti -> exp` (Unix seconds).
    by_jti: DashMap<Box<str>, u64>,
}

impl Revocations {
    pub fn insert(&self, jti: &str, exp: u64) {
        self.by_jti.insert(jti.into(), exp);
    }

    /// Add what the store holds. Never clears: a revocation committed while the store was
    /// read is inserted by its own request, and clearing could drop it.
    pub fn extend(&self, entries: impl IntoIterator<Item = (String, u64)>) {
        for (jti, exp) in entries {
            self.by_jti.insert(jti.into(), exp);
        }
    }

    /// Forget tokens expired for longer than `grace` seconds at `now`: the verifier refuses
    /// them as expired anyway.
    pub fn prune(&self, now: u64, grace: u64) {
        self.by_jti
            .retain(|_, exp| exp.saturating_add(grace) >= now);
    }

    pub fn len(&self) -> usize {
        self.by_jti.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_jti.is_empty()
    }
}

impl Denylist for Revocations {
    fn is_revoked(&self, jti: &str, _now: SystemTime) -> bool {
        // Entries outlive their token's exp (plus leeway), so `now` need not be compared:
        // an expired token is refused for that before it gets here.
        self.by_jti.contains_key(jti)
    }
}

/// The issuer's half of the gateway's verifier: its published keys and its denylist. Made
/// empty by config validation, filled by `Issuer::open`, shared (cheap clones) by every
/// snapshot that uses the same store.
#[derive(Clone, Default)]
pub struct IssuerLink {
    keys: PushedKeys,
    revocations: Arc<Revocations>,
}

impl IssuerLink {
    pub fn keys(&self) -> &PushedKeys {
        &self.keys
    }

    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// The denylist for `TokenVerifier::new`.
    pub fn denylist(&self) -> Arc<dyn Denylist> {
        self.revocations.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_jti_is_denied_until_pruned_after_its_expiry() {
        let r = Revocations::default();
        r.insert("a", 100);
        r.insert("b", 200);
        assert!(r.is_revoked("a", SystemTime::now()));
        assert!(!r.is_revoked("c", SystemTime::now()));
        r.prune(150, 5);
        assert!(!r.is_revoked("a", SystemTime::now()));
        assert!(r.is_revoked("b", SystemTime::now()));
        assert_eq!(r.len(), 1);
    }
}
