//! The bounded label sets (methods, status classes, upstream failures) and a route's
//! series, resolved once per route and generation.

use std::sync::OnceLock;

use http::{Method, StatusCode};
use prometheus::{Histogram, IntCounter};

/// How an upstream exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Connect,
    Tls,
    Timeout,
    Exchange,
}

impl UpstreamError {
    pub(super) fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Tls => "tls",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Exchange => "exchange",
        }
    }
}

/// The HTTP/2 error codes (RFC 9113 7) as labels, in code order; a code outside the list
/// (an extension) is "other".
pub(super) const H2_REASONS: [&str; 15] = [
    "no_error",
    "protocol_error",
    "internal_error",
    "flow_control_error",
    "settings_timeout",
    "stream_closed",
    "frame_size_error",
    "refused_stream",
    "cancel",
    "compression_error",
    "connect_error",
    "enhance_your_calm",
    "inadequate_security",
    "http_1_1_required",
    "other",
];

/// An HTTP/2 error code as a bounded label.
pub(super) fn h2_reason_label(reason: h2::Reason) -> &'static str {
    let code = usize::try_from(u32::from(reason)).unwrap_or(usize::MAX);
    H2_REASONS[code.min(H2_REASONS.len() - 1)]
}

pub(super) const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];
pub(super) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A method as a bounded label (an index into [`METHODS`]): the standard ones by name,
/// anything else "OTHER".
pub(super) fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// A status's class, as an index into [`CLASSES`].
pub(super) fn class_index(s: StatusCode) -> usize {
    match s.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// One route's series, resolved on the route's first request and kept with the route
/// (so until the next reload), instead of hashing the route name into three label lookups
/// on every request. A request counter per method and status class is created on first
/// use, as `with_label_values` did, so /metrics shows only series that counted something.
#[derive(Default)]
pub struct RouteSeries(pub(super) OnceLock<Resolved>);

pub(super) struct Resolved {
    pub(super) duration: Histogram,
    pub(super) upstream: Histogram,
    pub(super) requests: [[OnceLock<IntCounter>; CLASSES.len()]; METHODS.len()],
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteSeries")
    }
}
