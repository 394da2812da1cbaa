//! Header rewriting between client and upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::Snapshot;
use crate::context::{ConnContext, Exchange};
use crate::identity::{IdentityHeaders, IdentityValues};
use crate::ip_filter::ForwardedHeader;
use crate::request_id::X_REQUEST_ID;
use crate::token::{ClaimHeaders, Claims};
use http::header::AUTHORIZATION;

/// A place to borrow the name from (a `const` is a new value at each use).
static TRACESTATE: HeaderName = crate::trace_context::TRACESTATE;
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop, never the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers upstream frameworks read as the client's address, scheme, port or path, which
/// only a proxy may write: removed from every client request. `X-Real-IP` is nginx's
/// client address; `X-Original-URL` and `X-Rewrite-URL` override the path in IIS and
/// Symfony, so a client could name `/admin` there while routing saw another path.
const NEVER_FROM_CLIENT: [HeaderName; 9] = [
    X_REAL_IP,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-original-host"),
];

/// Whether `name` (lower case, `_` already folded to `-`) is a header the gateway writes or
/// scrubs, or one that frames the message.
fn gateway_owned(name: &str, scrub: &ClientScrub) -> bool {
    let is = |n: &HeaderName| n.as_str() == name;
    [
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_REQUEST_ID,
        &header::CONTENT_LENGTH,
        &header::PROXY_AUTHORIZATION,
    ]
    .into_iter()
    .chain(HOP_BY_HOP.iter())
    .chain(scrub.names.iter())
    .any(is)
}

/// Every header name no client may send an upstream under one config: the proxy-only
/// names above, and the identity and claim header names (default and configured), which
/// only the gateway writes. Made once per config (the generation holds it), so that a
/// request checks its few keys against one list, most of them on one bit: the names' (length,
/// last byte) slots.
#[derive(Debug, Clone)]
pub struct ClientScrub {
    names: Vec<HeaderName>,
    slots: [u64; 4],
}

impl ClientScrub {
    pub fn new(snapshot: &Snapshot) -> Self {
        ClientScrub::of(
            NEVER_FROM_CLIENT
                .iter()
                .chain(snapshot.identity_headers.scrubbed())
                .chain(snapshot.claim_headers.scrubbed()),
        )
    }

    fn of<'a>(all: impl Iterator<Item = &'a HeaderName>) -> Self {
        let mut names: Vec<HeaderName> = Vec::new();
        for n in all {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let mut slots = [0u64; 4];
        for n in &names {
            let s = slot(n.as_str());
            slots[s >> 6] |= 1 << (s & 63);
        }
        ClientScrub { names, slots }
    }

    fn contains(&self, k: &HeaderName) -> bool {
        let s = slot(k.as_str());
        self.slots[s >> 6] & (1 << (s & 63)) != 0 && self.names.iter().any(|n| n == k)
    }
}

/// A name's slot in [`ClientScrub`]'s filter: its length and last byte, which tell most
/// names apart (the scrubbed ones mostly start alike, `x-`).
fn slot(name: &str) -> usize {
    let b = name.as_bytes();
    (b.len().wrapping_mul(37) ^ usize::from(b.last().copied().unwrap_or(0))) & 255
}

/// Remove what no client may send an upstream: the names of [`ClientScrub`], and header
/// names with `_` (all of them, or those that fold onto a gateway-owned name, per
/// `underscores_in_headers`): CGI-style servers read `X_Auth_Subject` as `X-Auth-Subject`.
/// `also`: one more name to remove on this request (a traced request's `tracestate` when
/// the caller's trace was not adopted), in the same pass.
pub fn scrub_client_headers(
    h: &mut HeaderMap,
    scrub: &ClientScrub,
    snapshot: &Snapshot,
    also: Option<&HeaderName>,
) {
    let listed = |k: &HeaderName| scrub.contains(k) || also.is_some_and(|a| a == k);
    // One pass over the request's few keys; the Vec below is built only when a client sent
    // such a name.
    if !h.keys().any(|k| listed(k) || k.as_str().contains('_')) {
        return;
    }
    let drop_all = snapshot.underscores_in_headers != crate::framing::UnderscoreHeaders::Allow;
    let hits: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            listed(k)
                || (k.as_str().contains('_')
                    && (drop_all || gateway_owned(&k.as_str().replace('_', "-"), scrub)))
        })
        .cloned()
        .collect();
    for n in hits {
        h.remove(n);
    }
}

/// Headers a `Connection` option may not remove: they carry the message's framing and
/// target, and removing them would let a client change what the upstream receives.
fn protected(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length")
}

/// Remove hop-by-hop headers: the fixed list, `Proxy-*`, and whatever `Connection` names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Usually there are none: one pass over the keys instead of a lookup per name.
    if !h
        .keys()
        .any(|k| HOP_BY_HOP.contains(k) || k.as_str().starts_with("proxy-"))
    {
        return;
    }
    // `TE: trailers` says the client accepts trailers; gRPC needs it end to end (RFC 9113
    // section 8.2.2 allows exactly this value over HTTP/2), so it alone survives.
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if h.contains_key(header::CONNECTION) {
        // Rare on keep-alive HTTP/1.1 and absent on HTTP/2, so the Vec is rarely built.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !protected(t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if h.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = h
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for n in proxy {
            h.remove(n);
        }
    }
}

/// The request's length as declared, if it declares one.
pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Tell the upstream who asked and how: X-Forwarded-For, -Proto, -Host, Host, the client
/// identity headers and our request id (replacing any the client sent).
///
/// From a trusted proxy, the header it writes (`forwarded_header`) is kept and our peer
/// appended; the other one was written by someone else and is replaced (X-Forwarded-For,
/// from the `Forwarded` chain) or removed (`Forwarded`). From anyone else both are lies as
/// far as we know, so the upstream gets only the peer.
pub fn add_forwarding(
    h: &mut HeaderMap,
    x: &Exchange<'_>,
    conn: &ConnContext,
    snapshot: &Snapshot,
    scrub: &ClientScrub,
) {
    // The identity and claim names go here too, with the rest: what is written below is
    // the gateway's own.
    let tracestate = x
        .trace
        .as_ref()
        .filter(|t| !t.context.keep_tracestate)
        .map(|_| &TRACESTATE);
    scrub_client_headers(h, scrub, snapshot, tracestate);
    match (x.client.via_trusted_proxy, x.client.forwarded_header) {
        (true, header_kind) => {
            let xff = trusted_chain(h, header_kind, conn);
            // The String's buffer becomes the header's bytes: one allocation, no copy.
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
                h.insert(X_FORWARDED_FOR, v);
            }
        }
        (false, _) => {
            h.remove(header::FORWARDED);
            // The peer alone: its value was made when the connection was accepted.
            h.insert(X_FORWARDED_FOR, conn.origin_value.clone());
        }
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    match x.host.clone() {
        Some(host) => {
            h.insert(X_FORWARDED_HOST, host.clone());
            h.insert(header::HOST, host);
        }
        None => {
            h.remove(X_FORWARDED_HOST);
        }
    }
    h.insert(X_REQUEST_ID, x.request_id_header.clone());
    if let Some(v) = conn.identity_values.as_ref() {
        set_identity(h, &snapshot.identity_headers, v);
    }
    if let Some(claims) = x.claims.as_deref() {
        set_claims(h, claims, &snapshot.claim_headers);
    }
    // Last: the key scans above then pass over one header fewer.
    if let Some(t) = &x.trace {
        write_trace(h, &t.context);
    }
}

/// The `X-Forwarded-For` a trusted proxy's request goes on with: the chain it sent (in
/// `X-Forwarded-For`, or in `Forwarded`, which is rewritten with the peer added), then the
/// peer.
fn trusted_chain(h: &mut HeaderMap, kind: ForwardedHeader, conn: &ConnContext) -> String {
    use std::fmt::Write;
    let ip = conn.origin.ip().to_canonical();
    let mut xff = String::with_capacity(48);
    match kind {
        ForwardedHeader::XForwardedFor => {
            // Several X-Forwarded-For lines are one list: fold them, then append the peer.
            for prior in h
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
            {
                xff.push_str(prior);
                xff.push_str(", ");
            }
            h.remove(header::FORWARDED);
        }
        ForwardedHeader::Forwarded => {
            let mut fwd = String::with_capacity(64);
            for line in h
                .get_all(header::FORWARDED)
                .iter()
                .filter_map(|v| v.to_str().ok())
            {
                // The IP stage has read this chain already; what it accepted parses here.
                for prior in crate::ip_filter::forwarded_for_list(line).unwrap_or_default() {
                    let _ = write!(xff, "{prior}, ");
                }
                fwd.push_str(line.trim());
                fwd.push_str(", ");
            }
            match ip {
                std::net::IpAddr::V4(v4) => {
                    let _ = write!(fwd, "for={v4}");
                }
                std::net::IpAddr::V6(v6) => {
                    let _ = write!(fwd, "for=\"[{v6}]\"");
                }
            }
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(fwd)) {
                h.insert(header::FORWARDED, v);
            }
        }
    }
    let _ = write!(xff, "{ip}");
    xff
}

/// With tracing on the caller's trace headers never pass as sent: the upstream's parent is
/// the gateway's span, in the caller's trace only if it was adopted, and the caller's
/// `tracestate` only with an adopted trace.
fn write_trace(h: &mut HeaderMap, t: &crate::trace_context::TraceContext) {
    use crate::trace_context::TRACEPARENT;
    // The caller's `tracestate`, unless it goes on, went with the client's scrubbed names.
    h.insert(TRACEPARENT, super::arena::traceparent(t));
}

/// The verified client certificate's identity headers (client-sent copies are already
/// scrubbed).
fn set_identity(h: &mut HeaderMap, names: &IdentityHeaders, values: &IdentityValues) {
    for (name, value) in names.values(values) {
        // A HeaderValue clone shares its bytes: no allocation per request.
        h.insert(name.clone(), value.clone());
    }
}

/// The claims' part of [`add_forwarding`] alone, as the token tests drive it:
///
/// - client-supplied claim headers (configured names and the defaults) are always removed
///   (on the request path by [`ClientScrub`], which holds them), so an upstream that trusts
///   `x-auth-subject` cannot be fed one by a client, even on an `auth = "none"` route;
/// - with `claims` (a token was verified), the Authorization header is removed unless
///   `keep_authorization`, and the claim headers are set. Without claims, Authorization is
///   left alone: it was not ours, and such an upstream may do its own authentication.
#[cfg(test)]
pub fn write_claims(headers: &mut HeaderMap, claims: Option<&Claims>, cfg: &ClaimHeaders) {
    for name in cfg.scrubbed() {
        headers.remove(name);
    }
    if let Some(claims) = claims {
        set_claims(headers, claims, cfg);
    }
}

/// A verified token's claim headers (client-sent copies are already removed), and the
/// Authorization header gone unless `keep_authorization`.
fn set_claims(headers: &mut HeaderMap, claims: &Claims, cfg: &ClaimHeaders) {
    if !cfg.keep_authorization {
        headers.remove(AUTHORIZATION);
    }
    let v = &claims.values;
    let pairs = [
        (&cfg.subject, v.subject.as_ref()),
        (&cfg.client_id, v.client_id.as_ref()),
        (&cfg.scopes, Some(&v.scopes)),
        (&cfg.issuer, Some(&v.issuer)),
    ];
    for (name, value) in pairs {
        if let (Some(name), Some(value)) = (name, value) {
            // A HeaderValue clone shares its bytes: no allocation per request.
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrub_list_finds_each_of_its_names_and_passes_common_headers() {
        let extra = [
            HeaderName::from_static("x-client-cert-subject"),
            HeaderName::from_static("x-auth-subject"),
            HeaderName::from_static("ssl-client-s-dn"),
        ];
        let scrub = ClientScrub::of(NEVER_FROM_CLIENT.iter().chain(extra.iter()));
        for n in NEVER_FROM_CLIENT.iter().chain(extra.iter()) {
            assert!(scrub.contains(n), "{n}");
        }
        for n in [
            header::HOST,
            header::ACCEPT,
            header::USER_AGENT,
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-auth-subjects"),
            HeaderName::from_static("x-real-ip2"),
        ] {
            assert!(!scrub.contains(&n), "{n}");
        }
        // Removed whatever else the request holds, and only those.
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-auth-subject", HeaderValue::from_static("admin"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let hits: Vec<_> = h.keys().filter(|k| scrub.contains(k)).cloned().collect();
        for n in hits {
            h.remove(n);
        }
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed_but_host_is_protected() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret, host, Content-Length"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip, trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "1"),
            ("x-secret", "s"),
            ("host", "api.example.com"),
            ("content-length", "3"),
            ("accept", "*/*"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "content-length", "host"]);
    }

    #[test]
    fn te_trailers_alone_is_kept_for_grpc() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::CONNECTION, HeaderValue::from_static("te"));
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
        assert!(!h.contains_key(header::CONNECTION));
    }
}
