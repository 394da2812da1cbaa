//! HTTP/2 to upstreams: chosen by ALPN over TLS (or forced off with `http1`), or `h2c` in
//! clear; concurrent requests share one multiplexed connection; the Host the upstream would
//! have received travels as `:authority`; bad `upstream_protocol` values name their key.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::SystemTime;

use support::*;

fn config(target: &str, keys: &str) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}{}",
        listener("public", ""),
        route("api", "/api", &[target], keys)
    )
}

/// An upstream TLS config that offers HTTP/2 and HTTP/1.1 by ALPN.
fn h2_tls(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let mut cfg = (*pki.upstream_tls("server", None)).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// `n` requests at once, each on its own client connection to the gateway; every one must
/// be answered 200 over HTTP/2 by the upstream.
async fn concurrently(pki: &Pki, gw: &Gateway, n: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let tls = TlsClient::new(pki);
        let addr = gw.addr();
        tasks.push(tokio::spawn(async move {
            let conn = tls.connect(addr, "localhost").await.unwrap();
            let mut c = H1::handshake(conn).await.unwrap();
            let echo = c.call(get(&format!("/api/{i}"))).await.unwrap().echo();
            assert_eq!(echo.version, "HTTP/2.0");
            assert!(echo.uri.ends_with(&format!("/api/{i}")), "{}", echo.uri);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_chooses_http2_and_fifty_concurrent_requests_share_one_connection() {
    let pki = Pki::generate();
    let up = Upstream::tls_echo("h2", h2_tls(&pki)).await;
    let gw = Gateway::start(
        pki.dir(),
        &config(&up.https_url(), "upstream_tls = { ca = \"ca.pem\" }"),
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    let echo = c.call(get("/api/first?q=1")).await.unwrap().echo();
    assert_eq!(echo.version, "HTTP/2.0");
    // The client's Host travels as :authority.
    assert!(
        echo.uri.starts_with("https://localhost") && echo.uri.ends_with("/api/first?q=1"),
        "{}",
        echo.uri
    );
    concurrently(&pki, &gw, 50).await;
    assert_eq!(up.request_count(), 51);
    assert_eq!(up.accepts(), 1, "the requests did not share one connection");
    assert_eq!(up.handshakes(), 1);
    // The operator sees the one connection, and its protocol.
    let m = Admin::new(gw.admin_addr()).metrics().await;
    let open = |protocol| {
        m.value(
            "portcullis_upstream_connections_open",
            &[("upstream", "api"), ("protocol", protocol)],
        )
    };
    assert_eq!(open("h2"), Some(1.0));
    assert_eq!(open("http1"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_shares_one_connection_from_a_cold_start() {
    let pki = Pki::generate();
    let up = Upstream::h2c_echo("h2c").await;
    let gw = Gateway::start(pki.dir(), &config(&up.url(), "upstream_protocol = \"h2c\"")).await;
    concurrently(&pki, &gw, 50).await;
    assert_eq!(up.request_count(), 50);
    assert_eq!(
        up.accepts(),
        1,
        "concurrent first requests opened several connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keeps_an_h2_capable_upstream_on_http1() {
    let pki = Pki::generate();
    let up = Upstream::tls_echo("h2", h2_tls(&pki)).await;
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &up.https_url(),
            "upstream_tls = { ca = \"ca.pem\" }\nupstream_protocol = \"http1\"",
        ),
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    assert_eq!(
        c.call(get("/api")).await.unwrap().echo().version,
        "HTTP/1.1"
    );
    let m = Admin::new(gw.admin_addr()).metrics().await;
    let open = |protocol| {
        m.value(
            "portcullis_upstream_connections_open",
            &[("upstream", "api"), ("protocol", protocol)],
        )
    };
    assert_eq!((open("http1"), open("h2")), (Some(1.0), Some(0.0)));
}

#[test]
fn protocols_that_do_not_fit_the_targets_are_config_errors() {
    let pki = Pki::generate();
    for (target, proto, says) in [
        ("https://127.0.0.1:8443", "h2c", "for http:// targets"),
        ("http://127.0.0.1:8080", "h2", "needs https:// targets"),
        ("http://127.0.0.1:8080", "spdy", "is not one of"),
    ] {
        let toml = config(target, &format!("upstream_protocol = \"{proto}\""));
        let path = write_config(pki.dir(), &toml);
        let err = match portcullis::config::load_str(&path, &toml, SystemTime::now()) {
            Ok(_) => panic!("{proto} on {target} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("routes[0].upstream_protocol") && err.contains(says),
            "{proto}: {err}"
        );
    }
}
