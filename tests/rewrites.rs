//! Rewrites per route, end to end: the path stripped and prefixed (query kept), the Host the
//! upstream receives, request and response headers set, added and removed; the gateway's own
//! headers win over a rewrite and a client; a traversal never reaches a rewrite; every bad
//! key is reported with its path.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::SystemTime;

use support::upstream::echo_response;
use support::*;

/// An echo upstream that also answers with `Server: upstream/1.0`.
async fn upstream() -> Upstream {
    let name: Arc<str> = "rw".into();
    Upstream::serve(move |req| {
        let name = name.clone();
        async move {
            let mut resp = echo_response(name, req).await;
            resp.headers_mut()
                .insert("server", http::HeaderValue::from_static("upstream/1.0"));
            resp
        }
    })
    .await
}

async fn gateway_with(pki: &Pki, up: &Upstream, keys: &str) -> Gateway {
    Gateway::start(
        pki.dir(),
        &format!(
            "{}{}",
            listener("public", ""),
            route("api", "/api", &[&up.url()], keys)
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rewrite_key_changes_what_the_upstream_or_the_client_sees() {
    let pki = Pki::generate();
    let up = upstream().await;
    // (route keys, request path, upstream path, upstream Host)
    let addr = up.addr.to_string();
    let cases: Vec<(&str, &str, &str, String)> = vec![
        ("", "/api/orders?q=1", "/api/orders?q=1", "localhost".into()),
        (
            "rewrite = { strip_prefix = true }",
            "/api/orders?q=1",
            "/orders?q=1",
            "localhost".into(),
        ),
        (
            "rewrite = { strip_prefix = true }",
            "/api",
            "/",
            "localhost".into(),
        ),
        (
            "rewrite = { add_prefix = \"/v2\" }",
            "/api/orders",
            "/v2/api/orders",
            "localhost".into(),
        ),
        (
            "rewrite = { strip_prefix = true, add_prefix = \"/internal/v2/\" }",
            "/api/orders/7?x=%2F",
            "/internal/v2/orders/7?x=%2F",
            "localhost".into(),
        ),
        (
            "rewrite = { host = \"target\" }",
            "/api",
            "/api",
            addr.clone(),
        ),
        (
            "rewrite = { host = \"erp.internal:8443\" }",
            "/api",
            "/api",
            "erp.internal:8443".into(),
        ),
    ];
    for (keys, path, want_path, want_host) in cases {
        let gw = gateway_with(&pki, &up, keys).await;
        let mut c = connect_h1(&pki, gw.addr()).await;
        let echo = c.call(get(path)).await.unwrap().echo();
        assert_eq!(echo.uri, want_path, "{keys}: {path}");
        assert_eq!(
            echo.header("host"),
            Some(want_host.as_str()),
            "{keys}: Host"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_removed_set_and_added_and_the_gateways_own_still_win() {
    let pki = Pki::generate();
    let up = upstream().await;
    let gw = gateway_with(
        &pki,
        &up,
        "[routes.request_headers]\nset = { \"x-env\" = \"prod\" }\nadd = { \"x-tag\" = \"gw\" }\nremove = [\"x-drop\", \"cookie\"]\n\
         [routes.response_headers]\nset = { \"strict-transport-security\" = \"max-age=31536000\" }\nremove = [\"server\"]\n",
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    let r = c
        .call(
            request("GET", "/api/x")
                .header("x-env", "client-said")
                .header("x-tag", "client")
                .header("x-drop", "secret")
                .header("cookie", "session=1")
                .header("x-forwarded-for", "6.6.6.6")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.header("server"), None, "the upstream's Server was kept");
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
    assert!(r.header("x-request-id").is_some());
    let echo = r.echo();
    assert_eq!(echo.header_all("x-env"), ["prod"]);
    assert_eq!(echo.header_all("x-tag"), ["client", "gw"]);
    assert!(!echo.has_header("x-drop") && !echo.has_header("cookie"));
    // The client's forged X-Forwarded-For is replaced by what the gateway saw.
    assert_eq!(echo.header_all("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traversal_is_refused_before_any_rewrite() {
    let pki = Pki::generate();
    let up = upstream().await;
    let gw = gateway_with(
        &pki,
        &up,
        "rewrite = { strip_prefix = true, add_prefix = \"/public\" }",
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    for path in [
        "/api/..%2f..%2fadmin",
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/x%5c..%5cadmin",
    ] {
        c.call(get(path))
            .await
            .unwrap()
            .assert_denied(400, "invalid_path");
    }
    assert_eq!(up.request_count(), 0);
}

#[test]
fn every_bad_rewrite_key_is_reported_with_its_path() {
    let pki = Pki::generate();
    let toml = format!(
        "{}{}",
        listener("public", ""),
        route(
            "api",
            "/api",
            &["http://127.0.0.1:9"],
            "rewrite = { add_prefix = \"/a/../b\", host = \"a b\" }\n\
             [routes.request_headers]\nset = { \"host\" = \"x\", \"x-ok\" = \"line\\nbreak\" }\nremove = [\"x-forwarded-for\", \"bad name\"]\n\
             [routes.response_headers]\nremove = [\"content-length\"]\n"
        )
    ) + &route(
        "b",
        "/b",
        &["http://127.0.0.1:9"],
        "rewrite = { add_prefix = \"/a%2fb\" }",
    );
    let path = write_config(pki.dir(), &toml);
    let err = match portcullis::config::load_str(&path, &toml, SystemTime::now()) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    for (key, says) in [
        ("routes[0].rewrite.add_prefix", "\"..\""),
        ("routes[0].rewrite.host", "\"a b\""),
        ("routes[0].request_headers.set.host", "cannot be rewritten"),
        ("routes[0].request_headers.set.x-ok", "line break"),
        ("routes[0].request_headers.remove[0]", "cannot be rewritten"),
        (
            "routes[0].request_headers.remove[1]",
            "not a valid header name",
        ),
        (
            "routes[0].response_headers.remove[0]",
            "cannot be rewritten",
        ),
        ("routes[1].rewrite.add_prefix", "encoded"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no error for {key} in:\n{err}"));
        assert!(line.contains(says), "{key}: {line}");
    }
}
