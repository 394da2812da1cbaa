//! Proves how `[issuer]` fits the rest of the config: the gateway's verifier trusts it with
//! no `[[token_issuers]]`, routes must still say `auth` and may name it in `issuers`, its
//! listener must exist, its name and `iss` may not clash with a `[[token_issuers]]`, and
//! validation (`portcullis check`) never opens or creates the store.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::SystemTime;

use portcullis::config::load_str;
use support::oauth::ISS;
use support::*;

fn issuer_section(extra: &str) -> String {
    format!(
        "[issuer]\nlistener = \"public\"\nissuer = \"{ISS}\"\nstore = \"issuer.redb\"\n{extra}\n\n"
    )
}

/// A listener, `[issuer]` with `extra`, and one open route.
fn issuer_only(extra: &str) -> String {
    format!(
        "{}{}{}",
        listener("public", ""),
        issuer_section(extra),
        route("open", "/", &["http://127.0.0.1:9"], "auth = \"none\""),
    )
}

fn load(pki: &Pki, text: &str) -> Result<portcullis::config::Loaded, Vec<(String, String)>> {
    load_str(&pki.path("portcullis.toml"), text, SystemTime::now())
        .map_err(|e| e.0.into_iter().map(|i| (i.key, i.message)).collect())
}

fn assert_error(pki: &Pki, text: &str, key: &str, needle: &str) {
    let errors = load(pki, text)
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"));
    assert!(
        errors.iter().any(|(k, m)| k == key && m.contains(needle)),
        "{key}: {needle} not in {errors:?}"
    );
}

#[test]
fn the_own_issuer_alone_lets_routes_require_bearer_tokens_and_name_it() {
    let pki = Pki::generate();
    let text = format!(
        "{}{}{}",
        listener("public", ""),
        issuer_section(""),
        route(
            "api",
            "/api",
            &["http://127.0.0.1:9"],
            "auth = \"bearer\"\nissuers = [\"portcullis\"]\nscopes = [\"a\"]"
        ),
    );
    let loaded = load(&pki, &text).expect("valid");
    let names: Vec<&str> = loaded
        .snapshot
        .tokens
        .issuer_names()
        .map(|n| &**n)
        .collect();
    assert_eq!(names, ["portcullis"]);
    assert!(loaded.snapshot.issuer.is_some());
    assert!(
        !pki.path("issuer.redb").exists(),
        "validation never creates the store"
    );
}

#[test]
fn every_route_still_says_auth_and_names_only_known_issuers() {
    let pki = Pki::generate();
    let base = format!("{}{}", listener("public", ""), issuer_section(""));
    let no_auth = format!(
        "{base}{}",
        route("api", "/api", &["http://127.0.0.1:9"], "")
    );
    assert_error(&pki, &no_auth, "routes[0].auth", "missing");
    let unknown = format!(
        "{base}{}",
        route(
            "api",
            "/api",
            &["http://127.0.0.1:9"],
            "auth = \"bearer\"\nissuers = [\"nope\"]"
        )
    );
    assert_error(&pki, &unknown, "routes[0].issuers[0]", "nope");
}

#[test]
fn the_listener_must_exist_and_names_and_iss_must_not_clash() {
    let pki = Pki::generate();
    let open_route = route("open", "/", &["http://127.0.0.1:9"], "auth = \"none\"");
    let wrong_listener = format!(
        "{}{}{open_route}",
        listener("public", ""),
        issuer_section("").replace("listener = \"public\"", "listener = \"admin\""),
    );
    assert_error(
        &pki,
        &wrong_listener,
        "issuer.listener",
        "no listener is named \"admin\"",
    );

    pki.write("k.pem", &"x".repeat(40));
    let clash = |name: &str, iss: &str| {
        format!(
            "{}{}[[token_issuers]]\nname = \"{name}\"\nissuer = \"{iss}\"\naudiences = [\"portcullis\"]\nhs256_secret_file = \"k.pem\"\n\n{open_route}",
            listener("public", ""),
            issuer_section(""),
        )
    };
    assert_error(
        &pki,
        &clash("portcullis", "https://idp"),
        "token_issuers[0].name",
        "own [issuer]",
    );
    assert_error(
        &pki,
        &clash("idp", ISS),
        "token_issuers[0].issuer",
        "own [issuer]",
    );
    load(&pki, &clash("idp", "https://idp")).expect("no clash");
}

#[test]
fn portcullis_check_accepts_an_issuer_config_without_touching_the_store() {
    let pki = Pki::generate();
    let text = issuer_only("algorithm = \"EdDSA\"");
    let config = write_config(pki.dir(), &text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", config.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pki.path("issuer.redb").exists());
}

#[test]
fn an_issuer_without_a_vault_loads_with_a_warning_that_its_keys_are_in_clear() {
    let pki = Pki::generate();
    let base = issuer_only("");
    let loaded = load(&pki, &base).expect("valid");
    let w = loaded
        .warnings
        .iter()
        .find(|w| w.key == "issuer")
        .expect("a warning on [issuer]");
    assert!(w.message.contains("add a [vault]"), "{w}");
    let sealed =
        |l: &portcullis::config::Loaded| l.snapshot.issuer.as_ref().map(|i| i.sealer.is_some());
    assert_eq!(sealed(&loaded), Some(false));

    vault_with(pki.dir(), &[]);
    let with_vault = format!(
        "{base}[vault]\nfile = \"{}\"\nmaster_key_file = \"{}\"\n",
        pki.path("vault.json").display(),
        pki.path("master.key").display()
    );
    let loaded = load(&pki, &with_vault).expect("valid");
    assert!(loaded.warnings.iter().all(|w| w.key != "issuer"));
    assert_eq!(sealed(&loaded), Some(true));
}
