//! The admin listener over TLS with client certificates (`[[admin.certificates]]` and
//! `client_ca`): a client with a certificate from the CA reads `/healthz` and `/metrics`;
//! without one, or with one from another CA, the handshake (or the first request) fails;
//! plain HTTP to it gets no answer.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

async fn gateway(pki: &Pki) -> Gateway {
    let up = Upstream::echo("a").await;
    Gateway::start(
        pki.dir(),
        &format!(
            "{}{}[admin]\nbind = \"127.0.0.1:0\"\nclient_ca = \"ca.pem\"\n[[admin.certificates]]\nchain = \"server.pem\"\nkey = \"server.key\"\n",
            listener("public", ""),
            route("all", "/", &[&up.url()], "")
        ),
    )
    .await
}

async fn admin_get(client: TlsClient, gw: &Gateway, path: &str) -> Result<TestResponse, String> {
    let tls = client
        .connect(gw.admin_addr(), "localhost")
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut h1 = H1::handshake(tls).await?;
    h1.call(
        request("GET", path)
            .header("host", "localhost")
            .body(empty())
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_over_mutual_tls_serves_only_clients_of_its_ca() {
    let pki = Pki::generate();
    let gw = gateway(&pki).await;

    let ok = admin_get(TlsClient::new(&pki).identity(&pki.client), &gw, "/healthz")
        .await
        .expect("a client of the CA is served");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let m = admin_get(TlsClient::new(&pki).identity(&pki.client), &gw, "/metrics")
        .await
        .unwrap();
    assert_eq!(m.status, 200);
    assert!(m.text().contains("portcullis_open_connections"));

    assert!(
        admin_get(TlsClient::new(&pki), &gw, "/healthz")
            .await
            .is_err(),
        "no client certificate: refused"
    );
    assert!(
        admin_get(
            TlsClient::new(&pki).identity(&pki.foreign_client),
            &gw,
            "/healthz"
        )
        .await
        .is_err(),
        "a certificate from another CA: refused"
    );
    // Plain HTTP gets no admin answer.
    let (bytes, _) = support::raw::send_and_read_until_close(
        gw.admin_addr(),
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&bytes).contains("\"status\""),
        "plain HTTP got an admin answer"
    );
}
