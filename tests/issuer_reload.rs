//! Proves that a config reload keeps the running issuer: with the same store it is
//! reconfigured in place (new lifetimes apply, tokens signed before still verify, a
//! revocation after the reload reaches the new snapshot's verifier at once); an invalid
//! `[issuer]` changes nothing; another store opens another issuer, whose keys alone count.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::oauth::*;
use support::*;

fn config(upstream: &str, issuer_keys: &str) -> String {
    format!(
        "{}{}",
        server("watch_config = false"),
        issuer_config(upstream, issuer_keys)
    )
}

#[tokio::test]
async fn a_reload_keeps_the_running_issuer_and_reaches_the_new_verifier() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let before = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let other = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;

    write_config(pki.dir(), &config(&up.url(), "access_token_ttl = \"2m\""));
    gw.reload().await.expect("reload");
    let after = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_eq!(after.expires_in, 120, "the new lifetime applies");
    assert_eq!(
        header_of(&after.access)["kid"],
        header_of(&before.access)["kid"]
    );
    for t in [&before, &after] {
        send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access))
            .await
            .echo();
    }
    let revoke = post_form(
        "/oauth2/revoke",
        &[("token", &before.access)],
        Some(&basic("erp-1", &secret)),
    );
    assert_eq!(send_one(&pki, gw.addr(), revoke).await.status, 200);
    let resp = send_one(&pki, gw.addr(), get_with_token("/api/x", &before.access)).await;
    resp.assert_denied(401, "token_invalid");

    // An invalid [issuer] is refused whole; the issuer keeps serving.
    write_config(pki.dir(), &config(&up.url(), "algorithm = \"RS256\""));
    let err = gw.reload().await.expect_err("invalid");
    assert!(err.to_string().contains("issuer.algorithm"), "{err}");
    send_one(&pki, gw.addr(), get_with_token("/api/x", &other.access))
        .await
        .echo();
    client_credentials(&pki, gw.addr(), "erp-1", &secret).await;

    // Another store: another issuer, with its own clients and keys.
    let moved = config(&up.url(), "").replace("issuer.redb", "moved.redb");
    write_config(pki.dir(), &moved);
    gw.reload().await.expect("reload to another store");
    let resp = send_one(
        &pki,
        gw.addr(),
        post_form(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some(&basic("erp-1", &secret)),
        ),
    )
    .await;
    assert_oauth_error(&resp, 401, "invalid_client");
    let resp = send_one(&pki, gw.addr(), get_with_token("/api/x", &other.access)).await;
    resp.assert_denied(401, "token_invalid");
    let fresh = add_client(&gw, "erp-2", &["orders:read"]);
    let t = client_credentials(&pki, gw.addr(), "erp-2", &fresh).await;
    send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access))
        .await
        .echo();
}
