//! Proves a listener answers only under the host names it serves (its certificates' DNS and
//! IP names, or its `hosts`) and only under names of the certificate its TLS connection was
//! opened for (SNI): any
//! other Host, absolute-form authority or HTTP/2 `:authority` gets 421 `misdirected_request`
//! (JSON, request id, counted) before routing, so a catch-all route cannot be reached under
//! another name. Real sockets, certificates made at test time.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use portcullis::denial::Denial;
use support::raw::raw_tls_as;
use support::*;

const MISDIRECTED: &str = "misdirected_request";

/// `GET /x` naming `host`.
fn get_host(host: &str) -> http::Request<BoxBody> {
    http::Request::builder()
        .uri("/x")
        .header("host", host)
        .body(empty())
        .unwrap()
}

/// The status of `GET /x` naming `host` on `c`.
async fn status(c: &mut H1, host: &str) -> u16 {
    c.call(get_host(host)).await.unwrap().status.as_u16()
}

/// `GET /x` naming `host` on `c` gets 421 `misdirected_request` in the denial shape.
async fn assert_misdirected(c: &mut H1, host: &str) {
    c.call(get_host(host))
        .await
        .unwrap()
        .assert_denied(421, MISDIRECTED);
}

/// HTTP/1.1 over TLS that asked for `server_name` (an IP address: no SNI).
async fn h1_as(client: &TlsClient, addr: SocketAddr, server_name: &str) -> H1 {
    H1::handshake(tls_as(client, addr, server_name).await)
        .await
        .unwrap()
}

/// A catch-all gateway whose one listener serves a certificate for `a.example.com` and
/// `b.example.com`.
async fn two_names(pki: &Pki) -> (Gateway, Upstream) {
    pki.server_named("a", &["a.example.com"]);
    pki.server_named("b", &["b.example.com"]);
    catch_all(
        pki,
        &listener_with_certs("public", "", &[("a.pem", "a.key"), ("b.pem", "b.key")]),
    )
    .await
}

/// A gateway with `listeners` and one catch-all route to a fresh echo upstream.
async fn catch_all(pki: &Pki, listeners: &str) -> (Gateway, Upstream) {
    let up = Upstream::echo("open").await;
    let toml = format!("{listeners}{}", route("all", "/", &[&up.url()], ""));
    (Gateway::start(pki.dir(), &toml).await, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_certificates_do_not_name_gets_421_json_and_is_counted() {
    let pki = Pki::generate();
    let (gw, up) = catch_all(&pki, &listener("public", "")).await;
    // Dialled by address: no SNI, so the listener's names alone decide.
    let mut c = connect_h1_by_address(&pki, gw.addr()).await;

    let resp = c.call(get_host("other.test")).await.unwrap();
    let id = resp.assert_denied(421, MISDIRECTED);
    assert!(!id.is_empty());
    assert_eq!(gw.denial_count(Denial::MisdirectedRequest), 1);
    assert_eq!(up.request_count(), 0, "the catch-all route was reached");

    // The certificate's own names (DNS and IP SAN) are served on the same connection.
    assert_eq!(
        c.call(get_host("localhost")).await.unwrap().echo().upstream,
        "open"
    );
    let by_ip = format!("127.0.0.1:{}", gw.addr().port());
    assert_eq!(
        c.call(get_host(&by_ip)).await.unwrap().echo().upstream,
        "open"
    );
    // An address the certificate does not carry is another host.
    assert_misdirected(&mut c, "127.0.0.2").await;
    assert_misdirected(&mut c, "[::1]").await;
    assert_eq!(gw.denial_count(Denial::MisdirectedRequest), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_dot_upper_case_and_port_spellings_of_a_served_name_are_served() {
    let pki = Pki::generate();
    let (gw, up) = catch_all(&pki, &listener("public", "")).await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    for host in [
        "localhost",
        "localhost.",
        "LocalHost",
        "LOCALHOST.:8443",
        "localhost:1",
    ] {
        let resp = c.call(get_host(host)).await.unwrap();
        assert_eq!(resp.status, 200, "Host {host}: {}", resp.text());
    }
    assert_eq!(up.request_count(), 5);
    assert_eq!(gw.denial_count(Denial::MisdirectedRequest), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_under_a_wildcard_certificate_is_served_and_one_outside_it_is_not() {
    let pki = Pki::generate();
    pki.server_named("wild", &["*.example.com"]);
    let (gw, up) = catch_all(
        &pki,
        &listener_with_certs("public", "", &[("wild.pem", "wild.key")]),
    )
    .await;
    let client = TlsClient::new(&pki);
    let mut c = h1_as(&client, gw.addr(), "api.example.com").await;
    let echo = c
        .call(get_host("API.Example.com.:443"))
        .await
        .unwrap()
        .echo();
    assert_eq!(echo.upstream, "open");

    // A client that skips name checks (a pinning agent) reaches the listener by address,
    // and still only the wildcard's one label is served.
    let pinning = TlsClient::new(&pki).any_server_name();
    let mut c = h1_as(&pinning, gw.addr(), "127.0.0.1").await;
    assert_eq!(status(&mut c, "web.example.com").await, 200);
    for host in [
        "example.com",
        "a.web.example.com",
        "web.example.org",
        "127.0.0.1",
    ] {
        assert_misdirected(&mut c, host).await;
    }
    assert_eq!(up.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_of_another_certificate_than_the_snis_gets_421_even_when_the_listener_serves_both() {
    let pki = Pki::generate();
    let (gw, up) = two_names(&pki).await;
    let client = TlsClient::new(&pki);
    let mut c = h1_as(&client, gw.addr(), "a.example.com").await;
    assert_misdirected(&mut c, "b.example.com").await;
    // The connection stays open for its own name.
    assert_eq!(status(&mut c, "a.example.com").await, 200);
    // b.example.com on a connection of its own is served.
    let mut b = h1_as(&client, gw.addr(), "b.example.com").await;
    assert_eq!(status(&mut b, "b.example.com").await, 200);
    assert_eq!(up.request_count(), 2);
    assert_eq!(gw.denial_count(Denial::MisdirectedRequest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_serves_every_name_its_certificate_carries_as_browsers_reuse_it() {
    let pki = Pki::generate();
    pki.server_named("two", &["a.example.com", "b.example.com"]);
    let (gw, up) = catch_all(
        &pki,
        &listener_with_certs("public", "", &[("two.pem", "two.key")]),
    )
    .await;
    let mut c = h1_as(&TlsClient::new(&pki), gw.addr(), "a.example.com").await;
    assert_eq!(status(&mut c, "b.example.com").await, 200);
    assert_eq!(up.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_naming_another_host_gets_421_whatever_its_host_header() {
    let pki = Pki::generate();
    let (gw, up) = catch_all(&pki, &listener("public", "")).await;
    for (server_name, head) in [
        // Host names the SNI; the target names another host.
        (
            "localhost",
            "GET http://other.host/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ),
        // No SNI; the target names a host the certificate does not carry.
        (
            "127.0.0.1",
            "GET https://other.host/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let mut conn = raw_tls_as(&pki, gw.addr(), server_name).await;
        conn.send(head.as_bytes()).await.unwrap();
        let resp = conn.response(Duration::from_secs(10)).await.response();
        assert_eq!(resp.status, 421, "{head:?}: {}", resp.text());
        let body = resp.json().expect("a JSON body");
        assert_eq!(body["error"], MISDIRECTED);
        assert_eq!(
            body["request_id"].as_str(),
            resp.header("x-request-id"),
            "{head:?}"
        );
    }
    assert_eq!(up.request_count(), 0);
    assert_eq!(gw.denial_count(Denial::MisdirectedRequest), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_authority_other_than_the_sni_gets_421_and_the_connection_serves_on() {
    let pki = Pki::generate();
    let (gw, up) = two_names(&pki).await;
    let tls = tls_as(&TlsClient::new(&pki).h2(), gw.addr(), "a.example.com").await;
    let mut h2 = H2::handshake(tls).await.unwrap();
    // A browser coalescing b.example.com onto a.example.com's connection is sent away
    // (RFC 9113 section 9.1.1) ...
    for authority in ["b.example.com", "other.test", "127.0.0.1"] {
        let req = h2_request("GET", authority, "/x").body(empty()).unwrap();
        h2.call(req).await.unwrap().assert_denied(421, MISDIRECTED);
    }
    // ... while the connection's own name is served on it.
    let req = h2_request("GET", "A.example.com.", "/x")
        .body(empty())
        .unwrap();
    assert_eq!(h2.call(req).await.unwrap().echo().upstream, "open");
    assert_eq!(up.request_count(), 1);
    assert_eq!(gw.denial_count(Denial::MisdirectedRequest), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_replaces_the_certificates_names_and_a_nameless_certificate_serves_any_host() {
    let pki = Pki::generate();
    pki.server_named("nameless", &[]);
    let nameless = [("nameless.pem", "nameless.key")];
    let (gw, up) = catch_all(
        &pki,
        &format!(
            "{}{}{}",
            listener_with_certs("bare", "", &nameless),
            listener_with_certs("listed", "hosts = [\"api.internal\"]", &nameless),
            listener("narrowed", "hosts = [\"localhost\"]"),
        ),
    )
    .await;
    let pinning = TlsClient::new(&pki).any_server_name();

    // No names at all: any Host, as before names were checked.
    let mut bare = h1_as(&pinning, gw.addr_of("bare"), "127.0.0.1").await;
    for host in ["anything.test", "127.0.0.1", "api.internal"] {
        assert_eq!(status(&mut bare, host).await, 200, "{host}");
    }

    // `hosts` on the same certificate: only its names.
    let mut listed = h1_as(&pinning, gw.addr_of("listed"), "127.0.0.1").await;
    assert_eq!(status(&mut listed, "API.internal.").await, 200);
    assert_misdirected(&mut listed, "other.internal").await;

    // `hosts` narrows what the certificate names: its IP SAN is no longer served.
    let mut narrowed = connect_h1_by_address(&pki, gw.addr_of("narrowed")).await;
    assert_eq!(status(&mut narrowed, "localhost").await, 200);
    assert_misdirected(&mut narrowed, "127.0.0.1").await;
    assert_eq!(up.request_count(), 5);
}

// === check ===

fn load(
    pki: &Pki,
    toml: &str,
) -> Result<portcullis::config::Loaded, portcullis::config::ConfigErrors> {
    let path = write_config(pki.dir(), toml);
    portcullis::config::load_file(&path, SystemTime::now())
}

#[test]
fn bad_hosts_entries_are_errors_naming_the_file_key_and_problem() {
    let pki = Pki::generate();
    let toml = format!(
        "{}{}",
        listener(
            "public",
            "hosts = [\"localhost\", \"api.example.com:443\", \"*.com\", \"https://x.test\", \"a..b\"]"
        ),
        route("all", "/", &["http://127.0.0.1:9"], ""),
    );
    let errors = load(&pki, &toml)
        .err()
        .expect("bad hosts refused")
        .to_string();
    let file = pki.path("portcullis.toml").display().to_string();
    for (j, entry, problem) in [
        (1, "api.example.com:443", "has a port"),
        (2, "*.com", "is not a wildcard of one label"),
        (3, "https://x.test", "is not a host name"),
        (4, "a..b", "is not a host name"),
    ] {
        let line = format!("{file}: listeners[0].hosts[{j}]: \"{entry}\" {problem}");
        assert!(errors.contains(&line), "missing {line:?} in:\n{errors}");
    }
    assert!(!errors.contains("hosts[0]"), "{errors}");

    let empty = listener("public", "hosts = []");
    let errors = load(&pki, &empty)
        .err()
        .expect("empty hosts refused")
        .to_string();
    assert!(errors.contains("listeners[0].hosts: is empty"), "{errors}");
}

#[test]
fn check_warns_of_routes_no_listener_name_serves_and_of_names_no_certificate_carries() {
    let pki = Pki::generate();
    pki.server_named("nameless", &[]);
    let toml = format!(
        "{}{}{}{}",
        listener("public", "hosts = [\"localhost\", \"pinned.internal\"]"),
        listener_with_certs("bare", "", &[("nameless.pem", "nameless.key")]),
        route(
            "api",
            "/",
            &["http://127.0.0.1:9"],
            "host = \"api.example.com\""
        ),
        route(
            "local",
            "/",
            &["http://127.0.0.1:9"],
            "host = \"LocalHost.\""
        ),
    );
    let loaded = load(&pki, &toml).unwrap_or_else(|e| panic!("{e}"));
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    let has = |key: &str, text: &str| {
        warnings
            .iter()
            .any(|w| w.contains(&format!(": {key}: ")) && w.contains(text))
    };
    assert!(
        has(
            "routes[0].host",
            "\"api.example.com\" is not a name served by listener \"public\" ("
        ),
        "{warnings:#?}"
    );
    // The bare listener serves any name, so no warning names it; the served route none.
    assert!(
        !warnings.iter().any(|w| w.contains("listener \"bare\"")),
        "{warnings:#?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("routes[1]")),
        "{warnings:#?}"
    );
    assert!(
        has(
            "listeners[0].hosts[1]",
            "\"pinned.internal\" is not among the certificates' names"
        ),
        "{warnings:#?}"
    );
    assert!(
        has(
            "listeners[1].hosts",
            "the certificates carry no DNS or IP names"
        ),
        "{warnings:#?}"
    );
}
