//! Reading OAuth requests: form and JSON bodies, client credentials, scopes.

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, header};

use crate::issuer::request::{
    Credentials, Params, credentials, parse_form, parse_json, scope_list,
};

#[test]
fn form_bodies_decode_plus_and_escapes_and_refuse_bad_ones() {
    let got =
        parse_form(b"grant_type=client_credentials&scope=a+b%3Ac&empty=&flag").expect("valid");
    assert_eq!(
        got,
        [
            ("grant_type".into(), "client_credentials".into()),
            ("scope".into(), "a b:c".into()),
            ("empty".into(), String::new()),
            ("flag".into(), String::new()),
        ]
    );
    assert!(parse_form(b"a=%zz").is_none());
    assert!(parse_form(b"a=%4").is_none());
    assert!(parse_form(b"a=%ff").is_none(), "invalid UTF-8");
}

#[test]
fn repeated_parameters_are_refused() {
    let pairs = parse_form(b"scope=a&scope=b").expect("form");
    assert_eq!(
        Params::new(pairs).expect_err("repeat").code,
        "invalid_request"
    );
}

#[test]
fn json_bodies_take_strings_and_a_scope_array_only() {
    let got =
        parse_json(br#"{"grant_type":"client_credentials","scope":["a","b"]}"#).expect("valid");
    assert_eq!(got[1], ("scope".into(), "a b".into()));
    assert!(parse_json(br#"{"expires":5}"#).is_err());
    assert!(parse_json(br#"["a"]"#).is_err());
}

fn headers(auth: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(auth).expect("value"),
    );
    h
}

#[test]
fn basic_credentials_are_url_decoded_and_one_method_only_is_accepted() {
    let b64 = base64::engine::general_purpose::STANDARD.encode("erp%2B1:s%3Acret");
    let none = Params::default();
    match credentials(&headers(&format!("Basic {b64}")), &none, false) {
        Ok(Credentials::Secret { id, secret, method }) => {
            assert_eq!(
                (id.as_str(), secret.as_str(), method),
                ("erp+1", "s:cret", "client_secret_basic")
            );
        }
        _ => panic!("basic credentials"),
    }
    let both = Params::new(vec![("client_secret".into(), "x".into())]).expect("params");
    let e = credentials(&headers(&format!("Basic {b64}")), &both, false)
        .err()
        .expect("two methods");
    assert_eq!(e.code, "invalid_request");
    let bearer = credentials(&headers("Bearer abc"), &none, false)
        .err()
        .expect("not basic");
    assert_eq!(bearer.code, "invalid_client");
}

#[test]
fn a_client_id_alone_authenticates_only_with_a_certificate() {
    let id_only = Params::new(vec![("client_id".into(), "erp".into())]).expect("params");
    assert!(matches!(
        credentials(&HeaderMap::new(), &id_only, true),
        Ok(Credentials::Certificate { .. })
    ));
    let e = credentials(&HeaderMap::new(), &id_only, false)
        .err()
        .expect("no proof");
    assert_eq!(e.code, "invalid_client");
}

#[test]
fn scopes_split_on_spaces_and_refuse_quotes() {
    assert_eq!(scope_list(" a  b a ").expect("ok"), ["a", "b"]);
    assert!(scope_list("a \"b").is_err());
}
