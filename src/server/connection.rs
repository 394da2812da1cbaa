//! Accept and TLS: one accept loop per listener; per connection a permit, the PROXY header
//! (when configured, trusted proxies only), the listener's IP lists (before any TLS byte,
//! so strangers cost nothing), the handshake under a deadline, the client identity
//! digested once, then HTTP/1.1 or HTTP/2 (by ALPN) until the client or shutdown ends it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::h2_guard::{H2Guard, Watch, Why};
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
            shared.metrics.refused(ConnRefusal::Limit);
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
            Scanner::new(max_header_bytes, conn.framing.clone())
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

/// When an idle HTTP/1.1 connection gives back its HTTP state.
#[derive(Clone, Copy)]
struct IdleRelease {
    after: Duration,
    keep_alive: Duration,
}

type H1Io = ScannedStream<Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// Serve HTTP/1.1 until the client or shutdown ends it. A connection idle for
/// `idle.after` (no request in flight, no byte of the next one read) is released: hyper's
/// connection, with its 8 KiB read and 8 KiB write buffers, is dropped, and the task waits
/// on the socket alone until the client sends again, then serves it with a new one. Busy
/// connections never pay for this; idle ones hold the TLS session and little else, as
/// nginx's idle keep-alive connections do.
async fn serve_h1<S>(
    builder: &http1::Builder,
    mut io: H1Io,
    service: S,
    conn: &ConnContext,
    idle: IdleRelease,
    mut signals: Signals,
    shared: &Shared,
) where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::upstream::ResponseBody>
        + Clone,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::AsyncWriteExt;
    loop {
        // With upgrades: a WebSocket route takes the connection over after its 101.
        let mut served = Box::pin(
            builder
                .serve_connection(TokioIo::new(io), service.clone())
                .with_upgrades(),
        );
        let start = tokio::time::Instant::now() + idle.after;
        let mut tick = tokio::time::interval_at(start, idle.after);
        let mut released = false;
        let ended = loop {
            tokio::select! {
                r = served.as_mut() => break r,
                _ = tick.tick(), if !released => {
                    if conn.is_idle() {
                        // hyper closes an idle connection at once; its shutdown of the
                        // stream is held off, so only hyper's state goes.
                        released = true;
                        conn.framing.hold_open.store(true, Relaxed);
                        served.as_mut().graceful_shutdown();
                    }
                }
                _ = raised(&mut signals.stop) => {
                    // Finish the request in flight, refuse the next (Connection: close).
                    conn.framing.hold_open.store(false, Relaxed);
                    served.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = served.as_mut() => {}
                        _ = raised(&mut signals.kill) => {}
                    }
                    return;
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
            return;
        }
        if !released {
            // The client closed, or the exchange asked to (Connection: close); hyper has
            // shut the stream down.
            return;
        }
        conn.framing.hold_open.store(false, Relaxed);
        drop(tick);
        let Some(http1::Parts {
            io: released_io,
            read_buf,
            ..
        }) = std::pin::Pin::into_inner(served).into_parts()
        else {
            // Upgraded: the tunnel owns the stream now.
            return;
        };
        io = released_io.into_inner();
        if !read_buf.is_empty() {
            // Bytes arrived as it was released: serve them now.
            io.replay(read_buf);
            continue;
        }
        // hyper's (empty) read buffer still owns its 8 KiB allocation.
        drop(read_buf);
        io.shrink();
        // Parked: no HTTP state, only the TLS session; the socket says when to go on.
        let keep_alive = idle.keep_alive.saturating_sub(idle.after);
        let parked = GaugeGuard::inc(&shared.metrics.parked_connections);
        let close = tokio::select! {
            r = io.get_ref().get_ref().0.readable() => r.is_err(),
            _ = tokio::time::sleep(keep_alive) => true,
            _ = raised(&mut signals.stop) => true,
        };
        drop(parked);
        if close {
            let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
            return;
        }
    }
}

/// Counts one on a gauge while alive, however the scope ends.
struct GaugeGuard<'a>(&'a prometheus::IntGauge);

impl<'a> GaugeGuard<'a> {
    fn inc(g: &'a prometheus::IntGauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Resolves once `signal` is true (or its sender is gone), holding no lock.
async fn raised(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|s| *s).await;
}

/// How long a connection asked to end (a stalled reader) has to close before it is
/// dropped: its GOAWAY may never leave a socket the client does not read.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the HTTP/2 connection task watches besides hyper: the guard below it, whether the
/// client takes its responses, and where the GOAWAYs are counted.
struct H2Watch<'a> {
    watch: Arc<Watch>,
    conn: &'a ConnContext,
    send_timeout: Duration,
    metrics: &'a crate::metrics::Metrics,
}

impl H2Watch<'_> {
    /// Whether responses have waited for the client (or our bytes for its reads) longer
    /// than `send_timeout`.
    fn stalled(&self, now: Instant) -> bool {
        let waited = self.conn.sending.stalled_for(now);
        let blocked = self.watch.blocked_for(now);
        waited.max(blocked).is_some_and(|d| d > self.send_timeout)
    }

    /// Count the GOAWAY that ended the connection, if the gateway sent one for a fault:
    /// the guard's, or h2's own (its error, under hyper's, says so).
    fn count(&self, ended: Option<&hyper::Error>) {
        if self.watch.ended().is_some() {
            self.metrics.h2_goaway(h2::Reason::ENHANCE_YOUR_CALM);
            return;
        }
        let mut source = ended.map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = source {
            if let Some(h2) = e.downcast_ref::<h2::Error>() {
                if let (true, false, Some(reason)) = (h2.is_go_away(), h2.is_remote(), h2.reason())
                    && reason != h2::Reason::NO_ERROR
                {
                    self.metrics.h2_goaway(reason);
                }
                return;
            }
            source = e.source();
        }
    }
}

/// Serve one HTTP/2 connection until it ends; on shutdown, finish the request in flight
/// and refuse the next (GOAWAY), until the drain deadline. A client that takes none of its
/// responses' bytes for `send_timeout` is ended (the guard's GOAWAY), and dropped if it
/// has not closed `CLOSE_GRACE` later.
async fn drive<C>(mut served: std::pin::Pin<Box<C>>, mut signals: Signals, h2: H2Watch<'_>)
where
    C: GracefulConnection<Error = hyper::Error>,
{
    // Checked twice per `send_timeout`: a stall ends between one and one and a half of it.
    let every = h2.send_timeout / 2;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut drop_at: Option<Instant> = None;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = &r {
                    tracing::debug!(peer = %h2.conn.peer, error = %e, "connection ended with an error");
                }
                h2.count(r.as_ref().err());
                return;
            }
            _ = raised(&mut signals.stop) => break,
            _ = tick.tick() => {
                let now = Instant::now();
                if drop_at.is_some_and(|at| now >= at) {
                    h2.count(None);
                    return;
                }
                if drop_at.is_none() && (h2.watch.ended().is_some() || h2.stalled(now)) {
                    tracing::debug!(peer = %h2.conn.peer, "HTTP/2 client stalled or flooded: ending the connection");
                    h2.watch.stop(Why::SendTimeout);
                    drop_at = Some(now + CLOSE_GRACE);
                    tick.reset_after(CLOSE_GRACE);
                }
            }
        }
    }
    served.as_mut().graceful_shutdown();
    tokio::select! {
        _ = served => {}
        _ = raised(&mut signals.kill) => {}
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
) -> Option<(
    tokio_rustls::server::TlsStream<TcpStream>,
    Arc<ConnContext>,
    Option<crate::limits::InFlightSlot>,
)> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let refuse = |why: ConnRefusal| {
        shared.metrics.refused(why);
        tracing::debug!(listener = &*policy.name, %peer, reason = why.label(), "connection refused");
    };

    let mut origin = peer;
    let mut proxy_spoke_for_itself = false;
    if policy.proxy_protocol {
        if !policy.ip.trusted_proxies.contains(peer.ip()) {
            refuse(ConnRefusal::ProxyProtocol);
            return None;
        }
        match tokio::time::timeout_at(deadline, proxy_protocol::read_header(&mut stream)).await {
            Ok(Ok(Some(src))) => origin = src,
            Ok(Ok(None)) => proxy_spoke_for_itself = true,
            Ok(Err(_)) | Err(_) => {
                refuse(ConnRefusal::ProxyProtocol);
                return None;
            }
        }
    }
    if !ip_filter::admits_connection(&policy.ip, origin.ip()) {
        // Closed before a single TLS byte: an unwanted peer costs no handshake.
        refuse(ConnRefusal::IpNotAllowed);
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
            refuse(why);
            return None;
        }
    };
    drop(generation);

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
