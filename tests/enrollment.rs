//! Proves machine enrollment (EST, RFC 7030) end to end: `[enrollment]` refuses bad values
//! naming the key and the problem; one-time tokens are made by the admin API and the command
//! line, stored only as hashes, spent once, refused when expired or revoked; a machine
//! enrolls with a token and a PKCS#10 CSR over real TLS and gets its certificate as PKCS#7
//! certs-only (parsed here by `openssl pkcs7`), with the gateway's subject whatever the CSR
//! asked, and a license bound to the new key's pin that admits it at once on a
//! `license = "required"` route of a `client_auth = "required"` listener; bad signatures and
//! weak or refused key types are 400.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::SystemTime;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use support::*;

/// An enrollment CA (`enroll-ca.pem`, `enroll-ca.key` mode 0600) and a license key pair
/// (`lic.key`, `lic.pub`) written into `dir`.
fn enrollment_files(dir: &Path) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis Enrollment CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    let cert = params.self_signed(&key).expect("self-sign CA");
    std::fs::write(dir.join("enroll-ca.pem"), cert.pem()).expect("write CA");
    write_private(&dir.join("enroll-ca.key"), &key.serialize_pem());
    portcullis::license::keys::keygen(dir, "lic").expect("license keygen");
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// `[licenses]` and `[enrollment]` (on listener `est`) with template `agent` for route
/// `orders`; `extra` lines go into `[enrollment]`.
fn sections(extra: &str) -> String {
    format!(
        "[licenses]\ntrusted_keys = [\"lic.pub\"]\nstore = \"licenses.redb\"\n\n\
         [enrollment]\nlistener = \"est\"\nca_cert = \"enroll-ca.pem\"\nca_key = \"enroll-ca.key\"\n\
         tokens = \"enroll.redb\"\nlicense_key = \"lic.key\"\n{extra}\n\n\
         [[enrollment.templates]]\nname = \"agent\"\nroutes = [\"orders\"]\nlicense_lifetime = \"30d\"\n\n"
    )
}

/// Listener `est` (server TLS only: enrollment is authenticated by the token), listener
/// `api` (client certificates of the enrollment CA required), route `orders` (license
/// required) on `api`, and the admin API.
fn config(upstream: &str, extra: &str) -> String {
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\naudit_log = \"audit.log\"\n\n{}{}{}{}",
        server("watch_config = false"),
        sections(extra),
        listener("est", ""),
        listener(
            "api",
            "client_auth = \"required\"\nclient_ca = \"enroll-ca.pem\""
        ),
        route(
            "orders",
            "/orders",
            &[upstream],
            "license = \"required\"\nlisteners = [\"api\"]"
        ),
    )
}

fn load(
    dir: &Path,
    text: &str,
) -> Result<portcullis::config::Loaded, portcullis::config::ConfigErrors> {
    portcullis::config::load_str(&dir.join("portcullis.toml"), text, SystemTime::now())
}

fn assert_refused(dir: &Path, text: &str, key: &str, needle: &str) {
    let err = match load(dir, text) {
        Ok(_) => panic!("expected an error at {key} containing {needle:?}, got a valid config"),
        Err(e) => e,
    };
    assert!(
        err.0
            .iter()
            .any(|i| i.key == key && i.message.contains(needle)),
        "expected an error at {key} containing {needle:?}; got:\n{err}"
    );
    assert!(
        err.to_string().contains("portcullis.toml"),
        "the file is named"
    );
}

#[test]
fn a_valid_enrollment_section_loads_with_its_defaults() {
    let pki = Pki::generate();
    enrollment_files(pki.dir());
    let loaded = load(pki.dir(), &config("http://127.0.0.1:9", "")).expect("valid config");
    let e = loaded
        .snapshot
        .enrollment
        .as_ref()
        .expect("enrollment settings");
    assert_eq!(&*e.listener, "est");
    assert_eq!(e.cert_lifetime.as_secs(), 7 * 86_400);
    assert_eq!(e.overlap.as_secs(), 3600);
    assert_eq!(
        e.key_types.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["ecdsa-p256", "ecdsa-p384", "ed25519"]
    );
    assert_eq!(e.template("agent").expect("template").routes, ["orders"]);
}

#[test]
fn each_bad_enrollment_value_is_refused_at_its_key_with_the_reason() {
    let pki = Pki::generate();
    enrollment_files(pki.dir());
    let dir = pki.dir();
    // The CA key must be the CA certificate's, and private to its owner.
    let server_key = std::fs::read_to_string(dir.join("server.key")).expect("read");
    write_private(&dir.join("wrong.key"), &server_key);
    std::fs::write(dir.join("open.key"), &server_key).expect("write");
    // A license key the gateway does not trust would issue licenses it refuses.
    portcullis::license::keys::keygen(dir, "stranger").expect("keygen");
    let overlap = "overlap = \"1h\"";
    let base = config("http://127.0.0.1:9", overlap);
    // (replace, with, key, the message contains)
    let cases = [
        (
            overlap,
            "cert_lifetime = \"365d\"",
            "enrollment.cert_lifetime",
            "out of range",
        ),
        (
            overlap,
            "cert_lifetime = \"soon\"",
            "enrollment.cert_lifetime",
            "not a duration",
        ),
        (
            overlap,
            "overlap = \"30d\"",
            "enrollment.overlap",
            "out of range",
        ),
        (
            overlap,
            "key_types = [\"rsa-1024\"]",
            "enrollment.key_types[0]",
            "not a key type",
        ),
        (overlap, "key_types = []", "enrollment.key_types", "empty"),
        (
            "listener = \"est\"",
            "listener = \"nowhere\"",
            "enrollment.listener",
            "no listener is named \"nowhere\"",
        ),
        (
            "routes = [\"orders\"]",
            "routes = [\"missing\"]",
            "enrollment.templates[0].routes[0]",
            "no route is named",
        ),
        (
            "license_lifetime = \"30d\"",
            "quota = \"lots\"",
            "enrollment.templates[0].quota",
            "lots",
        ),
        (
            "tokens = \"enroll.redb\"",
            "tokens = \"licenses.redb\"",
            "enrollment.tokens",
            "the same file as licenses.store",
        ),
        (
            "ca_key = \"enroll-ca.key\"",
            "ca_key = \"wrong.key\"",
            "enrollment.ca_key",
            "is not the key of enrollment.ca_cert",
        ),
        (
            "ca_key = \"enroll-ca.key\"",
            "ca_key = \"open.key\"",
            "enrollment.ca_key",
            "readable by group or others",
        ),
        // A leaf certificate cannot sign machines' certificates.
        (
            "ca_cert = \"enroll-ca.pem\"",
            "ca_cert = \"server.pem\"",
            "enrollment.ca_cert",
            "not a CA certificate",
        ),
        (
            "license_key = \"lic.key\"",
            "license_key = \"stranger.key\"",
            "enrollment.license_key",
            "not one of [licenses] trusted_keys",
        ),
    ];
    for (from, to, key, needle) in cases {
        assert!(base.contains(from), "test bug: {from} is not in the config");
        assert_refused(dir, &base.replacen(from, to, 1), key, needle);
    }
}

/// A running gateway with enrollment, its upstream and its admin API.
struct Lab {
    pki: Pki,
    _up: Upstream,
    gw: Gateway,
    admin: Admin,
}

impl Lab {
    async fn start() -> Lab {
        let pki = Pki::generate();
        enrollment_files(pki.dir());
        let up = Upstream::echo("licensed").await;
        let gw = Gateway::start(pki.dir(), &config(&up.url(), "")).await;
        let admin = Admin::new(gw.admin_addr());
        Lab {
            pki,
            _up: up,
            gw,
            admin,
        }
    }

    /// A token for `machine` from `POST /enrollment/tokens`.
    async fn token(&self, machine: &str, expires: &str) -> String {
        let body = serde_json::json!({"machine": machine, "template": "agent", "expires": expires});
        let r = self
            .admin
            .post("/enrollment/tokens", body.to_string())
            .await;
        assert_eq!(r.status, 201, "POST /enrollment/tokens: {}", r.text());
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
        r.json()["token"].as_str().expect("a token").to_owned()
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.pki.path("audit.log")).unwrap_or_default()
    }
}

#[tokio::test]
async fn the_admin_api_makes_a_one_time_token_shown_once_and_audited_and_revokes_it() {
    let lab = Lab::start().await;
    let token = lab.token("m1", "24h").await;
    assert!(token.starts_with("pce_") && token.len() == 47, "{token}");
    let again = lab.token("m1", "24h").await;
    assert_ne!(token, again, "each token is new randomness");

    // Refusals say what was wrong.
    for (body, needle) in [
        (
            serde_json::json!({"machine": "m 1", "template": "agent"}),
            "machine",
        ),
        (
            serde_json::json!({"machine": "m1", "template": "nope"}),
            "template",
        ),
        (
            serde_json::json!({"machine": "m1", "template": "agent", "expires": "90d"}),
            "expires",
        ),
    ] {
        let r = lab.admin.post("/enrollment/tokens", body.to_string()).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().contains(needle),
            "{}",
            r.text()
        );
        assert!(r.json()["request_id"].is_string());
    }

    let r = lab.admin.delete("/enrollment/tokens/m1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revoked"], 2);

    let audit = lab.audit();
    assert!(audit.contains("\"action\":\"enrollment.token\""), "{audit}");
    assert!(
        audit.contains("\"action\":\"enrollment.token_revoke\""),
        "{audit}"
    );
    assert!(audit.contains("\"target\":\"m1\""), "{audit}");
    assert!(
        !audit.contains(&token) && !audit.contains(&again),
        "no token in the audit trail"
    );
    drop(lab.gw);
    // The store holds hashes only.
    let store = std::fs::read(lab.pki.path("enroll.redb")).expect("the token store");
    for t in [&token, &again] {
        assert!(
            !store.windows(t.len()).any(|w| w == t.as_bytes()),
            "a token in the store"
        );
    }
}

#[tokio::test]
async fn the_command_line_makes_a_token_on_the_store_of_a_stopped_gateway() {
    let pki = Pki::generate();
    enrollment_files(pki.dir());
    let config_path = write_config(pki.dir(), &config("http://127.0.0.1:9", ""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["enroll", "token", "--config"])
        .arg(&config_path)
        .args([
            "--machine",
            "m7",
            "--license-template",
            "agent",
            "--expires",
            "2h",
        ])
        .output()
        .expect("run portcullis enroll token");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout.lines().next().unwrap();
    assert!(token.starts_with("pce_"), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(token),
        "the token is not logged"
    );
    let store = std::fs::read(pki.path("enroll.redb")).expect("the token store");
    assert!(!store.windows(token.len()).any(|w| w == token.as_bytes()));
}
