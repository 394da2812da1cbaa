//! Proves the admin API an operator scrapes and probes: `/metrics` counts requests (by route,
//! method and status class), their durations (a valid cumulative histogram), denials by reason, TLS
//! handshakes by version and open connections, and is valid Prometheus text whose labels never
//! carry an address, subject, host or token; `/healthz` and `/readyz` answer with counts; unknown
//! paths and wrong methods get JSON 404/405; a `token_file` makes every admin request need the
//! bearer token (401 JSON with `WWW-Authenticate` otherwise); `GET /config` shows `<redacted>` for
//! secret-bearing keys and never a secret value.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use http::Request;
use support::prometheus::Exposition;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One listener asking for (optional) client certificates from the test CA.
const MTLS: &str = "client_auth = \"optional\"\nclient_ca = \"ca.pem\"";

/// Admin on 127.0.0.1:0, one mTLS-optional listener, route `api` (GET and POST to the echo
/// upstream) and route `down` (to a port where nothing listens).
fn config(up: &Upstream) -> String {
    config_with(up, "")
}

/// [`config`] with extra `keys` on the listener.
fn config_with(up: &Upstream, keys: &str) -> String {
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n{}{}{}",
        server("watch_config = false"),
        listener("public", &format!("{MTLS}\n{keys}")),
        route("api", "/api", &[&up.url()], "methods = [\"GET\", \"POST\"]"),
        route("down", "/down", &[&closed_port_url()], ""),
    )
}

/// The value of series `name{labels}`, 0 when the series does not exist (yet).
fn val(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    e.value(name, labels).unwrap_or(0.0)
}

/// How much series `name{labels}` moved between two scrapes.
fn delta(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    val(after, name, labels) - val(before, name, labels)
}

/// Scrape until `pred` holds (at most 5 s): for counts a connection task makes after the
/// client already saw the socket close.
async fn eventually(admin: &Admin, what: &str, pred: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = admin.metrics().await;
        if pred(&m) {
            return m;
        }
        if Instant::now() > deadline {
            let text = admin.get("/metrics").await.text();
            panic!("{what}: not seen within 5 s\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A label set without `le`: one series of a histogram.
type Labels = BTreeMap<String, String>;

/// A `le` label as a number.
fn le_of(s: &support::prometheus::Sample) -> f64 {
    let le = s
        .labels
        .get("le")
        .unwrap_or_else(|| panic!("{} without le", s.name));
    match le.as_str() {
        "+Inf" => f64::INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("{} has le={v:?}, not a number", s.name)),
    }
}

/// Every histogram family: per label set, buckets with strictly increasing `le`, cumulative
/// (non-decreasing) counts, the last one `le="+Inf"` equal to `_count`, and a `_sum`; no
/// `_count` without buckets. Counters are finite and not negative.
fn check_histograms_and_counters(e: &Exposition) -> usize {
    let mut histograms = 0;
    for (family, kind) in &e.types {
        let of_family = |suffix: &str| {
            let name = format!("{family}{suffix}");
            e.samples
                .iter()
                .filter(move |s| s.name == name)
                .collect::<Vec<_>>()
        };
        match kind.as_str() {
            "counter" => {
                for s in of_family("") {
                    assert!(
                        s.value.is_finite() && s.value >= 0.0 && s.value.fract() == 0.0,
                        "counter {} {:?} = {}",
                        s.name,
                        s.labels,
                        s.value
                    );
                }
            }
            "histogram" => {
                let mut series: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
                for s in of_family("_bucket") {
                    let mut key = s.labels.clone();
                    key.remove("le");
                    let le = le_of(s);
                    match series.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, b)) => b.push((le, s.value)),
                        None => series.push((key, vec![(le, s.value)])),
                    }
                }
                for (key, buckets) in &series {
                    histograms += 1;
                    for w in buckets.windows(2) {
                        assert!(
                            w[0].0 < w[1].0,
                            "{family}{key:?}: le not increasing: {buckets:?}"
                        );
                        assert!(
                            w[0].1 <= w[1].1,
                            "{family}{key:?}: buckets not cumulative: {buckets:?}"
                        );
                    }
                    let (last_le, last) = *buckets.last().expect("a bucket");
                    assert_eq!(
                        last_le,
                        f64::INFINITY,
                        "{family}{key:?}: the last bucket is not le=\"+Inf\""
                    );
                    let labels: Vec<(&str, &str)> =
                        key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let count = e
                        .value(&format!("{family}_count"), &labels)
                        .unwrap_or_else(|| panic!("{family}{key:?} has buckets but no _count"));
                    assert_eq!(
                        last, count,
                        "{family}{key:?}: le=\"+Inf\" is {last}, _count is {count}"
                    );
                    let sum = e
                        .value(&format!("{family}_sum"), &labels)
                        .unwrap_or_else(|| panic!("{family}{key:?} has no _sum"));
                    assert!(sum >= 0.0 && sum.is_finite(), "{family}{key:?}: _sum {sum}");
                }
                for c in of_family("_count") {
                    assert!(
                        series.iter().any(|(k, _)| *k == c.labels),
                        "{family}_count{:?} has no buckets",
                        c.labels
                    );
                }
            }
            _ => {}
        }
    }
    histograms
}

async fn call(c: &mut H1, req: Request<BoxBody>) -> TestResponse {
    c.call(req).await.expect("response from the gateway")
}

#[tokio::test]
async fn requests_durations_and_denials_move_by_route_method_and_class() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &config(&up)).await;
    let admin = Admin::new(gw.admin_addr());
    let before = admin.metrics().await;

    let mut c = connect_h1(&pki, gw.addr()).await;
    for i in 0..3 {
        call(&mut c, get(&format!("/api/items/{i}"))).await.echo();
    }
    for _ in 0..2 {
        let req = request("POST", "/api/items").body(full("x")).unwrap();
        call(&mut c, req).await.echo();
    }
    let down = call(&mut c, get("/down/x")).await;
    assert_eq!(down.status, 502, "{}", down.text());
    for _ in 0..2 {
        let r = call(&mut c, get("/nowhere")).await;
        assert_eq!(r.status, 404, "{}", r.text());
        assert_eq!(r.json()["error"], "no_route");
    }
    let r = call(
        &mut c,
        request("DELETE", "/api/items").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.text());

    let after = admin.metrics().await;
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);

    // portcullis_requests_total{route,method,class}
    let req = "portcullis_requests_total";
    assert_eq!(
        d(
            req,
            &[("route", "api"), ("method", "GET"), ("class", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        d(
            req,
            &[("route", "api"), ("method", "POST"), ("class", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        d(
            req,
            &[("route", "down"), ("method", "GET"), ("class", "5xx")]
        ),
        1.0
    );
    assert_eq!(
        d(req, &[("route", "-"), ("method", "GET"), ("class", "4xx")]),
        2.0
    );
    assert_eq!(
        d(
            req,
            &[("route", "-"), ("method", "DELETE"), ("class", "4xx")]
        ),
        1.0
    );
    let total: f64 = after
        .samples
        .iter()
        .filter(|s| s.name == req)
        .map(|s| s.value)
        .sum::<f64>()
        - before
            .samples
            .iter()
            .filter(|s| s.name == req)
            .map(|s| s.value)
            .sum::<f64>();
    assert_eq!(total, 9.0, "every request counted once, nothing else");

    // portcullis_request_duration_seconds: _count, _sum, _bucket by route.
    let dur = "portcullis_request_duration_seconds";
    assert_eq!(d(&format!("{dur}_count"), &[("route", "api")]), 5.0);
    assert_eq!(d(&format!("{dur}_count"), &[("route", "down")]), 1.0);
    assert_eq!(d(&format!("{dur}_count"), &[("route", "-")]), 3.0);
    assert!(d(&format!("{dur}_sum"), &[("route", "api")]) > 0.0);
    assert_eq!(
        d(
            &format!("{dur}_bucket"),
            &[("route", "api"), ("le", "+Inf")]
        ),
        5.0
    );
    assert!(
        d(&format!("{dur}_bucket"), &[("route", "api"), ("le", "30")]) == 5.0,
        "five quick requests are all under the 30 s bucket"
    );
    assert_eq!(
        d(
            "portcullis_upstream_duration_seconds_count",
            &[("upstream", "api")]
        ),
        5.0
    );
    assert_eq!(
        d(
            "portcullis_upstream_errors_total",
            &[("upstream", "down"), ("kind", "connect")]
        ),
        1.0
    );

    // portcullis_denials_total{reason}: every reason pre-registered, three moved.
    let den = "portcullis_denials_total";
    for reason in ["no_route", "method_not_allowed", "upstream_unavailable"] {
        assert!(
            before.value(den, &[("reason", reason)]).is_some(),
            "{reason} is not pre-registered"
        );
    }
    assert_eq!(d(den, &[("reason", "no_route")]), 2.0);
    assert_eq!(d(den, &[("reason", "method_not_allowed")]), 1.0);
    assert_eq!(d(den, &[("reason", "upstream_unavailable")]), 1.0);
    assert_eq!(d(den, &[("reason", "ip_not_allowed")]), 0.0);

    assert!(check_histograms_and_counters(&after) >= 3);
}

#[tokio::test]
async fn tls_handshakes_are_counted_by_version_and_open_connections_by_a_gauge() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &config(&up)).await;
    let admin = Admin::new(gw.admin_addr());
    let before = admin.metrics().await;
    assert_eq!(before.scalar("portcullis_open_connections"), 0.0);

    let mut open = Vec::new();
    for client in [
        TlsClient::new(&pki).tls13_only(),
        TlsClient::new(&pki).tls13_only(),
        TlsClient::new(&pki).tls12_only(),
    ] {
        let tls = client.connect(gw.addr(), "localhost").await.expect("TLS");
        let mut h1 = H1::handshake(tls).await.unwrap();
        call(&mut h1, get("/api/x")).await.echo();
        open.push(h1);
    }
    let m = admin.metrics().await;
    let hs = "portcullis_tls_handshakes_total";
    assert_eq!(
        delta(&before, &m, hs, &[("version", "1.3"), ("result", "ok")]),
        2.0
    );
    assert_eq!(
        delta(&before, &m, hs, &[("version", "1.2"), ("result", "ok")]),
        1.0
    );
    assert_eq!(m.scalar("portcullis_open_connections"), 3.0);

    // Plain HTTP on the TLS port: a failed handshake, counted with its reason.
    let mut raw = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink))
        .await
        .expect("the gateway did not close a plain-HTTP connection")
        .ok();
    let m = eventually(&admin, "the failed handshake counted", |m| {
        delta(
            &before,
            m,
            hs,
            &[("version", "unknown"), ("result", "failed")],
        ) == 1.0
    })
    .await;
    assert_eq!(
        delta(
            &before,
            &m,
            "portcullis_tls_handshake_failures_total",
            &[("reason", "malformed")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            &before,
            &m,
            "portcullis_connections_refused_total",
            &[("reason", "tls_handshake")]
        ),
        1.0
    );

    drop(open);
    drop(raw);
    eventually(&admin, "open connections back to 0", |m| {
        m.scalar("portcullis_open_connections") == 0.0
    })
    .await;
}

#[tokio::test]
async fn the_exposition_is_valid_prometheus_text_and_no_label_carries_an_address_subject_or_token()
{
    const HOST: &str = "host-a81f.example";
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    // The probe's host is one the listener serves, reached by address (no SNI).
    let toml = config_with(&up, &format!("hosts = [\"{HOST}\"]"));
    let gw = Gateway::start(pki.dir(), &toml).await;
    let admin = Admin::new(gw.admin_addr());

    const CN: &str = "cn-metrics-probe-9d41e";
    const TOKEN: &str = "tok-5b7c2e9a1f0d4c3b8a7e6d5c4b3a2f1e";
    const QUERY: &str = "QSECRET-77e1b0";
    const COOKIE: &str = "COOKIE-SECRET-0c4f";
    let machine = pki.new_client(CN);
    let tls = TlsClient::new(&pki)
        .identity(&machine)
        .connect(gw.addr(), "127.0.0.1")
        .await
        .expect("mTLS");
    let mut c = H1::handshake(tls).await.unwrap();
    let bearer = format!("Bearer {TOKEN}");
    for (method, path) in [
        ("GET", format!("/api/orders?token={QUERY}")),
        ("POST", "/api/orders".to_owned()),
        ("GET", format!("/missing/{QUERY}")),
        ("PURGE", "/api/orders".to_owned()),
        ("GET", "/down/x".to_owned()),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(&path)
            .header("host", HOST)
            .header("authorization", &bearer)
            .header("cookie", format!("session={COOKIE}"))
            .header("x-forwarded-for", "203.0.113.7")
            .body(empty())
            .unwrap();
        let r = call(&mut c, req).await;
        assert!(r.status.as_u16() < 600, "{method} {path}: {}", r.status);
    }

    let resp = admin.get("/metrics").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = resp.text();
    let m = support::prometheus::parse(&text)
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{text}"));
    // Every family the gateway declares, each with a # TYPE (the parser refuses a sample
    // without one) and a # HELP.
    for family in [
        ("portcullis_requests_total", "counter"),
        ("portcullis_request_duration_seconds", "histogram"),
        ("portcullis_upstream_duration_seconds", "histogram"),
        ("portcullis_upstream_errors_total", "counter"),
        ("portcullis_denials_total", "counter"),
        ("portcullis_connections_refused_total", "counter"),
        ("portcullis_open_connections", "gauge"),
        ("portcullis_parked_connections", "gauge"),
        ("portcullis_tls_handshakes_total", "counter"),
        ("portcullis_tls_handshake_failures_total", "counter"),
        ("portcullis_h2_goaway_total", "counter"),
        ("portcullis_config_reloads_total", "counter"),
        ("portcullis_config_last_success_timestamp_seconds", "gauge"),
        ("portcullis_certificate_expiry_timestamp_seconds", "gauge"),
        ("portcullis_license_grace_requests_total", "counter"),
        ("portcullis_licenses_active", "gauge"),
        ("portcullis_licenses_expiring_7d", "gauge"),
        ("portcullis_licenses_in_grace", "gauge"),
        ("portcullis_token_cache_lookups_total", "counter"),
        ("portcullis_token_cache_entries", "gauge"),
    ] {
        assert_eq!(
            m.types.get(family.0).map(String::as_str),
            Some(family.1),
            "# TYPE of {}",
            family.0
        );
        assert!(
            text.contains(&format!("# HELP {} ", family.0)),
            "no # HELP for {}",
            family.0
        );
    }
    // Every sample line is `name{labels} value` and belongs to a declared family.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        assert!(
            m.types.contains_key(name)
                || ["_bucket", "_sum", "_count"].iter().any(|s| name
                    .strip_suffix(s)
                    .is_some_and(|f| m.types.get(f).map(String::as_str) == Some("histogram"))),
            "{line:?} belongs to no declared family"
        );
    }
    assert!(check_histograms_and_counters(&m) >= 3);
    assert_eq!(
        m.value(
            "portcullis_certificate_expiry_timestamp_seconds",
            &[("listener", "public")]
        ),
        Some(4_102_358_400.0),
        "server.pem is valid until 2099-12-31T00:00:00Z"
    );

    // Nothing the client controls or presents becomes a label. The upstream target series
    // name configured targets (operators read them per target), nothing else.
    for line in text.lines().filter(|l| l.contains("target=\"")) {
        let target = line
            .split("target=\"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .unwrap_or_default();
        assert!(
            toml.contains(&format!("\"http://{target}\"")),
            "{line}: not a configured target"
        );
    }
    let text: String = text
        .lines()
        .filter(|l| !l.contains("target=\""))
        .collect::<Vec<_>>()
        .join("\n");
    for secret in [
        "127.0.0.1",
        "203.0.113.7",
        CN,
        "good client",
        TOKEN,
        HOST,
        QUERY,
        COOKIE,
        "localhost",
        "/api/orders",
        "PURGE",
        &format!(":{}", up.addr.port()),
        &format!(":{}", gw.addr().port()),
    ] {
        assert!(
            !text.contains(secret),
            "/metrics contains {secret:?}:\n{text}"
        );
    }
    let routes: BTreeSet<&str> = ["api", "down", "-"].into();
    let methods: BTreeSet<&str> = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
    ]
    .into();
    for s in &m.samples {
        for (k, v) in &s.labels {
            let ok = match k.as_str() {
                "route" | "upstream" => routes.contains(v.as_str()),
                "method" => methods.contains(v.as_str()),
                "class" => ["1xx", "2xx", "3xx", "4xx", "5xx"].contains(&v.as_str()),
                // snake_case; digits for HTTP/2's http_1_1_required
                "reason" => {
                    !v.is_empty()
                        && v.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                }
                "version" => ["1.2", "1.3", "other", "unknown"].contains(&v.as_str()),
                "result" => [
                    "ok",
                    "failed",
                    "success",
                    "failure",
                    "hit",
                    "miss",
                    "allowed",
                    "forbidden",
                    "unauthorized",
                ]
                .contains(&v.as_str()),
                "role" => ["none", "viewer", "operator", "admin"].contains(&v.as_str()),
                "kind" => ["connect", "timeout", "exchange"].contains(&v.as_str()),
                "protocol" => ["http1", "h2"].contains(&v.as_str()),
                "target" => toml.contains(&format!("\"http://{v}\"")),
                "listener" => v == "public",
                "backend" => ["embedded", "redis"].contains(&v.as_str()),
                "source" => ["rustls", "h2", "hyper", "connection"].contains(&v.as_str()),
                "event" => [
                    "issued",
                    "refreshed",
                    "refresh_refused",
                    "reuse_detected",
                    "revoked",
                    "auth_failed",
                    "throttled",
                ]
                .contains(&v.as_str()),
                "le" => v == "+Inf" || v.parse::<f64>().is_ok(),
                _ => false,
            };
            assert!(
                ok,
                "{}{{{k}={v:?}}}: a label outside the closed sets",
                s.name
            );
        }
    }
    assert_eq!(
        m.value(
            "portcullis_requests_total",
            &[("route", "-"), ("method", "OTHER"), ("class", "4xx")]
        ),
        Some(1.0),
        "PURGE is counted as OTHER"
    );
}

// === admin API ===

#[tokio::test]
async fn healthz_and_readyz_answer_200_and_readyz_counts_listeners_and_routes() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let toml = format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n{}{}{}{}",
        server("watch_config = false"),
        listener("public", ""),
        listener("internal", ""),
        route("api", "/api", &[&up.url()], ""),
        route(
            "only-internal",
            "/internal",
            &[&up.url()],
            "listeners = [\"internal\"]"
        ),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let admin = Admin::new(gw.admin_addr());

    let h = admin.get("/healthz").await;
    assert_eq!(h.status, 200, "{}", h.text());
    assert_eq!(
        h.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(h.json(), serde_json::json!({"status": "ok"}));
    assert!(h.header("x-request-id").is_some());

    let r = admin.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "ready", "listeners": 2, "routes": 2,
            "state": {"backend": "embedded", "status": "up"}}),
        "two routes (api on both listeners, only-internal on one), each counted once"
    );
}

#[tokio::test]
async fn unknown_admin_paths_are_404_and_wrong_methods_405_as_json() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &config(&up)).await;
    let admin = Admin::new(gw.admin_addr());

    let check = |r: TestResponse, status: u16, error: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        let body = r.json();
        assert_eq!(body["error"], error, "{body}");
        let id = r.header("x-request-id").expect("x-request-id");
        assert_eq!(body["request_id"], id.as_str(), "{body}");
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(2),
            "only error and request_id: {body}"
        );
    };
    for path in ["/", "/nope", "/metrics/x", "/healthz/", "/admin"] {
        check(admin.get(path).await, 404, "not_found");
    }
    check(admin.post("/healthz", "").await, 405, "method_not_allowed");
    check(admin.post("/metrics", "").await, 405, "method_not_allowed");
    check(admin.delete("/config").await, 405, "method_not_allowed");
    check(admin.get("/reload").await, 405, "method_not_allowed");
    check(
        admin.call("PUT", "/readyz", empty()).await,
        405,
        "method_not_allowed",
    );
    // Without [licenses], the license endpoints say so.
    check(admin.get("/licenses").await, 404, "licenses_not_configured");
}

/// An admin token, an HS256 token issuer secret, and a config naming both files.
fn secret_config(pki: &Pki, up: &Upstream, admin_token: &str, hs256_secret: &str) -> String {
    pki.write("admin.token", &format!("{admin_token}\n"));
    pki.write("hs256.secret", hs256_secret);
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\n\
         [[token_issuers]]\nname = \"corp\"\nissuer = \"https://issuer.test\"\n\
         audiences = [\"portcullis\"]\nhs256_secret_file = \"hs256.secret\"\n\n{}{}",
        server("watch_config = false"),
        listener("public", ""),
        route("api", "/api", &[&up.url()], "auth = \"bearer\""),
    )
}

#[tokio::test]
async fn with_a_token_file_every_admin_request_needs_the_bearer_token() {
    const ADMIN_TOKEN: &str = "admintoken-3f9c1a7e5b2d4f6a8c0e1b3d5f7a9c2e";
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let toml = secret_config(
        &pki,
        &up,
        ADMIN_TOKEN,
        "hs256-secret-value-0123456789abcdef0123",
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let addr = gw.admin_addr();

    let refused = |r: TestResponse, what: &str| {
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"portcullis-admin\""),
            "{what}"
        );
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        let body = r.json();
        assert_eq!(body["error"], "unauthorized", "{what}: {body}");
        assert_eq!(
            body["request_id"].as_str(),
            r.header("x-request-id").as_deref(),
            "{what}"
        );
        assert!(!r.text().contains(ADMIN_TOKEN));
    };
    let wrong = format!("Bearer {}x", ADMIN_TOKEN);
    let basic = format!("Basic {ADMIN_TOKEN}");
    let short = format!("Bearer {}", &ADMIN_TOKEN[..20]);
    for path in ["/healthz", "/readyz", "/metrics", "/config", "/nope"] {
        refused(
            ops::admin_call(addr, "GET", path, &[], empty()).await,
            &format!("GET {path} without a token"),
        );
        for bad in [&wrong, &basic, &short] {
            refused(
                ops::admin_call(addr, "GET", path, &[("authorization", bad)], empty()).await,
                &format!("GET {path} with {bad:?}"),
            );
        }
    }
    // A refused reload changes nothing: no reload is even attempted.
    refused(
        ops::admin_call(addr, "POST", "/reload", &[], empty()).await,
        "POST /reload without a token",
    );
    assert_eq!(gw.shared().metrics.reload_count(true), 0);
    assert_eq!(gw.shared().metrics.reload_count(false), 0);

    for path in ["/healthz", "/readyz", "/metrics", "/config"] {
        let r = ops::admin_get_with_token(addr, path, ADMIN_TOKEN).await;
        assert_eq!(r.status, 200, "GET {path} with the token: {}", r.text());
    }
    // The scheme is case-insensitive (RFC 6750 / RFC 9110).
    let lower = format!("bearer {ADMIN_TOKEN}");
    let r = ops::admin_call(
        addr,
        "GET",
        "/healthz",
        &[("authorization", &lower)],
        empty(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = ops::admin_call(
        addr,
        "POST",
        "/reload",
        &[("authorization", &auth)],
        empty(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "reloaded");
    // With the token, unknown paths are 404 as usual.
    let r = ops::admin_get_with_token(addr, "/nope", ADMIN_TOKEN).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn get_config_redacts_secret_keys_and_never_shows_a_secret_value() {
    const ADMIN_TOKEN: &str = "admintoken-8e6c4a2f0d1b3e5a7c9f2d4b6e8a0c1f";
    const HS256: &str = "hs256-secret-value-5a5b5c5d5e5f6061626364656667";
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &secret_config(&pki, &up, ADMIN_TOKEN, HS256)).await;
    let addr = gw.admin_addr();

    let r = ops::admin_get_with_token(addr, "/config", ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let text = r.text();
    for secret in [ADMIN_TOKEN, HS256, "admin.token", "hs256.secret"] {
        assert!(
            !text.contains(secret),
            "GET /config shows {secret:?}: {text}"
        );
    }
    let body = r.json();
    assert_eq!(
        body["source"].as_str(),
        Some(gw.config.display().to_string().as_str())
    );
    let config = &body["config"];
    assert_eq!(config["admin"]["token_file"], "<redacted>", "{body}");
    assert_eq!(config["admin"]["bind"], "127.0.0.1:0", "{body}");
    assert_eq!(
        config["token_issuers"][0]["hs256_secret_file"], "<redacted>",
        "{body}"
    );
    assert_eq!(config["token_issuers"][0]["name"], "corp", "{body}");
    assert_eq!(config["routes"][0]["name"], "api", "{body}");
    assert_eq!(config["routes"][0]["upstream"][0], up.url(), "{body}");

    // /metrics and the other endpoints do not carry them either.
    for path in ["/metrics", "/readyz", "/healthz"] {
        let r = ops::admin_get_with_token(addr, path, ADMIN_TOKEN).await;
        for secret in [ADMIN_TOKEN, HS256] {
            assert!(!r.text().contains(secret), "{path} shows {secret:?}");
        }
    }
}
