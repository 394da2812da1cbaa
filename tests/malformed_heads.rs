//! Proves every request head hyper would refuse (two differing Content-Lengths, a NUL byte or
//! bare CR in a header, an obsolete folded line, a head past max_header_bytes, too many
//! headers, an unknown transfer coding, a target `http` cannot parse) is answered by the
//! gateway in its own shape: a 4xx with the JSON body and a request id, its own denial
//! reason counted in the metrics, an access line, and the connection closed; that a
//! refused head behind pipelined good requests waits for their responses; that the upstream
//! never sees any of it; and that the gateway keeps serving.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::time::Duration;

use portcullis::denial::{Denial, HeadRefusal};
use support::raw::{Outcome, RawResponse, raw_tls};
use support::*;

const BAD_HEADS: &[(&str, &str, u16, &str)] = &[
    (
        "differing Content-Length",
        "POST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        400,
        "ambiguous_framing",
    ),
    (
        "a NUL byte in a header value",
        "GET /app HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n",
        400,
        "malformed_request",
    ),
    (
        "a bare CR in a header value",
        "GET /app HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n",
        400,
        "malformed_request",
    ),
    (
        "an obs-fold continuation line",
        "GET /app HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n folded\r\n\r\n",
        400,
        "malformed_request",
    ),
    (
        "an unknown transfer coding",
        "POST /app HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
        "unsupported_transfer_coding",
    ),
    (
        "a target http cannot parse",
        "GET /app/<script> HTTP/1.1\r\nHost: localhost\r\n\r\n",
        400,
        "malformed_request",
    ),
    (
        "HTTP/2.0 in an HTTP/1 request line",
        "GET /app HTTP/2.0\r\nHost: localhost\r\n\r\n",
        400,
        "malformed_request",
    ),
];

fn assert_gateway_shape(r: &RawResponse, status: u16, reason: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}{}", r.head, r.text());
    let json = r
        .json()
        .unwrap_or_else(|| panic!("{what}: not JSON: {}", r.text()));
    assert_eq!(json["error"], reason, "{what}: {json}");
    let id = json["request_id"].as_str().expect("request_id");
    assert!(!id.is_empty(), "{what}: empty request id");
    assert_eq!(r.header("x-request-id"), Some(id), "{what}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    assert_eq!(r.header("connection"), Some("close"), "{what}");
}

fn denials(gw: &Gateway, reason: &str) -> f64 {
    gw.metrics()
        .value("portcullis_denials_total", &[("reason", reason)])
        .unwrap_or(0.0)
}

async fn assert_still_serving(pki: &Pki, gw: &Gateway, after: &str) {
    let resp = connect_h1(pki, gw.addr())
        .await
        .call(get("/app/alive"))
        .await;
    match resp {
        Ok(r) => assert_eq!(r.echo().uri, "/app/alive", "after {after}"),
        Err(e) => panic!("the gateway stopped serving after {after}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_head_hyper_refuses_gets_the_gateways_json_denial_and_a_closed_connection() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}{}",
        server("max_header_bytes = 8192\nmax_headers = 20"),
        listener("public", ""),
        route("app", "/app", &[&up.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let huge = format!(
        "GET /app HTTP/1.1\r\nHost: localhost\r\nX-Huge: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let mut many = String::from("GET /app HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let mut cases: Vec<(&str, String, u16, &str)> = BAD_HEADS
        .iter()
        .map(|(w, h, s, r)| (*w, h.to_string(), *s, *r))
        .collect();
    cases.push((
        "a head past max_header_bytes",
        huge,
        431,
        "header_too_large",
    ));
    cases.push((
        "more headers than max_headers",
        many,
        431,
        "too_many_headers",
    ));

    for (what, head, status, reason) in &cases {
        let before = denials(&gw, reason);
        let mut conn = raw_tls(&pki, gw.addr()).await;
        let _ = conn.send(head.as_bytes()).await;
        let r = conn.response(Duration::from_secs(10)).await.response();
        assert_gateway_shape(&r, *status, reason, what);
        let (rest, closed) = conn.rest(Duration::from_secs(5)).await;
        assert!(closed, "{what}: the connection stayed open");
        assert!(rest.is_empty(), "{what}: more after the refusal: {rest:?}");
        assert_eq!(
            denials(&gw, reason),
            before + 1.0,
            "{what}: denial not counted under {reason}"
        );
    }
    assert_eq!(up.request_count(), 0, "a refused head reached the upstream");
    assert_still_serving(&pki, &gw, "the malformed heads").await;
    assert_eq!(
        gw.denial_count(Denial::Head(HeadRefusal::Malformed)),
        5,
        "malformed_request by the typed counter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_head_behind_pipelined_requests_is_answered_after_them_in_order() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(
        pki.dir(),
        &format!(
            "{}{}{}",
            server(""),
            listener("public", ""),
            route("app", "/app", &[&up.url()], ""),
        ),
    )
    .await;
    let mut conn = raw_tls(&pki, gw.addr()).await;
    // Two good requests (one with a body), then a bad head and a good one after it, all in
    // one write; then the same split byte by byte over the bad head's first line.
    let pipelined = "GET /app/one HTTP/1.1\r\nHost: localhost\r\n\r\n\
                     POST /app/two HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc\
                     GET /app/three HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n\
                     GET /app/four HTTP/1.1\r\nHost: localhost\r\n\r\n";
    conn.send(pipelined.as_bytes()).await.unwrap();
    let one = conn.response(Duration::from_secs(10)).await.response();
    assert_eq!(one.status, 200, "{}", one.text());
    let two = conn.response(Duration::from_secs(10)).await.response();
    assert_eq!(two.status, 200, "{}", two.text());
    let three = conn.response(Duration::from_secs(10)).await.response();
    assert_gateway_shape(&three, 400, "malformed_request", "pipelined NUL");
    let (rest, closed) = conn.rest(Duration::from_secs(5)).await;
    assert!(closed && rest.is_empty(), "after the refusal: {rest:?}");
    let seen: Vec<String> = up.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(seen, ["/app/one", "/app/two"]);

    // The bad head trickles in, a few bytes per write, after a good request.
    let mut conn = raw_tls(&pki, gw.addr()).await;
    conn.send(b"GET /app/five HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let five = conn.response(Duration::from_secs(10)).await.response();
    assert_eq!(five.status, 200);
    for piece in b"POST /app/six HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".chunks(7) {
        conn.send(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let six = conn.response(Duration::from_secs(10)).await.response();
    assert_gateway_shape(&six, 400, "ambiguous_framing", "trickled CL/CL");
    let seen: Vec<String> = up.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(seen, ["/app/one", "/app/two", "/app/five"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_head_leaves_an_access_line_with_its_reason_and_request_id() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}{}",
        server("watch_config = false"),
        listener("public", ""),
        route("app", "/app", &[&up.url()], ""),
    );
    let config = write_config(pki.dir(), &toml);
    let mut proc = ops::Proc::spawn(&config, "json");
    let addr = proc.listener_addr("public").await;
    let mut conn = raw_tls(&pki, addr).await;
    conn.send(
        b"GET /app?secret=QUERYSECRET HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n folded\r\n\r\n",
    )
    .await
    .unwrap();
    let r = match conn.response(Duration::from_secs(10)).await {
        Outcome::Response(r) => r,
        other => panic!("{other:?}\n{}", proc.logs()),
    };
    let id = r.json().unwrap()["request_id"].as_str().unwrap().to_owned();
    let line = proc
        .wait_for_line("the refused head's access line", |l| {
            l.is_access() && l.str("request_id") == Some(id.as_str())
        })
        .await;
    assert_eq!(line.str("reason"), Some("malformed_request"));
    assert_eq!(line.text("status").as_deref(), Some("400"));
    assert_eq!(line.str("listener"), Some("public"));
    assert!(
        !proc.stderr().contains("QUERYSECRET"),
        "the refused head's query reached the log"
    );
}
