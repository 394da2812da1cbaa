//! Header rewriting between client and upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use crate::context::{RequestContext, X_REQUEST_ID};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
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

/// Headers a `Connection` option may not remove: they carry the message's framing and
/// target, and removing them would let a client change what the upstream receives.
fn protected(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length")
}

/// Remove every header in `names` that the map holds. Most of these names are absent from
/// most requests, and every `remove` hashes its name (SipHash for custom names): one pass
/// over the request's few keys finds what is there, and only that is removed.
pub fn remove_present<'a>(h: &mut HeaderMap, names: impl Iterator<Item = &'a HeaderName> + Clone) {
    let present = |k: &HeaderName| names.clone().any(|n| n == k);
    if !h.keys().any(present) {
        return;
    }
    // Rare (a client sent one of them): this Vec is not on the common path.
    let hits: Vec<HeaderName> = h.keys().filter(|k| present(k)).cloned().collect();
    for n in hits {
        h.remove(n);
    }
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

/// The host the client addressed: the absolute-form authority (which RFC 9112 says wins)
/// or :authority on HTTP/2, else the Host header.
pub fn original_host(parts: &Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
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
/// X-Forwarded-For (and `Forwarded`) from a trusted proxy are kept and our peer appended;
/// from anyone else they are lies as far as we know, so the upstream gets only the peer.
pub fn add_forwarding(h: &mut HeaderMap, ctx: &RequestContext<'_>, host: Option<HeaderValue>) {
    use std::fmt::Write;
    let ip = ctx.conn.origin.ip().to_canonical();
    let mut xff = String::with_capacity(48);
    if ctx.client.via_trusted_proxy {
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
    } else {
        h.remove(header::FORWARDED);
    }
    let _ = write!(xff, "{ip}");
    // The String's buffer becomes the header's bytes: one allocation, no copy.
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    match host {
        Some(host) => {
            h.insert(X_FORWARDED_HOST, host.clone());
            h.insert(header::HOST, host);
        }
        None => {
            h.remove(X_FORWARDED_HOST);
        }
    }
    h.insert(X_REQUEST_ID, ctx.request_id_header.clone());
    ctx.identity_headers
        .rewrite(h, ctx.conn.identity_values.as_ref());
    crate::token::rewrite_upstream_headers(h, ctx.claims.as_deref(), ctx.claim_headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed_but_host_is_protected() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret, host, Content-Length"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
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
}
