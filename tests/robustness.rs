//! Proves the gateway survives hostile input and keeps serving: random bytes to the TLS port,
//! garbage HTTP after a good handshake, a truncated or stalled ClientHello, slow request heads,
//! and heads over max_header_bytes / max_headers. Each bad client gets an alert, a 4xx or a
//! closed connection (never a ServerHello or a forwarded request), and the next good request
//! still gets 200.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::data::Rng;
use support::raw::{
    CONTENT_HANDSHAKE, Outcome, client_hello, has_server_hello, raw_tls, read_to_end_within,
};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn setup(server_keys: &str) -> (Pki, Upstream, Gateway) {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!("{}{}", server(server_keys), simple(&up.url()));
    let gw = Gateway::start(pki.dir(), &toml).await;
    (pki, up, gw)
}

async fn assert_still_serving(pki: &Pki, gw: &Gateway, after: &str) {
    let resp = connect_h1(pki, gw.addr()).await.call(get("/alive")).await;
    match resp {
        Ok(r) => assert_eq!(r.echo().uri, "/alive", "after {after}"),
        Err(e) => panic!("the gateway stopped serving after {after}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_to_the_tls_port_never_get_a_server_hello_and_the_gateway_keeps_serving() {
    let (pki, up, gw) = setup("").await;
    let mut rng = Rng::new(0xbad_c0de);
    let mut sizes = vec![
        0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 64, 100, 255, 256, 511, 512, 1000, 1500, 4096, 5000,
        16384, 16389, 20000, 65536, 100_000,
    ];
    for _ in 0..20 {
        sizes.push(rng.below(3000) as usize);
    }
    for (i, &size) in sizes.iter().enumerate() {
        let mut bytes = rng.bytes(size);
        // Every other attempt looks like a handshake record, to get past the record layer
        // into the ClientHello parser.
        if i % 2 == 1 && size >= 6 {
            let len = (size - 5).min(0x4000) as u16;
            bytes[0] = CONTENT_HANDSHAKE;
            bytes[1] = 3;
            bytes[2] = 1;
            bytes[3..5].copy_from_slice(&len.to_be_bytes());
            bytes[5] = 1; // client_hello
        }
        let mut tcp = TcpStream::connect(gw.addr()).await.expect("connect");
        let _ = tcp.write_all(&bytes).await;
        let _ = tcp.shutdown().await;
        let mut reply = Vec::new();
        let closed = read_to_end_within(&mut tcp, &mut reply, Duration::from_secs(10)).await;
        assert!(
            !has_server_hello(&reply),
            "{size} random bytes (attempt {i}) got a ServerHello"
        );
        assert!(
            closed,
            "{size} random bytes (attempt {i}): connection still open 10 s after EOF"
        );
        if i % 10 == 9 {
            assert_still_serving(&pki, &gw, &format!("{} random-byte clients", i + 1)).await;
        }
    }
    assert_still_serving(&pki, &gw, "random bytes").await;
    assert_eq!(up.request_count(), 1 + sizes.len() / 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_http_after_a_handshake_gets_4xx_or_close_and_the_gateway_keeps_serving() {
    let (pki, up, gw) = setup("").await;
    let garbage: &[&[u8]] = &[
        b"\x00\x01\x02\x03\xff\xfe\xfd garbage \x7f\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n: no-name\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1x\r\n\r\n",
        b"\r\n\r\n\r\n\r\n",
    ];
    for g in garbage {
        let what = String::from_utf8_lossy(g).into_owned();
        let mut conn = raw_tls(&pki, gw.addr()).await;
        let _ = conn.send(g).await;
        let _ = conn.stream.shutdown().await;
        match conn.response(Duration::from_secs(10)).await {
            Outcome::Response(r) => assert!(
                (400..500).contains(&r.status),
                "{what:?} got {}: {}{}",
                r.status,
                r.head,
                r.text()
            ),
            Outcome::Closed(_) => {}
            Outcome::TimedOut(b) => panic!(
                "{what:?}: no answer and no close within 10 s (got {:?})",
                String::from_utf8_lossy(&b)
            ),
        }
    }
    let seen: Vec<String> = up.requests().iter().map(|r| r.uri.clone()).collect();
    assert!(seen.is_empty(), "garbage reached the upstream: {seen:?}");
    assert_still_serving(&pki, &gw, "garbage HTTP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_client_hello_does_not_block_other_clients() {
    let (pki, _up, gw) = setup("").await;
    let hello = client_hello(0x0301, 0x0303);
    let half = &hello[..hello.len() / 2];

    let mut stalled = TcpStream::connect(gw.addr()).await.unwrap();
    stalled.write_all(half).await.unwrap();
    // While that handshake hangs, others are served.
    assert_still_serving(&pki, &gw, "a stalled truncated ClientHello").await;

    let _ = stalled.shutdown().await;
    let mut reply = Vec::new();
    let closed = read_to_end_within(&mut stalled, &mut reply, Duration::from_secs(10)).await;
    assert!(
        !has_server_hello(&reply),
        "a truncated ClientHello got a ServerHello"
    );
    assert!(closed, "the truncated handshake was not closed after EOF");
    assert_still_serving(&pki, &gw, "a truncated ClientHello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_finishes_is_cut_off_after_handshake_timeout() {
    let (pki, _up, gw) = setup("handshake_timeout = \"500ms\"").await;
    let hello = client_hello(0x0301, 0x0303);

    for (what, bytes) in [
        ("silent client", &[][..]),
        ("truncated ClientHello", &hello[..hello.len() / 2]),
    ] {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let mut reply = Vec::new();
        let closed = read_to_end_within(&mut tcp, &mut reply, Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert!(
            closed,
            "{what}: still connected 10 s later (handshake_timeout 500ms)"
        );
        assert!(
            took < Duration::from_secs(5),
            "{what}: closed only after {took:?} (handshake_timeout 500ms)"
        );
        assert!(!has_server_hello(&reply), "{what}: got a ServerHello");
    }
    assert_still_serving(&pki, &gw, "timed-out handshakes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_finishes_is_cut_off_after_header_read_timeout() {
    let (pki, up, gw) = setup("header_read_timeout = \"500ms\"").await;

    let started = Instant::now();
    let mut conn = raw_tls(&pki, gw.addr()).await;
    conn.send(b"GET /slowloris HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n")
        .await
        .unwrap();
    let outcome = conn.response(Duration::from_secs(10)).await;
    let took = started.elapsed();
    match outcome {
        Outcome::Response(r) => assert_eq!(r.status, 408, "{}{}", r.head, r.text()),
        Outcome::Closed(_) => {}
        Outcome::TimedOut(_) => panic!("an unfinished head was kept open for 10 s"),
    }
    assert!(
        took < Duration::from_secs(5),
        "cut off only after {took:?} (header_read_timeout 500ms)"
    );
    assert_eq!(up.request_count(), 0);
    assert_still_serving(&pki, &gw, "a slowloris head").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_over_max_header_bytes_gets_431_or_close() {
    let (pki, up, gw) = setup("max_header_bytes = 8192").await;

    // Control: a 4000-byte header fits.
    let big = "a".repeat(4000);
    let req = request("GET", "/fits")
        .header("x-big", &big)
        .body(empty())
        .unwrap();
    let echo = send_one(&pki, gw.addr(), req).await.echo();
    assert_eq!(echo.header("x-big").map(str::len), Some(4000));

    let huge = "b".repeat(20_000);
    let mut conn = raw_tls(&pki, gw.addr()).await;
    let _ = conn
        .send(format!("GET /huge HTTP/1.1\r\nHost: localhost\r\nX-Huge: {huge}\r\n\r\n").as_bytes())
        .await;
    match conn.response(Duration::from_secs(10)).await {
        Outcome::Response(r) => assert_eq!(r.status, 431, "{}{}", r.head, r.text()),
        Outcome::Closed(_) => {}
        Outcome::TimedOut(_) => panic!("no answer and no close for a 20 kB header"),
    }
    let seen: Vec<String> = up.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(seen, ["/fits"], "the oversized head reached the upstream");
    assert_still_serving(&pki, &gw, "an oversized header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_headers_than_max_headers_get_431_or_close() {
    let (pki, up, gw) = setup("max_headers = 20").await;

    let mut ok = request("GET", "/fits");
    for i in 0..10 {
        ok = ok.header(format!("x-h{i}"), "v");
    }
    send_one(&pki, gw.addr(), ok.body(empty()).unwrap())
        .await
        .echo();

    let mut head = String::from("GET /many HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..60 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = raw_tls(&pki, gw.addr()).await;
    let _ = conn.send(head.as_bytes()).await;
    match conn.response(Duration::from_secs(10)).await {
        Outcome::Response(r) => assert_eq!(r.status, 431, "{}{}", r.head, r.text()),
        Outcome::Closed(_) => {}
        Outcome::TimedOut(_) => panic!("no answer and no close for 60 headers"),
    }
    let seen: Vec<String> = up.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        seen,
        ["/fits"],
        "the head with too many headers reached the upstream"
    );
    assert_still_serving(&pki, &gw, "too many headers").await;
}

// === idle keep-alive connections give their HTTP buffers back (release_idle_after) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_idle_connection_serves_the_next_requests_on_the_same_tls_session() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        server("release_idle_after = \"50ms\""),
        simple(&up.url())
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let mut client = connect_h1(&pki, gw.addr()).await;
    for i in 0..3 {
        let resp = client.call(get(&format!("/after-idle/{i}"))).await;
        let resp = resp.unwrap_or_else(|e| panic!("request {i} on the kept connection: {e}"));
        assert_eq!(resp.echo().uri, format!("/after-idle/{i}"));
        // Several release periods: the connection is parked with no HTTP state.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let parked = Admin::new(gw.admin_addr())
            .metrics()
            .await
            .scalar("portcullis_parked_connections");
        assert_eq!(parked, 1.0, "the idle connection was not released");
    }
    assert!(
        !client.is_closed(),
        "the gateway closed a released connection"
    );
    assert_eq!(up.request_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_across_a_release_are_all_answered_in_order() {
    let (pki, _up, gw) = setup("release_idle_after = \"50ms\"").await;
    let mut conn = raw_tls(&pki, gw.addr()).await;
    conn.send(b"GET /p/1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    match conn.response(Duration::from_secs(10)).await {
        Outcome::Response(r) => assert_eq!(r.status, 200, "{}", r.head),
        other => panic!("first response: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two requests in one write to a parked connection.
    conn.send(
        b"GET /p/2 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /p/3 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    for want in ["/p/2", "/p/3"] {
        match conn.response(Duration::from_secs(10)).await {
            Outcome::Response(r) => {
                assert_eq!(r.status, 200, "{}", r.head);
                assert!(
                    r.text().contains(want),
                    "{want} answered out of order: {}",
                    r.text()
                );
            }
            other => panic!("response to {want}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_in_pieces_slower_than_release_idle_after_is_not_lost() {
    let (pki, up, gw) = setup("release_idle_after = \"50ms\"").await;
    let mut conn = raw_tls(&pki, gw.addr()).await;
    conn.send(b"GET /pieces HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.send(b"st: localhost\r\n\r\n").await.unwrap();
    match conn.response(Duration::from_secs(10)).await {
        Outcome::Response(r) => assert_eq!(r.status, 200, "{}{}", r.head, r.text()),
        other => panic!("a head in two pieces: {other:?}"),
    }
    assert_eq!(up.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_idle_connection_is_closed_after_header_read_timeout() {
    let (pki, _up, gw) =
        setup("release_idle_after = \"50ms\"\nheader_read_timeout = \"500ms\"").await;
    let mut conn = raw_tls(&pki, gw.addr()).await;
    conn.send(b"GET /once HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    match conn.response(Duration::from_secs(10)).await {
        Outcome::Response(r) => assert_eq!(r.status, 200, "{}", r.head),
        other => panic!("first response: {other:?}"),
    }
    let idle_from = Instant::now();
    match conn.response(Duration::from_secs(10)).await {
        Outcome::Closed(rest) => assert!(rest.is_empty(), "unexpected bytes: {rest:?}"),
        other => panic!("an idle connection was kept past header_read_timeout: {other:?}"),
    }
    assert!(
        idle_from.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        idle_from.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_cut_off_even_when_release_idle_after_is_shorter() {
    let (pki, up, gw) =
        setup("release_idle_after = \"50ms\"\nheader_read_timeout = \"500ms\"").await;
    let started = Instant::now();
    let mut conn = raw_tls(&pki, gw.addr()).await;
    // A byte every 200 ms: each gap is longer than release_idle_after.
    let trickle = async {
        for b in
            b"GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if conn.send(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(15), trickle).await;
    let took = started.elapsed();
    match conn.response(Duration::from_secs(2)).await {
        Outcome::Response(r) => assert_eq!(r.status, 408, "{}{}", r.head, r.text()),
        Outcome::Closed(_) => {}
        Outcome::TimedOut(_) => panic!("a trickled head was kept open"),
    }
    assert!(took < Duration::from_secs(5), "cut off only after {took:?}");
    assert_eq!(up.request_count(), 0);
}
