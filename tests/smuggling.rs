//! Proves request-smuggling defences, with requests written byte for byte over TLS: a request
//! carrying both Content-Length and Transfer-Encoding (in any order, case or spacing), or two
//! different Content-Lengths, gets 400, the connection is closed, and neither it nor the request
//! hidden in its body ever reaches the upstream.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::raw::{RawResponse, raw_tls};
use support::*;

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";

async fn setup() -> (Pki, Upstream, Gateway) {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &simple(&up.url())).await;
    (pki, up, gw)
}

/// A POST with the given framing header lines and a body that ends a chunked message and then
/// carries a second request. `{len}` in a header line becomes the body length.
fn attack(header_lines: &[&str]) -> Vec<u8> {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let mut req = String::from("POST /first HTTP/1.1\r\nHost: localhost\r\n");
    for h in header_lines {
        req.push_str(&h.replace("{len}", &body.len().to_string()));
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(&body);
    req.into_bytes()
}

/// Send `bytes` on a fresh TLS connection; a 400 must come back, nothing after it, and the
/// connection must close. Returns the 400, or what went wrong.
async fn expect_400_and_close(
    pki: &Pki,
    gw: &Gateway,
    what: &str,
    bytes: &[u8],
) -> Result<RawResponse, String> {
    let mut conn = raw_tls(pki, gw.addr()).await;
    conn.send(bytes).await.expect("send");
    let resp = match conn.response(Duration::from_secs(10)).await {
        support::raw::Outcome::Response(r) => r,
        other => return Err(format!("{what}: want a 400 response, got {other:?}")),
    };
    if resp.status != 400 {
        return Err(format!(
            "{what}: want 400, got {}:\n{}{}",
            resp.status,
            resp.head,
            resp.text()
        ));
    }
    let (rest, closed) = conn.rest(Duration::from_secs(5)).await;
    let rest = String::from_utf8_lossy(&rest);
    if rest.contains("HTTP/1.") {
        return Err(format!(
            "{what}: a second response followed the 400, the hidden request was parsed: {rest}"
        ));
    }
    if !closed {
        return Err(format!(
            "{what}: the connection stayed open after a framing error"
        ));
    }
    Ok(resp)
}

/// Panics listing every failed case at once.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}

/// The upstream never saw anything; a good request afterwards is the only one it sees.
async fn assert_upstream_untouched(pki: &Pki, gw: &Gateway, up: &Upstream) {
    let seen: Vec<String> = up.requests().iter().map(|r| r.uri.clone()).collect();
    assert!(
        seen.is_empty(),
        "smuggling attempts reached the upstream: {seen:?}"
    );
    let echo = send_one(pki, gw.addr(), get("/after")).await.echo();
    assert_eq!(echo.uri, "/after");
    let seen: Vec<String> = up.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        seen,
        ["/after"],
        "the upstream saw more than the good request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_gets_400_and_never_reaches_the_upstream() {
    let (pki, up, gw) = setup().await;
    let mut failures = Vec::new();
    for (what, lines) in [
        (
            "CL then TE",
            &["Content-Length: {len}", "Transfer-Encoding: chunked"],
        ),
        (
            "TE then CL",
            &["Transfer-Encoding: chunked", "Content-Length: {len}"],
        ),
    ] {
        let resp = match expect_400_and_close(&pki, &gw, what, &attack(lines)).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        match resp.json() {
            Some(json) if json["error"] == "ambiguous_framing" => {
                if resp.header("x-request-id") != json["request_id"].as_str() {
                    failures.push(format!(
                        "{what}: x-request-id differs from the body: {json}"
                    ));
                }
            }
            _ => failures.push(format!(
                "{what}: 400 without the ambiguous_framing JSON denial: {}",
                resp.text()
            )),
        }
    }
    assert_no_failures(&failures);
    assert_upstream_untouched(&pki, &gw, &up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_content_lengths_get_400_and_never_reach_the_upstream() {
    let (pki, up, gw) = setup().await;
    let mut failures = Vec::new();
    let hidden = format!("hello{SMUGGLED}");
    for (what, lines) in [
        (
            "two CL lines",
            vec![
                "Content-Length: 5".to_string(),
                format!("Content-Length: {}", hidden.len()),
            ],
        ),
        (
            "reversed",
            vec![
                format!("Content-Length: {}", hidden.len()),
                "Content-Length: 5".to_string(),
            ],
        ),
        (
            "one CL list",
            vec![format!("Content-Length: 5, {}", hidden.len())],
        ),
    ] {
        let mut req = String::from("POST /first HTTP/1.1\r\nHost: localhost\r\n");
        for l in &lines {
            req.push_str(l);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.push_str(&hidden);
        // hyper may answer this itself with a bare 400: only the status is asserted.
        if let Err(e) = expect_400_and_close(&pki, &gw, what, req.as_bytes()).await {
            failures.push(e);
        }
    }
    assert_no_failures(&failures);
    assert_upstream_untouched(&pki, &gw, &up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_and_content_length_in_odd_case_or_spacing_get_400() {
    let (pki, up, gw) = setup().await;
    let mut failures = Vec::new();
    for (what, lines) in [
        (
            "lower case",
            &["transfer-encoding: chunked", "content-length: {len}"][..],
        ),
        (
            "upper case",
            &["TRANSFER-ENCODING: CHUNKED", "CONTENT-LENGTH: {len}"][..],
        ),
        (
            "mixed case value",
            &["Content-Length: {len}", "Transfer-Encoding: ChUnKeD"][..],
        ),
        (
            "extra spaces",
            &[
                "Content-Length:   {len}  ",
                "Transfer-Encoding:    chunked   ",
            ][..],
        ),
        (
            "tab",
            &["Content-Length:\t{len}", "Transfer-Encoding:\tchunked"][..],
        ),
        (
            "space before colon in TE",
            &["Content-Length: {len}", "Transfer-Encoding : chunked"][..],
        ),
        (
            "space before colon in CL",
            &["Content-Length : {len}", "Transfer-Encoding: chunked"][..],
        ),
        (
            "chunked twice",
            &[
                "Content-Length: {len}",
                "Transfer-Encoding: chunked, chunked",
            ][..],
        ),
        (
            "TE split over two lines",
            &[
                "Content-Length: {len}",
                "Transfer-Encoding: gzip",
                "Transfer-Encoding: chunked",
            ][..],
        ),
        (
            "not chunked",
            &["Content-Length: {len}", "Transfer-Encoding: xchunked"][..],
        ),
    ] {
        if let Err(e) = expect_400_and_close(&pki, &gw, what, &attack(lines)).await {
            failures.push(e);
        }
    }
    assert_no_failures(&failures);
    assert_upstream_untouched(&pki, &gw, &up).await;
}
