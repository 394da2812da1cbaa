//! OAuth2 client credentials injected upstream: the gateway runs the grant against a real
//! token endpoint over TLS (a private CA, through a named upstream), caches the token, asks
//! once for any number of concurrent requests, renews before expiry (the gateway's clock
//! moved, never slept), renews once and retries once on a 401, and answers 502
//! `upstream_credentials_unavailable` when the endpoint is down, the reason in the log only.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use ops::Proc;
use support::upstream::echo_response;
use support::*;

const CLIENT_ID: &str = "portcullis-erp";
const CLIENT_SECRET: &str = "cs_9Xv2LqW8mZ4tR7pK";

/// What the test token endpoint saw and will answer.
#[derive(Default)]
struct Idp {
    grants: AtomicUsize,
    /// `expires_in` of the tokens it gives.
    lifetime: AtomicU64,
    /// Non-zero: answer this status with an OAuth2 error body instead of a token.
    fail_with: AtomicU16,
    /// Each grant request: (Authorization, form body).
    seen: Mutex<Vec<(String, String)>>,
}

/// A token endpoint over TLS (certificate "server" of the test CA) that counts grants and
/// gives `tok-1`, `tok-2`, ... after a short pause, so concurrent requests overlap.
async fn token_endpoint(pki: &Pki, idp: Arc<Idp>) -> Upstream {
    Upstream::serve_with(Some(pki.upstream_tls("server", None)), false, move |req| {
        let idp = idp.clone();
        async move {
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            idp.seen
                .lock()
                .unwrap()
                .push((auth, String::from_utf8_lossy(&body).into_owned()));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let fail = idp.fail_with.load(Ordering::SeqCst);
            if fail != 0 {
                return json_response(
                    fail,
                    r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
                );
            }
            let n = idp.grants.fetch_add(1, Ordering::SeqCst) + 1;
            json_response(
                200,
                &format!(
                    r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{}}}"#,
                    idp.lifetime.load(Ordering::SeqCst)
                ),
            )
        }
    })
    .await
}

fn json_response(status: u16, body: &str) -> Response<BoxBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body.to_owned()))
        .unwrap()
}

/// An API that refuses the tokens in `refused` with 401 and echoes every other request.
async fn api(refused: Arc<Mutex<Vec<String>>>) -> Upstream {
    let name: Arc<str> = "api".into();
    Upstream::serve(move |req| {
        let (refused, name) = (refused.clone(), name.clone());
        async move {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if refused.lock().unwrap().iter().any(|t| auth.ends_with(t)) {
                return json_response(401, r#"{"error":"invalid_token"}"#);
            }
            echo_response(name, req).await
        }
    })
    .await
}

/// A vault in `dir` holding the OAuth2 client as record "erp-oauth".
fn vault_with_client(dir: &Path) {
    vault_with(
        dir,
        &[(
            "erp-oauth",
            "oauth2",
            &format!("{CLIENT_ID}:{CLIENT_SECRET}"),
        )],
    );
}

/// The client's `Authorization: Basic` value (client_secret_basic).
fn client_basic() -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{CLIENT_ID}:{CLIENT_SECRET}"),
    )
}

fn config(idp: &Upstream, api: &Upstream, extra: &str) -> String {
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n\
         [[upstreams]]\nname = \"idp\"\ntargets = [\"{}\"]\nupstream_tls = {{ ca = \"ca.pem\" }}\n{extra}\n\n{}{}",
        server("watch_config = false"),
        idp.https_url(),
        listener("public", ""),
        route(
            "erp",
            "/erp",
            &[&api.url()],
            "credentials = \"erp-oauth\"\ninject = { token_upstream = \"idp\", token_path = \"/oauth2/token\", scope = \"orders:read invoices\" }"
        ),
    )
}

struct Setup {
    pki: Pki,
    idp: Arc<Idp>,
    refused: Arc<Mutex<Vec<String>>>,
    api: Upstream,
    _idp_server: Upstream,
    gw: Gateway,
}

async fn setup(lifetime: u64) -> Setup {
    let pki = Pki::generate();
    vault_with_client(pki.dir());
    let idp = Arc::new(Idp::default());
    idp.lifetime.store(lifetime, Ordering::SeqCst);
    let idp_server = token_endpoint(&pki, idp.clone()).await;
    let refused = Arc::new(Mutex::new(Vec::new()));
    let api = api(refused.clone()).await;
    let gw = Gateway::start(pki.dir(), &config(&idp_server, &api, "")).await;
    Setup {
        pki,
        idp,
        refused,
        api,
        _idp_server: idp_server,
        gw,
    }
}

fn authorizations(api: &Upstream) -> Vec<String> {
    api.requests()
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .filter(|(k, _)| k == "authorization")
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_cause_one_grant_and_the_upstream_sees_only_the_token() {
    let s = setup(3600).await;
    let h2 = connect_h2(&s.pki, s.gw.addr()).await;
    let authority = format!("localhost:{}", s.gw.addr().port());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut h2 = h2.clone();
        let req = h2_request("GET", &authority, &format!("/erp/orders/{i}"))
            .header("authorization", "Bearer the-clients-own")
            .body(empty())
            .unwrap();
        tasks.push(tokio::spawn(async move { h2.call(req).await.unwrap() }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        // (The echo's body shows what the API received; the gateway adds nothing.)
        assert!(
            !format!("{:?}", r.headers).contains("tok-"),
            "a response header carries the token"
        );
    }
    assert_eq!(s.idp.grants.load(Ordering::SeqCst), 1, "one grant for all");
    let auths = authorizations(&s.api);
    assert_eq!(auths.len(), 200);
    assert!(auths.iter().all(|a| a == "Bearer tok-1"), "{auths:?}");

    // The grant: client_secret_basic with the vault's client, the configured scope.
    let seen = s.idp.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, format!("Basic {}", client_basic()));
    assert_eq!(
        seen[0].1,
        "grant_type=client_credentials&scope=orders%3Aread%20invoices"
    );
    let m = s.gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_upstream_credential_grants_total",
            &[("credential", "erp-oauth"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    let admin = Admin::new(s.gw.admin_addr());
    for page in ["/config", "/metrics", "/upstreams"] {
        let text = admin.get(page).await.text();
        assert!(
            !text.contains(CLIENT_SECRET) && !text.contains("tok-1"),
            "{page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_renewed_before_it_expires_and_kept_until_then() {
    let s = setup(3600).await;
    let mut c = connect_h1(&s.pki, s.gw.addr()).await;
    let call = async |c: &mut H1| {
        let r = c.call(get("/erp/x")).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
    };
    call(&mut c).await;
    // Well inside its hour: the cached token.
    s.gw.shared().clock.advance(Duration::from_secs(3000));
    call(&mut c).await;
    assert_eq!(s.idp.grants.load(Ordering::SeqCst), 1);
    // Two minutes and ten seconds before its end: renewed ahead of expiry.
    s.gw.shared().clock.advance(Duration::from_secs(480));
    call(&mut c).await;
    call(&mut c).await;
    assert_eq!(s.idp.grants.load(Ordering::SeqCst), 2);
    assert_eq!(
        authorizations(&s.api),
        vec![
            "Bearer tok-1",
            "Bearer tok-1",
            "Bearer tok-2",
            "Bearer tok-2"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_causes_one_fresh_grant_and_one_retry_and_never_a_loop() {
    let s = setup(3600).await;
    let mut c = connect_h1(&s.pki, s.gw.addr()).await;
    assert_eq!(c.call(get("/erp/a")).await.unwrap().status, StatusCode::OK);
    // The API stops taking tok-1 (rotated on its side): one grant, one retry, a 200.
    s.refused.lock().unwrap().push("tok-1".into());
    let r = c.call(get("/erp/b")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(s.idp.grants.load(Ordering::SeqCst), 2);
    assert_eq!(
        authorizations(&s.api),
        vec!["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    );

    // A POST with a body cannot be sent twice: its 401 goes back, and the refused token is
    // dropped, so the next request gets a fresh one.
    s.refused.lock().unwrap().push("tok-2".into());
    let post = request("POST", "/erp/orders")
        .header("content-type", "application/json")
        .body(full("{\"order\":1}"))
        .unwrap();
    assert_eq!(c.call(post).await.unwrap().status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.idp.grants.load(Ordering::SeqCst), 2);
    assert_eq!(c.call(get("/erp/c")).await.unwrap().status, StatusCode::OK);
    assert_eq!(s.idp.grants.load(Ordering::SeqCst), 3);

    // An API that refuses every token: one renewal and one retry, then its 401.
    s.refused.lock().unwrap().push(String::new());
    let before = s.api.request_count();
    let r = c.call(get("/erp/d")).await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.api.request_count() - before, 2);
    assert_eq!(s.idp.grants.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_refuses_or_is_down_gives_502_with_the_reason_in_the_log_only() {
    let pki = Pki::generate();
    vault_with_client(pki.dir());
    let idp = Arc::new(Idp::default());
    idp.lifetime.store(3600, Ordering::SeqCst);
    idp.fail_with.store(401, Ordering::SeqCst);
    let idp_server = token_endpoint(&pki, idp.clone()).await;
    let api = api(Arc::new(Mutex::new(Vec::new()))).await;
    let path = write_config(pki.dir(), &config(&idp_server, &api, ""));
    let mut proc = Proc::spawn(&path, "json");
    let addr = proc.listener_addr("public").await;

    let r = send_one(&pki, addr, get("/erp/x")).await;
    r.assert_denied(502, "upstream_credentials_unavailable");
    assert!(!r.text().contains("invalid_client"), "{}", r.text());
    let line = proc
        .wait_for_line("the grant failure", |l| {
            l.str("error")
                .is_some_and(|e| e.contains("token endpoint answered 401 (invalid_client)"))
        })
        .await;
    assert_eq!(line.str("credential"), Some("erp-oauth"));
    // Within a second of a failure, requests fail at once: the endpoint is not hammered.
    let asked = idp.seen.lock().unwrap().len();
    send_one(&pki, addr, get("/erp/y"))
        .await
        .assert_denied(502, "upstream_credentials_unavailable");
    assert_eq!(idp.seen.lock().unwrap().len(), asked);
    assert_eq!(
        api.request_count(),
        0,
        "no request went without its credential"
    );

    // A token endpoint that is not there at all.
    let down = closed_port_url().replace("http://", "https://");
    let dir2 = Pki::generate();
    vault_with_client(dir2.dir());
    let toml = config(&idp_server, &api, "").replace(&idp_server.https_url(), &down);
    let mut proc2 = Proc::spawn(&write_config(dir2.dir(), &toml), "json");
    let addr2 = proc2.listener_addr("public").await;
    send_one(&dir2, addr2, get("/erp/z"))
        .await
        .assert_denied(502, "upstream_credentials_unavailable");
    proc2
        .wait_for_line("the connect failure", |l| {
            l.str("error")
                .is_some_and(|e| e.contains("cannot connect to the token endpoint"))
                && l.str("request_id").is_some()
        })
        .await;
    let basic = client_basic();
    for logs in [proc.stderr(), proc2.stderr()] {
        assert!(!logs.contains(CLIENT_SECRET), "the secret reached the log");
        assert!(
            !logs.contains(&basic),
            "the Basic credential reached the log"
        );
    }
}

#[test]
fn bad_oauth2_keys_are_reported_with_their_path() {
    let pki = Pki::generate();
    vault_with_client(pki.dir());
    let base = format!(
        "{}[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n{}",
        server("watch_config = false"),
        listener("public", "")
    );
    let load = |inject: &str| {
        let toml = format!(
            "{base}{}",
            route(
                "erp",
                "/erp",
                &["http://127.0.0.1:9"],
                &format!("credentials = \"erp-oauth\"\ninject = {inject}")
            )
        );
        portcullis::config::load_file(
            &write_config(pki.dir(), &toml),
            std::time::SystemTime::now(),
        )
    };
    for (inject, key, says) in [
        (
            "{ header = \"X-Key\", token_url = \"https://idp.example/token\" }",
            "routes[0].inject",
            "goes in Authorization",
        ),
        ("{ }", "routes[0].inject", "name its token endpoint"),
        (
            "{ token_url = \"http://idp.example/token\" }",
            "routes[0].inject.token_url",
            "not https://",
        ),
        (
            "{ token_upstream = \"nope\", token_path = \"/t\" }",
            "routes[0].inject.token_upstream",
            "no [[upstreams]] entry is named \"nope\"",
        ),
        (
            "{ token_url = \"https://idp.example/token\", client_auth = \"jwt\" }",
            "routes[0].inject.client_auth",
            "not \"basic\" or \"post\"",
        ),
    ] {
        let errors = load(inject)
            .err()
            .unwrap_or_else(|| panic!("{inject} was accepted"))
            .to_string();
        assert!(
            errors.contains(key) && errors.contains(says),
            "{inject}: {errors}"
        );
    }
    // Valid: a token URL with system roots, client_secret_post.
    let loaded = load("{ token_url = \"https://idp.example/oauth2/token\", client_auth = \"post\", audience = \"https://erp.example\" }")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.snapshot.token_sources.len(), 1);
}
