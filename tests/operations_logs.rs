//! Proves the logs of the real binary (`portcullis run`, stderr, `PORTCULLIS_LOG=info`): one access
//! line per request whose path never carries the query string, every field present and, with
//! `--log-format json`, every line a JSON object with typed fields; and no secret a client or
//! operator hands the gateway (bearer tokens, a query-string token, cookies, a license activated
//! through the admin API, the admin token, the HS256 issuer secret) appears anywhere on stderr, in
//! either format, up to and including the SIGTERM shutdown.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use ops::{LogLine, Proc};
use portcullis::license::keys::keygen;
use portcullis::license::{Match, Payload, SigningKey};
use serde_json::{Value, json};
use support::jwt::TestKey;
use support::*;

const ISS: &str = "https://issuer.logs.test";
const AUD: &str = "portcullis-logs";
const ADMIN_TOKEN: &str = "ADMINTOKEN-SUPERSECRET-7a1c9e3b5d7f9a1c3e5b7d9f";
const WRONG_ADMIN_TOKEN: &str = "WRONGADMIN-SUPERSECRET-0f2e4d6c8b0a2f4e6d8c0b2a";
const HS256_SECRET: &str = "HS256-SUPERSECRET-5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b";
const BOGUS_BEARER: &str = "BOGUSBEARER-SUPERSECRET.e30.c2lnbmF0dXJl";
const QUERY_SECRET: &str = "QUERYTOKEN-SUPERSECRET-1b3d5f7a9c";
const COOKIE_SECRET: &str = "COOKIE-SUPERSECRET-2c4e6a8b0d";
const UPLOAD_LEN: usize = 1234;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Admin with a token, licenses, an ES256 issuer and an HS256 issuer, route `api` (bearer)
/// and route `open` (no auth).
fn config(pki: &Pki, up: &Upstream, es256: &TestKey) -> String {
    pki.write("admin.token", &format!("{ADMIN_TOKEN}\n"));
    pki.write("hs256.secret", HS256_SECRET);
    pki.write("es256.pub.pem", &es256.public_pem);
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\n\
         [licenses]\ntrusted_keys = [\"lic.pub\"]\nstore = \"licenses.redb\"\n\n\
         [[token_issuers]]\nname = \"corp\"\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\
         keys = [{{ pem = \"es256.pub.pem\", algorithms = [\"ES256\"], kid = \"es\" }}]\n\n\
         [[token_issuers]]\nname = \"shared\"\nissuer = \"{ISS}/shared\"\naudiences = [\"{AUD}\"]\n\
         hs256_secret_file = \"hs256.secret\"\n\n{}{}{}",
        server("watch_config = false"),
        listener("public", ""),
        route("api", "/api", &[&up.url()], "auth = \"bearer\""),
        route("open", "/open", &[&up.url()], "auth = \"none\""),
    )
}

/// What one request should leave in its access line.
struct Expect {
    request_id: String,
    route: &'static str,
    method: &'static str,
    path: &'static str,
    status: u64,
    reason: &'static str,
    upstream: &'static str,
    bytes_in: u64,
    bytes_out: u64,
}

/// What the scenario sent: the secrets and the expected access lines.
struct Sent {
    secrets: Vec<(String, String)>,
    expected: Vec<Expect>,
}

/// Start the binary with `log_format`, send requests and admin calls carrying every kind of
/// secret, SIGTERM it and wait for a clean exit. Returns the finished process (for its
/// stderr) and what was sent.
async fn run_scenario(log_format: &str) -> (Proc, Sent, Pki) {
    let pki = Pki::generate();
    let up = Upstream::echo("logs").await;
    let es256 = TestKey::generate("es", Algorithm::ES256);
    let lic_files = keygen(pki.dir(), "lic").expect("license keygen");
    let lic_key = SigningKey::load(&lic_files.private).expect("license key");
    let path = write_config(pki.dir(), &config(&pki, &up, &es256));
    let mut proc = Proc::spawn(&path, log_format);
    let addr = proc.listener_addr("public").await;
    let admin = proc.admin_addr().await;

    let now = unix_now();
    let jwt = es256.token(&json!({
        "iss": ISS, "aud": AUD, "sub": "svc-logs", "scope": "orders:read",
        "iat": now - 10, "exp": now + 600, "jti": "jti-logs-1",
    }));
    let payload = |id: &str| Payload {
        id: id.to_owned(),
        kid: String::new(),
        customer: "Acme".to_owned(),
        machine_id: "machine-logs".to_owned(),
        binding: Match::Ip,
        pins: Vec::new(),
        ips: vec!["127.0.0.1/32".to_owned()],
        routes: Vec::new(),
        scopes: Vec::new(),
        issued_at: now - 60,
        not_before: now - 60,
        expires_at: now + 86_400,
        quota: None,
    };
    let license = lic_key
        .issue(&payload("lic-logs-1"))
        .expect("issue a license");
    // Another license with one character of its payload changed: refused, and the refusal
    // is logged with its reason.
    let other = lic_key
        .issue(&payload("lic-logs-2"))
        .expect("issue a license");
    let tampered = other.trim().replacen("PCL1.ey", "PCL1.ez", 1);
    assert_ne!(tampered, other.trim());

    let mut c = connect_h1(&pki, addr).await;
    let mut expected = Vec::new();
    let mut send = async |req: http::Request<BoxBody>| {
        let r = c.call(req).await.expect("response from the gateway");
        let id = r.header("x-request-id").expect("x-request-id");
        (r, id)
    };

    // A valid bearer token.
    let (r, id) = send(
        request("GET", "/api/orders")
            .header("authorization", format!("Bearer {jwt}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    expected.push(Expect {
        request_id: id,
        route: "api",
        method: "GET",
        path: "/api/orders",
        status: 200,
        reason: "-",
        upstream: "api#0",
        bytes_in: 0,
        bytes_out: r.body.len() as u64,
    });
    // A bogus one.
    let (r, id) = send(
        request("GET", "/api/orders/7")
            .header("authorization", format!("Bearer {BOGUS_BEARER}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    expected.push(Expect {
        request_id: id,
        route: "api",
        method: "GET",
        path: "/api/orders/7",
        status: 401,
        reason: "token_invalid",
        upstream: "-",
        bytes_in: 0,
        bytes_out: r.body.len() as u64,
    });
    // A token in the query string: never read from there, and never logged.
    let (r, id) = send(get(&format!("/api/orders?access_token={jwt}"))).await;
    assert_eq!(r.status, 401, "{}", r.text());
    expected.push(Expect {
        request_id: id,
        route: "api",
        method: "GET",
        path: "/api/orders",
        status: 401,
        reason: "token_missing",
        upstream: "-",
        bytes_in: 0,
        bytes_out: r.body.len() as u64,
    });
    // ?token=... on an open route.
    let (r, id) = send(get(&format!("/open/search?token={QUERY_SECRET}&q=1"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    expected.push(Expect {
        request_id: id,
        route: "open",
        method: "GET",
        path: "/open/search",
        status: 200,
        reason: "-",
        upstream: "open#0",
        bytes_in: 0,
        bytes_out: r.body.len() as u64,
    });
    // A cookie and a body.
    let (r, id) = send(
        request("POST", "/open/upload")
            .header("cookie", format!("session={COOKIE_SECRET}; theme=dark"))
            .body(full(vec![b'x'; UPLOAD_LEN]))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().body_len, UPLOAD_LEN as u64);
    expected.push(Expect {
        request_id: id,
        route: "open",
        method: "POST",
        path: "/open/upload",
        status: 200,
        reason: "-",
        upstream: "open#0",
        bytes_in: UPLOAD_LEN as u64,
        bytes_out: r.body.len() as u64,
    });
    // No route, with a secret in the query.
    let (r, id) = send(get(&format!("/missing?token={QUERY_SECRET}"))).await;
    assert_eq!(r.status, 404, "{}", r.text());
    expected.push(Expect {
        request_id: id,
        route: "-",
        method: "GET",
        path: "/missing",
        status: 404,
        reason: "no_route",
        upstream: "-",
        bytes_in: 0,
        bytes_out: r.body.len() as u64,
    });
    drop(c);

    // The admin API: a wrong token, a license activation, config and metrics with the token.
    let wrong = format!("Bearer {WRONG_ADMIN_TOKEN}");
    let r = ops::admin_call(
        admin,
        "GET",
        "/healthz",
        &[("authorization", &wrong)],
        empty(),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = ops::admin_call(
        admin,
        "POST",
        "/licenses",
        &[("authorization", &auth)],
        full(license.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "license activation: {}", r.text());
    let r = ops::admin_call(
        admin,
        "POST",
        "/licenses",
        &[("authorization", &auth)],
        full(json!({ "license": tampered }).to_string()),
    )
    .await;
    assert_eq!(r.status, 400, "tampered license: {}", r.text());
    assert_eq!(r.json()["error"], "license_refused");
    for p in ["/config", "/metrics", "/licenses"] {
        let r = ops::admin_get_with_token(admin, p, ADMIN_TOKEN).await;
        assert_eq!(r.status, 200, "GET {p}: {}", r.text());
    }

    proc.signal("TERM");
    let status = proc.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}\n{}", proc.logs());

    let jwt_signature = jwt.rsplit('.').next().expect("JWS").to_owned();
    let license_signature = license
        .trim()
        .rsplit('.')
        .next()
        .expect("license")
        .to_owned();
    let mut secrets = vec![
        ("the bearer token".to_owned(), jwt.clone()),
        ("the bearer token's signature".to_owned(), jwt_signature),
        ("a bogus bearer token".to_owned(), BOGUS_BEARER.to_owned()),
        ("a query-string token".to_owned(), QUERY_SECRET.to_owned()),
        ("a cookie".to_owned(), COOKIE_SECRET.to_owned()),
        ("the license".to_owned(), license.trim().to_owned()),
        ("the license signature".to_owned(), license_signature),
        ("a refused license".to_owned(), tampered.clone()),
        (
            "a refused license's payload".to_owned(),
            tampered
                .split('.')
                .nth(1)
                .expect("license payload")
                .to_owned(),
        ),
        (
            "a refused license's signature".to_owned(),
            tampered.rsplit('.').next().expect("license").to_owned(),
        ),
        ("the admin token".to_owned(), ADMIN_TOKEN.to_owned()),
        (
            "a wrong admin token".to_owned(),
            WRONG_ADMIN_TOKEN.to_owned(),
        ),
        ("the HS256 secret".to_owned(), HS256_SECRET.to_owned()),
        (
            "any SUPERSECRET marker".to_owned(),
            "SUPERSECRET".to_owned(),
        ),
    ];
    secrets.retain(|(_, s)| s.len() >= 8);
    (proc, Sent { secrets, expected }, pki)
}

/// No secret anywhere on stderr (the process has exited: this is all it ever wrote).
fn assert_no_secret(proc: &Proc, sent: &Sent) {
    let stderr = proc.stderr();
    assert!(!stderr.is_empty(), "nothing was logged");
    for (what, secret) in &sent.secrets {
        if let Some(at) = stderr.find(secret.as_str()) {
            let start = stderr[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = stderr[at..].find('\n').map_or(stderr.len(), |i| at + i);
            panic!("{what} appears on stderr:\n{}", &stderr[start..end]);
        }
    }
}

/// One access line per request, found by request id, with the fields it should carry; no
/// access line's path has a query string.
fn assert_access_lines(proc: &Proc, sent: &Sent) -> BTreeMap<String, LogLine> {
    let lines = proc.lines();
    let access: Vec<&LogLine> = lines.iter().filter(|l| l.is_access()).collect();
    assert_eq!(
        access.len(),
        sent.expected.len(),
        "one access line per request (admin calls are not access-logged)\n{}",
        proc.stderr()
    );
    let mut by_id = BTreeMap::new();
    for l in &access {
        let path = l
            .str("path")
            .unwrap_or_else(|| panic!("no path in {}", l.raw));
        assert!(
            !path.contains('?') && !path.contains("token"),
            "a query string in {}",
            l.raw
        );
        assert_eq!(l.level, "INFO", "{}", l.raw);
        let id = l
            .str("request_id")
            .unwrap_or_else(|| panic!("no request_id in {}", l.raw));
        assert!(
            id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "request_id {id:?}"
        );
        by_id.insert(id.to_owned(), (*l).clone());
    }
    for e in &sent.expected {
        let l = by_id.get(&e.request_id).unwrap_or_else(|| {
            panic!(
                "no access line for request {}\n{}",
                e.request_id,
                proc.stderr()
            )
        });
        let want: [(&str, Value); 10] = [
            ("listener", json!("public")),
            ("route", json!(e.route)),
            ("method", json!(e.method)),
            ("path", json!(e.path)),
            ("status", json!(e.status)),
            ("reason", json!(e.reason)),
            ("client_ip", json!("127.0.0.1")),
            ("upstream", json!(e.upstream)),
            ("bytes_in", json!(e.bytes_in)),
            ("bytes_out", json!(e.bytes_out)),
        ];
        for (field, value) in want {
            assert_eq!(
                l.fields.get(field),
                Some(&value),
                "{field} of request {} {}: {}",
                e.method,
                e.path,
                l.raw
            );
        }
        assert!(
            l.fields.get("duration_us").is_some_and(Value::is_u64),
            "duration_us of {}: {}",
            e.path,
            l.raw
        );
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_give_every_access_line_its_fields_and_no_secret_reaches_stderr() {
    let (proc, sent, _pki) = run_scenario("json").await;
    // Every line is one JSON object with a level, a target and a timestamp.
    for line in proc.stderr().lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v.get(key).is_some(), "no {key} in {line}");
        }
    }
    let lines = proc.lines();
    assert!(lines.iter().all(|l| l.json));
    for l in lines.iter().filter(|l| l.is_access()) {
        for (field, is_type) in [
            ("request_id", Value::is_string as fn(&Value) -> bool),
            ("route", Value::is_string),
            ("method", Value::is_string),
            ("path", Value::is_string),
            ("status", Value::is_u64),
            ("reason", Value::is_string),
            ("duration_us", Value::is_u64),
            ("client_ip", Value::is_string),
            ("upstream", Value::is_string),
            ("bytes_in", Value::is_u64),
            ("bytes_out", Value::is_u64),
            ("trace_id", Value::is_string),
        ] {
            let v = l
                .fields
                .get(field)
                .unwrap_or_else(|| panic!("no {field} in access line {}", l.raw));
            assert!(is_type(v), "{field} has the wrong JSON type in {}", l.raw);
        }
    }
    assert_access_lines(&proc, &sent);
    assert!(
        lines
            .iter()
            .any(|l| l.message == "license activated" && l.str("license") == Some("lic-logs-1")),
        "the activation is logged by id\n{}",
        proc.stderr()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.message == "license activation refused" && l.level == "WARN"),
        "the refusal is logged\n{}",
        proc.stderr()
    );
    assert!(lines.iter().any(|l| l.message == "SIGTERM received"));
    assert_no_secret(&proc, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_the_path_without_its_query_and_no_secret_reaches_stderr() {
    let (proc, sent, _pki) = run_scenario("text").await;
    let lines = proc.lines();
    assert!(
        lines.iter().all(|l| !l.json),
        "--log-format text wrote JSON"
    );
    let stderr = proc.stderr();
    let unparsed: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && ops::parse_log_line(l).is_none())
        .collect();
    assert!(
        unparsed.is_empty(),
        "lines not in the text format: {unparsed:#?}"
    );
    assert_access_lines(&proc, &sent);
    assert!(lines.iter().any(|l| l.message == "SIGTERM received"));
    assert_no_secret(&proc, &sent);
}
