//! Proves the policy bypasses are closed: the path and host the gateway judged are the ones
//! the upstream receives. A protected `/admin` route (a route deny list that refuses the
//! test client) beside an open catch-all `/` route: every spelling of `/admin` (escapes,
//! repeated slashes, `;` parameters, dot segments, case; over HTTP/1.1 and HTTP/2, and a
//! generated set) is refused or judged by `/admin`'s policy, never served by the open route as
//! a path an upstream would read as `/admin`. The same for a protected virtual host spelt with
//! a trailing dot; and for headers a client forges to look like the gateway's own.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use portcullis::denial::Denial;
use support::raw::{RawResponse, raw_tls_as};
use support::*;

const INVALID_PATH: &str = "invalid_path";
const INVALID_HOST: &str = "invalid_host";
const IP_NOT_ALLOWED: &str = "ip_not_allowed";

/// The test client (127.0.0.1, ::1) is denied on every protected route.
const PROTECTED: &str = "deny = [\"127.0.0.0/8\", \"::1/128\"]";

/// How a normalising upstream (nginx, a servlet container, a case-insensitive server) reads
/// a path: every escape decoded, `;` parameters dropped, slashes merged, dot segments
/// resolved, case folded.
fn upstream_reading(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let b = path.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            decoded.push((h * 16 + l) as u8);
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut out: Vec<String> = Vec::new();
    for seg in text.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_ascii_lowercase()),
        }
    }
    format!("/{}", out.join("/"))
}

/// Whether a normalising upstream would serve `path` as part of `/admin`.
fn reads_as_admin(path: &str) -> bool {
    let p = upstream_reading(path);
    p == "/admin" || p.starts_with("/admin/")
}

struct Setup {
    pki: Pki,
    admin: Upstream,
    open: Upstream,
    gw: Gateway,
}

/// A gateway with one listener and the routes `routes(protected_url, open_url)` makes, in
/// front of a protected and an open echo upstream.
async fn start(routes: impl FnOnce(&str, &str) -> String) -> Setup {
    start_with("", routes).await
}

/// [`start`] with extra `keys` on the listener.
async fn start_with(keys: &str, routes: impl FnOnce(&str, &str) -> String) -> Setup {
    let pki = Pki::generate();
    let admin = Upstream::echo("admin").await;
    let open = Upstream::echo("open").await;
    let toml = format!(
        "{}{}",
        listener("public", keys),
        routes(&admin.url(), &open.url())
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    Setup {
        pki,
        admin,
        open,
        gw,
    }
}

/// The protected `/admin` route beside the open catch-all, and `extra` routes.
async fn setup(extra: &str) -> Setup {
    start(|admin, open| {
        format!(
            "{}{}{extra}",
            route("admin", "/admin", &[admin], PROTECTED),
            route("open", "/", &[open], ""),
        )
    })
    .await
}

/// One raw HTTP/1.1 request on a fresh connection (so malformed targets reach the gateway
/// as written), dialled by address: no SNI, so the request may name any host the listener
/// serves.
async fn raw_request(s: &Setup, head: &str) -> RawResponse {
    let mut conn = raw_tls_as(&s.pki, s.gw.addr(), "127.0.0.1").await;
    conn.send(head.as_bytes()).await.expect("send");
    conn.response(Duration::from_secs(10)).await.response()
}

async fn raw_get(s: &Setup, target: &str) -> RawResponse {
    raw_request(
        s,
        &format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The invariant for one spelling: refused (400), judged by `/admin`'s policy (403), or
/// served by the open route with exactly its canonical path, which no upstream reads as
/// `/admin`.
fn judge(what: &str, status: u16, body: &str, received: Option<&str>) -> u16 {
    match status {
        400 => assert!(body.contains(INVALID_PATH), "{what}: 400 {body}"),
        403 => assert!(body.contains(IP_NOT_ALLOWED), "{what}: 403 {body}"),
        200 => {
            let got = received.unwrap_or_else(|| panic!("{what}: 200 without an echo"));
            let path = what.split('?').next().unwrap_or(what);
            let canonical = portcullis::routing::path::canonical(path)
                .unwrap_or_else(|e| panic!("{what}: served although not canonical ({e})"));
            let query = what.split_once('?').map(|(_, q)| format!("?{q}"));
            assert_eq!(
                got,
                format!("{}{}", canonical.path, query.unwrap_or_default()),
                "{what}: the upstream must receive the path the gateway routed on"
            );
            assert!(
                !reads_as_admin(got),
                "{what}: served by the open route as {got}, which an upstream reads as /admin"
            );
        }
        other => panic!("{what}: unexpected status {other}: {body}"),
    }
    status
}

/// Spellings from the issue: each with the status it must get.
const SPELLINGS: &[(&str, u16)] = &[
    ("/admin", 403),
    ("/admin/users", 403),
    ("/%61dmin", 403),
    ("/%61%64%6D%69%6E", 403),
    ("//admin", 403),
    ("///admin//users", 403),
    ("/adm%69n/users", 403),
    ("/admin/", 403),
    ("/admin;x", 400),
    ("/admin;jsessionid=1/users", 400),
    ("/x/..;/admin", 400),
    ("/x/%2e%2e/admin", 400),
    ("/x/%2E%2E;/admin", 400),
    ("/./admin", 400),
    ("/x/../admin", 400),
    ("/ADMIN", 400),
    ("/Admin/users", 400),
    ("/%41dmin", 400),
    ("/admin%2fusers", 400),
    ("/x%2f..%2fadmin", 400),
    ("/x%5c..%5cadmin", 400),
    ("/admin%00", 400),
    ("/admin%", 400),
    ("/administrator", 200),
    ("/adminx/y", 200),
    ("/x/admin", 200),
    ("/admin%3bx", 400),
    ("/x%3Badmin", 400),
    ("/open%2dpage?x=1", 200),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disguised_spellings_of_a_protected_path_never_reach_the_open_route() {
    let s = setup("").await;
    for (spelling, want) in SPELLINGS {
        let resp = raw_get(&s, spelling).await;
        let echo: Option<Echo> = resp.json().and_then(|v| serde_json::from_value(v).ok());
        let got = judge(
            spelling,
            resp.status,
            &resp.text(),
            echo.as_ref().map(|e| e.uri.as_str()),
        );
        assert_eq!(got, *want, "{spelling}: {}", resp.text());
        if let Some(e) = &echo {
            assert_eq!(e.upstream, "open", "{spelling}");
        }
    }
    assert_eq!(
        s.admin.request_count(),
        0,
        "the protected upstream was reached"
    );
    assert_eq!(
        s.gw.denial_count(Denial::InvalidPath),
        SPELLINGS.iter().filter(|(_, w)| *w == 400).count() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disguised_spellings_over_http2_are_judged_like_http1() {
    let s = setup("").await;
    let mut h2 = connect_h2(&s.pki, s.gw.addr()).await;
    for (spelling, want) in SPELLINGS {
        // http::Uri refuses some of these (a lone '%'); what it accepts goes over HTTP/2.
        let Ok(req) = h2_request("GET", "localhost", spelling).body(empty()) else {
            continue;
        };
        let resp = h2.call(req).await.expect("h2 response");
        let echo: Option<Echo> = serde_json::from_slice(&resp.body).ok();
        let got = judge(
            spelling,
            resp.status.as_u16(),
            &resp.text(),
            echo.as_ref().map(|e| e.uri.as_str()),
        );
        assert_eq!(got, *want, "HTTP/2 {spelling}: {}", resp.text());
    }
    assert_eq!(s.admin.request_count(), 0);
}

#[test]
fn generated_path_spellings_are_refused_or_forwarded_exactly_as_routed() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt.block_on(setup(""));
    let parts = proptest::collection::vec(
        proptest::sample::select(vec![
            "/", "//", "admin", "ADMIN", "Admin", "adm", "in", "%61", "%41", "%6d%69n", "%2e",
            "%2E", ".", "..", ";", ";x=1", "%3b", "%2f", "%5c", "x", "users", "%25", "%7e", "~",
        ]),
        1..8,
    );
    let mut runner = TestRunner::new(Config {
        // PROPTEST_CASES=5000 for a longer hunt.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(160),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&parts, |parts| {
        let spelling = format!("/{}", parts.concat());
        let resp = rt.block_on(raw_get(&s, &spelling));
        let echo: Option<Echo> = resp.json().and_then(|v| serde_json::from_value(v).ok());
        judge(
            &spelling,
            resp.status,
            &resp.text(),
            echo.as_ref().map(|e| e.uri.as_str()),
        );
        prop_assert!(echo.is_none_or(|e| e.upstream == "open"));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(
        s.admin.request_count(),
        0,
        "the protected upstream was reached"
    );
    assert!(
        s.open.request_count() > 0,
        "no generated spelling was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_insensitive_route_takes_every_case_of_its_prefix_under_its_own_policy() {
    let s = setup(&route(
        "reports",
        "/Reports",
        &[&closed_port_url()],
        &format!("case_insensitive = true\n{PROTECTED}"),
    ))
    .await;
    for spelling in [
        "/reports",
        "/REPORTS/q1",
        "/Reports",
        "/rePorts/x",
        "/%52eports",
    ] {
        let resp = raw_get(&s, spelling).await;
        assert_eq!(resp.status, 403, "{spelling}: {}", resp.text());
    }
    // Not a segment boundary: the open route, as for any other path.
    assert_eq!(raw_get(&s, "/reportsx").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_are_refused_unless_the_route_allows_them_and_then_forwarded_as_sent() {
    let s = start(|app, open| {
        format!(
            "{}{}",
            route("app", "/app", &[app], "path_params = true"),
            route("open", "/", &[open], ""),
        )
    })
    .await;
    let mut h1 = connect_h1(&s.pki, s.gw.addr()).await;
    let echo = h1
        .call(get("/app;jsessionid=42/cart"))
        .await
        .expect("app")
        .echo();
    assert_eq!(echo.upstream, "admin", "the route's own upstream");
    assert_eq!(echo.uri, "/app;jsessionid=42/cart");
    // `..;` is a dot segment to Tomcat whatever the route allows.
    h1.call(get("/app/..;/admin"))
        .await
        .expect("dot")
        .assert_denied(400, INVALID_PATH);
    // The open route allows none.
    h1.call(get("/other;x"))
        .await
        .expect("open")
        .assert_denied(400, INVALID_PATH);
    assert_eq!(s.open.request_count(), 0);
}

/// A protected virtual host beside a host-less open route, on a listener serving
/// `*.example.com`.
async fn host_setup() -> Setup {
    start_with("hosts = [\"*.example.com\"]", |secure, open| {
        format!(
            "{}{}{}",
            route(
                "secure",
                "/",
                &[secure],
                &format!("host = \"secure.example.com\"\n{PROTECTED}")
            ),
            route("api", "/", &[open], "host = \"api.example.com\""),
            route("open", "/", &[open], ""),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_dot_and_case_spellings_of_a_protected_host_never_reach_the_open_route() {
    let s = host_setup().await;
    let heads: &[(&str, u16, &str)] = &[
        (
            "GET / HTTP/1.1\r\nHost: secure.example.com\r\n",
            403,
            IP_NOT_ALLOWED,
        ),
        (
            "GET / HTTP/1.1\r\nHost: secure.example.com.\r\n",
            403,
            IP_NOT_ALLOWED,
        ),
        (
            "GET / HTTP/1.1\r\nHost: SECURE.Example.COM.:443\r\n",
            403,
            IP_NOT_ALLOWED,
        ),
        (
            "GET http://secure.example.com./x HTTP/1.1\r\nHost: other\r\n",
            403,
            IP_NOT_ALLOWED,
        ),
        (
            "GET / HTTP/1.1\r\nHost: secure.example.com..\r\n",
            400,
            INVALID_HOST,
        ),
        (
            "GET / HTTP/1.1\r\nHost: .secure.example.com\r\n",
            400,
            INVALID_HOST,
        ),
        (
            "GET / HTTP/1.1\r\nHost: secure.example.com%2e\r\n",
            400,
            INVALID_HOST,
        ),
        (
            "GET / HTTP/1.1\r\nHost: user@secure.example.com\r\n",
            400,
            INVALID_HOST,
        ),
        (
            "GET http://user@secure.example.com/ HTTP/1.1\r\nHost: secure.example.com\r\n",
            400,
            INVALID_HOST,
        ),
        (
            "GET / HTTP/1.1\r\nHost: secure.example.com:x\r\n",
            400,
            INVALID_HOST,
        ),
        // RFC 9112 section 3.2: HTTP/1.1 needs exactly one Host.
        ("GET / HTTP/1.1\r\n", 400, INVALID_HOST),
        (
            "GET / HTTP/1.1\r\nHost: api.example.com\r\nHost: secure.example.com\r\n",
            400,
            INVALID_HOST,
        ),
    ];
    for (head, status, reason) in heads {
        let resp = raw_request(&s, &format!("{head}Connection: close\r\n\r\n")).await;
        assert_eq!(resp.status, *status, "{head:?}: {}", resp.text());
        assert!(resp.text().contains(reason), "{head:?}: {}", resp.text());
    }
    assert_eq!(s.admin.request_count(), 0);
    assert_eq!(s.open.request_count(), 0);

    // HTTP/1.0 may leave Host out: the host-less route answers.
    let resp = raw_request(&s, "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_the_canonical_host_it_was_routed_by() {
    let s = host_setup().await;
    let resp = raw_request(
        &s,
        "GET /x HTTP/1.1\r\nHost: API.Example.com.:8443\r\nConnection: close\r\n\r\n",
    )
    .await;
    let echo: Echo = serde_json::from_slice(&resp.body).expect("echo");
    assert_eq!(echo.header("host"), Some("api.example.com:8443"));
    assert_eq!(
        echo.header("x-forwarded-host"),
        Some("api.example.com:8443")
    );

    // HTTP/2: :authority spelt with a trailing dot is the protected host too, and a Host
    // header naming another host than :authority is refused.
    let mut h2 = connect_h2_by_address(&s.pki, s.gw.addr()).await;
    let req = h2_request("GET", "secure.example.com.", "/")
        .body(empty())
        .expect("req");
    h2.call(req)
        .await
        .expect("h2")
        .assert_denied(403, IP_NOT_ALLOWED);
    let req = h2_request("GET", "api.example.com", "/")
        .header("host", "secure.example.com")
        .body(empty())
        .expect("req");
    h2.call(req)
        .await
        .expect("h2")
        .assert_denied(400, INVALID_HOST);
    assert_eq!(s.admin.request_count(), 0);
}
