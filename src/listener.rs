//! Accept and TLS: one accept loop per listener, a permit per connection, the handshake
//! under a deadline, then HTTP/1.1 or HTTP/2 (by ALPN) until the client or shutdown ends it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::app::Shared;
use crate::context::ConnContext;
use crate::framing::scanner::{ScannedStream, Scanner};

/// The HTTP server settings for new connections: HTTP/1.1 and HTTP/2 chosen by ALPN.
pub(crate) fn http_builder(s: &crate::config::ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        // Slowloris: the whole head must arrive in time, however slowly it trickles.
        .header_read_timeout(s.header_read_timeout)
        .max_buf_size(s.max_header_bytes)
        .max_headers(s.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(250)
        // Bounds the rapid-reset attack (CVE-2023-44487) on top of h2's own defaults.
        .max_pending_accept_reset_streams(50)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Signals shared by every connection task: `stop` starts a graceful drain, `kill` ends
/// what is still running when the drain deadline has passed.
#[derive(Clone)]
pub(crate) struct Signals {
    pub stop: watch::Receiver<bool>,
    pub kill: watch::Receiver<bool>,
}

/// Accept until `stop`; returning drops the socket, so new connections are refused.
pub(crate) async fn accept_loop(
    tcp: TcpListener,
    name: Arc<str>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    signals: Signals,
) {
    let mut stop = signals.stop.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            r = tcp.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = &*name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(
                listener = &*name,
                "connection limit reached; closing new connection"
            );
            continue;
        };
        let snapshot = shared.snapshot.load();
        let Some(policy) = snapshot.listener(&name) else {
            continue;
        };
        let conn = Connection {
            stream,
            peer,
            listener: name.clone(),
            acceptor: TlsAcceptor::from(policy.tls.clone()),
            http: snapshot.http.clone(),
            handshake_timeout: snapshot.server.handshake_timeout,
            max_header_bytes: snapshot.server.max_header_bytes,
            accepted_at: Instant::now(),
        };
        drop(snapshot);
        tokio::spawn(conn.serve(shared.clone(), signals.clone(), permit));
    }
}

/// An accepted TCP connection with the settings it was accepted under.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    acceptor: TlsAcceptor,
    http: auto::Builder<TokioExecutor>,
    handshake_timeout: Duration,
    max_header_bytes: usize,
    accepted_at: Instant,
}

impl Connection {
    async fn serve(self, shared: Arc<Shared>, mut signals: Signals, _permit: OwnedSemaphorePermit) {
        let _ = self.stream.set_nodelay(true);
        let local = self.stream.local_addr().unwrap_or(self.peer);
        let handshake =
            tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(self.stream));
        let tls = tokio::select! {
            r = handshake => match r {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(listener = &*self.listener, peer = %self.peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = &*self.listener, peer = %self.peer, "TLS handshake timed out");
                    return;
                }
            },
            _ = signals.stop.wait_for(|s| *s) => return,
        };

        let (_, session) = tls.get_ref();
        let framing_flag = Arc::new(AtomicBool::new(false));
        // HTTP/2 frames every message itself; only HTTP/1 bytes need watching.
        let scanner = if session.alpn_protocol() == Some(b"h2") {
            Scanner::off(framing_flag.clone())
        } else {
            Scanner::new(self.max_header_bytes, framing_flag.clone())
        };
        let conn = Arc::new(ConnContext {
            listener: self.listener,
            peer: self.peer,
            local,
            accepted_at: self.accepted_at,
            tls_version: session.protocol_version(),
            alpn: session.alpn_protocol().map(Into::into),
            sni: session.server_name().map(Into::into),
            framing_flag,
        });

        let service = service_fn(move |req| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(crate::pipeline::handle(&shared, &conn, req).await) }
        });
        let io = TokioIo::new(ScannedStream::new(tls, scanner));
        let served = self.http.serve_connection(io, service);
        tokio::pin!(served);
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = signals.stop.wait_for(|s| *s) => {}
        }
        // Finish the request in flight, refuse the next (HTTP/1 closes, HTTP/2 sends GOAWAY).
        served.as_mut().graceful_shutdown();
        tokio::select! {
            _ = served => {}
            _ = signals.kill.wait_for(|k| *k) => {}
        }
    }
}
