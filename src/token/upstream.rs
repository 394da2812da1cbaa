//! What the upstream learns about the token: the verified claims as headers, and never a
//! client-supplied copy of those headers.

use http::header::{AUTHORIZATION, HeaderMap, HeaderName};

use super::verify::Claims;

/// Which claim headers the upstream gets, and whether it still sees the token.
///
/// # Defaults
/// Authorization removed; `x-auth-subject`, `x-auth-client-id`, `x-auth-scopes` (space
/// separated) and `x-auth-issuer` (the configured issuer name) set from the verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeaders {
    /// Pass the client's Authorization header on to the upstream of a token route.
    pub keep_authorization: bool,
    /// `None`: the claim is not sent.
    pub subject: Option<HeaderName>,
    pub client_id: Option<HeaderName>,
    pub scopes: Option<HeaderName>,
    pub issuer: Option<HeaderName>,
}

impl Default for ClaimHeaders {
    fn default() -> Self {
        ClaimHeaders {
            keep_authorization: false,
            subject: Some(HeaderName::from_static("x-auth-subject")),
            client_id: Some(HeaderName::from_static("x-auth-client-id")),
            scopes: Some(HeaderName::from_static("x-auth-scopes")),
            issuer: Some(HeaderName::from_static("x-auth-issuer")),
        }
    }
}

/// The default claim header names: removed from client requests even when renamed or turned
/// off, since an upstream may still read them.
static DEFAULT_NAMES: [HeaderName; 4] = [
    HeaderName::from_static("x-auth-subject"),
    HeaderName::from_static("x-auth-client-id"),
    HeaderName::from_static("x-auth-scopes"),
    HeaderName::from_static("x-auth-issuer"),
];

impl ClaimHeaders {
    /// Every name removed from client requests: the defaults and the configured names.
    pub fn scrubbed(&self) -> impl Iterator<Item = &HeaderName> + Clone {
        let configured = [&self.subject, &self.client_id, &self.scopes, &self.issuer];
        DEFAULT_NAMES.iter().chain(configured.into_iter().flatten())
    }
}

/// Rewrite the request headers for the upstream. Call on every request, token route or not:
///
/// - client-supplied claim headers (configured names and the defaults) are always removed, so
///   an upstream that trusts `x-auth-subject` cannot be fed one by a client, even on an
///   `auth = "none"` route;
/// - with `claims` (a token was verified), the Authorization header is removed unless
///   `keep_authorization`, and the claim headers are set. Without claims, Authorization is
///   left alone: it was not ours, and such an upstream may do its own authentication.
pub fn rewrite_upstream_headers(
    headers: &mut HeaderMap,
    claims: Option<&Claims>,
    cfg: &ClaimHeaders,
) {
    crate::forward::remove_present(headers, cfg.scrubbed());
    let Some(claims) = claims else {
        return;
    };
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
