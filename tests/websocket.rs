//! WebSocket through the gateway: on a route with `websocket = true`, messages go both ways
//! (the upstream speaks first too) after every policy stage admitted the upgrade; a route
//! without it refuses the upgrade with 403 `websocket_not_allowed`; a refused client never
//! reaches the upstream.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A WebSocket upstream on 127.0.0.1:0: greets, then echoes every text message upper-cased.
/// Counts the upgrades it accepted.
async fn ws_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrades = Arc::new(AtomicUsize::new(0));
    let counted = upgrades.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                ws.send(Message::text("hello from upstream")).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) => {
                            ws.send(Message::text(t.to_uppercase())).await.unwrap();
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, upgrades)
}

fn config(up: std::net::SocketAddr, keys: &str) -> String {
    format!(
        "{}{}",
        listener("public", ""),
        route("live", "/live", &[&format!("http://{up}")], keys)
    )
}

/// Open a WebSocket to `path` on the gateway over TLS.
async fn open(
    pki: &Pki,
    gw: std::net::SocketAddr,
    path: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<support::client::Tls>,
    tokio_tungstenite::tungstenite::Error,
> {
    let tls = TlsClient::new(pki).connect(gw, "localhost").await.unwrap();
    let req = format!("wss://localhost{path}")
        .into_client_request()
        .unwrap();
    tokio_tungstenite::client_async(req, tls)
        .await
        .map(|(ws, _)| ws)
}

fn refused_status(e: tokio_tungstenite::tungstenite::Error) -> (u16, String) {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("not an HTTP refusal: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pass_both_ways_on_a_websocket_route() {
    let pki = Pki::generate();
    let (up, upgrades) = ws_upstream().await;
    let gw = Gateway::start(pki.dir(), &config(up, "websocket = true")).await;
    let mut ws = open(&pki, gw.addr(), "/live/feed").await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("hello from upstream")
    );
    for word in ["order", "invoice", "credit note"] {
        ws.send(Message::text(word)).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(word.to_uppercase())
        );
    }
    ws.close(None).await.unwrap();
    assert_eq!(upgrades.load(Ordering::SeqCst), 1);
    // The gateway still serves plain requests after a tunnel.
    let mut c = connect_h1(&pki, gw.addr()).await;
    let r = c.call(get("/live/plain")).await.unwrap();
    assert_ne!(r.status.as_u16(), 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_websocket_refuses_the_upgrade() {
    let pki = Pki::generate();
    let (up, upgrades) = ws_upstream().await;
    let gw = Gateway::start(pki.dir(), &config(up, "")).await;
    let (status, body) = refused_status(open(&pki, gw.addr(), "/live").await.unwrap_err());
    assert_eq!(status, 403);
    assert!(body.contains("websocket_not_allowed"), "{body}");
    assert_eq!(upgrades.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_runs_before_the_upgrade() {
    let pki = Pki::generate();
    let (up, upgrades) = ws_upstream().await;
    let gw = Gateway::start(
        pki.dir(),
        &config(up, "websocket = true\ndeny = [\"127.0.0.1\"]"),
    )
    .await;
    let (status, body) = refused_status(open(&pki, gw.addr(), "/live").await.unwrap_err());
    assert_eq!(status, 403);
    assert!(body.contains("ip_not_allowed"), "{body}");
    assert_eq!(upgrades.load(Ordering::SeqCst), 0);
}

#[test]
fn websocket_needs_http1_to_the_upstream() {
    let pki = Pki::generate();
    let toml = config(
        "127.0.0.1:9".parse().unwrap(),
        "websocket = true\nupstream_protocol = \"h2c\"",
    );
    let path = write_config(pki.dir(), &toml);
    let err = match portcullis::config::load_str(&path, &toml, std::time::SystemTime::now()) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("routes[0].upstream_protocol") && err.contains("websocket"),
        "{err}"
    );
}
