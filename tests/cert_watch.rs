//! Certificates renewed on disk take effect without a signal: the listener's `server.pem`
//! and `server.key` replaced (as certbot or a secrets operator would: new files renamed over
//! the old) are served to new handshakes within the watcher's debounce; a broken renewal (a
//! key that does not match) is refused and the last good certificate stays; every certificate,
//! key, CA and CRL file the config names (listeners, admin, upstream TLS) is watched.

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

#[test]
fn every_tls_file_the_config_names_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(
        &path,
        "[[listeners]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\nclient_auth = \"required\"\n\
         client_ca = \"ca.pem\"\nclient_crl = [\"clients.crl\"]\n\
         [[listeners.certificates]]\nchain = \"server.pem\"\nkey = \"server.key\"\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\nclient_ca = \"ops-ca.pem\"\n\
         [[admin.certificates]]\nchain = \"admin.pem\"\nkey = \"admin.key\"\n\n\
         [[routes]]\nname = \"erp\"\npath_prefix = \"/\"\nupstream = [\"https://erp.internal:443\"]\n\
         upstream_tls = { ca = \"erp-ca.pem\", client_certificate = \"gw.pem\", key = \"gw.key\" }\n",
    )
    .unwrap();
    let mut want: Vec<std::path::PathBuf> = [
        "ca.pem",
        "clients.crl",
        "server.pem",
        "server.key",
        "ops-ca.pem",
        "admin.pem",
        "admin.key",
        "erp-ca.pem",
        "gw.pem",
        "gw.key",
    ]
    .iter()
    .map(|f| dir.path().join(f))
    .collect();
    want.sort();
    assert_eq!(portcullis::config::tls_files(&path), want);
}
