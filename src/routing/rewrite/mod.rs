//! Rewrites per route: the path and `Host` the upstream receives, and headers set, added or
//! removed on the way in and on the way out.
//!
//! The path is rewritten from the canonical path the stages judged (no dot segments, no
//! encoded separators: those were refused before routing), and `add_prefix` is checked the
//! same way at load, so a rewrite cannot reach outside `add_prefix`. Request header rewrites
//! run before the gateway writes its own headers (forwarding, identity, claims, request id),
//! so neither a client nor a rewrite can stand in for those; naming one of the headers that
//! frame the message or that only the gateway writes is a config error.

pub mod credential;

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// What the upstream's `Host` header is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostRewrite {
    /// The client's (canonical) Host: the default.
    #[default]
    Client,
    /// The target's own `host:port`, as in the route's `upstream` list.
    Target,
    /// This value.
    Fixed(HeaderValue),
}

/// Headers removed, then set (replacing every value), then added (beside any value).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderOps {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for name in &self.remove {
            h.remove(name);
        }
        for (name, value) in &self.set {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            h.append(name.clone(), value.clone());
        }
    }
}

/// One route's rewrites.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite {
    /// Remove the route's `path_prefix` from the path.
    pub strip_prefix: bool,
    /// Put this (canonical, no trailing `/`) in front of the path.
    pub add_prefix: Option<Box<str>>,
    pub host: HostRewrite,
    pub request: HeaderOps,
    pub response: HeaderOps,
}

impl Rewrite {
    /// Whether the path changes at all.
    pub fn rewrites_path(&self) -> bool {
        self.strip_prefix || self.add_prefix.is_some()
    }

    /// The path the upstream receives for the canonical `path` that the route's canonical
    /// `prefix` matched (on a segment boundary, in any case when the route is
    /// case-insensitive: the match decided the length, so only the length is used here).
    pub fn path<'p>(&self, path: &'p str, prefix: &str) -> Cow<'p, str> {
        let rest = if self.strip_prefix && prefix != "/" {
            path.get(prefix.len()..).unwrap_or("")
        } else {
            path
        };
        match (&self.add_prefix, rest) {
            (None, "") => Cow::Borrowed("/"),
            (None, rest) if rest.len() == path.len() => Cow::Borrowed(path),
            (None, rest) => Cow::Borrowed(rest),
            (Some(add), "") => Cow::Owned(add.to_string()),
            (Some(add), rest) => Cow::Owned(format!("{add}{rest}")),
        }
    }
}

/// Headers a request rewrite may not name: they frame the message, describe one hop, or
/// are written only by the gateway (which writes them after the rewrites in any case).
pub const REQUEST_PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
    "x-real-ip",
];

/// Headers a response rewrite may not name: they frame the message or describe one hop;
/// `x-request-id` ties the response to the logs.
pub const RESPONSE_PROTECTED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "x-request-id",
];

/// The request's path-and-query with its path replaced by `path`.
pub fn with_path(path: &str, query: Option<&str>) -> Option<http::uri::PathAndQuery> {
    let text = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    http::uri::PathAndQuery::try_from(text).ok()
}

/// Whether a rewrite may not name `name` (`list`: [`REQUEST_PROTECTED`] or
/// [`RESPONSE_PROTECTED`]; `Proxy-Authorization` is never forwarded either way).
pub fn is_protected(name: &HeaderName, list: &[&str]) -> bool {
    list.contains(&name.as_str()) || *name == header::PROXY_AUTHORIZATION
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(strip: bool, add: Option<&str>) -> Rewrite {
        Rewrite {
            strip_prefix: strip,
            add_prefix: add.map(Into::into),
            ..Rewrite::default()
        }
    }

    #[test]
    fn the_path_is_stripped_and_prefixed_as_configured() {
        let cases: &[(bool, Option<&str>, &str, &str, &str)] = &[
            // strip, add, prefix, path, upstream path
            (false, None, "/api", "/api/orders", "/api/orders"),
            (true, None, "/api", "/api/orders", "/orders"),
            (true, None, "/api", "/api", "/"),
            (true, None, "/api", "/api/", "/"),
            (true, None, "/", "/orders", "/orders"),
            (false, Some("/v2"), "/api", "/api/orders", "/v2/api/orders"),
            (true, Some("/v2"), "/api", "/api/orders/7", "/v2/orders/7"),
            (true, Some("/v2"), "/api", "/api", "/v2"),
            (true, Some("/v2"), "/api", "/api/", "/v2/"),
            (true, Some("/internal/erp"), "/", "/x", "/internal/erp/x"),
            // A case-insensitive route matched /API: the length is what counts.
            (true, Some("/v2"), "/api", "/API/Orders", "/v2/Orders"),
        ];
        for (strip, add, prefix, path, want) in cases {
            assert_eq!(
                rw(*strip, *add).path(path, prefix),
                *want,
                "strip={strip} add={add:?} prefix={prefix} path={path}"
            );
        }
    }

    #[test]
    fn header_ops_remove_then_set_then_add() {
        let ops = HeaderOps {
            remove: vec![HeaderName::from_static("server")],
            set: vec![(
                HeaderName::from_static("x-env"),
                HeaderValue::from_static("prod"),
            )],
            add: vec![(
                HeaderName::from_static("x-env"),
                HeaderValue::from_static("eu"),
            )],
        };
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("nginx/1.2"));
        h.append("x-env", HeaderValue::from_static("client-said"));
        h.append("x-env", HeaderValue::from_static("twice"));
        ops.apply(&mut h);
        assert!(!h.contains_key("server"));
        let env: Vec<_> = h.get_all("x-env").iter().collect();
        assert_eq!(env, ["prod", "eu"]);
    }

    #[test]
    fn the_query_is_kept_with_a_new_path() {
        assert_eq!(
            with_path("/v2/orders", Some("a=1&b=%2F")).unwrap().as_str(),
            "/v2/orders?a=1&b=%2F"
        );
        assert_eq!(with_path("/", None).unwrap().as_str(), "/");
    }
}
