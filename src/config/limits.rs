//! `[limits]` and each route's `limits`: keys, rates, bursts and in-flight caps.

use std::sync::Arc;

use crate::config::file::LimitSection;
use crate::limits::{Gcra, Limit, LimitKey, Quota, Rate};
use crate::report::Report;

/// The limits of one route (`key` is its config path, `route` its name). `None` when any
/// entry is wrong (each problem reported).
pub(super) fn limits(
    r: &mut Report,
    key: &str,
    route: &str,
    entries: &[LimitSection],
) -> Option<Arc<[Limit]>> {
    let mut out = Vec::with_capacity(entries.len());
    let mut ok = true;
    for (i, e) in entries.iter().enumerate() {
        match limit(r, &format!("{key}[{i}]"), format!("{route}#{i}"), e) {
            Some(l) => out.push(l),
            None => ok = false,
        }
    }
    ok.then(|| out.into())
}

fn limit(r: &mut Report, key: &str, scope: String, e: &LimitSection) -> Option<Limit> {
    let limit_key = match e.key.as_deref() {
        None => {
            r.error(
                format!("{key}.key"),
                "missing: say what the limit counts by (client_ip, cert, license, token_sub, client_id, header:NAME or route)",
            );
            None
        }
        Some(k) => match LimitKey::parse(k) {
            Ok(k) => Some(k),
            Err(why) => {
                r.error(format!("{key}.key"), format!("\"{k}\" {why}"));
                None
            }
        },
    };
    let mut rate_ok = true;
    let rate = match e.rate.as_deref() {
        None => None,
        Some(s) => match Rate::parse(s) {
            Ok(rate) => Some(rate),
            Err(why) => {
                r.error(format!("{key}.rate"), format!("\"{s}\" {why}"));
                rate_ok = false;
                None
            }
        },
    };
    let quota = match e.quota.as_deref() {
        None => None,
        Some(s) => match Quota::parse(s) {
            Ok(q) => Some(q),
            Err(why) => {
                r.error(format!("{key}.quota"), format!("\"{s}\" {why}"));
                rate_ok = false;
                None
            }
        },
    };
    if e.burst.is_some() && e.rate.is_none() {
        r.error(format!("{key}.burst"), "needs a rate");
    }
    if e.burst == Some(0) {
        r.error(format!("{key}.burst"), "must be at least 1");
    }
    if e.max_in_flight == Some(0) {
        r.error(
            format!("{key}.max_in_flight"),
            "must be at least 1 (0 would refuse every request)",
        );
    }
    if e.rate.is_none() && e.max_in_flight.is_none() && e.quota.is_none() {
        r.error(key.to_owned(), "sets none of rate, quota and max_in_flight");
    }
    let limit_key = limit_key.filter(|_| rate_ok)?;
    Some(Limit {
        scope: scope.into(),
        key: limit_key,
        rate: rate.map(|rate| (rate, Gcra::new(rate, e.burst.unwrap_or(rate.count)))),
        max_in_flight: e.max_in_flight,
        quota,
    })
}

/// `[limits] quota_store`, or the license store when quotas need a place and `[licenses]`
/// has one. Quotas configured with neither are an error (a restart must not reset them),
/// unless the fleet's Redis counts them (`[state] backend = "redis"`, which takes precedence).
/// `others` are the other redb files (`(key, path)`): redb allows one opener per file.
pub(super) fn quota_store(
    r: &mut Report,
    file: &crate::config::file::FileConfig,
    others: &[(&str, &std::path::Path)],
) -> Option<std::path::PathBuf> {
    let section = file.limits.as_ref();
    let path = match section.and_then(|l| l.quota_store.as_deref()) {
        None => None,
        Some("") => {
            r.error("limits.quota_store", "is empty: name a file");
            None
        }
        Some(s) => {
            let path = r.resolve(s);
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if path.is_dir() {
                r.error(
                    "limits.quota_store",
                    format!("{} is a folder; name a file in it", path.display()),
                );
                None
            } else if let Some(d) = dir.filter(|d| !d.is_dir()) {
                r.error(
                    "limits.quota_store",
                    format!("the folder {} does not exist", d.display()),
                );
                None
            } else if let Some((other, _)) = others.iter().find(|(_, p)| *p == path) {
                r.error(
                    "limits.quota_store",
                    format!(
                        "is the same file as {other}: leave quota_store out to keep quotas in the license store, or name another file"
                    ),
                );
                None
            } else {
                Some(path)
            }
        }
    };
    // A quota_store that is set but wrong has its own error above.
    let fleet = file
        .state
        .as_ref()
        .is_some_and(|s| s.backend.as_deref() == Some("redis"));
    let has_store =
        fleet || file.licenses.is_some() || section.is_some_and(|l| l.quota_store.is_some());
    if !has_store {
        let defaults = section
            .and_then(|l| l.default.as_ref())
            .map(|d| ("limits.default".to_owned(), d));
        let routes = file.routes.iter().enumerate().filter_map(|(i, rs)| {
            rs.limits
                .as_ref()
                .map(|l| (format!("routes[{i}].limits"), l))
        });
        for (at, entries) in defaults.into_iter().chain(routes) {
            if let Some(j) = entries.iter().position(|e| e.quota.is_some()) {
                r.error(
                    format!("{at}[{j}].quota"),
                    "quota counts must survive a restart: set [limits] quota_store (a redb file) or configure [licenses], whose store then keeps them",
                );
            }
        }
    }
    path
}
