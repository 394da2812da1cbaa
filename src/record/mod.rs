//! The last stage: one access-log line per request, written when the response body has
//! been sent (or the client went away), so it can say how many bytes went each way and how
//! long the whole exchange took. Never fails the request. Refused connections (before any
//! request: PROXY header, IP lists, flood limits, the TLS handshake) get a line of their
//! own ([`conn`]).
//!
//! Logged: time, request id, listener, who the caller is (certificate CN and a short SPKI
//! pin, license id, token issuer, subject and client id), host, TLS version and ALPN,
//! route, method, path (never the query string, which may carry secrets), status, denial
//! reason, duration, client ip, upstream (as `route#target-index`, never its internal
//! address), upstream time and retries, bytes in and out. Never headers, bodies, tokens or
//! keys.
//!
//! The same moment counts the request in the usage tables (`usage`), since only then are
//! its bytes known.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method};

use crate::context::ConnContext;
use crate::denial::Denial;
use crate::request_id::RequestId;
use crate::token::Claims;
use crate::usage::{By, Counts, Usage};

pub mod audit;
pub mod conn;
pub mod line;

/// Everything the line needs, carried by the response body until it is done.
#[derive(Debug)]
pub struct AccessLine {
    pub request_id: RequestId,
    /// The connection (listener, TLS, client certificate): a reference, not a copy.
    pub conn: Arc<ConnContext>,
    pub route: Option<Arc<str>>,
    pub method: Method,
    pub path: Option<PathAndQuery>,
    /// The canonical host the request was routed by.
    pub host: Option<HeaderValue>,
    pub status: u16,
    pub denial: Option<Denial>,
    pub started: Instant,
    pub client_ip: IpAddr,
    /// The machine license that admitted the request.
    pub license_id: Option<Arc<str>>,
    /// The verified bearer token's claims.
    pub claims: Option<Arc<Claims>>,
    /// Index of the route's target that served the request.
    pub target: Option<usize>,
    /// Attempts sent upstream.
    pub attempts: u32,
    /// The last attempt's time to its response head.
    pub upstream_time: Option<Duration>,
    /// Request body bytes, counted as they stream upstream (absent: no body).
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub bytes_out: u64,
    /// gRPC: the `grpc-status` of the response, from its headers (a trailers-only answer) or
    /// its trailers.
    pub grpc_status: Option<u16>,
    /// Where the request's usage is counted, when it has a license or a token client.
    pub usage: Option<Arc<Usage>>,
    /// The W3C trace id, with `[tracing]` on.
    pub trace_id: Option<crate::trace_context::TraceId>,
}

impl AccessLine {
    /// Write the line and count the usage. Called once, when the response body is dropped.
    pub fn write(&self) {
        let bytes_in = self
            .bytes_in
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        if let Some(usage) = &self.usage {
            let now = crate::clock::unix_now();
            let counts = Counts::request(self.denial.is_some(), bytes_in, self.bytes_out);
            if let Some(l) = &self.license_id {
                usage.record(By::License, l, now, &counts);
            }
            if let Some(c) = self.claims.as_ref().and_then(|c| c.client_id.as_deref()) {
                usage.record(By::Client, c, now, &counts);
            }
        }
        if !tracing::enabled!(target: "portcullis::access", tracing::Level::INFO) {
            return;
        }
        let identity = self.conn.identity.as_ref();
        let pin = identity.map(|i| ShortPin::of(&i.spki_sha256));
        let claims = self.claims.as_deref();
        line::emit("portcullis::access", |l| {
            l.str("kind", "request");
            l.display("request_id", self.request_id);
            l.str("listener", &self.conn.listener);
            l.str("tls", tls_label(self.conn.tls_version));
            l.str("alpn", alpn_label(self.conn.alpn.as_deref()));
            l.str(
                "host",
                self.host
                    .as_ref()
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("-"),
            );
            l.str("route", self.route.as_deref().unwrap_or("-"));
            l.str("method", self.method.as_str());
            l.str("path", self.path.as_ref().map_or("", |p| p.path()));
            l.num("status", u64::from(self.status));
            l.str("reason", self.denial.map(Denial::reason).unwrap_or("-"));
            l.num("duration_us", self.started.elapsed().as_micros() as u64);
            l.display("client_ip", self.client_ip);
            l.str(
                "subject_cn",
                identity
                    .and_then(|i| i.common_name.as_deref())
                    .unwrap_or("-"),
            );
            l.str("pin", pin.as_ref().map_or("-", ShortPin::as_str));
            l.str("license", self.license_id.as_deref().unwrap_or("-"));
            l.str("token_issuer", claims.map_or("-", |c| &*c.issuer));
            l.str(
                "token_sub",
                claims.and_then(|c| c.sub.as_deref()).unwrap_or("-"),
            );
            l.str(
                "client_id",
                claims.and_then(|c| c.client_id.as_deref()).unwrap_or("-"),
            );
            // A route name is a label (letters, digits, `-`, `_`): no escaping needed.
            l.display("upstream", Upstream(self.route.as_deref(), self.target));
            if let Some(t) = self.upstream_time {
                l.num("upstream_us", t.as_micros() as u64);
            }
            l.num("retries", u64::from(self.attempts.saturating_sub(1)));
            l.num("bytes_in", bytes_in);
            l.num("bytes_out", self.bytes_out);
            l.display("grpc_status", GrpcStatus(self.grpc_status));
            l.display("trace_id", TraceIdOr(self.trace_id));
        });
    }
}

/// `1.2`, `1.3` or `-`.
pub fn tls_label(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        Some(_) => "other",
        None => "-",
    }
}

/// `h2`, `http/1.1` or `-` (no ALPN; the label is never the client's own bytes).
fn alpn_label(alpn: Option<&[u8]>) -> &'static str {
    match alpn {
        Some(b"h2") => "h2",
        Some(b"http/1.1") => "http/1.1",
        Some(_) => "other",
        None => "-",
    }
}

/// The first 12 bytes of an SPKI pin as `sha256/` and 16 base64 characters: a prefix of
/// the pin as configured (`sha256/<44 characters>`), so a log line is found by the pin and
/// the pin by the line, made on the stack.
pub struct ShortPin([u8; 23]);

impl ShortPin {
    pub fn of(spki_sha256: &[u8; 32]) -> ShortPin {
        use base64::Engine as _;
        let mut out = *b"sha256/................";
        // 12 bytes are exactly 16 characters, with no padding; the buffer is that size, so
        // this cannot fail (if it did, the dots stay and the line still says which is which).
        let _ = base64::engine::general_purpose::STANDARD
            .encode_slice(&spki_sha256[..12], &mut out[7..]);
        ShortPin(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII was written.
        std::str::from_utf8(&self.0).unwrap_or("-")
    }
}

/// A gRPC status code, or `-`.
struct GrpcStatus(Option<u16>);

impl std::fmt::Display for GrpcStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("-"),
        }
    }
}

/// The `grpc-status` in `h`, if any (`0` to `16`; anything else is not a status).
pub fn grpc_status(h: &http::HeaderMap) -> Option<u16> {
    // A name made once: `get("grpc-status")` parsed and validated the string per request.
    static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    h.get(&GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
        .filter(|s| *s <= 16)
}

/// A trace id, or `-`.
struct TraceIdOr(Option<crate::trace_context::TraceId>);

impl std::fmt::Display for TraceIdOr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(t) => t.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// `route#target-index`, or `-`.
struct Upstream<'a>(Option<&'a str>, Option<usize>);

impl std::fmt::Display for Upstream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0, self.1) {
            (Some(r), Some(i)) => write!(f, "{r}#{i}"),
            _ => f.write_str("-"),
        }
    }
}

/// Log lines a client can cause in a dependency (rustls warns of every IP-literal SNI and
/// every warning alert; h2 and hyper of protocol errors): at most one line per dependency
/// each [`flood::EVERY_MS`], the rest counted (`portcullis_log_lines_suppressed_total`), so a
/// scanner cannot fill the log.
pub mod flood;
