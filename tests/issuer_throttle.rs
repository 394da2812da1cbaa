//! Proves that failed client authentication is throttled over HTTPS: after 5 failures a
//! client id, and after 20 an address, gets 429 with `Retry-After` (even with the right
//! secret) until the window ends; other clients and the gateway's clock moving on free it.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::oauth::*;
use support::*;

const TOKEN: &str = "/oauth2/token";

fn retry_after(resp: &TestResponse) -> u64 {
    resp.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {:?}", resp.headers))
}

#[tokio::test]
async fn five_wrong_secrets_throttle_the_client_id_with_429_and_retry_after() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let other = add_client(&gw, "other", &["orders:read"]);
    let grant = [("grant_type", "client_credentials")];

    for _ in 0..5 {
        let resp = send_one(
            &pki,
            gw.addr(),
            post_form(TOKEN, &grant, Some(&basic("erp-1", "guess"))),
        )
        .await;
        assert_oauth_error(&resp, 401, "invalid_client");
    }
    // Now even the right secret waits: a guess cannot be confirmed early.
    let resp = send_one(
        &pki,
        gw.addr(),
        post_form(TOKEN, &grant, Some(&basic("erp-1", &secret))),
    )
    .await;
    assert_oauth_error(&resp, 429, "temporarily_unavailable");
    let after = retry_after(&resp);
    assert!((1..=60).contains(&after), "Retry-After {after}");
    // The same holds at the revocation and introspection endpoints.
    let resp = send_one(
        &pki,
        gw.addr(),
        post_form(
            "/oauth2/introspect",
            &[("token", "x")],
            Some(&basic("erp-1", &secret)),
        ),
    )
    .await;
    assert_eq!(resp.status, 429);

    // The token endpoint's metrics count both, with no client id in a label.
    let m = gw.metrics();
    let event = |e: &str| m.value("portcullis_issuer_events_total", &[("event", e)]);
    assert_eq!(event("auth_failed"), Some(5.0));
    assert_eq!(event("throttled"), Some(2.0));

    // Other clients from the same address are not affected.
    client_credentials(&pki, gw.addr(), "other", &other).await;
    // When the window ends, the client is free again.
    advance(&gw, Duration::from_secs(61));
    client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
}

#[tokio::test]
async fn twenty_failures_from_one_address_throttle_it_across_client_ids() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let grant = [("grant_type", "client_credentials")];

    let mut conn = connect_h1(&pki, gw.addr()).await;
    for i in 0..20 {
        // A different id each time, so no client id reaches its own limit.
        let req = post_form(TOKEN, &grant, Some(&basic(&format!("guess-{i}"), "x")));
        let resp = conn.call(req).await.expect("response");
        assert_oauth_error(&resp, 401, "invalid_client");
    }
    let resp = conn
        .call(post_form(TOKEN, &grant, Some(&basic("erp-1", &secret))))
        .await
        .expect("response");
    assert_oauth_error(&resp, 429, "temporarily_unavailable");
    assert!(retry_after(&resp) <= 60);
    // Malformed ids count against the address too, and are refused without a store read.
    let resp = conn
        .call(post_form(TOKEN, &grant, Some(&basic("not an id", "x"))))
        .await
        .expect("response");
    assert_eq!(resp.status, 429);

    advance(&gw, Duration::from_secs(61));
    client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
}
