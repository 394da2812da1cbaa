//! Proves refresh-token rotation over HTTPS: every refresh returns a new refresh token and
//! retires the old one; presenting a retired one revokes the whole family and its access
//! tokens (RFC 9700 reuse detection); of concurrent refreshes of one token exactly one
//! succeeds; families expire when idle and at their absolute limit (the gateway clock
//! moves, nothing sleeps); a refresh narrows scopes but never widens them; a refresh token
//! works only for its own, enabled client.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::oauth::*;
use support::*;

const TOKEN: &str = "/oauth2/token";

#[tokio::test]
async fn each_refresh_returns_a_new_refresh_token_and_a_new_access_token() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let first = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;

    let mut current = first.clone();
    for _ in 0..3 {
        let next =
            Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &current.refresh).await);
        assert_ne!(next.refresh, current.refresh);
        assert_ne!(next.claims()["jti"], current.claims()["jti"]);
        assert_eq!(next.scope, "orders:read");
        let ok = send_one(&pki, gw.addr(), get_with_token("/api/x", &next.access)).await;
        ok.echo();
        current = next;
    }
}

#[tokio::test]
async fn presenting_a_retired_refresh_token_revokes_the_family_and_its_access_tokens() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let first = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let other_family = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let second = Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &first.refresh).await);
    // Both access tokens of the family work so far.
    for t in [&first, &second] {
        send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access))
            .await
            .echo();
    }

    // An attacker (or a confused client) replays the retired token.
    let replay = refresh(&pki, gw.addr(), "erp-1", &secret, &first.refresh).await;
    assert_oauth_error(&replay, 400, "invalid_grant");

    // The whole family is gone: the current refresh token, and its access tokens.
    let current = refresh(&pki, gw.addr(), "erp-1", &secret, &second.refresh).await;
    assert_oauth_error(&current, 400, "invalid_grant");
    for t in [&first, &second] {
        let resp = send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access)).await;
        resp.assert_denied(401, "token_invalid");
    }
    // Another family of the same client is untouched.
    send_one(
        &pki,
        gw.addr(),
        get_with_token("/api/x", &other_family.access),
    )
    .await
    .echo();
    Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &other_family.refresh).await);

    // The token endpoint's own metrics saw it all.
    let m = gw.metrics();
    let event = |e: &str| m.value("portcullis_issuer_events_total", &[("event", e)]);
    assert_eq!(event("issued"), Some(2.0));
    assert_eq!(event("refreshed"), Some(2.0));
    assert_eq!(event("reuse_detected"), Some(1.0));
    assert_eq!(event("refresh_refused"), Some(1.0));
}

#[tokio::test]
async fn of_concurrent_refreshes_of_one_token_exactly_one_succeeds() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    for round in 0..3 {
        let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
        // Connections first, so the requests leave together.
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(connect_h1(&pki, gw.addr()).await);
        }
        let auth = basic("erp-1", &secret);
        let calls = conns.iter_mut().map(|c| {
            c.call(post_form(
                TOKEN,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &t.refresh),
                ],
                Some(&auth),
            ))
        });
        let results = futures_join_all(calls).await;
        let ok = results.iter().filter(|r| r.status == 200).count();
        assert_eq!(
            ok,
            1,
            "round {round}: {:?}",
            results.iter().map(|r| r.text()).collect::<Vec<_>>()
        );
        for r in results.iter().filter(|r| r.status != 200) {
            assert_oauth_error(r, 400, "invalid_grant");
        }
    }
}

/// Await every future concurrently (on this task), in order.
async fn futures_join_all<F, T>(futs: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<T>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(r) => out[i] = Some(r.expect("a response")),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("done")).collect()
}

#[tokio::test]
async fn a_family_expires_when_idle_and_at_its_absolute_limit() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let keys = "refresh_token_ttl = \"2h\"\nrefresh_idle_ttl = \"1h\"";
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), keys)).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let minutes = |m: u64| Duration::from_secs(m * 60);

    let idle = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let mut busy = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    // Used every 59 minutes, a family lives until its absolute limit.
    for _ in 0..2 {
        advance(&gw, minutes(59));
        busy = Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &busy.refresh).await);
    }
    let resp = refresh(&pki, gw.addr(), "erp-1", &secret, &idle.refresh).await;
    assert_oauth_error(&resp, 400, "invalid_grant");
    advance(&gw, minutes(3));
    let resp = refresh(&pki, gw.addr(), "erp-1", &secret, &busy.refresh).await;
    assert_oauth_error(&resp, 400, "invalid_grant");
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scope_but_never_widen_it() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read", "stock", "admin"]);
    let auth = basic("erp-1", &secret);
    let cc = post_form(
        TOKEN,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "orders:read stock"),
        ],
        Some(&auth),
    );
    let t = Tokens::from(&send_one(&pki, gw.addr(), cc).await);
    let ask = |scope: &str, token: &str| {
        post_form(
            TOKEN,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("scope", scope),
            ],
            Some(&auth),
        )
    };
    let wider = send_one(&pki, gw.addr(), ask("orders:read admin", &t.refresh)).await;
    assert_oauth_error(&wider, 400, "invalid_scope");
    // A refused scope does not use the token up.
    let narrower = Tokens::from(&send_one(&pki, gw.addr(), ask("stock", &t.refresh)).await);
    assert_eq!(narrower.scope, "stock");
    // The family keeps its scopes: the next refresh may ask for all of them again.
    let full = Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &narrower.refresh).await);
    assert_eq!(full.scope, "orders:read stock");
}

#[tokio::test]
async fn a_refresh_token_works_only_for_its_own_enabled_client() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let thief = add_client(&gw, "thief", &["orders:read"]);
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;

    let stolen = refresh(&pki, gw.addr(), "thief", &thief, &t.refresh).await;
    assert_oauth_error(&stolen, 400, "invalid_grant");
    // Another client's attempt neither used the token up nor revoked the family.
    let t = Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &t.refresh).await);

    let issuer = gw.issuer();
    portcullis::issuer::clients::disable(issuer.store(), "erp-1").expect("disable");
    let resp = refresh(&pki, gw.addr(), "erp-1", &secret, &t.refresh).await;
    assert_oauth_error(&resp, 401, "invalid_client");
}
