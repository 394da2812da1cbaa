//! Accept and TLS: one accept loop per listener; per connection a permit, the PROXY header
//! (when configured, trusted proxies only), the listener's IP lists (before any TLS byte,
//! so strangers cost nothing), the handshake under a deadline, the client identity
//! digested once, then HTTP/1.1 or HTTP/2 (by ALPN) until the client or shutdown ends it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::h1::{IdleRelease, serve_h1};
use super::h2::{H2Watch, drive};
use super::h2_guard::{H2Guard, Watch};
use super::scanned::ScannedStream;
use crate::config::ListenerPolicy;
use crate::context::ConnContext;
use crate::context::InFlight;
use crate::framing::scanner::{FramingSignals, Scanner};
use crate::generation::HttpBuilders;
use crate::identity::{ClientIdentity, IdentityValues};
use crate::ip_filter::{self, proxy_protocol};
use crate::metrics::{ConnRefusal, HandshakeFailure};
use crate::server::Shared;

/// Signals shared by every connection task: `stop` starts a graceful drain, `kill` ends
/// what is still running when the drain deadline has passed.
#[derive(Clone)]
pub(crate) struct Signals {
    pub stop: watch::Receiver<bool>,
    pub kill: watch::Receiver<bool>,
}

/// A connection refused before any request: counted by reason and written as a connection
/// line (the access line's counterpart), from the accept loop and the handshake alike.
fn refuse_connection(
    shared: &Shared,
    listener: &str,
    peer: SocketAddr,
    origin: SocketAddr,
    why: ConnRefusal,
    handshake: Option<HandshakeFailure>,
) {
    shared.metrics.refused(why);
    crate::record::conn::Refused {
        listener,
        peer,
        origin,
        reason: why,
        handshake,
    }
    .write(crate::clock::mono_at(Instant::now()) / 1_000_000);
}

/// Accept until shutdown or until this listener is stopped by a reload; returning drops
/// the socket, so new connections are refused. Open connections are not affected.
pub(crate) async fn accept_loop(
    tcp: TcpListener,
    name: Arc<str>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    signals: Signals,
    this_listener_stop: watch::Receiver<bool>,
) {
    let stop = signals.stop.clone();
    let label = name.clone();
    accept_until(tcp, &label, stop, this_listener_stop, |stream, peer| {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse_connection(&shared, &name, peer, peer, ConnRefusal::Limit, None);
            return;
        };
        let generation = shared.generation.load();
        let snapshot = &generation.snapshot;
        let Some(policy) = snapshot.listener(&name) else {
            return;
        };
        let conn = Connection {
            stream,
            peer,
            policy: policy.clone(),
            http: Arc::clone(&generation.http),
            handshake_timeout: snapshot.server.handshake_timeout,
            header_read_timeout: snapshot.server.header_read_timeout,
            release_idle_after: snapshot.server.release_idle_after,
            max_header_bytes: snapshot.server.max_header_bytes,
            max_headers: snapshot.server.max_headers,
            send_timeout: snapshot.server.send_timeout,
            accepted_at: Instant::now(),
        };
        drop(generation);
        tokio::spawn(conn.serve(shared.clone(), signals.clone(), permit));
    })
    .await;
}

/// The one accept loop of every listener, gateway and admin: accept until shutdown or until
/// this listener is stopped by a reload, handing each connection to `accepted`.
pub(crate) async fn accept_until(
    tcp: TcpListener,
    name: &str,
    mut stop: watch::Receiver<bool>,
    mut this_listener_stop: watch::Receiver<bool>,
    mut accepted: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = this_listener_stop.wait_for(|s| *s) => return,
            r = tcp.accept() => r,
        };
        match next {
            Ok((stream, peer)) => accepted(stream, peer),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted TCP connection with the listener policy it was accepted under.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    policy: Arc<ListenerPolicy>,
    http: Arc<HttpBuilders>,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
    release_idle_after: Duration,
    max_header_bytes: usize,
    max_headers: usize,
    send_timeout: Duration,
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
            header_read_timeout,
            release_idle_after,
            max_header_bytes,
            max_headers,
            send_timeout,
            accepted_at,
        } = self;
        let deadline = tokio::time::Instant::now() + handshake_timeout;
        // The handshake's state is boxed, as is the HTTP connection later (in `serve_h1`
        // and `drive`): they are alive one after the other, and the task itself stays small
        // for as long as the connection idles.
        let established = tokio::select! {
            e = Box::pin(establish(stream, peer, &policy, &shared, deadline, accepted_at)) => e,
            _ = raised(&mut signals.stop) => None,
        };
        // `_flood`: this address's connection slot, held for the connection's life.
        let Some((tls, conn, _flood)) = established else {
            return;
        };

        let h2 = conn.alpn.as_deref() == Some(b"h2");
        // HTTP/2 frames every message itself; only HTTP/1 bytes need watching.
        let scanner = if h2 {
            Scanner::off(conn.framing.clone())
        } else {
            Scanner::new(max_header_bytes, max_headers, conn.framing.clone())
        };
        let shared_metrics = shared.clone();
        let service = {
            let conn = conn.clone();
            service_fn(move |req| {
                let shared = shared.clone();
                let conn = conn.clone();
                async move {
                    let in_flight = InFlight::start(&conn);
                    let generation = shared.generation.load_full();
                    let mut resp = crate::pipeline::handle(
                        generation,
                        &shared.metrics,
                        &shared.clock,
                        &conn,
                        req,
                    )
                    .await;
                    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        // What follows on this connection is the tunnel's, not HTTP.
                        conn.framing
                            .upgraded
                            .store(true, std::sync::atomic::Ordering::Release);
                    }
                    resp.body_mut().hold(in_flight);
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        // Boxed: moved once into the task's state, the TLS session (rustls' connection is a
        // large struct) would be held inline in every future that owns it.
        let io = ScannedStream::new(Box::new(tls), scanner);
        if h2 {
            let watch = Arc::new(Watch::default());
            let io = H2Guard::new(io, Arc::clone(&watch));
            let served = http.h2.serve_connection(TokioIo::new(io), service);
            let guard = H2Watch {
                watch,
                conn: &conn,
                send_timeout,
                metrics: &shared_metrics.metrics,
            };
            drive(Box::pin(served), signals, guard).await;
        } else {
            let idle = IdleRelease {
                after: release_idle_after,
                // hyper closes a keep-alive connection that sends nothing for this long;
                // a released one keeps that limit.
                keep_alive: header_read_timeout,
            };
            serve_h1(&http.h1, io, service, &conn, idle, signals, &shared_metrics).await;
        }
    }
}

/// Resolves once `signal` is true (or its sender is gone), holding no lock.
pub(super) async fn raised(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|s| *s).await;
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
) -> Option<(
    tokio_rustls::server::TlsStream<crate::tls::Socket>,
    Arc<ConnContext>,
    Option<crate::limits::InFlightSlot>,
)> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let mut origin = peer;
    let refuse = |why: ConnRefusal, origin: SocketAddr, handshake: Option<HandshakeFailure>| {
        refuse_connection(shared, &policy.name, peer, origin, why, handshake);
    };
    let mut proxy_spoke_for_itself = false;
    if policy.proxy_protocol {
        if !policy.ip.trusted_proxies.contains(peer.ip()) {
            refuse(ConnRefusal::ProxyProtocol, origin, None);
            return None;
        }
        match tokio::time::timeout_at(deadline, proxy_protocol::read_header(&mut stream)).await {
            Ok(Ok(Some(src))) => origin = src,
            Ok(Ok(None)) => proxy_spoke_for_itself = true,
            Ok(Err(_)) | Err(_) => {
                refuse(ConnRefusal::ProxyProtocol, origin, None);
                return None;
            }
        }
    }
    if !ip_filter::admits_connection(&policy.ip, origin.ip()) {
        // Closed before a single TLS byte: an unwanted peer costs no handshake.
        refuse(ConnRefusal::IpNotAllowed, origin, None);
        return None;
    }
    // Flood control, also before TLS: one address opening connections too fast, or holding
    // too many, costs no handshake either.
    let generation = shared.generation.load();
    let flood = match policy
        .flood
        .admit(origin.ip(), &*generation.limits, shared.clock.mono_ns())
    {
        Ok(slot) => slot,
        Err(why) => {
            refuse(why, origin, None);
            return None;
        }
    };
    drop(generation);

    let acceptor = TlsAcceptor::from(policy.tls.clone());
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(crate::tls::Socket(stream)))
        .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(listener = &*policy.name, %peer, error = %e, "TLS handshake failed");
            let failure = HandshakeFailure::of(&e);
            shared.metrics.handshake_failed(failure);
            refuse(ConnRefusal::Handshake, origin, Some(failure));
            return None;
        }
        Err(_) => {
            shared.metrics.handshake_failed(HandshakeFailure::Timeout);
            refuse(
                ConnRefusal::Handshake,
                origin,
                Some(HandshakeFailure::Timeout),
            );
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
        origin_value: ConnContext::origin_value(origin),
        local,
        accepted_at,
        tls_version: session.protocol_version(),
        alpn: session.alpn_protocol().map(Into::into),
        proxy_spoke_for_itself,
        sni: session.server_name().map(Into::into),
        identity_values: identity.as_ref().map(IdentityValues::new),
        identity,
        framing: Arc::new(FramingSignals::default()),
        in_flight: std::sync::atomic::AtomicU32::new(0),
        sending: Default::default(),
    });
    Some((tls, conn, flood))
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
