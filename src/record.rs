//! The last stage: one access-log line per request, written when the response body has
//! been sent (or the client went away), so it can say how many bytes went each way and how
//! long the whole exchange took. Never fails the request.
//!
//! Logged: time, request id, listener, route, method, path (never the query string, which
//! may carry secrets), status, denial reason, duration, client ip, upstream (as
//! `route#target-index`, never its internal address), bytes in and out. Never headers,
//! bodies, tokens or keys.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::Method;
use http::uri::PathAndQuery;

use crate::denial::Denial;
use crate::request_id::RequestId;

/// Everything the line needs, carried by the response body until it is done.
#[derive(Debug)]
pub struct AccessLine {
    pub request_id: RequestId,
    pub listener: Arc<str>,
    pub route: Option<Arc<str>>,
    pub method: Method,
    pub path: Option<PathAndQuery>,
    pub status: u16,
    pub denial: Option<Denial>,
    pub started: Instant,
    pub client_ip: IpAddr,
    /// Index of the route's target that served the request.
    pub target: Option<usize>,
    /// Request body bytes, counted as they stream upstream (absent: no body).
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub bytes_out: u64,
    /// gRPC: the `grpc-status` of the response, from its headers (a trailers-only answer) or
    /// its trailers.
    pub grpc_status: Option<u16>,
    /// The W3C trace id, with `[tracing]` on.
    pub trace_id: Option<crate::trace_context::TraceId>,
}

impl AccessLine {
    /// Write the line. Called once, when the response body is dropped.
    pub fn write(&self) {
        // Formatted only if the line is written (access logging may be off).
        let upstream = Upstream(self.route.as_deref(), self.target);
        tracing::info!(
            target: "portcullis::access",
            request_id = %self.request_id,
            listener = &*self.listener,
            route = self.route.as_deref().unwrap_or("-"),
            method = self.method.as_str(),
            path = self.path.as_ref().map_or("", |p| p.path()),
            status = self.status,
            reason = self.denial.map(Denial::reason).unwrap_or("-"),
            duration_us = self.started.elapsed().as_micros() as u64,
            client_ip = %self.client_ip,
            upstream = %upstream,
            bytes_in = self.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed)),
            bytes_out = self.bytes_out,
            grpc_status = %GrpcStatus(self.grpc_status),
            trace_id = %TraceIdOr(self.trace_id),
        );
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
    h.get("grpc-status")?
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
pub mod flood {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The dependencies whose lines are limited, by the first part of their log target.
    pub const SOURCES: [&str; 3] = ["rustls", "h2", "hyper"];
    /// At most one line per source per minute.
    pub const EVERY_MS: u64 = 60_000;

    static LAST_MS: [AtomicU64; SOURCES.len()] = [const { AtomicU64::new(0) }; SOURCES.len()];
    static SUPPRESSED: [AtomicU64; SOURCES.len()] = [const { AtomicU64::new(0) }; SOURCES.len()];

    /// Whether a line from `target` may be written at `now_ms` (milliseconds on any clock
    /// that does not go back; 0 is never "now"). Lines from other targets always may.
    pub fn admit(target: &str, now_ms: u64) -> bool {
        let root = target.split("::").next().unwrap_or(target);
        let Some(i) = SOURCES.iter().position(|s| *s == root) else {
            return true;
        };
        let last = LAST_MS[i].load(Ordering::Relaxed);
        if (last == 0 || now_ms.saturating_sub(last) >= EVERY_MS)
            && LAST_MS[i]
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return true;
        }
        SUPPRESSED[i].fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Lines suppressed so far, per source.
    pub fn suppressed() -> impl Iterator<Item = (&'static str, u64)> {
        SOURCES
            .iter()
            .zip(SUPPRESSED.iter())
            .map(|(s, n)| (*s, n.load(Ordering::Relaxed)))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn one_line_per_source_per_interval_and_the_rest_counted() {
            let before: u64 = suppressed().find(|(s, _)| *s == "h2").map_or(0, |(_, n)| n);
            let t = 1_000_000;
            assert!(admit("h2::proto::connection", t));
            assert!(!admit("h2::codec", t + 1));
            assert!(!admit("h2", t + EVERY_MS - 1));
            assert!(
                admit("h2::codec", t + EVERY_MS),
                "the next interval writes one again"
            );
            assert!(
                admit("portcullis::access", t + 2),
                "our own lines are never limited"
            );
            let after: u64 = suppressed().find(|(s, _)| *s == "h2").map_or(0, |(_, n)| n);
            assert_eq!(after - before, 2);
        }
    }
}
