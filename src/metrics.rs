//! Prometheus metrics. The registry is passed in, never global, so tests and embedders
//! each get their own. Every label takes values from a closed set (denial reasons,
//! refusal reasons, route names from config, status classes): never an address,
//! subject, token or anything else a client controls.

use std::time::SystemTime;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::config::Snapshot;

use crate::denial::Denial;

/// Why a connection was closed before any HTTP was spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// `max_connections` reached.
    Limit,
    /// The listener's deny or allow list refused the connection's origin.
    IpNotAllowed,
    /// A PROXY header from an untrusted peer, a missing or malformed one, or a timeout.
    ProxyProtocol,
    /// The TLS handshake failed or timed out.
    Handshake,
}

impl ConnRefusal {
    pub const ALL: [ConnRefusal; 4] = [
        ConnRefusal::Limit,
        ConnRefusal::IpNotAllowed,
        ConnRefusal::ProxyProtocol,
        ConnRefusal::Handshake,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnRefusal::Limit => "connection_limit",
            ConnRefusal::IpNotAllowed => "ip_not_allowed",
            ConnRefusal::ProxyProtocol => "proxy_protocol",
            ConnRefusal::Handshake => "tls_handshake",
        }
    }
}

/// The gateway's metrics.
pub struct Metrics {
    pub registry: Registry,
    denials: IntCounterVec,
    refused: IntCounterVec,
    pub open_connections: IntGauge,
    reloads: IntCounterVec,
    last_reload: IntGauge,
    cert_expiry: IntGaugeVec,
    license_grace: prometheus::IntCounter,
    licenses_active: IntGauge,
    licenses_expiring: IntGauge,
    licenses_in_grace: IntGauge,
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
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
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
        // Every series exists from the start, so a rate() over a never-seen reason is 0, not absent.
        for d in Denial::ALL {
            denials.with_label_values(&[d.reason()]);
        }
        for r in ConnRefusal::ALL {
            refused.with_label_values(&[r.label()]);
        }
        Ok(Metrics {
            registry,
            denials,
            refused,
            open_connections,
            reloads,
            last_reload,
            cert_expiry,
            license_grace,
            licenses_active,
            licenses_expiring,
            licenses_in_grace,
        })
    }

    pub fn denial(&self, d: Denial) {
        self.denials.with_label_values(&[d.reason()]).inc();
    }

    pub fn refused(&self, r: ConnRefusal) {
        self.refused.with_label_values(&[r.label()]).inc();
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
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
