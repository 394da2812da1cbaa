//! Config rules: issuers, `[token]` and each route's auth, with their key paths.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::config::file::FileConfig;
use crate::token::TokenSettings;
use crate::token::config::{Findings, issuers, route_auth, token_section};

/// Key files in a temp dir, and a TOML file text that refers to them.
fn files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).expect("write");
    write("es256.pem", KEYS.es256.public_pem.as_bytes());
    write("rsa.pem", KEYS.rsa.public_pem.as_bytes());
    let private = rcgen::KeyPair::generate().expect("key").serialize_pem();
    write("private.pem", private.as_bytes());
    let jwks = json!({ "keys": [KEYS.es256.jwk(), KEYS.ed.jwk(), { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" }] });
    write("jwks.json", jwks.to_string().as_bytes());
    write(
        "oct.json",
        json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] })
            .to_string()
            .as_bytes(),
    );
    write("secret", b"0123456789abcdef0123456789abcdef-extra\n");
    write("short", b"too-short\n");
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .self_signed(&rcgen::KeyPair::generate().expect("key"))
        .expect("cert");
    write("ca.pem", ca.pem().as_bytes());
    dir
}

fn parse(text: &str) -> FileConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn check_issuers(dir: &Path, text: &str) -> (Option<Vec<IssuerSettings>>, Findings) {
    let cfg = parse(text);
    let mut f = Findings::new(dir);
    let out = issuers(&mut f, &cfg.token_issuers);
    (out, f)
}

const BASE: &str = r#"
name = "corp"
issuer = "https://id.example.com/"
audiences = ["portcullis"]
"#;

#[test]
fn every_key_source_validates() {
    let dir = files();
    let text = format!(
        r#"
[[token_issuers]]{BASE}
keys = [{{ pem = "es256.pem", kid = "k1", algorithms = ["ES256"] }}, {{ pem = "rsa.pem" }}]
algorithms = ["RS256", "PS256", "ES256"]
leeway = "0s"

[[token_issuers]]
name = "files"
issuer = "https://files.example/"
audiences = ["portcullis"]
jwks_file = "jwks.json"
algorithms = ["ES256", "EdDSA"]

[[token_issuers]]
name = "shared"
issuer = "legacy"
audiences = ["portcullis"]
hs256_secret_file = "secret"

[[token_issuers]]
name = "remote"
issuer = "https://remote.example/"
audiences = ["portcullis"]
jwks_url = "https://127.0.0.1:8443/.well-known/jwks.json"
jwks_ca = "ca.pem"
jwks_refresh = "5m"
algorithms = ["RS256"]
"#
    );
    let (out, f) = check_issuers(dir.path(), &text);
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    let out = out.expect("valid");
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].leeway, std::time::Duration::ZERO);
    assert!(matches!(&out[3].keys, KeySource::Remote(_)));
    // The oct key in the JWKS is skipped with a warning, never used.
    assert!(
        f.warnings
            .iter()
            .any(|(k, m)| k == "token_issuers[1].jwks_file" && m.contains("oct")),
        "{:?}",
        f.warnings
    );
    let KeySource::Static(files) = &out[1].keys else {
        panic!("static")
    };
    assert_eq!(files.len(), 2);
}

#[test]
fn issuer_mistakes_are_reported_at_their_key() {
    let dir = files();
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"jwks_file = "jwks.json"
algorithms = ["HS256", "ES256"]"#,
            "token_issuers[0].algorithms",
            "never mixed",
        ),
        (
            r#"hs256_secret_file = "secret"
algorithms = ["RS256"]"#,
            "token_issuers[0].algorithms",
            "never",
        ),
        (
            r#"jwks_file = "jwks.json"
algorithms = ["RS512"]"#,
            "token_issuers[0].algorithms[0]",
            "not supported",
        ),
        (
            r#"jwks_file = "jwks.json"
algorithms = ["none"]"#,
            "token_issuers[0].algorithms[0]",
            "never accepted",
        ),
        (
            r#"jwks_file = "jwks.json""#,
            "token_issuers[0].algorithms",
            "missing",
        ),
        (
            r#"jwks_url = "http://id.example.com/jwks"
jwks_ca = "ca.pem"
algorithms = ["RS256"]"#,
            "token_issuers[0].jwks_url",
            "must be https",
        ),
        (
            r#"jwks_url = "https://id.example.com/jwks"
algorithms = ["RS256"]"#,
            "token_issuers[0].jwks_ca",
            "missing",
        ),
        (
            r#"jwks_url = "https://id.example.com/jwks"
jwks_ca = "nope.pem"
algorithms = ["RS256"]"#,
            "token_issuers[0].jwks_ca",
            "cannot read",
        ),
        (
            r#"jwks_file = "jwks.json"
hs256_secret_file = "secret"
algorithms = ["ES256"]"#,
            "token_issuers[0]",
            "only one key source",
        ),
        (
            r#"algorithms = ["ES256"]"#,
            "token_issuers[0]",
            "missing: one of",
        ),
        (
            r#"hs256_secret_file = "short""#,
            "token_issuers[0].hs256_secret_file",
            "at least 32",
        ),
        (
            r#"keys = [{ pem = "private.pem", algorithms = ["ES256"] }]"#,
            "token_issuers[0].keys[0].pem",
            "not a PEM public key",
        ),
        (
            r#"keys = [{ pem = "es256.pem", algorithms = ["RS256"] }]"#,
            "token_issuers[0].keys[0]",
            "RS256",
        ),
        (
            r#"keys = [{ pem = "es256.pem" }]"#,
            "token_issuers[0].keys[0].algorithms",
            "missing",
        ),
        (
            r#"keys = [{ pem = "es256.pem", kid = "a" }, { pem = "rsa.pem", kid = "a" }]
algorithms = ["ES256", "RS256"]"#,
            "token_issuers[0].keys",
            "kid \"a\"",
        ),
        (
            r#"jwks_file = "oct.json"
algorithms = ["ES256"]"#,
            "token_issuers[0].jwks_file",
            "no usable key",
        ),
        (
            r#"jwks_file = "jwks.json"
algorithms = ["ES256"]
leeway = "10m""#,
            "token_issuers[0].leeway",
            "out of range",
        ),
        (
            r#"jwks_file = "jwks.json"
algorithms = ["ES256"]
max_lifetime = "1000y""#,
            "token_issuers[0].max_lifetime",
            "out of range",
        ),
        (
            r#"jwks_file = "jwks.json"
algorithms = ["ES256"]
max_lifetime = "forever""#,
            "token_issuers[0].max_lifetime",
            "not a duration",
        ),
    ];
    for (extra, key, message) in cases {
        let text = format!("[[token_issuers]]{BASE}{extra}\n");
        let (out, f) = check_issuers(dir.path(), &text);
        assert!(out.is_none(), "accepted:\n{extra}");
        assert!(
            f.errors
                .iter()
                .any(|(k, m)| k.starts_with(key) && m.contains(message)),
            "{extra}\nwanted {key}: {message}\ngot {:?}",
            f.errors
        );
    }
}

#[test]
fn missing_identity_fields_and_duplicates_are_errors() {
    let dir = files();
    let text = r#"
[[token_issuers]]
jwks_file = "jwks.json"
algorithms = ["ES256"]

[[token_issuers]]
name = "a"
issuer = "x"
audiences = ["p"]
jwks_file = "jwks.json"
algorithms = ["ES256"]

[[token_issuers]]
name = "a"
issuer = "x"
audiences = ["p"]
jwks_file = "jwks.json"
algorithms = ["ES256"]
"#;
    let (out, f) = check_issuers(dir.path(), text);
    assert!(out.is_none());
    let keys: Vec<&str> = f.errors.iter().map(|(k, _)| k.as_str()).collect();
    for want in [
        "token_issuers[0].name",
        "token_issuers[0].issuer",
        "token_issuers[0].audiences",
        "token_issuers[2].name",
        "token_issuers[2].issuer",
    ] {
        assert!(keys.contains(&want), "{want} not in {keys:?}");
    }
}

#[test]
fn route_auth_rules() {
    let with_issuer = "[[token_issuers]]\nname = \"corp\"\n";
    // (issuers, route, the RouteAuth or the error's key and message)
    type Case<'a> = (&'a str, &'a str, Result<RouteAuth, (&'a str, &'a str)>);
    let cases: &[Case] = &[
        ("", "", Ok(RouteAuth::None)),
        ("", "auth = \"none\"", Ok(RouteAuth::None)),
        (
            "",
            "auth = \"bearer\"",
            Err(("routes[0].auth", "needs at least one")),
        ),
        (
            "",
            "scopes = [\"a\"]",
            Err(("routes[0].auth", "no [[token_issuers]]")),
        ),
        (with_issuer, "", Err(("routes[0].auth", "missing"))),
        (
            with_issuer,
            "scopes = [\"a\"]",
            Err(("routes[0].auth", "missing")),
        ),
        (
            with_issuer,
            "auth = \"none\"\nscopes = [\"a\"]",
            Err(("routes[0].scopes", "cannot require")),
        ),
        (
            with_issuer,
            "auth = \"none\"\nissuers = [\"corp\"]",
            Err(("routes[0].issuers", "cannot require")),
        ),
        (
            with_issuer,
            "auth = \"Bearer\"",
            Err(("routes[0].auth", "not an auth mode")),
        ),
        (
            with_issuer,
            "auth = \"bearer\"\nissuers = [\"other\"]",
            Err(("routes[0].issuers[0]", "no [[token_issuers]]")),
        ),
        (
            with_issuer,
            "auth = \"bearer\"\nscopes = [\"a b\"]",
            Err(("routes[0].scopes[0]", "not a scope")),
        ),
        (
            with_issuer,
            "auth = \"bearer\"\nany_scopes = []",
            Err(("routes[0].any_scopes", "empty")),
        ),
        (with_issuer, "auth = \"none\"", Ok(RouteAuth::None)),
        (with_issuer, "auth = \"bearer\"", Ok(RouteAuth::any_token())),
        (
            with_issuer,
            "auth = \"bearer\"\nscopes = [\"orders:read\", \"orders:read\"]\nany_scopes = [\"eu\", \"us\"]\nissuers = [\"corp\"]",
            Ok(route(&["orders:read"], &["eu", "us"], Some(&["corp"]))),
        ),
    ];
    for (issuers_text, route_text, want) in cases {
        let cfg = parse(&format!(
            "{issuers_text}\n[[routes]]\nname = \"r\"\n{route_text}\n"
        ));
        let mut f = Findings::new(Path::new("."));
        let rs = &cfg.routes[0];
        let keys = crate::token::RouteAuthKeys {
            auth: &rs.auth,
            scopes: &rs.scopes,
            any_scopes: &rs.any_scopes,
            issuers: &rs.issuers,
        };
        let got = route_auth(&mut f, "routes[0]", keys, &cfg.token_issuers);
        match want {
            Ok(auth) => {
                assert!(f.errors.is_empty(), "{route_text}: {:?}", f.errors);
                assert_eq!(got.as_ref(), Some(auth), "{route_text}");
            }
            Err((key, message)) => {
                assert!(got.is_none(), "{issuers_text} {route_text} accepted");
                assert!(
                    f.errors
                        .iter()
                        .any(|(k, m)| k == key && m.contains(message)),
                    "{route_text}: wanted {key}: {message}, got {:?}",
                    f.errors
                );
            }
        }
    }
}

#[test]
fn token_section_defaults_names_and_reserved_headers() {
    let mut f = Findings::new(Path::new("."));
    let s = token_section(&mut f, &parse("").token);
    assert_eq!(s, TokenSettings::default());
    assert_eq!(s.cache_max_entries, 100_000);

    let cfg = parse(
        "[token]\ncache_max_entries = 0\nkeep_authorization = true\nsubject_header = \"X-User\"\nissuer_header = \"\"\n",
    );
    let s = token_section(&mut f, &cfg.token);
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    assert_eq!(s.cache_max_entries, 0);
    assert!(s.headers.keep_authorization);
    assert_eq!(
        s.headers.subject.as_ref().map(|h| h.as_str()),
        Some("x-user")
    );
    assert_eq!(s.headers.issuer, None);

    for (text, key) in [
        ("subject_header = \"Authorization\"", "token.subject_header"),
        ("scopes_header = \"x-forwarded-for\"", "token.scopes_header"),
        (
            "client_id_header = \"bad header\"",
            "token.client_id_header",
        ),
        (
            "client_id_header = \"x-auth-subject\"",
            "token.client_id_header",
        ),
        ("cache_max_entries = 20000000", "token.cache_max_entries"),
    ] {
        let mut f = Findings::new(Path::new("."));
        token_section(&mut f, &parse(&format!("[token]\n{text}\n")).token);
        assert!(
            f.errors.iter().any(|(k, _)| k == key),
            "{text}: {:?}",
            f.errors
        );
    }
}

#[test]
fn unknown_keys_in_token_sections_are_refused_by_the_parser() {
    for text in [
        "[[token_issuers]]\nname = \"a\"\njwks_uri = \"https://x\"\n",
        "[token]\ncache_size = 5\n",
        "[[token_issuers]]\nkeys = [{ pem = \"a\", alg = \"ES256\" }]\n",
    ] {
        assert!(toml::from_str::<FileConfig>(text).is_err(), "{text}");
    }
}
