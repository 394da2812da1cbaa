//! Upstream connections per target: a stack of idle HTTP/1.1 connections, reused newest
//! first, or one multiplexed HTTP/2 connection that every request shares (chosen by ALPN
//! over TLS, or `h2c` with prior knowledge).
//!
//! Why not hyper-util's pooled client, which this replaced: for every request it locked a
//! pool map keyed by a cloned (scheme, authority), went through a checkout future, and
//! spawned a task that waited for the connection to become idle again before putting it
//! back. Here a connection is lent to one exchange ([`Lease`]) and comes back when the
//! client has read the response body to its end, by which time hyper has almost always
//! made it ready again; only when it has not does a task wait for it. A target's stack is
//! a mutex held for a push or a pop, never across an await.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::{RequestBody, UpstreamBody};
use super::multiplex;

/// Idle connections kept per target at most; beyond it the oldest is closed. The upstream
/// has to hold them too, and a burst of this many concurrent requests is rare.
pub const MAX_IDLE_PER_TARGET: usize = 1024;

type Sender = http1::SendRequest<RequestBody>;
type H2Sender = multiplex::Sender;

/// One target's connections: idle HTTP/1.1 ones (oldest at the front), or the one HTTP/2
/// connection every request shares.
pub struct Pool {
    idle: Mutex<VecDeque<Idle>>,
    idle_timeout: Duration,
    max_idle: usize,
    sweeper: Once,
    /// The shared HTTP/2 connection, while it is open.
    h2: Mutex<Option<H2Sender>>,
    /// Set once the target is known to speak HTTP/2 (`h2c`, or ALPN chose `h2`): new
    /// connections are then made one at a time, so concurrent requests share one.
    speaks_h2: std::sync::atomic::AtomicBool,
    h2_connecting: tokio::sync::Mutex<()>,
    /// Connections open now (idle, lent or shared), by protocol: the operator's view.
    open: Arc<OpenConns>,
    /// Requests to this target between choosing it and the end of their response.
    in_flight: std::sync::atomic::AtomicUsize,
    /// `max_connections`: HTTP/1.1 connections at most (open and being opened).
    max_connections: Option<usize>,
    /// Requests waiting for one of them, at most; more are refused at once.
    max_pending: usize,
    pending: std::sync::atomic::AtomicUsize,
    /// New connections being opened now (counted against `max_connections` already).
    opening: std::sync::atomic::AtomicUsize,
}

/// Connections open to one target, by protocol. Each connection's I/O task holds an
/// [`OpenGuard`], so a connection counts from its handshake until it closes.
#[derive(Debug, Default)]
pub struct OpenConns {
    pub http1: std::sync::atomic::AtomicUsize,
    pub h2: std::sync::atomic::AtomicUsize,
    /// Told when a connection closes or comes back idle: a waiting request may go.
    freed: tokio::sync::Notify,
}

struct OpenGuard(Arc<OpenConns>, bool);

impl OpenGuard {
    fn new(open: &Arc<OpenConns>, h2: bool) -> Self {
        open.counter(h2)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenGuard(Arc::clone(open), h2)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .counter(self.1)
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

/// A request counted in flight to a target until dropped (with its [`Lease`]).
pub struct Busy(Arc<Pool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Undoes a count when the waiting or connecting it stands for ends, however it ends.
struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl OpenConns {
    fn counter(&self, h2: bool) -> &std::sync::atomic::AtomicUsize {
        if h2 { &self.h2 } else { &self.http1 }
    }
}

/// A new connection, of whichever HTTP the target speaks.
enum Conn {
    H1(Sender),
    H2(H2Sender),
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// How one target is reached over TLS.
pub struct TlsTo {
    tls: Arc<crate::tls::upstream::UpstreamTls>,
    name: rustls::pki_types::ServerName<'static>,
}

impl TlsTo {
    /// The configured `server_name`, else the target's host (a DNS name or an IP address).
    pub fn new(tls: Arc<crate::tls::upstream::UpstreamTls>, target: &Authority) -> Option<Self> {
        let name = match &tls.server_name {
            Some(n) => n.clone(),
            None => {
                let host = target.host();
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?
            }
        };
        Some(TlsTo { tls, name })
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum SendError {
    /// No connection: refused, unreachable, name not resolved, or `connect_timeout`.
    Connect(io::Error),
    /// Connected, but the TLS handshake failed (certificate, pin, name, refused by the
    /// upstream) or did not finish within `connect_timeout`. Not a byte of the request left.
    Tls(io::Error),
    /// Connected, but the exchange failed (reset, malformed response, body error).
    Exchange(ExchangeError),
    /// `max_connections` are busy and `max_pending` requests wait already.
    Overloaded,
}

/// Why an exchange with a target failed, by the HTTP spoken to it. Displayed and sourced as
/// the error underneath, so the client-body and TLS checks find their causes in the chain.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Http1(#[from] hyper::Error),
    #[error(transparent)]
    H2(#[from] h2::Error),
    /// The request body failed while it streamed to an HTTP/2 upstream.
    #[error("the request body failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A failed send, with the request back when not a byte of it left (it may go elsewhere).
pub struct Failed {
    pub error: SendError,
    /// Boxed: failures are rare, and the successful path stays small.
    pub unsent: Option<Box<Request<RequestBody>>>,
}

impl Failed {
    fn sent(error: SendError) -> Self {
        Failed {
            error,
            unsent: None,
        }
    }
}

/// A connection lent to one exchange. [`Lease::checkin`] returns it to its pool once the
/// response body has ended; dropped without that (the client left mid-body, an error),
/// the connection closes, since it may still carry unread bytes.
pub struct Lease {
    /// `None` on HTTP/2: the connection is shared, nothing to give back.
    sender: Option<Sender>,
    pool: Arc<Pool>,
    _busy: Busy,
}

impl Lease {
    pub fn checkin(mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(sender);
        }
    }
}

impl Pool {
    /// `h2`: the target is known to speak HTTP/2 before the first connection (`h2c`, `h2`),
    /// so even the first concurrent requests share one connection.
    /// `max_connections`, `max_pending`: the circuit breaker (HTTP/1.1 connections at
    /// most, requests waiting for one at most).
    pub fn new(
        idle_timeout: Duration,
        h2: bool,
        max_connections: Option<u32>,
        max_pending: u32,
    ) -> Arc<Self> {
        let mut pool = Self::with_cap(idle_timeout, MAX_IDLE_PER_TARGET);
        if let Some(p) = Arc::get_mut(&mut pool) {
            p.speaks_h2 = std::sync::atomic::AtomicBool::new(h2);
            p.max_connections = max_connections.map(|m| m as usize);
            p.max_pending = max_pending as usize;
        }
        pool
    }

    /// Count a request in flight to this target until the guard (or its lease) drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn with_cap(idle_timeout: Duration, max_idle: usize) -> Arc<Self> {
        Arc::new(Pool {
            idle: Mutex::new(VecDeque::new()),
            idle_timeout,
            max_idle,
            sweeper: Once::new(),
            h2: Mutex::new(None),
            speaks_h2: std::sync::atomic::AtomicBool::new(false),
            h2_connecting: tokio::sync::Mutex::new(()),
            open: Arc::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max_connections: None,
            max_pending: 0,
            pending: std::sync::atomic::AtomicUsize::new(0),
            opening: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Connections open to this target now: (HTTP/1.1, HTTP/2).
    pub fn open_connections(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.open.http1.load(Relaxed), self.open.h2.load(Relaxed))
    }

    /// The shared HTTP/2 connection, if one is open.
    fn h2(&self) -> Option<H2Sender> {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        match &*h2 {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *h2 = None;
                None
            }
            None => None,
        }
    }

    fn set_h2(&self, sender: H2Sender) {
        self.speaks_h2
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
    }

    /// Idle connections held now.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // Every critical section is a push, a pop or a drain: a panic cannot leave the
        // deque half-changed, so a poisoned lock is still consistent.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest idle connection that is still open and not idle for longer than
    /// `idle_timeout` at `now`; the others met on the way are closed.
    fn take(&self, now: Instant) -> Option<Sender> {
        let mut idle = self.lock();
        while let Some(i) = idle.pop_back() {
            if !i.sender.is_closed() && now.duration_since(i.since) <= self.idle_timeout {
                return Some(i.sender);
            }
        }
        None
    }

    /// Return a connection after its exchange. One that hyper has not yet made ready
    /// again (the last bytes of a response still being processed) is waited for by a
    /// task, at most `idle_timeout`.
    fn put(self: &Arc<Self>, mut sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            self.put_ready(sender, Instant::now());
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(self);
        let wait = self.idle_timeout;
        rt.spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await
                && let Some(pool) = pool.upgrade()
            {
                pool.put_ready(sender, Instant::now());
            }
        });
    }

    fn put_ready(self: &Arc<Self>, sender: Sender, now: Instant) {
        {
            let mut idle = self.lock();
            expire(&mut idle, now, self.idle_timeout);
            if idle.len() >= self.max_idle {
                idle.pop_front();
            }
            idle.push_back(Idle { sender, since: now });
        }
        self.open.freed.notify_one();
        self.start_sweeper();
    }

    /// Close connections idle for longer than `idle_timeout` at `now`.
    pub fn expire(&self, now: Instant) {
        expire(&mut self.lock(), now, self.idle_timeout);
    }

    /// When traffic stops, nothing else would close the idle connections: a task looks
    /// every half `idle_timeout` while the pool exists (it holds it weakly, so a reload
    /// that drops this upstream ends the task).
    fn start_sweeper(self: &Arc<Self>) {
        self.sweeper.call_once(|| {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool: Weak<Pool> = Arc::downgrade(self);
            let every = (self.idle_timeout / 2).max(Duration::from_millis(100));
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match pool.upgrade() {
                        Some(pool) => pool.expire(Instant::now()),
                        None => return,
                    }
                }
            });
        });
    }
}

fn expire(idle: &mut VecDeque<Idle>, now: Instant, idle_timeout: Duration) {
    // Oldest first: stop at the first one still fresh. Closed ones further in are
    // skipped by `take`.
    while idle
        .front()
        .is_some_and(|i| i.sender.is_closed() || now.duration_since(i.since) > idle_timeout)
    {
        idle.pop_front();
    }
}

/// Send `req` to `authority` over the target's HTTP/2 connection, an idle HTTP/1.1 one, or
/// a new one. A request that a pooled connection could not take (the upstream closed it
/// while it idled, so not a byte of the request was written) is sent again over the next
/// one: the same retry hyper-util's client made.
///
/// Also says whether a new TLS connection was made for it (a handshake, for the metric).
pub async fn send(
    pool: &Arc<Pool>,
    target: &Target<'_>,
    connect_timeout: Duration,
    mut req: Request<RequestBody>,
    busy: Busy,
) -> Result<(Response<UpstreamBody>, Lease, bool), Failed> {
    let mut handshake = false;
    let unsent = |error, req| {
        Err(Failed {
            error,
            unsent: Some(Box::new(req)),
        })
    };
    loop {
        if let Some(mut h2) = pool.h2() {
            if h2.ready().await.is_err() {
                continue;
            }
            as_h2(&mut req, target);
            // An error opening the stream comes after `ready`, so from a connection that
            // failed in between: the headers are gone with it, and the request counts as sent.
            let exchange = h2
                .send(req)
                .map_err(|e| Failed::sent(SendError::Exchange(e.into())))?;
            let resp = exchange
                .response()
                .await
                .map_err(|e| Failed::sent(SendError::Exchange(e)))?;
            let lease = Lease {
                sender: None,
                pool: pool.clone(),
                _busy: busy,
            };
            return Ok((resp.map(UpstreamBody::H2), lease, handshake));
        }
        if pool.speaks_h2.load(std::sync::atomic::Ordering::Relaxed) {
            // One connection for all: the first waiter connects, the others then share it.
            let _one = pool.h2_connecting.lock().await;
            if pool.h2().is_none() {
                handshake |= target.tls.is_some();
                match connect(target, connect_timeout, &pool.open).await {
                    Ok(Conn::H2(h2)) => pool.set_h2(h2),
                    Ok(Conn::H1(sender)) => pool.put_ready(sender, Instant::now()),
                    Err(e) => return unsent(e, req),
                }
            }
            continue;
        }
        let (mut sender, pooled) = match pool.take(Instant::now()) {
            Some(sender) => (sender, true),
            None => {
                let _opening = match pool.reserve_connection() {
                    Reserved::Yes(guard) => guard,
                    Reserved::Full => return unsent(SendError::Overloaded, req),
                    Reserved::Wait => {
                        pool.wait_for_connection().await;
                        continue;
                    }
                };
                handshake |= target.tls.is_some();
                match connect(target, connect_timeout, &pool.open).await {
                    Ok(Conn::H1(sender)) => (sender, false),
                    Ok(Conn::H2(h2)) => {
                        pool.set_h2(h2);
                        continue;
                    }
                    Err(e) => return unsent(e, req),
                }
            }
        };
        if let Err(e) = sender.ready().await {
            if pooled {
                continue;
            }
            return unsent(SendError::Exchange(e.into()), req);
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let lease = Lease {
                    sender: Some(sender),
                    pool: pool.clone(),
                    _busy: busy,
                };
                return Ok((resp.map(UpstreamBody::Http1), lease, handshake));
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if pooled => req = unsent,
                // A fresh connection that took not a byte: the request may go elsewhere.
                Some(req) => return unsent(SendError::Exchange(e.into_error().into()), req),
                None => return Err(Failed::sent(SendError::Exchange(e.into_error().into()))),
            },
        }
    }
}

/// Whether a new HTTP/1.1 connection may be opened under `max_connections`.
enum Reserved<'a> {
    Yes(Option<Counted<'a>>),
    /// At the cap: wait for a connection to come back or close.
    Wait,
    /// At the cap, and `max_pending` requests wait already.
    Full,
}

impl Pool {
    fn reserve_connection(&self) -> Reserved<'_> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(max) = self.max_connections else {
            return Reserved::Yes(None);
        };
        let opening = self.opening.fetch_add(1, Relaxed);
        let guard = Counted(&self.opening);
        if self.open.http1.load(Relaxed) + opening < max {
            return Reserved::Yes(Some(guard));
        }
        drop(guard);
        if self.pending.load(Relaxed) >= self.max_pending {
            Reserved::Full
        } else {
            Reserved::Wait
        }
    }

    /// Wait (counted in `max_pending`) until a connection comes back idle or closes.
    async fn wait_for_connection(&self) {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _pending = Counted(&self.pending);
        let freed = self.open.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        // Freed between the check and now: no need to wait.
        if self.lock().is_empty() {
            freed.await;
        }
    }
}

/// Where a request goes: the target's address, how it is reached over TLS, and which HTTP.
pub struct Target<'a> {
    pub authority: &'a Authority,
    pub tls: Option<&'a TlsTo>,
    pub protocol: crate::config::upstream::Protocol,
}

/// An HTTP/1.1-shaped request made fit for HTTP/2: the absolute URI carries `:scheme` and
/// `:authority` (the Host the upstream would have received), and Host itself goes.
fn as_h2(req: &mut Request<RequestBody>, target: &Target<'_>) {
    *req.version_mut() = http::Version::HTTP_2;
    let host = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| target.authority.clone());
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(if target.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority = Some(host);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// A new connection: TCP (an IP literal directly, a name through the system resolver,
/// each address in turn), no Nagle delay, then TLS when the target is `https://` (the whole
/// of it within `timeout`), then HTTP/2 (ALPN chose `h2`, or `h2c`) or HTTP/1.1; its I/O
/// runs in a task that ends when the connection closes.
///
/// Boxed: its TLS handshake state is ~10 KB, needed only when a connection is opened, and
/// held inline it would grow every request's future, which HTTP/2 streams move at spawn.
fn connect<'a>(
    target: &'a Target<'a>,
    timeout: Duration,
    open: &'a Arc<OpenConns>,
) -> std::pin::Pin<Box<impl Future<Output = Result<Conn, SendError>> + Send + 'a>> {
    Box::pin(dial(target, timeout, open))
}

/// [`connect`]'s work, unboxed.
async fn dial(
    target: &Target<'_>,
    timeout: Duration,
    open: &Arc<OpenConns>,
) -> Result<Conn, SendError> {
    use crate::config::upstream::Protocol;
    let deadline = tokio::time::Instant::now() + timeout;
    let authority = target.authority;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>();
    let tcp = async {
        match literal {
            Ok(ip) => TcpStream::connect((ip, port)).await,
            Err(_) => TcpStream::connect((host, port)).await,
        }
    };
    let tcp = match tokio::time::timeout_at(deadline, tcp).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(SendError::Connect(e)),
        Err(_) => {
            return Err(SendError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            )));
        }
    };
    let _ = tcp.set_nodelay(true);
    match target.tls {
        None if target.protocol == Protocol::H2c => handshake_h2(tcp, open).await,
        None => handshake(TokioIo::new(tcp), open).await,
        Some(to) => {
            let connecting = to
                .tls
                .connector
                .connect(to.name.clone(), crate::tls::Socket(tcp));
            match tokio::time::timeout_at(deadline, connecting).await {
                Ok(Ok(stream)) => {
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        handshake_h2(stream, open).await
                    } else {
                        handshake(TokioIo::new(stream), open).await
                    }
                }
                Ok(Err(e)) => Err(SendError::Tls(e)),
                Err(_) => Err(SendError::Tls(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))),
            }
        }
    }
}

async fn handshake_h2<T>(io: T, open: &Arc<OpenConns>) -> Result<Conn, SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, driver) = multiplex::handshake(io)
        .await
        .map_err(|e| SendError::Exchange(e.into()))?;
    let counted = OpenGuard::new(open, true);
    tokio::spawn(async move {
        let _counted = counted;
        driver.await;
    });
    Ok(Conn::H2(sender))
}

async fn handshake<T>(io: T, open: &Arc<OpenConns>) -> Result<Conn, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| SendError::Exchange(e.into()))?;
    let counted = OpenGuard::new(open, false);
    tokio::spawn(async move {
        let _counted = counted;
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Conn::H1(sender))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new HTTP/1.1 connection to `authority`.
    async fn h1(authority: &Authority) -> Sender {
        let target = Target {
            authority,
            tls: None,
            protocol: crate::config::upstream::Protocol::Http1,
        };
        match connect(&target, Duration::from_secs(5), &Arc::default()).await {
            Ok(Conn::H1(s)) => s,
            Ok(Conn::H2(_)) | Err(_) => panic!("no HTTP/1.1 connection to {authority}"),
        }
    }

    /// A real upstream connection: a loopback listener that accepts and keeps the socket.
    async fn sender() -> (Sender, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (_sock, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let authority: Authority = addr.to_string().parse().unwrap();
        let s = h1(&authority).await;
        (s, hold)
    }

    #[tokio::test]
    async fn the_newest_idle_connection_is_taken_first_and_only_once() {
        let pool = Pool::new(Duration::from_secs(60), false, None, 0);
        let now = Instant::now();
        let (a, _ha) = sender().await;
        let (b, _hb) = sender().await;
        pool.put_ready(a, now);
        pool.put_ready(b, now + Duration::from_secs(1));
        assert_eq!(pool.idle_count(), 2);
        let first = pool.take(now + Duration::from_secs(2)).unwrap();
        assert_eq!(pool.idle_count(), 1);
        // `b` was put last; the one left is `a`, whose entry is older.
        assert!(pool.lock().front().is_some_and(|i| i.since == now));
        drop(first);
        assert!(pool.take(now + Duration::from_secs(2)).is_some());
        assert!(pool.take(now + Duration::from_secs(2)).is_none());
    }

    #[tokio::test]
    async fn a_connection_idle_longer_than_idle_timeout_is_never_taken() {
        let pool = Pool::new(Duration::from_secs(90), false, None, 0);
        let now = Instant::now();
        let (a, _ha) = sender().await;
        pool.put_ready(a, now);
        assert!(pool.take(now + Duration::from_secs(91)).is_none());
        assert_eq!(pool.idle_count(), 0, "the expired connection is closed");
    }

    #[tokio::test]
    async fn expire_closes_only_the_connections_past_idle_timeout() {
        let pool = Pool::new(Duration::from_secs(90), false, None, 0);
        let now = Instant::now();
        let (a, _ha) = sender().await;
        let (b, _hb) = sender().await;
        pool.put_ready(a, now);
        pool.put_ready(b, now + Duration::from_secs(60));
        pool.expire(now + Duration::from_secs(100));
        assert_eq!(pool.idle_count(), 1);
        pool.expire(now + Duration::from_secs(151));
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_taken() {
        let pool = Pool::new(Duration::from_secs(60), false, None, 0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let closer = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            drop(sock);
        });
        let s = h1(&authority).await;
        closer.await.unwrap();
        // hyper's connection task sees the close and ends; the sender then reports it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while !s.is_closed() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("hyper notices the close");
        pool.lock().push_back(Idle {
            sender: s,
            since: Instant::now(),
        });
        assert!(pool.take(Instant::now()).is_none());
    }

    #[tokio::test]
    async fn the_oldest_idle_connection_is_closed_beyond_the_cap() {
        let pool = Pool::with_cap(Duration::from_secs(60), 2);
        let now = Instant::now();
        for i in 0..3 {
            let (s, _upstream) = sender().await;
            pool.put_ready(s, now + Duration::from_secs(i));
        }
        let idle = pool.lock();
        let ages: Vec<_> = idle.iter().map(|i| i.since.duration_since(now)).collect();
        assert_eq!(ages, [Duration::from_secs(1), Duration::from_secs(2)]);
    }
}
