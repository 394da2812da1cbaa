//! Properties of hand-written parsers against a reference or their inverse (issue 20):
//! - the framing scanner's decision agrees with httparse plus hyper's framing rules on
//!   generated request heads (Content-Length, Transfer-Encoding, both, several, odd
//!   whitespace, bare LF), and it follows the body to the next head where hyper does;
//! - `Forwarded` lines print and parse back, and the client behind trusted proxies is the one
//!   a plain right-to-left walk picks, for `Forwarded` and X-Forwarded-For.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderMap, HeaderValue};
use portcullis::framing::scanner::{FramingSignals, Scanner};
use portcullis::ip_filter::{ForwardedHeader, IpSet, client_ip, forwarded_for_list};
use proptest::prelude::*;

// === framing ===

#[path = "support/hyper_framing.rs"]
mod hyper_framing;
use hyper_framing::{Body, hyper_framing};

/// (ambiguous, between messages) after feeding `bytes` whole; panics if the scanner
/// refused a head (the callers feed only heads hyper accepts).
fn scan(bytes: &[u8]) -> (bool, bool) {
    let signals = Arc::new(FramingSignals::default());
    let mut s = Scanner::new(64 * 1024, 100, signals.clone());
    let fed = s.feed(bytes);
    assert!(
        signals.refusal.get().is_none(),
        "refused {:?}: {:?}",
        String::from_utf8_lossy(bytes),
        signals.refusal.get()
    );
    assert_eq!(
        fed.pass,
        bytes.len(),
        "held back part of {:?}",
        String::from_utf8_lossy(bytes)
    );
    (
        signals.ambiguous.load(Ordering::Relaxed),
        signals.between_messages.load(Ordering::Relaxed),
    )
}

/// Whether the scanner refuses `bytes`, a complete head.
fn refused(bytes: &[u8]) -> bool {
    let signals = Arc::new(FramingSignals::default());
    Scanner::new(64 * 1024, 100, signals.clone()).feed(bytes);
    signals.refusal.get().is_some()
}

fn case_of(name: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(name.to_owned()),
        Just(name.to_ascii_lowercase()),
        Just(name.to_ascii_uppercase()),
    ]
}

/// One header line (without its line end): framing headers in many spellings, and others.
fn header_line() -> impl Strategy<Value = String> {
    let cl_value = prop::sample::select(vec![
        "0",
        "5",
        "12",
        "05",
        "5, 5",
        "5,5",
        "5, 6",
        "+5",
        "-5",
        "",
        "abc",
        "5 5",
        "0x5",
        "18446744073709551615",
        "18446744073709551616",
    ]);
    let te_value = prop::sample::select(vec![
        "chunked",
        "CHUNKED",
        "gzip, chunked",
        "chunked, gzip",
        "identity",
        "gzip,chunked",
        "chunked , ",
        "xchunked",
        "",
    ]);
    let colon = prop::sample::select(vec![":", ": ", ":\t", ":  ", ": \t"]);
    let trail = prop::sample::select(vec!["", " ", "\t", " \t"]);
    prop_oneof![
        (
            case_of("Content-Length"),
            colon.clone(),
            cl_value,
            trail.clone()
        )
            .prop_map(|(n, c, v, t)| format!("{n}{c}{v}{t}")),
        (case_of("Transfer-Encoding"), colon.clone(), te_value, trail)
            .prop_map(|(n, c, v, t)| format!("{n}{c}{v}{t}")),
        // Near misses: not framing headers, or not headers hyper takes.
        prop::sample::select(vec![
            "Host: a",
            "X-Content-Length: 5",
            "Transfer-Encodings: chunked",
            "Content-Length : 5",
            "Content-Type: text/plain",
            " Transfer-Encoding: chunked",
        ])
        .prop_map(str::to_owned),
    ]
}

fn head() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT"]),
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]),
        prop::sample::select(vec!["\r\n", "\n"]),
        prop::sample::select(vec!["", "\r\n"]),
        prop::collection::vec(header_line(), 0..6),
    )
        .prop_map(|(method, version, eol, leading, headers)| {
            let mut h = format!("{leading}{method} /p {version}{eol}");
            for line in headers {
                h.push_str(&line);
                h.push_str(eol);
            }
            h.push_str(eol);
            h
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_scanner_frames_every_head_hyper_accepts_as_hyper_does(head in head()) {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = req.parse(head.as_bytes()) else {
            // httparse refuses it: so does the scanner, before hyper would.
            prop_assert!(refused(head.as_bytes()), "not refused: {:?}", head);
            return Ok(());
        };
        prop_assert_eq!(n, head.len());
        let Some((body, both)) = hyper_framing(&req) else {
            prop_assert!(refused(head.as_bytes()), "hyper refuses, the scanner not: {:?}", head);
            return Ok(());
        };
        let (ambiguous, between) = scan(head.as_bytes());
        prop_assert_eq!(ambiguous, both, "CL+TE flag on {:?}", head);
        if both {
            return Ok(());
        }
        // The body as hyper reads it, then a head that carries both headers: the scanner
        // must be between messages exactly when hyper is, and find that next head.
        let body_bytes: Vec<u8> = match body {
            Body::None => Vec::new(),
            Body::Length(n) if n <= 64 => vec![b'x'; n as usize],
            Body::Length(_) => return Ok(()),
            Body::Chunked => b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n".to_vec(),
        };
        prop_assert_eq!(between, body == Body::None, "after the head of {:?}", head);
        let mut msg = head.clone().into_bytes();
        msg.extend_from_slice(&body_bytes);
        if let Some(short) = msg.len().checked_sub(1).filter(|_| !body_bytes.is_empty()) {
            prop_assert_eq!(scan(&msg[..short]), (false, false), "one byte short: {:?}", head);
        }
        prop_assert_eq!(scan(&msg), (false, true), "after the body: {:?}", head);
        let mut next = msg.clone();
        next.extend_from_slice(b"POST /s HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        prop_assert!(scan(&next).0, "the next head is found: {:?}", head);
        msg.extend_from_slice(b"GET /s HTTP/1.1\r\nX-A: a\0b\r\n\r\n");
        prop_assert!(refused(&msg), "the next, malformed head is refused: {:?}", head);
    }
}

// === Forwarded and X-Forwarded-For ===

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        // Some in the trusted ranges, so walks skip hops.
        any::<[u8; 3]>().prop_map(|o| IpAddr::V4(Ipv4Addr::new(10, o[0], o[1], o[2]))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        any::<u64>().prop_map(|l| IpAddr::V6(Ipv6Addr::from((0xfd00_u128 << 112) | u128::from(l)))),
        any::<[u8; 4]>().prop_map(|o| IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped())),
    ]
}

/// One hop of a generated chain: its address, a port or none, and the node's other
/// parameters.
#[derive(Debug, Clone)]
struct Hop {
    ip: IpAddr,
    port: Option<u16>,
    quote_v4: bool,
    for_case: &'static str,
    params: Vec<&'static str>,
}

fn hop() -> impl Strategy<Value = Hop> {
    (
        ip(),
        prop::option::of(any::<u16>()),
        any::<bool>(),
        prop::sample::select(vec!["for", "For", "FOR"]),
        prop::collection::vec(
            prop::sample::select(vec![
                "proto=https",
                "by=10.0.0.1",
                "host=\"a.example;b,c\"",
                "by=\"[fd00::1]:80\"",
            ]),
            0..3,
        ),
    )
        .prop_map(|(ip, port, quote_v4, for_case, params)| Hop {
            ip,
            port,
            quote_v4,
            for_case,
            params,
        })
}

/// A `Forwarded` element as RFC 7239 spells it: a v6 node and any node with a port are
/// quoted (they hold ':' or '['), a bare v4 may be.
fn forwarded_element(h: &Hop) -> String {
    let node = match (h.ip, h.port) {
        (IpAddr::V4(v4), None) if h.quote_v4 => format!("\"{v4}\""),
        (IpAddr::V4(v4), None) => v4.to_string(),
        (IpAddr::V4(v4), Some(p)) => format!("\"{v4}:{p}\""),
        (IpAddr::V6(v6), None) => format!("\"[{v6}]\""),
        (IpAddr::V6(v6), Some(p)) => format!("\"[{v6}]:{p}\""),
    };
    let mut pairs = vec![format!("{}={node}", h.for_case)];
    pairs.extend(h.params.iter().map(|p| p.to_string()));
    // The `for` pair's place among the others does not matter.
    if h.quote_v4 {
        pairs.rotate_left(1);
    }
    pairs.join(";")
}

/// The same hop as X-Forwarded-For writes it.
fn xff_node(h: &Hop) -> String {
    match (h.ip, h.port) {
        (IpAddr::V4(v4), None) => v4.to_string(),
        // Bare or bracketed: both are seen.
        (IpAddr::V6(v6), None) if h.quote_v4 => v6.to_string(),
        (IpAddr::V6(v6), None) => format!("[{v6}]"),
        (IpAddr::V4(v4), Some(p)) => format!("{v4}:{p}"),
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
    }
}

fn trusted() -> IpSet {
    IpSet::new(
        ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|n| n.parse().expect("net")),
    )
}

/// The reference: right to left, the first hop not trusted; all trusted: the leftmost.
fn walk(peer: IpAddr, hops: &[Hop], trusted: &IpSet) -> IpAddr {
    let mut leftmost = peer;
    for ip in hops.iter().rev().map(|h| h.ip.to_canonical()) {
        if !trusted.contains(ip) {
            return ip;
        }
        leftmost = ip;
    }
    leftmost
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn forwarded_prints_and_parses_back_and_the_walk_picks_the_first_untrusted_hop(
        hops in prop::collection::vec(hop(), 1..8),
        lines in 1usize..4,
    ) {
        let elements: Vec<String> = hops.iter().map(forwarded_element).collect();
        let line = elements.join(", ");
        let want: Vec<IpAddr> = hops.iter().map(|h| h.ip).collect();
        prop_assert_eq!(forwarded_for_list(&line), Ok(want.clone()), "{}", line);
        // Printed back the way the gateway appends a hop, it parses to the same list.
        let printed: Vec<String> = want
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => format!("for={v4}"),
                IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
            })
            .collect();
        prop_assert_eq!(forwarded_for_list(&printed.join(", ")), Ok(want));

        // Split over several header lines, and read behind a trusted proxy.
        let peer: IpAddr = [10, 0, 0, 1].into();
        let per_line = hops.len().div_ceil(lines);
        let mut fwd = HeaderMap::new();
        let mut xff = HeaderMap::new();
        for chunk in hops.chunks(per_line) {
            let f: Vec<String> = chunk.iter().map(forwarded_element).collect();
            fwd.append(http::header::FORWARDED, HeaderValue::from_str(&f.join(", ")).expect("value"));
            let x: Vec<String> = chunk.iter().map(xff_node).collect();
            xff.append("x-forwarded-for", HeaderValue::from_str(&x.join(", ")).expect("value"));
        }
        let t = trusted();
        let want = walk(peer, &hops, &t);
        prop_assert_eq!(client_ip(peer, &fwd, &t, ForwardedHeader::Forwarded), Ok(want));
        prop_assert_eq!(client_ip(peer, &xff, &t, ForwardedHeader::XForwardedFor), Ok(want));
        // From a peer that is not trusted, neither header is read.
        let stranger: IpAddr = [203, 0, 113, 9].into();
        prop_assert_eq!(client_ip(stranger, &fwd, &t, ForwardedHeader::Forwarded), Ok(stranger));
    }
}
