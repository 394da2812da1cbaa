//! The cache: a hit is re-checked against the clock, the denylist and the key set.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::token::{Alg, Denylist, PushedKeys};

#[test]
fn a_cache_hit_rechecks_expiry() {
    let v = verifier();
    let token = KEYS.es256.token(&claims());
    assert!(check(&v, &token).is_ok());
    assert_eq!(v.cached_tokens(), 1);
    // exp is NOW + 600, leeway 60: good until the last second, refused from exp + leeway on.
    let last = now() + Duration::from_secs(659);
    assert!(check_at(&v, &token, &any_token(), last).is_ok());
    assert_eq!(v.cached_tokens(), 1, "served from the cache");
    let after = now() + Duration::from_secs(660);
    assert_eq!(
        check_at(&v, &token, &any_token(), after).err(),
        Some(TokenDenial::Expired)
    );
    assert_eq!(v.cached_tokens(), 0, "the expired entry is dropped");
}

#[test]
fn a_cache_hit_rechecks_nbf_when_the_clock_goes_back() {
    let v = verifier();
    let token = KEYS.es256.token(&claims_with(json!({ "nbf": NOW - 10 })));
    assert!(check(&v, &token).is_ok());
    let earlier = now() - Duration::from_secs(3600);
    assert_eq!(
        check_at(&v, &token, &any_token(), earlier).err(),
        Some(TokenDenial::Invalid)
    );
}

/// A denylist the test fills.
#[derive(Default)]
struct Revoked(Mutex<HashSet<String>>);

impl Denylist for Revoked {
    fn is_revoked(&self, jti: &str, _now: SystemTime) -> bool {
        self.0.lock().map(|s| s.contains(jti)).unwrap_or(true)
    }
}

#[test]
fn a_revoked_token_stops_working_at_once_even_when_cached() {
    let revoked = Arc::new(Revoked::default());
    let v = TokenVerifier::new(
        vec![issuer(
            "corp",
            ISS,
            KeySource::Static(Arc::new(corp_keys())),
        )],
        revoked.clone(),
    );
    let token = KEYS
        .es256
        .token(&claims_with(json!({ "jti": "to-revoke" })));
    let other = KEYS.es256.token(&claims_with(json!({ "jti": "kept" })));
    assert!(check(&v, &token).is_ok() && check(&v, &other).is_ok());
    assert_eq!(v.cached_tokens(), 2);
    revoked
        .0
        .lock()
        .expect("lock")
        .insert("to-revoke".to_owned());
    assert_eq!(check(&v, &token).err(), Some(TokenDenial::Invalid));
    assert!(check(&v, &other).is_ok());
    // Also refused when not cached.
    let fresh = TokenVerifier::new(
        vec![issuer(
            "corp",
            ISS,
            KeySource::Static(Arc::new(corp_keys())),
        )],
        revoked,
    );
    assert_eq!(check(&fresh, &token).err(), Some(TokenDenial::Invalid));
}

#[test]
fn removing_a_key_invalidates_its_cached_tokens() {
    let all = AlgSet::of(&Alg::ALL);
    let pushed = PushedKeys::new(
        KeySet::new([KEYS.es256.verifying(all), KEYS.ed.verifying(all)]).expect("set"),
    );
    let v = TokenVerifier::new(
        vec![issuer("corp", ISS, KeySource::Pushed(pushed.clone()))],
        Arc::new(NoRevocations),
    );
    let es = KEYS.es256.token(&claims());
    let ed = KEYS.ed.token(&claims());
    assert!(check(&v, &es).is_ok() && check(&v, &ed).is_ok());
    assert_eq!(v.cached_tokens(), 2);

    // The same keys pushed again (new objects, same material): cached tokens stay cached.
    pushed.replace(KeySet::new([KEYS.es256.verifying(all), KEYS.ed.verifying(all)]).expect("set"));
    assert!(check(&v, &es).is_ok() && check(&v, &ed).is_ok());
    assert_eq!(v.cached_tokens(), 2);

    // The ES256 key leaves: its token is refused from the next request, the other stays.
    pushed.replace(KeySet::new([KEYS.ed.verifying(all)]).expect("set"));
    assert_eq!(check(&v, &es).err(), Some(TokenDenial::Invalid));
    assert!(check(&v, &ed).is_ok());
    assert_eq!(v.cached_tokens(), 1);
}

#[test]
fn the_verifier_cache_stays_bounded() {
    let v = verifier().with_cache_max_entries(16);
    for i in 0..100 {
        let token = KEYS
            .ed
            .token(&claims_with(json!({ "jti": format!("t-{i}") })));
        assert!(check(&v, &token).is_ok());
        assert!(v.cached_tokens() <= 16, "{} entries", v.cached_tokens());
    }
}

#[test]
fn a_disabled_cache_still_verifies_every_time() {
    let v = verifier().with_cache_max_entries(0);
    let token = KEYS.es256.token(&claims());
    assert!(check(&v, &token).is_ok() && check(&v, &token).is_ok());
    assert_eq!(v.cached_tokens(), 0);
}
