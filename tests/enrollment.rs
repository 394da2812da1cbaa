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

#[path = "enrollment/agent_loop.rs"]
mod agent_loop;
#[path = "enrollment/audit.rs"]
mod audit;
#[path = "enrollment/ca_vault.rs"]
mod ca_vault;
#[path = "support/ops.rs"]
mod ops;
mod support;

use std::path::Path;
use std::time::SystemTime;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use support::*;

/// An enrollment CA (`enroll-ca.pem`, `enroll-ca.key` mode 0600) and a license key pair
/// (`lic.key`, `lic.pub`) written into `dir`.
fn enrollment_files(dir: &Path) {
    enrollment_ca(
        dir,
        vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ],
    );
    portcullis::license::keys::keygen(dir, "lic").expect("license keygen");
}

/// `enroll-ca.pem` and `enroll-ca.key` (mode 0600) with the key usages `usages`.
fn enrollment_ca(dir: &Path, usages: Vec<KeyUsagePurpose>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis Enrollment CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = usages;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    let cert = params.self_signed(&key).expect("self-sign CA");
    std::fs::write(dir.join("enroll-ca.pem"), cert.pem()).expect("write CA");
    write_private(&dir.join("enroll-ca.key"), &key.serialize_pem());
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

/// Listener `est` (client certificates optional: enrollment is authenticated by the token,
/// re-enrollment by the machine's certificate), listener
/// `api` (client certificates of the enrollment CA required), routes `orders` (license
/// required) and `open` (no license) on `api`, and the admin API.
fn config(upstream: &str, extra: &str) -> String {
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\naudit_log = \"audit.log\"\n\n{}{}{}{}{}",
        server("watch_config = false"),
        sections(extra),
        listener(
            "est",
            "client_auth = \"optional\"\nclient_ca = \"enroll-ca.pem\""
        ),
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
        route("open", "/open", &[upstream], "listeners = [\"api\"]"),
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
    assert_eq!(e.crl.lifetime.as_secs(), 3600);
    assert!(e.crl.signed && e.crl.file.is_none());
}

#[test]
fn a_ca_that_cannot_sign_crls_is_a_warning_and_with_crl_file_an_error() {
    let pki = Pki::generate();
    enrollment_files(pki.dir());
    enrollment_ca(
        pki.dir(),
        vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ],
    );
    let loaded = load(pki.dir(), &config("http://127.0.0.1:9", "")).expect("valid config");
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.key == "enrollment.ca_cert" && w.message.contains("cRLSign")),
        "{:?}",
        loaded.warnings
    );
    assert!(!loaded.snapshot.enrollment.expect("enrollment").crl.signed);
    let text = config("http://127.0.0.1:9", "crl_file = \"enroll.crl\"");
    assert_refused(pki.dir(), &text, "enrollment.crl_file", "cRLSign");
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
            overlap,
            "crl_lifetime = \"1m\"",
            "enrollment.crl_lifetime",
            "out of range",
        ),
        (
            overlap,
            "crl_file = \"nowhere/enroll.crl\"",
            "enrollment.crl_file",
            "does not exist",
        ),
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
        Lab::start_with_admin("127.0.0.1:0").await
    }

    /// With the admin API on `bind` (a fixed port: the command line finds it in the config).
    async fn start_with_admin(bind: &str) -> Lab {
        Lab::start_full(bind, "").await
    }

    /// With `extra` lines in `[enrollment]` and the admin API on `bind`.
    async fn start_full(bind: &str, extra: &str) -> Lab {
        let bind = bind.to_owned();
        let extra = extra.to_owned();
        Lab::start_with(move |_, text| {
            let text = text.replace(
                "[admin]\nbind = \"127.0.0.1:0\"",
                &format!("[admin]\nbind = \"{bind}\""),
            );
            if extra.is_empty() {
                text
            } else {
                text.replacen("[enrollment]\n", &format!("[enrollment]\n{extra}\n"), 1)
            }
        })
        .await
    }

    /// With the config `edit` makes of the usual one (given the folder it is in).
    async fn start_with(edit: impl FnOnce(&Path, String) -> String) -> Lab {
        let pki = Pki::generate();
        enrollment_files(pki.dir());
        let up = Upstream::echo("licensed").await;
        let text = edit(pki.dir(), config(&up.url(), ""));
        let gw = Gateway::start(pki.dir(), &text).await;
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

/// A machine's key and a CSR for it that asks for `CN=admin` and a SAN of its choosing.
fn key_and_csr(alg: &'static rcgen::SignatureAlgorithm) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(alg).expect("machine key");
    let mut params = CertificateParams::new(vec!["admin.example".to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "admin");
    let csr = params.serialize_request(&key).expect("CSR");
    (key, csr.der().to_vec())
}

/// `POST /.well-known/est/simpleenroll` on the `est` listener with `auth` and `der` in base64.
async fn simpleenroll(lab: &Lab, auth: &str, der: &[u8]) -> TestResponse {
    simpleenroll_at(&lab.pki, lab.gw.addr_of("est"), auth, der).await
}

async fn simpleenroll_at(
    pki: &Pki,
    addr: std::net::SocketAddr,
    auth: &str,
    der: &[u8],
) -> TestResponse {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let req = request("POST", "/.well-known/est/simpleenroll")
        .header("authorization", auth)
        .header("content-type", "application/pkcs10")
        .body(support::full(body))
        .unwrap();
    send_one(pki, addr, req).await
}

/// The certificates of a base64 PKCS#7 certs-only body, as `openssl pkcs7` reads them.
fn openssl_certs(dir: &Path, body: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    let der = portcullis::enrollment::pkcs7::decode_base64(body).expect("base64 body");
    let path = dir.join("answer.p7b");
    std::fs::write(&path, der).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(&path)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rustls::pki_types::CertificateDer::pem_slice_iter(&out.stdout)
        .map(|c| c.expect("a PEM certificate"))
        .collect()
}

/// Enroll with `token`: the machine's identity (certificate and key) and the license text.
async fn enroll(lab: &Lab, token: &str) -> (Identity, String) {
    let (key, csr) = key_and_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let r = simpleenroll(lab, &format!("Bearer {token}"), &csr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/pkcs7-mime; smime-type=certs-only")
    );
    assert_eq!(
        r.header("content-transfer-encoding").as_deref(),
        Some("base64")
    );
    let certs = openssl_certs(lab.pki.dir(), &r.body);
    assert_eq!(certs.len(), 1);
    let license = r
        .header("x-portcullis-license")
        .expect("the license header");
    (
        Identity::from_parts(certs[0].clone(), key.serialize_der()),
        license,
    )
}

/// `GET /orders` on the `api` listener (client certificates required) as `machine`.
async fn orders_as(lab: &Lab, machine: &Identity) -> TestResponse {
    get_as(lab, machine, "/orders").await
}

/// A new connection to `listener` as `machine` fails in the TLS handshake (with TLS 1.3
/// the client learns it when it reads: the server's alert); the error.
async fn refused_in_handshake(lab: &Lab, machine: &Identity, listener: &str) -> String {
    let client = TlsClient::new(&lab.pki).identity(machine);
    let tls = match client.connect(lab.gw.addr_of(listener), "localhost").await {
        Ok(tls) => tls,
        Err(e) => return e.to_string(),
    };
    let mut h1 = match H1::handshake(tls).await {
        Ok(h1) => h1,
        Err(e) => return e,
    };
    match h1.call(get("/open")).await {
        Ok(r) => panic!("{listener}: answered {} instead", r.status),
        Err(e) => e,
    }
}

/// Wait (at most 5 s) until the gateway has counted `n` handshakes refused for a revoked
/// certificate (the count follows the client's error by a moment).
async fn revoked_handshakes_reach(lab: &Lab, n: f64) {
    for _ in 0..250 {
        let m = lab.admin.metrics().await;
        let reason = [("reason", "revoked_client_certificate")];
        if m.value("portcullis_tls_handshake_failures_total", &reason) == Some(n) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{n} revoked-certificate handshake refusals were not counted");
}

/// `GET path` on the `api` listener as `machine`.
async fn get_as(lab: &Lab, machine: &Identity, path: &str) -> TestResponse {
    let client = TlsClient::new(&lab.pki).identity(machine);
    let tls = tls_as(&client, lab.gw.addr_of("api"), "localhost").await;
    let mut h1 = H1::handshake(tls).await.expect("HTTP/1.1");
    h1.call(get(path)).await.expect("GET on the api listener")
}

#[tokio::test]
async fn cacerts_is_the_enrollment_ca_as_pkcs7_certs_only() {
    let lab = Lab::start().await;
    let r = send_one(
        &lab.pki,
        lab.gw.addr_of("est"),
        get("/.well-known/est/cacerts"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/pkcs7-mime")
    );
    assert_eq!(
        r.header("content-transfer-encoding").as_deref(),
        Some("base64")
    );
    let certs = openssl_certs(lab.pki.dir(), &r.body);
    let ca_pem = std::fs::read(lab.pki.path("enroll-ca.pem")).unwrap();
    use rustls::pki_types::pem::PemObject as _;
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap();
    assert_eq!(certs, vec![ca]);
}

#[tokio::test]
async fn an_enrolled_machine_is_admitted_at_once_on_a_licensed_mutual_tls_route() {
    let lab = Lab::start().await;
    let token = lab.token("m1", "24h").await;
    let (machine, license) = enroll(&lab, &token).await;
    assert!(license.starts_with("PCL1."), "{license}");

    // The gateway's subject, not the CSR's CN=admin, and its URI SAN.
    let id = portcullis::identity::ClientIdentity::from_der(machine.cert().as_ref()).unwrap();
    assert_eq!(id.common_name.as_deref(), Some("m1"));
    assert!(!id.subject.contains("admin"), "{}", id.subject);
    let (_, cert) = x509_parser::parse_x509_certificate(machine.cert().as_ref()).unwrap();
    let sans = cert
        .subject_alternative_name()
        .unwrap()
        .expect("a SAN")
        .value;
    assert_eq!(
        format!("{:?}", sans.general_names),
        "[URI(\"urn:portcullis:machine:m1\")]"
    );
    let eku = cert.extended_key_usage().unwrap().expect("an EKU").value;
    assert!(eku.client_auth && !eku.server_auth);
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 7 * 86_400 + 300, "7 days from 5 minutes back");

    // No reload, no admin call: the license is in the book.
    let r = orders_as(&lab, &machine).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = lab.admin.get("/licenses").await.json();
    assert_eq!(listed["licenses"][0]["machine_id"], "m1", "{listed}");

    // A certificate of the same CA that did not enroll has no license.
    let r = orders_as(&lab, &unenrolled(&lab)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "license_missing");
}

/// A client certificate signed by the enrollment CA outside enrollment.
fn unenrolled(lab: &Lab) -> Identity {
    let read = |name: &str| std::fs::read_to_string(lab.pki.path(name)).unwrap();
    let ca_key = KeyPair::from_pem(&read("enroll-ca.key")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("enroll-ca.pem"), ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "m9");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    Identity::from_parts(cert.der().clone(), key.serialize_der())
}

#[tokio::test]
async fn a_token_is_refused_once_spent_expired_or_revoked_and_http_basic_carries_it() {
    let lab = Lab::start().await;
    let token = lab.token("m1", "24h").await;
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("m1:{token}"))
        )
    };
    let (_, csr) = key_and_csr(&rcgen::PKCS_ED25519);
    assert_eq!(simpleenroll(&lab, &basic, &csr).await.status, 200);
    let again = simpleenroll(&lab, &format!("Bearer {token}"), &csr).await;
    assert_eq!(again.status, 401, "{}", again.text());
    assert_eq!(again.json()["error"], "enrollment_token_refused");
    assert!(again.json()["request_id"].is_string());
    assert!(!again.text().contains(&token));

    let short = lab.token("m2", "1h").await;
    lab.gw
        .shared()
        .clock
        .advance(std::time::Duration::from_secs(3601));
    assert_eq!(
        simpleenroll(&lab, &format!("Bearer {short}"), &csr)
            .await
            .status,
        401
    );

    let revoked = lab.token("m3", "24h").await;
    assert_eq!(lab.admin.delete("/enrollment/tokens/m3").await.status, 200);
    assert_eq!(
        simpleenroll(&lab, &format!("Bearer {revoked}"), &csr)
            .await
            .status,
        401
    );

    let none = simpleenroll(&lab, "Bearer pce_made_up", &csr).await;
    assert_eq!(none.status, 401);
}

#[tokio::test]
async fn a_bad_signature_or_a_refused_key_type_is_400_and_leaves_the_token_unspent() {
    let lab = Lab::start().await;
    let token = lab.token("m1", "24h").await;
    let bearer = format!("Bearer {token}");
    let (_, mut csr) = key_and_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    let r = simpleenroll(&lab, &bearer, &csr).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "csr_signature_invalid");

    // RSA is not accepted by default; an RSA-1024 key never is.
    let (_, rsa) = key_and_csr(&rcgen::PKCS_RSA_SHA256);
    let r = simpleenroll(&lab, &bearer, &rsa).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "csr_key_type_refused");
    let weak = openssl_rsa_1024_csr(lab.pki.dir());
    let r = simpleenroll(&lab, &bearer, &weak).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["message"].as_str().unwrap().contains("rsa-1024"),
        "{}",
        r.text()
    );

    let r = simpleenroll(&lab, &bearer, b"not a CSR").await;
    assert_eq!(r.json()["error"], "csr_malformed");
    // None of these spent the token.
    let (_, good) = key_and_csr(&rcgen::PKCS_ECDSA_P384_SHA384);
    assert_eq!(simpleenroll(&lab, &bearer, &good).await.status, 200);
}

/// An RSA-1024 CSR made by `openssl req` (rcgen does not generate RSA keys).
fn openssl_rsa_1024_csr(dir: &Path) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-new", "-newkey", "rsa:1024", "-nodes", "-subj", "/CN=weak", "-outform", "DER",
            "-keyout",
        ])
        .arg(dir.join("weak.key"))
        .arg("-out")
        .arg(dir.join("weak.csr"))
        .output()
        .expect("openssl req");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.join("weak.csr")).unwrap()
}

#[tokio::test]
async fn the_running_binary_never_logs_a_token_or_a_csr() {
    let pki = Pki::generate();
    enrollment_files(pki.dir());
    let up = Upstream::echo("licensed").await;
    let config_path = write_config(pki.dir(), &config(&up.url(), ""));
    let mut gw = ops::Proc::spawn(&config_path, "json");
    let admin = gw.admin_addr().await;
    let est = gw.listener_addr("est").await;
    let body = serde_json::json!({"machine": "m1", "template": "agent"}).to_string();
    let r = ops::admin_call(
        admin,
        "POST",
        "/enrollment/tokens",
        &[],
        support::full(body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");

    let (_, mut bad) = key_and_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(simpleenroll_at(&pki, est, &bearer, &bad).await.status, 400);
    let (_, csr) = key_and_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(simpleenroll_at(&pki, est, &bearer, &csr).await.status, 200);
    assert_eq!(simpleenroll_at(&pki, est, &bearer, &csr).await.status, 401);
    gw.wait_for_line("machine enrolled", |l| l.message == "machine enrolled")
        .await;
    gw.wait_for_line("token refused", |l| l.message == "enrollment token refused")
        .await;

    let logs = gw.stderr() + &gw.logs();
    use base64::Engine as _;
    let secret_part = token.trim_start_matches("pce_");
    assert!(!logs.contains(secret_part), "the token is in the log");
    let csr_b64 = base64::engine::general_purpose::STANDARD.encode(&csr);
    assert!(!logs.contains(&csr_b64[..40]), "the CSR is in the log");
    assert!(
        logs.contains("\"machine\":\"m1\""),
        "the log names the machine"
    );
}

/// `POST /.well-known/est/simplereenroll` over mutual TLS as `machine` (or without a
/// certificate).
async fn simplereenroll(lab: &Lab, machine: Option<&Identity>, der: &[u8]) -> TestResponse {
    use base64::Engine as _;
    let mut client = TlsClient::new(&lab.pki);
    if let Some(m) = machine {
        client = client.identity(m);
    }
    let tls = tls_as(&client, lab.gw.addr_of("est"), "localhost").await;
    let mut h1 = H1::handshake(tls).await.expect("HTTP/1.1");
    let req = request("POST", "/.well-known/est/simplereenroll")
        .header("content-type", "application/pkcs10")
        .body(support::full(
            base64::engine::general_purpose::STANDARD.encode(der),
        ))
        .unwrap();
    h1.call(req).await.expect("simplereenroll")
}

#[tokio::test]
async fn re_enrollment_moves_the_license_to_the_new_key_and_refuses_the_old_certificate_after_the_overlap()
 {
    let lab = Lab::start().await;
    let (old, _) = enroll(&lab, &lab.token("m1", "24h").await).await;
    assert_eq!(orders_as(&lab, &old).await.status, 200);

    let (key, csr) = key_and_csr(&rcgen::PKCS_ED25519);
    let r = simplereenroll(&lab, Some(&old), &csr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let certs = openssl_certs(lab.pki.dir(), &r.body);
    let new = Identity::from_parts(certs[0].clone(), key.serialize_der());
    let id = portcullis::identity::ClientIdentity::from_der(new.cert().as_ref()).unwrap();
    assert_eq!(id.common_name.as_deref(), Some("m1"));
    assert!(r.header("x-portcullis-license").is_some());

    assert_eq!(orders_as(&lab, &new).await.status, 200);
    // The old certificate keeps its license for the overlap (1h), but re-enrolls no more,
    // then is refused, and a reload (which rebuilds the book) does not bring it back.
    assert_eq!(orders_as(&lab, &old).await.status, 200);
    // Only the current certificate re-enrolls, with a new key.
    let (_, another) = key_and_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let r = simplereenroll(&lab, Some(&old), &another).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (401, Some("certificate_not_current"))
    );
    lab.gw
        .shared()
        .clock
        .advance(std::time::Duration::from_secs(3600));
    let r = orders_as(&lab, &old).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "license_revoked");
    lab.gw.reload().await.expect("reload");
    assert_eq!(orders_as(&lab, &old).await.status, 403);
    assert_eq!(orders_as(&lab, &new).await.status, 200);

    let r = simplereenroll(&lab, None, &another).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (401, Some("client_certificate_required"))
    );
    let same = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let r = simplereenroll(&lab, Some(&new), same.der()).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (400, Some("csr_same_key"))
    );
}

#[tokio::test]
async fn re_enrollment_with_an_expired_or_revoked_certificate_is_refused() {
    let lab = Lab::start().await;
    let (machine, license) = enroll(&lab, &lab.token("m1", "24h").await).await;
    let (_, csr) = key_and_csr(&rcgen::PKCS_ECDSA_P256_SHA256);

    // Revoked: its license revoked through the admin API.
    let id = {
        use base64::Engine as _;
        let payload = license.split('.').nth(1).unwrap();
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&json).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(id.starts_with("enr-m1-"), "{id}");
    assert_eq!(
        lab.admin.delete(&format!("/licenses/{id}")).await.status,
        200
    );
    let r = simplereenroll(&lab, Some(&machine), &csr).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (401, Some("machine_not_licensed"))
    );

    // Expired: the gateway's clock past the certificate's 7 days.
    let (machine, _) = enroll(&lab, &lab.token("m2", "24h").await).await;
    lab.gw
        .shared()
        .clock
        .advance(std::time::Duration::from_secs(8 * 86_400));
    let r = simplereenroll(&lab, Some(&machine), &csr).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (401, Some("certificate_expired"))
    );
}

#[tokio::test]
async fn a_revoked_machine_is_refused_at_once_cannot_re_enroll_and_each_step_is_counted() {
    let lab = Lab::start().await;
    let (machine, _) = enroll(&lab, &lab.token("m1", "24h").await).await;
    let unspent = lab.token("m1", "24h").await;
    assert_eq!(orders_as(&lab, &machine).await.status, 200);
    assert_eq!(get_as(&lab, &machine, "/open").await.status, 200);

    // A connection opened before the revocation.
    let client = TlsClient::new(&lab.pki).identity(&machine);
    let mut open = H1::handshake(tls_as(&client, lab.gw.addr_of("api"), "localhost").await)
        .await
        .expect("HTTP/1.1");

    let r = lab.admin.delete("/enrollment/machines/m1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["license"].as_str().unwrap().starts_with("enr-m1-"));
    assert_eq!(r.json()["tokens_revoked"], 1);
    // A new TLS handshake with its certificate fails at once, with no reload, on the
    // client_auth = "required" listener (whatever the route: a licensed one or not) and on
    // the EST listener (client_auth = "optional"), and still after a reload; counted.
    let e = refused_in_handshake(&lab, &machine, "api").await;
    assert!(e.contains("CertificateRevoked"), "{e}");
    refused_in_handshake(&lab, &machine, "est").await;
    lab.gw.reload().await.expect("reload");
    refused_in_handshake(&lab, &machine, "api").await;
    revoked_handshakes_reach(&lab, 3.0).await;
    // The connection opened before is refused by the request path.
    let r = open.call(get("/open")).await.expect("an answer");
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (403, Some("license_revoked"))
    );
    let (_, csr) = key_and_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(
        simpleenroll(&lab, &format!("Bearer {unspent}"), &csr)
            .await
            .status,
        401
    );
    assert_eq!(
        lab.admin.delete("/enrollment/machines/m1").await.status,
        404
    );
    assert!(lab.audit().contains("\"action\":\"enrollment.revoke\""));

    // Counted, by event only (no machine names in labels).
    let m = lab.admin.metrics().await;
    let count = |event: &str| m.value("portcullis_enrollment_events_total", &[("event", event)]);
    assert_eq!(count("token_made"), Some(2.0));
    assert_eq!(count("enrolled"), Some(1.0));
    assert_eq!(
        count("reenroll_refused"),
        None,
        "refused before the EST endpoint"
    );
    assert_eq!(count("token_refused"), Some(1.0));
    assert_eq!(count("machine_revoked"), Some(1.0));
}

#[tokio::test]
async fn the_command_line_revokes_a_machine_through_the_running_gateway() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lab = Lab::start_with_admin(&format!("127.0.0.1:{port}")).await;
    let config_path = lab.pki.path("portcullis.toml");
    let cli = |args: &[&str]| {
        let config_path = config_path.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
                    .arg("enroll")
                    .args(&args)
                    .arg("--config")
                    .arg(&config_path)
                    .output()
                    .expect("run portcullis enroll")
            })
            .await
            .unwrap()
        }
    };
    let out = cli(&["token", "--machine", "m1", "--license-template", "agent"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let (machine, _) = enroll(&lab, &token).await;
    assert_eq!(orders_as(&lab, &machine).await.status, 200);

    let out = cli(&["revoke", "m1"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("enr-m1-"));
    refused_in_handshake(&lab, &machine, "api").await;
}

#[tokio::test]
async fn a_reload_keeps_the_token_store_open_and_its_tokens_spendable() {
    let lab = Lab::start().await;
    let token = lab.token("m1", "24h").await;
    let summary = lab
        .gw
        .reload()
        .await
        .expect("reload with the same token file");
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    let (machine, _) = enroll(&lab, &token).await;
    assert_eq!(orders_as(&lab, &machine).await.status, 200);
}

#[tokio::test]
async fn the_readme_walk_through_with_curl_and_openssl_enrolls_a_machine() {
    let lab = Lab::start().await;
    let token = lab.token("m1", "24h").await;
    let dir = lab.pki.dir().to_path_buf();
    let port = lab.gw.addr_of("est").port();
    let token_for_curl = token.clone();
    // The README's commands (openssl req, curl, openssl pkcs7), run off the async threads.
    let (cert_pem, license, stderr) = tokio::task::spawn_blocking(move || {
        let sh = format!(
            "set -e; cd '{}'; \
             openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=admin \
               -keyout m1.key -outform DER 2>/dev/null | base64 > m1.csr.b64; \
             curl -sS --fail --cacert ca.pem -H 'Authorization: Bearer {}' \
               -H 'Content-Type: application/pkcs10' --data-binary @m1.csr.b64 \
               -D headers https://localhost:{port}/.well-known/est/simpleenroll \
               | base64 -d | openssl pkcs7 -inform DER -print_certs > m1.pem; \
             grep -i '^x-portcullis-license:' headers | cut -d' ' -f2 | tr -d '\\r' > m1.license",
            dir.display(),
            token_for_curl
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(sh)
            .output()
            .expect("sh");
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
        (
            read("m1.pem"),
            read("m1.license"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(cert_pem.contains("BEGIN CERTIFICATE"), "{stderr}");
    assert!(
        cert_pem.contains("CN") && cert_pem.contains("m1"),
        "{cert_pem}"
    );
    assert!(license.trim().starts_with("PCL1."), "{license:?} {stderr}");

    // The machine's openssl key and the certificate admit it on the licensed route.
    use rustls::pki_types::pem::PemObject as _;
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(lab.pki.path("m1.key")).unwrap();
    let machine = Identity::from_parts(cert, key.secret_der().to_vec());
    assert_eq!(orders_as(&lab, &machine).await.status, 200);
}

/// `portcullis enroll agent --once` with `args`, the token (if any) in the environment.
async fn agent(lab: &Lab, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = agent_command(lab, token);
    cmd.arg("--once").args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run the agent"))
        .await
        .unwrap()
}

/// `portcullis enroll agent` for `lab`, writing into `agent/`, the token (if any) in the
/// environment.
fn agent_command(lab: &Lab, token: Option<&str>) -> std::process::Command {
    let url = format!("https://localhost:{}", lab.gw.addr_of("est").port());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(["enroll", "agent", "--url", &url, "--ca"])
        .arg(lab.pki.path("ca.pem"))
        .arg("--out")
        .arg(lab.pki.path("agent"))
        .env_remove("PORTCULLIS_ENROLL_TOKEN");
    if let Some(t) = token {
        cmd.env("PORTCULLIS_ENROLL_TOKEN", t);
    }
    cmd
}

/// A lab where the agent (`--once`, into `agent/`) enrolled machine m1; the spent token.
async fn with_enrolled_agent() -> (Lab, String) {
    let lab = Lab::start().await;
    let token = lab.token("m1", "24h").await;
    let out = agent(&lab, Some(&token), &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (lab, token)
}

/// The identity the agent wrote into its folder.
fn agent_identity(lab: &Lab) -> Identity {
    use rustls::pki_types::pem::PemObject as _;
    let dir = lab.pki.path("agent");
    let cert = rustls::pki_types::CertificateDer::from_pem_file(dir.join("machine.pem")).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("machine.key")).unwrap();
    Identity::from_parts(cert, key.secret_der().to_vec())
}

#[tokio::test]
async fn the_reference_agent_enrolls_then_renews_with_its_certificate() {
    use std::os::unix::fs::PermissionsExt as _;
    let (lab, token) = with_enrolled_agent().await;
    let first = agent_identity(&lab);
    assert_eq!(orders_as(&lab, &first).await.status, 200);
    let dir = lab.pki.path("agent");
    let mode = std::fs::metadata(dir.join("machine.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is private");
    let license = std::fs::read_to_string(dir.join("machine.license")).unwrap();
    assert!(license.starts_with("PCL1."), "{license}");

    // With a certificate in its folder, --once renews with it (no token needed).
    let out = agent(&lab, None, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = agent_identity(&lab);
    assert_ne!(first.cert(), second.cert());
    assert_eq!(orders_as(&lab, &second).await.status, 200);
    let out = agent(&lab, None, &["--renew"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(second.cert(), agent_identity(&lab).cert());

    // The spent token enrolls nobody again (in a folder without a certificate).
    std::fs::remove_dir_all(&dir).unwrap();
    let out = agent(&lab, Some(&token), &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[tokio::test]
async fn revoking_a_machine_during_its_overlap_refuses_both_its_keys_everywhere() {
    let lab = Lab::start().await;
    let (old, _) = enroll(&lab, &lab.token("m1", "24h").await).await;
    let (key, csr) = key_and_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let r = simplereenroll(&lab, Some(&old), &csr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new = Identity::from_parts(
        openssl_certs(lab.pki.dir(), &r.body)[0].clone(),
        key.serialize_der(),
    );
    assert_eq!(
        get_as(&lab, &old, "/open").await.status,
        200,
        "within the overlap"
    );
    assert_eq!(
        lab.admin.delete("/enrollment/machines/m1").await.status,
        200
    );
    for machine in [&old, &new] {
        refused_in_handshake(&lab, machine, "api").await;
        refused_in_handshake(&lab, machine, "est").await;
    }
}

/// `openssl args...`: it succeeds; its output and its messages.
fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?}: {text}");
    text
}

/// `GET /.well-known/est/crl` (DER), written to `name` in the lab's folder.
async fn fetch_crl(lab: &Lab, name: &str) -> String {
    let r = send_one(&lab.pki, lab.gw.addr_of("est"), get("/.well-known/est/crl")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/pkix-crl")
    );
    let path = lab.pki.path(name);
    std::fs::write(&path, &r.body).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `openssl crl -text` of the CRL at `path` (`form`: "DER" or "PEM"): the text, its number.
fn crl_text(path: &str, form: &str) -> (String, u64) {
    let text = openssl(&["crl", "-inform", form, "-noout", "-text", "-in", path]);
    let number = text
        .lines()
        .skip_while(|l| !l.contains("X509v3 CRL Number"))
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no CRL number in {text}"));
    (text, number)
}

/// The serial of `machine`'s certificate as openssl prints it (upper-case hex).
fn serial_of(lab: &Lab, machine: &Identity, name: &str) -> String {
    let path = lab.pki.write(name, &machine.cert_pem());
    let out = openssl(&["x509", "-noout", "-serial", "-in", path.to_str().unwrap()]);
    out.trim().trim_start_matches("serial=").to_owned()
}

#[tokio::test]
async fn the_crl_lists_a_revoked_machines_serial_signed_by_the_enrollment_ca_and_written_to_crl_file()
 {
    let lab = Lab::start_full("127.0.0.1:0", "crl_file = \"enroll.crl\"").await;
    let (m1, _) = enroll(&lab, &lab.token("m1", "24h").await).await;
    let (m2, _) = enroll(&lab, &lab.token("m2", "24h").await).await;
    let (s1, s2) = (
        serial_of(&lab, &m1, "m1.pem"),
        serial_of(&lab, &m2, "m2.pem"),
    );
    let (text, before) = crl_text(&fetch_crl(&lab, "before.crl").await, "DER");
    assert!(text.contains("No Revoked Certificates"), "{text}");

    assert_eq!(
        lab.admin.delete("/enrollment/machines/m1").await.status,
        200
    );
    let path = fetch_crl(&lab, "after.crl").await;
    let (text, after) = crl_text(&path, "DER");
    assert!(
        text.contains(&format!("Serial Number: {s1}")),
        "{s1} in {text}"
    );
    assert!(!text.contains(&s2), "m2 is not revoked");
    assert!(
        after > before,
        "CRL numbers increase: {before} then {after}"
    );
    assert!(text.contains("Portcullis Enrollment CA"), "{text}");
    // Signed by the enrollment CA, as openssl checks it.
    let ca = lab.pki.path("enroll-ca.pem");
    let verify = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-CAfile",
        ca.to_str().unwrap(),
        "-noout",
        "-in",
        &path,
    ]);
    assert!(verify.contains("verify OK"), "{verify}");
    // The same list in `crl_file`, PEM, for other servers.
    let (text, number) = crl_text(lab.pki.path("enroll.crl").to_str().unwrap(), "PEM");
    assert!(text.contains(&format!("Serial Number: {s1}")), "{text}");
    assert_eq!(number, after);
    assert!(!lab.pki.path("enroll.crl.tmp").exists());
    // m2 is still admitted.
    assert_eq!(get_as(&lab, &m2, "/open").await.status, 200);
}
