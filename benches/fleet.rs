//! Fleet scale bench: `cargo bench --bench fleet` (needs `redis-server` on the PATH).
//!
//! A loopback fleet of FLEET_INSTANCES (default 4) gateways on one Redis, each on its own
//! one-thread runtime, behind mutual TLS, with two shared rate limits on every request (so
//! every request makes two store calls) and the token issuer on the fleet's store. Keep-alive
//! clients spread over the instances. Prints, for the fleet on Redis and for the same fleet
//! on the embedded backend (each instance limiting alone):
//!
//! - requests per second and end-to-end p50/p99;
//! - the store calls' own latency, p50/p99 (from the gateway's store histogram);
//! - the revocation propagation time: a token minted on instance 0 and verified (cached) on
//!   each other instance is revoked on instance 0; each other instance is polled every 1 ms
//!   until it refuses the token. FLEET_REVOCATIONS rounds (default 50); p50/p99/max.
//!
//! Knobs: FLEET_SECS (default 5), FLEET_CONNS (default 32), FLEET_INSTANCES.

// Bench set-up may panic: it is measurement code, never run on input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

mod common;
use common::{pki, write};

type Send = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;

struct Redis(std::process::Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis(child, port)
}

fn config(redis: Option<u16>) -> String {
    let state = redis
        .map(|p| format!("[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{p}\"\n"))
        .unwrap_or_default();
    format!(
        "[server]\nwatch_config = false\n\n\
         [[listeners]]\nname = \"mtls\"\nbind = \"127.0.0.1:0\"\nclient_auth = \"required\"\nclient_ca = \"ca.pem\"\n\
         [[listeners.certificates]]\nchain = \"server.pem\"\nkey = \"server.key\"\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\n\
         [vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n\
         [issuer]\nlistener = \"mtls\"\nissuer = \"https://fleet.bench\"\nstore = \"issuer.redb\"\n\n\
         [[routes]]\nname = \"load\"\npath_prefix = \"/load\"\nupstream = [\"http://UPSTREAM\"]\nauth = \"none\"\n\
         limits = [\n  {{ key = \"client_ip\", rate = \"1000000000/s\", burst = 1000000000 }},\n  {{ key = \"route\", rate = \"1000000000/s\", burst = 1000000000 }},\n]\n\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = [\"http://UPSTREAM\"]\nauth = \"bearer\"\n\n\
         {state}"
    )
}

async fn connect(cfg: Arc<rustls::ClientConfig>, addr: SocketAddr) -> Send {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1");
    tokio::spawn(conn);
    send
}

async fn call(
    send: &mut Send,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Bytes) {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(
            req.body(http_body_util::Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .expect("response");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// The p-th percentile of the store-call histogram, as its bucket's upper bound.
fn store_pct(text: &str, p: f64) -> Option<String> {
    let mut buckets: Vec<(String, f64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("portcullis_state_call_duration_seconds_bucket{le=\"")
        {
            let (le, v) = rest.split_once("\"} ")?;
            buckets.push((le.to_owned(), v.parse().ok()?));
        }
    }
    let total = buckets.last()?.1;
    let want = total * p;
    buckets
        .iter()
        .find(|(_, n)| *n >= want)
        .map(|(le, _)| match le.parse::<f64>() {
            Ok(s) => format!("<= {:.0} µs", s * 1e6),
            Err(_) => "> 100 ms".into(),
        })
}

fn run(
    label: &str,
    redis_port: Option<u16>,
    instances: usize,
    secs: u64,
    conns: usize,
    rounds: usize,
) {
    let pki = pki();
    let dir = pki.dir.path().to_path_buf();
    // The issuer's keys are sealed under it (required on Redis).
    common::vault::vault_with(&dir, &[]);
    let side = runtime("fleet-side", 1);
    let up = side.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(common::upstream::serve(l, None, b"ok\n"));
        addr
    });
    write(
        &dir,
        "portcullis.toml",
        &config(redis_port).replace("UPSTREAM", &up.to_string()),
    );
    // Embedded: each instance needs its own issuer file (one opener); the load route is
    // what is measured there.
    let mut gateways = Vec::new();
    for i in 0..instances {
        let rt = runtime(&format!("gateway-{i}"), 1);
        let cfg_path = if redis_port.is_some() {
            dir.join("portcullis.toml")
        } else {
            let text = std::fs::read_to_string(dir.join("portcullis.toml"))
                .unwrap()
                .replace("issuer.redb", &format!("issuer-{i}.redb"));
            write(&dir, &format!("portcullis-{i}.toml"), &text);
            dir.join(format!("portcullis-{i}.toml"))
        };
        let running = rt
            .block_on(portcullis::server::start(&cfg_path))
            .expect("gateway starts");
        gateways.push((rt, running));
    }
    let addrs: Vec<SocketAddr> = gateways
        .iter()
        .map(|(_, r)| r.local_addr("mtls").unwrap())
        .collect();
    let cfg = common::client_config(&dir);

    let clients = runtime("fleet-clients", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (cfg, stop, measuring, addr) = (
            cfg.clone(),
            stop.clone(),
            measuring.clone(),
            addrs[c % instances],
        );
        tasks.push(clients.spawn(async move {
            let mut send = connect(cfg, addr).await;
            let mut lat = Vec::with_capacity(100_000);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, _) = call(&mut send, "GET", "/load", &[], "").await;
                assert_eq!(status, 200);
                if measuring.load(Ordering::Relaxed) {
                    lat.push(started.elapsed());
                }
            }
            lat
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(clients.block_on(t).unwrap());
    }
    lat.sort_unstable();
    let metrics = gateways[0].1.admin_addr().map(|a| {
        clients.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(a).await.unwrap();
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (_, body) = call(&mut s, "GET", "/metrics", &[], "").await;
            String::from_utf8_lossy(&body).into_owned()
        })
    });
    let store = match (redis_port, metrics.as_deref()) {
        (Some(_), Some(m)) => format!(
            " | store calls p50 {} p99 {}",
            store_pct(m, 0.50).unwrap_or_default(),
            store_pct(m, 0.99).unwrap_or_default()
        ),
        _ => String::new(),
    };
    println!(
        "{label:>8}: {instances} instances, {:>7.0} req/s | p50 {:>6.0} µs  p99 {:>6.0} µs{store}",
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(&lat, 0.50).as_secs_f64() * 1e6,
        pct(&lat, 0.99).as_secs_f64() * 1e6,
    );

    if redis_port.is_some() && rounds > 0 {
        let admin = gateways[0].1.admin_addr().unwrap();
        let propagation = clients.block_on(revocations(cfg.clone(), admin, &addrs, rounds));
        println!(
            "{label:>8}: revocation on instance 0 refused by each other instance after p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} measurements)",
            pct(&propagation, 0.50).as_secs_f64() * 1e3,
            pct(&propagation, 0.99).as_secs_f64() * 1e3,
            propagation
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3,
            propagation.len()
        );
    }
    for (rt, running) in gateways {
        running.shutdown_handle().trigger();
        rt.block_on(running.wait());
    }
}

/// `rounds` revocations on instance 0; how long each other instance kept accepting.
async fn revocations(
    cfg: Arc<rustls::ClientConfig>,
    admin: SocketAddr,
    addrs: &[SocketAddr],
    rounds: usize,
) -> Vec<Duration> {
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut a, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (status, body) = call(&mut a, "POST", "/clients", &[], r#"{"id": "bench"}"#).await;
    assert_eq!(status, 201);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let secret = v["client_secret"].as_str().unwrap().to_owned();
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("bench:{secret}"))
    );
    let mut first = connect(cfg.clone(), addrs[0]).await;
    let mut others = Vec::new();
    for addr in &addrs[1..] {
        others.push(connect(cfg.clone(), *addr).await);
    }
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("authorization", basic.as_str()),
    ];
    let mut out = Vec::new();
    for _ in 0..rounds {
        let (status, body) = call(
            &mut first,
            "POST",
            "/oauth2/token",
            &form,
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let token = v["access_token"].as_str().unwrap().to_owned();
        let bearer = format!("Bearer {token}");
        for o in others.iter_mut() {
            let (s, _) = call(o, "GET", "/api/x", &[("authorization", &bearer)], "").await;
            assert_eq!(s, 200);
        }
        let (s, _) = call(
            &mut first,
            "POST",
            "/oauth2/revoke",
            &form,
            &format!("token={token}"),
        )
        .await;
        assert_eq!(s, 200);
        let revoked_at = Instant::now();
        for o in others.iter_mut() {
            loop {
                let (s, _) = call(o, "GET", "/api/x", &[("authorization", &bearer)], "").await;
                if s == 401 {
                    out.push(revoked_at.elapsed());
                    break;
                }
                assert!(
                    revoked_at.elapsed() < Duration::from_secs(10),
                    "never refused"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    out.sort_unstable();
    out
}

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    let quick = common::quick();
    let env = common::env_u64;
    let secs = if quick { 1 } else { env("FLEET_SECS", 5) };
    let conns = env("FLEET_CONNS", 32) as usize;
    let instances = env("FLEET_INSTANCES", 4).max(2) as usize;
    let rounds = if quick {
        3
    } else {
        env("FLEET_REVOCATIONS", 50) as usize
    };
    println!(
        "portcullis fleet bench: {instances} instances on one machine, {conns} keep-alive mTLS connections, {secs} s, two shared rate limits per request"
    );
    let r = redis();
    run("redis", Some(r.1), instances, secs, conns, rounds);
    run("embedded", None, instances, secs, conns, 0);
}
