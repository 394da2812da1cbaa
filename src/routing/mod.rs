//! Routing: host + path + method -> `Arc<Route>`.
//!
//! Prefixes match on path-segment boundaries (`/api` takes `/api` and `/api/x`, never
//! `/apix`), so an operator's route never silently covers a sibling path. Lookup is by hash
//! per path segment, not a scan over routes, so it stays flat with thousands of routes.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::denial::Denial;
use crate::forward::Upstream;
use crate::identity::PinSet;
use crate::ip_filter::IpPolicy;
use crate::license::RouteLicense;
use crate::metrics::RouteSeries;
use crate::token::RouteAuth;

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<Box<str>>,
    /// Normalised prefix: starts with `/`, no trailing `/` except the root itself.
    pub path_prefix: Box<str>,
    /// `None` allows every method.
    pub methods: Option<Vec<Method>>,
    pub upstream: Arc<Upstream>,
    pub max_body_bytes: Option<u64>,
    /// Client certificates admitted (on top of the listener's pins); empty: any.
    pub pins: PinSet,
    /// Client addresses admitted (on top of the listener's lists).
    pub ip: IpPolicy,
    /// Whether every request needs a machine license.
    pub license: RouteLicense,
    /// Whether every request needs a bearer token, and which scopes and issuers.
    pub auth: RouteAuth,
    /// This route's metric series, resolved on its first request.
    pub series: RouteSeries,
}

/// Check and normalise a configured prefix. The error completes the sentence "\"<p>\" ...".
pub fn normalize_prefix(p: &str) -> Result<Box<str>, &'static str> {
    if !p.starts_with('/') {
        return Err("must start with '/'");
    }
    if p.contains(['?', '#']) {
        return Err("must be a path only, without '?' or '#'");
    }
    if p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("must not contain spaces or control characters");
    }
    if p.contains("//") {
        return Err("must not contain an empty segment (\"//\")");
    }
    if p.split('/').any(|s| s == "." || s == "..") {
        return Err("must not contain \".\" or \"..\" segments");
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.into())
}

/// Routes of one listener, indexed by host then by exact prefix.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_host: HashMap<Box<str>, HashMap<Box<str>, Arc<Route>>>,
    any_host: HashMap<Box<str>, Arc<Route>>,
    len: usize,
}

impl RouteTable {
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        let mut t = RouteTable {
            len: routes.len(),
            ..Default::default()
        };
        for r in routes {
            let bucket = match &r.host {
                Some(h) => t.by_host.entry(h.clone()).or_default(),
                None => &mut t.any_host,
            };
            bucket.insert(r.path_prefix.clone(), r);
        }
        t
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Every route, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.any_host
            .values()
            .chain(self.by_host.values().flat_map(|b| b.values()))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The route for a request. `host` is as sent (any case, maybe with a port); `path` is
    /// the request path without query.
    ///
    /// A host-specific route beats a host-less one with an equally long prefix; a longer
    /// prefix wins across both.
    pub fn select(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
    ) -> Result<&Arc<Route>, Denial> {
        check_path(path)?;
        let host_bucket = host
            .map(normalize_host)
            .and_then(|h| self.by_host.get(h.as_ref()));
        let specific = host_bucket.and_then(|b| longest(b, path));
        let general = longest(&self.any_host, path);
        let route = match (specific, general) {
            (Some(s), Some(g)) if g.path_prefix.len() > s.path_prefix.len() => g,
            (Some(s), _) => s,
            (None, Some(g)) => g,
            (None, None) => return Err(Denial::NoRoute),
        };
        match &route.methods {
            Some(allowed) if !allowed.contains(method) => Err(Denial::MethodNotAllowed),
            _ => Ok(route),
        }
    }
}

/// Longest configured prefix of `path`, trying `path` itself then each parent segment.
fn longest<'a>(bucket: &'a HashMap<Box<str>, Arc<Route>>, path: &str) -> Option<&'a Arc<Route>> {
    if bucket.is_empty() {
        return None;
    }
    let mut candidate = path.trim_end_matches('/');
    loop {
        if candidate.is_empty() {
            return bucket.get("/");
        }
        if let Some(r) = bucket.get(candidate) {
            return Some(r);
        }
        match candidate.rfind('/') {
            Some(i) => candidate = &candidate[..i],
            None => return bucket.get("/"),
        }
    }
}

/// Lower-case the host and drop any port; borrows unless the host has upper-case letters.
fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = match host.rfind(':') {
        // An IPv6 literal keeps its colons inside brackets.
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// Refuse paths whose meaning an upstream may read differently from us: dot segments
/// (plain or percent-encoded), which could walk out of the prefix we routed on, and
/// encoded slashes or backslashes, which some servers decode into separators.
fn check_path(path: &str) -> Result<(), Denial> {
    if !path.starts_with('/') && path != "*" {
        return Err(Denial::InvalidPath);
    }
    let b = path.as_bytes();
    // Fast path: nothing to look at without '.', '%' or '\\'.
    if !b.iter().any(|&c| c == b'.' || c == b'%' || c == b'\\') {
        return Ok(());
    }
    if b.contains(&b'\\') || contains_encoded_separator(path) {
        return Err(Denial::InvalidPath);
    }
    if path
        .split('/')
        .any(|seg| matches!(decode_dots(seg), Some(1 | 2)))
    {
        return Err(Denial::InvalidPath);
    }
    Ok(())
}

/// If the segment is made only of `.` and `%2e`/`%2E`, how many dots it decodes to.
fn decode_dots(seg: &str) -> Option<usize> {
    let b = seg.as_bytes();
    let (mut i, mut dots) = (0, 0);
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
        } else if b[i] == b'%'
            && b.get(i + 1) == Some(&b'2')
            && matches!(b.get(i + 2), Some(b'e' | b'E'))
        {
            i += 3;
        } else {
            return None;
        }
        dots += 1;
    }
    Some(dots)
}

fn contains_encoded_separator(path: &str) -> bool {
    let b = path.as_bytes();
    b.windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && matches!(w[2], b'f' | b'F'))
                || (w[1] == b'5' && matches!(w[2], b'c' | b'C')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_plain_and_encoded_are_invalid_paths() {
        for p in [
            "/a/../b",
            "/..",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/.%2e",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "relative",
        ] {
            assert_eq!(check_path(p), Err(Denial::InvalidPath), "{p}");
        }
        for p in [
            "/",
            "/a/b.json",
            "/a/...",
            "/v1.2/x",
            "/a/%20b",
            "/a/.hidden",
            "*",
        ] {
            assert_eq!(check_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn prefixes_are_normalised_and_checked() {
        assert_eq!(normalize_prefix("/api/").as_deref(), Ok("/api"));
        assert_eq!(normalize_prefix("/").as_deref(), Ok("/"));
        assert!(normalize_prefix("api").is_err());
        assert!(normalize_prefix("/a/../b").is_err());
        assert!(normalize_prefix("/a?x").is_err());
    }

    #[test]
    fn hosts_lose_port_and_case() {
        assert_eq!(normalize_host("API.Example.com:8443"), "api.example.com");
        assert_eq!(normalize_host("[::1]:8443"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
    }
}
