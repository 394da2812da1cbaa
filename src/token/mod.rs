//! The token stage: bearer tokens (RFC 6750) verified on every request to a token route.
//!
//! # Verification order
//!
//! 1. **Extract** (`bearer.rs`): exactly one `Authorization: Bearer <token>` header (scheme
//!    case-insensitive), at most 8 KiB. Never the query string. No header or another scheme:
//!    `token_missing`; anything else wrong: `token_invalid`.
//! 2. **Cache** (`cache.rs`): by SHA-256 of the token. A hit is re-checked every time: `exp`
//!    and `nbf` against `now`, the denylist, and that the verifying key is still in its
//!    issuer's key set; then on to step 9.
//! 3. **Shape**: three base64url segments; the header's `alg` is one we accept (never
//!    `none`), no `crit`. `jku`, `x5u`, `x5c`, `jwk` are ignored: keys come from config only.
//! 4. **Issuer**: the unverified `iss` selects the configured issuer (only to choose keys);
//!    a route limited to other issuers refuses here, before any signature work.
//! 5. **Key**: the key named by `kid` (else the issuer's keys without a kid) that is allowed
//!    `alg`: the algorithm comes from the key, the header only picks among its algorithms. An
//!    unknown kid asks a remote JWKS for a (rate-limited) refetch without waiting for it.
//! 6. **Signature**.
//! 7. **Claims**: `exp` required and in the future, `nbf` and `iat` not in the future (all
//!    with the issuer's leeway), `aud` one of the issuer's audiences; scopes and the claims
//!    passed upstream must be well-formed.
//! 8. **Denylist** on `jti`; then the token is cached until `exp`.
//! 9. **Binding**: a token with `cnf.x5t#S256` (RFC 8705) passes only on a connection whose
//!    client certificate has that SHA-256 (else `token_invalid`); any other `cnf` is refused
//!    in step 7, since it cannot be checked.
//! 10. **Route**: the route accepts the issuer (else `token_invalid`) and the token has the
//!     scopes (else `insufficient_scope`).

mod alg;
mod bearer;
mod cache;
mod config;
mod jwks;
mod keys;
mod keyset;
mod revocations;
mod scopes;
mod upstream;
// `pub(crate)`: the fuzzing facade reaches the split and claim checks.
pub(crate) mod verify;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use alg::{Alg, AlgSet, KeyKind};
pub use bearer::{MAX_TOKEN_BYTES, TokenDenial};
pub use config::{
    RouteAuthKeys, TokenIssuerSection, TokenKeySection, TokenSection, TokenSettings,
    validate_issuers, validate_route_auth, validate_token_section,
};
pub use jwks::{FetchError, MAX_JWKS_BYTES, RemoteJwks, RemoteJwksSettings};
pub use keys::{KeyError, VerifyingKey};
pub use keyset::{KeySet, KeySource, PushedKeys};
pub use revocations::{IssuerLink, Revocations};
pub use scopes::{RouteAuth, ScopeSet, is_scope_token};
pub use upstream::ClaimHeaders;
pub use verify::Claims;

use cache::{Entry, TokenCache};
use verify::{Expect, Reject};

/// Default bound on cached tokens.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;

/// Revoked token ids. Consulted on every verification and every cache hit, so a revocation
/// takes effect on the next request. Must be fast: it runs on the request path.
pub trait Denylist: Send + Sync {
    /// Whether the token with this `jti` is revoked at `now`.
    fn is_revoked(&self, jti: &str, now: SystemTime) -> bool;
}

/// Who presents a token, for certificate-bound tokens (RFC 8705 `cnf.x5t#S256`).
#[derive(Debug, Clone, Copy)]
pub enum Presenter<'a> {
    /// A request on a connection, with its verified client certificate if any: a bound
    /// token passes only with that certificate.
    Connection(Option<&'a crate::identity::ClientIdentity>),
    /// Not a use of the token: the issuer inspecting its own token (introspection,
    /// revocation). The binding is reported in the claims, not checked.
    Inspection,
}

/// No revocations (until the gateway's own issuer provides its denylist).
pub struct NoRevocations;

impl Denylist for NoRevocations {
    fn is_revoked(&self, _jti: &str, _now: SystemTime) -> bool {
        false
    }
}

/// One trusted issuer, validated.
#[derive(Clone)]
pub struct IssuerSettings {
    /// Config name: what routes name, logs print and `x-auth-issuer` carries.
    pub name: Arc<str>,
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    /// A token must name one of these in `aud`.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf`, `iat`.
    pub leeway: Duration,
    /// A token whose `exp` lies further ahead than this (plus leeway) is refused.
    pub max_lifetime: Duration,
    pub keys: KeySource,
}

struct Issuer {
    name: Arc<str>,
    name_value: HeaderValue,
    iss: Box<str>,
    audiences: Box<[Box<str>]>,
    leeway: Duration,
    max_lifetime: Duration,
    keys: KeySource,
}

/// Verifies bearer tokens for every configured issuer. One per config snapshot.
pub struct TokenVerifier {
    issuers: Box<[Issuer]>,
    cache: TokenCache,
    denylist: Arc<dyn Denylist>,
    /// Remote JWKS tasks, stopped when this verifier is dropped (a reload replaced it).
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl TokenVerifier {
    /// A verifier with the default cache bound. Remote key sets start empty until
    /// [`spawn_refresh`](Self::spawn_refresh) (or [`inherit_keys`](Self::inherit_keys)).
    pub fn new(issuers: Vec<IssuerSettings>, denylist: Arc<dyn Denylist>) -> Self {
        let issuers = issuers
            .into_iter()
            .map(|s| Issuer {
                // Names are validated labels; a name that is not a header value sends none.
                name_value: HeaderValue::from_str(&s.name).unwrap_or(HeaderValue::from_static("")),
                name: s.name,
                iss: s.issuer.into(),
                audiences: s.audiences.into_iter().map(Into::into).collect(),
                leeway: s.leeway,
                max_lifetime: s.max_lifetime,
                keys: s.keys,
            })
            .collect();
        TokenVerifier {
            issuers,
            cache: TokenCache::new(DEFAULT_CACHE_ENTRIES),
            denylist,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Bound the cache at `max` tokens; 0 turns caching off.
    pub fn with_cache_max_entries(mut self, max: usize) -> Self {
        self.cache = TokenCache::new(max);
        self
    }

    /// Check the request's bearer token against the route, as if presented on a connection
    /// without a client certificate (so a certificate-bound token is refused). `Ok(None)` for
    /// `auth = "none"` routes (no token read); `Ok(Some(claims))` for a token that passed.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        auth: &RouteAuth,
        now: SystemTime,
    ) -> Result<Option<Arc<Claims>>, TokenDenial> {
        self.authorize_for(headers, auth, Presenter::Connection(None), now)
    }

    /// [`authorize`](Self::authorize) for a token presented by `presenter`: on the request
    /// path, the connection and its client certificate, which a certificate-bound token
    /// (RFC 8705) must match.
    pub fn authorize_for(
        &self,
        headers: &HeaderMap,
        auth: &RouteAuth,
        presenter: Presenter<'_>,
        now: SystemTime,
    ) -> Result<Option<Arc<Claims>>, TokenDenial> {
        let (issuers, all_of, any_of) = match auth {
            RouteAuth::None => return Ok(None),
            RouteAuth::Bearer {
                issuers,
                all_of,
                any_of,
            } => (issuers, all_of, any_of),
        };
        let token = bearer::extract(headers)?;
        let digest = cache::digest(token);
        let claims = match self.cached(&digest, now)? {
            Some(claims) => claims,
            None => self.verify(token, digest, issuers, now).map_err(|r| {
                tracing::debug!(reason = %r, "bearer token refused");
                r.denial()
            })?,
        };
        // Before the route's requirements: a holder without the certificate learns nothing.
        if let (Some(bound), Presenter::Connection(identity)) = (&claims.cert_sha256, presenter) {
            let presented = identity.map(|i| &i.cert_sha256[..]);
            let same = presented.is_some_and(|p| {
                aws_lc_rs::constant_time::verify_slices_are_equal(p, bound).is_ok()
            });
            if !same {
                tracing::debug!("certificate-bound token presented without its certificate");
                return Err(TokenDenial::Invalid);
            }
        }
        if !scopes::issuer_allowed(issuers, &claims.issuer) {
            return Err(TokenDenial::Invalid);
        }
        if !scopes::scopes_satisfied(&claims.scopes, all_of, any_of) {
            return Err(TokenDenial::InsufficientScope);
        }
        Ok(Some(claims))
    }

    /// A cache hit still good at `now`: `Ok(None)` on a miss, or when the entry's key left its
    /// key set (the entry is dropped and the token verified afresh).
    fn cached(
        &self,
        digest: &cache::Digest,
        now: SystemTime,
    ) -> Result<Option<Arc<Claims>>, TokenDenial> {
        let Some(hit) = self.cache.get(digest) else {
            return Ok(None);
        };
        if now >= hit.expires_at {
            self.cache.remove(digest);
            return Err(TokenDenial::Expired);
        }
        if now < hit.valid_from {
            return Err(TokenDenial::Invalid);
        }
        if let Some(jti) = &hit.claims.jti
            && self.denylist.is_revoked(jti, now)
        {
            return Err(TokenDenial::Invalid);
        }
        let key_present = self
            .issuers
            .get(hit.issuer)
            .is_some_and(|i| i.keys.with_keys(|set| set.contains(&hit.key)));
        if !key_present {
            self.cache.remove(digest);
            return Ok(None);
        }
        Ok(Some(hit.claims))
    }

    /// Steps 3 to 8 of the module doc, then cache the result.
    fn verify(
        &self,
        token: &[u8],
        digest: cache::Digest,
        allowed: &Option<Vec<Arc<str>>>,
        now: SystemTime,
    ) -> Result<Arc<Claims>, Reject> {
        let seg = verify::split(token)?;
        let mut buf = (Vec::new(), Vec::new());
        let parsed = verify::parse(&seg, &mut buf)?;
        let iss = parsed.claims.iss.as_deref().ok_or(Reject::UnknownIssuer)?;
        let (index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| *i.iss == *iss)
            .ok_or(Reject::UnknownIssuer)?;
        if !scopes::issuer_allowed(allowed, &issuer.name) {
            return Err(Reject::IssuerNotAllowed);
        }
        let kid = parsed.kid.as_deref();
        let key = issuer.keys.with_keys(|set| {
            if kid.is_some_and(|k| !set.knows_kid(k)) {
                issuer.keys.unknown_kid();
            }
            verify::verify_signature(set.candidates(kid, parsed.alg), parsed.alg, &seg)
        })?;
        let window = verify::check_claims(
            parsed.claims,
            &Expect {
                issuer: &issuer.name,
                issuer_value: &issuer.name_value,
                audiences: &issuer.audiences,
                leeway: issuer.leeway,
                max_lifetime: issuer.max_lifetime,
                now,
            },
        )?;
        if let Some(jti) = &window.claims.jti
            && self.denylist.is_revoked(jti, now)
        {
            return Err(Reject::Revoked);
        }
        let claims = Arc::new(window.claims);
        let entry = Entry {
            claims: claims.clone(),
            key,
            issuer: index,
            expires_at: window.expires_at,
            valid_from: window.valid_from,
        };
        self.cache.insert(digest, entry, now);
        Ok(claims)
    }

    /// Start one fetch task per remote JWKS (each fetches at once, then on its interval).
    /// They stop when `shutdown` turns true or this verifier is dropped. Needs a Tokio runtime;
    /// a second call does nothing.
    pub fn spawn_refresh(&self, shutdown: watch::Receiver<bool>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if !tasks.is_empty() {
            return;
        }
        for remote in self.remotes() {
            tasks.push(tokio::spawn(remote.clone().run(shutdown.clone())));
        }
    }

    /// Wait until every remote JWKS has finished its first fetch (or `timeout`); `true` when
    /// all did. Start-up can wait on it so the first requests meet loaded keys.
    pub async fn wait_for_first_fetch(&self, timeout: Duration) -> bool {
        let all = async {
            for remote in self.remotes() {
                let mut rx = remote.attempts();
                if rx.wait_for(|n| *n > 0).await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, all).await.unwrap_or(false)
    }

    /// After a reload: take the remote key sets `previous` already fetched for the same
    /// issuer name and URL, so the new snapshot does not start without keys.
    pub fn inherit_keys(&self, previous: &TokenVerifier) {
        for new in self.issuers.iter() {
            let KeySource::Remote(remote) = &new.keys else {
                continue;
            };
            let old = previous.issuers.iter().find(|o| o.name == new.name);
            if let Some(KeySource::Remote(old)) = old.map(|o| &o.keys)
                && old.url() == remote.url()
            {
                remote.adopt(old);
            }
        }
    }

    /// Tokens in the cache (for metrics).
    /// Cache lookups so far: (hits, misses).
    pub fn cache_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.cache.hits.load(Relaxed),
            self.cache.misses.load(Relaxed),
        )
    }

    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Configured issuer names.
    pub fn issuer_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.issuers.iter().map(|i| &i.name)
    }

    fn remotes(&self) -> impl Iterator<Item = &Arc<RemoteJwks>> {
        self.issuers.iter().filter_map(|i| match &i.keys {
            KeySource::Remote(r) => Some(r),
            KeySource::Static(_) | KeySource::Pushed(_) => None,
        })
    }
}

impl Drop for TokenVerifier {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
    }
}

impl Reject {
    fn denial(self) -> TokenDenial {
        match self {
            Reject::Expired => TokenDenial::Expired,
            Reject::Malformed
            | Reject::BadJson
            | Reject::Algorithm
            | Reject::Crit
            | Reject::UnknownIssuer
            | Reject::IssuerNotAllowed
            | Reject::UnknownKey
            | Reject::Signature
            | Reject::MissingExp
            | Reject::TooLong
            | Reject::NotYetValid
            | Reject::IssuedInFuture
            | Reject::Audience
            | Reject::BadClaim
            | Reject::Revoked => TokenDenial::Invalid,
        }
    }
}
