//! Proves request forwarding end to end: HTTP/1.1 and HTTP/2 on the front, HTTP/1.1 to the
//! upstream; hop-by-hop headers removed both ways; X-Forwarded-* and X-Request-Id set; routing
//! by longest prefix and host; round-robin with back-off; pooled upstream connections; and the
//! denials (404, 405, 400 invalid_path, 413, 502, 504) in the JSON format without leaking the
//! upstream address.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use support::data::UnsizedBody;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_is_forwarded_to_the_upstream_and_its_response_returned() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let resp = send_one(&pki, gw.addr(), get("/hello/world?x=1&y=two")).await;
    let echo = resp.echo();
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.uri, "/hello/world?x=1&y=two", "path and query kept");
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(resp.header("x-upstream").as_deref(), Some("a"));
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(up.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_reaches_the_upstream_byte_for_byte() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let body = support::data::Rng::new(42).bytes(100_000);
    let mut fnv = support::data::Fnv::new();
    fnv.update(&body);
    let req = request("POST", "/submit")
        .header("content-type", "application/octet-stream")
        .body(full(body))
        .unwrap();
    let echo = send_one(&pki, gw.addr(), req).await.echo();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.body_error, None);
    assert_eq!(echo.body_len, 100_000);
    assert_eq!(echo.body_fnv, fnv.finish(), "body changed on the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_is_served_and_forwarded_to_the_upstream_as_http11() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let tls = TlsClient::new(&pki)
        .alpn(&["h2", "http/1.1"])
        .connect(gw.addr(), "localhost")
        .await
        .expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN did not select h2"
    );
    let mut h2 = H2::handshake(tls).await.unwrap();

    let resp = h2
        .call(
            h2_request("GET", "localhost", "/over/h2?q=1")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version, Version::HTTP_2);
    let echo = resp.echo();
    assert_eq!(
        echo.version, "HTTP/1.1",
        "upstream must be spoken to in HTTP/1.1"
    );
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.uri, "/over/h2?q=1");
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("x-forwarded-host"), Some("localhost"));
    assert_eq!(
        resp.header("x-request-id").as_deref(),
        echo.header("x-request-id"),
        "request id over HTTP/2"
    );

    // A body over HTTP/2, on the same connection.
    let resp = h2
        .call(
            h2_request("POST", "localhost", "/upload")
                .body(full(vec![7u8; 30_000]))
                .unwrap(),
        )
        .await
        .unwrap();
    let echo = resp.echo();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.body_len, 30_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_removed_before_the_upstream() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let req = request("GET", "/hop")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "named by Connection")
        .header("keep-alive", "timeout=5")
        .header("te", "gzip, trailers")
        .header("trailer", "x-foo")
        .header("upgrade", "websocket")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("proxy-connection", "keep-alive")
        .header("x-kept", "end-to-end")
        .body(empty())
        .unwrap();
    let echo = send_one(&pki, gw.addr(), req).await.echo();

    for h in [
        "x-secret",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !echo.has_header(h),
            "hop-by-hop request header {h} reached the upstream: {:?}",
            echo.header_all(h)
        );
    }
    for v in echo.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-secret"),
            "the client's Connection header reached the upstream: {v}"
        );
    }
    assert_eq!(echo.header("x-kept"), Some("end-to-end"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_removed_before_the_client() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let req = request("GET", "/hop")
        .header("x-test-hop-response", "1")
        .body(empty())
        .unwrap();
    let resp = send_one(&pki, gw.addr(), req).await;
    assert_eq!(resp.status, StatusCode::OK, "body: {}", resp.text());
    for h in [
        "x-secret-resp",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(
            resp.headers.get(h).is_none(),
            "hop-by-hop response header {h} reached the client: {:?}",
            resp.headers.get(h)
        );
    }
    for v in resp.headers.get_all("connection") {
        assert!(
            !v.to_str().unwrap_or("").contains("x-secret-resp"),
            "the upstream's Connection header reached the client: {v:?}"
        );
    }
    assert_eq!(resp.header("x-kept-resp").as_deref(), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_client_are_replaced_not_appended() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let req = http::Request::builder()
        .method("GET")
        .uri("/fwd")
        .header("host", "localhost:8443")
        .header("x-forwarded-for", "203.0.113.7")
        .header("forwarded", "for=203.0.113.7")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.example")
        .body(empty())
        .unwrap();
    let echo = send_one(&pki, gw.addr(), req).await.echo();
    assert_eq!(
        echo.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "a spoofed X-Forwarded-For from an untrusted peer must not reach the upstream"
    );
    assert_eq!(echo.header("forwarded"), None);
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("x-forwarded-host"), Some("localhost:8443"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_a_trusted_proxy_are_appended_to() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener("public", "trusted_proxies = [\"127.0.0.1\"]"),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let req = http::Request::builder()
        .method("GET")
        .uri("/fwd")
        .header("host", "localhost")
        .header("x-forwarded-for", "203.0.113.7")
        .body(empty())
        .unwrap();
    let echo = send_one(&pki, gw.addr(), req).await.echo();
    assert_eq!(
        echo.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_created_when_the_client_sent_none() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let echo = send_one(&pki, gw.addr(), get("/fwd")).await.echo();
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("x-forwarded-host"), Some("localhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_the_request_id_that_the_client_gets_back() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let mut client = connect_h1(&pki, gw.addr()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let resp = client.call(get("/id")).await.unwrap();
        let returned = resp
            .header("x-request-id")
            .expect("forwarded response without x-request-id");
        let echo = resp.echo();
        assert_eq!(echo.header("x-request-id"), Some(returned.as_str()));
        assert!(!returned.is_empty());
        ids.push(returned);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "request ids must differ per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_supplied_request_id_is_replaced() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let req = request("GET", "/id")
        .header("x-request-id", "client-chosen-id")
        .body(empty())
        .unwrap();
    let resp = send_one(&pki, gw.addr(), req).await;
    let returned = resp.header("x-request-id").expect("x-request-id");
    let echo = resp.echo();
    assert_ne!(returned, "client-chosen-id");
    assert_eq!(
        echo.header_all("x-request-id"),
        vec![returned.as_str()],
        "the upstream must see exactly the gateway's id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_without_a_route_gets_404_no_route() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener("public", ""),
        route("api", "/api", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    for path in ["/other", "/", "/apix", "/ap"] {
        send_one(&pki, gw.addr(), get(path))
            .await
            .assert_denied(404, "no_route");
    }
    assert_eq!(up.request_count(), 0, "a 404 must not reach the upstream");
    send_one(&pki, gw.addr(), get("/api/ok")).await.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_not_in_the_routes_methods_gets_405() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener("public", ""),
        route("ro", "/", &[&up.url()], "methods = [\"GET\", \"HEAD\"]")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    for method in ["DELETE", "POST", "PUT"] {
        let req = request(method, "/thing").body(empty()).unwrap();
        send_one(&pki, gw.addr(), req)
            .await
            .assert_denied(405, "method_not_allowed");
    }
    assert_eq!(up.request_count(), 0, "a 405 must not reach the upstream");
    assert_eq!(
        send_one(&pki, gw.addr(), get("/thing")).await.echo().method,
        "GET"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_upstream_port_gets_502_without_leaking_the_address() {
    let pki = Pki::generate();
    let dead = closed_port_url();
    let gw = Gateway::start(pki.dir(), &simple(&dead)).await;

    let resp = send_one(&pki, gw.addr(), get("/x")).await;
    resp.assert_denied(502, "upstream_unavailable");
    let port = dead.rsplit(':').next().unwrap();
    assert!(
        !resp.text().contains(&format!(":{port}")),
        "502 body names the upstream port: {}",
        resp.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_slower_than_response_timeout_gets_504() {
    let pki = Pki::generate();
    let up = Upstream::sleeper(Duration::from_secs(10)).await;
    let toml = format!(
        "{}{}",
        listener("public", ""),
        route("slow", "/", &[&up.url()], "response_timeout = \"200ms\"")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let started = Instant::now();
    let resp = send_one(&pki, gw.addr(), get("/slow")).await;
    let took = started.elapsed();
    resp.assert_denied(504, "upstream_timeout");
    assert!(
        !resp.text().contains(&up.addr.port().to_string()),
        "504 body names the upstream port: {}",
        resp.text()
    );
    assert!(
        took < Duration::from_secs(5),
        "504 took {took:?}; response_timeout is 200ms"
    );
    assert_eq!(up.request_count(), 1, "the request did reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_matching_prefix_wins_on_segment_boundaries() {
    let pki = Pki::generate();
    let root = Upstream::echo("root").await;
    let api = Upstream::echo("api").await;
    let v2 = Upstream::echo("v2").await;
    let toml = format!(
        "{}{}{}{}",
        listener("public", ""),
        route("root", "/", &[&root.url()], ""),
        route("v2", "/api/v2", &[&v2.url()], ""),
        route("api", "/api", &[&api.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let mut client = connect_h1(&pki, gw.addr()).await;
    for (path, want) in [
        ("/api/v2/users", "v2"),
        ("/api/v2", "v2"),
        ("/api/v2x", "api"),
        ("/api/v1/users", "api"),
        ("/api", "api"),
        ("/api?q=1", "api"),
        ("/apix", "root"),
        ("/ap", "root"),
        ("/", "root"),
        ("/other/api/v2", "root"),
    ] {
        let echo = client.call(get(path)).await.unwrap().echo();
        assert_eq!(echo.upstream, want, "{path} went to the wrong route");
        assert_eq!(echo.uri, path, "the path is forwarded unchanged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_selected_by_host() {
    let pki = Pki::generate();
    let api = Upstream::echo("api").await;
    let admin = Upstream::echo("admin").await;
    // Clients dial the gateway by address (no SNI) and name the host in the request.
    let toml = format!(
        "{}{}{}",
        listener("public", "hosts = [\"*.example.com\"]"),
        route("api", "/", &[&api.url()], "host = \"api.example.com\""),
        route(
            "admin",
            "/",
            &[&admin.url()],
            "host = \"admin.example.com\""
        ),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let with_host = |host: &str| {
        http::Request::builder()
            .uri("/h")
            .header("host", host)
            .body(empty())
            .unwrap()
    };
    let mut client = connect_h1_by_address(&pki, gw.addr()).await;
    for (host, want) in [
        ("api.example.com", "api"),
        ("admin.example.com", "admin"),
        ("api.example.com:8443", "api"),
        ("ADMIN.example.com", "admin"),
    ] {
        let echo = client.call(with_host(host)).await.unwrap().echo();
        assert_eq!(echo.upstream, want, "Host {host} went to the wrong route");
    }
    client
        .call(with_host("other.example.com"))
        .await
        .unwrap()
        .assert_denied(404, "no_route");

    // HTTP/2: the host is the :authority.
    let mut h2 = connect_h2_by_address(&pki, gw.addr()).await;
    let echo = h2
        .call(
            h2_request("GET", "admin.example.com", "/h")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap()
        .echo();
    assert_eq!(echo.upstream, "admin", ":authority admin.example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_alternate_round_robin_between_two_upstreams() {
    let pki = Pki::generate();
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let gw = Gateway::start(
        pki.dir(),
        &format!(
            "{}{}",
            listener("public", ""),
            route("rr", "/", &[&a.url(), &b.url()], "")
        ),
    )
    .await;

    let mut client = connect_h1(&pki, gw.addr()).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(client.call(get("/rr")).await.unwrap().echo().upstream);
    }
    assert_eq!(a.request_count(), 5, "sequence {seen:?}");
    assert_eq!(b.request_count(), 5, "sequence {seen:?}");
    for w in seen.windows(2) {
        assert_ne!(w[0], w[1], "not round-robin: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_target_is_skipped_after_its_first_failure() {
    let pki = Pki::generate();
    let dead = closed_port_url();
    let live = Upstream::echo("live").await;
    let gw = Gateway::start(
        pki.dir(),
        &format!(
            "{}{}",
            listener("public", ""),
            route("rr", "/", &[&dead, &live.url()], "")
        ),
    )
    .await;

    let mut statuses = Vec::new();
    for _ in 0..20 {
        let resp = send_one(&pki, gw.addr(), get("/x")).await;
        if resp.status != StatusCode::OK {
            resp.assert_denied(502, "upstream_unavailable");
        }
        statuses.push(resp.status.as_u16());
    }
    let failures: Vec<usize> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s != 200)
        .map(|(i, _)| i)
        .collect();
    assert!(
        failures.len() <= 1 && failures.iter().all(|&i| i < 2),
        "requests failed after the dead target's first refusal: statuses {statuses:?}"
    );
    assert_eq!(live.request_count(), 20 - failures.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sequential_requests_reuse_one_upstream_connection() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let mut client = connect_h1(&pki, gw.addr()).await;
    for i in 0..100 {
        let resp = client.call(get(&format!("/seq/{i}"))).await.unwrap();
        assert_eq!(resp.echo().uri, format!("/seq/{i}"));
    }
    assert_eq!(up.request_count(), 100);
    assert_eq!(
        up.accepts(),
        1,
        "100 sequential requests opened {} upstream connections",
        up.accepts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_within_max_body_bytes_is_forwarded() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener("public", ""),
        route("small", "/", &[&up.url()], "max_body_bytes = 1024")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let req = request("POST", "/up").body(full(vec![b'x'; 1024])).unwrap();
    assert_eq!(send_one(&pki, gw.addr(), req).await.echo().body_len, 1024);
    let req = request("POST", "/up")
        .body(boxed(UnsizedBody::new(vec![b'y'; 1000])))
        .unwrap();
    assert_eq!(send_one(&pki, gw.addr(), req).await.echo().body_len, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_body_bytes_with_content_length_gets_413() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener("public", ""),
        route("small", "/", &[&up.url()], "max_body_bytes = 1024")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let req = request("POST", "/up").body(full(vec![b'x'; 1025])).unwrap();
    send_one(&pki, gw.addr(), req)
        .await
        .assert_denied(413, "payload_too_large");
    assert_eq!(
        up.request_count(),
        0,
        "a declared oversize body must be refused before the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_max_body_bytes_gets_413() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener("public", ""),
        route("small", "/", &[&up.url()], "max_body_bytes = 1024")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let req = request("POST", "/up")
        .body(boxed(UnsizedBody::new(vec![b'x'; 4096])))
        .unwrap();
    send_one(&pki, gw.addr(), req)
        .await
        .assert_denied(413, "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_plain_or_encoded_get_400_invalid_path() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    for path in [
        "/a/../b",
        "/..",
        "/a/..",
        "/a/%2e%2e/b",
        "/a/%2E%2E/b",
        "/a/.%2e/b",
        "/a/%2e./b",
        "/api/%2e%2e/%2e%2e/etc/passwd",
        // single dots too: an upstream that normalises them sees another path
        "/a/./b",
        "/.",
        "/a/%2e/b",
        "/a/%2E",
    ] {
        let resp = send_one(&pki, gw.addr(), get(path)).await;
        assert_eq!(
            resp.status.as_u16(),
            400,
            "{path} got {} {}",
            resp.status,
            resp.text()
        );
        resp.assert_denied(400, "invalid_path");
    }
    assert_eq!(
        up.request_count(),
        0,
        "a dot-segment path reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_limited_to_one_listener_is_not_served_on_another() {
    let pki = Pki::generate();
    let public = Upstream::echo("public").await;
    let admin = Upstream::echo("admin").await;
    let toml = format!(
        "{}{}{}{}",
        listener("public", ""),
        listener("admin", ""),
        route(
            "admin",
            "/admin",
            &[&admin.url()],
            "listeners = [\"admin\"]"
        ),
        route("all", "/", &[&public.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    assert_ne!(gw.addr_of("public"), gw.addr_of("admin"));

    let on_admin = send_one(&pki, gw.addr_of("admin"), get("/admin/x")).await;
    assert_eq!(on_admin.echo().upstream, "admin");
    let on_public = send_one(&pki, gw.addr_of("public"), get("/admin/x")).await;
    assert_eq!(
        on_public.echo().upstream,
        "public",
        "the admin route leaked onto the public listener"
    );
}

/// A minimal HTTP/1.1 upstream over raw TCP: answers each connection's first request with
/// a keep-alive 200 (`conn-<n>`, n counting connections from 1), then closes the socket,
/// as a server whose keep-alive timeout is shorter than the gateway's does.
async fn closes_after_each_response() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepts = Arc::new(AtomicUsize::new(0));
    let counter = accepts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                let body = format!("conn-{n}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                // Closed without "Connection: close": the gateway pooled it as reusable.
            });
        }
    });
    (url, accepts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_upstream_closed_is_not_reused_and_the_request_succeeds() {
    let pki = Pki::generate();
    let (url, accepts) = closes_after_each_response().await;
    let gw = Gateway::start(pki.dir(), &simple(&url)).await;

    let mut client = connect_h1(&pki, gw.addr()).await;
    for i in 1..=3 {
        let resp = client.call(get("/again")).await.unwrap();
        assert_eq!(resp.status, StatusCode::OK, "request {i}");
        assert_eq!(
            resp.text(),
            format!("conn-{i}"),
            "request {i} on a new connection"
        );
        // Lets the upstream's FIN reach the gateway before the next request; whether the
        // pool sees it at once or the request finds it closed, the client must not notice.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_client_abandoned_mid_body_does_not_put_its_connection_back() {
    let pki = Pki::generate();
    let up = Upstream::download(7, 8 << 20).await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    // Read the head of an 8 MiB response, then hang up.
    let mut client = connect_h1(&pki, gw.addr()).await;
    let resp = client.send(get("/big")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    drop(client);

    // The next exchange must not land on the connection still carrying that body.
    let mut client = connect_h1(&pki, gw.addr()).await;
    let resp = client.send(get("/big")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("the whole second body")
        .to_bytes();
    assert_eq!(body.len(), 8 << 20);
    assert_eq!(up.accepts(), 2, "the abandoned connection was reused");
}
