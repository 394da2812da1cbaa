//! Proves revocation (RFC 7009) and introspection (RFC 7662) over HTTPS: a revoked access
//! token is refused by a protected route on the very next request, even on a keep-alive
//! connection that had it cached; revoking a refresh token ends its family; revocation
//! answers 200 for unknown or foreign tokens and changes nothing for them; both endpoints
//! need client authentication; introspection reports live tokens active and everything
//! else inactive.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::oauth::*;
use support::*;

const REVOKE: &str = "/oauth2/revoke";
const INTROSPECT: &str = "/oauth2/introspect";

#[tokio::test]
async fn a_revoked_access_token_is_refused_by_the_protected_route_on_the_next_request() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;

    // One keep-alive connection: the token is verified, then served from the cache.
    let mut conn = connect_h1(&pki, gw.addr()).await;
    for _ in 0..2 {
        conn.call(get_with_token("/api/x", &t.access))
            .await
            .expect("call")
            .echo();
    }
    let resp = send_one(
        &pki,
        gw.addr(),
        post_form(
            REVOKE,
            &[("token", &t.access)],
            Some(&basic("erp-1", &secret)),
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.body.is_empty());

    let resp = conn
        .call(get_with_token("/api/x", &t.access))
        .await
        .expect("call");
    resp.assert_denied(401, "token_invalid");
    // Its refresh token still works: revoking an access token does not end the family.
    let next = Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &t.refresh).await);
    conn.call(get_with_token("/api/x", &next.access))
        .await
        .expect("call")
        .echo();
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_its_family_and_its_access_tokens() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let resp = send_one(
        &pki,
        gw.addr(),
        post_form(
            REVOKE,
            &[("token", &t.refresh), ("token_type_hint", "refresh_token")],
            Some(&basic("erp-1", &secret)),
        ),
    )
    .await;
    assert_eq!(resp.status, 200);
    let again = refresh(&pki, gw.addr(), "erp-1", &secret, &t.refresh).await;
    assert_oauth_error(&again, 400, "invalid_grant");
    let resp = send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access)).await;
    resp.assert_denied(401, "token_invalid");
    let revoked = gw
        .metrics()
        .value("portcullis_issuer_events_total", &[("event", "revoked")]);
    assert_eq!(revoked, Some(1.0), "the revocation is a metric");
}

#[tokio::test]
async fn revocation_of_unknown_or_foreign_tokens_answers_200_and_changes_nothing() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let other = add_client(&gw, "other", &["orders:read"]);
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;

    for token in [t.access.as_str(), t.refresh.as_str(), "garbage", "a.b.c"] {
        let resp = send_one(
            &pki,
            gw.addr(),
            post_form(REVOKE, &[("token", token)], Some(&basic("other", &other))),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access))
        .await
        .echo();
    Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &t.refresh).await);
}

#[tokio::test]
async fn revocation_and_introspection_need_an_authenticated_client_and_a_token() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    for path in [REVOKE, INTROSPECT] {
        let anonymous = send_one(
            &pki,
            gw.addr(),
            post_form(path, &[("token", &t.access)], None),
        )
        .await;
        assert_oauth_error(&anonymous, 401, "invalid_client");
        let wrong = post_form(
            path,
            &[("token", &t.access)],
            Some(&basic("erp-1", "wrong")),
        );
        assert_oauth_error(
            &send_one(&pki, gw.addr(), wrong).await,
            401,
            "invalid_client",
        );
        let no_token = post_form(path, &[], Some(&basic("erp-1", &secret)));
        assert_oauth_error(
            &send_one(&pki, gw.addr(), no_token).await,
            400,
            "invalid_request",
        );
        let resp = send_one(&pki, gw.addr(), get(path)).await;
        assert_eq!(resp.status, 405, "{path}");
    }
    // None of that revoked anything.
    send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access))
        .await
        .echo();
}

#[tokio::test]
async fn introspection_reports_live_tokens_active_and_everything_else_inactive() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read", "stock"]);
    let rs = add_client(&gw, "resource-server", &[]);
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let introspect = |token: &str, id: &str, s: &str| {
        post_form(INTROSPECT, &[("token", token)], Some(&basic(id, s)))
    };

    let access = send_one(
        &pki,
        gw.addr(),
        introspect(&t.access, "resource-server", &rs),
    )
    .await;
    assert_eq!(access.status, 200);
    assert_eq!(access.header("cache-control").as_deref(), Some("no-store"));
    let v = access.json();
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["client_id"], "erp-1");
    assert_eq!(v["scope"], "orders:read stock");
    assert_eq!(v["iss"], ISS);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["exp"], t.claims()["exp"]);
    assert_eq!(v["jti"], t.claims()["jti"]);

    let r = send_one(&pki, gw.addr(), introspect(&t.refresh, "erp-1", &secret)).await;
    let v = r.json();
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["token_type"], "refresh_token");
    assert_eq!(v["client_id"], "erp-1");
    // A refresh token is only ever reported to its own client.
    let foreign = send_one(
        &pki,
        gw.addr(),
        introspect(&t.refresh, "resource-server", &rs),
    )
    .await;
    assert_eq!(foreign.json(), serde_json::json!({"active": false}));

    let next = Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &t.refresh).await);
    let retired = send_one(&pki, gw.addr(), introspect(&t.refresh, "erp-1", &secret)).await;
    assert_eq!(retired.json()["active"], false, "a retired refresh token");

    let revoke = post_form(
        REVOKE,
        &[("token", &next.access)],
        Some(&basic("erp-1", &secret)),
    );
    assert_eq!(send_one(&pki, gw.addr(), revoke).await.status, 200);
    let revoked = send_one(&pki, gw.addr(), introspect(&next.access, "erp-1", &secret)).await;
    assert_eq!(revoked.json(), serde_json::json!({"active": false}));

    for garbage in ["nonsense", "a.b.c"] {
        let resp = send_one(&pki, gw.addr(), introspect(garbage, "erp-1", &secret)).await;
        assert_eq!(
            resp.json(),
            serde_json::json!({"active": false}),
            "{garbage}"
        );
    }
    advance(&gw, Duration::from_secs(11 * 60));
    let expired = send_one(&pki, gw.addr(), introspect(&t.access, "erp-1", &secret)).await;
    assert_eq!(expired.json()["active"], false, "an expired access token");
}
