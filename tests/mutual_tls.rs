//! Proves client-certificate authentication: in `required` mode a client without a certificate,
//! with a certificate from another CA, or with an expired certificate gets no response (the
//! handshake or the first request fails) on TLS 1.2 and 1.3, while a valid certificate gets 200;
//! in `optional` mode clients with and without a certificate are both served.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use rustls::SupportedProtocolVersion;
use support::*;

async fn mtls_gateway(pki: &Pki, mode: &str) -> (Upstream, Gateway) {
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener(
            "public",
            &format!("client_auth = \"{mode}\"\nclient_ca = \"ca.pem\"")
        ),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    (up, gw)
}

/// Handshake and one GET; `Ok(status)` if an HTTP response came back, `Err(where it failed)`.
async fn attempt(client: TlsClient, addr: SocketAddr) -> Result<u16, String> {
    let tls = client
        .connect(addr, "localhost")
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut h1 = H1::handshake(tls).await?;
    let resp = h1.call(get("/who")).await?;
    Ok(resp.status.as_u16())
}

const VERSIONS: [(&str, &SupportedProtocolVersion); 2] = [
    ("TLS 1.3", &rustls::version::TLS13),
    ("TLS 1.2", &rustls::version::TLS12),
];

async fn assert_refused(pki: &Pki, addr: SocketAddr, up: &Upstream, id: Option<&Identity>) {
    for (name, v) in VERSIONS {
        let mut client = TlsClient::new(pki).versions(&[v]);
        if let Some(id) = id {
            client = client.identity(id);
        }
        let got = attempt(client, addr).await;
        assert!(
            got.is_err(),
            "{name}: the client got an HTTP response {got:?}, want the connection refused"
        );
    }
    assert_eq!(
        up.request_count(),
        0,
        "a refused client reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_refuses_a_client_without_a_certificate() {
    let pki = Pki::generate();
    let (up, gw) = mtls_gateway(&pki, "required").await;
    assert_refused(&pki, gw.addr(), &up, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_refuses_a_certificate_from_another_ca() {
    let pki = Pki::generate();
    let (up, gw) = mtls_gateway(&pki, "required").await;
    assert_refused(&pki, gw.addr(), &up, Some(&pki.foreign_client)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_refuses_an_expired_client_certificate() {
    let pki = Pki::generate();
    let (up, gw) = mtls_gateway(&pki, "required").await;
    assert_refused(&pki, gw.addr(), &up, Some(&pki.expired_client)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_accepts_a_valid_client_certificate() {
    let pki = Pki::generate();
    let (up, gw) = mtls_gateway(&pki, "required").await;
    for (name, v) in VERSIONS {
        let client = TlsClient::new(&pki).versions(&[v]).identity(&pki.client);
        assert_eq!(attempt(client, gw.addr()).await, Ok(200), "{name}");
    }
    assert_eq!(up.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_accepts_a_client_without_a_certificate() {
    let pki = Pki::generate();
    let (up, gw) = mtls_gateway(&pki, "optional").await;
    for (name, v) in VERSIONS {
        let client = TlsClient::new(&pki).versions(&[v]);
        assert_eq!(attempt(client, gw.addr()).await, Ok(200), "{name}");
    }
    assert_eq!(up.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_accepts_a_client_with_a_valid_certificate() {
    let pki = Pki::generate();
    let (up, gw) = mtls_gateway(&pki, "optional").await;
    for (name, v) in VERSIONS {
        let client = TlsClient::new(&pki).versions(&[v]).identity(&pki.client);
        assert_eq!(attempt(client, gw.addr()).await, Ok(200), "{name}");
    }
    assert_eq!(up.request_count(), 2);
}
