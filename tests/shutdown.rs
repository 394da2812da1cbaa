//! Proves graceful shutdown: after `ShutdownHandle::trigger` (in-process) or SIGTERM (the
//! `portcullis run` binary), new connections are refused while an in-flight request still
//! completes with 200; `wait` returns once drained, after `shutdown_timeout` at the latest, and
//! without waiting for idle keep-alive connections; the process exits 0.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn slow_and_fast(slow: &Upstream, fast: &Upstream, server_keys: &str) -> String {
    format!(
        "{}{}{}{}",
        server(server_keys),
        listener("public", ""),
        route("slow", "/slow", &[&slow.url()], ""),
        route("fast", "/", &[&fast.url()], ""),
    )
}

/// Polls (for at most 10 s) until a new connection to `addr` is refused or cannot get a
/// response; panics if the gateway keeps serving new connections.
async fn wait_until_refused(pki: &Pki, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let tls = TlsClient::new(pki)
                .connect(addr, "localhost")
                .await
                .map_err(|e| e.to_string())?;
            H1::handshake(tls).await?.call(get("/new")).await
        })
        .await;
        match attempt {
            Ok(Ok(resp)) if resp.status.is_success() => {}
            _ => return,
        }
        assert!(
            Instant::now() < deadline,
            "a new connection was still served 10 s after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_completes_after_shutdown_and_new_connections_are_refused() {
    let pki = Pki::generate();
    let (slow, mut gate) = Upstream::gated().await;
    let fast = Upstream::echo("fast").await;
    let gw = Gateway::start(pki.dir(), &slow_and_fast(&slow, &fast, "")).await;
    let addr = gw.addr();
    let handle = gw.shutdown_handle();
    let running = gw.into_running();

    // Sanity: new connections work before shutdown.
    send_one(&pki, addr, get("/before")).await.echo();

    let mut client = connect_h1(&pki, addr).await;
    let in_flight = tokio::spawn(async move { client.call(get("/slow")).await });
    gate.arrived().await;

    handle.trigger();
    let waiting = tokio::spawn(running.wait());

    wait_until_refused(&pki, addr).await;
    assert!(
        !in_flight.is_finished(),
        "the in-flight request ended before its upstream answered"
    );
    assert!(
        !waiting.is_finished(),
        "wait() returned with a request in flight"
    );

    gate.open();
    let resp = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("the in-flight request did not finish after the upstream answered")
        .unwrap()
        .expect("the in-flight request failed during shutdown");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "released");

    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("wait() did not return after the last request finished")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener still accepts TCP connections after wait()"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_after_shutdown_timeout_when_a_request_never_finishes() {
    let pki = Pki::generate();
    let (slow, mut gate) = Upstream::gated().await;
    let fast = Upstream::echo("fast").await;
    let gw = Gateway::start(
        pki.dir(),
        &slow_and_fast(&slow, &fast, "shutdown_timeout = \"1s\""),
    )
    .await;
    let addr = gw.addr();
    let handle = gw.shutdown_handle();
    let running = gw.into_running();

    let mut client = connect_h1(&pki, addr).await;
    let _stuck = tokio::spawn(async move { client.call(get("/slow")).await });
    gate.arrived().await;

    let started = Instant::now();
    handle.trigger();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("wait() did not return 10 s after shutdown with shutdown_timeout = 1s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "wait() returned after {took:?}, before shutdown_timeout, with a request in flight"
    );
    drop(gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_delay_shutdown() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        server("shutdown_timeout = \"20s\""),
        simple(&up.url())
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let addr = gw.addr();
    let handle = gw.shutdown_handle();
    let running = gw.into_running();

    let mut idle_h1 = connect_h1(&pki, addr).await;
    idle_h1.call(get("/once")).await.unwrap().echo();
    let tls = TlsClient::new(&pki)
        .h2()
        .connect(addr, "localhost")
        .await
        .unwrap();
    let mut idle_h2 = H2::handshake(tls).await.unwrap();
    idle_h2
        .call(
            h2_request("GET", "localhost", "/once")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap()
        .echo();

    let started = Instant::now();
    handle.trigger();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("wait() did not return within 10 s with only idle connections open");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "idle connections held shutdown"
    );
    drop((idle_h1, idle_h2));
}

/// The `portcullis run` child process; killed if the test ends early.
struct Proc {
    child: Child,
    dir: std::path::PathBuf,
}

impl Proc {
    fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.join(n)).unwrap_or_default();
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            read("gw.stdout"),
            read("gw.stderr")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Start `portcullis run` on a free port and wait until it accepts TCP connections. Retries
/// with another port if the chosen one was taken in between.
async fn spawn_binary(dir: &Path, toml_on_port_0: &str) -> (Proc, SocketAddr) {
    for _ in 0..3 {
        let port = free_port();
        let toml = toml_on_port_0.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        let config = write_config(dir, &toml);
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("gw.stdout")).unwrap())
            .stderr(File::create(dir.join("gw.stderr")).unwrap())
            .spawn()
            .expect("spawn portcullis");
        let mut proc = Proc {
            child,
            dir: dir.to_path_buf(),
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return (proc, addr);
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                eprintln!(
                    "portcullis exited early ({status}), retrying:\n{}",
                    proc.logs()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "portcullis run did not listen on {addr} within 20 s\n{}",
                proc.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("portcullis run failed to start three times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish_and_the_process_exits_zero() {
    let pki = Pki::generate();
    let (slow, mut gate) = Upstream::gated().await;
    let fast = Upstream::echo("fast").await;
    let (mut proc, addr) = spawn_binary(pki.dir(), &slow_and_fast(&slow, &fast, "")).await;

    send_one(&pki, addr, get("/before")).await.echo();

    let mut client = connect_h1(&pki, addr).await;
    let in_flight = tokio::spawn(async move { client.call(get("/slow")).await });
    gate.arrived().await;

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(proc.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");

    wait_until_refused(&pki, addr).await;
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "the process exited with a request in flight\n{}",
        proc.logs()
    );

    gate.open();
    let resp = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("the in-flight request did not finish after SIGTERM")
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "the in-flight request failed after SIGTERM: {e}\n{}",
                proc.logs()
            )
        });
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "released");

    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit within 20 s of its last request\n{}",
            proc.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0), "exit status {exit}\n{}", proc.logs());
}
