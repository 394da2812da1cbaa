//! Pins, IP lists and host names, as listeners and routes write them.

use crate::identity::{PinSet, parse_fingerprint, parse_spki_pin};
use crate::ip_filter::{IpPolicy, IpSet};
use crate::report::Report;

/// `pins` and `cert_fingerprints` under `key`; `None` if any entry is wrong (reported).
pub(super) fn pin_set(
    r: &mut Report,
    key: &str,
    pins: &Option<Vec<String>>,
    fps: &Option<Vec<String>>,
) -> Option<PinSet> {
    let mut ok = true;
    let mut spki = Vec::new();
    for (i, p) in pins.iter().flatten().enumerate() {
        match parse_spki_pin(p) {
            Ok(h) => spki.push(h),
            Err(e) => {
                ok = false;
                r.error(format!("{key}.pins[{i}]"), format!("\"{p}\" {e}"));
            }
        }
    }
    let mut certs = Vec::new();
    for (i, f) in fps.iter().flatten().enumerate() {
        match parse_fingerprint(f) {
            Ok(h) => certs.push(h),
            Err(e) => {
                ok = false;
                r.error(
                    format!("{key}.cert_fingerprints[{i}]"),
                    format!("\"{f}\" {e}"),
                );
            }
        }
    }
    ok.then(|| PinSet::new(spki, certs))
}

pub(super) fn ip_policy(
    r: &mut Report,
    key: &str,
    allow: &Option<Vec<String>>,
    deny: &Option<Vec<String>>,
) -> Option<IpPolicy> {
    // `allow = []` reads as "allow nobody" but an empty allow list admits everyone: refuse it.
    if allow.as_ref().is_some_and(Vec::is_empty) {
        r.error(
            format!("{key}.allow"),
            "empty: an empty allow list would admit everyone; leave the key out for that, or list networks",
        );
        return None;
    }
    let allow = cidr_list(r, &format!("{key}.allow"), allow);
    let deny = cidr_list(r, &format!("{key}.deny"), deny);
    Some(IpPolicy {
        allow: allow?,
        deny: deny?,
    })
}

/// A list of CIDRs (a bare address means just that address); `None` if any is wrong.
pub(super) fn cidr_list(r: &mut Report, key: &str, v: &Option<Vec<String>>) -> Option<IpSet> {
    let mut nets = Vec::new();
    let mut ok = true;
    for (i, s) in v.iter().flatten().enumerate() {
        let parsed = s
            .parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => nets.push(n),
            Err(_) => {
                ok = false;
                r.error(
                    format!("{key}[{i}]"),
                    format!("\"{s}\" is not an IP network (write e.g. \"10.0.0.0/8\", \"2001:db8::/32\" or \"192.0.2.7\")"),
                );
            }
        }
    }
    ok.then(|| IpSet::new(nets))
}

pub(super) fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
