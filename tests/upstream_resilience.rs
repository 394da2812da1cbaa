//! Upstream resilience with named `[[upstreams]]`: a target killed under load is marked down
//! by health checks and fails no GET; a hanging target is ejected and its requests fail over
//! within the deadline; a POST whose body was sent is never replayed; round-robin follows the
//! weights; least-request avoids a slow target; hashing by a header is sticky and moves about
//! one key in n when a target is added; the retry budget caps extra requests; `max_pending`
//! overflow is refused at once; with every target down requests fail fast (or, with
//! `all_down = "panic"`, go out anyway); bad upstream settings name their key path. The
//! controllable upstream itself ([`Faulty`]) is checked first.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use support::prometheus::Exposition;
use support::*;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Poll `cond` every 20 ms until it holds; panics naming `what` after `limit`.
async fn eventually(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A target entry: `"http://127.0.0.1:PORT"`.
fn plain(f: &Faulty) -> String {
    format!("\"{}\"", f.url())
}

/// A target entry with a weight: `{ url = "...", weight = w }`.
fn weighted(f: &Faulty, weight: u32) -> String {
    format!("{{ url = \"{}\", weight = {weight} }}", f.url())
}

/// Admin on 127.0.0.1:0, no config watcher, listener "public", upstream "app" with `targets`
/// and the extra `upstream_keys` lines, and route "api" for `/` to it with `route_keys`.
fn config(targets: &[String], upstream_keys: &str, route_keys: &str) -> String {
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n{}\
         [[upstreams]]\nname = \"app\"\ntargets = [{}]\n{upstream_keys}\n\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"app\"\n{route_keys}\n",
        server("watch_config = false"),
        listener("public", ""),
        targets.join(", "),
    )
}

/// `health_check` with the given interval and both thresholds 2.
fn health_check(interval: &str) -> String {
    format!(
        "health_check = {{ path = \"/healthz\", interval = \"{interval}\", timeout = \"1s\", \
         healthy_threshold = 2, unhealthy_threshold = 2, expect_status = [200] }}"
    )
}

/// `GET /upstreams`, checked to be 200 JSON.
async fn upstreams(admin: &Admin) -> Value {
    let r = admin.get("/upstreams").await;
    assert_eq!(r.status, 200, "GET /upstreams: {}", r.text());
    r.json()
}

/// Upstream `name` in a `/upstreams` answer.
fn upstream_of<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["upstreams"]
        .as_array()
        .unwrap_or_else(|| panic!("/upstreams has no \"upstreams\" array: {v}"))
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("/upstreams does not list {name:?}: {v}"))
}

/// Target `addr` of upstream "app" in a `/upstreams` answer.
fn target_of(v: &Value, addr: SocketAddr) -> &Value {
    let app = upstream_of(v, "app");
    app["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("upstream app has no \"targets\" array: {app}"))
        .iter()
        .find(|t| t["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("upstream app does not list target {addr}: {app}"))
}

/// Boolean `field` (`healthy`, `ejected`) of target `addr` of upstream "app", as the admin
/// API shows it now.
async fn target_flag(admin: &Admin, addr: SocketAddr, field: &str) -> bool {
    let v = upstreams(admin).await;
    let t = target_of(&v, addr);
    t[field]
        .as_bool()
        .unwrap_or_else(|| panic!("target {addr} has no boolean {field:?}: {t}"))
}

/// The value of `name{upstream="app", target=addr}`, 0 when the series does not exist.
fn per_target(m: &Exposition, name: &str, addr: SocketAddr) -> f64 {
    m.value(name, &[("upstream", "app"), ("target", &addr.to_string())])
        .unwrap_or(0.0)
}

/// The value of `name{upstream="app"}`, 0 when the series does not exist.
fn per_upstream(m: &Exposition, name: &str) -> f64 {
    m.value(name, &[("upstream", "app")]).unwrap_or(0.0)
}

/// A GET with `x-tenant: key`.
fn get_as(tenant: &str) -> http::Request<BoxBody> {
    request("GET", "/")
        .header("x-tenant", tenant)
        .body(empty())
        .unwrap()
}

/// A POST with a small body.
fn post(path: &str, body: &str) -> http::Request<BoxBody> {
    request("POST", path)
        .header("content-type", "text/plain")
        .body(full(body.to_owned()))
        .unwrap()
}

/// A keep-alive client connection to the gateway's "public" listener.
async fn client(tls: &TlsClient, addr: SocketAddr) -> H1 {
    let conn = tls
        .connect(addr, "localhost")
        .await
        .unwrap_or_else(|e| panic!("TLS connect to the gateway at {addr}: {e}"));
    H1::handshake(conn).await.unwrap()
}

/// Response statuses (or "transport error") and how often each was seen.
type Counts = BTreeMap<String, usize>;

/// `clients` tasks, each with its own keep-alive connection, sending GETs in a loop until
/// stopped and counting every outcome; a transport error is counted and the task reconnects.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<(Counts, Vec<String>)>>,
}

impl Load {
    fn start(pki: &Pki, addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|i| {
                let tls = TlsClient::new(pki);
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut counts = Counts::new();
                    let mut samples = Vec::new();
                    let mut c = client(&tls, addr).await;
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        match c.call(get(&format!("/load/{i}/{n}"))).await {
                            Ok(r) => {
                                *counts.entry(r.status.as_u16().to_string()).or_default() += 1;
                                if r.status != 200 && samples.len() < 10 {
                                    samples.push(format!("{}: {}", r.status, r.text()));
                                }
                            }
                            Err(e) => {
                                *counts.entry("transport error".to_owned()).or_default() += 1;
                                if samples.len() < 10 {
                                    samples.push(e);
                                }
                                c = client(&tls, addr).await;
                            }
                        }
                    }
                    (counts, samples)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stop every client; the outcomes of all of them, and a few non-200 samples.
    async fn finish(self) -> (Counts, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Counts::new();
        let mut samples = Vec::new();
        for t in self.tasks {
            let (counts, s) = t.await.expect("load task panicked");
            for (k, v) in counts {
                *all.entry(k).or_default() += v;
            }
            samples.extend(s);
        }
        (all, samples)
    }
}

/// Send `per_client` GETs from each of `clients` concurrent keep-alive connections; every
/// answer must be 200. Returns how many were sent.
async fn burst(pki: &Pki, addr: SocketAddr, clients: usize, per_client: usize) -> usize {
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let tls = TlsClient::new(pki);
            tokio::spawn(async move {
                let mut c = client(&tls, addr).await;
                for n in 0..per_client {
                    let r = c
                        .call(get(&format!("/burst/{i}/{n}")))
                        .await
                        .unwrap_or_else(|e| panic!("client {i} request {n}: {e}"));
                    assert_eq!(r.status, 200, "client {i} request {n}: {}", r.text());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task panicked");
    }
    clients * per_client
}

// ---------------------------------------------------------------------------------------------
// The controllable upstream
// ---------------------------------------------------------------------------------------------

async fn plain_client(addr: SocketAddr) -> H1 {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    H1::handshake(tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_answers_as_its_mode_says_and_counts_what_it_saw() {
    let f = Faulty::start("alpha").await;
    assert!(f.url().starts_with("http://127.0.0.1:"), "{}", f.url());
    let mut c = plain_client(f.addr()).await;

    let r = c.call(get("/x")).await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "alpha"));

    f.set_mode(Mode::Status(503));
    let r = c.call(get("/healthz")).await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (503, "alpha"));

    f.set_mode(Mode::Delay(Duration::from_millis(200)));
    let t = Instant::now();
    let r = c.call(post("/y", "some body")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );

    // A hung request is read (its body too) but never answered.
    f.set_mode(Mode::Hang);
    let mut hung = plain_client(f.addr()).await;
    let pending = tokio::spawn(async move { hung.call(post("/z", "hung body")).await });
    eventually(
        "the hung request arrives",
        Duration::from_secs(5),
        async || f.bodies_received() == 2,
    )
    .await;
    assert_eq!(f.in_flight(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "a hung request was answered");
    pending.abort();

    assert_eq!(f.received(), 4);
    assert_eq!(f.served(), 3);
    assert_eq!(f.health_checks(), 1);
    assert_eq!(f.received_non_health(), 3);
    assert_eq!(f.bodies_received(), 2);
    // Two connections: one keep-alive for three requests, one for the hung request.
    assert_eq!(f.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_stop_refuses_connections_and_closes_open_ones_and_restart_serves_the_same_port() {
    let f = Faulty::start("beta").await;
    let addr = f.addr();
    let mut open = plain_client(addr).await;
    assert_eq!(open.call(get("/")).await.unwrap().status, 200);
    // A request hanging on another connection when the upstream is killed.
    f.set_mode(Mode::Hang);
    let mut hung = plain_client(addr).await;
    let pending = tokio::spawn(async move { hung.call(get("/hang")).await });
    eventually(
        "the hung request arrives",
        Duration::from_secs(5),
        async || f.received() == 2,
    )
    .await;

    f.stop().await;
    assert!(!f.is_running());
    let e = TcpStream::connect(addr)
        .await
        .expect_err("a stopped upstream accepted a connection");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    // The hung request fails: its connection was closed under it.
    let hung_result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the hung request's connection stayed open after stop")
        .unwrap();
    assert!(hung_result.is_err(), "{hung_result:?}");
    // The idle keep-alive connection was closed too.
    eventually(
        "the idle connection is closed",
        Duration::from_secs(5),
        async || open.is_closed(),
    )
    .await;

    f.set_mode(Mode::Ok);
    f.restart().await;
    assert!(f.is_running());
    assert_eq!(f.addr(), addr);
    let mut c = plain_client(addr).await;
    let r = c.call(get("/again")).await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "beta"));
    // Counters span runs.
    assert_eq!(f.received(), 3);
    assert_eq!(f.served(), 2);

    // And again: stop, restart.
    f.stop().await;
    TcpStream::connect(addr)
        .await
        .expect_err("a stopped upstream accepted a connection");
    f.restart().await;
    assert_eq!(
        plain_client(addr)
            .await
            .call(get("/"))
            .await
            .unwrap()
            .status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Health checks
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_targets_under_load_fails_no_get() {
    let pki = Pki::generate();
    let a = Faulty::start("a").await;
    let b = Faulty::start("b").await;
    let c = Faulty::start("c").await;
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &[plain(&a), plain(&b), plain(&c)],
            // Passive ejection on too: B is likely ejected while it refuses connections, but
            // only briefly, so health checks alone decide when it gets traffic again.
            &format!(
                "{}\noutlier = {{ consecutive_failures = 3, base_ejection = \"200ms\", \
                 max_ejection = \"1s\", max_ejected_percent = 50 }}",
                health_check("100ms")
            ),
            "",
        ),
    )
    .await;
    let admin = Admin::new(gw.admin_addr());
    eventually(
        "every target is health-checked and shown healthy",
        Duration::from_secs(10),
        async || {
            [&a, &b, &c].iter().all(|t| t.health_checks() >= 2)
                && target_flag(&admin, a.addr(), "healthy").await
                && target_flag(&admin, b.addr(), "healthy").await
                && target_flag(&admin, c.addr(), "healthy").await
        },
    )
    .await;

    let load = Load::start(&pki, gw.addr(), 4);
    eventually(
        "every target gets traffic",
        Duration::from_secs(10),
        async || [&a, &b, &c].iter().all(|t| t.received_non_health() >= 20),
    )
    .await;

    // Kill B: the port refuses connections, its open connections are gone.
    b.stop().await;
    eventually("B is marked down", Duration::from_secs(10), async || {
        !target_flag(&admin, b.addr(), "healthy").await
    })
    .await;
    let m = admin.metrics().await;
    assert_eq!(
        m.value(
            "portcullis_upstream_target_healthy",
            &[("upstream", "app"), ("target", &b.addr().to_string())]
        ),
        Some(0.0)
    );
    assert_eq!(
        per_target(&m, "portcullis_upstream_target_healthy", a.addr()),
        1.0
    );

    // B comes back on its port but fails its health checks: while it is down it gets no
    // traffic, although it accepts connections again.
    b.set_mode(Mode::Status(503));
    b.restart().await;
    let checks = b.health_checks();
    let b_seen = b.received_non_health();
    let others = a.received_non_health() + c.received_non_health();
    eventually(
        "the gateway health-checks B again",
        Duration::from_secs(10),
        async || b.health_checks() >= checks + 3,
    )
    .await;
    // Proving an absence takes time: one more second of load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        b.received_non_health(),
        b_seen,
        "a target marked down got traffic"
    );
    assert!(!target_flag(&admin, b.addr(), "healthy").await);
    assert!(
        a.received_non_health() + c.received_non_health() > others + 20,
        "the load stopped"
    );

    // B recovers: two passing checks and it gets traffic again.
    b.set_mode(Mode::Ok);
    eventually("B is healthy again", Duration::from_secs(10), async || {
        target_flag(&admin, b.addr(), "healthy").await
    })
    .await;
    let back = b.received_non_health();
    eventually(
        "B gets traffic again",
        Duration::from_secs(10),
        async || b.received_non_health() >= back + 20,
    )
    .await;
    let m = admin.metrics().await;
    assert_eq!(
        per_target(&m, "portcullis_upstream_target_healthy", b.addr()),
        1.0
    );

    let (counts, samples) = load.finish().await;
    let total: usize = counts.values().sum();
    eprintln!(
        "responses: {counts:?}; served a={} b={} c={}",
        a.served(),
        b.served(),
        c.served()
    );
    assert!(total > 100, "too little load to prove anything: {counts:?}");
    assert_eq!(
        counts.get("200").copied().unwrap_or(0),
        total,
        "not every GET was answered 200: {counts:?}\n{samples:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_down_fails_fast_with_503_no_healthy_upstream_or_with_panic_sends_anyway() {
    let pki = Pki::generate();
    let x = Faulty::start("x").await;
    let y = Faulty::start("y").await;
    x.set_mode(Mode::Status(500));
    y.set_mode(Mode::Status(500));

    for all_down in ["fail", "panic"] {
        let gw = Gateway::start(
            pki.dir(),
            &config(
                &[plain(&x), plain(&y)],
                &format!("{}\nall_down = \"{all_down}\"", health_check("100ms")),
                "",
            ),
        )
        .await;
        let admin = Admin::new(gw.admin_addr());
        eventually(
            &format!("all_down = {all_down}: both targets are marked down"),
            Duration::from_secs(10),
            async || {
                !target_flag(&admin, x.addr(), "healthy").await
                    && !target_flag(&admin, y.addr(), "healthy").await
            },
        )
        .await;
        let m = admin.metrics().await;
        for t in [&x, &y] {
            assert_eq!(
                per_target(&m, "portcullis_upstream_target_healthy", t.addr()),
                0.0,
                "{}",
                t.name()
            );
        }
        let sent = x.received_non_health() + y.received_non_health();
        let started = Instant::now();
        let r = send_one(&pki, gw.addr(), get("/")).await;
        let took = started.elapsed();
        match all_down {
            "fail" => {
                r.assert_denied(503, "no_healthy_upstream");
                assert!(took < Duration::from_secs(1), "took {took:?}");
                assert_eq!(
                    x.received_non_health() + y.received_non_health(),
                    sent,
                    "a request went to a target marked down"
                );
            }
            _ => {
                // Sent anyway; the target's own answer comes back (500 is not retried).
                assert_eq!(r.status, 500, "{}", r.text());
                assert!(["x", "y"].contains(&r.text().as_str()), "{}", r.text());
                assert_eq!(x.received_non_health() + y.received_non_health(), sent + 1);
            }
        }
        drop(gw);
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts, ejection and retries
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_target_is_ejected_and_gets_fail_over_within_the_deadline() {
    let pki = Pki::generate();
    let hung = Faulty::start("hung").await;
    let good = Faulty::start("good").await;
    hung.set_mode(Mode::Hang);
    // Round robin, so the hung target is certain to be picked.
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &[plain(&hung), plain(&good)],
            "balance = \"round_robin\"\nresponse_timeout = \"300ms\"\ndeadline = \"3s\"\n\
             outlier = { consecutive_failures = 2, base_ejection = \"30s\", max_ejection = \"300s\", max_ejected_percent = 50 }",
            "",
        ),
    )
    .await;
    let admin = Admin::new(gw.admin_addr());
    let mut c = connect_h1(&pki, gw.addr()).await;
    for i in 0..20 {
        let started = Instant::now();
        let r = c.call(get(&format!("/r/{i}"))).await.unwrap();
        let took = started.elapsed();
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
        assert_eq!(r.text(), "good", "GET {i}");
        assert!(took < Duration::from_secs(3), "GET {i} took {took:?}");
    }
    assert!(
        hung.received_non_health() >= 2,
        "round robin sent {} requests to the hung target",
        hung.received_non_health()
    );
    eventually(
        "the hung target is shown ejected",
        Duration::from_secs(5),
        async || target_flag(&admin, hung.addr(), "ejected").await,
    )
    .await;
    assert!(!target_flag(&admin, good.addr(), "ejected").await);
    let m = admin.metrics().await;
    assert!(
        per_target(&m, "portcullis_upstream_ejections_total", hung.addr()) >= 1.0,
        "no ejection counted"
    );
    assert_eq!(
        per_target(&m, "portcullis_upstream_ejections_total", good.addr()),
        0.0
    );
    // Ejected for 30 s: nothing more goes to it.
    let seen = hung.received_non_health();
    for i in 0..10 {
        let r = c.call(get(&format!("/after/{i}"))).await.unwrap();
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "good"));
    }
    assert_eq!(
        hung.received_non_health(),
        seen,
        "an ejected target got traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_not_retried_after_its_body_was_sent() {
    let pki = Pki::generate();
    let hung = Faulty::start("hung").await;
    let ok = Faulty::start("ok").await;
    hung.set_mode(Mode::Hang);
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &[plain(&hung), plain(&ok)],
            "balance = \"round_robin\"\nresponse_timeout = \"500ms\"\ndeadline = \"5s\"\nretries = 2",
            "retry_non_idempotent = false",
        ),
    )
    .await;
    // Round robin: one of the first two POSTs goes to the hung target.
    let mut answered = 0;
    let mut failed = None;
    for i in 0..6 {
        let r = send_one(&pki, gw.addr(), post(&format!("/orders/{i}"), "order")).await;
        if r.status == 200 {
            assert_eq!(r.text(), "ok");
            answered += 1;
        } else {
            failed = Some(r);
            break;
        }
    }
    let r = failed.expect("no POST reached the hung target in 6 tries");
    match r.status.as_u16() {
        504 => r.assert_denied(504, "upstream_timeout"),
        _ => r.assert_denied(502, "upstream_unavailable"),
    };
    assert_eq!(
        hung.bodies_received(),
        1,
        "the POST's body reached the hung target"
    );
    assert_eq!(
        ok.bodies_received(),
        answered,
        "the POST whose body was sent to the hung target was replayed"
    );
    assert_eq!(ok.received_non_health(), answered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_extra_requests_when_every_target_fails() {
    let pki = Pki::generate();
    let targets = [
        Faulty::start("t0").await,
        Faulty::start("t1").await,
        Faulty::start("t2").await,
    ];
    for t in &targets {
        t.set_mode(Mode::Status(503));
    }
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &targets.iter().map(plain).collect::<Vec<_>>(),
            "retries = 2\nretry_budget = { percent = 20, min_retries = 3 }",
            "",
        ),
    )
    .await;
    let admin = Admin::new(gw.admin_addr());
    let mut c = connect_h1(&pki, gw.addr()).await;
    // Sequential and quick: well inside one 10 s budget window.
    for i in 0..100 {
        let r = c.call(get(&format!("/r/{i}"))).await.unwrap();
        // The upstream's own answer comes back once no retry is left or allowed.
        assert_eq!(r.status, 503, "GET {i}: {}", r.text());
        assert!(
            ["t0", "t1", "t2"].contains(&r.text().as_str()),
            "GET {i}: not the upstream's answer: {}",
            r.text()
        );
    }
    let received: usize = targets.iter().map(Faulty::received_non_health).sum();
    let per_target: Vec<usize> = targets.iter().map(Faulty::received_non_health).collect();
    eprintln!("attempts per target: {per_target:?}");
    assert!(received > 100, "no GET was retried: {received} attempts");
    // 100 first attempts + max(3, 20 % of 100) retries, + 2 for where the budget rounds.
    assert!(
        received <= 100 + 20 + 3 + 2,
        "{received} attempts for 100 GETs"
    );
    let m = admin.metrics().await;
    assert_eq!(
        per_upstream(&m, "portcullis_upstream_retries_total"),
        (received - 100) as f64,
        "every attempt after the first is a retry"
    );
    assert!(per_upstream(&m, "portcullis_upstream_retry_budget_exhausted_total") > 0.0);
}

// ---------------------------------------------------------------------------------------------
// Connection limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_overflow_gets_503_at_once() {
    let pki = Pki::generate();
    let hung = Faulty::start("hung").await;
    hung.set_mode(Mode::Hang);
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &[plain(&hung)],
            "max_connections = 1\nmax_pending = 1\nresponse_timeout = \"5s\"\ndeadline = \"6s\"\nretries = 0",
            "",
        ),
    )
    .await;
    let admin = Admin::new(gw.admin_addr());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    for i in 0..3 {
        let tls = TlsClient::new(&pki);
        let addr = gw.addr();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut c = client(&tls, addr).await;
            let r = c.call(get(&format!("/r/{i}"))).await;
            let _ = tx.send((started.elapsed(), r));
        });
    }
    drop(tx);
    // One on the only connection, one waiting for it, the third refused at once.
    let (took, first) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no request was refused within 5 s")
        .unwrap();
    let first = first.unwrap();
    first.assert_denied(503, "upstream_overloaded");
    assert!(took < Duration::from_secs(1), "the refusal took {took:?}");
    assert!(
        rx.try_recv().is_err(),
        "more than one request was answered early"
    );
    eventually(
        "a request reaches the target",
        Duration::from_secs(5),
        async || hung.received_non_health() >= 1,
    )
    .await;
    assert_eq!(hung.accepted(), 1, "max_connections = 1");
    assert_eq!(hung.received_non_health(), 1);
    let m = admin.metrics().await;
    assert_eq!(
        per_upstream(&m, "portcullis_upstream_overloaded_total"),
        1.0
    );

    // The other two run into their timeouts.
    for _ in 0..2 {
        let (took, r) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a pending request was never answered")
            .unwrap();
        let r = r.unwrap();
        r.assert_denied(504, "upstream_timeout");
        assert!(
            took >= Duration::from_secs(4),
            "timed out after only {took:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Balancing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_three_to_one_give_three_to_one() {
    let pki = Pki::generate();
    let heavy = Faulty::start("heavy").await;
    let light = Faulty::start("light").await;
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &[weighted(&heavy, 3), weighted(&light, 1)],
            "balance = \"round_robin\"",
            "",
        ),
    )
    .await;
    let sent = burst(&pki, gw.addr(), 8, 500).await;
    let (h, l) = (heavy.served(), light.served());
    eprintln!("heavy {h}, light {l}");
    assert_eq!(h + l, sent, "every request was served exactly once");
    assert!(l > 0, "the light target got nothing");
    let ratio = h as f64 / l as f64;
    assert!(
        (ratio - 3.0).abs() <= 0.15,
        "ratio {ratio:.3} ({h}:{l}) is not within 5 % of 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sends_fewer_requests_to_a_slow_target() {
    let pki = Pki::generate();
    let slow = Faulty::start("slow").await;
    let fast = Faulty::start("fast").await;
    slow.set_mode(Mode::Delay(Duration::from_millis(50)));
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &[plain(&slow), plain(&fast)],
            "balance = \"least_request\"",
            "",
        ),
    )
    .await;
    let sent = burst(&pki, gw.addr(), 16, 25).await;
    let (s, f) = (slow.served(), fast.served());
    eprintln!("slow {s}, fast {f}");
    assert_eq!(s + f, sent);
    assert!(s * 3 < f, "slow {s}, fast {f}");
}

/// Which target answered each key, asking `repeat` times per key from 4 concurrent keep-alive
/// connections; panics if a key got different targets.
async fn targets_by_key(
    pki: &Pki,
    addr: SocketAddr,
    keys: &[String],
    repeat: usize,
) -> BTreeMap<String, String> {
    let tasks: Vec<_> = (0..4)
        .map(|k| {
            let tls = TlsClient::new(pki);
            let mine: Vec<String> = keys.iter().skip(k).step_by(4).cloned().collect();
            tokio::spawn(async move {
                let mut c = client(&tls, addr).await;
                let mut out = Vec::new();
                for key in mine {
                    let mut seen = BTreeSet::new();
                    for _ in 0..repeat {
                        let r = c.call(get_as(&key)).await.unwrap();
                        assert_eq!(r.status, 200, "key {key}: {}", r.text());
                        seen.insert(r.text());
                    }
                    assert_eq!(seen.len(), 1, "key {key} went to {seen:?}");
                    out.push((key, seen.pop_first().unwrap()));
                }
                out
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    for t in tasks {
        all.extend(t.await.expect("client task panicked"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_by_header_is_sticky_and_moves_about_one_in_n_keys_when_a_target_is_added() {
    let pki = Pki::generate();
    let t: Vec<Faulty> = vec![
        Faulty::start("t0").await,
        Faulty::start("t1").await,
        Faulty::start("t2").await,
        Faulty::start("t3").await,
    ];
    let keys = "balance = \"hash\"\nhash_key = \"header:x-tenant\"";
    let three: Vec<String> = t[..3].iter().map(plain).collect();
    let gw = Gateway::start(pki.dir(), &config(&three, keys, "")).await;
    let tenants: Vec<String> = (0..300).map(|i| format!("tenant-{i}")).collect();

    let before = targets_by_key(&pki, gw.addr(), &tenants, 3).await;
    assert_eq!(before.len(), 300);
    let mut spread: BTreeMap<&str, usize> = BTreeMap::new();
    for name in before.values() {
        *spread.entry(name).or_default() += 1;
    }
    eprintln!("300 keys over 3 targets: {spread:?}");
    assert_eq!(spread.len(), 3, "not every target got keys: {spread:?}");
    // Expected 100 each; a usable hash is not far off.
    assert!(spread.values().all(|&n| n >= 45), "{spread:?}");

    // A fourth target, by reload.
    let four: Vec<String> = t.iter().map(plain).collect();
    write_config(pki.dir(), &config(&four, keys, ""));
    gw.reload().await.expect("reload with a fourth target");

    let after = targets_by_key(&pki, gw.addr(), &tenants, 2).await;
    let moved: Vec<(&String, &String, &String)> = before
        .iter()
        .filter_map(|(k, b)| {
            let a = &after[k];
            (a != b).then_some((k, b, a))
        })
        .collect();
    let fraction = moved.len() as f64 / tenants.len() as f64;
    eprintln!("{} of 300 keys moved ({fraction:.3})", moved.len());
    assert!(
        (0.15..=0.35).contains(&fraction),
        "{} of 300 keys moved, about 75 expected",
        moved.len()
    );
    for (k, from, to) in &moved {
        assert_eq!(
            to.as_str(),
            "t3",
            "key {k} moved from {from} to {to}, not to the new target"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The operator's view
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_removed_by_a_reload_finishes_its_requests_and_gets_no_new_ones() {
    let pki = Pki::generate();
    let (a, b) = (Faulty::start("a").await, Faulty::start("b").await);
    a.set_mode(Mode::Delay(Duration::from_millis(800)));
    let keys = "balance = \"round_robin\"";
    let gw = Gateway::start(pki.dir(), &config(&[plain(&a), plain(&b)], keys, "")).await;
    // One request lands on the slow target "a" (round robin: one of the first two).
    let (tls, addr) = (TlsClient::new(&pki), gw.addr());
    let slow = tokio::spawn(async move {
        let mut out = Vec::new();
        for _ in 0..2 {
            let mut c = client(&tls, addr).await;
            out.push(c.call(get("/drain")).await.unwrap());
        }
        out
    });
    eventually(
        "a request in flight on target a",
        Duration::from_secs(5),
        async || a.received_non_health() == 1,
    )
    .await;
    write_config(pki.dir(), &config(&[plain(&b)], keys, ""));
    gw.reload().await.expect("reload without target a");
    for r in slow.await.unwrap() {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        a.served(),
        1,
        "the request in flight on the removed target finished"
    );
    let tls = TlsClient::new(&pki);
    let mut c = client(&tls, gw.addr()).await;
    for _ in 0..10 {
        assert_eq!(c.call(get("/after")).await.unwrap().status, 200);
    }
    assert_eq!(
        a.received_non_health(),
        1,
        "the removed target got new requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_endpoint_lists_every_target_with_its_weight_and_state() {
    let pki = Pki::generate();
    let a = Faulty::start("a").await;
    let b = Faulty::start("b").await;
    let gw = Gateway::start(
        pki.dir(),
        &config(
            &[plain(&a), weighted(&b, 3)],
            "balance = \"round_robin\"",
            "",
        ),
    )
    .await;
    let admin = Admin::new(gw.admin_addr());
    // One request to each target, so each has an idle keep-alive connection.
    let mut c = connect_h1(&pki, gw.addr()).await;
    for i in 0..4 {
        assert_eq!(c.call(get(&format!("/{i}"))).await.unwrap().status, 200);
    }
    let v = upstreams(&admin).await;
    let app = upstream_of(&v, "app");
    assert_eq!(app["balance"], "round_robin", "{app}");
    assert_eq!(app["targets"].as_array().map(Vec::len), Some(2), "{app}");
    for (f, weight) in [(&a, 1), (&b, 3)] {
        let t = target_of(&v, f.addr());
        assert_eq!(t["weight"], weight, "{t}");
        assert_eq!(t["healthy"], true, "{t}");
        assert_eq!(t["ejected"], false, "{t}");
        assert_eq!(t["in_flight"], 0, "{t}");
        assert_eq!(t["connections_open"], 1, "{t}");
    }
    assert!(
        !v.to_string().contains("http://"),
        "targets are shown as addresses: {v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Config validation
// ---------------------------------------------------------------------------------------------

/// A whole config with the `[[upstreams]]` entries `upstreams` and one route to the upstream
/// named `to` with the extra `route_keys`.
fn config_text(upstreams: &str, to: &str, route_keys: &str) -> String {
    format!(
        "{}{upstreams}\n\n[[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"{to}\"\n{route_keys}\n",
        listener("public", ""),
    )
}

const APP: &str = "[[upstreams]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:9001\", { url = \"http://127.0.0.1:9002\", weight = 3 }]\n";

#[test]
fn the_documented_upstream_settings_load() {
    let pki = Pki::generate();
    let full = format!(
        "{APP}balance = \"least_request\"\nconnect_timeout = \"5s\"\nresponse_timeout = \"30s\"\n\
         deadline = \"10s\"\nretries = 2\nretry_budget = {{ percent = 20, min_retries = 3 }}\n\
         max_connections = 100\nmax_pending = 100\nall_down = \"fail\"\n\
         health_check = {{ path = \"/healthz\", interval = \"200ms\", timeout = \"1s\", healthy_threshold = 2, unhealthy_threshold = 2, expect_status = [200] }}\n\
         outlier = {{ consecutive_failures = 3, base_ejection = \"10s\", max_ejection = \"300s\", max_ejected_percent = 50 }}"
    );
    let hashed = format!("{APP}balance = \"hash\"\nhash_key = \"header:x-tenant\"");
    let cases = [
        (full, "retry_non_idempotent = false"),
        (APP.to_owned(), ""),
        (hashed, ""),
        (
            format!("{APP}balance = \"round_robin\"\nall_down = \"panic\""),
            "",
        ),
    ];
    for (upstream, route_keys) in cases {
        let toml = config_text(&upstream, "app", route_keys);
        let path = write_config(pki.dir(), &toml);
        if let Err(e) = portcullis::config::load_str(&path, &toml, SystemTime::now()) {
            panic!("a valid config was refused:\n{e}\n--- config ---\n{toml}");
        }
    }
    // Hash keys that need nothing else on the route.
    for key in ["client_ip", "header:x-tenant", "header:X-Tenant-Id"] {
        let toml = config_text(
            &format!("{APP}balance = \"hash\"\nhash_key = \"{key}\""),
            "app",
            "",
        );
        let path = write_config(pki.dir(), &toml);
        if let Err(e) = portcullis::config::load_str(&path, &toml, SystemTime::now()) {
            panic!("hash_key = {key:?} was refused:\n{e}");
        }
    }
    // A route's own list of targets still works next to named upstreams.
    let toml = format!(
        "{}{APP}\n[[routes]]\nname = \"inline\"\npath_prefix = \"/\"\nupstream = [\"http://127.0.0.1:9003\"]\nconnect_timeout = \"2s\"\n",
        listener("public", "")
    );
    let path = write_config(pki.dir(), &toml);
    if let Err(e) = portcullis::config::load_str(&path, &toml, SystemTime::now()) {
        panic!("an inline upstream list was refused:\n{e}");
    }
}

#[test]
fn each_bad_upstream_setting_is_reported_at_its_key_path() {
    let pki = Pki::generate();
    let one = |extra: &str| format!("{APP}{extra}");
    let cases: Vec<(&str, String, &str, &str, &str)> = vec![
        // (what, [[upstreams]] entries, the route's upstream, its other keys, key path)
        (
            "an unknown balance",
            one("balance = \"random\""),
            "app",
            "",
            "upstreams[0].balance",
        ),
        (
            "hash without hash_key",
            one("balance = \"hash\""),
            "app",
            "",
            "upstreams[0].hash_key",
        ),
        (
            "an empty header name",
            one("balance = \"hash\"\nhash_key = \"header:\""),
            "app",
            "",
            "upstreams[0].hash_key",
        ),
        (
            "an unknown hash key",
            one("balance = \"hash\"\nhash_key = \"cookie:session\""),
            "app",
            "",
            "upstreams[0].hash_key",
        ),
        (
            "weight 0",
            "[[upstreams]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:9001\", { url = \"http://127.0.0.1:9002\", weight = 0 }]\n".to_owned(),
            "app",
            "",
            "upstreams[0].targets[1].weight",
        ),
        (
            "a duplicate upstream name",
            format!("{APP}\n{APP}"),
            "app",
            "",
            "upstreams[1].name",
        ),
        (
            "an empty targets list",
            "[[upstreams]]\nname = \"app\"\ntargets = []\n".to_owned(),
            "app",
            "",
            "upstreams[0].targets",
        ),
        (
            "a route naming an unknown upstream",
            one(""),
            "nope",
            "",
            "routes[0].upstream",
        ),
        (
            "connect_timeout on a route to a named upstream",
            one(""),
            "app",
            "connect_timeout = \"2s\"",
            "routes[0].connect_timeout",
        ),
        (
            "a zero health check interval",
            one("health_check = { path = \"/healthz\", interval = \"0s\" }"),
            "app",
            "",
            "upstreams[0].health_check.interval",
        ),
        (
            "max_ejected_percent over 100",
            one("outlier = { consecutive_failures = 3, max_ejected_percent = 101 }"),
            "app",
            "",
            "upstreams[0].outlier.max_ejected_percent",
        ),
        (
            "a retry budget of 0 %",
            one("retry_budget = { percent = 0, min_retries = 3 }"),
            "app",
            "",
            "upstreams[0].retry_budget.percent",
        ),
        (
            "a retry budget over 100 %",
            one("retry_budget = { percent = 101, min_retries = 3 }"),
            "app",
            "",
            "upstreams[0].retry_budget.percent",
        ),
        (
            "max_pending without max_connections",
            one("max_pending = 10"),
            "app",
            "",
            "upstreams[0].max_pending",
        ),
        (
            "an unknown all_down",
            one("all_down = \"maybe\""),
            "app",
            "",
            "upstreams[0].all_down",
        ),
        (
            "a deadline that is not a duration",
            one("deadline = \"soon\""),
            "app",
            "",
            "upstreams[0].deadline",
        ),
        (
            "a zero body_timeout",
            one("body_timeout = \"0s\""),
            "app",
            "",
            "upstreams[0].body_timeout",
        ),
        (
            "more than 10 retries",
            one("retries = 11"),
            "app",
            "",
            "upstreams[0].retries",
        ),
        (
            "max_connections 0",
            one("max_connections = 0"),
            "app",
            "",
            "upstreams[0].max_connections",
        ),
        (
            "consecutive_failures 0",
            one("outlier = { consecutive_failures = 0 }"),
            "app",
            "",
            "upstreams[0].outlier.consecutive_failures",
        ),
        (
            "max_ejection shorter than base_ejection",
            one("outlier = { base_ejection = \"1m\", max_ejection = \"10s\" }"),
            "app",
            "",
            "upstreams[0].outlier.max_ejection",
        ),
        (
            "a health check path that is not a path",
            one("health_check = { path = \"healthz\" }"),
            "app",
            "",
            "upstreams[0].health_check.path",
        ),
        (
            "a health check threshold of 0",
            one("health_check = { healthy_threshold = 0 }"),
            "app",
            "",
            "upstreams[0].health_check.healthy_threshold",
        ),
        (
            "a health check status that is no status",
            one("health_check = { expect_status = [42] }"),
            "app",
            "",
            "upstreams[0].health_check.expect_status[0]",
        ),
        (
            "a route key the upstream holds",
            one(""),
            "app",
            "response_timeout = \"1s\"",
            "routes[0].response_timeout",
        ),
        (
            "WebSocket on an h2c upstream",
            one("upstream_protocol = \"h2c\""),
            "app",
            "websocket = true",
            "routes[0].websocket",
        ),
    ];
    // Every case is tried; the failures are reported together.
    let mut failures = Vec::new();
    for (what, upstreams, to, route_keys, key) in cases {
        let toml = config_text(&upstreams, to, route_keys);
        let path = write_config(pki.dir(), &toml);
        match portcullis::config::load_str(&path, &toml, SystemTime::now()) {
            Ok(_) => failures.push(format!("{what}: the config loaded\n{toml}")),
            Err(err) => {
                if !err.0.iter().any(|i| i.key == key) {
                    failures.push(format!("{what}: no error at {key}; got:\n{err}"));
                } else {
                    assert!(err.to_string().contains(&path.display().to_string()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad settings not reported at their key:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
