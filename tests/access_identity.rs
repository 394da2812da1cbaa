//! Proves the access line says who called, at every stage that can refuse, in the real
//! binary's JSON and logfmt logs: the client certificate's CN and short SPKI pin, the
//! license id, the token's issuer, subject and client id, host, TLS version and ALPN,
//! upstream time and retries, bytes; a refused connection (IP lists, the handshake) has a
//! line of its own; no token, secret or query string is ever written. And the usage per
//! caller (`GET /usage`) counts what the lines say, and the token endpoint's events are
//! metrics.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use ops::{LogLine, Proc};
use portcullis::identity::ClientIdentity;
use portcullis::license::SigningKey;
use portcullis::license::keys::keygen;
use serde_json::{Value, json};
use support::jwt::TestKey;
use support::license::pin_license;
use support::*;
use tokio::io::AsyncWriteExt;

const ISS: &str = "https://issuer.identity.test";
const AUD: &str = "portcullis-identity";
const ADMIN_TOKEN: &str = "ADMINTOKEN-SUPERSECRET-1f3e5d7c9b";
const QUERY_SECRET: &str = "QUERYTOKEN-SUPERSECRET-8a6c4e2f0d";
const BOGUS_BEARER: &str = "BOGUSBEARER-SUPERSECRET.e30.c2lnbmF0dXJl";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Listener `mtls` (optional client certificates from the test CA) with route `orders`
/// (license and bearer token required) and route `vault` (only 10/8 may call it); listener
/// `closed` admits no address.
fn config(pki: &Pki, up: &Upstream, key: &TestKey) -> String {
    pki.write("admin.token", &format!("{ADMIN_TOKEN}\n"));
    pki.write("es256.pub.pem", &key.public_pem);
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\n\
         [licenses]\ntrusted_keys = [\"lic.pub\"]\nstore = \"licenses.redb\"\n\n\
         [[token_issuers]]\nname = \"corp\"\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\
         keys = [{{ pem = \"es256.pub.pem\", algorithms = [\"ES256\"], kid = \"es\" }}]\n\n\
         {}{}{}{}",
        server("watch_config = false"),
        listener("mtls", "client_auth = \"optional\"\nclient_ca = \"ca.pem\""),
        listener("closed", "allow = [\"10.0.0.0/8\"]"),
        route(
            "orders",
            "/orders",
            &[&up.url()],
            "listeners = [\"mtls\"]\nlicense = \"required\"\nauth = \"bearer\""
        ),
        route(
            "vault",
            "/vault",
            &[&up.url()],
            "listeners = [\"mtls\"]\nallow = [\"10.0.0.0/8\"]\nauth = \"none\""
        ),
    )
}

/// What one scenario leaves behind.
struct Run {
    proc: Proc,
    /// Request id -> the request it answered.
    ids: Vec<(&'static str, String)>,
    pin: String,
    usage_license: Value,
    usage_client: Value,
    metrics: String,
    secrets: Vec<String>,
    /// Holds the folder of the config and the logs.
    _pki: Pki,
}

async fn run(log_format: &str) -> Run {
    let pki = Pki::generate();
    let up = Upstream::echo("identity").await;
    let key = TestKey::generate("es", Algorithm::ES256);
    let files = keygen(pki.dir(), "lic").expect("license keygen");
    let signer = SigningKey::load(&files.private).expect("license key");
    let path = write_config(pki.dir(), &config(&pki, &up, &key));
    let mut proc = Proc::spawn(&path, log_format);
    let addr = proc.listener_addr("mtls").await;
    let closed = proc.listener_addr("closed").await;
    let admin = proc.admin_addr().await;
    let auth = format!("Bearer {ADMIN_TOKEN}");

    let agent = pki.new_client("agent-7");
    let stranger = pki.new_client("stranger-3");
    let license = signer
        .issue(&pin_license("lic-agent-7", &agent))
        .expect("issue");
    let r = ops::admin_call(
        admin,
        "POST",
        "/licenses",
        &[("authorization", &auth)],
        full(license.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "license activation: {}", r.text());

    let now = unix_now();
    let jwt = key.token(&json!({
        "iss": ISS, "aud": AUD, "sub": "svc-orders", "client_id": "erp-sync",
        "iat": now - 10, "exp": now + 600,
    }));
    let mut ids = Vec::new();
    let connect = async |who: &support::pki::Identity| {
        let tls = tls_as(&TlsClient::new(&pki).identity(who), addr, "localhost").await;
        H1::handshake(tls).await.expect("HTTP/1.1 handshake")
    };

    // Admitted: certificate, license and token.
    let mut c = connect(&agent).await;
    let r = c
        .call(
            request("GET", &format!("/orders/42?secret={QUERY_SECRET}"))
                .header("authorization", format!("Bearer {jwt}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    ids.push(("admitted", r.header("x-request-id").unwrap()));
    // Licensed, but the token is forged: refused at the token stage.
    let r = c
        .call(
            request("GET", "/orders/43")
                .header("authorization", format!("Bearer {BOGUS_BEARER}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    ids.push(("token", r.header("x-request-id").unwrap()));
    // Refused at the route's IP list.
    let r = c.call(get("/vault/keys")).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    ids.push(("ip", r.header("x-request-id").unwrap()));
    drop(c);
    // A certificate with no license: refused at the license stage.
    let mut c = connect(&stranger).await;
    let r = c
        .call(
            request("GET", "/orders/44")
                .header("authorization", format!("Bearer {jwt}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    ids.push(("license", r.header("x-request-id").unwrap()));
    drop(c);
    // A head the framing stage refuses (two Content-Lengths), from the licensed machine.
    let mut tls = tls_as(&TlsClient::new(&pki).identity(&agent), addr, "localhost").await;
    tls.write_all(
        b"POST /orders/45 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
    )
    .await
    .unwrap();
    let answer = read_some(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let framing_id = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("x-request-id on the refusal")
        .trim()
        .to_owned();
    ids.push(("framing", framing_id));
    // Not TLS at all: the handshake fails.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let _ = read_some(&mut raw).await;
    // A listener that admits no address: closed before TLS.
    let mut raw = tokio::net::TcpStream::connect(closed).await.unwrap();
    let _ = read_some(&mut raw).await;

    // Usage is counted when the response body is done: poll until the lines are written.
    let lines_written = async || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let n = proc
                .lines()
                .iter()
                .filter(|l| l.is_access() && l.str("kind") == Some("connection"))
                .count();
            if n >= 2 || std::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    lines_written().await;
    let usage_license = ops::admin_get_with_token(admin, "/usage?by=license", ADMIN_TOKEN)
        .await
        .json();
    let usage_client = ops::admin_get_with_token(admin, "/usage?by=client", ADMIN_TOKEN)
        .await
        .json();
    let bad = ops::admin_get_with_token(admin, "/usage?by=ip", ADMIN_TOKEN).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["error"], "bad_request");
    let metrics = ops::admin_get_with_token(admin, "/metrics", ADMIN_TOKEN)
        .await
        .text();

    proc.signal("TERM");
    let status = proc.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}\n{}", proc.logs());
    let pin = ClientIdentity::from_der(agent.cert().as_ref())
        .unwrap()
        .spki_pin();
    Run {
        proc,
        ids,
        pin,
        usage_license,
        usage_client,
        metrics,
        secrets: vec![
            jwt.clone(),
            jwt.rsplit('.').next().unwrap().to_owned(),
            BOGUS_BEARER.to_owned(),
            QUERY_SECRET.to_owned(),
            ADMIN_TOKEN.to_owned(),
            license.trim().to_owned(),
            "SUPERSECRET".to_owned(),
        ],
        _pki: pki,
    }
}

/// What a peer sends until it closes or goes quiet for a second.
async fn read_some<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn line_for<'a>(lines: &'a [LogLine], id: &str, raw: &str) -> &'a LogLine {
    lines
        .iter()
        .find(|l| l.is_access() && l.str("request_id") == Some(id))
        .unwrap_or_else(|| panic!("no access line for {id}\n{raw}"))
}

fn field(l: &LogLine, name: &str) -> String {
    l.text(name)
        .unwrap_or_else(|| panic!("no {name} in {}", l.raw))
}

/// Every claim of the module doc, for one log format.
fn check(run: &Run) {
    let raw = run.proc.stderr();
    let lines = run.proc.lines();
    let short_pin = &run.pin[..23];
    let id = |what: &str| run.ids.iter().find(|(w, _)| *w == what).unwrap().1.clone();

    let l = line_for(&lines, &id("admitted"), &raw);
    for (name, want) in [
        ("kind", "request"),
        ("listener", "mtls"),
        ("route", "orders"),
        ("status", "200"),
        ("reason", "-"),
        ("subject_cn", "agent-7"),
        ("pin", short_pin),
        ("license", "lic-agent-7"),
        ("token_issuer", "corp"),
        ("token_sub", "svc-orders"),
        ("client_id", "erp-sync"),
        ("host", "localhost"),
        ("tls", "1.3"),
        ("alpn", "http/1.1"),
        ("path", "/orders/42"),
        ("upstream", "orders#0"),
        ("retries", "0"),
    ] {
        assert_eq!(
            field(l, name),
            want,
            "{name} of the admitted request: {}",
            l.raw
        );
    }
    assert!(
        l.fields.get("upstream_us").is_some_and(Value::is_u64),
        "upstream time: {}",
        l.raw
    );
    assert!(field(l, "bytes_out").parse::<u64>().unwrap() > 0);
    assert!(
        run.pin.starts_with(short_pin) && short_pin.len() == 23,
        "the short pin is a prefix of the configured pin"
    );

    let expect = |what: &str, reason: &str, cn: &str, license: &str| {
        let l = line_for(&lines, &id(what), &raw);
        assert_eq!(field(l, "reason"), reason, "{what}: {}", l.raw);
        assert_eq!(field(l, "subject_cn"), cn, "{what}: {}", l.raw);
        assert_eq!(field(l, "license"), license, "{what}: {}", l.raw);
        assert_eq!(field(l, "tls"), "1.3", "{what}: {}", l.raw);
        assert_eq!(field(l, "upstream"), "-", "{what}: {}", l.raw);
        assert!(!l.fields.contains_key("upstream_us"), "{what}: {}", l.raw);
        l
    };
    let l = expect("token", "token_invalid", "agent-7", "lic-agent-7");
    assert_eq!(
        field(l, "token_sub"),
        "-",
        "a refused token names no subject"
    );
    expect("ip", "ip_not_allowed", "agent-7", "-");
    let l = expect("license", "license_missing", "stranger-3", "-");
    assert_ne!(field(l, "pin"), short_pin);
    expect("framing", "ambiguous_framing", "agent-7", "-");

    let conn: Vec<&LogLine> = lines
        .iter()
        .filter(|l| l.is_access() && l.str("kind") == Some("connection"))
        .collect();
    let handshake = conn
        .iter()
        .find(|l| l.str("reason") == Some("tls_handshake"))
        .unwrap_or_else(|| panic!("no line for the failed handshake\n{raw}"));
    assert_eq!(field(handshake, "listener"), "mtls");
    assert_eq!(field(handshake, "handshake"), "malformed");
    assert_eq!(field(handshake, "client_ip"), "127.0.0.1");
    let ip = conn
        .iter()
        .find(|l| l.str("reason") == Some("ip_not_allowed"))
        .unwrap_or_else(|| panic!("no line for the closed listener\n{raw}"));
    assert_eq!(field(ip, "listener"), "closed");

    for secret in &run.secrets {
        if let Some(at) = raw.find(secret.as_str()) {
            let start = raw[..at].rfind('\n').map_or(0, |i| i + 1);
            panic!("a secret is on stderr: {}", &raw[start..at + secret.len()]);
        }
    }

    // Usage: the licensed machine made two requests (one refused at the token stage); the
    // token client one (the license refusal came before its token was read).
    let entries = run.usage_license["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", run.usage_license);
    let e = &entries[0];
    assert_eq!(e["key"], "lic-agent-7");
    for window in ["minute", "hour", "day"] {
        assert_eq!(e[window]["requests"], 2, "{window}: {e}");
        assert_eq!(e[window]["refusals"], 1, "{window}: {e}");
        assert!(e[window]["bytes_out"].as_u64().unwrap() > 0);
    }
    let entries = run.usage_client["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", run.usage_client);
    assert_eq!(entries[0]["key"], "erp-sync");
    assert_eq!(entries[0]["day"]["requests"], 1);
    assert_eq!(run.usage_client["by"], "client");
    assert!(
        run.metrics
            .contains("portcullis_log_lines_suppressed_total{source=\"connection\"}"),
        "the connection lines' limit is a metric"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_lines_say_who_called_at_every_stage_and_never_a_secret() {
    let run = run("json").await;
    assert!(run.proc.lines().iter().all(|l| l.json));
    check(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logfmt_access_lines_say_who_called_at_every_stage_and_never_a_secret() {
    let run = run("logfmt").await;
    let raw = run.proc.stderr();
    for line in raw.lines().filter(|l| !l.trim().is_empty()) {
        assert!(line.starts_with("ts="), "not a logfmt line: {line}");
    }
    check(&run);
}
