//! Which headers carry the verified claims to the upstream (the forwarding side writes them,
//! and removes client-supplied copies).

use http::header::HeaderName;

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
