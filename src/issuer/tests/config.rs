//! `[issuer]` validation: defaults, paths, and each mistake at its key path.

use std::time::Duration;

use crate::config::Report;
use crate::issuer::config::{OwnIssuerSettings, validate};
use crate::issuer::keys::SigningAlg;

const DAY: Duration = Duration::from_secs(86_400);

fn check(text: &str, dir: &std::path::Path) -> Result<OwnIssuerSettings, Vec<(String, String)>> {
    let path = dir.join("portcullis.toml");
    let file = crate::config::parse_file_config(&path, text).expect("parses");
    let mut r = Report::new(&path);
    let out = validate(file.issuer.as_ref().expect("section"), &mut r);
    match out {
        Some(s) if r.errors.is_empty() => Ok(s),
        _ => Err(r.errors.into_iter().map(|e| (e.key, e.message)).collect()),
    }
}

#[test]
fn a_minimal_section_gets_the_documented_defaults_and_paths() {
    let dir = tempfile::tempdir().expect("dir");
    let s = check(
        "[issuer]\nlistener = \"public\"\nissuer = \"https://gw.example.com\"\nstore = \"i.redb\"\n",
        dir.path(),
    )
    .expect("valid");
    assert_eq!(&*s.name, "portcullis");
    assert_eq!(s.algorithm, SigningAlg::ES256);
    assert_eq!(s.access_token_ttl, Duration::from_secs(600));
    assert_eq!(s.refresh_token_ttl, 30 * DAY);
    assert_eq!(s.refresh_idle_ttl, 7 * DAY);
    assert_eq!(s.audience, "portcullis");
    assert_eq!(s.store, dir.path().join("i.redb"));
    assert_eq!(&*s.paths.token, "/oauth2/token");
    assert_eq!(
        &*s.paths.metadata,
        "/.well-known/oauth-authorization-server"
    );
    assert_eq!(&*s.paths.origin, "https://gw.example.com");
    assert!(s.handles("/oauth2/revoke") && s.handles("/.well-known/jwks.json"));
    assert!(!s.handles("/oauth2") && !s.handles("/oauth2/token/x"));
}

#[test]
fn a_prefix_moves_the_endpoints_and_an_issuer_path_moves_the_metadata() {
    let dir = tempfile::tempdir().expect("dir");
    let s = check(
        "[issuer]\nlistener = \"l\"\npath_prefix = \"/auth/\"\nissuer = \"https://gw.example.com:8443/tenant\"\nstore = \"i.redb\"\nalgorithm = \"EdDSA\"\n",
        dir.path(),
    )
    .expect("valid");
    assert_eq!(&*s.paths.token, "/auth/oauth2/token");
    assert_eq!(
        &*s.paths.metadata,
        "/.well-known/oauth-authorization-server/tenant"
    );
    assert_eq!(&*s.paths.origin, "https://gw.example.com:8443");
    assert_eq!(s.algorithm, SigningAlg::EdDSA);
}

#[test]
fn each_bad_value_is_reported_at_its_key_path() {
    let dir = tempfile::tempdir().expect("dir");
    let base = "listener = \"l\"\nissuer = \"https://gw\"\nstore = \"i.redb\"\n";
    let cases = [
        (
            "issuer = \"http://gw\"\nlistener = \"l\"\nstore = \"i.redb\"",
            "issuer.issuer",
            "https",
        ),
        (
            "issuer = \"https://gw?x=1\"\nlistener = \"l\"\nstore = \"i.redb\"",
            "issuer.issuer",
            "query",
        ),
        (
            "listener = \"l\"\nstore = \"i.redb\"",
            "issuer.issuer",
            "missing",
        ),
        (
            "issuer = \"https://gw\"\nstore = \"i.redb\"",
            "issuer.listener",
            "missing",
        ),
        (
            "issuer = \"https://gw\"\nlistener = \"l\"",
            "issuer.store",
            "missing",
        ),
        (
            "issuer = \"https://gw\"\nlistener = \"l\"\nstore = \"no/such/i.redb\"",
            "issuer.store",
            "does not exist",
        ),
    ];
    for (body, key, needle) in cases {
        let errors = check(&format!("[issuer]\n{body}\n"), dir.path()).expect_err(key);
        assert!(
            errors.iter().any(|(k, m)| k == key && m.contains(needle)),
            "{key}: {needle} not in {errors:?}"
        );
    }
    let extra = [
        ("algorithm = \"RS256\"", "issuer.algorithm", "ES256"),
        (
            "access_token_ttl = \"2d\"",
            "issuer.access_token_ttl",
            "out of range",
        ),
        (
            "refresh_token_ttl = \"soon\"",
            "issuer.refresh_token_ttl",
            "not a duration",
        ),
        (
            "refresh_idle_ttl = \"60d\"",
            "issuer.refresh_idle_ttl",
            "longer than refresh_token_ttl",
        ),
        (
            "path_prefix = \"oauth\"",
            "issuer.path_prefix",
            "start with",
        ),
        ("name = \"a b\"", "issuer.name", "characters"),
        ("audience = \"\"", "issuer.audience", "empty"),
    ];
    for (line, key, needle) in extra {
        let errors = check(&format!("[issuer]\n{base}{line}\n"), dir.path()).expect_err(key);
        assert!(
            errors.iter().any(|(k, m)| k == key && m.contains(needle)),
            "{key}: {needle} not in {errors:?}"
        );
    }
}

#[test]
fn a_misspelt_key_is_an_error() {
    let e = crate::config::parse_file_config(
        std::path::Path::new("p.toml"),
        "[issuer]\nlistner = \"public\"\n",
    )
    .expect_err("misspelt");
    assert_eq!(e.0[0].key, "issuer.listner");
}
