//! Proves the PROXY protocol front end: from a trusted proxy a v1 or v2 header (IPv4 or IPv6
//! source) followed by TLS is served, and the PROXY source is the client: the upstream sees it
//! in X-Forwarded-For, route allow lists judge it, and a listener deny list matching it closes
//! the connection before TLS. A header from an untrusted peer, TLS without a header, or a
//! malformed header is closed without a byte and counted as `proxy_protocol`; a slow or partial
//! header is cut at `handshake_timeout`.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portcullis::denial::Denial;
use portcullis::ip_filter::proxy_protocol::{encode_v1, encode_v2};
use portcullis::metrics::ConnRefusal;
use support::raw::{
    assert_closed_without_a_byte, client_hello, read_to_end_within, send_and_read_until_close,
};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Listener keys: PROXY headers expected, from 127.0.0.1 (the tests) only.
const BEHIND_PROXY: &str = "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// The proxy's own address as written in headers (the destination fields).
fn dst_for(src: SocketAddr) -> SocketAddr {
    if src.is_ipv4() {
        sa("192.0.2.1:443")
    } else {
        sa("[2001:db8::1]:443")
    }
}

fn v1(src: &str) -> Vec<u8> {
    let src = sa(src);
    encode_v1(src, dst_for(src))
}

fn v2(src: &str) -> Vec<u8> {
    let src = sa(src);
    encode_v2(src, dst_for(src))
}

/// A TLS 1.2 ClientHello for localhost, handcrafted.
fn hello() -> Vec<u8> {
    client_hello(0x0301, 0x0303)
}

/// TCP connect, write `header`, then a TLS handshake over the same stream.
async fn tls_after_header(pki: &Pki, addr: SocketAddr, header: &[u8]) -> io::Result<Tls> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(header).await?;
    TlsClient::new(pki).connect_over(tcp, "localhost").await
}

async fn h1_after_header(pki: &Pki, addr: SocketAddr, header: &[u8]) -> H1 {
    let tls = tls_after_header(pki, addr, header)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "TLS after the PROXY header {:?}: {e}",
                String::from_utf8_lossy(header)
            )
        });
    H1::handshake(tls).await.unwrap()
}

async fn proxied_gateway(pki: &Pki, listener_keys: &str, routes: &str) -> Gateway {
    Gateway::start(
        pki.dir(),
        &format!("{}{routes}", listener("public", listener_keys)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_v1_or_v2_header_the_upstream_sees_the_proxy_source_as_the_client() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = proxied_gateway(&pki, BEHIND_PROXY, &route("all", "/", &[&up.url()], "")).await;

    for (what, header, client) in [
        ("v1 TCP4", v1("203.0.113.9:4711"), "203.0.113.9"),
        ("v1 TCP6", v1("[2001:db8::9]:4711"), "2001:db8::9"),
        ("v2 IPv4", v2("203.0.113.9:4711"), "203.0.113.9"),
        ("v2 IPv6", v2("[2001:db8::9]:4711"), "2001:db8::9"),
    ] {
        let mut h1 = h1_after_header(&pki, gw.addr(), &header).await;
        // Twice: the source belongs to the connection, not to its first request.
        for path in ["/first", "/second"] {
            let req = request("GET", path)
                .header("x-forwarded-for", "6.6.6.6")
                .body(empty())
                .unwrap();
            let resp = h1
                .call(req)
                .await
                .unwrap_or_else(|e| panic!("{what} {path}: no response: {e}"));
            let echo = resp.echo();
            assert_eq!(
                echo.header_all("x-forwarded-for"),
                [client],
                "{what} {path}: the PROXY source is the client; the client's own claim is replaced"
            );
        }
    }
    assert_eq!(up.request_count(), 8);
    assert_eq!(gw.refused_count(ConnRefusal::ProxyProtocol), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_allow_lists_judge_the_proxy_source_not_the_proxy() {
    let pki = Pki::generate();
    let partners = Upstream::echo("partners").await;
    let open = Upstream::echo("open").await;
    let routes = format!(
        "{}{}",
        route(
            "partners",
            "/partners",
            &[&partners.url()],
            "allow = [\"203.0.113.0/24\", \"2001:db8::/32\"]"
        ),
        route("open", "/", &[&open.url()], "deny = [\"198.51.100.66\"]"),
    );
    let gw = proxied_gateway(&pki, BEHIND_PROXY, &routes).await;

    // (header, /partners served?, / served?)
    for (header, partners_ok, open_ok) in [
        (v1("203.0.113.9:1000"), true, true),
        (v2("203.0.113.10:1000"), true, true),
        (v2("[2001:db8::9]:1000"), true, true),
        (v1("198.51.100.1:1000"), false, true),
        (v2("[2001:db9::1]:1000"), false, true),
        (v1("198.51.100.66:1000"), false, false),
        // The proxy's own address is not on the partners list either.
        (v2("127.0.0.1:1000"), false, true),
    ] {
        let what = String::from_utf8_lossy(&header).into_owned();
        let mut h1 = h1_after_header(&pki, gw.addr(), &header).await;
        for (path, ok) in [("/partners/x", partners_ok), ("/other", open_ok)] {
            let resp = h1.call(get(path)).await.unwrap();
            if ok {
                resp.echo();
            } else {
                assert_eq!(
                    resp.status.as_u16(),
                    403,
                    "{what:?} {path}: {}",
                    resp.text()
                );
                resp.assert_denied(403, "ip_not_allowed");
            }
        }
    }
    assert_eq!(partners.request_count(), 3);
    assert_eq!(open.request_count(), 6);
    assert_eq!(gw.denial_count(Denial::IpNotAllowed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_list_refusing_the_proxy_source_closes_the_connection_before_tls() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;

    for keys in [
        format!("{BEHIND_PROXY}\ndeny = [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]"),
        format!("{BEHIND_PROXY}\nallow = [\"203.0.113.0/24\", \"2001:db8:1::/48\"]"),
    ] {
        let gw = proxied_gateway(&pki, &keys, &route("all", "/", &[&up.url()], "")).await;
        let mut refused = 0;
        for header in [
            v1("198.51.100.1:1000"),
            v2("198.51.100.2:1000"),
            v2("[2001:db8:bad::1]:1000"),
        ] {
            let what = format!("{keys:?} with {:?}", String::from_utf8_lossy(&header));
            let mut bytes = header.clone();
            bytes.extend_from_slice(&hello());
            assert_closed_without_a_byte(
                &what,
                send_and_read_until_close(gw.addr(), &bytes, Duration::from_secs(10)).await,
            );
            assert!(
                tls_after_header(&pki, gw.addr(), &header).await.is_err(),
                "{what}: a real TLS client completed the handshake"
            );
            refused += 2;
            assert_eq!(
                gw.refused_count(ConnRefusal::IpNotAllowed),
                refused,
                "{what}"
            );
        }
        // Control: an admitted source on the same listener is served.
        let echo = h1_after_header(&pki, gw.addr(), &v1("203.0.113.9:1000"))
            .await
            .call(get("/ok"))
            .await
            .unwrap()
            .echo();
        assert_eq!(echo.header("x-forwarded-for"), Some("203.0.113.9"));
        assert_eq!(gw.refused_count(ConnRefusal::ProxyProtocol), 0);
    }
    assert_eq!(up.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_proxy_header_from_an_untrusted_peer_is_closed_and_counted() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    // 127.0.0.1 is not a trusted proxy here.
    let gw = proxied_gateway(
        &pki,
        "proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]",
        &route("all", "/", &[&up.url()], ""),
    )
    .await;

    let mut refused = 0;
    for header in [v1("203.0.113.9:4711"), v2("203.0.113.9:4711")] {
        let what = format!("{:?}", String::from_utf8_lossy(&header));
        let mut bytes = header.clone();
        bytes.extend_from_slice(&hello());
        assert_closed_without_a_byte(
            &what,
            send_and_read_until_close(gw.addr(), &bytes, Duration::from_secs(10)).await,
        );
        assert!(
            tls_after_header(&pki, gw.addr(), &header).await.is_err(),
            "{what}: an untrusted peer completed a handshake"
        );
        refused += 2;
        assert_eq!(
            gw.refused_count(ConnRefusal::ProxyProtocol),
            refused,
            "{what}"
        );
    }
    assert_eq!(gw.refused_count(ConnRefusal::IpNotAllowed), 0);
    assert_eq!(gw.refused_count(ConnRefusal::Handshake), 0);
    assert_eq!(up.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_proxy_header_is_closed_without_a_byte() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = proxied_gateway(&pki, BEHIND_PROXY, &route("all", "/", &[&up.url()], "")).await;

    let bad_version = {
        let mut h = v2("203.0.113.9:1");
        h[12] = 0x31;
        h
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a TLS ClientHello and no header", hello()),
        (
            "plain HTTP",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "a v1 header with a bad address",
            b"PROXY TCP4 203.0.113.999 192.0.2.1 1 443\r\n".to_vec(),
        ),
        (
            "a v1 header longer than 107 bytes",
            format!("PROXY TCP4 {}\r\n", "1".repeat(120)).into_bytes(),
        ),
        ("a v2 header of version 3", bad_version),
    ];
    let mut refused = 0;
    for (what, bytes) in cases {
        let mut bytes = bytes;
        if bytes.starts_with(b"PROXY") || bytes.starts_with(b"\r\n\r\n") {
            bytes.extend_from_slice(&hello());
        }
        assert_closed_without_a_byte(
            what,
            send_and_read_until_close(gw.addr(), &bytes, Duration::from_secs(10)).await,
        );
        refused += 1;
        assert_eq!(
            gw.refused_count(ConnRefusal::ProxyProtocol),
            refused,
            "{what}"
        );
    }
    // A real TLS client that does not know about PROXY fails too.
    assert!(
        TlsClient::new(&pki)
            .connect(gw.addr(), "localhost")
            .await
            .is_err(),
        "TLS without a PROXY header completed a handshake"
    );
    assert_eq!(gw.refused_count(ConnRefusal::ProxyProtocol), refused + 1);
    assert_eq!(up.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_unknown_and_v2_local_headers_leave_the_proxy_as_the_client() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = proxied_gateway(&pki, BEHIND_PROXY, &route("all", "/", &[&up.url()], "")).await;

    let local = {
        let mut h = v2("203.0.113.9:4711");
        h[12] = 0x20; // version 2, command LOCAL
        h
    };
    for (what, header) in [
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec()),
        ("v2 LOCAL", local),
    ] {
        let echo = h1_after_header(&pki, gw.addr(), &header)
            .await
            .call(get("/health"))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .echo();
        assert_eq!(
            echo.header("x-forwarded-for"),
            Some("127.0.0.1"),
            "{what}: the address in the ignored header must not be used"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_proxy_unknown_a_client_written_forwarding_header_is_not_believed() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = proxied_gateway(
        &pki,
        BEHIND_PROXY,
        &route(
            "partners",
            "/",
            &[&up.url()],
            "allow = [\"203.0.113.0/24\"]",
        ),
    )
    .await;
    // The balancer spoke for itself, so the connection's client is the balancer (outside
    // the allow list), whatever the client wrote after it.
    let mut h1 = h1_after_header(&pki, gw.addr(), b"PROXY UNKNOWN\r\n").await;
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
    ] {
        let req = request("GET", "/orders")
            .header(name, value)
            .body(empty())
            .unwrap();
        h1.call(req)
            .await
            .unwrap()
            .assert_denied(403, "ip_not_allowed");
    }
    assert_eq!(up.request_count(), 0);
    // With the client's address in the PROXY header it is admitted.
    h1_after_header(&pki, gw.addr(), &v1("203.0.113.7:4711"))
        .await
        .call(get("/orders"))
        .await
        .unwrap()
        .echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_partial_proxy_header_is_cut_at_the_handshake_timeout() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let timeout = Duration::from_millis(300);
    let toml = format!(
        "{}{}{}",
        server("handshake_timeout = \"300ms\""),
        listener("public", BEHIND_PROXY),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let header = v1("203.0.113.9:4711");
    let partial_hello = hello()[..10].to_vec();

    // (what, bytes sent at once, then one more byte every 50 ms, counted as)
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, ConnRefusal)> = vec![
        ("nothing at all", vec![], vec![], ConnRefusal::ProxyProtocol),
        (
            "half a v1 header, then silence",
            header[..20].to_vec(),
            vec![],
            ConnRefusal::ProxyProtocol,
        ),
        (
            "half a v2 header, then silence",
            v2("203.0.113.9:4711")[..14].to_vec(),
            vec![],
            ConnRefusal::ProxyProtocol,
        ),
        (
            "a v1 header trickled one byte per 50 ms",
            vec![],
            header.clone(),
            ConnRefusal::ProxyProtocol,
        ),
        (
            "a whole header, then a stalled ClientHello: one deadline for both",
            [header.clone(), partial_hello].concat(),
            vec![],
            ConnRefusal::Handshake,
        ),
    ];

    for (what, at_once, trickle, counted_as) in cases {
        let before = gw.refused_count(counted_as);
        let started = Instant::now();
        let tcp = TcpStream::connect(gw.addr()).await.expect("connect");
        let (mut rd, mut wr) = tcp.into_split();
        let writer = tokio::spawn(async move {
            if wr.write_all(&at_once).await.is_err() {
                return;
            }
            for b in trickle {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if wr.write_all(&[b]).await.is_err() {
                    return;
                }
            }
            // Keep the write half open (no FIN) until the server gives up.
            std::future::pending::<()>().await;
        });
        let mut got = Vec::new();
        let closed = read_to_end_within(&mut rd, &mut got, Duration::from_secs(10)).await;
        let took = started.elapsed();
        writer.abort();

        assert!(closed, "{what}: still open after 10 s");
        assert!(
            got.is_empty(),
            "{what}: the server sent {} bytes: {:02x?}",
            got.len(),
            &got[..got.len().min(64)]
        );
        assert!(
            took >= timeout - Duration::from_millis(10),
            "{what}: closed after {took:?}, before the {timeout:?} deadline"
        );
        assert!(
            took < Duration::from_secs(3),
            "{what}: closed only after {took:?}; handshake_timeout is {timeout:?}"
        );
        assert_eq!(
            gw.refused_count(counted_as),
            before + 1,
            "{what}: counted as {}",
            counted_as.label()
        );
    }
    assert_eq!(up.request_count(), 0);
}
