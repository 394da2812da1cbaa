//! Forwarding: the request goes to one of the route's targets over a pooled keep-alive
//! HTTP/1.1 connection, plain or TLS (verified, optionally pinned and mutual: see
//! `tls/upstream.rs`); both bodies stream, neither is ever held whole.

mod body;
mod headers;
mod pool;
mod tunnel;

pub use tunnel::is_websocket_upgrade;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri, Version, header};

pub use crate::config::upstream::{Protocol, UpstreamSettings, UpstreamSpec};
use crate::tls::upstream::UpstreamTls;
use hyper::body::Incoming;

pub use body::{RequestBody, ResponseBody};
#[cfg(test)]
pub(crate) use headers::write_claims;

use crate::config::Snapshot;
use crate::context::{ConnContext, Exchange};
use crate::denial::Denial;
use crate::metrics::Metrics;
use crate::metrics::UpstreamError;

/// How long a target that refused a connection is skipped.
pub const TARGET_BACKOFF: Duration = Duration::from_secs(5);

// === Upstream ===

/// A route's targets, each with its pool of idle connections.
pub struct Upstream {
    targets: Vec<Target>,
    next: AtomicUsize,
    settings: UpstreamSettings,
    tls: Option<Arc<UpstreamTls>>,
}

struct Target {
    authority: Authority,
    /// How to reach it over TLS: the connector and the name to ask for and verify.
    tls: Option<pool::TlsTo>,
    /// The Host header for requests that arrived without one (HTTP/2 carries it in
    /// `:authority`, which the request line to the upstream cannot).
    host: HeaderValue,
    /// Milliseconds since [`epoch`] until which the target is skipped.
    down_until: AtomicU64,
    pool: Arc<pool::Pool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field(
                "targets",
                &self
                    .targets
                    .iter()
                    .map(|t| t.authority.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("settings", &self.settings)
            .finish()
    }
}

impl Upstream {
    pub fn new(spec: &UpstreamSpec) -> Self {
        let settings = spec.settings;
        Upstream {
            targets: spec
                .targets
                .iter()
                .map(|authority| Target {
                    // An authority is always a valid header value (checked characters).
                    host: HeaderValue::from_str(authority.as_str())
                        .unwrap_or(HeaderValue::from_static("localhost")),
                    tls: spec
                        .tls
                        .as_ref()
                        .and_then(|tls| pool::TlsTo::new(Arc::clone(tls), authority)),
                    authority: authority.clone(),
                    down_until: AtomicU64::new(0),
                    pool: pool::Pool::new(
                        settings.idle_timeout,
                        matches!(settings.protocol, Protocol::H2 | Protocol::H2c),
                    ),
                })
                .collect(),
            next: AtomicUsize::new(0),
            settings,
            tls: spec.tls.clone(),
        }
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// Whether this upstream goes to exactly `targets` with `settings`: a reload then keeps
    /// it, with its pooled connections, instead of starting cold.
    pub fn same_as(&self, spec: &UpstreamSpec) -> bool {
        self.settings == spec.settings
            && self.tls == spec.tls
            && self.targets.len() == spec.targets.len()
            && self
                .targets
                .iter()
                .zip(&spec.targets)
                .all(|(t, a)| t.authority == *a)
    }

    /// Round-robin over targets not in back-off at `now_ms`; when all are, the next one
    /// anyway (it may have come back, and failing fast helps nobody).
    fn pick(&self, now_ms: u64) -> (usize, &Target) {
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let at = (start + i) % n;
            let t = &self.targets[at];
            if t.down_until.load(Ordering::Relaxed) <= now_ms {
                return (at, t);
            }
        }
        (start % n, &self.targets[start % n])
    }
}

/// Monotonic milliseconds since the first call; the clock of target back-off.
fn epoch_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

// === forward ===

/// Send the request to the route's upstream and stream the response back.
/// What happened (target, bytes) goes into the exchange, whatever the outcome.
pub async fn forward(
    x: &mut Exchange<'_>,
    conn: &ConnContext,
    snapshot: &Snapshot,
    metrics: &Metrics,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Denial> {
    let (route, route_parts) = x.route.ok_or(Denial::NoRoute)?;
    let upstream = &route_parts.upstream;
    // Admission already refused an upgrade the route does not allow.
    let client_upgrade =
        (route.websocket && is_websocket_upgrade(&req)).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    let limit = route.max_body_bytes;
    if let Some(max) = limit
        && headers::content_length(&parts.headers).is_some_and(|len| len > max)
    {
        return Err(Denial::PayloadTooLarge);
    }

    headers::strip_hop_by_hop(&mut parts.headers);
    if client_upgrade.is_some() {
        tunnel::mark_upgrade(&mut parts.headers);
    }
    let rewrite = route.rewrite.as_deref();
    // Before the gateway's own headers, which therefore always win.
    if let Some(rw) = rewrite {
        rw.request.apply(&mut parts.headers);
    }
    headers::add_forwarding(&mut parts.headers, x, conn, snapshot);

    let now = epoch_ms();
    let (index, target) = upstream.pick(now);
    x.target = Some(index);
    // Origin form ("/path?query") on the request line, as HTTP/1.1 to a server wants it.
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = match (rewrite, parts.uri.path_and_query()) {
        (Some(rw), Some(pq)) if rw.rewrites_path() => Some(
            crate::rewrite::with_path(&rw.path(pq.path(), &route.path_prefix), pq.query())
                .ok_or(Denial::InvalidPath)?,
        ),
        (_, pq) => pq.cloned(),
    };
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| Denial::InvalidPath)?;
    parts.version = Version::HTTP_11;
    match rewrite.map(|rw| &rw.host) {
        Some(crate::rewrite::HostRewrite::Target) => {
            parts.headers.insert(header::HOST, target.host.clone());
        }
        Some(crate::rewrite::HostRewrite::Fixed(v)) => {
            parts.headers.insert(header::HOST, v.clone());
        }
        Some(crate::rewrite::HostRewrite::Client) | None => {
            if !parts.headers.contains_key(header::HOST) {
                parts.headers.insert(header::HOST, target.host.clone());
            }
        }
    }

    // Counting costs an allocation, so only requests with a body get a counter.
    if !http_body::Body::is_end_stream(&body) {
        x.bytes_in = Some(Arc::new(AtomicU64::new(0)));
    }
    let req = Request::from_parts(parts, RequestBody::new(body, limit, x.bytes_in.clone()));
    let to = pool::Target {
        authority: &target.authority,
        tls: target.tls.as_ref(),
        protocol: upstream.settings.protocol,
    };
    let sent_at = Instant::now();
    let sent = tokio::time::timeout(
        upstream.settings.response_timeout,
        pool::send(&target.pool, &to, upstream.settings.connect_timeout, req),
    );
    let record =
        |outcome| metrics.upstream(&route_parts.series, &route.name, sent_at.elapsed(), outcome);
    let resp = match sent.await {
        Err(_elapsed) => {
            record(Err(UpstreamError::Timeout));
            return Err(Denial::UpstreamTimeout);
        }
        Ok(Ok(sent)) => {
            record(Ok(()));
            if sent.2 {
                metrics.upstream_tls_handshake(&route.name);
            }
            (sent.0, sent.1)
        }
        Ok(Err(pool::SendError::Tls(e))) => {
            record(Err(UpstreamError::Tls));
            let reason = crate::tls::upstream::failure_reason(&e);
            metrics.upstream_tls_failure(&route.name, reason);
            target
                .down_until
                .store(now + TARGET_BACKOFF.as_millis() as u64, Ordering::Relaxed);
            // The reason goes to the log and the metric, never to the client.
            tracing::warn!(route = &*route.name, request_id = %x.request_id, reason, error = %e, "TLS to the upstream failed; skipping the target for {}s", TARGET_BACKOFF.as_secs());
            return Err(Denial::UpstreamTlsFailed);
        }
        Ok(Err(pool::SendError::Connect(e))) => {
            record(Err(UpstreamError::Connect));
            target
                .down_until
                .store(now + TARGET_BACKOFF.as_millis() as u64, Ordering::Relaxed);
            tracing::warn!(route = &*route.name, request_id = %x.request_id, error_kind = ?e.kind(), "upstream target refused the connection; skipping it for {}s", TARGET_BACKOFF.as_secs());
            return Err(Denial::UpstreamUnavailable);
        }
        Ok(Err(pool::SendError::Exchange(e))) => {
            if body::is_too_large(&e) {
                return Err(Denial::PayloadTooLarge);
            }
            // The client's body broke (bad chunk, ended early): its fault, not the
            // upstream's, so neither the upstream's error count nor its alert moves.
            if body::is_client_body_error(&e) {
                tracing::debug!(route = &*route.name, request_id = %x.request_id, "client request body malformed or cut short");
                return Err(Denial::BadRequestBody);
            }
            if let Some(reason) = crate::tls::upstream::failure_in(&e) {
                record(Err(UpstreamError::Tls));
                metrics.upstream_tls_failure(&route.name, reason);
                tracing::warn!(route = &*route.name, request_id = %x.request_id, reason, error = %e, "the upstream ended the TLS session (it refused the gateway's certificate?)");
                return Err(Denial::UpstreamTlsFailed);
            }
            record(Err(UpstreamError::Exchange));
            tracing::warn!(route = &*route.name, request_id = %x.request_id, error = %e, "upstream exchange failed");
            return Err(Denial::UpstreamUnavailable);
        }
    };

    let (mut resp, lease) = resp;
    if let Some(client) = client_upgrade
        && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
    {
        // The upstream's connection becomes the tunnel: it never goes back to the pool.
        drop(lease);
        let upstream_side = hyper::upgrade::on(&mut resp);
        tunnel::spawn(
            client,
            upstream_side,
            upstream.settings.idle_timeout,
            route.name.clone(),
        );
        let (mut parts, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        tunnel::mark_upgrade(&mut parts.headers);
        parts
            .headers
            .insert(crate::request_id::X_REQUEST_ID, x.request_id_header.clone());
        return Ok(Response::from_parts(
            parts,
            ResponseBody::from(bytes::Bytes::new()),
        ));
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(rw) = rewrite {
        rw.response.apply(&mut parts.headers);
    }
    parts
        .headers
        .insert(crate::request_id::X_REQUEST_ID, x.request_id_header.clone());
    Ok(Response::from_parts(
        parts,
        ResponseBody::upstream(body, lease),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_targets_in_backoff_until_it_ends() {
        let up = Upstream::new(&UpstreamSpec {
            targets: vec![Authority::from_static("a:1"), Authority::from_static("b:1")],
            settings: UpstreamSettings::default(),
            tls: None,
        });
        up.targets[0].down_until.store(1_000, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(up.pick(500).1.authority.as_str(), "b:1");
        }
        let seen: std::collections::HashSet<_> = (0..4)
            .map(|_| up.pick(1_000).1.authority.as_str().to_owned())
            .collect();
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn when_every_target_is_in_backoff_one_is_still_tried() {
        let up = Upstream::new(&UpstreamSpec {
            targets: vec![Authority::from_static("a:1")],
            settings: UpstreamSettings::default(),
            tls: None,
        });
        up.targets[0].down_until.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(up.pick(0).1.authority.as_str(), "a:1");
    }
}
