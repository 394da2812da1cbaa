//! Proves client-certificate authentication: in `required` mode a client without a certificate,
//! with a certificate from another CA, or with an expired certificate gets no response (the
//! handshake or the first request fails) on TLS 1.2 and 1.3, while a valid certificate gets 200;
//! in `optional` mode clients with and without a certificate are both served; a certificate
//! on the listener's `client_crl` is refused at the handshake, and an expired CRL is a warning,
//! or refuses every client with `client_crl_expired = "refuse"`.

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

async fn crl_gateway(pki: &Pki, extra: &str) -> (Upstream, Gateway) {
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener(
            "public",
            &format!(
                "client_auth = \"required\"\nclient_ca = \"ca.pem\"\nclient_crl = [\"clients.crl\"]\n{extra}"
            )
        ),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    (up, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_on_the_crl_is_refused_at_the_handshake_and_others_are_served() {
    let pki = Pki::generate();
    let revoked = pki.new_client("revoked-machine");
    let next = time::OffsetDateTime::now_utc() + time::Duration::days(7);
    pki.write_crl("clients.crl", &[&revoked], next);
    let (up, gw) = crl_gateway(&pki, "").await;
    assert_refused(&pki, gw.addr(), &up, Some(&revoked)).await;
    let ok = attempt(TlsClient::new(&pki).identity(&pki.client), gw.addr()).await;
    assert_eq!(ok, Ok(200), "a certificate not on the list is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_crl_is_a_warning_and_refuses_every_client_when_asked() {
    let pki = Pki::generate();
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    pki.write_crl("clients.crl", &[], past);
    let path = pki.dir().join("portcullis.toml");
    let text = |extra: &str| {
        format!(
            "{}{}",
            listener(
                "public",
                &format!(
                    "client_auth = \"required\"\nclient_ca = \"ca.pem\"\nclient_crl = [\"clients.crl\"]\n{extra}"
                )
            ),
            route("all", "/", &["http://127.0.0.1:9"], "")
        )
    };
    let loaded =
        portcullis::config::load_str(&path, &text(""), std::time::SystemTime::now()).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.key == "listeners[0].client_crl[0]"
                && w.message.contains("past its next update")),
        "{:?}",
        loaded.warnings
    );
    // "warn": clients are still checked against the list as it is.
    let (_up, gw) = crl_gateway(&pki, "").await;
    assert_eq!(
        attempt(TlsClient::new(&pki).identity(&pki.client), gw.addr()).await,
        Ok(200)
    );
    drop(gw);
    // "refuse": nobody until the list is renewed.
    let (up, gw) = crl_gateway(&pki, "client_crl_expired = \"refuse\"").await;
    assert_refused(&pki, gw.addr(), &up, Some(&pki.client)).await;

    // Mistakes at their key: an unknown choice, a file that is not a CRL.
    let err = portcullis::config::load_str(
        &path,
        &text("client_crl_expired = \"maybe\""),
        std::time::SystemTime::now(),
    )
    .err()
    .expect("refused");
    assert!(
        err.0
            .iter()
            .any(|i| i.key == "listeners[0].client_crl_expired" && i.message.contains("refuse")),
        "{err}"
    );
    pki.write("garbage.crl", "not a crl");
    let err = portcullis::config::load_str(
        &path,
        &text("").replace("clients.crl", "garbage.crl"),
        std::time::SystemTime::now(),
    )
    .err()
    .expect("refused");
    assert!(
        err.0.iter().any(|i| i.key == "listeners[0].client_crl[0]"),
        "{err}"
    );
}
