//! Accept and TLS: one accept loop per listener; per connection a permit, the PROXY header
//! (when configured, trusted proxies only), the listener's IP lists (before any TLS byte,
//! so strangers cost nothing), the handshake under a deadline, the client identity
//! digested once, then HTTP/1.1 or HTTP/2 (by ALPN) until the client or shutdown ends it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::app::Shared;
use crate::config::ListenerPolicy;
use crate::context::ConnContext;
use crate::framing::scanner::{ScannedStream, Scanner};
use crate::identity::{ClientIdentity, IdentityValues};
use crate::ip_filter::{self, proxy_protocol};
use crate::metrics::{ConnRefusal, HandshakeFailure};

/// The HTTP server settings for new connections, built once per config load: HTTP/2 when
/// ALPN chose `h2`, HTTP/1.1 otherwise.
///
/// Not hyper-util's `auto` builder: it sniffs the first 24 bytes for the HTTP/2 preface
/// even when ALPN has already said which protocol it is, and that 24-byte prefix makes
/// hyper's first read buffer grow from 8 to 16 KiB, held for the connection's life
/// (heaptrack, 1,000 idle connections). HTTP/2 over TLS needs ALPN (RFC 9113 3.2), so
/// ALPN alone decides.
pub(crate) struct HttpBuilders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

pub(crate) fn http_builders(s: &crate::config::ServerSettings) -> HttpBuilders {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        // Slowloris: the whole head must arrive in time, however slowly it trickles.
        .header_read_timeout(s.header_read_timeout)
        .max_buf_size(s.max_header_bytes)
        .max_headers(s.max_headers)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(250)
        // Bounds the rapid-reset attack (CVE-2023-44487) on top of h2's own defaults.
        .max_pending_accept_reset_streams(50)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    HttpBuilders { h1, h2 }
}

/// Signals shared by every connection task: `stop` starts a graceful drain, `kill` ends
/// what is still running when the drain deadline has passed.
#[derive(Clone)]
pub(crate) struct Signals {
    pub stop: watch::Receiver<bool>,
    pub kill: watch::Receiver<bool>,
}

/// Accept until shutdown or until this listener is stopped by a reload; returning drops
/// the socket, so new connections are refused. Open connections are not affected.
pub(crate) async fn accept_loop(
    tcp: TcpListener,
    name: Arc<str>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    signals: Signals,
    mut this_listener_stop: watch::Receiver<bool>,
) {
    let mut stop = signals.stop.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = this_listener_stop.wait_for(|s| *s) => return,
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
            shared.metrics.refused(ConnRefusal::Limit);
            continue;
        };
        let snapshot = shared.snapshot.load();
        let Some(policy) = snapshot.listener(&name) else {
            continue;
        };
        let conn = Connection {
            stream,
            peer,
            policy: policy.clone(),
            http: Arc::clone(&snapshot.http),
            handshake_timeout: snapshot.server.handshake_timeout,
            max_header_bytes: snapshot.server.max_header_bytes,
            accepted_at: Instant::now(),
        };
        drop(snapshot);
        tokio::spawn(conn.serve(shared.clone(), signals.clone(), permit));
    }
}

/// An accepted TCP connection with the listener policy it was accepted under.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    policy: Arc<ListenerPolicy>,
    http: Arc<HttpBuilders>,
    handshake_timeout: Duration,
    max_header_bytes: usize,
    accepted_at: Instant,
}

impl Connection {
    async fn serve(self, shared: Arc<Shared>, mut signals: Signals, permit: OwnedSemaphorePermit) {
        let _open = OpenGuard::new(shared.clone(), permit);
        let Connection {
            stream,
            peer,
            policy,
            http,
            handshake_timeout,
            max_header_bytes,
            accepted_at,
        } = self;
        let deadline = tokio::time::Instant::now() + handshake_timeout;
        // Both stages are boxed: they are alive one after the other, and boxing each keeps
        // the task itself a few hundred bytes, instead of the larger of the two for as long
        // as the connection idles.
        let established = tokio::select! {
            e = Box::pin(establish(stream, peer, &policy, &shared, deadline, accepted_at)) => e,
            _ = signals.stop.wait_for(|s| *s) => None,
        };
        let Some((tls, conn)) = established else {
            return;
        };

        let h2 = conn.alpn.as_deref() == Some(b"h2");
        // HTTP/2 frames every message itself; only HTTP/1 bytes need watching.
        let scanner = if h2 {
            Scanner::off(conn.framing_flag.clone())
        } else {
            Scanner::new(max_header_bytes, conn.framing_flag.clone())
        };
        let service = service_fn(move |req| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(crate::pipeline::handle(&shared, &conn, req).await) }
        });
        let io = TokioIo::new(ScannedStream::new(tls, scanner));
        if h2 {
            drive(
                Box::pin(http.h2.serve_connection(io, service)),
                signals,
                peer,
            )
            .await;
        } else {
            drive(
                Box::pin(http.h1.serve_connection(io, service)),
                signals,
                peer,
            )
            .await;
        }
    }
}

/// Serve one HTTP connection until it ends; on shutdown, finish the request in flight and
/// refuse the next (HTTP/1 closes, HTTP/2 sends GOAWAY), until the drain deadline.
async fn drive<C>(mut served: std::pin::Pin<Box<C>>, mut signals: Signals, peer: SocketAddr)
where
    C: GracefulConnection<Error = hyper::Error>,
{
    tokio::select! {
        r = served.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = signals.stop.wait_for(|s| *s) => {}
    }
    served.as_mut().graceful_shutdown();
    tokio::select! {
        _ = served => {}
        _ = signals.kill.wait_for(|k| *k) => {}
    }
}

/// Everything before HTTP: PROXY header, listener IP lists, TLS, identity. `None`: the
/// connection was refused (and counted).
async fn establish(
    mut stream: TcpStream,
    peer: SocketAddr,
    policy: &ListenerPolicy,
    shared: &Shared,
    deadline: tokio::time::Instant,
    accepted_at: Instant,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Arc<ConnContext>)> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let refuse = |why: ConnRefusal| {
        shared.metrics.refused(why);
        tracing::debug!(listener = &*policy.name, %peer, reason = why.label(), "connection refused");
    };

    let mut origin = peer;
    if policy.proxy_protocol {
        if !policy.trusted_proxies.contains(peer.ip()) {
            refuse(ConnRefusal::ProxyProtocol);
            return None;
        }
        match tokio::time::timeout_at(deadline, proxy_protocol::read_header(&mut stream)).await {
            Ok(Ok(Some(src))) => origin = src,
            Ok(Ok(None)) => {}
            Ok(Err(_)) | Err(_) => {
                refuse(ConnRefusal::ProxyProtocol);
                return None;
            }
        }
    }
    if !ip_filter::admits_connection(policy, origin.ip()) {
        // Closed before a single TLS byte: an unwanted peer costs no handshake.
        refuse(ConnRefusal::IpNotAllowed);
        return None;
    }

    let acceptor = TlsAcceptor::from(policy.tls.clone());
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(listener = &*policy.name, %peer, error = %e, "TLS handshake failed");
            shared.metrics.handshake_failed(HandshakeFailure::of(&e));
            refuse(ConnRefusal::Handshake);
            return None;
        }
        Err(_) => {
            shared.metrics.handshake_failed(HandshakeFailure::Timeout);
            refuse(ConnRefusal::Handshake);
            return None;
        }
    };

    let (_, session) = tls.get_ref();
    shared.metrics.handshake_ok(session.protocol_version());
    // Digested once here; every request only compares hashes.
    let identity = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| ClientIdentity::from_der(leaf.as_ref()).ok());
    let conn = Arc::new(ConnContext {
        listener: policy.name.clone(),
        peer,
        origin,
        local,
        accepted_at,
        tls_version: session.protocol_version(),
        alpn: session.alpn_protocol().map(Into::into),
        sni: session.server_name().map(Into::into),
        identity_values: identity.as_ref().map(IdentityValues::new),
        identity,
        framing_flag: Arc::new(AtomicBool::new(false)),
    });
    Some((tls, conn))
}

/// Holds the connection's permit and counts it open, from accept until it ends, however
/// it ends. If a reload lowered the limit below the open connections, the permit is taken
/// out of circulation instead of returned.
struct OpenGuard {
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
}

impl OpenGuard {
    fn new(shared: Arc<Shared>, permit: OwnedSemaphorePermit) -> Self {
        shared.metrics.open_connections.inc();
        OpenGuard {
            shared,
            permit: Some(permit),
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.shared.metrics.open_connections.dec();
        let owed = &self.shared.permits_owed;
        let paid = owed
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if let (true, Some(permit)) = (paid, self.permit.take()) {
            permit.forget();
            self.shared.permits_total.fetch_sub(1, SeqCst);
        }
    }
}
