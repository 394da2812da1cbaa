//! The typed contexts that flow through the pipeline: one per connection, one per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use http::HeaderValue;

use crate::identity::{ClientIdentity, IdentityHeaders, IdentityValues};
use crate::ip_filter::ClientAddr;
use crate::routing::Route;
use crate::token::{ClaimHeaders, Claims};

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
}

impl ConnContext {
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
pub struct InFlight(Arc<ConnContext>);

impl InFlight {
    pub fn start(conn: &Arc<ConnContext>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === RequestContext ===

/// Per request, built from the outputs of the stages so far.
#[derive(Debug)]
pub struct RequestContext<'a> {
    pub request_id: &'a crate::request_id::RequestId,
    /// The id as a header value, made once: the upstream request and the response share it
    /// (a reference-count increment each, not a copy).
    pub request_id_header: HeaderValue,
    pub conn: &'a ConnContext,
    pub client: ClientAddr,
    pub route: &'a Arc<Route>,
    /// The route's upstream and metric series.
    pub parts: &'a crate::generation::RouteParts,
    /// The canonical host the request was routed by, as the upstream's Host header.
    pub host: Option<HeaderValue>,
    /// What happens to client header names with `_`.
    pub underscores_in_headers: crate::framing::UnderscoreHeaders,
    pub identity_headers: &'a IdentityHeaders,
    /// The verified bearer token's claims, on routes that require one.
    pub claims: Option<Arc<Claims>>,
    pub claim_headers: &'a ClaimHeaders,
    pub metrics: &'a crate::metrics::Metrics,
}
