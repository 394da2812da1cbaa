//! Who the client is when the peer is a proxy: X-Forwarded-For and RFC 7239 `Forwarded`.
//!
//! Honoured only when the peer is a trusted proxy. The list is walked right to left (the
//! nearest hop first), skipping trusted proxies; the first untrusted address is the client.
//! Everything left of it was written by parties we do not trust and is not read.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use super::IpSet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const FORWARDED: &str = "forwarded";

/// Reads one header line into its addresses, left to right.
type ParseFn = fn(&str) -> Result<Vec<IpAddr>, BadForwardedHeader>;

/// A trusted proxy sent a forwarding header we cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadForwardedHeader;

/// The client address for policy. `peer` is the connection's origin (TCP peer, or the
/// source a PROXY protocol header reported).
/// Only `which` is read: the other header may have been written by the client and passed
/// along by a proxy that does not touch it.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &IpSet,
    which: super::ForwardedHeader,
) -> Result<IpAddr, BadForwardedHeader> {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return Ok(peer);
    }
    let (name, parse): (&str, ParseFn) = match which {
        super::ForwardedHeader::XForwardedFor => (X_FORWARDED_FOR, parse_xff_entries),
        super::ForwardedHeader::Forwarded => (FORWARDED, parse_forwarded_entries),
    };
    if headers.contains_key(name) {
        return walk(peer, trusted, headers.get_all(name).iter(), parse);
    }
    Ok(peer)
}

/// The `for=` addresses of one `Forwarded` line, left to right.
pub fn forwarded_for_list(line: &str) -> Result<Vec<IpAddr>, BadForwardedHeader> {
    parse_forwarded_entries(line)
}

/// Walk every entry of every header line, last line last, right to left.
fn walk<'a>(
    peer: IpAddr,
    trusted: &IpSet,
    lines: impl DoubleEndedIterator<Item = &'a http::HeaderValue>,
    parse: ParseFn,
) -> Result<IpAddr, BadForwardedHeader> {
    let mut leftmost = peer;
    for line in lines.rev() {
        let text = line.to_str().map_err(|_| BadForwardedHeader)?;
        for ip in parse(text)?.into_iter().rev() {
            let ip = ip.to_canonical();
            if !trusted.contains(ip) {
                return Ok(ip);
            }
            leftmost = ip;
        }
    }
    // Every hop is a trusted proxy: the request began at the first of them.
    Ok(leftmost)
}

/// `203.0.113.7, 2001:db8::1, [2001:db8::2]:443, 198.51.100.2:8080`. Ports and brackets
/// are tolerated (some proxies add them); anything else that is not an address is an error.
fn parse_xff_entries(text: &str) -> Result<Vec<IpAddr>, BadForwardedHeader> {
    text.split(',').map(|e| parse_node(e.trim())).collect()
}

/// RFC 7239: `for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"`. Elements without
/// `for` are skipped; `unknown` and obfuscated identifiers (`_hidden`) cannot be checked
/// against an allowlist, so they are refused rather than guessed around.
fn parse_forwarded_entries(text: &str) -> Result<Vec<IpAddr>, BadForwardedHeader> {
    let mut out = Vec::new();
    for element in split_outside_quotes(text, ',') {
        for pair in split_outside_quotes(element, ';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').ok_or(BadForwardedHeader)?;
            if !k.trim().eq_ignore_ascii_case("for") {
                continue;
            }
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(rest) => rest.strip_suffix('"').ok_or(BadForwardedHeader)?,
                None => v,
            };
            out.push(parse_node(v)?);
        }
    }
    Ok(out)
}

fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut in_quotes = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter()
}

/// An address, optionally with a port, IPv6 optionally in brackets.
fn parse_node(s: &str) -> Result<IpAddr, BadForwardedHeader> {
    if s.is_empty() || s.len() > 64 {
        return Err(BadForwardedHeader);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa.ip());
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<IpAddr>().map_err(|_| BadForwardedHeader);
    }
    Err(BadForwardedHeader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted() -> IpSet {
        IpSet::new(
            ["10.0.0.0/8", "fd00::/8"]
                .iter()
                .map(|n| n.parse().expect("net")),
        )
    }

    /// The proxy writes `Forwarded` when the case has one, else X-Forwarded-For.
    fn run(peer: &str, headers: &[(&'static str, &str)]) -> Result<String, BadForwardedHeader> {
        let which = if headers.iter().any(|(k, _)| *k == "forwarded") {
            super::super::ForwardedHeader::Forwarded
        } else {
            super::super::ForwardedHeader::XForwardedFor
        };
        run_with(peer, headers, which)
    }

    fn run_with(
        peer: &str,
        headers: &[(&'static str, &str)],
        which: super::super::ForwardedHeader,
    ) -> Result<String, BadForwardedHeader> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        client_ip(peer.parse().expect("peer"), &h, &trusted(), which).map(|ip| ip.to_string())
    }

    #[test]
    fn only_the_header_the_trusted_proxy_writes_is_believed() {
        use super::super::ForwardedHeader::{Forwarded, XForwardedFor};
        let both = [("forwarded", "for=1.1.1.1"), ("x-forwarded-for", "2.2.2.2")];
        assert_eq!(
            run_with("10.0.0.1", &both, XForwardedFor).as_deref(),
            Ok("2.2.2.2")
        );
        // Behind a proxy that writes only Forwarded, a client-added X-Forwarded-For is noise.
        assert_eq!(
            run_with("10.0.0.1", &both, Forwarded).as_deref(),
            Ok("1.1.1.1")
        );
        let xff_only = [("x-forwarded-for", "2.2.2.2")];
        assert_eq!(
            run_with("10.0.0.1", &xff_only, Forwarded).as_deref(),
            Ok("10.0.0.1")
        );
        let fwd_only = [("forwarded", "for=1.1.1.1")];
        assert_eq!(
            run_with("10.0.0.1", &fwd_only, XForwardedFor).as_deref(),
            Ok("10.0.0.1")
        );
    }

    type Case<'a> = (
        &'a str,
        Vec<(&'static str, &'a str)>,
        Result<&'a str, BadForwardedHeader>,
    );

    #[test]
    fn x_forwarded_for_table() {
        let long_trusted = vec!["10.0.0.1"; 500].join(", ");
        let long_with_client = format!("198.51.100.9, {long_trusted}");
        let cases: Vec<Case> = vec![
            // A spoofed header from an untrusted peer is ignored.
            (
                "203.0.113.5",
                vec![("x-forwarded-for", "1.2.3.4")],
                Ok("203.0.113.5"),
            ),
            // One trusted proxy: the client is the last entry.
            (
                "10.0.0.1",
                vec![("x-forwarded-for", "198.51.100.7")],
                Ok("198.51.100.7"),
            ),
            // A chain: skip trusted hops from the right; the spoofed left part is not read.
            (
                "10.0.0.1",
                vec![(
                    "x-forwarded-for",
                    "6.6.6.6, 198.51.100.7, 10.0.0.3, 10.0.0.2",
                )],
                Ok("198.51.100.7"),
            ),
            // Several header lines are one list, in order.
            (
                "10.0.0.1",
                vec![
                    ("x-forwarded-for", "198.51.100.7"),
                    ("x-forwarded-for", "10.0.0.9"),
                ],
                Ok("198.51.100.7"),
            ),
            // Every hop trusted: the first hop is the client.
            (
                "10.0.0.1",
                vec![("x-forwarded-for", "10.0.0.3, 10.0.0.2")],
                Ok("10.0.0.3"),
            ),
            // IPv6, bracketed with a port, v4 with a port, v4-mapped.
            (
                "fd00::1",
                vec![("x-forwarded-for", "2001:db8::7")],
                Ok("2001:db8::7"),
            ),
            (
                "10.0.0.1",
                vec![("x-forwarded-for", "[2001:db8::7]:443")],
                Ok("2001:db8::7"),
            ),
            (
                "10.0.0.1",
                vec![("x-forwarded-for", "198.51.100.7:8080")],
                Ok("198.51.100.7"),
            ),
            (
                "::ffff:10.0.0.1",
                vec![("x-forwarded-for", "::ffff:198.51.100.7")],
                Ok("198.51.100.7"),
            ),
            // No header from a trusted proxy: the proxy is the client.
            ("10.0.0.1", vec![], Ok("10.0.0.1")),
            // Garbage and empty from a trusted proxy are refused.
            (
                "10.0.0.1",
                vec![("x-forwarded-for", "not-an-ip")],
                Err(BadForwardedHeader),
            ),
            (
                "10.0.0.1",
                vec![("x-forwarded-for", "")],
                Err(BadForwardedHeader),
            ),
            (
                "10.0.0.1",
                vec![("x-forwarded-for", "198.51.100.7,,10.0.0.2")],
                Err(BadForwardedHeader),
            ),
            (
                "10.0.0.1",
                vec![("x-forwarded-for", "198.51.100.7; DROP TABLE")],
                Err(BadForwardedHeader),
            ),
            // Very long chains are walked without trouble.
            (
                "10.0.0.1",
                vec![("x-forwarded-for", &long_trusted)],
                Ok("10.0.0.1"),
            ),
            (
                "10.0.0.1",
                vec![("x-forwarded-for", &long_with_client)],
                Ok("198.51.100.9"),
            ),
            // Forwarded (RFC 7239), with quotes, ports and other parameters.
            (
                "10.0.0.1",
                vec![("forwarded", "for=198.51.100.7;proto=https;by=10.0.0.1")],
                Ok("198.51.100.7"),
            ),
            (
                "10.0.0.1",
                vec![(
                    "forwarded",
                    "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\", For=10.0.0.2",
                )],
                Ok("2001:db8:cafe::17"),
            ),
            (
                "10.0.0.1",
                vec![("forwarded", "for=unknown")],
                Err(BadForwardedHeader),
            ),
            (
                "10.0.0.1",
                vec![("forwarded", "for=_hidden")],
                Err(BadForwardedHeader),
            ),
            (
                "10.0.0.1",
                vec![("forwarded", "for=\"198.51.100.7")],
                Err(BadForwardedHeader),
            ),
            (
                "203.0.113.5",
                vec![("forwarded", "for=1.2.3.4")],
                Ok("203.0.113.5"),
            ),
        ];
        for (peer, headers, want) in cases {
            let got = run(peer, &headers);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                want,
                "peer {peer} headers {headers:?}"
            );
        }
    }
}
