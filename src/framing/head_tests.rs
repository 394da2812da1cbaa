//! Unit tests of `head.rs`: a table of heads, each judged here and served to a real hyper
//! HTTP/1 server (the same settings as the gateway's) over an in-memory pipe: whatever
//! hyper refuses must be refused here, and whatever hyper accepts must pass.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::denial::{Denial, HeadRefusal};

const MAX_HEADERS: usize = 20;

/// Whether hyper serves `head` (its service is called), or refuses it.
fn hyper_accepts(head: &[u8]) -> bool {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 20);
        let called = Arc::new(AtomicBool::new(false));
        let seen = called.clone();
        let service = hyper::service::service_fn(move |_req| {
            seen.store(true, Ordering::SeqCst);
            async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.max_buf_size(64 * 1024).max_headers(MAX_HEADERS);
        let serving =
            tokio::spawn(builder.serve_connection(hyper_util::rt::TokioIo::new(server), service));
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(head).await.unwrap();
        wr.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), rd.read_to_end(&mut out)).await;
        let _ = serving.await;
        called.load(Ordering::SeqCst)
    })
}

fn check(head: &str, want: Result<Framing, Denial>) {
    let got = judge(head.as_bytes(), MAX_HEADERS).map(|j| j.framing);
    assert_eq!(got, want, "judged {head:?}");
    assert_eq!(
        hyper_accepts(head.as_bytes()),
        got.is_ok(),
        "hyper disagrees on {head:?} (judged {got:?})"
    );
}

const MALFORMED: Result<Framing, Denial> = Err(Denial::Head(HeadRefusal::Malformed));
const CODING: Result<Framing, Denial> = Err(Denial::Head(HeadRefusal::UnsupportedTransferCoding));
const AMBIGUOUS: Result<Framing, Denial> = Err(Denial::AmbiguousFraming);

#[test]
fn ordinary_heads_pass_with_their_framing() {
    check("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(Framing::None));
    check("GET /a?b=c HTTP/1.0\r\n\r\n", Ok(Framing::None));
    check(
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        Ok(Framing::Length(5)),
    );
    check(
        "POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        Ok(Framing::Length(5)),
    );
    check(
        "POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Ok(Framing::Chunked),
    );
    check("GET / HTTP/1.1\nHost: a\n\n", Ok(Framing::None));
    check(
        "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Ok(Framing::None),
    );
    check("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Ok(Framing::None));
    check(
        "GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
        Ok(Framing::None),
    );
    check(
        "GET /%7B%22a%22%7D/{\"json\"} HTTP/1.1\r\nHost: a\r\n\r\n",
        Ok(Framing::None),
    );
    check(
        "GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
        Ok(Framing::None),
    );
    check(
        "GET / HTTP/1.1\r\nX-Obs: caf\u{e9}\tand tab\r\n\r\n",
        Ok(Framing::None),
    );
}

#[test]
fn content_length_with_transfer_encoding_is_ambiguous_but_hyper_takes_it() {
    // hyper reads chunked and drops the length; the pipeline refuses such a connection.
    check(
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        Ok(Framing::Ambiguous),
    );
    check(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
        Ok(Framing::Ambiguous),
    );
}

#[test]
fn differing_or_malformed_content_lengths_are_ambiguous_framing() {
    check(
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        AMBIGUOUS,
    );
    check("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", AMBIGUOUS);
    check("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", AMBIGUOUS);
    check("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", AMBIGUOUS);
    check(
        "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        AMBIGUOUS,
    );
}

#[test]
fn an_unknown_or_misplaced_transfer_coding_is_refused() {
    check("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", CODING);
    check(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        CODING,
    );
    check(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
        CODING,
    );
    check(
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        CODING,
    );
}

#[test]
fn control_bytes_folds_and_bad_syntax_are_malformed() {
    check("GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n", MALFORMED);
    check("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", MALFORMED);
    check("GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", MALFORMED);
    check("GET / HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n", MALFORMED);
    check("GET / HTTP/1.1\r\nX-A: a\r\n\tfolded\r\n\r\n", MALFORMED);
    check("GET / HTTP/1.1\r\nX A: a\r\n\r\n", MALFORMED);
    check("GET / HTTP/1.1\r\n: a\r\n\r\n", MALFORMED);
    check("GET / HTTP/1.1\r\nno colon\r\n\r\n", MALFORMED);
    check("GET / HTTP/2.0\r\n\r\n", MALFORMED);
    check("GET / HTTP/1.1 extra\r\n\r\n", MALFORMED);
    check("GET /a b HTTP/1.1\r\n\r\n", MALFORMED);
    check("G(T / HTTP/1.1\r\n\r\n", MALFORMED);
    check("GET /<script> HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED);
    check("GET /a`b HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED);
    check("GET /\u{ff} HTTP/1.1\r\n\r\n", Ok(Framing::None));
    check("GET http:// HTTP/1.1\r\n\r\n", MALFORMED);
    check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", MALFORMED);
    check("\r\rGET / HTTP/1.1\r\n\r\n", MALFORMED);
}

#[test]
fn a_non_utf8_target_is_malformed_as_http_reads_it() {
    let mut head = b"GET /\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    assert_eq!(judge(&head, MAX_HEADERS).map(|j| j.framing), MALFORMED);
    assert!(!hyper_accepts(&head));
    head[5] = b'a';
    head[6] = b'b';
    assert_eq!(
        judge(&head, MAX_HEADERS).map(|j| j.framing),
        Ok(Framing::None)
    );
}

#[test]
fn more_header_lines_than_max_headers_are_too_many() {
    let mut head = String::from("GET / HTTP/1.1\r\n");
    for i in 0..MAX_HEADERS {
        head.push_str(&format!("X-{i}: v\r\n"));
    }
    check(&format!("{head}\r\n"), Ok(Framing::None));
    head.push_str("X-Last: v\r\n\r\n");
    check(&head, Err(Denial::Head(HeadRefusal::TooManyHeaders)));
}

#[test]
fn a_target_past_hyper_limit_is_too_long() {
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET));
    assert_eq!(
        judge(long.as_bytes(), MAX_HEADERS).map(|j| j.framing),
        Err(Denial::Head(HeadRefusal::UriTooLong))
    );
    let fits = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET - 1));
    assert_eq!(
        judge(fits.as_bytes(), MAX_HEADERS).map(|j| j.framing),
        Ok(Framing::None)
    );
}

#[test]
fn a_large_max_headers_is_honoured_past_the_stack_array() {
    let mut head = String::from("GET / HTTP/1.1\r\n");
    for i in 0..300 {
        head.push_str(&format!("X-{i}: v\r\n"));
    }
    head.push_str("\r\n");
    assert_eq!(
        judge(head.as_bytes(), 300).map(|j| j.framing),
        Ok(Framing::None)
    );
    assert_eq!(
        judge(head.as_bytes(), 299).map(|j| j.framing),
        Err(Denial::Head(HeadRefusal::TooManyHeaders))
    );
}

#[test]
fn connect_and_an_upgrade_header_on_http11_offer_an_upgrade_as_hyper_reads_them() {
    let upgrade = |h: &str| judge(h.as_bytes(), MAX_HEADERS).map(|j| j.upgrade);
    assert_eq!(
        upgrade("GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
        Ok(true)
    );
    assert_eq!(
        upgrade("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
        Ok(true)
    );
    assert_eq!(
        upgrade("GET /ws HTTP/1.0\r\nUpgrade: websocket\r\n\r\n"),
        Ok(false)
    );
    assert_eq!(upgrade("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(false));
}
