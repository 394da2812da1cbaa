//! X-Forwarded-For and RFC 7239 `Forwarded` (src/ip_filter/forwarded.rs). Input: a header
//! value. Beyond "no panic":
//! - the `for=` list of a `Forwarded` line prints back (as the gateway writes it: `for=v4`,
//!   `for="[v6]"`) to a line that parses to the same list;
//! - the client address chosen behind a trusted proxy is the one a plain right-to-left walk
//!   of that list picks (first untrusted hop, else the leftmost), for both headers.
#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::ip_filter::{ForwardedHeader, IpSet, client_ip, forwarded_for_list};

fn print(list: &[IpAddr]) -> String {
    let nodes: Vec<String> = list
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => format!("for={v4}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        })
        .collect();
    nodes.join(", ")
}

/// The reference walk: right to left, the first hop not trusted; all trusted: the leftmost.
fn walk(peer: IpAddr, list: &[IpAddr], trusted: &IpSet) -> IpAddr {
    let mut leftmost = peer;
    for ip in list.iter().rev().map(|ip| ip.to_canonical()) {
        if !trusted.contains(ip) {
            return ip;
        }
        leftmost = ip;
    }
    leftmost
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let trusted = IpSet::new(
        ["10.0.0.0/8", "fd00::/8", "127.0.0.1/32"]
            .iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok()),
    );
    let peer: IpAddr = [10, 0, 0, 1].into();
    let value = HeaderValue::from_str(line).ok();
    // A value with bytes past ASCII (obs-text) is a valid header but no address list: it is
    // refused whole, whichever header it is.
    if let Some(v) = value.as_ref().filter(|v| v.to_str().is_err()) {
        for (name, which) in [
            (http::header::FORWARDED, ForwardedHeader::Forwarded),
            (
                http::HeaderName::from_static("x-forwarded-for"),
                ForwardedHeader::XForwardedFor,
            ),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, v.clone());
            assert!(client_ip(peer, &h, &trusted, which).is_err());
        }
        return;
    }

    let list = forwarded_for_list(line);
    if let Ok(list) = &list {
        let printed = print(list);
        assert_eq!(
            forwarded_for_list(&printed).as_ref(),
            Ok(list),
            "{printed:?}"
        );
    }
    if let Some(v) = &value {
        let mut h = HeaderMap::new();
        h.insert(http::header::FORWARDED, v.clone());
        let got = client_ip(peer, &h, &trusted, ForwardedHeader::Forwarded);
        match &list {
            Ok(list) => assert_eq!(got, Ok(walk(peer, list, &trusted))),
            // A line is read whole before it is walked: no hop of a bad line is believed.
            Err(_) => assert!(got.is_err(), "{line:?} read as {got:?}"),
        }
    }

    // X-Forwarded-For: the same line read as a comma list of bare or bracketed addresses.
    if let Some(v) = value {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v);
        let got = client_ip(peer, &h, &trusted, ForwardedHeader::XForwardedFor);
        let reference: Option<Vec<IpAddr>> =
            line.split(',').map(|e| parse_node(e.trim())).collect();
        match reference {
            Some(list) => assert_eq!(got, Ok(walk(peer, &list, &trusted)), "{line:?}"),
            None => assert!(got.is_err(), "{line:?} read as {got:?}"),
        }
    }
});

/// A node as X-Forwarded-For writes it: an address, `v4:port`, `[v6]` or `[v6]:port`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}
