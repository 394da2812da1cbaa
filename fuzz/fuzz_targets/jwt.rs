//! The JWT compact split and claim checks (src/token/verify.rs), as the token stage runs
//! them before and after the signature (which a fuzzer cannot make). Beyond "no panic": the
//! three segments put back together are the token; claims that pass are within their window
//! at `NOW` (leeway included), name the audience, and carry only what can be sent upstream.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::{JWT_LEEWAY, JWT_MAX_LIFETIME, jwt};

/// The fixed instant the seeds' claims are valid at (seeds.rs uses the same).
const NOW: u64 = 1_800_000_000;

fn b64url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let Ok(parts) = jwt(data, now) else {
        return;
    };
    let joined = format!("{}.{}.{}", parts.header, parts.payload, parts.signature);
    assert_eq!(joined.as_bytes(), data);
    assert!(b64url(&parts.header) && b64url(&parts.payload) && b64url(&parts.signature));
    let Ok((alg, kid, claims)) = parts.decoded else {
        return;
    };
    assert!(["HS256", "RS256", "PS256", "ES256", "ES384", "EdDSA"].contains(&alg));
    assert!(kid.is_none_or(|k| k.len() <= 256));
    assert!(now < claims.exp + JWT_LEEWAY, "expired");
    assert!(
        claims.exp <= now + JWT_MAX_LIFETIME + JWT_LEEWAY,
        "lives too long"
    );
    if let Some(nbf) = claims.nbf {
        assert!(nbf <= now + JWT_LEEWAY, "not yet valid");
    }
    if let Some(iat) = claims.iat {
        assert!(iat <= now + JWT_LEEWAY, "issued in the future");
    }
    let printable = |s: &Option<String>| {
        s.as_deref()
            .is_none_or(|s| http::HeaderValue::from_str(s).is_ok())
    };
    assert!(printable(&claims.sub) && printable(&claims.client_id));
    for scope in claims.scopes.iter() {
        assert!(portcullis::token::is_scope_token(scope), "{scope:?}");
    }
});
