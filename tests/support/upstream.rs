//! Plain HTTP/1.1 upstream servers on 127.0.0.1:0, built on hyper. Every upstream counts the
//! TCP connections it accepted and records the head of every request it parsed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::data::{ChannelBody, Fnv, GeneratedBody};
use super::{BoxBody, boxed, full};

/// The head of a request as the upstream parsed it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

/// What the echo upstream saw, returned to the client as the JSON body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo {
    pub upstream: String,
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_fnv: u64,
    pub body_error: Option<String>,
}

impl Echo {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of header `name`; panics if it appears more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.header_all(name);
        assert!(
            all.len() <= 1,
            "upstream saw {name} {} times: {all:?}",
            all.len()
        );
        all.first().copied()
    }

    pub fn has_header(&self, name: &str) -> bool {
        !self.header_all(name).is_empty()
    }
}

fn header_pairs(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

pub struct Upstream {
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    /// TLS handshakes completed (TLS upstreams only).
    handshakes: Arc<AtomicUsize>,
    /// The client certificate (DER) each TLS connection presented, if any.
    peer_certs: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:<port>`
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Per completed TLS handshake, the client certificate presented (DER), if any.
    pub fn peer_certs(&self) -> Vec<Option<Vec<u8>>> {
        self.peer_certs.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Requests whose head the upstream parsed so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Serve every connection with `handler`.
    pub async fn serve<H, F>(handler: H) -> Upstream
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        Upstream::serve_with(None, false, handler).await
    }

    /// An [`Upstream::echo`] speaking HTTP/2 in clear (prior knowledge, `h2c`).
    pub async fn h2c_echo(name: &str) -> Upstream {
        let name: Arc<str> = name.into();
        Upstream::serve_with(None, true, move |req| echo_response(name.clone(), req)).await
    }

    /// An [`Upstream::echo`] over TLS with `config`.
    pub async fn tls_echo(name: &str, config: Arc<rustls::ServerConfig>) -> Upstream {
        let name: Arc<str> = name.into();
        Upstream::serve_with(Some(config), false, move |req| {
            echo_response(name.clone(), req)
        })
        .await
    }

    /// Serve every connection with `handler`, over TLS when `tls` is set (a failed handshake
    /// closes the connection before any request; HTTP/2 when ALPN chose it), or HTTP/2 in
    /// clear when `h2c`.
    pub async fn serve_with<H, F>(
        tls: Option<Arc<rustls::ServerConfig>>,
        h2c: bool,
        handler: H,
    ) -> Upstream
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let handshakes = Arc::new(AtomicUsize::new(0));
        let peer_certs = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let task = {
            let (accepts, requests) = (accepts.clone(), requests.clone());
            let (handshakes, peer_certs) = (handshakes.clone(), peer_certs.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    accepts.fetch_add(1, Ordering::SeqCst);
                    let (handler, requests) = (handler.clone(), requests.clone());
                    let acceptor = acceptor.clone();
                    let (handshakes, peer_certs) = (handshakes.clone(), peer_certs.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<Incoming>| {
                            requests.lock().unwrap().push(Recorded {
                                method: req.method().to_string(),
                                uri: req.uri().to_string(),
                                headers: header_pairs(req.headers()),
                            });
                            let fut = handler(req);
                            async move { Ok::<_, Infallible>(fut.await) }
                        });
                        match acceptor {
                            None if h2c => {
                                let _ = hyper::server::conn::http2::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                )
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                            }
                            None => {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            }
                            Some(acceptor) => {
                                let Ok(tls) = acceptor.accept(stream).await else {
                                    return;
                                };
                                handshakes.fetch_add(1, Ordering::SeqCst);
                                let peer = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| c.as_ref().to_vec());
                                peer_certs.lock().unwrap().push(peer);
                                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                                    let _ = hyper::server::conn::http2::Builder::new(
                                        hyper_util::rt::TokioExecutor::new(),
                                    )
                                    .serve_connection(TokioIo::new(tls), svc)
                                    .await;
                                } else {
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(tls), svc)
                                        .await;
                                }
                            }
                        }
                    });
                }
            })
        };
        Upstream {
            addr,
            accepts,
            handshakes,
            peer_certs,
            requests,
            task,
        }
    }

    /// Answers 200 with an [`Echo`] of the request as JSON and `x-upstream: <name>`. If the
    /// request carries `x-test-hop-response`, the response also carries hop-by-hop headers
    /// (Connection naming `x-secret-resp`, `x-secret-resp`, Keep-Alive, Proxy-Authenticate,
    /// Trailer, Upgrade) plus an end-to-end `x-kept-resp: yes`.
    pub async fn echo(name: &str) -> Upstream {
        let name: Arc<str> = name.into();
        Upstream::serve(move |req| echo_response(name.clone(), req)).await
    }

    /// Answers every request with `len` generated bytes from `seed` (Content-Length set).
    pub async fn download(seed: u64, len: u64) -> Upstream {
        Upstream::serve(move |_req| async move {
            Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(boxed(GeneratedBody::new(seed, len)))
                .unwrap()
        })
        .await
    }

    /// The first request gets a chunked 200 whose body is `chunk-1;` at once, then `chunk-2;`
    /// only after the returned sender fires (or is dropped).
    pub async fn slow_stream() -> (Upstream, oneshot::Sender<()>) {
        let (tx, rx) = oneshot::channel::<()>();
        let rx = Arc::new(Mutex::new(Some(rx)));
        let up = Upstream::serve(move |_req| {
            let rx = rx.lock().unwrap().take();
            async move {
                let (body_tx, body) = ChannelBody::new(4);
                tokio::spawn(async move {
                    let _ = body_tx.send(Bytes::from_static(b"chunk-1;")).await;
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                    let _ = body_tx.send(Bytes::from_static(b"chunk-2;")).await;
                });
                Response::builder()
                    .status(200)
                    .header("content-type", "text/plain")
                    .body(boxed(body))
                    .unwrap()
            }
        })
        .await;
        (up, tx)
    }

    /// Sleeps `delay` before answering 200 `slept`.
    pub async fn sleeper(delay: Duration) -> Upstream {
        Upstream::serve(move |_req| async move {
            tokio::time::sleep(delay).await;
            Response::builder().status(200).body(full("slept")).unwrap()
        })
        .await
    }

    /// Every request reports its arrival through the [`Gate`], then waits until the gate is
    /// opened and answers 200 `released`.
    pub async fn gated() -> (Upstream, Gate) {
        let (arrived_tx, arrived_rx) = mpsc::unbounded_channel();
        let (open_tx, open_rx) = watch::channel(false);
        let up = Upstream::serve(move |req| {
            let arrived = arrived_tx.clone();
            let mut open = open_rx.clone();
            async move {
                let _ = req.into_body().collect().await;
                let _ = arrived.send(());
                let _ = open.wait_for(|o| *o).await;
                Response::builder()
                    .status(200)
                    .header("content-type", "text/plain")
                    .body(full("released"))
                    .unwrap()
            }
        })
        .await;
        (
            up,
            Gate {
                arrived: arrived_rx,
                open: open_tx,
            },
        )
    }
}

/// Test side of [`Upstream::gated`].
pub struct Gate {
    arrived: mpsc::UnboundedReceiver<()>,
    open: watch::Sender<bool>,
}

impl Gate {
    /// Wait (at most 20 s) until a request has reached the upstream.
    pub async fn arrived(&mut self) {
        tokio::time::timeout(Duration::from_secs(20), self.arrived.recv())
            .await
            .expect("no request reached the gated upstream within 20 s")
            .expect("gated upstream stopped");
    }

    /// Let every waiting and future request through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

pub async fn echo_response(name: Arc<str>, req: Request<Incoming>) -> Response<BoxBody> {
    let (parts, mut body) = req.into_parts();
    let mut len = 0u64;
    let mut fnv = Fnv::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    len += d.len() as u64;
                    fnv.update(&d);
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    let echo = Echo {
        upstream: name.to_string(),
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: format!("{:?}", parts.version),
        headers: header_pairs(&parts.headers),
        body_len: len,
        body_fnv: fnv.finish(),
        body_error,
    };
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("x-upstream", &*name);
    if parts.headers.contains_key("x-test-hop-response") {
        resp = resp
            .header("connection", "x-secret-resp")
            .header("x-secret-resp", "1")
            .header("keep-alive", "timeout=5, max=100")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("trailer", "x-trailer-test")
            .header("upgrade", "h2c")
            .header("x-kept-resp", "yes");
    }
    resp.body(full(serde_json::to_vec(&echo).unwrap())).unwrap()
}
