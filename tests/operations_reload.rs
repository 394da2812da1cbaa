//! Proves live reload (POST /reload, `Gateway::reload`, the config-file watcher and SIGHUP on the
//! real binary): twenty reloads under continuous keep-alive, new-connection and HTTP/2 load fail no
//! request; a swapped server certificate is served to new handshakes while older connections keep
//! working; a broken file changes nothing, is counted as a failure and is answered with every
//! problem (file and key path); routes added and removed apply to the next request of an open
//! connection; a moved listener is rebound while the others keep their sockets.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis::server::ReloadError;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use support::prometheus::Exposition;
use support::*;

/// `[server]` with the watcher on or off, and an admin listener on 127.0.0.1:0.
fn head(watch: bool) -> String {
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n",
        server(&format!("watch_config = {watch}"))
    )
}

fn reloads(m: &Exposition, result: &str) -> f64 {
    m.value("portcullis_config_reloads_total", &[("result", result)])
        .unwrap_or_else(|| panic!("no portcullis_config_reloads_total{{result={result:?}}}"))
}

/// `GET /config` as JSON (its `config` member).
async fn shown_config(admin: &Admin) -> Value {
    let r = admin.get("/config").await;
    assert_eq!(r.status, 200, "GET /config: {}", r.text());
    r.json()["config"].clone()
}

async fn call(c: &mut H1, path: &str) -> TestResponse {
    c.call(get(path))
        .await
        .unwrap_or_else(|e| panic!("GET {path} on an open connection: {e}"))
}

async fn call2(c: &mut H2, authority: &str, path: &str) -> TestResponse {
    let req = h2_request("GET", authority, path).body(empty()).unwrap();
    c.call(req)
        .await
        .unwrap_or_else(|e| panic!("HTTP/2 GET {path}: {e}"))
}

/// The echo of `path` from upstream `name`.
fn served_by(r: &TestResponse, name: &str, path: &str) {
    let echo = r.echo();
    assert_eq!(echo.upstream, name, "{path} went to the wrong upstream");
    assert_eq!(echo.uri, path);
}

fn no_route(r: &TestResponse, path: &str) {
    assert_eq!(r.status, 404, "{path}: {}", r.text());
    assert_eq!(r.json()["error"], "no_route", "{path}");
}

// === load ===

/// Answers and failures across the load tasks.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    per_task: [AtomicU64; 4],
    failed: Mutex<Vec<String>>,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// HTTP/1.1, one connection for 50 requests, then a new one.
    KeepAlive,
    /// HTTP/1.1, a new TLS connection for every request.
    NewEach,
    /// HTTP/2, one connection for everything.
    H2,
    /// HTTP/1.1, every third request on a new connection, the rest kept alive.
    Mixed,
}

async fn load_task(
    task: usize,
    mode: Mode,
    pki: Arc<Pki>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let h1_client = TlsClient::new(&pki);
    let h2_client = TlsClient::new(&pki).h2();
    let mut h1: Option<H1> = None;
    let mut h2: Option<H2> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let path = format!("/load/{task}/{n}");
        let fresh = match mode {
            Mode::KeepAlive => n % 50 == 1,
            Mode::NewEach => true,
            Mode::H2 => false,
            Mode::Mixed => n.is_multiple_of(3),
        };
        let result: Result<TestResponse, String> = async {
            if let Mode::H2 = mode {
                if h2.is_none() {
                    let tls = h2_client
                        .connect(addr, "localhost")
                        .await
                        .map_err(|e| format!("HTTP/2 connect: {e}"))?;
                    h2 = Some(H2::handshake(tls).await?);
                }
                let req = h2_request("GET", "localhost", &path).body(empty()).unwrap();
                return h2.as_mut().expect("connected").call(req).await;
            }
            if fresh || h1.is_none() {
                let tls = h1_client
                    .connect(addr, "localhost")
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                h1 = Some(H1::handshake(tls).await?);
            }
            h1.as_mut().expect("connected").call(get(&path)).await
        }
        .await;
        match result {
            Ok(r) if r.status == 200 && r.text() == format!("ok {path}") => {
                tally.ok.fetch_add(1, Ordering::SeqCst);
                tally.per_task[task].fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => tally.failed.lock().unwrap().push(format!(
                "task {task} ({mode:?}) request {n} {path}: {} {}",
                r.status,
                r.text()
            )),
            Err(e) => {
                tally
                    .failed
                    .lock()
                    .unwrap()
                    .push(format!("task {task} ({mode:?}) request {n} {path}: {e}"));
                // Start over on a new connection rather than report the same one again.
                h1 = None;
                h2 = None;
            }
        }
    }
}

/// One listener, one route whose `response_timeout` is the harmless thing each reload changes.
fn load_config(up: &Upstream, response_timeout_ms: u64) -> String {
    format!(
        "{}{}{}",
        head(true),
        listener("public", ""),
        route(
            "all",
            "/",
            &[&up.url()],
            &format!("response_timeout = \"{response_timeout_ms}ms\"")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_continuous_load_fail_no_request() {
    let pki = Arc::new(Pki::generate());
    // A millisecond per answer, so every reload lands while requests are in flight.
    let up = Upstream::serve(|req| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        http::Response::builder()
            .status(200)
            .body(full(format!("ok {}", req.uri())))
            .unwrap()
    })
    .await;
    let gw = Gateway::start(pki.dir(), &load_config(&up, 10_000)).await;
    let admin = Admin::new(gw.admin_addr());
    let before = admin.metrics().await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let modes = [Mode::KeepAlive, Mode::NewEach, Mode::H2, Mode::Mixed];
    let tasks: Vec<_> = modes
        .iter()
        .enumerate()
        .map(|(i, mode)| {
            tokio::spawn(load_task(
                i,
                *mode,
                pki.clone(),
                gw.addr(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();

    // Traffic flows before the first reload and between every two.
    let progressed = |since: u64| {
        let tally = tally.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while tally.ok.load(Ordering::SeqCst) < since + 20 {
                assert!(
                    Instant::now() < deadline,
                    "the load made no progress for 30 s; failures: {:?}",
                    tally.failed.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tally.ok.load(Ordering::SeqCst)
        }
    };
    let mut seen = progressed(0).await;

    let path = gw.config.clone();
    for i in 0..20u64 {
        let timeout_ms = 10_001 + i;
        ops::replace_file(&path, &load_config(&up, timeout_ms));
        let how = match i % 3 {
            0 => {
                let r = admin.post("/reload", "").await;
                assert_eq!(r.status, 200, "reload {i}: {}", r.text());
                assert_eq!(r.json()["result"], "reloaded", "reload {i}");
                "POST /reload"
            }
            1 => {
                let s = gw
                    .reload()
                    .await
                    .unwrap_or_else(|e| panic!("reload {i}: {e}"));
                assert!(s.rebound.is_empty() && s.closed.is_empty(), "{s:?}");
                "Gateway::reload"
            }
            _ => "the config watcher",
        };
        // The new value is in force: at once, or within the watcher's debounce.
        let want = json!(format!("{timeout_ms}ms"));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let shown = shown_config(&admin).await["routes"][0]["response_timeout"].clone();
            if shown == want {
                break;
            }
            assert!(
                i % 3 == 2 && Instant::now() < deadline,
                "reload {i} by {how}: GET /config shows {shown}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen = progressed(seen).await;
    }

    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(40), t)
            .await
            .expect("a load task did not stop within 40 s")
            .expect("load task panicked");
    }
    let failed = tally.failed.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::SeqCst);
    let per_task: Vec<u64> = tally
        .per_task
        .iter()
        .map(|n| n.load(Ordering::SeqCst))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across 20 reloads:\n{}",
        failed.len(),
        ok as usize + failed.len(),
        failed.join("\n")
    );
    assert!(
        per_task.iter().all(|n| *n > 0),
        "every kind of client got answers: {per_task:?}"
    );

    let after = admin.metrics().await;
    let succeeded = reloads(&after, "success") - reloads(&before, "success");
    assert!(
        succeeded >= 20.0,
        "{succeeded} successful reloads counted, at least 20 were made"
    );
    assert_eq!(
        reloads(&after, "failure"),
        reloads(&before, "failure"),
        "no reload failed"
    );
    assert_eq!(
        after.value(
            "portcullis_requests_total",
            &[("route", "all"), ("method", "GET"), ("class", "2xx")]
        ),
        Some(ok as f64),
        "every answer the clients saw was counted as a 2xx, and nothing else"
    );
    eprintln!("{ok} requests answered across 20 reloads, per task {per_task:?}");
}

// === certificates ===

/// A TLS connection (HTTP/1.1 on top) and the end-entity certificate the server presented.
async fn connect_seeing_cert(pki: &Pki, addr: SocketAddr) -> (H1, CertificateDer<'static>) {
    let tls = TlsClient::new(pki)
        .connect(addr, "localhost")
        .await
        .unwrap_or_else(|e| panic!("TLS connect to {addr}: {e}"));
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .clone()
        .into_owned();
    (H1::handshake(tls).await.unwrap(), cert)
}

/// Subject and serial of a DER certificate.
fn subject_and_serial(der: &[u8]) -> (String, Vec<u8>) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("X.509");
    (cert.subject().to_string(), cert.raw_serial().to_vec())
}

#[tokio::test]
async fn a_certificate_swapped_by_reload_is_served_to_new_handshakes_and_open_connections_keep_working()
 {
    let pki = Pki::generate();
    let up = Upstream::echo("up").await;
    let with_certs = |chain: &str, key: &str| {
        format!(
            "{}{}{}",
            head(false),
            listener_with_certs("public", "", &[(chain, key)]),
            route("all", "/", &[&up.url()], ""),
        )
    };
    let gw = Gateway::start(pki.dir(), &with_certs("server.pem", "server.key")).await;
    let admin = Admin::new(gw.admin_addr());

    let (mut first, first_cert) = connect_seeing_cert(&pki, gw.addr()).await;
    assert_eq!(first_cert, pki.server);
    served_by(&call(&mut first, "/a").await, "up", "/a");

    // The same path: a new certificate and key written over server.pem / server.key.
    let swapped = pki.rsa_server();
    assert_ne!(swapped, pki.server);
    std::fs::copy(pki.path("rsa.pem"), pki.path("server.pem")).unwrap();
    std::fs::copy(pki.path("rsa.key"), pki.path("server.key")).unwrap();
    let r = admin.post("/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());

    let (mut second, second_cert) = connect_seeing_cert(&pki, gw.addr()).await;
    assert_eq!(
        second_cert, swapped,
        "a new handshake after the reload gets the certificate now in server.pem"
    );
    let (old_subject, old_serial) = subject_and_serial(&pki.server);
    let (new_subject, new_serial) = subject_and_serial(&second_cert);
    assert_eq!(old_subject, "CN=localhost");
    assert_eq!(new_subject, "CN=localhost (RSA)");
    assert_ne!(old_serial, new_serial);
    served_by(&call(&mut second, "/b").await, "up", "/b");
    // The connection opened before the swap keeps working (on the old certificate).
    served_by(&call(&mut first, "/c").await, "up", "/c");

    // A new path: another certificate in rsa.pem, the config now naming it.
    let third_cert = pki.rsa_server();
    assert_ne!(third_cert, swapped);
    write_config(pki.dir(), &with_certs("rsa.pem", "rsa.key"));
    gw.reload().await.expect("reload to rsa.pem");
    let (mut third, seen) = connect_seeing_cert(&pki, gw.addr()).await;
    assert_eq!(
        seen, third_cert,
        "a new handshake gets the certificate in rsa.pem"
    );
    served_by(&call(&mut third, "/d").await, "up", "/d");
    served_by(&call(&mut second, "/e").await, "up", "/e");
    served_by(&call(&mut first, "/f").await, "up", "/f");
    assert!(!first.is_closed() && !second.is_closed());
}

// === broken config ===

#[tokio::test]
async fn a_broken_config_on_reload_changes_nothing_counts_a_failure_and_lists_every_problem() {
    let pki = Pki::generate();
    let up = Upstream::echo("up").await;
    let good = |timeout: &str| {
        format!(
            "{}{}{}",
            head(false),
            listener("public", ""),
            route(
                "all",
                "/",
                &[&up.url()],
                &format!("response_timeout = \"{timeout}\"")
            ),
        )
    };
    let gw = Gateway::start(pki.dir(), &good("5s")).await;
    let admin = Admin::new(gw.admin_addr());
    let file = gw.config.display().to_string();
    let mut kept = connect_h1(&pki, gw.addr()).await;
    served_by(&call(&mut kept, "/before").await, "up", "/before");
    let m0 = admin.metrics().await;
    let config_before = shown_config(&admin).await;
    assert_eq!(config_before["routes"][0]["response_timeout"], "5s");

    // Four problems in two tables; all must be reported, each with file and key path.
    let broken = format!(
        "{}{}{}{}",
        head(false),
        listener("public", "min_tls = \"1.1\""),
        route(
            "all",
            "/",
            &["ftp://127.0.0.1:21"],
            "response_timeout = \"soon\""
        ),
        route("extra", "/extra", &[&up.url()], "listeners = [\"nowhere\"]"),
    );
    write_config(pki.dir(), &broken);
    let expected_keys = [
        "listeners[0].min_tls",
        "routes[0].response_timeout",
        "routes[0].upstream[0]",
        "routes[1].listeners[0]",
    ];

    let r = admin.post("/reload", "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = r.json();
    assert_eq!(body["error"], "reload_failed", "{body}");
    assert_eq!(
        body["request_id"].as_str(),
        r.header("x-request-id").as_deref()
    );
    let errors: Vec<String> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {body}"))
        .iter()
        .map(|e| e.as_str().expect("each error is a string").to_owned())
        .collect();
    for key in expected_keys {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{file}: {key}: "))),
            "no error for {key} (with the file path) in {errors:#?}"
        );
    }
    assert_eq!(
        errors.len(),
        expected_keys.len(),
        "one line per problem: {errors:#?}"
    );

    let m1 = admin.metrics().await;
    assert_eq!(reloads(&m1, "failure"), reloads(&m0, "failure") + 1.0);
    assert_eq!(reloads(&m1, "success"), reloads(&m0, "success"));
    assert_eq!(
        m1.scalar("portcullis_config_last_success_timestamp_seconds"),
        m0.scalar("portcullis_config_last_success_timestamp_seconds")
    );

    // The same through the API: every issue, with its file and key.
    match gw.reload().await {
        Err(ReloadError::Config(errs)) => {
            let mut keys: Vec<&str> = errs.0.iter().map(|i| i.key.as_str()).collect();
            keys.sort_unstable();
            assert_eq!(keys, expected_keys, "{errs}");
            assert!(errs.0.iter().all(|i| i.file == gw.config), "{errs:?}");
        }
        other => panic!("reload of a broken file: {other:?}"),
    }
    assert_eq!(
        gw.shared().metrics.reload_count(false) as f64,
        reloads(&m0, "failure") + 2.0
    );

    // Nothing changed: the old config serves, old and new connections, and /config shows it.
    served_by(&call(&mut kept, "/after").await, "up", "/after");
    served_by(&send_one(&pki, gw.addr(), get("/new")).await, "up", "/new");
    let tls12 = TlsClient::new(&pki)
        .tls12_only()
        .connect(gw.addr(), "localhost")
        .await
        .expect("TLS 1.2 is still accepted");
    let mut c12 = H1::handshake(tls12).await.unwrap();
    served_by(&call(&mut c12, "/tls12").await, "up", "/tls12");
    let extra = call(&mut kept, "/extra").await;
    served_by(&extra, "up", "/extra");
    assert_eq!(shown_config(&admin).await, config_before);

    // Not TOML at all: one problem, with the file and the line.
    write_config(
        pki.dir(),
        "[server]\nwatch_config = false\n[[routes]\nname = \"x\"\n",
    );
    let r = admin.post("/reload", "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let errors = r.json()["errors"].clone();
    let only = errors[0].as_str().unwrap_or_default();
    assert_eq!(errors.as_array().map(Vec::len), Some(1), "{errors}");
    assert!(
        only.starts_with(&format!("{file}: not valid TOML")) && only.contains("(line 3)"),
        "{only}"
    );

    // A type error: named by its key path.
    let typed = good("5s").replace(
        "response_timeout = \"5s\"",
        "response_timeout = \"5s\"\nmax_body_bytes = \"big\"",
    );
    write_config(pki.dir(), &typed);
    let r = admin.post("/reload", "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let errors = r.json()["errors"].clone();
    assert!(
        errors[0]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{file}: routes[0].max_body_bytes: ")),
        "{errors}"
    );
    served_by(&call(&mut kept, "/still").await, "up", "/still");
    assert_eq!(shown_config(&admin).await, config_before);

    // Fixed: the next reload takes it.
    write_config(pki.dir(), &good("6s"));
    let r = admin.post("/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        shown_config(&admin).await["routes"][0]["response_timeout"],
        "6s"
    );
    let m2 = admin.metrics().await;
    assert_eq!(reloads(&m2, "failure"), reloads(&m0, "failure") + 4.0);
    assert_eq!(reloads(&m2, "success"), reloads(&m0, "success") + 1.0);
    served_by(&call(&mut kept, "/fixed").await, "up", "/fixed");
}

// === routes ===

#[tokio::test]
async fn a_route_added_and_a_route_removed_by_reload_apply_to_an_open_keep_alive_connection() {
    let pki = Pki::generate();
    let old_up = Upstream::echo("old").await;
    let kept_up = Upstream::echo("kept").await;
    let new_up = Upstream::echo("new").await;
    let before_toml = format!(
        "{}{}{}{}",
        head(false),
        listener("public", ""),
        route("old", "/old", &[&old_up.url()], ""),
        route("kept", "/kept", &[&kept_up.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &before_toml).await;
    let admin = Admin::new(gw.admin_addr());

    let mut h1 = connect_h1(&pki, gw.addr()).await;
    let tls = TlsClient::new(&pki)
        .h2()
        .connect(gw.addr(), "localhost")
        .await
        .unwrap();
    let mut h2 = H2::handshake(tls).await.unwrap();
    served_by(&call(&mut h1, "/old/1").await, "old", "/old/1");
    no_route(&call(&mut h1, "/new/1").await, "/new/1");
    served_by(&call(&mut h1, "/kept/1").await, "kept", "/kept/1");
    served_by(
        &call2(&mut h2, "localhost", "/old/2").await,
        "old",
        "/old/2",
    );
    no_route(&call2(&mut h2, "localhost", "/new/2").await, "/new/2");
    let m0 = admin.metrics().await;

    write_config(
        pki.dir(),
        &format!(
            "{}{}{}{}",
            head(false),
            listener("public", ""),
            route("kept", "/kept", &[&kept_up.url()], ""),
            route("new", "/new", &[&new_up.url()], ""),
        ),
    );
    let s = gw.reload().await.expect("reload");
    assert_eq!((s.listeners, s.routes), (1, 2));
    assert!(s.rebound.is_empty() && s.closed.is_empty(), "{s:?}");

    // The same connections, their next requests: the removed route is gone, the added one
    // serves, the kept one still serves.
    no_route(&call(&mut h1, "/old/3").await, "/old/3");
    served_by(&call(&mut h1, "/new/3").await, "new", "/new/3");
    served_by(&call(&mut h1, "/kept/3").await, "kept", "/kept/3");
    no_route(&call2(&mut h2, "localhost", "/old/4").await, "/old/4");
    served_by(
        &call2(&mut h2, "localhost", "/new/4").await,
        "new",
        "/new/4",
    );
    assert!(!h1.is_closed());

    let m1 = admin.metrics().await;
    let handshakes = |m: &Exposition| {
        m.samples
            .iter()
            .filter(|s| s.name == "portcullis_tls_handshakes_total")
            .map(|s| s.value)
            .sum::<f64>()
    };
    assert_eq!(
        handshakes(&m1),
        handshakes(&m0),
        "no new connection was made: the same two served before and after"
    );
    assert_eq!(m1.scalar("portcullis_open_connections"), 2.0);
    assert_eq!(
        old_up.request_count(),
        2,
        "nothing reached the removed route's upstream after the reload"
    );
}

// === listeners ===

/// A port on 127.0.0.1 free a moment ago.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_listener_whose_address_changes_is_rebound_and_the_others_keep_their_sockets() {
    let pki = Pki::generate();
    let up = Upstream::echo("up").await;
    let toml = |moving_bind: &str| {
        format!(
            "{}{}{}{}",
            head(false),
            listener("public", ""),
            listener_at("moving", moving_bind, "", &[("server.pem", "server.key")]),
            route("all", "/", &[&up.url()], ""),
        )
    };
    let gw = Gateway::start(pki.dir(), &toml("127.0.0.1:0")).await;
    let admin = Admin::new(gw.admin_addr());
    let public_before = gw.addr_of("public");
    let moving_before = gw.addr_of("moving");
    let mut on_public = connect_h1(&pki, public_before).await;
    let mut on_moving = connect_h1(&pki, moving_before).await;
    served_by(&call(&mut on_public, "/p1").await, "up", "/p1");
    served_by(&call(&mut on_moving, "/m1").await, "up", "/m1");

    let target: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write_config(pki.dir(), &toml(&target.to_string()));
    let r = admin.post("/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["rebound"], json!(["moving"]), "{body}");
    assert_eq!(body["closed"], json!(["moving"]), "{body}");

    assert_eq!(gw.addr_of("moving"), target);
    assert_eq!(
        gw.addr_of("public"),
        public_before,
        "the unchanged listener keeps its socket"
    );
    // The old port refuses new connections; the new one serves.
    match tokio::net::TcpStream::connect(moving_before).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("the old address {moving_before} still accepts connections"),
    }
    served_by(&send_one(&pki, target, get("/m2")).await, "up", "/m2");
    // The unchanged listener serves new connections on the same port.
    served_by(
        &send_one(&pki, public_before, get("/p2")).await,
        "up",
        "/p2",
    );
    // Connections accepted before the move are not cut.
    served_by(&call(&mut on_public, "/p3").await, "up", "/p3");
    served_by(&call(&mut on_moving, "/m3").await, "up", "/m3");

    let ready = admin.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["listeners"], 2);
}

// === the watcher ===

#[tokio::test]
async fn the_watcher_reloads_a_replaced_config_file_once_per_burst_of_writes() {
    let pki = Pki::generate();
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let toml = |up: &Upstream| {
        format!(
            "{}{}{}",
            head(true),
            listener("public", ""),
            route("all", "/", &[&up.url()], ""),
        )
    };
    let gw = Gateway::start(pki.dir(), &toml(&a)).await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    served_by(&call(&mut c, "/1").await, "a", "/1");
    let metrics = &gw.shared().metrics;
    assert_eq!(metrics.reload_count(true), 0);

    // A burst: the file written in place three times, then replaced by rename.
    for _ in 0..3 {
        write_config(pki.dir(), &toml(&a));
    }
    ops::replace_file(&gw.config, &toml(&b));
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.reload_count(true) == 0 {
        assert!(
            Instant::now() < deadline,
            "the watcher did not reload within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served_by(&call(&mut c, "/2").await, "b", "/2");
    // Well past the 300 ms debounce: still exactly one reload for the burst.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(metrics.reload_count(true), 1, "one reload per burst");
    assert_eq!(metrics.reload_count(false), 0);

    // A broken file: the watcher tries it, the reload is refused and counted, the old
    // config serves.
    ops::replace_file(&gw.config, "[[listeners]]\nname = 1\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.reload_count(false) == 0 {
        assert!(
            Instant::now() < deadline,
            "the watcher did not try the broken file within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served_by(&call(&mut c, "/3").await, "b", "/3");
}

// === SIGHUP ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_of_a_running_binary() {
    let pki = Pki::generate();
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let v1_to = |up: &Upstream, more: &str| {
        format!(
            "{}{}{}{more}",
            head(false),
            listener("public", ""),
            route("v1", "/v1", &[&up.url()], ""),
        )
    };
    let path = write_config(pki.dir(), &v1_to(&a, ""));
    let mut proc = ops::Proc::spawn(&path, "text");
    let addr = proc.listener_addr("public").await;
    served_by(&send_one(&pki, addr, get("/v1/x")).await, "a", "/v1/x");
    no_route(&send_one(&pki, addr, get("/v2/x")).await, "/v2/x");

    // Change route v1's upstream and add v2; the watcher is off, so only SIGHUP reloads.
    ops::replace_file(&path, &v1_to(&b, &route("v2", "/v2", &[&b.url()], "")));
    proc.signal("HUP");
    proc.wait_for_line("config reloaded", |l| l.message == "config reloaded")
        .await;
    let lines = proc.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.message == "SIGHUP received: reloading the config"),
        "{}",
        proc.logs()
    );
    served_by(&send_one(&pki, addr, get("/v1/y")).await, "b", "/v1/y");
    served_by(&send_one(&pki, addr, get("/v2/y")).await, "b", "/v2/y");

    proc.signal("TERM");
    let status = proc.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}\n{}", proc.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_while_the_binary_is_still_starting_does_not_kill_it() {
    let pki = Pki::generate();
    let up = Upstream::echo("up").await;
    // A JWKS endpoint that accepts and never answers: start-up waits for its first fetch
    // (here at most `jwks_timeout`), after the listeners are bound and logged.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = blackhole.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = blackhole.accept().await {
            held.push(s);
        }
    });
    let toml = format!(
        "{}[[token_issuers]]\nname = \"idp\"\nissuer = \"https://idp.test\"\n\
         audiences = [\"portcullis\"]\nalgorithms = [\"ES256\"]\n\
         jwks_url = \"https://{jwks_addr}/jwks.json\"\njwks_ca = \"ca.pem\"\n\
         jwks_timeout = \"3s\"\n\n{}{}",
        head(false),
        listener("public", ""),
        route("all", "/", &[&up.url()], "auth = \"none\""),
    );
    let path = write_config(pki.dir(), &toml);
    let mut proc = ops::Proc::spawn(&path, "text");
    let addr = proc.listener_addr("public").await;

    // The listener is bound and logged: an operator's reload arrives now.
    proc.signal("HUP");

    // Start-up finishes and the gateway serves; the SIGHUP did not end the process.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = proc.try_wait() {
            panic!(
                "portcullis exited ({status}) on a SIGHUP received after it logged \
                 \"listening\" but before start-up finished\n{}",
                proc.logs()
            );
        }
        let served = async {
            let tls = TlsClient::new(&pki).connect(addr, "localhost").await.ok()?;
            let mut h1 = H1::handshake(tls).await.ok()?;
            tokio::time::timeout(Duration::from_secs(2), h1.call(get("/x")))
                .await
                .ok()?
                .ok()
        };
        if let Some(r) = served.await {
            served_by(&r, "up", "/x");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving within 20 s\n{}",
            proc.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proc.signal("TERM");
    let status = proc.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}\n{}", proc.logs());
}

// === limits and the admin listener ===

#[tokio::test]
async fn a_max_connections_lowered_by_reload_below_the_open_connections_applies_once_they_close() {
    let pki = Pki::generate();
    let up = Upstream::echo("up").await;
    let toml = |max: usize| {
        format!(
            "{}[admin]\nbind = \"127.0.0.1:0\"\n\n{}{}",
            server(&format!("watch_config = false\nmax_connections = {max}")),
            listener("public", ""),
            route("all", "/", &[&up.url()], ""),
        )
    };
    let gw = Gateway::start(pki.dir(), &toml(4)).await;
    let open_now = || gw.shared().metrics.open_connections.get();
    let limit_refusals = || gw.refused_count(portcullis::metrics::ConnRefusal::Limit);
    let client = TlsClient::new(&pki);

    let mut four = Vec::new();
    for i in 0..4 {
        let mut c = connect_h1(&pki, gw.addr()).await;
        served_by(
            &call(&mut c, &format!("/{i}")).await,
            "up",
            &format!("/{i}"),
        );
        four.push(c);
    }
    assert_eq!(open_now(), 4);

    // Lowered to 2 with 4 open: the open ones are not cut, a new one is refused.
    write_config(pki.dir(), &toml(2));
    gw.reload().await.expect("reload");
    assert!(
        client.connect(gw.addr(), "localhost").await.is_err(),
        "a fifth connection was accepted with max_connections = 2 and 4 open"
    );
    assert_eq!(limit_refusals(), 1);
    for (i, c) in four.iter_mut().enumerate() {
        let p = format!("/again/{i}");
        served_by(&call(c, &p).await, "up", &p);
    }

    // All four close; from now on the limit is 2.
    drop(four);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_now() != 0 {
        assert!(
            Instant::now() < deadline,
            "connections still counted open after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut two = Vec::new();
    for i in 0..2 {
        let mut c = connect_h1(&pki, gw.addr()).await;
        let p = format!("/two/{i}");
        served_by(&call(&mut c, &p).await, "up", &p);
        two.push(c);
    }
    let third = client.connect(gw.addr(), "localhost").await;
    assert!(
        third.is_err(),
        "a third connection was accepted with max_connections = 2 and 2 open: the limit lowered by \
         reload never took effect (open now: {})",
        open_now()
    );
    assert_eq!(limit_refusals(), 2);
}

#[tokio::test]
async fn an_admin_bind_changed_by_reload_is_rebound_and_the_old_address_closed() {
    let pki = Pki::generate();
    let up = Upstream::echo("up").await;
    let toml = |admin_bind: &str| {
        format!(
            "{}[admin]\nbind = \"{admin_bind}\"\n\n{}{}",
            server("watch_config = false"),
            listener("public", ""),
            route("all", "/", &[&up.url()], ""),
        )
    };
    let gw = Gateway::start(pki.dir(), &toml("127.0.0.1:0")).await;
    let old = Admin::new(gw.admin_addr());
    let moved: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

    write_config(pki.dir(), &toml(&moved.to_string()));
    let r = old.post("/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The admin listener moved: the new address serves, the old one refuses, and the
    // config in force (read at the new address) says so.
    let serving_there = tokio::net::TcpStream::connect(moved).await.is_ok();
    let old_closed = tokio::net::TcpStream::connect(old.addr).await.is_err();
    assert!(
        serving_there && old_closed,
        "after the reload the admin API should listen on {moved} only (new serving: \
         {serving_there}, old {} closed: {old_closed}): {}",
        old.addr,
        r.text()
    );
    let shown = shown_config(&Admin::new(moved)).await;
    assert_eq!(shown["admin"]["bind"], moved.to_string());
}

#[tokio::test]
async fn a_reload_that_drops_the_admin_section_never_leaves_the_admin_api_open_without_its_token() {
    const TOKEN: &str = "admintoken-reload-4c2a0e8f6d4b2a0c8e6f4d2b0a8c6e4f";
    let pki = Pki::generate();
    let up = Upstream::echo("up").await;
    pki.write("admin.token", TOKEN);
    let rest = format!(
        "{}{}",
        listener("public", ""),
        route("all", "/", &[&up.url()], "")
    );
    let with_admin = format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\n{rest}",
        server("watch_config = false"),
    );
    let gw = Gateway::start(pki.dir(), &with_admin).await;
    let admin = gw.admin_addr();
    let r = ops::admin_call(admin, "GET", "/metrics", &[], empty()).await;
    assert_eq!(r.status, 401, "the token is required before the reload");

    // The operator removes the admin API from the config.
    write_config(
        pki.dir(),
        &format!("{}{rest}", server("watch_config = false")),
    );
    gw.reload().await.expect("reload without [admin]");

    // Whatever still listens on the admin address must not serve without the token.
    if let Ok(tcp) = tokio::net::TcpStream::connect(admin).await {
        drop(tcp);
        for (method, path) in [("GET", "/metrics"), ("GET", "/config"), ("POST", "/reload")] {
            let r = ops::admin_call(admin, method, path, &[], empty()).await;
            assert_eq!(
                r.status,
                401,
                "after a reload that removed [admin], {method} {path} on {admin} answers {} \
                 without any token: {}",
                r.status,
                r.text()
            );
        }
    }
}
