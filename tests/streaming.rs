//! Proves that bodies stream through the gateway: a 64 MiB upload and a 64 MiB download arrive
//! intact (length and checksum), a chunked upload too, and the first chunk of a slow upstream
//! response reaches the client before the upstream has finished (HTTP/1.1 and HTTP/2 fronts),
//! so the gateway does not buffer whole responses.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::data::{Fnv, GeneratedBody, expected_digest};
use support::*;

const BIG: u64 = 64 * 1024 * 1024;
const BIG_TIMEOUT: Duration = Duration::from_secs(180);

/// Read a body frame by frame, hashing as it goes: (length, checksum).
async fn drain(mut body: Incoming) -> (u64, u64) {
    let mut len = 0u64;
    let mut fnv = Fnv::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap_or_else(|e| panic!("body broke after {len} bytes: {e:?}"));
        if let Ok(d) = frame.into_data() {
            len += d.len() as u64;
            fnv.update(&d);
        }
    }
    (len, fnv.finish())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_upload_reaches_the_upstream_intact() {
    let pki = Pki::generate();
    let up = Upstream::echo("sink").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;
    let seed = 0x5eed_0001;
    let expected = tokio::task::spawn_blocking(move || expected_digest(seed, BIG));

    let mut client = connect_h1(&pki, gw.addr()).await;
    let req = request("POST", "/upload")
        .header("content-type", "application/octet-stream")
        .body(boxed(GeneratedBody::new(seed, BIG)))
        .unwrap();
    let resp = client.send_within(req, BIG_TIMEOUT).await.unwrap();
    let resp = TestResponse::read(resp).await.unwrap();
    let echo = resp.echo();
    assert_eq!(echo.body_error, None);
    assert_eq!(echo.body_len, BIG, "upload length at the upstream");
    assert_eq!(
        echo.body_fnv,
        expected.await.unwrap(),
        "upload checksum at the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_without_content_length_reaches_the_upstream_intact() {
    let pki = Pki::generate();
    let up = Upstream::echo("sink").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;
    let (seed, len) = (0x5eed_0002, 8 * 1024 * 1024 + 8);
    let expected = tokio::task::spawn_blocking(move || expected_digest(seed, len));

    let mut client = connect_h1(&pki, gw.addr()).await;
    let req = request("POST", "/upload")
        .body(boxed(GeneratedBody::without_length(seed, len)))
        .unwrap();
    let resp = client.send_within(req, BIG_TIMEOUT).await.unwrap();
    let echo = TestResponse::read(resp).await.unwrap().echo();
    assert_eq!(echo.body_error, None);
    assert_eq!(echo.body_len, len);
    assert_eq!(echo.body_fnv, expected.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_download_reaches_the_client_intact() {
    let pki = Pki::generate();
    let seed = 0x5eed_0003;
    let up = Upstream::download(seed, BIG).await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;
    let expected = tokio::task::spawn_blocking(move || expected_digest(seed, BIG));

    let mut client = connect_h1(&pki, gw.addr()).await;
    let resp = client.send(get("/download")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    if let Some(cl) = resp.headers().get("content-length") {
        assert_eq!(cl.to_str().unwrap(), BIG.to_string());
    }
    let (len, digest) = tokio::time::timeout(BIG_TIMEOUT, drain(resp.into_body()))
        .await
        .expect("download not complete within 180 s");
    assert_eq!(len, BIG, "download length at the client");
    assert_eq!(
        digest,
        expected.await.unwrap(),
        "download checksum at the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_of_a_slow_response_arrives_before_the_upstream_finishes() {
    let pki = Pki::generate();
    let (up, release) = Upstream::slow_stream().await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let exchange = async {
        let mut client = connect_h1(&pki, gw.addr()).await;
        let resp = client.send(get("/slow")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        read_slow_body(resp.into_body(), release).await
    };
    let got = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect(
            "chunk 1 did not reach the client while the upstream was still sending: \
             the gateway buffers the response",
        );
    assert_eq!(got, b"chunk-1;chunk-2;");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_of_a_slow_response_arrives_early_over_http2() {
    let pki = Pki::generate();
    let (up, release) = Upstream::slow_stream().await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;

    let exchange = async {
        let tls = TlsClient::new(&pki)
            .h2()
            .connect(gw.addr(), "localhost")
            .await
            .unwrap();
        let mut h2 = H2::handshake(tls).await.unwrap();
        let resp = h2
            .send(
                h2_request("GET", "localhost", "/slow")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        read_slow_body(resp.into_body(), release).await
    };
    let got = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect(
            "chunk 1 did not reach the HTTP/2 client while the upstream was still sending: \
             the gateway buffers the response",
        );
    assert_eq!(got, b"chunk-1;chunk-2;");
}

/// Read until `chunk-1;` has arrived, then let the upstream finish, then read the rest.
async fn read_slow_body(mut body: Incoming, release: tokio::sync::oneshot::Sender<()>) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < b"chunk-1;".len() {
        let frame = body
            .frame()
            .await
            .expect("body ended before chunk 1")
            .expect("body error before chunk 1");
        if let Ok(d) = frame.into_data() {
            got.extend_from_slice(&d);
        }
    }
    assert_eq!(got, b"chunk-1;", "only chunk 1 can have been sent yet");
    release.send(()).expect("upstream gone");
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.expect("body error after chunk 1").into_data() {
            got.extend_from_slice(&d);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_read_slowly_past_release_idle_after_arrives_whole_and_the_connection_stays_usable()
 {
    // The upstream's body is all handed to hyper long before this client reads it: the
    // request is no longer in flight while hyper still flushes, and a release in that
    // window must neither cut the response nor close the connection.
    let pki = Pki::generate();
    let seed = 0x5eed_0009;
    let len: u64 = 4 * 1024 * 1024;
    let up = Upstream::download(seed, len).await;
    let toml = format!(
        "{}{}",
        server("release_idle_after = \"50ms\""),
        simple(&up.url())
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let mut client = connect_h1(&pki, gw.addr()).await;
    for round in 0..2 {
        let resp = client.send(get("/slowly")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut got = 0u64;
        let mut fnv = Fnv::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap_or_else(|e| panic!("round {round}: broke after {got}: {e:?}"));
            if let Ok(d) = frame.into_data() {
                got += d.len() as u64;
                fnv.update(&d);
                if got < 256 * 1024 {
                    // Slow at first: several release periods pass mid-response.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        assert_eq!(got, len, "round {round}: length");
        assert_eq!(
            fnv.finish(),
            expected_digest(seed, len),
            "round {round}: checksum"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        up.accepts(),
        1,
        "both responses came over one pooled upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_pauses_longer_than_body_timeout_is_cut_off() {
    let pki = Pki::generate();
    // The second chunk never comes while `_release` is held.
    let (up, _release) = Upstream::slow_stream().await;
    let toml = format!(
        "{}[[upstreams]]\nname = \"slow\"\ntargets = [\"{}\"]\nbody_timeout = \"300ms\"\n\n\
         [[routes]]\nname = \"slow\"\npath_prefix = \"/\"\nupstream = \"slow\"\n",
        listener("public", ""),
        up.url()
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let mut client = connect_h1(&pki, gw.addr()).await;
    let resp = client.send(get("/slow")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"chunk-1;");
    // The pause ends the body with an error well before the test's own limit.
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the gateway kept waiting on a body that paused past body_timeout");
    assert!(rest.is_err(), "the cut body must not look complete");
}
