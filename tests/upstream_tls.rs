//! TLS to upstreams, end to end over real sockets with PKIs made at test time: an HTTPS
//! upstream with a private CA serves, one handshake carries many requests; a certificate from
//! another CA, an expired one, one for another name, or a key off the pins each gets 502
//! `upstream_tls_failed` (the reason in the metric and log, not the body) before a request
//! byte reaches the upstream; mutual TLS presents the gateway's certificate; every bad
//! `upstream_tls` key is reported with its path.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::SystemTime;

use portcullis::identity::ClientIdentity;
use support::*;

/// One listener and one route "/api" to `target` with `upstream_tls` keys `tls` (TOML inline
/// table body, empty for none).
fn config(target: &str, tls: &str) -> String {
    let keys = if tls.is_empty() {
        String::new()
    } else {
        format!("upstream_tls = {{ {tls} }}")
    };
    format!(
        "{}{}",
        listener("public", ""),
        route("api", "/api", &[target], &keys)
    )
}

fn spki_pin(der: &[u8]) -> String {
    ClientIdentity::from_der(der).unwrap().spki_pin()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_with_a_private_ca_serves_and_one_handshake_carries_a_hundred_requests() {
    let pki = Pki::generate();
    let up = Upstream::tls_echo("secure", pki.upstream_tls("server", None)).await;
    let gw = Gateway::start(pki.dir(), &config(&up.https_url(), "ca = \"ca.pem\"")).await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    for i in 0..100 {
        let r = c.call(get(&format!("/api/{i}"))).await.unwrap();
        assert_eq!(r.echo().uri, format!("/api/{i}"));
    }
    assert_eq!(up.request_count(), 100);
    assert_eq!(up.handshakes(), 1, "each request paid a handshake");
    assert_eq!(up.accepts(), 1);
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_upstream_tls_handshakes_total",
            &[("upstream", "api")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_problem_is_a_502_before_any_request_byte_reaches_the_upstream() {
    let pki = Pki::generate();
    pki.expired_server();
    pki.foreign_server();
    let other_pin = spki_pin(pki.other_server.as_ref());
    let cases = [
        (
            "foreign-server",
            "ca = \"ca.pem\"".to_owned(),
            "unknown_issuer",
        ),
        // Without `ca`, the public roots: a private CA is unknown there.
        ("server", String::new(), "unknown_issuer"),
        ("expired-server", "ca = \"ca.pem\"".to_owned(), "expired"),
        // other.pem names other.test; the target is 127.0.0.1.
        ("other", "ca = \"ca.pem\"".to_owned(), "wrong_name"),
        (
            "server",
            format!("ca = \"ca.pem\", pins = [\"{other_pin}\"]"),
            "pin_mismatch",
        ),
    ];
    for (cert, tls, reason) in cases {
        let up = Upstream::tls_echo("never", pki.upstream_tls(cert, None)).await;
        let gw = Gateway::start(pki.dir(), &config(&up.https_url(), &tls)).await;
        let mut c = connect_h1(&pki, gw.addr()).await;
        let r = c.call(get("/api/orders")).await.unwrap();
        r.assert_denied(502, "upstream_tls_failed");
        assert!(
            !r.text().contains(reason) && !r.text().contains("127.0.0.1"),
            "{cert}: the body says more than the reason code: {}",
            r.text()
        );
        assert_eq!(
            up.request_count(),
            0,
            "{cert}: a request reached the upstream"
        );
        assert_eq!(up.handshakes(), 0, "{cert}: the handshake completed");
        let m = gw.metrics();
        assert_eq!(
            m.value(
                "portcullis_upstream_tls_failures_total",
                &[("upstream", "api"), ("reason", reason)]
            ),
            Some(1.0),
            "{cert} with {tls:?}: expected reason {reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_upstream_with_its_own_key_serves() {
    let pki = Pki::generate();
    let pin = spki_pin(pki.server.as_ref());
    let up = Upstream::tls_echo("pinned", pki.upstream_tls("server", None)).await;
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &up.https_url(),
            &format!("ca = \"ca.pem\", pins = [\"{pin}\"], min_tls = \"1.3\""),
        ),
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    c.call(get("/api")).await.unwrap().echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_gateway_certificate_and_without_it_the_upstream_refuses() {
    let pki = Pki::generate();
    let gateway_id = pki.new_client("gateway");
    pki.write_identity("gateway-client", &gateway_id);
    let up = Upstream::tls_echo("mtls", pki.upstream_tls("server", Some("ca.pem"))).await;

    let gw = Gateway::start(
        pki.dir(),
        &config(
            &up.https_url(),
            "ca = \"ca.pem\", client_certificate = \"gateway-client.pem\", key = \"gateway-client.key\"",
        ),
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    c.call(get("/api")).await.unwrap().echo();
    assert_eq!(
        up.peer_certs(),
        vec![Some(gateway_id.cert().as_ref().to_vec())],
        "the upstream did not see the gateway's certificate"
    );
    drop(c);
    drop(gw);

    // TLS 1.2: the upstream refuses inside the handshake, so the gateway knows it was TLS.
    let up12 = Upstream::tls_echo(
        "mtls12",
        pki.upstream_tls_with("server", Some("ca.pem"), &[&rustls::version::TLS12]),
    )
    .await;
    let gw = Gateway::start(pki.dir(), &config(&up12.https_url(), "ca = \"ca.pem\"")).await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    c.call(get("/api"))
        .await
        .unwrap()
        .assert_denied(502, "upstream_tls_failed");
    assert_eq!(up12.request_count(), 0);
    assert_eq!(
        gw.metrics().value(
            "portcullis_upstream_tls_failures_total",
            &[("upstream", "api"), ("reason", "refused_by_upstream")]
        ),
        Some(1.0)
    );
    drop(c);
    drop(gw);

    // TLS 1.3: the refusal is an alert after the client's side of the handshake is done; the
    // gateway reports it as TLS when the alert is read, as a broken exchange when the
    // upstream's reset beats it. Either way a 502, and no request reached the upstream.
    let gw = Gateway::start(pki.dir(), &config(&up.https_url(), "ca = \"ca.pem\"")).await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    let r = c.call(get("/api")).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let reason = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        reason == "upstream_tls_failed" || reason == "upstream_unavailable",
        "{reason}"
    );
    assert_eq!(
        up.request_count(),
        1,
        "the refused connection carried a request"
    );
}

#[test]
fn every_bad_upstream_tls_key_is_reported_with_its_path() {
    let pki = Pki::generate();
    pki.write("not-pem.txt", "hello");
    let load = |toml: String| {
        let path = write_config(pki.dir(), &toml);
        match portcullis::config::load_str(&path, &toml, SystemTime::now()) {
            Ok(_) => panic!("loaded:\n{toml}"),
            Err(e) => e.to_string(),
        }
    };
    let err = load(
        format!(
            "{}{}{}{}",
            listener("public", ""),
            route(
                "a",
                "/a",
                &["https://127.0.0.1:8443"],
                "upstream_tls = { ca = \"not-pem.txt\", server_name = \"bad name!\", pins = [\"sha256/short\"], min_tls = \"1.1\", client_certificate = \"server.pem\" }"
            ),
            route(
                "b",
                "/b",
                &["https://127.0.0.1:8443"],
                "upstream_tls = { client_certificate = \"server.pem\", key = \"other.key\" }"
            ),
            route(
                "c",
                "/c",
                &["http://127.0.0.1:8080", "https://127.0.0.1:8443"],
                ""
            ),
        ) + &route(
            "d",
            "/d",
            &["http://127.0.0.1:8080"],
            "upstream_tls = { ca = \"ca.pem\" }",
        ),
    );
    for (key, says) in [
        ("routes[0].upstream_tls.ca", "not PEM"),
        ("routes[0].upstream_tls.server_name", "not a DNS name"),
        ("routes[0].upstream_tls.pins[0]", "sha256/short"),
        ("routes[0].upstream_tls.min_tls", "\"1.1\""),
        ("routes[0].upstream_tls.key", "needs its key"),
        ("routes[1].upstream_tls.key", "does not match"),
        ("routes[2].upstream", "mixes http:// and https://"),
        ("routes[3].upstream_tls", "has none"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no error for {key} in:\n{err}"));
        assert!(line.contains(says), "{key}: {line}");
    }
}
