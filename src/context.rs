//! The typed contexts that flow through the pipeline: one per connection, one per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderValue, Method};

use crate::generation::RouteParts;
use crate::identity::{ClientIdentity, IdentityValues};
use crate::ip_filter::ClientAddr;
use crate::record::AccessLine;
use crate::request_id::RequestId;
use crate::routing::Route;
use crate::token::Claims;

// === ConnContext ===

/// Per connection, fixed once the handshake is done.
#[derive(Debug)]
pub struct ConnContext {
    /// The listener that accepted the connection.
    pub listener: Arc<str>,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Where the connection comes from: the source a PROXY protocol header reported, or
    /// the TCP peer.
    pub origin: SocketAddr,
    /// The origin's address as `X-Forwarded-For` names it, made once: on a connection not
    /// from a trusted proxy it is the whole header, for every request.
    pub origin_value: http::HeaderValue,
    pub local: SocketAddr,
    pub accepted_at: Instant,
    pub tls_version: Option<rustls::ProtocolVersion>,
    /// Negotiated ALPN protocol (`h2` or `http/1.1`), if any.
    pub alpn: Option<Box<[u8]>>,
    /// A trusted balancer's PROXY header said it speaks for itself (v1 `UNKNOWN`, v2
    /// `LOCAL`): the peer is the client, and no forwarding header on this connection is read.
    pub proxy_spoke_for_itself: bool,
    /// SNI the client asked for, if any.
    pub sni: Option<Box<str>>,
    /// The verified client certificate, digested once.
    pub identity: Option<ClientIdentity>,
    /// Its header values for upstreams, made once.
    pub identity_values: Option<IdentityValues>,
    /// What the framing scanner, below hyper, has seen; shared with it.
    pub framing: Arc<crate::framing::scanner::FramingSignals>,
    /// Requests whose response has not been dropped yet (see [`InFlight`]).
    pub in_flight: AtomicU32,
    /// Whether the client takes the responses it asked for (see [`Sending`]).
    pub sending: Sending,
}

/// Responses waiting for the client to take their next bytes, and when a response last
/// handed bytes over: a client that stops reading (or keeps its HTTP/2 window at zero)
/// leaves responses waiting with no progress, which the server bounds (`send_timeout`).
/// A response waiting on its upstream is not waiting for the client.
#[derive(Debug, Default)]
pub struct Sending {
    waiting: AtomicU32,
    /// `clock::mono_at` of the last progress.
    progress_ns: AtomicU64,
}

impl Sending {
    /// How long responses have waited for the client without progress, at `now`; `None`
    /// when none is waiting.
    pub fn stalled_for(&self, now: Instant) -> Option<std::time::Duration> {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let since = self.progress_ns.load(Ordering::Relaxed);
        Some(std::time::Duration::from_nanos(
            crate::clock::mono_at(now).saturating_sub(since),
        ))
    }

    fn progress(&self) {
        self.progress_ns
            .store(crate::clock::mono_at(Instant::now()), Ordering::Relaxed);
    }
}

impl ConnContext {
    /// `origin`'s address as a header value (IPv4-mapped IPv6 addresses as IPv4).
    pub fn origin_value(origin: SocketAddr) -> http::HeaderValue {
        let ip = origin.ip().to_canonical();
        // An address prints as digits, dots, colons and hex: always a valid value.
        http::HeaderValue::from_str(&ip.to_string())
            .unwrap_or(http::HeaderValue::from_static("unknown"))
    }

    /// Whether this connection has sent a request head with ambiguous framing.
    pub fn ambiguous_framing(&self) -> bool {
        self.framing.ambiguous.load(Ordering::Relaxed)
    }

    /// No request is being served and no byte of the next one has arrived: the connection
    /// may drop its HTTP state and wait for the socket alone.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.framing.between_messages.load(Ordering::Relaxed)
    }
}

/// Counts one request as in flight on its connection from the service call until its
/// response body is dropped (sent, or abandoned).
#[derive(Debug)]
pub struct InFlight {
    conn: Arc<ConnContext>,
    /// Whether the client's taking of this response is watched: on HTTP/2 only, the one
    /// protocol whose stalled readers `send_timeout` ends, so HTTP/1 responses do not read
    /// the clock per body frame for nothing.
    watched: bool,
    /// Whether the response is counted in `sending` as waiting for the client.
    waiting: bool,
}

impl InFlight {
    pub fn start(conn: &Arc<ConnContext>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            conn: conn.clone(),
            watched: conn.alpn.as_deref() == Some(b"h2"),
            waiting: false,
        }
    }

    /// The response now waits for the client to take bytes (`true`: its head is ready, or
    /// its body just handed bytes over) or for its upstream (`false`); `true` is progress.
    pub fn waiting_for_client(&mut self, waiting: bool) {
        if !self.watched {
            return;
        }
        let sending = &self.conn.sending;
        if waiting {
            sending.progress();
        }
        if waiting != self.waiting {
            self.waiting = waiting;
            if waiting {
                sending.waiting.fetch_add(1, Ordering::Relaxed);
            } else {
                sending.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.waiting_for_client(false);
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.conn.framing.answered_one();
    }
}

// === Exchange ===

/// One request, from its head to its access-log line: the record every stage fills and the
/// log reads (request id, client as judged, route, license grace, claims, where it went
/// upstream, bytes).
#[derive(Debug)]
pub struct Exchange<'g> {
    pub request_id: RequestId,
    /// The id as a header value, made once: the upstream request and the response share it
    /// (a reference-count increment each, not a copy).
    pub request_id_header: HeaderValue,
    pub started: Instant,
    /// The monotonic clock when the request arrived, in nanoseconds (rate limits read it;
    /// tests set it to move time).
    pub mono_ns: u64,
    pub method: Method,
    /// Path and query as the client sent them (the log keeps the path only).
    pub path: Option<PathAndQuery>,
    /// The client as the IP stage judged it (after trusted forwarding headers).
    pub client: ClientAddr,
    /// The route selected, once routing has run, and its upstream and metric series.
    pub route: Option<(&'g Arc<Route>, &'g RouteParts)>,
    /// The issuer's name, when the gateway's own token issuer answered.
    pub issuer: Option<Arc<str>>,
    /// Admitted on an expired license's grace period.
    pub in_grace: bool,
    /// The machine license that admitted the request, on routes that require one.
    pub license_id: Option<Arc<str>>,
    /// The verified bearer token's claims, on routes that require one.
    pub claims: Option<Arc<Claims>>,
    /// The canonical path and query, when it differs from what the client sent.
    pub canonical_path: Option<PathAndQuery>,
    /// The canonical host the request was routed by, as the upstream's Host header.
    pub host: Option<HeaderValue>,
    /// Index of the route's target the request went to.
    pub target: Option<usize>,
    /// Attempts sent upstream (retries and failovers are the attempts past the first).
    pub attempts: u32,
    /// From the last attempt's send to its response head (or its failure).
    pub upstream_time: Option<std::time::Duration>,
    /// Request body bytes streamed upstream (absent: the request has no body).
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// In-flight slots the limits stage took, held until the response body is done.
    pub slots: Vec<crate::limits::InFlightSlot>,
    /// The request's trace context and, when sampled, its span, with `[tracing]` on
    /// (inline: an unsampled request allocates nothing for its trace).
    pub trace: Option<crate::telemetry::RequestSpan>,
}

impl<'g> Exchange<'g> {
    /// A new exchange for a request arriving on `conn`.
    pub fn new(conn: &ConnContext, method: Method, path: Option<PathAndQuery>) -> Self {
        let request_id = RequestId::next();
        let started = Instant::now();
        Exchange {
            request_id_header: request_id.header_value(),
            request_id,
            started,
            mono_ns: crate::clock::mono_at(started),
            method,
            path,
            client: ClientAddr {
                ip: conn.origin.ip().to_canonical(),
                via_trusted_proxy: false,
                forwarded_header: Default::default(),
            },
            route: None,
            issuer: None,
            in_grace: false,
            license_id: None,
            claims: None,
            canonical_path: None,
            host: None,
            target: None,
            attempts: 0,
            upstream_time: None,
            bytes_in: None,
            slots: Vec::new(),
            trace: None,
        }
    }

    /// The name the metrics and the log know the request by: its route or the issuer.
    pub fn route_name(&self) -> Option<Arc<str>> {
        self.route
            .map(|(r, _)| r.name.clone())
            .or_else(|| self.issuer.clone())
    }

    /// The access-log line, once the response status is known. The request's usage is
    /// counted in `usage` when it has a license or a token client.
    pub fn into_access_line(
        self,
        conn: &Arc<ConnContext>,
        status: u16,
        denial: Option<crate::denial::Denial>,
        usage: &Arc<crate::usage::Usage>,
    ) -> AccessLine {
        let counted = self.license_id.is_some()
            || self.claims.as_ref().is_some_and(|c| c.client_id.is_some());
        AccessLine {
            route: self.route_name(),
            request_id: self.request_id,
            conn: Arc::clone(conn),
            method: self.method,
            path: self.path,
            host: self.host,
            status,
            denial,
            started: self.started,
            client_ip: self.client.ip,
            license_id: self.license_id,
            claims: self.claims,
            target: self.target,
            attempts: self.attempts,
            upstream_time: self.upstream_time,
            bytes_in: self.bytes_in,
            bytes_out: 0,
            grpc_status: None,
            usage: counted.then(|| Arc::clone(usage)),
            trace_id: self.trace.as_ref().map(|t| t.context.trace_id),
        }
    }
}
