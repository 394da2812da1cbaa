//! `[[upstreams]]`: named upstreams with balancing, health checks, outlier ejection,
//! retries and per-target limits. Routes refer to them by name (`routes.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::file::{FileConfig, TargetEntry, UpstreamSection};
use super::server::duration;
use super::upstream::{
    AllDown, Balance, HashKey, HealthCheck, Outlier, RetryBudget, Transport, UpstreamSettings,
    UpstreamSpec, transport,
};
use crate::report::Report;

/// Every `[[upstreams]]` entry that validates, by name.
pub(super) fn upstreams(
    r: &mut Report,
    file: &FileConfig,
    now: SystemTime,
) -> HashMap<String, UpstreamSpec> {
    let mut out = HashMap::new();
    for (i, s) in file.upstreams.iter().enumerate() {
        let key = format!("upstreams[{i}]");
        let name = super::listener::label_name(r, &key, s.name.as_deref(), "upstream");
        let spec = upstream(r, &key, s, name.as_deref().unwrap_or("?"), now);
        if let (Some(name), Some(spec)) = (name, spec) {
            let name = name.to_string();
            if out.contains_key(&name) {
                r.error(
                    format!("{key}.name"),
                    format!("upstream name \"{name}\" is used twice"),
                );
            }
            out.insert(name, spec);
        }
    }
    out
}

fn upstream(
    r: &mut Report,
    key: &str,
    s: &UpstreamSection,
    name: &str,
    now: SystemTime,
) -> Option<UpstreamSpec> {
    let mut settings = UpstreamSettings::default();
    let mut targets = Vec::new();
    let mut ok = true;
    for (j, t) in s.targets.iter().flatten().enumerate() {
        let (url, weight) = match t {
            TargetEntry::Url(u) => (u.as_str(), 1),
            TargetEntry::Weighted(w) => (w.url.as_str(), w.weight.unwrap_or(1)),
        };
        if !(1..=1000).contains(&weight) {
            r.error(
                format!("{key}.targets[{j}].weight"),
                format!("{weight} is not a weight from 1 to 1000"),
            );
            ok = false;
        }
        targets.push((url, weight, format!("{key}.targets[{j}]")));
    }
    let built = transport(
        r,
        &Transport {
            targets,
            targets_key: format!("{key}.targets"),
            key,
            connect_timeout: &s.connect_timeout,
            response_timeout: &s.response_timeout,
            idle_timeout: &s.idle_timeout,
            upstream_protocol: s.upstream_protocol.as_deref(),
            upstream_tls: s.upstream_tls.as_ref(),
            websocket: false,
        },
        &mut settings,
        now,
    );

    settings.balance = match (s.balance.as_deref(), s.hash_key.as_deref()) {
        (None | Some("least_request"), None) => Balance::LeastRequest,
        (Some("round_robin"), None) => Balance::RoundRobin,
        (Some("hash"), Some(k)) => match hash_key(k) {
            Ok(k) => Balance::Hash(k),
            Err(why) => {
                r.error(format!("{key}.hash_key"), format!("\"{k}\" {why}"));
                ok = false;
                Balance::LeastRequest
            }
        },
        (Some("hash"), None) => {
            r.error(
                format!("{key}.hash_key"),
                "missing: balance = \"hash\" needs the key to hash on (\"client_ip\", \"header:NAME\", \"license\" or \"token_sub\")",
            );
            ok = false;
            Balance::LeastRequest
        }
        (Some("least_request" | "round_robin") | None, Some(_)) => {
            r.error(
                format!("{key}.hash_key"),
                "applies to balance = \"hash\" only",
            );
            ok = false;
            Balance::LeastRequest
        }
        (Some(b), _) => {
            r.error(
                format!("{key}.balance"),
                format!("\"{b}\" is not one of \"least_request\", \"round_robin\", \"hash\""),
            );
            ok = false;
            Balance::LeastRequest
        }
    };

    settings.deadline = duration(r, &format!("{key}.deadline"), &s.deadline);
    if let Some(d) = duration(r, &format!("{key}.body_timeout"), &s.body_timeout) {
        settings.body_timeout = Some(d);
    }
    if let Some(n) = s.retries {
        if n > 10 {
            r.error(
                format!("{key}.retries"),
                format!("{n} is more than 10 extra attempts"),
            );
            ok = false;
        }
        settings.retries = n;
    }
    if let Some(b) = &s.retry_budget {
        let percent = b.percent.unwrap_or(settings.retry_budget.percent);
        if !(1..=100).contains(&percent) {
            r.error(
                format!("{key}.retry_budget.percent"),
                format!(
                    "{percent} is not a percentage from 1 to 100 (retries = 0 turns retries off)"
                ),
            );
            ok = false;
        }
        settings.retry_budget = RetryBudget {
            percent,
            min_retries: b.min_retries.unwrap_or(settings.retry_budget.min_retries),
        };
    }
    match (s.max_connections, s.max_pending) {
        (Some(0), _) => {
            r.error(
                format!("{key}.max_connections"),
                "0 would refuse every request: leave the key out for no cap",
            );
            ok = false;
        }
        (None, Some(_)) => {
            r.error(
                format!("{key}.max_pending"),
                "applies with max_connections only (requests wait for one of its connections)",
            );
            ok = false;
        }
        (max, pending) => {
            settings.max_connections = max;
            settings.max_pending = pending.unwrap_or(settings.max_pending);
        }
    }
    settings.all_down = match s.all_down.as_deref() {
        None | Some("fail") => AllDown::Fail,
        Some("panic") => AllDown::Panic,
        Some(v) => {
            r.error(
                format!("{key}.all_down"),
                format!("\"{v}\" is not \"fail\" or \"panic\""),
            );
            ok = false;
            AllDown::Fail
        }
    };
    if let Some(o) = &s.outlier {
        let d = settings.outlier;
        let base = duration(r, &format!("{key}.outlier.base_ejection"), &o.base_ejection);
        let max = duration(r, &format!("{key}.outlier.max_ejection"), &o.max_ejection);
        let outlier = Outlier {
            consecutive_failures: o.consecutive_failures.unwrap_or(d.consecutive_failures),
            base_ejection: base.unwrap_or(d.base_ejection),
            max_ejection: max.unwrap_or(d.max_ejection),
            max_ejected_percent: o.max_ejected_percent.unwrap_or(d.max_ejected_percent),
        };
        if outlier.consecutive_failures == 0 {
            r.error(
                format!("{key}.outlier.consecutive_failures"),
                "0 would eject on success: write 1 or more",
            );
            ok = false;
        }
        if outlier.max_ejected_percent > 100 {
            r.error(
                format!("{key}.outlier.max_ejected_percent"),
                format!(
                    "{} is not a percentage from 0 to 100",
                    outlier.max_ejected_percent
                ),
            );
            ok = false;
        }
        if outlier.max_ejection < outlier.base_ejection {
            r.error(
                format!("{key}.outlier.max_ejection"),
                "is shorter than base_ejection",
            );
            ok = false;
        }
        settings.outlier = outlier;
    }
    if let Some(h) = &s.health_check {
        settings.health_check = health_check(r, &format!("{key}.health_check"), h);
        ok &= settings.health_check.is_some();
    }
    let (targets, tls) = built?;
    ok.then(|| UpstreamSpec {
        name: Arc::from(name),
        named: true,
        targets,
        settings,
        tls,
    })
}

fn hash_key(k: &str) -> Result<HashKey, &'static str> {
    match k {
        "client_ip" => Ok(HashKey::ClientIp),
        "license" => Ok(HashKey::License),
        "token_sub" => Ok(HashKey::TokenSub),
        _ => match k.strip_prefix("header:") {
            Some(h) => http::HeaderName::from_bytes(h.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| "does not name a header (write e.g. \"header:x-tenant\")"),
            None => Err("is not one of \"client_ip\", \"header:NAME\", \"license\", \"token_sub\""),
        },
    }
}

fn health_check(
    r: &mut Report,
    key: &str,
    s: &super::file::HealthCheckSection,
) -> Option<HealthCheck> {
    let mut ok = true;
    let path = match s.path.as_deref() {
        None => Some(http::uri::PathAndQuery::from_static("/")),
        Some(p) if p.starts_with('/') => http::uri::PathAndQuery::try_from(p).ok(),
        Some(_) => None,
    };
    if path.is_none() {
        r.error(
            format!("{key}.path"),
            "is not an absolute path (write e.g. \"/healthz\")",
        );
    }
    let mut time = |r: &mut Report, field: &str, v: &Option<String>, default: u64| match (
        v,
        duration(r, &format!("{key}.{field}"), v),
    ) {
        (None, _) => Duration::from_secs(default),
        (Some(_), Some(d)) => d,
        (Some(_), None) => {
            ok = false;
            Duration::from_secs(default)
        }
    };
    let interval = time(r, "interval", &s.interval, 5);
    let timeout = time(r, "timeout", &s.timeout, 2);
    for (field, v) in [
        ("healthy_threshold", s.healthy_threshold),
        ("unhealthy_threshold", s.unhealthy_threshold),
    ] {
        if v == Some(0) {
            r.error(format!("{key}.{field}"), "must be 1 or more");
            ok = false;
        }
    }
    let expect_status = s.expect_status.clone().unwrap_or_default();
    for (i, code) in expect_status.iter().enumerate() {
        if !(100..=599).contains(code) {
            r.error(
                format!("{key}.expect_status[{i}]"),
                format!("{code} is not an HTTP status"),
            );
            ok = false;
        }
    }
    Some(HealthCheck {
        path: path?,
        interval,
        timeout,
        healthy_threshold: s.healthy_threshold.unwrap_or(2),
        unhealthy_threshold: s.unhealthy_threshold.unwrap_or(3),
        expect_status,
    })
    .filter(|_| ok)
}
