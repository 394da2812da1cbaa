//! `GET /status`: what the console shows that no other endpoint served yet: listeners with
//! their certificates' expiry, routes with their counts and latency, refusals by reason, and
//! the last reloads and admin changes. Every figure is read from what the metrics and the
//! generation already hold; nothing is counted twice.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::access::Caller;
use super::history::{AuditRecord, ReloadRecord};
use crate::license::dates::{rfc3339, unix};
use crate::metrics::RouteFigures;
use crate::server::Gateway;

#[derive(Debug, Serialize)]
struct Status {
    /// When these figures were read (RFC 3339): the console's rates divide by its steps.
    time: String,
    /// Milliseconds since the Unix epoch, for rates finer than a second.
    time_ms: u128,
    caller: CallerView,
    listeners: Vec<ListenerView>,
    routes: Vec<RouteView>,
    refusals: Refusals,
    reloads: Vec<ReloadRecord>,
    audit: Vec<AuditRecord>,
}

/// Who the console is signed in as (never how: no token, pin or subject).
#[derive(Debug, Serialize)]
struct CallerView {
    name: Box<str>,
    role: &'static str,
}

#[derive(Debug, Serialize)]
struct ListenerView {
    name: Box<str>,
    address: Option<String>,
    /// The earliest not-after of its server certificates.
    certificate_not_after: String,
    /// Whole days to that, negative once past.
    certificate_days_left: i64,
}

#[derive(Debug, Serialize)]
struct RouteView {
    name: Box<str>,
    listeners: Vec<Box<str>>,
    #[serde(flatten)]
    figures: RouteFigures,
}

#[derive(Debug, Serialize)]
struct Refusals {
    /// Refused requests by denial reason (every route).
    requests: BTreeMap<String, u64>,
    /// Connections closed before HTTP, by reason.
    connections: BTreeMap<String, u64>,
}

/// Whole days from `now` to `until`, negative once past.
fn days_left(until: SystemTime, now: SystemTime) -> i64 {
    let secs = |t: SystemTime| i64::try_from(unix(t)).unwrap_or(i64::MAX);
    (secs(until) - secs(now)).div_euclid(86_400)
}

/// The `/status` body for `caller`.
pub(super) fn view(gateway: &Gateway, caller: &Caller) -> serde_json::Value {
    let shared = gateway.shared();
    let now = shared.clock.now();
    let generation = shared.generation.load();
    let snap = &generation.snapshot;
    let listeners = snap
        .listeners
        .iter()
        .map(|l| ListenerView {
            name: (*l.name).into(),
            address: gateway.local_addr(&l.name).map(|a| a.to_string()),
            certificate_not_after: rfc3339(unix(l.cert_not_after)),
            certificate_days_left: days_left(l.cert_not_after, now),
        })
        .collect();
    let mut figures = shared.metrics.route_figures();
    let mut routes: Vec<RouteView> = Vec::new();
    for l in &snap.listeners {
        for r in l.routes.iter() {
            match routes.iter_mut().find(|v| *v.name == *r.name) {
                Some(v) => v.listeners.push((*l.name).into()),
                None => routes.push(RouteView {
                    name: (*r.name).into(),
                    listeners: vec![(*l.name).into()],
                    figures: figures.remove(&*r.name).unwrap_or_default(),
                }),
            }
        }
    }
    let (requests, connections) = shared.metrics.refusal_figures();
    let history = gateway.history();
    let status = Status {
        time: rfc3339(unix(now)),
        time_ms: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
        caller: CallerView {
            name: caller.name.clone(),
            role: caller.role.label(),
        },
        listeners,
        routes,
        refusals: Refusals {
            requests,
            connections,
        },
        reloads: history.reloads(),
        audit: history.audits(),
    };
    serde_json::to_value(status).unwrap_or_default()
}
