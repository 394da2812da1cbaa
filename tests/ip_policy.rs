//! Proves IP policy end to end: a listener whose allow/deny lists refuse the peer closes the
//! connection before a single TLS byte (IPv4 and IPv6) and counts it; route lists answer 403
//! `ip_not_allowed` with a request id while other routes on the same connection are served;
//! deny wins over allow; X-Forwarded-For and `Forwarded` are ignored (and replaced) from
//! untrusted peers, and from trusted proxies are walked right to left past trusted hops (chains,
//! spoofed left parts, IPv6, 300 hops), with unreadable values refused as 400
//! `bad_forwarded_header`.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use portcullis::denial::Denial;
use portcullis::metrics::ConnRefusal;
use support::raw::{assert_closed_without_a_byte, client_hello, send_and_read_until_close};
use support::*;

const IP_NOT_ALLOWED: &str = "ip_not_allowed";
const BAD_FORWARDED: &str = "bad_forwarded_header";

/// A TLS 1.2 ClientHello for localhost, handcrafted (no TLS stack that could retry).
fn hello() -> Vec<u8> {
    client_hello(0x0301, 0x0303)
}

/// The connection is closed before TLS: a raw ClientHello gets no byte back (not even an
/// alert), and a real TLS client fails its handshake. Two refusals are counted.
async fn assert_refused_before_tls(what: &str, pki: &Pki, gw: &Gateway, addr: SocketAddr) {
    let before = gw.refused_count(ConnRefusal::IpNotAllowed);
    assert_closed_without_a_byte(
        what,
        send_and_read_until_close(addr, &hello(), Duration::from_secs(10)).await,
    );
    let tls = TlsClient::new(pki).connect(addr, "localhost").await;
    assert!(
        tls.is_err(),
        "{what}: a real TLS client completed the handshake"
    );
    assert_eq!(
        gw.refused_count(ConnRefusal::IpNotAllowed),
        before + 2,
        "{what}: each refused connection is counted as ip_not_allowed"
    );
    assert_eq!(
        gw.refused_count(ConnRefusal::Handshake),
        0,
        "{what}: refused before TLS, so no handshake can have failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_refuses_the_peer_closes_the_connection_before_any_tls_byte() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;

    for (what, keys) in [
        ("deny lists the peer", "deny = [\"127.0.0.1/32\"]"),
        ("allow excludes the peer", "allow = [\"10.0.0.0/8\"]"),
        (
            "deny wins over allow",
            "allow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.1\"]",
        ),
    ] {
        let toml = format!(
            "{}{}",
            listener("public", keys),
            route("all", "/", &[&up.url()], "")
        );
        let gw = Gateway::start(pki.dir(), &toml).await;
        assert_refused_before_tls(what, &pki, &gw, gw.addr()).await;
    }
    assert_eq!(up.request_count(), 0, "a refused peer reached the upstream");

    // Control: lists that admit 127.0.0.1 serve it, and nothing is counted.
    let toml = format!(
        "{}{}",
        listener(
            "public",
            "allow = [\"127.0.0.0/8\"]\ndeny = [\"10.0.0.0/8\", \"127.0.0.2\"]"
        ),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let echo = send_one(&pki, gw.addr(), get("/admitted")).await.echo();
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(gw.refused_count(ConnRefusal::IpNotAllowed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v4_mapped_ipv6_rule_for_one_address_covers_exactly_that_ipv4_address() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;

    // `::ffff:a.b.c.d` (a /128) is the IPv4 address a.b.c.d and nothing else.
    for (what, keys, admitted) in [
        (
            "deny ::ffff:127.0.0.1 refuses 127.0.0.1",
            "deny = [\"::ffff:127.0.0.1/128\"]",
            false,
        ),
        (
            "allow ::ffff:127.0.0.0 (one address) does not admit 127.0.0.1",
            "allow = [\"::ffff:127.0.0.0\"]",
            false,
        ),
        (
            "allow ::ffff:127.0.0.1 admits 127.0.0.1",
            "allow = [\"::ffff:127.0.0.1/128\"]",
            true,
        ),
    ] {
        let toml = format!(
            "{}{}",
            listener("public", keys),
            route("all", "/", &[&up.url()], "")
        );
        let gw = Gateway::start(pki.dir(), &toml).await;
        if admitted {
            send_one(&pki, gw.addr(), get("/mapped")).await.echo();
        } else {
            assert_refused_before_tls(what, &pki, &gw, gw.addr()).await;
        }
    }
    assert_eq!(up.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_refuses_the_client_gets_403_while_another_route_on_the_connection_is_served()
{
    let pki = Pki::generate();
    let open = Upstream::echo("open").await;
    let guarded = Upstream::echo("guarded").await;
    let admitted = Upstream::echo("admitted").await;
    let toml = format!(
        "{}{}{}{}{}{}",
        listener("public", ""),
        route(
            "deny",
            "/deny",
            &[&guarded.url()],
            "deny = [\"127.0.0.1/32\"]"
        ),
        route(
            "allow-other",
            "/allow-other",
            &[&guarded.url()],
            "allow = [\"10.0.0.0/8\", \"203.0.113.0/24\"]"
        ),
        route(
            "both",
            "/both",
            &[&guarded.url()],
            "allow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.1\"]"
        ),
        route(
            "admitted",
            "/admitted",
            &[&admitted.url()],
            "allow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.2\"]"
        ),
        route("open", "/", &[&open.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let mut h1 = connect_h1(&pki, gw.addr()).await;
    let mut ids = Vec::new();
    for (path, want) in [
        ("/deny/x", None),
        ("/open", Some("open")),
        ("/allow-other", None),
        ("/both/y", None),
        ("/admitted/z", Some("admitted")),
        ("/deny", None),
        ("/", Some("open")),
    ] {
        let resp = h1
            .call(get(path))
            .await
            .unwrap_or_else(|e| panic!("{path}: no response on the shared connection: {e}"));
        match want {
            Some(upstream) => assert_eq!(resp.echo().upstream, upstream, "{path}"),
            None => ids.push(resp.assert_denied(403, IP_NOT_ALLOWED)),
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "every denial has its own request id");
    assert_eq!(
        guarded.request_count(),
        0,
        "a refused client reached the upstream"
    );
    assert_eq!(open.request_count(), 2);
    assert_eq!(admitted.request_count(), 1);
    assert_eq!(gw.denial_count(Denial::IpNotAllowed), 4);
    assert_eq!(
        gw.refused_count(ConnRefusal::IpNotAllowed),
        0,
        "route lists must not refuse connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_listener_applies_its_lists_to_the_ipv6_peer() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        eprintln!("skipped: this machine has no IPv6 loopback ([::1]:0 cannot be bound: {e})");
        return;
    }
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let guarded = Upstream::echo("guarded").await;
    let certs = [("server.pem", "server.key")];

    for (what, keys, admitted) in [
        ("allow ::1", "allow = [\"::1/128\"]", true),
        (
            "an IPv4 deny rule does not match ::1",
            "deny = [\"127.0.0.1\", \"0.0.0.0/0\"]",
            true,
        ),
        ("deny ::1", "deny = [\"::1\"]", false),
        (
            "allow excludes ::1",
            "allow = [\"2001:db8::/32\", \"127.0.0.0/8\"]",
            false,
        ),
        (
            "deny wins over allow",
            "allow = [\"::/0\"]\ndeny = [\"::1/128\"]",
            false,
        ),
    ] {
        let toml = format!(
            "{}{}{}",
            listener_at("public", "[::1]:0", keys, &certs),
            route("guarded", "/guarded", &[&guarded.url()], "deny = [\"::1\"]"),
            route("all", "/", &[&up.url()], "")
        );
        let gw = Gateway::start(pki.dir(), &toml).await;
        let addr = gw.addr();
        assert!(addr.is_ipv6(), "{what}: bound to {addr}");
        if admitted {
            let mut h1 = connect_h1(&pki, addr).await;
            let echo = h1.call(get("/v6")).await.unwrap().echo();
            assert_eq!(echo.header("x-forwarded-for"), Some("::1"), "{what}");
            h1.call(get("/guarded"))
                .await
                .unwrap()
                .assert_denied(403, IP_NOT_ALLOWED);
            assert_eq!(gw.refused_count(ConnRefusal::IpNotAllowed), 0, "{what}");
        } else {
            assert_refused_before_tls(what, &pki, &gw, addr).await;
        }
    }
    assert_eq!(guarded.request_count(), 0);
    assert_eq!(up.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_client_seen_as_a_v4_mapped_ipv6_peer_is_judged_by_ipv4_rules() {
    // An IPv6 socket bound to ::ffff:127.0.0.1 accepts IPv4 clients and reports them as
    // ::ffff:127.0.0.1, as a dual-stack [::] listener does.
    const BIND: &str = "[::ffff:127.0.0.1]:0";
    if let Err(e) = std::net::TcpListener::bind(BIND) {
        eprintln!("skipped: {BIND} cannot be bound on this machine: {e}");
        return;
    }
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let guarded = Upstream::echo("guarded").await;
    let certs = [("server.pem", "server.key")];

    for (what, keys, admitted) in [
        ("no lists", "", true),
        ("allow 127.0.0.0/8", "allow = [\"127.0.0.0/8\"]", true),
        ("deny 127.0.0.1", "deny = [\"127.0.0.1\"]", false),
        ("allow only ::1", "allow = [\"::1\"]", false),
    ] {
        let toml = format!(
            "{}{}{}",
            listener_at("public", BIND, keys, &certs),
            route(
                "guarded",
                "/guarded",
                &[&guarded.url()],
                "deny = [\"127.0.0.1\"]"
            ),
            route("all", "/", &[&up.url()], "")
        );
        let gw = Gateway::start(pki.dir(), &toml).await;
        let addr = gw.addr();
        if admitted {
            let mut h1 = connect_h1(&pki, addr).await;
            let echo = h1.call(get("/mapped")).await.unwrap().echo();
            assert_eq!(
                echo.header("x-forwarded-for"),
                Some("127.0.0.1"),
                "{what}: the upstream gets the IPv4 address"
            );
            h1.call(get("/guarded"))
                .await
                .unwrap()
                .assert_denied(403, IP_NOT_ALLOWED);
        } else {
            assert_refused_before_tls(what, &pki, &gw, addr).await;
        }
    }
    assert_eq!(guarded.request_count(), 0);
    assert_eq!(up.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored_for_policy_and_replaced() {
    let pki = Pki::generate();
    let partners = Upstream::echo("partners").await;
    let open = Upstream::echo("open").await;
    let toml = format!(
        "{}{}{}",
        listener("public", ""),
        route(
            "partners",
            "/partners",
            &[&partners.url()],
            "allow = [\"203.0.113.0/24\", \"2001:db8::/32\"]"
        ),
        route("open", "/", &[&open.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let claims: [(&str, &str); 5] = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-for", "203.0.113.7, 127.0.0.1"),
        ("forwarded", "for=203.0.113.7"),
        ("forwarded", "for=\"[2001:db8::7]:4711\""),
        // Unreadable, but from an untrusted peer it is not read at all.
        ("x-forwarded-for", "nonsense"),
    ];
    let mut h1 = connect_h1(&pki, gw.addr()).await;
    for (name, value) in claims {
        let req = |path: &str| {
            request("GET", path)
                .header(name, value)
                .body(empty())
                .unwrap()
        };
        h1.call(req("/partners/data"))
            .await
            .unwrap()
            .assert_denied(403, IP_NOT_ALLOWED);
        let echo = h1.call(req("/elsewhere")).await.unwrap().echo();
        assert_eq!(
            echo.header_all("x-forwarded-for"),
            ["127.0.0.1"],
            "{name}: {value} must be replaced by the peer"
        );
        assert!(
            !echo.has_header("forwarded"),
            "{name}: {value}: an untrusted Forwarded reached the upstream"
        );
    }
    assert_eq!(partners.request_count(), 0);
    assert_eq!(gw.denial_count(Denial::BadForwardedHeader), 0);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Served,
    Denied,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_trusted_proxies_the_nearest_untrusted_address_is_the_client_for_route_lists() {
    let pki = Pki::generate();
    let partners = Upstream::echo("partners").await;
    let partner_allow = "allow = [\"203.0.113.0/24\", \"2001:db8::/32\"]";
    let start = |trusted: &'static str, header: &'static str| {
        let toml = format!(
            "{}{}",
            listener(
                "public",
                &format!("trusted_proxies = {trusted}\nforwarded_header = \"{header}\""),
            ),
            route("partners", "/partners", &[&partners.url()], partner_allow),
        );
        let dir = pki.dir().to_path_buf();
        async move { Gateway::start(&dir, &toml).await }
    };
    // One load balancer in front; a chain of internal proxies behind it.
    // Each twice: proxies that write X-Forwarded-For, and proxies that write Forwarded.
    let one_lb = start("[\"127.0.0.1\"]", "x-forwarded-for").await;
    let chain = start("[\"127.0.0.1\", \"10.0.0.0/8\"]", "x-forwarded-for").await;
    let one_lb_fwd = start("[\"127.0.0.1\"]", "forwarded").await;
    let chain_fwd = start("[\"127.0.0.1\", \"10.0.0.0/8\"]", "forwarded").await;

    type Case = (&'static str, bool, Vec<(&'static str, &'static str)>, Want);
    let cases: Vec<Case> = vec![
        (
            "the client named by the trusted proxy",
            false,
            vec![("x-forwarded-for", "203.0.113.7")],
            Want::Served,
        ),
        (
            "a client outside the allow list",
            false,
            vec![("x-forwarded-for", "198.51.100.1")],
            Want::Denied,
        ),
        (
            "no header: the proxy itself is the client",
            false,
            vec![],
            Want::Denied,
        ),
        (
            "an untrusted hop between: it is the client",
            false,
            vec![("x-forwarded-for", "203.0.113.7, 10.0.0.2")],
            Want::Denied,
        ),
        (
            "a chain through trusted proxies",
            true,
            vec![("x-forwarded-for", "203.0.113.7, 10.0.0.2, 10.0.0.3")],
            Want::Served,
        ),
        (
            "a spoofed left part is not read",
            true,
            vec![("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.2")],
            Want::Served,
        ),
        (
            "an allowed address left of the client does not help",
            true,
            vec![("x-forwarded-for", "203.0.113.7, 198.51.100.1, 10.0.0.2")],
            Want::Denied,
        ),
        (
            "several header lines are one list",
            true,
            vec![
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-for", "10.0.0.2"),
            ],
            Want::Served,
        ),
        (
            "ports on entries are tolerated",
            true,
            vec![("x-forwarded-for", "203.0.113.7:5555, 10.0.0.2:80")],
            Want::Served,
        ),
        (
            "every hop trusted: the first hop is the client",
            true,
            vec![("x-forwarded-for", "10.0.0.3, 10.0.0.2")],
            Want::Denied,
        ),
        (
            "Forwarded with a bracketed IPv6 address and port",
            false,
            vec![("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")],
            Want::Served,
        ),
        (
            "Forwarded naming a client outside the allow list",
            false,
            vec![("forwarded", "for=198.51.100.1")],
            Want::Denied,
        ),
        (
            "Forwarded chain past a trusted hop",
            true,
            vec![(
                "forwarded",
                "for=198.51.100.1, for=203.0.113.7, for=10.0.0.2",
            )],
            Want::Served,
        ),
    ];

    let mut served = 0;
    for (what, via_chain, headers, want) in cases {
        let writes_forwarded = headers.iter().any(|(k, _)| *k == "forwarded");
        let gw = match (via_chain, writes_forwarded) {
            (false, false) => &one_lb,
            (true, false) => &chain,
            (false, true) => &one_lb_fwd,
            (true, true) => &chain_fwd,
        };
        let mut req = request("GET", "/partners/data");
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let resp = send_one(&pki, gw.addr(), req.body(empty()).unwrap()).await;
        match want {
            Want::Served => {
                assert_eq!(
                    resp.status.as_u16(),
                    200,
                    "{what}: {headers:?} got {} {}",
                    resp.status,
                    resp.text()
                );
                let echo = resp.echo();
                served += 1;
                if writes_forwarded {
                    // A trusted proxy's Forwarded is passed on with our peer appended.
                    let sent: Vec<&str> = headers.iter().map(|(_, v)| *v).collect();
                    let want = format!("{}, for=127.0.0.1", sent.join(", "));
                    assert_eq!(echo.header_all("forwarded"), [want.as_str()], "{what}");
                    continue;
                }
                // A trusted proxy's X-Forwarded-For is passed on with our peer appended.
                let sent_xff: Vec<&str> = headers
                    .iter()
                    .filter(|(k, _)| *k == "x-forwarded-for")
                    .map(|(_, v)| *v)
                    .collect();
                let mut want_xff = sent_xff.join(", ");
                if !want_xff.is_empty() {
                    want_xff.push_str(", ");
                }
                want_xff.push_str("127.0.0.1");
                assert_eq!(
                    echo.header_all("x-forwarded-for"),
                    [want_xff.as_str()],
                    "{what}"
                );
            }
            Want::Denied => {
                assert_eq!(
                    resp.status.as_u16(),
                    403,
                    "{what}: {headers:?} got {} {}",
                    resp.status,
                    resp.text()
                );
                resp.assert_denied(403, IP_NOT_ALLOWED);
            }
        }
    }
    assert_eq!(partners.request_count(), served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_allow_list_is_checked_per_request_against_the_client_behind_a_trusted_proxy() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener(
            "public",
            "trusted_proxies = [\"127.0.0.1\"]\nallow = [\"203.0.113.0/24\"]"
        ),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    // The proxy itself is outside the allow list, yet its connection is accepted: its
    // clients are judged per request.
    let mut h1 = connect_h1(&pki, gw.addr()).await;
    for (xff, want_served) in [
        (Some("203.0.113.7"), true),
        (Some("198.51.100.1"), false),
        (None, false),
        (Some("203.0.113.200"), true),
    ] {
        let mut req = request("GET", "/any");
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        let resp = h1.call(req.body(empty()).unwrap()).await.unwrap();
        if want_served {
            resp.echo();
        } else {
            resp.assert_denied(403, IP_NOT_ALLOWED);
        }
    }
    assert_eq!(up.request_count(), 2);
    assert_eq!(gw.refused_count(ConnRefusal::IpNotAllowed), 0);
    assert_eq!(gw.denial_count(Denial::IpNotAllowed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_forwarding_headers_from_a_trusted_proxy_get_400_bad_forwarded_header() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = |header: &str| {
        format!(
            "{}{}",
            listener(
                "public",
                &format!("trusted_proxies = [\"127.0.0.1\"]\nforwarded_header = \"{header}\""),
            ),
            route("all", "/", &[&up.url()], "")
        )
    };
    let gw = Gateway::start(pki.dir(), &toml("x-forwarded-for")).await;
    let gw_fwd = Gateway::start(pki.dir(), &toml("forwarded")).await;

    let cases: [(&str, &str); 8] = [
        ("x-forwarded-for", "nonsense"),
        ("x-forwarded-for", ""),
        ("x-forwarded-for", "203.0.113.7,,10.0.0.2"),
        ("x-forwarded-for", "203.0.113.7; DROP TABLE"),
        ("x-forwarded-for", "203.0.113.999"),
        ("forwarded", "for=unknown"),
        ("forwarded", "for=_hidden"),
        ("forwarded", "for=\"203.0.113.7"),
    ];
    let mut h1 = connect_h1(&pki, gw.addr()).await;
    let mut h1_fwd = connect_h1(&pki, gw_fwd.addr()).await;
    for (name, value) in cases {
        let req = request("GET", "/x")
            .header(name, value)
            .body(empty())
            .unwrap();
        let conn = if name == "forwarded" {
            &mut h1_fwd
        } else {
            &mut h1
        };
        let resp = conn
            .call(req)
            .await
            .unwrap_or_else(|e| panic!("{name}: {value:?}: no response: {e}"));
        assert_eq!(
            resp.status.as_u16(),
            400,
            "{name}: {value:?} got {} {}",
            resp.status,
            resp.text()
        );
        resp.assert_denied(400, BAD_FORWARDED);
    }
    assert_eq!(up.request_count(), 0, "an unreadable header was forwarded");
    assert_eq!(
        gw.denial_count(Denial::BadForwardedHeader)
            + gw_fwd.denial_count(Denial::BadForwardedHeader),
        cases.len() as u64
    );
    // The connection is still usable for a readable request.
    h1.call(
        request("GET", "/ok")
            .header("x-forwarded-for", "203.0.113.7")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap()
    .echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_300_trusted_hops_is_walked_to_the_client_and_forwarded_whole() {
    let pki = Pki::generate();
    let partners = Upstream::echo("partners").await;
    let open = Upstream::echo("open").await;
    let toml = format!(
        "{}{}{}",
        listener(
            "public",
            "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]"
        ),
        route(
            "partners",
            "/partners",
            &[&partners.url()],
            "allow = [\"203.0.113.0/24\"]"
        ),
        route("open", "/", &[&open.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let hops: Vec<String> = (0..300)
        .map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let hops = hops.join(", ");
    let with_client = format!("203.0.113.7, {hops}");
    let spoofed_then_client = format!("198.51.100.1, {with_client}");
    assert!(with_client.len() > 3000, "{} bytes", with_client.len());

    for (what, xff, want_served) in [
        ("client then 300 trusted hops", &with_client, true),
        (
            "spoofed, client, 300 trusted hops",
            &spoofed_then_client,
            true,
        ),
        ("300 trusted hops only", &hops, false),
    ] {
        let req = request("GET", "/partners/long")
            .header("x-forwarded-for", xff.as_str())
            .body(empty())
            .unwrap();
        let resp = send_one(&pki, gw.addr(), req).await;
        if want_served {
            let echo = resp.echo();
            assert_eq!(
                echo.header("x-forwarded-for"),
                Some(format!("{xff}, 127.0.0.1").as_str()),
                "{what}: the whole chain is passed on with the peer appended"
            );
        } else {
            resp.assert_denied(403, IP_NOT_ALLOWED);
        }
    }
    // The same long header on a route without lists is simply forwarded.
    let req = request("GET", "/elsewhere")
        .header("x-forwarded-for", hops.as_str())
        .body(empty())
        .unwrap();
    send_one(&pki, gw.addr(), req).await.echo();
    assert_eq!(partners.request_count(), 2);
}
