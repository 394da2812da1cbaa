//! End-to-end load bench: `cargo bench --bench load`.
//!
//! Starts the gateway with every policy on (mutual TLS, a pinned client key, an IP
//! allowlist, a machine license, a JWT with a required scope, verified once then cached) in
//! front of an upstream on loopback, drives it over real TLS with keep-alive HTTP/1.1
//! clients, and prints requests per second, latency percentiles, the gateway's CPU per
//! request and its heap allocations per request. Then the same with no policy (`bare`).
//!
//! One process, three runtimes: the gateway on one worker thread (as the comparison bench
//! gives a proxy one core), the upstream and the clients on their own threads. CPU is read
//! from /proc for the gateway thread only; a counting allocator counts only on that thread.
//! Knobs: LOAD_SECS (default 5), LOAD_CONNS (default 32), LOAD_MODES ("full bare"; also
//! "full_limits": the full policy plus two rate limits that never refuse; "full_cred": the
//! full policy plus an API key from the vault injected upstream; "full_traced": the full
//! policy with `[tracing]` sampling 1% of requests to an OTLP/HTTP sink; "tls_up" and
//! "h2_up": no policy, the upstream over TLS with HTTP/1.1 or HTTP/2, against "bare").
//! LOAD_LOG=json|text|logfmt: access lines on, written to stderr as the binary writes them
//! (run with `2>/dev/null`: what a line costs to make and write, without a disk); default off.

// Bench set-up may panic: it is measurement code, never run on input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

mod common;
use common::{config, pki, provision, token, write};

// === counting allocator ===

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
thread_local! {
    /// Set on the gateway's threads only.
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNT_HERE.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNT_HERE.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn runtime(
    threads: usize,
    name: &str,
    counted: bool,
    tids: Option<Arc<Mutex<Vec<u32>>>>,
) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .on_thread_start(move || {
            COUNT_HERE.with(|c| c.set(counted));
            if let (Some(t), Ok(link)) = (&tids, std::fs::read_link("/proc/thread-self"))
                && let Some(tid) = link
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse().ok())
            {
                t.lock().expect("tids").push(tid);
            }
        })
        .build()
        .expect("runtime")
}

/// utime + stime of the given threads, in clock ticks.
fn cpu_ticks(tids: &[u32]) -> u64 {
    tids.iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/self/task/{t}/stat")).ok())
        .filter_map(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

async fn upstream(tls: Option<tokio_rustls::TlsAcceptor>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(common::upstream::serve(l, tls, b"ok\n"));
    addr
}

fn run(mode: &str, secs: u64, conns: usize) {
    let pki = pki();
    let dir = pki.dir.path().to_path_buf();
    let side = runtime(1, "load-side", false, None);
    // "tls_up": the bare route to an HTTPS upstream over HTTP/1.1; "h2_up": the same over
    // HTTP/2 (ALPN). Both verify the upstream against the bench CA.
    let (chain, key) = (dir.join("server.pem"), dir.join("server.key"));
    let tls = match mode {
        "tls_up" => Some(common::upstream::acceptor(&chain, &key, false)),
        "h2_up" => Some(common::upstream::acceptor(&chain, &key, true)),
        _ => None,
    };
    let up = side.block_on(upstream(tls));
    write(
        &dir,
        "portcullis.toml",
        &config(&dir, mode, &up.to_string()),
    );
    if mode.starts_with("full") {
        provision(&dir);
    }
    let tids = Arc::new(Mutex::new(Vec::new()));
    let gw_rt = runtime(1, "gateway", true, Some(tids.clone()));
    let running = gw_rt
        .block_on(portcullis::server::start(&dir.join("portcullis.toml")))
        .expect("gateway starts");
    let addr = running.local_addr("mtls").expect("addr");
    let cfg = common::client_config(&dir);
    let auth = mode
        .starts_with("full")
        .then(|| format!("Bearer {}", token()));

    let clients = runtime(1, "load-clients", false, None);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (cfg, auth, stop, measuring) =
            (cfg.clone(), auth.clone(), stop.clone(), measuring.clone());
        tasks.push(clients.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = tcp.set_nodelay(true);
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .expect("handshake");
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .expect("h1");
            tokio::spawn(conn);
            let mut lat = Vec::with_capacity(100_000);
            while !stop.load(Ordering::Relaxed) {
                let mut req = hyper::Request::get("/").header("host", "localhost");
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                let started = Instant::now();
                let resp = send
                    .send_request(
                        req.body(http_body_util::Empty::<Bytes>::new())
                            .expect("req"),
                    )
                    .await
                    .expect("response");
                assert_eq!(resp.status(), 200, "every request must pass the policy");
                let _ = resp.into_body().collect().await;
                if measuring.load(Ordering::Relaxed) {
                    lat.push(started.elapsed());
                }
            }
            lat
        }));
    }
    // Warm up (the token is verified once, connections are pooled), then measure.
    std::thread::sleep(Duration::from_secs(1));
    let tids_now = tids.lock().expect("tids").clone();
    let (a0, b0, c0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
        cpu_ticks(&tids_now),
    );
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let (a1, b1, c1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
        cpu_ticks(&tids_now),
    );
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(clients.block_on(t).expect("client"));
    }
    lat.sort_unstable();
    let n = lat.len().max(1) as f64;
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    // Clock ticks are 1/100 s on Linux.
    let cpu_us = (c1 - c0) as f64 * 10_000.0 / n;
    println!(
        "{mode:>4}: {:>7} req in {:.1}s = {:>7.0} req/s | p50 {:>6.0} µs  p90 {:>6.0} µs  p99 {:>6.0} µs | gateway CPU {:>5.1} µs/req | {:>5.1} allocs/req, {:>6.0} B/req",
        lat.len(),
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.90).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        cpu_us,
        (a1 - a0) as f64 / n,
        (b1 - b0) as f64 / n,
    );
    let h = running.shutdown_handle();
    h.trigger();
    gw_rt.block_on(running.wait());
}

fn main() {
    let quick = common::quick();
    let env = common::env_u64;
    let secs = if quick { 1 } else { env("LOAD_SECS", 5) };
    let conns = env("LOAD_CONNS", 32) as usize;
    let modes = std::env::var("LOAD_MODES").unwrap_or_else(|_| "full bare".into());
    let log = std::env::var("LOAD_LOG").unwrap_or_default();
    let sink = tracing_subscriber::fmt()
        .with_env_filter("portcullis::access=info")
        .with_writer(std::io::sink);
    // The subscriber only says the access target is on; the line has its own writer.
    let format = match log.as_str() {
        "json" => Some(portcullis::record::line::Format::Json),
        "text" => Some(portcullis::record::line::Format::Text),
        "logfmt" => Some(portcullis::record::line::Format::Logfmt),
        _ => None,
    };
    if let Some(f) = format {
        portcullis::record::line::set_format(f);
        sink.init();
    }
    println!(
        "portcullis load bench: {conns} keep-alive mTLS connections, {secs} s per mode, gateway on 1 thread, access log {}",
        if log.is_empty() { "off" } else { &log }
    );
    for mode in modes.split_whitespace() {
        run(mode, secs, conns);
    }
}
