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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_larger_than_every_flow_control_window_reaches_an_h2_upstream_intact() {
    use support::data::{GeneratedBody, expected_digest};
    let pki = Pki::generate();
    let up = Upstream::h2c_echo("h2c").await;
    let gw = Gateway::start(pki.dir(), &config(&up.url(), "upstream_protocol = \"h2c\"")).await;
    // Past the upstream's windows (hyper's server: 1 MiB) and the gateway's send buffer
    // (1 MiB), sized and chunked, so the body waits for WINDOW_UPDATEs many times.
    let len = 9 * 1024 * 1024 + 7;
    for (seed, sized) in [(0x5eed_0101, true), (0x5eed_0102, false)] {
        let body = if sized {
            GeneratedBody::new(seed, len)
        } else {
            GeneratedBody::without_length(seed, len)
        };
        let req = request("POST", "/api/upload").body(boxed(body)).unwrap();
        let echo = send_one(&pki, gw.addr(), req).await.echo();
        assert_eq!(echo.version, "HTTP/2.0");
        assert_eq!(echo.body_error, None);
        assert_eq!(
            echo.body_len, len,
            "upload length at the upstream (sized: {sized})"
        );
        assert_eq!(
            echo.body_fnv,
            expected_digest(seed, len),
            "upload checksum (sized: {sized})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_max_body_bytes_to_an_h2_upstream_gets_413_not_502() {
    let pki = Pki::generate();
    let up = Upstream::h2c_echo("h2c").await;
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &up.url(),
            "upstream_protocol = \"h2c\"\nmax_body_bytes = 1024",
        ),
    )
    .await;
    let req = request("POST", "/api/up")
        .body(boxed(support::data::UnsizedBody::new(vec![b'x'; 4096])))
        .unwrap();
    send_one(&pki, gw.addr(), req)
        .await
        .assert_denied(413, "payload_too_large");
    // The stream was reset, not the connection: the next request shares it.
    let mut c = connect_h1(&pki, gw.addr()).await;
    assert_eq!(
        c.call(get("/api/after")).await.unwrap().echo().version,
        "HTTP/2.0"
    );
    assert_eq!(up.accepts(), 1);
}

/// An HTTP/2 upstream (h2c) that answers one request per connection, then says GOAWAY and
/// closes it; counts the connections it accepted.
async fn one_request_per_connection() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepts);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                if let Some(Ok((_req, mut respond))) = conn.accept().await {
                    let head = http::Response::builder().status(200).body(()).unwrap();
                    let mut send = respond.send_response(head, false).unwrap();
                    send.send_data(bytes::Bytes::from_static(b"served"), true)
                        .unwrap();
                }
                conn.graceful_shutdown();
                while let Some(Ok(_)) = conn.accept().await {}
            });
        }
    });
    (url, accepts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closes_with_goaway_is_replaced_for_the_next_request() {
    let pki = Pki::generate();
    let (url, accepts) = one_request_per_connection().await;
    let gw = Gateway::start(pki.dir(), &config(&url, "upstream_protocol = \"h2c\"")).await;
    let admin = Admin::new(gw.admin_addr());
    for i in 1..=3 {
        let mut c = connect_h1(&pki, gw.addr()).await;
        let resp = c.call(get(&format!("/api/{i}"))).await.unwrap();
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(&resp.body[..], b"served");
        // Wait until the gateway has seen the connection close, so the next request
        // cannot race the GOAWAY on the way.
        let mut open = None;
        for _ in 0..500 {
            open = admin.metrics().await.value(
                "portcullis_upstream_connections_open",
                &[("upstream", "api"), ("protocol", "h2")],
            );
            if open == Some(0.0) {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            open,
            Some(0.0),
            "the closed connection is still counted open"
        );
    }
    assert_eq!(accepts.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_an_upstream_never_opens_a_window_for_is_reset_at_response_timeout() {
    // An HTTP/2 upstream that reads a body without ever releasing its flow-control window
    // (so after the first 64 KiB nothing more may be sent) and never answers: the rest of the
    // body can never leave the gateway. It reports how each request's body ended.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (ended, mut ends) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(tcp).await.unwrap();
        while let Some(Ok((req, _respond))) = conn.accept().await {
            let ended = ended.clone();
            tokio::spawn(async move {
                let mut body = req.into_body();
                let mut end = None;
                while let Some(data) = body.data().await {
                    if let Err(e) = data {
                        end = e.reason();
                        break;
                    }
                }
                let _ = ended.send(end);
                // `_respond` is held until here: the upstream never answers.
            });
        }
    });
    let pki = Pki::generate();
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &url,
            "upstream_protocol = \"h2c\"\nresponse_timeout = \"200ms\"",
        ),
    )
    .await;
    let req = request("POST", "/api/up")
        .body(full(vec![b'x'; 256 * 1024]))
        .unwrap();
    send_one(&pki, gw.addr(), req)
        .await
        .assert_denied(504, "upstream_timeout");
    // The gateway gives the stream up instead of holding it (and the client's body) until
    // the connection closes.
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), ends.recv())
        .await
        .expect("the stream was never reset");
    assert_eq!(end, Some(Some(h2::Reason::CANCEL)));
}
