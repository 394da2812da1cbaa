//! A plain HTTP/1.1 upstream (hyper, keep-alive) on 127.0.0.1 whose behaviour the test
//! changes while it runs: answer, hang, fail with a status, answer late; be killed (the port
//! refuses connections, every open connection is closed) and come back on the same port.
//!
//! `/healthz` obeys the mode like any other path, so the gateway's health checks see what
//! its traffic would see. Every counter is an atomic, readable at any time.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

use super::{BoxBody, full};

/// How a [`Faulty`] answers the requests that arrive from now on (a request takes the mode
/// in force when its head arrived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 with the name as the body.
    Ok,
    /// Read the request (head and body), never answer; the connection stays open until the
    /// client closes it or the upstream is stopped.
    Hang,
    /// This status, with the name as the body.
    Status(u16),
    /// 200 with the name as the body, after this long.
    Delay(Duration),
}

#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    received: AtomicUsize,
    served: AtomicUsize,
    health_checks: AtomicUsize,
    received_non_health: AtomicUsize,
    bodies_received: AtomicUsize,
    in_flight: AtomicUsize,
}

struct Shared {
    name: Arc<str>,
    mode: Mutex<Mode>,
    counters: Counters,
    /// Every connection task of the running server; aborted by `stop`.
    connections: Mutex<JoinSet<()>>,
}

/// The running accept loop, if any.
struct Running {
    accept: JoinHandle<()>,
}

pub struct Faulty {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

impl Drop for Faulty {
    fn drop(&mut self) {
        if let Some(r) = self.running.lock().unwrap().take() {
            r.accept.abort();
        }
        self.shared.connections.lock().unwrap().abort_all();
    }
}

/// Decrements the in-flight count when the request ends, answered or not.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A listening socket on `addr` with SO_REUSEADDR, so a stopped upstream can take its port
/// back while connections it closed sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Faulty {
    /// Start serving on 127.0.0.1:<free port> in [`Mode::Ok`].
    pub async fn start(name: &str) -> Faulty {
        let listener = bind("127.0.0.1:0".parse().unwrap()).expect("bind the faulty upstream");
        let addr = listener.local_addr().unwrap();
        let f = Faulty {
            addr,
            shared: Arc::new(Shared {
                name: name.into(),
                mode: Mutex::new(Mode::Ok),
                counters: Counters::default(),
                connections: Mutex::new(JoinSet::new()),
            }),
            running: Mutex::new(None),
        };
        f.serve(listener);
        f
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn mode(&self) -> Mode {
        *self.shared.mode.lock().unwrap()
    }

    /// How requests arriving from now on are answered.
    pub fn set_mode(&self, mode: Mode) {
        if let Mode::Status(n) = mode {
            StatusCode::from_u16(n).unwrap_or_else(|_| panic!("{n} is not an HTTP status"));
        }
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Whether the listener is up (between `start`/`restart` and `stop`).
    pub fn is_running(&self) -> bool {
        self.running.lock().unwrap().is_some()
    }

    /// Like a killed process: close the listener (the port refuses connections) and every
    /// open connection, answered or not. Returns once both are closed.
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        let Some(running) = running else {
            return;
        };
        running.accept.abort();
        // The listener is dropped with the task; wait for that.
        let _ = running.accept.await;
        // The accept loop is gone, so no connection task is added after this.
        let mut connections = std::mem::take(&mut *self.shared.connections.lock().unwrap());
        connections.shutdown().await;
    }

    /// Serve again on the same port (after [`Faulty::stop`]), retrying the bind for up to
    /// 10 s while the port is still in use. No-op when already running.
    pub async fn restart(&self) {
        if self.is_running() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match bind(self.addr) {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!(
                    "rebind the faulty upstream {} at {}: {e}",
                    self.name(),
                    self.addr
                ),
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // e.g. EMFILE: do not spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                shared.counters.accepted.fetch_add(1, Ordering::SeqCst);
                let conn_shared = shared.clone();
                let mut connections = shared.connections.lock().unwrap();
                // Forget connections that already ended.
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let shared = conn_shared.clone();
                        async move { Ok::<_, Infallible>(answer(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        *self.running.lock().unwrap() = Some(Running { accept });
    }

    /// TCP connections accepted, over all runs.
    pub fn accepted(&self) -> usize {
        self.shared.counters.accepted.load(Ordering::SeqCst)
    }

    /// Requests whose head arrived (any path, any mode).
    pub fn received(&self) -> usize {
        self.shared.counters.received.load(Ordering::SeqCst)
    }

    /// Requests answered (any status).
    pub fn served(&self) -> usize {
        self.shared.counters.served.load(Ordering::SeqCst)
    }

    /// Requests for `/healthz` whose head arrived.
    pub fn health_checks(&self) -> usize {
        self.shared.counters.health_checks.load(Ordering::SeqCst)
    }

    /// Requests for anything but `/healthz` whose head arrived.
    pub fn received_non_health(&self) -> usize {
        self.shared
            .counters
            .received_non_health
            .load(Ordering::SeqCst)
    }

    /// Requests of which at least one body byte arrived.
    pub fn bodies_received(&self) -> usize {
        self.shared.counters.bodies_received.load(Ordering::SeqCst)
    }

    /// Requests whose head arrived and that are not answered (nor abandoned) yet.
    pub fn in_flight(&self) -> usize {
        self.shared.counters.in_flight.load(Ordering::SeqCst)
    }
}

async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<BoxBody> {
    let c = &shared.counters;
    let mode = *shared.mode.lock().unwrap();
    c.received.fetch_add(1, Ordering::SeqCst);
    c.in_flight.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight(&c.in_flight);
    if req.uri().path() == "/healthz" {
        c.health_checks.fetch_add(1, Ordering::SeqCst);
    } else {
        c.received_non_health.fetch_add(1, Ordering::SeqCst);
    }
    let mut body = req.into_body();
    let mut had_body = false;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if !had_body && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            had_body = true;
            c.bodies_received.fetch_add(1, Ordering::SeqCst);
        }
    }
    let status = match mode {
        Mode::Ok => 200,
        Mode::Hang => std::future::pending::<u16>().await,
        Mode::Status(n) => n,
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            200
        }
    };
    c.served.fetch_add(1, Ordering::SeqCst);
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .header("x-upstream", &*shared.name)
        .body(full(shared.name.to_string()))
        .unwrap()
}
