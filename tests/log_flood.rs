//! A scanner cannot fill the log: 60 ClientHellos naming an IP address in their SNI (each of
//! which makes rustls warn) write at most one such line to the real binary's stderr, and the
//! rest are counted in `portcullis_log_lines_suppressed_total{source="rustls"}`.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use ops::Proc;
use support::raw::{client_hello_for, hello_reply};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literal_sni_warnings_are_written_once_and_counted() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let path = write_config(
        pki.dir(),
        &format!(
            "{}{}[admin]\nbind = \"127.0.0.1:0\"\n",
            listener("public", ""),
            route("all", "/", &[&up.url()], "")
        ),
    );
    let mut proc = Proc::spawn(&path, "json");
    let addr = proc.listener_addr("public").await;
    let admin = proc.admin_addr().await;
    let hello = client_hello_for(0x0301, 0x0303, b"127.0.0.1");
    for _ in 0..60 {
        hello_reply(addr, &hello).await;
    }
    let m = support::prometheus::parse(
        &ops::admin_call(admin, "GET", "/metrics", &[], empty())
            .await
            .text(),
    )
    .unwrap();
    let suppressed = m
        .value(
            "portcullis_log_lines_suppressed_total",
            &[("source", "rustls")],
        )
        .unwrap_or(0.0);
    let lines = proc
        .stderr()
        .lines()
        .filter(|l| l.contains("Illegal SNI"))
        .count();
    assert_eq!(
        lines,
        1,
        "one SNI warning written, not one per hello:
{}",
        proc.stderr()
    );
    assert!(suppressed >= 59.0, "{suppressed} suppressed");
    proc.signal("TERM");
}
