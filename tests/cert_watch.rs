//! Certificates renewed on disk take effect without a signal: the listener's `server.pem`
//! and `server.key` replaced (as certbot or a secrets operator would: new files renamed over
//! the old) are served to new handshakes within the watcher's debounce; a broken renewal (a
//! key that does not match) is refused and the last good certificate stays.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::*;

/// The certificate the gateway presents to a new handshake.
async fn presented(pki: &Pki, gw: &Gateway) -> Vec<u8> {
    let tls = TlsClient::new(pki)
        .connect(gw.addr(), "localhost")
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// Replace `name` in the PKI folder with `from`'s bytes by a rename, as renewal tools do.
fn swap(pki: &Pki, from: &str, name: &str) {
    let tmp = pki.path(&format!(".{name}.tmp"));
    std::fs::copy(pki.path(from), &tmp).unwrap();
    std::fs::rename(&tmp, pki.path(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_on_disk_is_served_to_new_handshakes_without_a_signal() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(
        pki.dir(),
        &format!(
            "{}{}",
            listener("public", ""),
            route("all", "/", &[&up.url()], "")
        ),
    )
    .await;
    let before = presented(&pki, &gw).await;
    assert_eq!(before, pki.server.as_ref());

    // A broken renewal (the new certificate with the old key) changes nothing.
    let renewed = pki.renewed_server();
    swap(&pki, "renewed-server.pem", "server.pem");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        presented(&pki, &gw).await,
        before,
        "the last good certificate stays"
    );

    // The key follows: the pair is good, and new handshakes get it.
    swap(&pki, "renewed-server.key", "server.key");
    let start = Instant::now();
    while presented(&pki, &gw).await != renewed.as_ref() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "renewed certificate served {:?} after its key landed",
        start.elapsed()
    );
}
