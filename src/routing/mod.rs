//! Routing: canonical host + canonical path + method -> `Arc<Route>`.
//!
//! Prefixes match on path-segment boundaries (`/api` takes `/api` and `/api/x`, never
//! `/apix`), so an operator's route never silently covers a sibling path. Lookup is by hash
//! per path segment, not a scan over routes, so it stays flat with thousands of routes.
//!
//! Routing sees only canonical forms ([`path`], [`host`]): the path and host it matched are
//! the ones the upstream receives. Two readings an upstream might apply on its own are
//! checked here as well: `;` parameters (a servlet container reads `/admin;x` as `/admin`,
//! so routing matches with them removed) and case (a case-insensitive backend reads `/ADMIN`
//! as `/admin`, so a path that only case-folds onto another route is refused, unless that
//! route is `case_insensitive` and takes it).

pub(crate) mod host;
pub(crate) mod names;
pub mod path;
pub mod rewrite;

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Uri, Version};

use crate::denial::Denial;
use crate::identity::PinSet;
use crate::ip_filter::IpPolicy;
use crate::license::RouteLicense;
use crate::token::RouteAuth;

pub use host::CanonicalHost;
pub use names::HostNames;
pub use path::CanonicalPath;

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// This route's place in the config: its upstream and metric series are found by it.
    pub id: usize,
    pub name: Arc<str>,
    /// Canonical host (lower case, no port, no trailing dot); `None` matches any host.
    pub host: Option<Box<str>>,
    /// Canonical prefix: starts with `/`, no trailing `/` except the root itself.
    pub path_prefix: Box<str>,
    /// `None` allows every method.
    pub methods: Option<Vec<Method>>,
    /// `;` path parameters are forwarded instead of refused.
    pub path_params: bool,
    /// The prefix matches in any case (for upstreams that ignore case).
    pub case_insensitive: bool,
    pub max_body_bytes: Option<u64>,
    /// Client certificates admitted (on top of the listener's pins); empty: any.
    pub pins: PinSet,
    /// Client addresses admitted (on top of the listener's lists).
    pub ip: IpPolicy,
    /// Whether every request needs a machine license.
    pub license: RouteLicense,
    /// Whether every request needs a bearer token, and which scopes and issuers.
    pub auth: RouteAuth,
    /// Rate limits and in-flight caps, in order (empty: none).
    pub limits: std::sync::Arc<[crate::limits::Limit]>,
    /// WebSocket upgrades pass through to the upstream.
    pub websocket: bool,
    /// Requests with a non-idempotent method (and no body) may be retried once sent.
    pub retry_non_idempotent: bool,
    /// The upstream credential injected from the vault.
    pub credential: Option<Box<crate::routing::rewrite::credential::Credential>>,
    /// The path, Host and headers rewritten on the way to the upstream and back.
    pub rewrite: Option<Box<crate::routing::rewrite::Rewrite>>,
}

/// Check a configured prefix and put it in canonical form (the form requests are matched
/// in). The error completes the sentence "\"<p>\" ...".
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
    if p.contains(';') {
        return Err("must not contain ';' (path parameters are never matched on)");
    }
    let canonical = match path::canonical(p) {
        Ok(c) => c.path,
        Err(path::PathError::DotSegment) => {
            return Err("must not contain \".\" or \"..\" segments");
        }
        Err(_) => {
            return Err("must not contain a malformed escape, an encoded '/' or '\\', or a '\\'");
        }
    };
    let trimmed = canonical.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.into())
}

/// The host and path a request is routed on, in canonical form, and what the upstream
/// receives.
#[derive(Debug)]
pub struct RequestTarget<'r> {
    pub host: Option<CanonicalHost<'r>>,
    /// The Host header the host came from (absent: from the request-target authority).
    host_sent: Option<&'r HeaderValue>,
    pub path: CanonicalPath<'r>,
}

impl RequestTarget<'_> {
    /// The canonical host name, for routing.
    pub fn host_name(&self) -> Option<&str> {
        self.host.as_ref().map(|h| &*h.name)
    }

    /// The Host header for the upstream: the canonical host with the port the client gave.
    pub fn host_header(&self) -> Option<HeaderValue> {
        self.host.as_ref()?.header(self.host_sent)
    }
}

/// The canonical host and path of a request (RFC 9112 section 3.2 for the host): the
/// absolute-form authority or HTTP/2 `:authority` wins over Host; HTTP/1.1 needs exactly
/// one Host header; on HTTP/2 a Host header must name the same host as `:authority`.
pub fn request_target<'r>(
    uri: &'r Uri,
    headers: &'r HeaderMap,
    version: Version,
) -> Result<RequestTarget<'r>, Denial> {
    let path = path::canonical(uri.path()).map_err(|_| Denial::InvalidPath)?;
    let mut sent = headers.get_all(http::header::HOST).iter();
    let header = sent.next();
    if sent.next().is_some() || (header.is_none() && version == Version::HTTP_11) {
        return Err(Denial::InvalidHost);
    }
    let from_header = match header {
        Some(v) => {
            let text = v.to_str().map_err(|_| Denial::InvalidHost)?;
            // An empty Host is what RFC 9112 has a client send for a target without one.
            match text {
                "" => None,
                t => Some(host::canonical(t).map_err(|_| Denial::InvalidHost)?),
            }
        }
        None => None,
    };
    let (host, host_sent) = match uri.authority() {
        Some(a) => {
            let from_target = host::canonical(a.as_str()).map_err(|_| Denial::InvalidHost)?;
            if version == Version::HTTP_2
                && let Some(h) = &from_header
                && (h.name != from_target.name || h.port != from_target.port)
            {
                return Err(Denial::InvalidHost);
            }
            (Some(from_target), None)
        }
        None => (from_header, header),
    };
    Ok(RequestTarget {
        host,
        host_sent,
        path,
    })
}

/// Routes by host then prefix; `V` is one route (exact index) or the routes whose prefixes
/// fold to one key (case-folded index).
#[derive(Debug)]
struct Index<V> {
    by_host: HashMap<Box<str>, HashMap<Box<str>, V>>,
    any_host: HashMap<Box<str>, V>,
}

impl<V> Default for Index<V> {
    fn default() -> Self {
        Index {
            by_host: HashMap::new(),
            any_host: HashMap::new(),
        }
    }
}

impl<V> Index<V> {
    fn bucket(&mut self, host: Option<&str>) -> &mut HashMap<Box<str>, V> {
        match host {
            Some(h) => self.by_host.entry(h.into()).or_default(),
            None => &mut self.any_host,
        }
    }

    /// A host-specific entry beats a host-less one with an equally long prefix; a longer
    /// prefix wins across both. Returns the entry and its prefix length.
    fn select(&self, host: Option<&str>, path: &str) -> Option<&V> {
        let specific = host
            .and_then(|h| self.by_host.get(h))
            .and_then(|b| longest(b, path));
        let general = longest(&self.any_host, path);
        match (specific, general) {
            (Some(s), Some(g)) if g.0 > s.0 => Some(g.1),
            (Some(s), _) => Some(s.1),
            (None, Some(g)) => Some(g.1),
            (None, None) => None,
        }
    }
}

/// Routes of one listener.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: Index<Arc<Route>>,
    /// The same routes keyed by lower-cased prefix, to see what a case-insensitive upstream
    /// would match.
    folded: Index<Vec<Arc<Route>>>,
    /// Some prefix has upper-case letters: every path is case-checked, not only those with
    /// upper-case letters of their own.
    fold_every_path: bool,
    len: usize,
}

impl RouteTable {
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        let mut t = RouteTable {
            len: routes.len(),
            ..Default::default()
        };
        for r in routes {
            let lower = r.path_prefix.to_ascii_lowercase();
            t.fold_every_path |= *lower != *r.path_prefix;
            t.folded
                .bucket(r.host.as_deref())
                .entry(lower.into())
                .or_default()
                .push(r.clone());
            t.exact
                .bucket(r.host.as_deref())
                .insert(r.path_prefix.clone(), r);
        }
        t
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Every route, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.exact
            .any_host
            .values()
            .chain(self.exact.by_host.values().flat_map(|b| b.values()))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The route for a request, by its canonical host name (see [`host::canonical`]) and
    /// canonical path (see [`path::canonical`]).
    pub fn select(
        &self,
        host: Option<&str>,
        path: &CanonicalPath<'_>,
        method: &Method,
    ) -> Result<&Arc<Route>, Denial> {
        let key = path.match_key();
        let exact = self.exact.select(host, &key);
        let route = if self.fold_every_path || path.has_upper {
            self.case_checked(host, &key, exact)?
        } else {
            exact
        };
        let route = route.ok_or(Denial::NoRoute)?;
        if path.has_params && !route.path_params {
            return Err(Denial::InvalidPath);
        }
        match &route.methods {
            Some(allowed) if !allowed.contains(method) => Err(Denial::MethodNotAllowed),
            _ => Ok(route),
        }
    }

    /// The exact match, unless the path case-folds onto another route: then that route if it
    /// is `case_insensitive`, else the request is refused, since a case-insensitive upstream
    /// would serve it as that route's path without that route's policy.
    fn case_checked<'a>(
        &'a self,
        host: Option<&str>,
        key: &str,
        exact: Option<&'a Arc<Route>>,
    ) -> Result<Option<&'a Arc<Route>>, Denial> {
        let lower = key.to_ascii_lowercase();
        let Some(folded) = self.folded.select(host, &lower) else {
            return Ok(exact);
        };
        if let Some(e) = exact
            && folded.iter().any(|f| Arc::ptr_eq(f, e))
        {
            return Ok(exact);
        }
        match folded.as_slice() {
            [only] if only.case_insensitive => Ok(Some(only)),
            _ => Err(Denial::InvalidPath),
        }
    }
}

/// Longest configured prefix of `path`, trying `path` itself then each parent segment;
/// with the prefix's length.
fn longest<'a, V>(bucket: &'a HashMap<Box<str>, V>, path: &str) -> Option<(usize, &'a V)> {
    if bucket.is_empty() {
        return None;
    }
    let root = || bucket.get("/").map(|v| (1, v));
    let mut candidate = path.trim_end_matches('/');
    loop {
        if candidate.is_empty() {
            return root();
        }
        if let Some(r) = bucket.get(candidate) {
            return Some((candidate.len(), r));
        }
        match candidate.rfind('/') {
            Some(i) => candidate = &candidate[..i],
            None => return root(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised_and_checked() {
        assert_eq!(normalize_prefix("/api/").as_deref(), Ok("/api"));
        assert_eq!(normalize_prefix("/").as_deref(), Ok("/"));
        assert_eq!(normalize_prefix("/%61pi").as_deref(), Ok("/api"));
        assert!(normalize_prefix("api").is_err());
        assert!(normalize_prefix("/a/../b").is_err());
        assert!(normalize_prefix("/a?x").is_err());
        assert!(normalize_prefix("/a;x").is_err());
        assert!(normalize_prefix("/a%2fb").is_err());
    }
}
