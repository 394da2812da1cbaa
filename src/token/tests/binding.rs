//! Certificate-bound tokens (RFC 8705 `cnf.x5t#S256`): they pass only on a connection that
//! presents the certificate they are bound to; a confirmation that cannot be checked
//! refuses the token.

use serde_json::json;

use super::*;
use crate::identity::{ClientIdentity, sha256};
use crate::token::Presenter;

fn identity() -> ClientIdentity {
    let key = KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["agent".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    ClientIdentity::from_der(cert.der()).expect("identity")
}

fn bound_to(id: &ClientIdentity) -> String {
    KEYS.es256.token(&claims_with(
        json!({"cnf": {"x5t#S256": b64(&id.cert_sha256)}}),
    ))
}

#[test]
fn a_bound_token_passes_only_with_its_certificate_cached_or_not() {
    let v = verifier();
    let (mine, other) = (identity(), identity());
    let token = bound_to(&mine);
    let h = bearer(&token);
    let on = |id: Option<&ClientIdentity>| {
        v.authorize_for(&h, &any_token(), Presenter::Connection(id), now())
    };
    // Twice each way: the second meets the cached claims.
    for _ in 0..2 {
        let claims = on(Some(&mine)).expect("passes").expect("claims");
        assert_eq!(claims.cert_sha256, Some(mine.cert_sha256));
        assert_eq!(on(Some(&other)).err(), Some(TokenDenial::Invalid));
        assert_eq!(on(None).err(), Some(TokenDenial::Invalid));
        assert_eq!(check(&v, &token).err(), Some(TokenDenial::Invalid));
    }
    // The issuer inspecting its own token sees the binding without checking it.
    let inspected = v
        .authorize_for(&h, &any_token(), Presenter::Inspection, now())
        .expect("inspection")
        .expect("claims");
    assert_eq!(inspected.cert_sha256, Some(mine.cert_sha256));
    // The binding is checked before the route's scopes: no scope hint without the certificate.
    let scoped = route(&["admin"], &[], None);
    let r = v.authorize_for(&h, &scoped, Presenter::Connection(None), now());
    assert_eq!(r.err(), Some(TokenDenial::Invalid));
}

#[test]
fn a_confirmation_that_cannot_be_checked_refuses_the_token() {
    let v = verifier();
    let id = identity();
    let thumb = b64(&id.cert_sha256);
    let cases = [
        json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
        json!({"x5t#S256": b64(&sha256(b"x")[..16])}),
        json!({"x5t#S256": "not base64url!"}),
        json!({"x5t#S256": thumb, "jkt": "x"}),
        json!({}),
        json!("x5t"),
    ];
    for cnf in cases {
        let token = KEYS.es256.token(&claims_with(json!({ "cnf": cnf })));
        let r = v.authorize_for(
            &bearer(&token),
            &any_token(),
            Presenter::Connection(Some(&id)),
            now(),
        );
        assert_eq!(r.err(), Some(TokenDenial::Invalid), "cnf {cnf}");
    }
}
