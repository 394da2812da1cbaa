//! Rate limits, in-flight caps and accept-time flood control, end to end: a burst then the
//! rate (time moved with the gateway's clock, not slept), 429 with Retry-After and the
//! RateLimit headers, each key kind separating its callers, 503 for an in-flight cap, a
//! flooding address closed before TLS while another is served, a route quota per address
//! (429 `quota_exhausted`, kept in `[limits] quota_store` across a restart), and config
//! errors that name the key.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use portcullis::metrics::ConnRefusal;
use serde_json::json;
use support::jwt::TestKey;
use support::raw::{assert_closed_without_a_byte, client_hello, send_and_read_until_close};
use support::*;

const RATE_LIMITED: &str = "rate_limited";

fn from(ip: &str) -> http::Request<BoxBody> {
    request("GET", "/api")
        .header("x-forwarded-for", ip)
        .body(empty())
        .unwrap()
}

/// One listener trusting 127.0.0.1 as a proxy, and one route "/api" with `limits`.
fn config(up: &Upstream, limits: &str, route_keys: &str) -> String {
    format!(
        "{}{}",
        listener("public", "trusted_proxies = [\"127.0.0.1\"]"),
        route(
            "api",
            "/api",
            &[&up.url()],
            &format!("limits = [{limits}]\n{route_keys}")
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_passes_at_once_then_the_rate_and_a_refusal_says_when_to_come_back() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &up,
            "{ key = \"client_ip\", rate = \"100/s\", burst = 20 }",
            "",
        ),
    )
    .await;
    // Only the test moves the limits' clock: the counts below are exact.
    gw.shared().clock.freeze_monotonic();
    let mut c = connect_h1(&pki, gw.addr()).await;

    for i in 0..20 {
        let r = c.call(from("203.0.113.1")).await.unwrap();
        assert_eq!(r.status, 200, "request {i} of the burst");
    }
    let r = c.call(from("203.0.113.1")).await.unwrap();
    r.assert_denied(429, RATE_LIMITED);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"client_ip\";q=100;w=1")
    );
    assert_eq!(
        r.header("ratelimit").as_deref(),
        Some("\"client_ip\";r=0;t=1")
    );
    // Another address behind the same proxy has its own key.
    let r = c.call(from("203.0.113.2")).await.unwrap();
    assert_eq!(r.status, 200, "another address is not limited");

    // One second of the gateway's time in 10 ms steps, three tries per step: one per step
    // passes (100/s), the others are refused.
    let shared = gw.shared();
    let mut passed = 0;
    for _ in 0..100 {
        shared.clock.advance(Duration::from_millis(10));
        for _ in 0..3 {
            if c.call(from("203.0.113.1")).await.unwrap().status == 200 {
                passed += 1;
            }
        }
    }
    assert_eq!(passed, 100, "one second at 100/s under constant pressure");

    let m = gw.shared().metrics.render();
    assert!(
        m.contains(
            "portcullis_limited_total{key=\"client_ip\",reason=\"rate_limited\",route=\"api\"}"
        ),
        "the refusals are counted by route and key kind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_kind_separates_its_callers() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;

    // A header: two API keys, and requests without it sharing one key.
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &up,
            "{ key = \"header:x-api-key\", rate = \"1/min\", burst = 1 }",
            "",
        ),
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    let with_key = |k: &str| {
        request("GET", "/api")
            .header("x-api-key", k)
            .body(empty())
            .unwrap()
    };
    assert_eq!(c.call(with_key("k1")).await.unwrap().status, 200);
    c.call(with_key("k1"))
        .await
        .unwrap()
        .assert_denied(429, RATE_LIMITED);
    assert_eq!(c.call(with_key("k2")).await.unwrap().status, 200);
    drop(gw);

    // The route as a whole: every caller shares it.
    let gw = Gateway::start(
        pki.dir(),
        &config(&up, "{ key = \"route\", rate = \"2/min\", burst = 2 }", ""),
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    assert_eq!(c.call(from("203.0.113.1")).await.unwrap().status, 200);
    assert_eq!(c.call(from("203.0.113.2")).await.unwrap().status, 200);
    c.call(from("203.0.113.3"))
        .await
        .unwrap()
        .assert_denied(429, RATE_LIMITED);
    drop(gw);

    // Token subjects: alice's limit is not bob's.
    let key = TestKey::generate("k1", Algorithm::ES256);
    pki.write("issuer.pub.pem", &key.public_pem);
    let issuers = "[[token_issuers]]\nname = \"corp\"\nissuer = \"https://id.test/\"\n\
                   audiences = [\"api\"]\n\
                   keys = [{ pem = \"issuer.pub.pem\", algorithms = [\"ES256\"], kid = \"k1\" }]\n\n";
    let gw = Gateway::start(
        pki.dir(),
        &format!(
            "{issuers}{}",
            config(
                &up,
                "{ key = \"token_sub\", rate = \"1/min\", burst = 1 }",
                "auth = \"bearer\""
            )
        ),
    )
    .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let bearer = |sub: &str| {
        let token = key.token(&json!({
            "iss": "https://id.test/", "aud": "api", "sub": sub,
            "iat": now - 10, "exp": now + 600,
        }));
        request("GET", "/api")
            .header("authorization", format!("Bearer {token}"))
            .body(empty())
            .unwrap()
    };
    let mut c = connect_h1(&pki, gw.addr()).await;
    assert_eq!(c.call(bearer("alice")).await.unwrap().status, 200);
    let r = c.call(bearer("alice")).await.unwrap();
    r.assert_denied(429, RATE_LIMITED);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"token_sub\";q=1;w=60")
    );
    assert_eq!(c.call(bearer("bob")).await.unwrap().status, 200);
    // A forged token never reaches the token-keyed limit: it is refused by the token stage.
    c.call(
        request("GET", "/api")
            .header("authorization", "Bearer a.b.c")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap()
    .assert_denied(401, "token_invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_cap_refuses_at_once_and_frees_its_slot_when_the_response_is_done() {
    let pki = Pki::generate();
    let (up, mut gate) = Upstream::gated().await;
    let gw = Gateway::start(
        pki.dir(),
        &config(&up, "{ key = \"route\", max_in_flight = 1 }", ""),
    )
    .await;

    let addr = gw.addr();
    let client = TlsClient::new(&pki);
    let first = tokio::spawn(async move {
        let tls = client.connect(addr, "localhost").await.unwrap();
        H1::handshake(tls)
            .await
            .unwrap()
            .call(get("/api"))
            .await
            .unwrap()
    });
    gate.arrived().await;
    let r = send_one(&pki, gw.addr(), get("/api")).await;
    r.assert_denied(503, "too_many_in_flight");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));

    gate.open();
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(
        send_one(&pki, gw.addr(), get("/api")).await.status,
        200,
        "the slot came back with the first response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_address_is_closed_before_tls_while_another_is_served() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(
        pki.dir(),
        &format!(
            "{}{}",
            listener(
                "public",
                "connection_rate = \"2/min\"\nconnection_burst = 2"
            ),
            route("api", "/", &[&up.url()], "")
        ),
    )
    .await;
    let client = TlsClient::new(&pki);
    for i in 0..2 {
        let tls = client.connect(gw.addr(), "localhost").await;
        assert!(tls.is_ok(), "connection {i} within the burst");
    }
    assert_closed_without_a_byte(
        "a third connection from 127.0.0.1",
        send_and_read_until_close(
            gw.addr(),
            &client_hello(0x0301, 0x0303),
            Duration::from_secs(10),
        )
        .await,
    );
    assert_eq!(gw.refused_count(ConnRefusal::Flood), 1);
    assert_eq!(gw.refused_count(ConnRefusal::Handshake), 0);

    // 127.0.0.2 is another address: served.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let tls = client
        .connect_from(other, gw.addr(), "localhost")
        .await
        .expect("another address is served");
    let mut h1 = H1::handshake(tls).await.unwrap();
    assert_eq!(h1.call(get("/x")).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_holds_at_most_its_connections_and_gets_one_back_when_one_closes() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(
        pki.dir(),
        &format!(
            "{}{}",
            listener("public", "max_connections_per_ip = 1"),
            route("api", "/", &[&up.url()], "")
        ),
    )
    .await;
    let mut held = connect_h1(&pki, gw.addr()).await;
    assert_eq!(held.call(get("/x")).await.unwrap().status, 200);
    assert_closed_without_a_byte(
        "a second connection from 127.0.0.1",
        send_and_read_until_close(
            gw.addr(),
            &client_hello(0x0301, 0x0303),
            Duration::from_secs(10),
        )
        .await,
    );
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    assert!(
        TlsClient::new(&pki)
            .connect_from(other, gw.addr(), "localhost")
            .await
            .is_ok(),
        "another address has its own cap"
    );

    drop(held);
    // The gateway notices the close and gives the slot back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(tls) = TlsClient::new(&pki).connect(gw.addr(), "localhost").await
            && let Ok(mut h1) = H1::handshake(tls).await
            && let Ok(r) = h1.call(get("/x")).await
        {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot did not come back after the connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn every_bad_limit_is_reported_with_its_key() {
    let pki = Pki::generate();
    let toml = format!(
        "[limits]\nmax_keys = 10\ndefault = [{{ key = \"nobody\", rate = \"5/s\" }}]\n\n{}{}",
        listener(
            "public",
            "connection_rate = \"fast\"\nmax_connections_per_ip = 0"
        ),
        route(
            "api",
            "/",
            &["http://127.0.0.1:9"],
            "limits = [\n  { key = \"client_ip\", rate = \"10/week\" },\n  \
             { key = \"header:bad header\", rate = \"1/s\" },\n  \
             { key = \"route\", burst = 5 },\n  { key = \"route\", max_in_flight = 0 },\n  \
             { rate = \"1/s\" },\n]"
        )
    );
    let path = write_config(pki.dir(), &toml);
    let err = match portcullis::config::load_str(&path, &toml, SystemTime::now()) {
        Ok(_) => panic!("a config with bad limits loaded"),
        Err(e) => e.to_string(),
    };
    for expected in [
        "limits.max_keys",
        "limits.default[0].key",
        "listeners[0].connection_rate",
        "listeners[0].max_connections_per_ip",
        "routes[0].limits[0].rate",
        "routes[0].limits[1].key",
        "routes[0].limits[2].burst",
        "routes[0].limits[3].max_in_flight",
        "routes[0].limits[4].key",
    ] {
        assert!(err.contains(expected), "no error for {expected} in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_quota_counts_each_address_apart_and_keeps_its_counts_across_a_restart() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let toml = format!(
        "[limits]\nquota_store = \"quotas.redb\"\n\n{}",
        config(&up, "{ key = \"client_ip\", quota = \"2/hour\" }", "")
    );
    // Half past the next hour, so the test does not straddle the window's turn.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let to_half_past = Duration::from_secs(3600 + 1800 - now % 3600);
    let gw = Gateway::start(pki.dir(), &toml).await;
    gw.shared().clock.advance(to_half_past);
    let mut c = connect_h1(&pki, gw.addr()).await;
    for _ in 0..2 {
        c.call(from("10.0.0.1")).await.unwrap().echo();
    }
    let r = c.call(from("10.0.0.1")).await.unwrap();
    r.assert_denied(429, "quota_exhausted");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1700..=1800).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"client_ip_quota\";q=2;w=3600")
    );
    // Another address has its own count.
    c.call(from("10.0.0.2")).await.unwrap().echo();
    drop(c);

    let handle = gw.shutdown_handle();
    let running = gw.into_running();
    handle.trigger();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the gateway did not stop within 30 s");
    let gw = Gateway::start(pki.dir(), &toml).await;
    gw.shared().clock.advance(to_half_past);
    let mut c = connect_h1(&pki, gw.addr()).await;
    c.call(from("10.0.0.1"))
        .await
        .unwrap()
        .assert_denied(429, "quota_exhausted");
    c.call(from("10.0.0.2")).await.unwrap().echo();
    c.call(from("10.0.0.2"))
        .await
        .unwrap()
        .assert_denied(429, "quota_exhausted");
    // The hour turns: both have their quota back.
    gw.shared().clock.advance(Duration::from_secs(1800));
    c.call(from("10.0.0.1")).await.unwrap().echo();
    c.call(from("10.0.0.2")).await.unwrap().echo();
}

#[test]
fn quotas_need_a_store_and_a_valid_window() {
    let pki = Pki::generate();
    let load = |toml: String| {
        let path = write_config(pki.dir(), &toml);
        match portcullis::config::load_str(&path, &toml, SystemTime::now()) {
            Ok(_) => panic!("a config with bad quotas loaded:\n{toml}"),
            Err(e) => e.to_string(),
        }
    };
    let no_store = load(format!(
        "{}{}",
        listener("public", ""),
        route(
            "api",
            "/",
            &["http://127.0.0.1:9"],
            "limits = [{ key = \"cert\", quota = \"100/day\" }]"
        )
    ));
    assert!(
        no_store.contains("routes[0].limits[0].quota") && no_store.contains("quota_store"),
        "{no_store}"
    );
    let bad = load(format!(
        "[limits]\nquota_store = \"missing-folder/q.redb\"\n\n{}{}",
        listener("public", ""),
        route(
            "api",
            "/",
            &["http://127.0.0.1:9"],
            "limits = [{ key = \"cert\", quota = \"100/week\" }, { key = \"route\", quota = \"0/day\" }]"
        )
    ));
    for expected in [
        "limits.quota_store",
        "routes[0].limits[0].quota",
        "routes[0].limits[1].quota",
    ] {
        assert!(bad.contains(expected), "no error for {expected} in:\n{bad}");
    }
    portcullis::license::keys::keygen(pki.dir(), "k1").unwrap();
    let same = load(format!(
        "[licenses]\ntrusted_keys = [\"k1.pub\"]\nstore = \"l.redb\"\n\n[limits]\nquota_store = \"l.redb\"\n\n{}{}",
        listener("public", ""),
        route("api", "/", &["http://127.0.0.1:9"], "")
    ));
    assert!(
        same.contains("limits.quota_store") && same.contains("licenses.store"),
        "{same}"
    );
}
