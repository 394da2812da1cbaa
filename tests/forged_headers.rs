//! Proves a client cannot hand the upstream a header that looks like the gateway's own:
//! underscore spellings that CGI, WSGI, Rack and PHP read as the dashed name, identity
//! headers after a rename or with a field turned off, `X-Real-IP` and path overrides, and a
//! forwarding header its trusted proxy does not write. And that a client's broken body is
//! the client's error, and that the admin API answers only under its own names.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use portcullis::denial::Denial;
use support::raw::raw_tls;
use support::*;

/// Headers a Python app behind the gateway would read as `HTTP_X_CLIENT_CERT_SUBJECT` etc.
const FORGED: &[(&str, &str)] = &[
    ("X_Client_Cert_Subject", "CN=root"),
    ("X_Client_Cert_Spki", "sha256/forged"),
    ("X_Auth_Subject", "root"),
    ("X_Auth_Scopes", "admin"),
    ("X_Forwarded_For", "10.0.0.1"),
    ("X_Request_Id", "forged"),
];

/// One raw request (underscore names go out exactly as written) and the echo it got.
async fn raw_echo(pki: &Pki, gw: &Gateway, extra: &[(&str, &str)]) -> (u16, String) {
    let mut head = String::from("GET /app HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = raw_tls(pki, gw.addr()).await;
    conn.send(head.as_bytes()).await.expect("send");
    let resp = conn.response(Duration::from_secs(10)).await.response();
    (resp.status, resp.text())
}

fn underscored(echo: &Echo) -> Vec<&str> {
    echo.headers
        .iter()
        .filter(|(k, _)| k.contains('_'))
        .map(|(k, _)| k.as_str())
        .collect()
}

async fn gateway_with(pki: &Pki, up: &Upstream, server_keys: &str, extra: &str) -> Gateway {
    let toml = format!(
        "{}{}{}{}[admin]\nbind = \"127.0.0.1:0\"\n\n",
        server(server_keys),
        listener(
            "public",
            "client_auth = \"optional\"\nclient_ca = \"ca.pem\""
        ),
        route("app", "/", &[&up.url()], ""),
        extra
    );
    Gateway::start(pki.dir(), &toml).await
}

/// The echo of a request carrying every forged header and `X_Custom_Thing`, through a
/// gateway with `server_keys`.
async fn forged_echo(server_keys: &str) -> Echo {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = gateway_with(&pki, &up, server_keys, "").await;
    let mut sent: Vec<(&str, &str)> = FORGED.to_vec();
    sent.push(("X_Custom_Thing", "1"));
    let (status, body) = raw_echo(&pki, &gw, &sent).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("echo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_spellings_of_identity_and_claim_headers_are_dropped_by_default() {
    let echo = forged_echo("").await;
    assert_eq!(
        underscored(&echo),
        Vec::<&str>::new(),
        "underscore names reached the upstream"
    );
    assert_eq!(echo.header("x-client-cert-subject"), None);
    assert_ne!(echo.header("x-request-id"), Some("forged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_underscores_allowed_only_names_that_fold_onto_the_gateways_own_are_removed() {
    let echo = forged_echo("underscores_in_headers = \"allow\"").await;
    assert_eq!(underscored(&echo), ["x_custom_thing"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_underscores_refused_a_request_carrying_one_gets_400_invalid_header() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = gateway_with(&pki, &up, "underscores_in_headers = \"refuse\"", "").await;
    let (status, body) = raw_echo(&pki, &gw, &[("X_Auth_Subject", "root")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"invalid_header\""), "{body}");
    assert_eq!(up.request_count(), 0);
    assert_eq!(gw.denial_count(Denial::InvalidHeader), 1);
    let (status, _) = raw_echo(&pki, &gw, &[("X-Auth-Subject", "root")]).await;
    assert_eq!(status, 200, "a dashed name is not refused (it is scrubbed)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_or_disabled_identity_headers_are_still_scrubbed_under_every_name() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let identity = "[identity_headers]\nsubject = \"x-ssl-subject\"\ncommon_name = \"\"\n\n";
    let gw = gateway_with(&pki, &up, "", identity).await;
    // A real certificate on the connection: its subject goes out as x-ssl-subject only.
    let tls = TlsClient::new(&pki)
        .identity(&pki.client)
        .connect(gw.addr(), "localhost")
        .await
        .expect("TLS");
    let mut h1 = support::client::H1::handshake(tls).await.expect("h1");
    let mut req = request("GET", "/app");
    for name in [
        "x-client-cert-subject",
        "x-client-cert-cn",
        "x-ssl-subject",
        "x-client-cert-spki",
    ] {
        req = req.header(name, "CN=root");
    }
    let echo = h1
        .call(req.body(empty()).unwrap())
        .await
        .expect("call")
        .echo();
    assert_eq!(
        echo.header("x-client-cert-subject"),
        None,
        "renamed default kept"
    );
    assert_eq!(echo.header("x-client-cert-cn"), None, "disabled field kept");
    let subject = echo.header("x-ssl-subject").expect("the verified subject");
    assert_ne!(subject, "CN=root");
    assert_ne!(echo.header("x-client-cert-spki"), Some("CN=root"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_written_x_real_ip_and_path_overrides_never_reach_the_upstream() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = gateway_with(&pki, &up, "", "").await;
    let mut req = request("GET", "/app");
    for name in [
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-prefix",
        "x-forwarded-port",
    ] {
        req = req.header(name, "/admin");
    }
    let echo = send_one(&pki, gw.addr(), req.body(empty()).unwrap())
        .await
        .echo();
    for name in [
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-prefix",
        "x-forwarded-port",
    ] {
        assert_eq!(echo.header(name), None, "{name} reached the upstream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_that_writes_forwarded_a_client_x_forwarded_for_passes_no_allow_list() {
    let pki = Pki::generate();
    let up = Upstream::echo("partners").await;
    let toml = format!(
        "{}{}",
        listener(
            "public",
            "trusted_proxies = [\"127.0.0.1\"]\nforwarded_header = \"forwarded\""
        ),
        route("p", "/", &[&up.url()], "allow = [\"203.0.113.0/24\"]"),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let forged = request("GET", "/p")
        .header("x-forwarded-for", "203.0.113.7")
        .body(empty())
        .unwrap();
    send_one(&pki, gw.addr(), forged)
        .await
        .assert_denied(403, "ip_not_allowed");
    let real = request("GET", "/p")
        .header("forwarded", "for=203.0.113.7")
        .header("x-forwarded-for", "6.6.6.6")
        .body(empty())
        .unwrap();
    let echo = send_one(&pki, gw.addr(), real).await.echo();
    // The X-Forwarded-For the upstream gets is built from the chain the proxy wrote.
    assert_eq!(
        echo.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(
        echo.header("forwarded"),
        Some("for=203.0.113.7, for=127.0.0.1")
    );
    assert_eq!(up.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_a_400_client_error_not_an_upstream_failure() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = gateway_with(&pki, &up, "", "").await;
    let mut conn = raw_tls(&pki, gw.addr()).await;
    conn.send(
        b"POST /app HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nzz-not-hex\r\n",
    )
    .await
    .expect("send");
    let resp = conn.response(Duration::from_secs(10)).await.response();
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(
        resp.text().contains("\"bad_request_body\""),
        "{}",
        resp.text()
    );
    assert_eq!(gw.denial_count(Denial::BadRequestBody), 1);
    assert_eq!(gw.denial_count(Denial::UpstreamUnavailable), 0);
    let metrics = Admin::new(gw.admin_addr()).metrics().await;
    let upstream_errors: f64 = metrics
        .samples
        .iter()
        .filter(|s| s.name == "portcullis_upstream_errors_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(
        upstream_errors, 0.0,
        "the client's body was counted against the upstream"
    );
}

/// One raw HTTP/1.1 exchange with the admin listener (plain TCP on loopback).
async fn admin_raw(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut conn = support::raw::RawConn::new(tcp);
    conn.send(head.as_bytes()).await.expect("send");
    let resp = conn.response(Duration::from_secs(10)).await.response();
    (resp.status, resp.text())
}

/// `GET path` to the admin listener with `Host: host`.
async fn admin_get(addr: std::net::SocketAddr, path: &str, host: &str) -> (u16, String) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    admin_raw(addr, &head).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_only_its_own_names_and_refuses_cross_origin_changes() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = gateway_with(&pki, &up, "", "").await;
    let admin = gw.admin_addr();
    let port = admin.port();

    // A DNS-rebinding page reaches 127.0.0.1 under its own name: 421 before anything else.
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        "localhost.evil.example".to_owned(),
        "10.0.0.1".to_owned(),
    ] {
        let (status, body) = admin_get(admin, "/config", &host).await;
        assert_eq!(status, 421, "Host {host}: {body}");
        assert!(body.contains("\"misdirected_request\""), "{body}");
        assert!(
            !body.contains("listeners"),
            "config leaked under Host {host}"
        );
    }
    let (status, _) = admin_raw(admin, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 421, "no Host at all");
    // Its own address and localhost are its names.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST.".into(),
    ] {
        let (status, body) = admin_get(admin, "/healthz", &host).await;
        assert_eq!(status, 200, "Host {host}: {body}");
    }

    // A state change from a page of another origin is refused; the same from a tool (no
    // Origin) or from the admin's own origin goes through.
    let reload = |origin: Option<&str>| {
        let mut head = format!(
            "POST /reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n"
        );
        if let Some(o) = origin {
            head.push_str(&format!("Origin: {o}\r\n"));
        }
        head.push_str("\r\n");
        head
    };
    for origin in [
        "http://evil.example",
        "null",
        &format!("http://localhost:{}", port + 1),
    ] {
        let (status, body) = admin_raw(admin, &reload(Some(origin))).await;
        assert_eq!(status, 403, "Origin {origin}: {body}");
        assert!(body.contains("\"cross_origin_refused\""), "{body}");
    }
    let (status, body) = admin_raw(admin, &reload(None)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin_raw(admin, &reload(Some(&format!("http://127.0.0.1:{port}")))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_hosts_adds_names_the_admin_api_answers_to() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}[admin]\nbind = \"127.0.0.1:0\"\nhosts = [\"Gateway-Admin.internal.\"]\n\n",
        listener("public", ""),
        route("app", "/", &[&up.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let (status, body) =
        admin_get(gw.admin_addr(), "/healthz", "gateway-admin.internal:9901").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_ends_before_its_content_length_is_the_clients_error() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = gateway_with(&pki, &up, "", "").await;
    let mut conn = raw_tls(&pki, gw.addr()).await;
    conn.send(b"POST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .expect("send");
    // The client goes away mid-body (TLS close_notify, then EOF).
    tokio::io::AsyncWriteExt::shutdown(&mut conn.stream)
        .await
        .expect("shutdown");
    let _ = conn.response(Duration::from_secs(5)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.denial_count(Denial::BadRequestBody) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the cut body was not counted as bad_request_body"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gw.denial_count(Denial::UpstreamUnavailable), 0);
}
