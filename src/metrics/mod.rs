//! Prometheus metrics. The registry is passed in, never global, so tests and embedders
//! each get their own. Every label takes values from a closed set (denial reasons,
//! refusal reasons, route names from config, status classes): never an address,
//! subject, token or anything else a client controls.

use std::time::SystemTime;

use std::sync::Mutex;
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::config::Snapshot;

use crate::denial::Denial;
pub use crate::denial::{ConnRefusal, HandshakeFailure};
pub use figures::{Latency, RouteFigures};
pub use labels::{RouteSeries, UpstreamError};

use labels::{CLASSES, H2_REASONS, METHODS, Resolved, class_index, h2_reason_label, method_index};

mod figures;
mod issuer;
mod labels;
mod logs;
mod state;

/// The gateway's metrics.
pub struct Metrics {
    pub registry: Registry,
    denials: IntCounterVec,
    /// Limit refusals by route and key kind (the reason is in `denials`).
    limited: IntCounterVec,
    refused: IntCounterVec,
    pub open_connections: IntGauge,
    /// HTTP/1.1 connections idle with their HTTP state released.
    pub parked_connections: IntGauge,
    reloads: IntCounterVec,
    last_reload: IntGauge,
    cert_expiry: IntGaugeVec,
    license_grace: prometheus::IntCounter,
    licenses_active: IntGauge,
    licenses_expiring: IntGauge,
    licenses_in_grace: IntGauge,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    /// New TLS connections to upstreams, by route's upstream.
    upstream_tls_handshakes: IntCounterVec,
    /// Failed TLS handshakes with upstreams, by route's upstream and bounded reason.
    upstream_tls_failures: IntCounterVec,
    credential_grants: IntCounterVec,
    /// Connections open to each route's upstream, by protocol (set at scrape time).
    upstream_connections: prometheus::IntGaugeVec,
    /// Retries, failovers, budget refusals and overload refusals, by upstream and event.
    upstream_events: [IntCounterVec; 4],
    upstream_ejections: IntCounterVec,
    /// 1 while a target passes its health checks (set at scrape time).
    upstream_target_healthy: prometheus::IntGaugeVec,
    handshakes: IntCounterVec,
    handshake_failures: IntCounterVec,
    /// HTTP/2 connections the gateway ended with a GOAWAY for a fault, by error code.
    h2_goaways: IntCounterVec,
    /// Admin API requests by role (`none`: unauthenticated) and result.
    admin_requests: IntCounterVec,
    /// What machine enrollment did, by event.
    enrollment_events: IntCounterVec,
    /// Audit entries the audit file did not take (each is still in the log).
    audit_failures: IntCounter,
    token_cache: IntCounterVec,
    tokens_cached: IntGauge,
    /// The token cache counts it has already folded in, per verifier (reset on reload).
    token_cache_seen: Mutex<(usize, u64, u64)>,
    /// The shared store's series, read from the store when scraped.
    state: std::sync::Arc<state::StateCollector>,
    /// The token endpoint's counts, read from the issuer in force when scraped.
    issuer: std::sync::Arc<issuer::IssuerCollector>,
    /// Usage per license and per token client (`GET /usage`), counted by the access line.
    pub usage: std::sync::Arc<crate::usage::Usage>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Register every metric in `registry`.
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let denials = IntCounterVec::new(
            Opts::new("portcullis_denials_total", "Requests refused, by reason."),
            &["reason"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "portcullis_connections_refused_total",
                "Connections closed before HTTP, by reason.",
            ),
            &["reason"],
        )?;
        let open_connections =
            IntGauge::new("portcullis_open_connections", "Open client connections.")?;
        registry.register(Box::new(denials.clone()))?;
        let limited = IntCounterVec::new(
            Opts::new(
                "portcullis_limited_total",
                "Requests refused by a rate limit, quota or in-flight cap, by route, key kind and reason.",
            ),
            &["route", "key", "reason"],
        )?;
        registry.register(Box::new(limited.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        let parked_connections = IntGauge::new(
            "portcullis_parked_connections",
            "Idle HTTP/1.1 connections whose HTTP buffers are released (release_idle_after).",
        )?;
        registry.register(Box::new(parked_connections.clone()))?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_config_reloads_total",
                "Config reloads, by result.",
            ),
            &["result"],
        )?;
        let last_reload = IntGauge::new(
            "portcullis_config_last_success_timestamp_seconds",
            "When the config in force was loaded (unix seconds).",
        )?;
        let cert_expiry = IntGaugeVec::new(
            Opts::new(
                "portcullis_certificate_expiry_timestamp_seconds",
                "Earliest not-after of a listener's server certificates (unix seconds).",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_reload.clone()))?;
        registry.register(Box::new(cert_expiry.clone()))?;
        for r in ["success", "failure"] {
            reloads.with_label_values(&[r]);
        }
        let license_grace = prometheus::IntCounter::new(
            "portcullis_license_grace_requests_total",
            "Requests let through on an expired license's grace period.",
        )?;
        let licenses_active = IntGauge::new("portcullis_licenses_active", "Licenses valid now.")?;
        let licenses_expiring = IntGauge::new(
            "portcullis_licenses_expiring_7d",
            "Licenses valid now that expire within 7 days.",
        )?;
        let licenses_in_grace = IntGauge::new(
            "portcullis_licenses_in_grace",
            "Expired licenses still within the grace period.",
        )?;
        registry.register(Box::new(license_grace.clone()))?;
        registry.register(Box::new(licenses_active.clone()))?;
        registry.register(Box::new(licenses_expiring.clone()))?;
        registry.register(Box::new(licenses_in_grace.clone()))?;
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests, by route, method and status class.",
            ),
            &["route", "method", "class"],
        )?;
        // Buckets from 250 µs (a cached policy decision) to 30 s (a slow upstream).
        let buckets = vec![
            0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            5.0, 10.0, 30.0,
        ];
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time to the response head, by route.",
            )
            .buckets(buckets.clone()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_upstream_duration_seconds",
                "Time from sending to the upstream's response head, by route's upstream.",
            )
            .buckets(buckets),
            &["upstream"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_errors_total",
                "Failed upstream exchanges, by route's upstream and kind.",
            ),
            &["upstream", "kind"],
        )?;
        let upstream_tls_handshakes = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_tls_handshakes_total",
                "TLS connections made to upstreams (each pooled and reused), by route's upstream.",
            ),
            &["upstream"],
        )?;
        let upstream_tls_failures = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_tls_failures_total",
                "Failed TLS handshakes with upstreams, by route's upstream and reason.",
            ),
            &["upstream", "reason"],
        )?;
        let credential_grants = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_credential_grants_total",
                "OAuth2 client credentials grants the gateway ran for injected credentials, by vault record and outcome (ok, failed).",
            ),
            &["credential", "outcome"],
        )?;
        let upstream_connections = prometheus::IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_connections_open",
                "Connections open to each route's upstream (idle, busy or shared), by protocol (http1, h2).",
            ),
            &["upstream", "protocol"],
        )?;
        let event =
            |e: UpstreamEvent| IntCounterVec::new(Opts::new(e.metric(), e.help()), &["upstream"]);
        let upstream_events = [
            event(UpstreamEvent::Retry)?,
            event(UpstreamEvent::Failover)?,
            event(UpstreamEvent::BudgetExhausted)?,
            event(UpstreamEvent::Overloaded)?,
        ];
        let upstream_ejections = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_ejections_total",
                "Targets ejected after consecutive failures, by upstream and target.",
            ),
            &["upstream", "target"],
        )?;
        let upstream_target_healthy = prometheus::IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_target_healthy",
                "1 while a target passes its health checks (always 1 without checks), by upstream and target.",
            ),
            &["upstream", "target"],
        )?;
        let handshakes = IntCounterVec::new(
            Opts::new(
                "portcullis_tls_handshakes_total",
                "TLS handshakes, by version and result.",
            ),
            &["version", "result"],
        )?;
        let handshake_failures = IntCounterVec::new(
            Opts::new(
                "portcullis_tls_handshake_failures_total",
                "Failed TLS handshakes, by reason.",
            ),
            &["reason"],
        )?;
        let h2_goaways = IntCounterVec::new(
            Opts::new(
                "portcullis_h2_goaway_total",
                "HTTP/2 connections the gateway ended with a GOAWAY for the client's fault (a flood, a protocol error, a stalled reader), by error code.",
            ),
            &["reason"],
        )?;
        let admin_requests = IntCounterVec::new(
            Opts::new(
                "portcullis_admin_requests_total",
                "Admin API requests, by the caller's role (none: not authenticated) and result (allowed, forbidden, unauthorized).",
            ),
            &["role", "result"],
        )?;
        let enrollment_events = IntCounterVec::new(
            Opts::new(
                "portcullis_enrollment_events_total",
                "What machine enrollment did, by event: token_made, enrolled, reenrolled, token_refused, reenroll_refused, csr_refused, failed, machine_revoked.",
            ),
            &["event"],
        )?;
        let audit_failures = IntCounter::new(
            "portcullis_audit_write_failures_total",
            "Audit entries the audit_log file could not take (each is still written to the log).",
        )?;
        registry.register(Box::new(audit_failures.clone()))?;
        let token_cache = IntCounterVec::new(
            Opts::new(
                "portcullis_token_cache_lookups_total",
                "Verified-token cache lookups, by result.",
            ),
            &["result"],
        )?;
        let tokens_cached = IntGauge::new(
            "portcullis_token_cache_entries",
            "Verified tokens in the cache.",
        )?;
        for m in [
            &requests,
            &upstream_errors,
            &upstream_tls_handshakes,
            &upstream_tls_failures,
            &credential_grants,
            &handshakes,
            &handshake_failures,
            &h2_goaways,
            &admin_requests,
            &enrollment_events,
            &token_cache,
        ] {
            registry.register(Box::new(m.clone()))?;
        }
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(tokens_cached.clone()))?;
        registry.register(Box::new(upstream_connections.clone()))?;
        registry.register(Box::new(upstream_ejections.clone()))?;
        registry.register(Box::new(upstream_target_healthy.clone()))?;
        for m in &upstream_events {
            registry.register(Box::new(m.clone()))?;
        }
        for f in HandshakeFailure::ALL.iter().copied() {
            handshake_failures.with_label_values(&[f.label()]);
        }
        for r in H2_REASONS {
            h2_goaways.with_label_values(&[r]);
        }
        for r in ["hit", "miss"] {
            token_cache.with_label_values(&[r]);
        }
        // Every series exists from the start, so a rate() over a never-seen reason is 0, not absent.
        for d in Denial::all() {
            denials.with_label_values(&[d.reason()]);
        }
        for r in ConnRefusal::ALL.iter().copied() {
            refused.with_label_values(&[r.label()]);
        }
        let state = std::sync::Arc::new(state::StateCollector::new()?);
        registry.register(Box::new(SharedCollector(std::sync::Arc::clone(&state))))?;
        registry.register(Box::new(logs::LogFloodCollector::new()?))?;
        let issuer = std::sync::Arc::new(issuer::IssuerCollector::new()?);
        registry.register(Box::new(SharedCollector(std::sync::Arc::clone(&issuer))))?;
        Ok(Metrics {
            registry,
            denials,
            limited,
            refused,
            open_connections,
            parked_connections,
            reloads,
            last_reload,
            cert_expiry,
            license_grace,
            licenses_active,
            licenses_expiring,
            licenses_in_grace,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            upstream_tls_handshakes,
            upstream_tls_failures,
            credential_grants,
            upstream_connections,
            upstream_events,
            upstream_ejections,
            upstream_target_healthy,
            handshakes,
            handshake_failures,
            h2_goaways,
            admin_requests,
            enrollment_events,
            audit_failures,
            token_cache,
            tokens_cached,
            token_cache_seen: Mutex::new((0, 0, 0)),
            state,
            issuer,
            usage: std::sync::Arc::new(crate::usage::Usage::new()),
        })
    }

    /// The shared store the generation in force uses (`None`: the embedded one), read at
    /// scrape time.
    pub fn set_state_store(&self, store: Option<&std::sync::Arc<crate::state::redis::RedisStore>>) {
        self.state.set(store);
    }

    pub fn denial(&self, d: Denial) {
        self.denials.with_label_values(&[d.reason()]).inc();
    }

    /// A limit refusal on `route` (a configured name), by key kind.
    pub fn limited(&self, route: &str, d: Denial) {
        let kind = match d {
            Denial::RateLimited(hit) | Denial::QuotaExhausted(hit) => hit.kind,
            Denial::TooManyInFlight(hit) => hit.kind,
            _ => return,
        };
        self.limited
            .with_label_values(&[route, kind.label(), d.reason()])
            .inc();
    }

    pub fn refused(&self, r: ConnRefusal) {
        self.refused.with_label_values(&[r.label()]).inc();
    }

    /// One finished request not sent to a route's upstream, counted under `route`: "-"
    /// when none matched, or the token issuer's name.
    pub fn request(&self, route: &str, method: &Method, status: StatusCode, elapsed: Duration) {
        let (m, c) = (method_index(method), class_index(status));
        self.requests
            .with_label_values(&[route, METHODS[m], CLASSES[c]])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    fn resolve<'s>(&self, series: &'s RouteSeries, route: &str) -> &'s Resolved {
        series.0.get_or_init(|| Resolved {
            duration: self.request_duration.with_label_values(&[route]),
            upstream: self.upstream_duration.with_label_values(&[route]),
            requests: Default::default(),
        })
    }

    /// One finished request of `route`, whose series are `series`.
    pub fn route_request(
        &self,
        series: &RouteSeries,
        route: &str,
        method: &Method,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let r = self.resolve(series, route);
        let (m, c) = (method_index(method), class_index(status));
        r.requests[m][c]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[route, METHODS[m], CLASSES[c]])
            })
            .inc();
        r.duration.observe(elapsed.as_secs_f64());
    }

    /// One upstream exchange of `route`'s upstream.
    pub fn upstream(
        &self,
        series: &RouteSeries,
        route: &str,
        elapsed: Duration,
        outcome: Result<(), UpstreamError>,
    ) {
        match outcome {
            Ok(()) => self
                .resolve(series, route)
                .upstream
                .observe(elapsed.as_secs_f64()),
            // Rare: looked up by label.
            Err(e) => self
                .upstream_errors
                .with_label_values(&[route, e.label()])
                .inc(),
        }
    }

    /// A new TLS connection to `route`'s upstream.
    pub fn upstream_tls_handshake(&self, route: &str) {
        self.upstream_tls_handshakes
            .with_label_values(&[route])
            .inc();
    }

    /// The connections open now to each route's upstream: (route, HTTP/1.1, HTTP/2). Routes
    /// a reload removed disappear from the series.
    pub fn set_upstream_connections<'a>(
        &self,
        counts: impl Iterator<Item = (&'a str, usize, usize)>,
    ) {
        self.upstream_connections.reset();
        for (route, http1, h2) in counts {
            for (protocol, n) in [("http1", http1), ("h2", h2)] {
                self.upstream_connections
                    .with_label_values(&[route, protocol])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Something the resilience machinery did for (or refused to do for) a request.
    pub fn upstream_event(&self, upstream: &str, event: UpstreamEvent) {
        self.upstream_events[event as usize]
            .with_label_values(&[upstream])
            .inc();
    }

    /// A target ejected by outlier detection.
    pub fn upstream_ejection(&self, upstream: &str, target: &str) {
        self.upstream_ejections
            .with_label_values(&[upstream, target])
            .inc();
    }

    /// Each target's health now: (upstream, target, healthy). Targets a reload removed
    /// disappear from the series.
    pub fn set_target_health<'a>(&self, targets: impl Iterator<Item = (&'a str, &'a str, bool)>) {
        self.upstream_target_healthy.reset();
        for (upstream, target, healthy) in targets {
            self.upstream_target_healthy
                .with_label_values(&[upstream, target])
                .set(i64::from(healthy));
        }
    }

    /// A failed TLS handshake with `route`'s upstream; `reason` is one of
    /// `tls::upstream::FAILURE_REASONS`.
    pub fn upstream_tls_failure(&self, route: &str, reason: &'static str) {
        self.upstream_tls_failures
            .with_label_values(&[route, reason])
            .inc();
    }

    /// An OAuth2 grant for the vault record `credential` (its name, never its value).
    pub fn credential_grant(&self, credential: &str, ok: bool) {
        self.credential_grants
            .with_label_values(&[credential, if ok { "ok" } else { "failed" }])
            .inc();
    }

    pub fn handshake_ok(&self, version: Option<rustls::ProtocolVersion>) {
        let v = match version {
            Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
            _ => "other",
        };
        self.handshakes.with_label_values(&[v, "ok"]).inc();
    }

    pub fn handshake_failed(&self, why: HandshakeFailure) {
        self.handshakes
            .with_label_values(&["unknown", "failed"])
            .inc();
        self.handshake_failures
            .with_label_values(&[why.label()])
            .inc();
    }

    /// The gateway ended an HTTP/2 connection with a GOAWAY carrying `reason`.
    pub fn h2_goaway(&self, reason: h2::Reason) {
        self.h2_goaways
            .with_label_values(&[h2_reason_label(reason)])
            .inc();
    }

    pub fn h2_goaway_count(&self, reason: h2::Reason) -> u64 {
        self.h2_goaways
            .with_label_values(&[h2_reason_label(reason)])
            .get()
    }

    /// An admin API request by a caller of `role` (`"none"` before authentication) ended
    /// in `result`.
    pub fn admin_request(&self, role: &str, result: &'static str) {
        self.admin_requests.with_label_values(&[role, result]).inc();
    }

    /// Machine enrollment did `event` (a fixed label: never a machine name).
    pub fn enrollment(&self, event: &'static str) {
        self.enrollment_events.with_label_values(&[event]).inc();
    }

    /// The audit file did not take an entry.
    pub fn audit_failed(&self) {
        self.audit_failures.inc();
    }

    /// Fold the verifier's cache counts into the counters (at scrape time, and before a
    /// reload replaces the verifier, so no count is lost).
    pub fn fold_token_cache(&self, verifier: &crate::token::TokenVerifier) {
        let (hits, misses) = verifier.cache_stats();
        let id = verifier as *const _ as usize;
        let Ok(mut seen) = self.token_cache_seen.lock() else {
            return;
        };
        let (dh, dm) = if seen.0 == id {
            (hits.saturating_sub(seen.1), misses.saturating_sub(seen.2))
        } else {
            (hits, misses)
        };
        self.token_cache.with_label_values(&["hit"]).inc_by(dh);
        self.token_cache.with_label_values(&["miss"]).inc_by(dm);
        *seen = (id, hits, misses);
        self.tokens_cached.set(verifier.cached_tokens() as i64);
    }

    pub fn license_grace(&self) {
        self.license_grace.inc();
    }

    /// License gauges, computed when scraped (cheap next to a scrape interval, and never on
    /// the request path).
    pub fn set_license_counts(&self, c: Option<crate::license::LicenseCounts>) {
        let c = c.unwrap_or_default();
        self.licenses_active.set(c.active as i64);
        self.licenses_expiring.set(c.expiring_within_7_days as i64);
        self.licenses_in_grace.set(c.in_grace as i64);
    }

    /// A reload attempt and its result.
    pub fn reload(&self, ok: bool, _now: SystemTime) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    pub fn reload_count(&self, ok: bool) -> u64 {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .get()
    }

    /// A config is in force from `now`: its timestamp and its certificates' expiry.
    /// Listener names come from the config, a bounded set.
    pub fn config_loaded(&self, s: &Snapshot, now: SystemTime) {
        self.last_reload.set(unix(now));
        self.cert_expiry.reset();
        for l in &s.listeners {
            self.cert_expiry
                .with_label_values(&[&*l.name])
                .set(unix(l.cert_not_after));
        }
    }

    /// The value of the denial counter for `d` (tests, admin).
    pub fn denial_count(&self, d: Denial) -> u64 {
        self.denials.with_label_values(&[d.reason()]).get()
    }

    pub fn refused_count(&self, r: ConnRefusal) -> u64 {
        self.refused.with_label_values(&[r.label()]).get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// The issuer's token endpoint whose counts the next scrape reads (`None`: no issuer).
    pub fn set_issuer(&self, issuer: Option<&crate::issuer::Issuer>) {
        self.issuer.set(issuer.map(crate::issuer::Issuer::events));
    }
}

/// The registry owns its collectors; this lends it one that `Metrics` also keeps (to tell
/// it, at scrape time or on reload, what to read).
struct SharedCollector<C>(std::sync::Arc<C>);

impl<C: prometheus::core::Collector> prometheus::core::Collector for SharedCollector<C> {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

/// What the upstream machinery counts per upstream (each its own counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamEvent {
    /// A request sent again after it reached a target (timeout, reset, 502/503/504).
    Retry = 0,
    /// A request that reached no target sent to another one.
    Failover = 1,
    /// A retry the retry budget refused.
    BudgetExhausted = 2,
    /// A request refused by `max_connections` + `max_pending`.
    Overloaded = 3,
}

impl UpstreamEvent {
    fn metric(self) -> &'static str {
        match self {
            UpstreamEvent::Retry => "portcullis_upstream_retries_total",
            UpstreamEvent::Failover => "portcullis_upstream_failovers_total",
            UpstreamEvent::BudgetExhausted => "portcullis_upstream_retry_budget_exhausted_total",
            UpstreamEvent::Overloaded => "portcullis_upstream_overloaded_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            UpstreamEvent::Retry => "Requests sent again after they reached a target, by upstream.",
            UpstreamEvent::Failover => {
                "Requests that reached no target sent to another, by upstream."
            }
            UpstreamEvent::BudgetExhausted => "Retries refused by the retry budget, by upstream.",
            UpstreamEvent::Overloaded => {
                "Requests refused by max_connections and max_pending, by upstream."
            }
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
