//! `[limits]` and each route's `limits`: keys, rates, bursts and in-flight caps.

use std::sync::Arc;

use crate::config::file::LimitSection;
use crate::limits::{Gcra, Limit, LimitKey, Rate};
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
    if e.rate.is_none() && e.max_in_flight.is_none() {
        r.error(key.to_owned(), "sets neither rate nor max_in_flight");
    }
    let limit_key = limit_key.filter(|_| rate_ok)?;
    Some(Limit {
        scope: scope.into(),
        key: limit_key,
        rate: rate.map(|rate| (rate, Gcra::new(rate, e.burst.unwrap_or(rate.count)))),
        max_in_flight: e.max_in_flight,
    })
}
