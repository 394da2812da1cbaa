//! Forwarding: the request goes to one of the route's targets over a pooled keep-alive
//! HTTP/1.1 connection, plain or TLS (verified, optionally pinned and mutual: see
//! `tls/upstream.rs`); both bodies stream, neither is ever held whole.

mod arena;
mod balance;
mod body;
mod headers;
pub mod health;
mod multiplex;
pub mod oauth2;
mod pool;
mod retry;
mod target;
mod tunnel;

pub use tunnel::is_websocket_upgrade;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::{Request, Response, Uri, Version, header};

use crate::config::upstream::{AllDown, Balance, HashKey};
pub use crate::config::upstream::{Protocol, UpstreamSettings, UpstreamSpec};
use crate::tls::upstream::UpstreamTls;
use hyper::body::Incoming;

pub use body::{RequestBody, ResponseBody};
pub use headers::ClientScrub;
#[cfg(test)]
pub(crate) use headers::write_claims;
pub use target::Target;

use crate::config::Snapshot;
use crate::context::{ConnContext, Exchange};
use crate::denial::Denial;
use crate::metrics::Metrics;
use crate::metrics::{UpstreamError, UpstreamEvent};
use crate::telemetry::Attempt;

// === Upstream ===

/// An upstream's targets, each with its pool and health, and how requests are spread over
/// them and retried.
pub struct Upstream {
    name: Arc<str>,
    targets: Vec<Target>,
    /// Weighted round-robin order (round_robin only).
    schedule: Vec<u16>,
    cursor: AtomicUsize,
    settings: UpstreamSettings,
    tls: Option<Arc<UpstreamTls>>,
    budget: retry::Budget,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
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
    /// The running upstream of `spec`. A target at an address `previous` also had keeps
    /// what it learnt there (health, ejection), so a reload neither forgets a dead target
    /// nor starts a live one cold.
    pub fn new(spec: &UpstreamSpec, previous: Option<&Upstream>) -> Self {
        let settings = &spec.settings;
        let h2 = matches!(settings.protocol, Protocol::H2 | Protocol::H2c);
        let targets: Vec<Target> = spec
            .targets
            .iter()
            .map(|t| {
                let target = Target::new(
                    t.authority.clone(),
                    t.weight,
                    spec.tls
                        .as_ref()
                        .and_then(|tls| pool::TlsTo::new(Arc::clone(tls), &t.authority)),
                    pool::Pool::new(
                        settings.idle_timeout,
                        h2,
                        settings.max_connections,
                        settings.max_pending,
                    ),
                );
                if let Some(old) =
                    previous.and_then(|p| p.targets.iter().find(|o| o.authority == t.authority))
                {
                    target.inherit(old);
                }
                target
            })
            .collect();
        let schedule = match settings.balance {
            Balance::RoundRobin => {
                balance::schedule(&targets.iter().map(|t| t.weight).collect::<Vec<_>>())
            }
            _ => Vec::new(),
        };
        Upstream {
            name: spec.name.clone(),
            targets,
            schedule,
            cursor: AtomicUsize::new(0),
            settings: settings.clone(),
            tls: spec.tls.clone(),
            budget: retry::Budget::default(),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// Connections open now to all targets: (HTTP/1.1, HTTP/2).
    pub fn open_connections(&self) -> (usize, usize) {
        self.targets.iter().fold((0, 0), |(a, b), t| {
            let (h1, h2) = t.pool.open_connections();
            (a + h1, b + h2)
        })
    }

    /// Whether this upstream is exactly `spec`: a reload then keeps it, with its pooled
    /// connections and its health checks, instead of starting cold.
    pub fn same_as(&self, spec: &UpstreamSpec) -> bool {
        self.name == spec.name
            && self.settings == spec.settings
            && self.tls == spec.tls
            && self.targets.len() == spec.targets.len()
            && self
                .targets
                .iter()
                .zip(&spec.targets)
                .all(|(t, s)| t.authority == s.authority && t.weight == s.weight)
    }

    /// The target for an attempt at `now`: an available one not in `tried` (bit i: target
    /// i). A retry never goes back to a target that failed it; `None` then means no
    /// target is left. When no target at all is available, `all_down` decides: none (fail),
    /// or any untried one (panic).
    pub fn choose(&self, key: Option<u64>, tried: u64, now: u64) -> Option<usize> {
        balance::Picker {
            targets: &self.targets,
            balance: &self.settings.balance,
            schedule: &self.schedule,
            cursor: &self.cursor,
        }
        .pick(key, self.candidates(tried, now))
    }

    /// Whether a retry would find a target: [`Upstream::choose`]'s candidates, without
    /// moving the round-robin cursor or drawing.
    fn has_target_left(&self, tried: u64, now: u64) -> bool {
        (0..self.targets.len()).any(self.candidates(tried, now))
    }

    /// The targets an attempt may go to: available ones not in `tried`, or, when none at
    /// all is available and `all_down = "panic"`, any not in `tried`.
    fn candidates(&self, tried: u64, now: u64) -> impl Fn(usize) -> bool + '_ {
        let panic = self.settings.all_down == AllDown::Panic
            && !self.targets.iter().any(|t| t.available(now));
        move |i| {
            let fresh = i >= 64 || tried & (1 << i) == 0;
            fresh && (panic || self.targets[i].available(now))
        }
    }

    /// The operator's view (`GET /upstreams`).
    pub fn view(&self) -> serde_json::Value {
        let now = epoch_ms();
        serde_json::json!({
            "name": &*self.name,
            "balance": self.settings.balance.label(),
            "health_check": self.settings.health_check.as_ref().map(|h| h.path.as_str()),
            "targets": self.targets.iter().map(|t| {
                let (h1, h2) = t.pool.open_connections();
                serde_json::json!({
                    "address": t.authority.as_str(),
                    "weight": t.weight,
                    "healthy": t.healthy(),
                    "ejected": t.ejected(now),
                    "ejected_for_ms": t.ejected_for(now),
                    "ejections": t.stats.ejections.load(Ordering::Relaxed),
                    "overloaded": t.stats.overloaded.load(Ordering::Relaxed),
                    "in_flight": t.in_flight(),
                    "connections_open": h1 + h2,
                })
            }).collect::<Vec<_>>(),
        })
    }

    /// The request's hash key, hashed (`balance = "hash"` only).
    fn key(&self, x: &Exchange<'_>, headers: &http::HeaderMap) -> Option<u64> {
        let Balance::Hash(key) = &self.settings.balance else {
            return None;
        };
        let bytes: &[u8] = match key {
            HashKey::ClientIp => {
                return Some(match x.client.ip {
                    std::net::IpAddr::V4(v4) => balance::hash_bytes(&v4.octets()),
                    std::net::IpAddr::V6(v6) => balance::hash_bytes(&v6.octets()),
                });
            }
            HashKey::Header(name) => headers.get(name)?.as_bytes(),
            HashKey::License => x.license_id.as_deref()?.as_bytes(),
            HashKey::TokenSub => x.claims.as_ref()?.sub.as_deref()?.as_bytes(),
        };
        Some(balance::hash_bytes(bytes))
    }
}

/// Monotonic milliseconds since the first call: the clock of ejections and retry budgets.
pub fn epoch_ms() -> u64 {
    epoch_ms_at(Instant::now())
}

/// [`epoch_ms`] at `at`, for a caller that has read the clock already.
fn epoch_ms_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    at.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_millis() as u64
}

// === forward ===

/// The Host an attempt sends, when it depends on the target.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HostRule {
    /// The request's own (client's, or a fixed rewrite): the same for every attempt.
    Kept,
    /// The target's `host:port`: set per attempt.
    Target,
}

/// Send the request to the route's upstream and stream the response back, failing over to
/// another target when an attempt fails in a way that is safe to repeat.
/// What happened (target, bytes) goes into the exchange, whatever the outcome.
pub async fn forward(
    x: &mut Exchange<'_>,
    conn: &ConnContext,
    (snapshot, scrub): (&Snapshot, &ClientScrub),
    metrics: &Metrics,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Denial> {
    let (route, route_parts) = x.route.ok_or(Denial::NoRoute)?;
    let upstream = &route_parts.upstream;
    let settings = &upstream.settings;
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
    let credential = route.credential.as_deref();
    if let Some(c) = credential {
        c.apply(&mut parts.headers);
    }
    let token = route_parts.token.as_deref();
    let credentials_unavailable = |e: oauth2::GrantError| {
        // The reason goes to the log, never to the client; the record's name only.
        tracing::warn!(route = &*route.name, request_id = %x.request_id, credential = credential.map_or("", |c| &*c.record), error = %e, "no upstream credential: the OAuth2 grant failed");
        Denial::UpstreamCredentialsUnavailable
    };
    let mut bearer = match token {
        Some(t) => Some(
            t.bearer(x.mono_ns, metrics)
                .await
                .map_err(credentials_unavailable)?,
        ),
        None => None,
    };
    headers::add_forwarding(&mut parts.headers, x, conn, snapshot, scrub);

    // Origin form ("/path?query") on the request line, as HTTP/1.1 to a server wants it.
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = match (rewrite, parts.uri.path_and_query()) {
        (Some(rw), Some(pq)) if rw.rewrites_path() => Some(
            crate::routing::rewrite::with_path(&rw.path(pq.path(), &route.path_prefix), pq.query())
                .ok_or(Denial::InvalidPath)?,
        ),
        (_, pq) => pq.cloned(),
    };
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Some(pq) = &uri.path_and_query
        && let Some(query) = credential.and_then(|c| c.query(pq.query()))
    {
        uri.path_and_query = Some(
            crate::routing::rewrite::with_path(pq.path(), Some(&query))
                .ok_or(Denial::InvalidPath)?,
        );
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| Denial::InvalidPath)?;
    parts.version = Version::HTTP_11;
    let host_rule = match rewrite.map(|rw| &rw.host) {
        Some(crate::routing::rewrite::HostRewrite::Target) => HostRule::Target,
        Some(crate::routing::rewrite::HostRewrite::Fixed(v)) => {
            parts.headers.insert(header::HOST, v.clone());
            HostRule::Kept
        }
        Some(crate::routing::rewrite::HostRewrite::Client) | None => {
            if parts.headers.contains_key(header::HOST) {
                HostRule::Kept
            } else {
                HostRule::Target
            }
        }
    };
    let key = upstream.key(x, &parts.headers);

    // Counting costs an allocation, so only requests with a body get a counter.
    let has_body = !http_body::Body::is_end_stream(&body);
    if has_body {
        x.bytes_in = Some(Arc::new(AtomicU64::new(0)));
    }
    // A request that may be sent again once it reached a target: no body to replay, a
    // method whose effect a repeat cannot double (or a route that says it may), no upgrade.
    // Its head is copied before the first attempt; nothing else is.
    // With one target there is nowhere to retry to, and no copy is made.
    let replayable = !has_body && client_upgrade.is_none();
    let retryable = replayable
        && settings.retries > 0
        && upstream.targets.len() > 1
        && (retry::idempotent(&parts.method) || route.retry_non_idempotent);
    // An OAuth2 token the upstream refuses (401) is renewed and the request sent once more:
    // a refused request had no effect, whatever its method.
    let replay = (retryable || (replayable && token.is_some())).then(|| Head::of(&parts));
    let mut reauthorized = false;
    let mut next = Some(Request::from_parts(
        parts,
        RequestBody::new(body, limit, x.bytes_in.clone()),
    ));

    // The clock is read once per attempt (the first one's reading also starts the
    // deadline): each read is a vDSO call, and one request used to make six here.
    let start = Instant::now();
    let mut first = Some(start);
    let deadline = settings.deadline.map(|d| start + d);
    upstream.budget.request(epoch_ms_at(start));
    let mut tried = 0u64;
    let mut retries = 0u32;
    loop {
        let sent_at = first.take().unwrap_or_else(Instant::now);
        let now = epoch_ms_at(sent_at);
        let Some(index) = upstream.choose(key, tried, now) else {
            return Err(Denial::NoHealthyUpstream);
        };
        tried |= 1u64.checked_shl(index as u32).unwrap_or(0);
        x.target = Some(index);
        x.attempts += 1;
        let target = &upstream.targets[index];
        let Some(mut req) = next.take().or_else(|| replay.as_ref().map(Head::request)) else {
            return Err(Denial::UpstreamUnavailable);
        };
        if host_rule == HostRule::Target {
            req.headers_mut().insert(header::HOST, target.host.clone());
        }
        if let Some(b) = &bearer {
            req.headers_mut()
                .insert(header::AUTHORIZATION, b.value.clone());
        }
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(sent_at) {
                Some(left) if !left.is_zero() => left.min(settings.response_timeout),
                _ => return Err(Denial::UpstreamTimeout),
            },
            None => settings.response_timeout,
        };
        let to = pool::Target {
            authority: &target.authority,
            tls: target.tls.as_ref(),
            protocol: settings.protocol,
        };
        let busy = target.pool.busy();
        // `timeout_at`: `timeout` would read the clock again for the same instant.
        let sent = tokio::time::timeout_at(
            tokio::time::Instant::from_std(sent_at + wait),
            pool::send(&target.pool, &to, settings.connect_timeout, req, busy),
        )
        .await;
        let took = sent_at.elapsed();
        x.upstream_time = Some(took);
        let record = |outcome| metrics.upstream(&route_parts.series, &route.name, took, outcome);
        let outlier = |failed: bool| {
            let outcome = if failed {
                target::Outcome::Failure
            } else {
                target::Outcome::Success
            };
            if target::record(&upstream.targets, index, outcome, &settings.outlier, now) {
                metrics.upstream_ejection(&upstream.name, target.authority.as_str());
                tracing::warn!(
                    upstream = &*upstream.name,
                    target = target.authority.as_str(),
                    "target ejected after consecutive failures"
                );
            }
        };
        // A retry once the request reached a target: only a replayable one, within the
        // retry count and the upstream's budget.
        let left = |tried: u64| upstream.has_target_left(tried, epoch_ms());
        let mut may_retry = || {
            if !retryable || retries >= settings.retries || !left(tried) {
                return false;
            }
            if !upstream
                .budget
                .take_retry(settings.retry_budget, epoch_ms())
            {
                metrics.upstream_event(&upstream.name, UpstreamEvent::BudgetExhausted);
                return false;
            }
            retries += 1;
            metrics.upstream_event(&upstream.name, UpstreamEvent::Retry);
            true
        };
        let denial = match sent {
            Err(_elapsed) => {
                traced(&mut x.trace, &route.name, index, sent_at, Attempt::Timeout);
                record(Err(UpstreamError::Timeout));
                outlier(true);
                tracing::warn!(route = &*route.name, request_id = %x.request_id, target = index, "no response head in time");
                if may_retry() {
                    continue;
                }
                return Err(Denial::UpstreamTimeout);
            }
            Ok(Ok((resp, lease, handshake))) => {
                if handshake {
                    metrics.upstream_tls_handshake(&route.name);
                }
                let status = resp.status();
                let outcome = Attempt::Status(status.as_u16());
                traced(&mut x.trace, &route.name, index, sent_at, outcome);
                outlier(status.is_server_error());
                if status == http::StatusCode::UNAUTHORIZED
                    && let (Some(t), Some(spent)) = (token, bearer.as_ref().map(|b| b.serial))
                {
                    if replay.is_some() && !reauthorized {
                        // Once: a fresh token, and the same target may take it again.
                        reauthorized = true;
                        drop((resp, lease));
                        record(Ok(()));
                        bearer = Some(
                            t.after_refusal(spent, x.mono_ns, metrics)
                                .await
                                .map_err(credentials_unavailable)?,
                        );
                        tried &= !1u64.checked_shl(index as u32).unwrap_or(0);
                        continue;
                    }
                    t.forget(spent);
                }
                if matches!(status.as_u16(), 502..=504) && may_retry() {
                    record(Err(UpstreamError::Exchange));
                    continue;
                }
                record(Ok(()));
                return Ok(respond(
                    x,
                    upstream,
                    route,
                    rewrite,
                    client_upgrade,
                    resp,
                    lease,
                ));
            }
            Ok(Err(pool::Failed { error, unsent })) => {
                let outcome = match &error {
                    pool::SendError::Overloaded => Attempt::Overloaded,
                    pool::SendError::Tls(_) => Attempt::Tls,
                    pool::SendError::Connect(_) => Attempt::Connect,
                    pool::SendError::Exchange(_) => Attempt::Exchange,
                };
                traced(&mut x.trace, &route.name, index, sent_at, outcome);
                let denial = match error {
                    pool::SendError::Overloaded => {
                        target.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                        metrics.upstream_event(&upstream.name, UpstreamEvent::Overloaded);
                        Denial::UpstreamOverloaded
                    }
                    pool::SendError::Tls(e) => {
                        record(Err(UpstreamError::Tls));
                        outlier(true);
                        let reason = crate::tls::upstream::failure_reason(&e);
                        metrics.upstream_tls_failure(&route.name, reason);
                        // The reason goes to the log and the metric, never to the client.
                        tracing::warn!(route = &*route.name, request_id = %x.request_id, target = index, reason, error = %e, "TLS to the upstream failed");
                        Denial::UpstreamTlsFailed
                    }
                    pool::SendError::Connect(e) => {
                        record(Err(UpstreamError::Connect));
                        outlier(true);
                        tracing::warn!(route = &*route.name, request_id = %x.request_id, target = index, error_kind = ?e.kind(), "upstream target refused the connection");
                        Denial::UpstreamUnavailable
                    }
                    pool::SendError::Exchange(e) => {
                        if body::is_too_large(&e) {
                            return Err(Denial::PayloadTooLarge);
                        }
                        // The client's body broke (bad chunk, ended early): its fault, not
                        // the upstream's, so neither the upstream's error count nor its
                        // alert moves, and nothing is retried.
                        if body::is_client_body_error(&e) {
                            tracing::debug!(route = &*route.name, request_id = %x.request_id, "client request body malformed or cut short");
                            return Err(Denial::BadRequestBody);
                        }
                        outlier(true);
                        if let Some(reason) = crate::tls::upstream::failure_in(&e) {
                            record(Err(UpstreamError::Tls));
                            metrics.upstream_tls_failure(&route.name, reason);
                            tracing::warn!(route = &*route.name, request_id = %x.request_id, reason, error = %e, "the upstream ended the TLS session (it refused the gateway's certificate?)");
                            Denial::UpstreamTlsFailed
                        } else {
                            record(Err(UpstreamError::Exchange));
                            tracing::warn!(route = &*route.name, request_id = %x.request_id, target = index, error = %e, "upstream exchange failed");
                            Denial::UpstreamUnavailable
                        }
                    }
                };
                match unsent {
                    // Not a byte reached the target: another one may take it, whatever
                    // the method, each target once.
                    Some(req) if left(tried) => {
                        metrics.upstream_event(&upstream.name, UpstreamEvent::Failover);
                        next = Some(*req);
                        continue;
                    }
                    Some(_) => denial,
                    None if may_retry() => continue,
                    None => denial,
                }
            }
        };
        return Err(denial);
    }
}

/// One attempt, as an event of the request's span (with `[tracing]` on).
fn traced(
    trace: &mut Option<crate::telemetry::RequestSpan>,
    route: &str,
    index: usize,
    sent_at: Instant,
    outcome: Attempt,
) {
    if let Some(t) = trace {
        t.attempt(route, index, sent_at, outcome);
    }
}

/// What a retry needs of a request without a body: its head.
struct Head {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Head {
    fn of(parts: &http::request::Parts) -> Self {
        Head {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }

    fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// The upstream's response on its way to the client: a 101 becomes a tunnel; otherwise
/// hop-by-hop headers go, the route's response rewrites apply, and the body streams.
fn respond(
    x: &Exchange<'_>,
    upstream: &Upstream,
    route: &crate::routing::Route,
    rewrite: Option<&crate::routing::rewrite::Rewrite>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    mut resp: Response<body::UpstreamBody>,
    lease: pool::Lease,
) -> Response<ResponseBody> {
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
        return Response::from_parts(parts, ResponseBody::from(bytes::Bytes::new()));
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(rw) = rewrite {
        rw.response.apply(&mut parts.headers);
    }
    parts
        .headers
        .insert(crate::request_id::X_REQUEST_ID, x.request_id_header.clone());
    Response::from_parts(
        parts,
        ResponseBody::upstream(body, lease, upstream.settings.body_timeout),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::upstream::TargetSpec;
    use http::uri::Authority;
    use std::time::Duration;

    fn spec(n: usize, all_down: AllDown) -> UpstreamSpec {
        UpstreamSpec {
            name: Arc::from("app"),
            named: true,
            targets: (0..n)
                .map(|i| TargetSpec {
                    authority: Authority::try_from(format!("t{i}:1")).unwrap(),
                    weight: 1,
                })
                .collect(),
            settings: UpstreamSettings {
                all_down,
                balance: Balance::RoundRobin,
                ..UpstreamSettings::default()
            },
            tls: None,
        }
    }

    fn fail_until_ejected(up: &Upstream, i: usize) {
        for _ in 0..up.settings.outlier.consecutive_failures {
            target::record(
                &up.targets,
                i,
                target::Outcome::Failure,
                &up.settings.outlier,
                0,
            );
        }
    }

    #[test]
    fn an_ejected_target_gets_no_traffic_until_its_ejection_ends() {
        let up = Upstream::new(&spec(2, AllDown::Fail), None);
        fail_until_ejected(&up, 0);
        for _ in 0..4 {
            assert_eq!(up.choose(None, 0, 1), Some(1));
        }
        let after = up.settings.outlier.base_ejection.as_millis() as u64;
        let seen: std::collections::HashSet<_> =
            (0..4).map(|_| up.choose(None, 0, after)).collect();
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_retry_goes_to_a_target_not_yet_tried() {
        let up = Upstream::new(&spec(3, AllDown::Fail), None);
        for _ in 0..6 {
            let first = up.choose(None, 0, 0).unwrap();
            let second = up.choose(None, 1 << first, 0).unwrap();
            assert_ne!(first, second);
        }
    }

    #[test]
    fn with_every_target_down_fail_refuses_and_panic_tries_one_anyway() {
        let check = crate::config::upstream::HealthCheck {
            path: http::uri::PathAndQuery::from_static("/"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            expect_status: vec![],
        };
        for (all_down, expect_some) in [(AllDown::Fail, false), (AllDown::Panic, true)] {
            let up = Upstream::new(&spec(2, all_down), None);
            for t in &up.targets {
                t.check_result(false, &check);
            }
            assert_eq!(up.choose(None, 0, 0).is_some(), expect_some);
        }
    }

    #[test]
    fn a_reload_keeps_what_was_learnt_about_a_target_at_the_same_address() {
        let old = Upstream::new(&spec(2, AllDown::Fail), None);
        fail_until_ejected(&old, 1);
        let new = Upstream::new(&spec(3, AllDown::Fail), Some(&old));
        assert!(new.targets[1].ejected(1));
        assert!(!new.targets[2].ejected(1));
    }
}
