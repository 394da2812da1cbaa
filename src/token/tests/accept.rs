//! What passes: each algorithm, leeway, scopes, and the claims handed on.

use std::time::Duration;

use http::header::{AUTHORIZATION, HeaderName};
use jsonwebtoken::Algorithm;
use serde_json::json;

use super::*;
use crate::token::ClaimHeaders;
use crate::upstream::write_claims as rewrite_upstream_headers;

#[test]
fn valid_tokens_of_each_algorithm_are_accepted() {
    let v = verifier();
    let k = &*KEYS;
    let cases = [
        (&k.es256, Algorithm::ES256),
        (&k.es384, Algorithm::ES384),
        (&k.rsa, Algorithm::RS256),
        (&k.rsa, Algorithm::PS256),
        (&k.ed, Algorithm::EdDSA),
    ];
    for (key, alg) in cases {
        let claims = check(&v, &key.token_as(alg, &claims()))
            .unwrap_or_else(|e| panic!("{alg:?} refused: {e}"));
        assert_eq!(&*claims.issuer, "corp");
        assert_eq!(claims.sub.as_deref(), Some("alice"));
        assert_eq!(claims.client_id.as_deref(), Some("billing-agent"));
        assert_eq!(claims.jti.as_deref(), Some("t-1"));
        assert!(claims.scopes.contains("orders:read"));
        assert_eq!(claims.exp, now() + Duration::from_secs(600));
    }
}

#[test]
fn a_key_configured_for_rs256_only_refuses_ps256() {
    let only_rs256 = KEYS.rsa.verifying(AlgSet::of(&[crate::token::Alg::RS256]));
    let v = TokenVerifier::new(
        vec![issuer(
            "corp",
            ISS,
            KeySource::Static(Arc::new(KeySet::new([only_rs256]).expect("set"))),
        )],
        Arc::new(NoRevocations),
    );
    assert!(check(&v, &KEYS.rsa.token_as(Algorithm::RS256, &claims())).is_ok());
    assert_eq!(
        check(&v, &KEYS.rsa.token_as(Algorithm::PS256, &claims())).err(),
        Some(TokenDenial::Invalid)
    );
}

#[test]
fn a_key_without_kid_verifies_tokens_with_or_without_kid() {
    let unnamed = VerifyingKey::from_spki_pem(
        KEYS.ed.public_pem.as_bytes(),
        None,
        AlgSet::of(&[crate::token::Alg::EdDSA]),
    )
    .expect("key");
    let v = TokenVerifier::new(
        vec![issuer(
            "corp",
            ISS,
            KeySource::Static(Arc::new(KeySet::new([unnamed]).expect("set"))),
        )],
        Arc::new(NoRevocations),
    );
    assert!(check(&v, &KEYS.ed.token(&claims())).is_ok());
    let header = json!({ "alg": "EdDSA" });
    let no_kid = sign(&header, &claims(), &KEYS.ed.enc, Algorithm::EdDSA);
    assert!(check(&v, &no_kid).is_ok());
}

#[test]
fn leeway_applies_to_exp_nbf_and_iat() {
    let v = verifier();
    let k = &KEYS.es256;
    let cases = [
        (json!({ "exp": NOW - 59 }), Ok(())),
        (json!({ "exp": NOW - 60 }), Err(TokenDenial::Expired)),
        (json!({ "nbf": NOW + 60 }), Ok(())),
        (json!({ "nbf": NOW + 61 }), Err(TokenDenial::Invalid)),
        (json!({ "iat": NOW + 60 }), Ok(())),
        (json!({ "iat": NOW + 61 }), Err(TokenDenial::Invalid)),
        (json!({ "exp": (NOW + 600) as f64 + 0.5 }), Ok(())),
    ];
    for (change, want) in cases {
        let got = check(&v, &k.token(&claims_with(change.clone()))).map(|_| ());
        assert_eq!(got, want, "{change}");
    }
}

#[test]
fn scopes_all_of_and_any_of_decide_insufficient_scope() {
    let v = verifier();
    let token = KEYS.es256.token(&claims());
    type Case<'a> = (&'a [&'a str], &'a [&'a str], Result<(), TokenDenial>);
    let cases: [Case; 5] = [
        (&["orders:read"], &[], Ok(())),
        (&["orders:read", "invoices:read"], &[], Ok(())),
        (&["orders:write"], &[], Err(TokenDenial::InsufficientScope)),
        (&[], &["orders:write", "invoices:read"], Ok(())),
        (
            &["orders:read"],
            &["admin", "root"],
            Err(TokenDenial::InsufficientScope),
        ),
    ];
    for (all, any, want) in cases {
        let got = check_at(&v, &token, &route(all, any, None), now()).map(|_| ());
        assert_eq!(got, want, "all_of {all:?} any_of {any:?}");
    }
}

#[test]
fn scp_array_and_string_grant_scopes() {
    let v = verifier();
    let orders_write = route(&["orders:write", "orders:read"], &[], None);
    for c in [
        json!({ "scope": null, "scp": ["orders:read", "orders:write"] }),
        json!({ "scope": null, "scp": "orders:read orders:write" }),
        json!({ "scope": "orders:read", "scp": ["orders:write"] }),
    ] {
        let token = KEYS.es256.token(&claims_with(c.clone()));
        assert!(check_at(&v, &token, &orders_write, now()).is_ok(), "{c}");
    }
    // One array element holding two scopes would become two for the upstream: refused.
    let token = KEYS
        .es256
        .token(&claims_with(json!({ "scp": ["orders:read admin"] })));
    assert_eq!(check(&v, &token).err(), Some(TokenDenial::Invalid));
}

#[test]
fn unknown_crit_header_is_refused() {
    let v = verifier();
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!(null)] {
        let header =
            json!({ "alg": "ES256", "kid": "es256", "crit": crit, "b64": false, "exp": 1 });
        let token = sign(&header, &claims(), &KEYS.es256.enc, Algorithm::ES256);
        assert_eq!(
            check(&v, &token).err(),
            Some(TokenDenial::Invalid),
            "{crit}"
        );
    }
}

#[test]
fn ignored_headers_do_not_stop_a_valid_token() {
    let header = json!({
        "alg": "ES256", "kid": "es256", "typ": "at+jwt",
        "jku": "https://elsewhere.example/jwks", "x5u": "https://elsewhere.example/c.pem"
    });
    let token = sign(&header, &claims(), &KEYS.es256.enc, Algorithm::ES256);
    assert!(check(&verifier(), &token).is_ok());
}

#[test]
fn claims_that_cannot_be_headers_refuse_the_token() {
    let v = verifier();
    for c in [
        json!({ "sub": "alice\r\nx-admin: 1" }),
        json!({ "client_id": "a\u{0}b" }),
    ] {
        let token = KEYS.es256.token(&claims_with(c.clone()));
        assert_eq!(check(&v, &token).err(), Some(TokenDenial::Invalid), "{c}");
    }
}

#[test]
fn auth_none_reads_no_token_and_lowercase_bearer_is_accepted() {
    let v = verifier();
    let token = KEYS.es256.token(&claims());
    let h = bearer("garbage");
    assert!(matches!(v.authorize(&h, &RouteAuth::None, now()), Ok(None)));
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("bearer {token}")).expect("h"),
    );
    assert!(matches!(v.authorize(&h, &any_token(), now()), Ok(Some(_))));
}

#[test]
fn upstream_gets_verified_claims_and_never_client_copies() {
    let claims = check(&verifier(), &KEYS.es256.token(&claims())).expect("valid");
    let forged = [
        ("x-auth-subject", "root"),
        ("x-auth-scopes", "admin"),
        ("x-auth-client-id", "forged"),
        ("x-auth-issuer", "corp"),
    ];
    let client_headers = |with_auth: bool| {
        let mut h = if with_auth {
            bearer("abc")
        } else {
            HeaderMap::new()
        };
        for (k, v) in forged {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    };
    let cfg = ClaimHeaders::default();

    let mut h = client_headers(true);
    rewrite_upstream_headers(&mut h, Some(&claims), &cfg);
    assert!(h.get(AUTHORIZATION).is_none());
    assert_eq!(h["x-auth-subject"], "alice");
    assert_eq!(h["x-auth-client-id"], "billing-agent");
    assert_eq!(h["x-auth-scopes"], "invoices:read orders:read");
    assert_eq!(h["x-auth-issuer"], "corp");
    assert_eq!(h.get_all("x-auth-subject").iter().count(), 1);

    // No token on the route: claim headers still stripped, Authorization left to the upstream.
    let mut h = client_headers(true);
    rewrite_upstream_headers(&mut h, None, &cfg);
    assert!(forged.iter().all(|(k, _)| h.get(*k).is_none()));
    assert!(h.get(AUTHORIZATION).is_some());

    // Configured to keep Authorization and to send no subject.
    let cfg = ClaimHeaders {
        keep_authorization: true,
        subject: None,
        ..ClaimHeaders::default()
    };
    let mut h = client_headers(true);
    rewrite_upstream_headers(&mut h, Some(&claims), &cfg);
    assert!(h.get(AUTHORIZATION).is_some());
    assert!(
        h.get("x-auth-subject").is_none(),
        "a client copy goes even when not sent"
    );
    assert_eq!(h["x-auth-scopes"], "invoices:read orders:read");
}
