//! The last stage: one access-log line per request. Never fails the request.
//!
//! Logged: id, listener, route, method, path (never the query string, which may carry
//! secrets), status, denial reason, duration and the peer address. Never headers.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::context::{ConnContext, RequestId};
use crate::denial::Denial;

/// What happened to one request.
pub struct Outcome<'a> {
    pub request_id: &'a RequestId,
    pub conn: &'a ConnContext,
    pub route: Option<&'a str>,
    pub method: &'a Method,
    pub path: &'a str,
    pub status: StatusCode,
    pub denial: Option<Denial>,
    pub elapsed: Duration,
}

pub fn request(o: &Outcome<'_>) {
    tracing::info!(
        target: "portcullis::access",
        request_id = %o.request_id,
        listener = &*o.conn.listener,
        route = o.route.unwrap_or("-"),
        method = o.method.as_str(),
        path = o.path,
        status = o.status.as_u16(),
        reason = o.denial.map(Denial::reason).unwrap_or("-"),
        duration_us = o.elapsed.as_micros() as u64,
        peer = %o.conn.peer.ip(),
    );
}
