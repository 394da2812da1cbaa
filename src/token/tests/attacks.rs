//! Every attack of the issue, each its own test; all must be refused.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::*;

fn refused_as_invalid(token: &str) {
    assert_eq!(check(&verifier(), token).err(), Some(TokenDenial::Invalid));
}

#[test]
fn alg_none_is_refused() {
    let claims = b64(&serde_json::to_vec(&claims()).expect("json"));
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({ "alg": alg, "kid": "es256" }).to_string().as_bytes());
        // Unsigned as RFC 7519 6.1 writes it, and with a signature segment of some other token.
        refused_as_invalid(&format!("{header}.{claims}."));
        let some_sig = KEYS.es256.token(&super::claims());
        let sig = some_sig.rsplit('.').next().unwrap_or_default();
        refused_as_invalid(&format!("{header}.{claims}.{sig}"));
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // Algorithm confusion: a verifier that lets the header pick HMAC would use the RSA public
    // key bytes (which the attacker has) as the shared secret.
    let secret = EncodingKey::from_secret(KEYS.rsa.public_pem.as_bytes());
    for kid in [json!("rsa"), json!(null)] {
        let header = json!({ "alg": "HS256", "kid": kid, "typ": "JWT" });
        refused_as_invalid(&sign(&header, &claims(), &secret, Algorithm::HS256));
    }
}

#[test]
fn token_signed_with_the_wrong_key_is_refused() {
    // Same kid and algorithm as a trusted key, signed by a key nobody trusts.
    refused_as_invalid(&KEYS.rogue.token(&claims()));
}

#[test]
fn kid_with_path_traversal_is_refused() {
    // Where kid picks a key file, `/dev/null` makes the HMAC key empty.
    let empty = EncodingKey::from_secret(b"");
    for kid in [
        "../../../../../../dev/null",
        "/dev/null",
        "..%2f..%2fetc%2fpasswd",
    ] {
        let header = json!({ "alg": "HS256", "kid": kid });
        refused_as_invalid(&sign(&header, &claims(), &empty, Algorithm::HS256));
        let header = json!({ "alg": "ES256", "kid": kid });
        refused_as_invalid(&sign(&header, &claims(), &KEYS.rogue.enc, Algorithm::ES256));
    }
}

#[test]
fn kid_with_sql_injection_is_refused() {
    // Where kid is looked up in SQL, the injected query returns the attacker's secret.
    let secret = EncodingKey::from_secret(b"attacker-chosen-secret-of-32-bytes!!");
    for kid in [
        "x' UNION SELECT 'attacker-chosen-secret-of-32-bytes!!' --",
        "' OR '1'='1",
        "es256'; DROP TABLE keys; --",
    ] {
        let header = json!({ "alg": "HS256", "kid": kid });
        refused_as_invalid(&sign(&header, &claims(), &secret, Algorithm::HS256));
    }
}

#[test]
fn jku_pointing_elsewhere_is_refused() {
    // The attacker hosts a JWKS with their key and points jku at it: keys come only from
    // config, so the signature is checked with our key and fails.
    let header = json!({
        "alg": "ES256", "kid": "attacker", "jku": "https://evil.example/jwks.json"
    });
    refused_as_invalid(&sign(&header, &claims(), &KEYS.rogue.enc, Algorithm::ES256));
    let header = json!({ "alg": "ES256", "kid": "es256", "jku": "https://evil.example/jwks.json" });
    refused_as_invalid(&sign(&header, &claims(), &KEYS.rogue.enc, Algorithm::ES256));
}

#[test]
fn x5u_pointing_elsewhere_is_refused() {
    let header = json!({
        "alg": "ES256", "kid": "es256", "x5u": "https://evil.example/cert.pem",
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]
    });
    refused_as_invalid(&sign(&header, &claims(), &KEYS.rogue.enc, Algorithm::ES256));
}

#[test]
fn embedded_jwk_header_is_not_trusted() {
    let header = json!({ "alg": "ES256", "jwk": KEYS.rogue.jwk() });
    refused_as_invalid(&sign(&header, &claims(), &KEYS.rogue.enc, Algorithm::ES256));
}

#[test]
fn expired_token_is_refused_as_expired() {
    let token = KEYS.es256.token(&claims_with(json!({ "exp": NOW - 61 })));
    assert_eq!(check(&verifier(), &token).err(), Some(TokenDenial::Expired));
}

#[test]
fn a_token_expiring_millions_of_years_ahead_is_refused() {
    // Signed by a trusted key, so only max_lifetime (24 h here) stands in its way.
    for exp in [
        NOW + 24 * 3600 + 61,
        NOW + 10 * 365 * 86_400,
        253_402_300_799,
        1 << 52,
    ] {
        refused_as_invalid(&KEYS.es256.token(&claims_with(json!({ "exp": exp }))));
    }
    // At the limit (plus leeway) it still passes.
    let token = KEYS
        .es256
        .token(&claims_with(json!({ "exp": NOW + 24 * 3600 + 60 })));
    assert!(check(&verifier(), &token).is_ok());
}

#[test]
fn nbf_in_the_future_is_refused() {
    refused_as_invalid(&KEYS.es256.token(&claims_with(json!({ "nbf": NOW + 3600 }))));
}

#[test]
fn wrong_iss_is_refused() {
    for iss in [
        json!("https://evil.example/"),
        json!("https://id.example.com"),
        json!(null),
        json!(7),
    ] {
        refused_as_invalid(&KEYS.es256.token(&claims_with(json!({ "iss": iss }))));
    }
}

#[test]
fn wrong_aud_is_refused() {
    for aud in [
        json!("someone-else"),
        json!(["a", "b"]),
        json!([]),
        json!(null),
        json!(1),
    ] {
        refused_as_invalid(&KEYS.es256.token(&claims_with(json!({ "aud": aud }))));
    }
}

#[test]
fn missing_exp_is_refused() {
    refused_as_invalid(&KEYS.es256.token(&claims_with(json!({ "exp": null }))));
    // Not a number is not an exp either.
    refused_as_invalid(
        &KEYS
            .es256
            .token(&claims_with(json!({ "exp": "9999999999" }))),
    );
    refused_as_invalid(&KEYS.es256.token(&claims_with(json!({ "exp": -1 }))));
    refused_as_invalid(&KEYS.es256.token(&claims_with(json!({ "exp": 1e300 }))));
}

#[test]
fn stripped_signature_is_refused() {
    let token = KEYS.es256.token(&claims());
    let (signed, _) = token.rsplit_once('.').unwrap_or_default();
    refused_as_invalid(&format!("{signed}."));
    refused_as_invalid(signed);
    refused_as_invalid(&format!("{signed}.."));
}

#[test]
fn truncated_token_is_refused() {
    let token = KEYS.rsa.token(&claims());
    for cut in [token.len() - 1, token.len() - 20, token.len() / 2, 10] {
        refused_as_invalid(&token[..cut]);
    }
}

#[test]
fn non_base64_segments_are_refused() {
    let token = KEYS.es256.token(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let bad = [
        format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}=.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}+/", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}==", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
        format!("{}.%7B%7D.{}", parts[0], parts[2]),
    ];
    for t in &bad {
        refused_as_invalid(t);
    }
}

#[test]
fn one_mib_token_is_refused() {
    let token = KEYS.es256.token(&claims());
    let (head, sig) = token.rsplit_once('.').unwrap_or_default();
    let huge = format!("{head}.{sig}{}", "A".repeat(1 << 20));
    let started = std::time::Instant::now();
    refused_as_invalid(&huge);
    // Refused on its length, before hashing or parsing a megabyte.
    assert!(started.elapsed() < std::time::Duration::from_millis(50));
}

#[test]
fn token_in_the_query_string_is_refused() {
    let token = KEYS.es256.token(&claims());
    for uri in [
        format!("/orders?access_token={token}"),
        format!("/orders?token={token}&x=1"),
    ] {
        let req = http::Request::get(uri).body(()).expect("request");
        let got = verifier().authorize(req.headers(), &any_token(), now());
        assert_eq!(got.err(), Some(TokenDenial::Missing));
    }
}

#[test]
fn valid_token_of_another_issuer_is_refused_on_a_route_for_one_issuer() {
    let v = verifier();
    let partner_token = KEYS
        .partner
        .token(&claims_with(json!({ "iss": PARTNER_ISS })));
    let corp_only = route(&[], &[], Some(&["corp"]));
    assert_eq!(
        check_at(&v, &partner_token, &corp_only, now()).err(),
        Some(TokenDenial::Invalid)
    );
    // Valid where any issuer goes; once cached, still refused on the corp-only route.
    assert!(check(&v, &partner_token).is_ok());
    assert_eq!(
        check_at(&v, &partner_token, &corp_only, now()).err(),
        Some(TokenDenial::Invalid)
    );
}

#[test]
fn a_partner_key_cannot_sign_for_the_corp_issuer() {
    // Each issuer's tokens are verified only with that issuer's keys.
    refused_as_invalid(&KEYS.partner.token(&claims()));
}
