//! The issuer's HTTP endpoints. Every answer is JSON that no cache keeps; every refusal is
//! an RFC 6749 error that echoes nothing from the request.
//!
//! Store transactions and argon2 run on Tokio's blocking pool: an fsync or a 19 MiB hash
//! must not stall the connections sharing an async thread.
//!
//! `auth.rs` authenticates clients, `token.rs` is `POST /oauth2/token`, `revoke.rs` is
//! `POST /oauth2/revoke` and `POST /oauth2/introspect`.

mod auth;
mod revoke;
mod token;

use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::request::{OAuthError, json_response};
use super::{Issuer, unix};
use crate::identity::ClientIdentity;

pub(super) type Resp = Response<Full<Bytes>>;

/// Answer one request to an issuer path (see [`Issuer::handles`]). `peer` is the client
/// address (after trusted proxies) that failed authentications are counted against;
/// `identity` the connection's verified client certificate; `now` the gateway's clock.
pub async fn handle<B>(
    issuer: &Issuer,
    req: Request<B>,
    peer: IpAddr,
    identity: Option<&ClientIdentity>,
    now: SystemTime,
) -> Resp
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let settings = issuer.settings();
    let paths = &settings.paths;
    let path = req.uri().path();
    let post = req.method() == Method::POST;
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let result = if path == &*paths.token && post {
        token::token(issuer, req, peer, identity, now).await
    } else if path == &*paths.revoke && post {
        revoke::revoke(issuer, req, peer, identity, now).await
    } else if path == &*paths.introspect && post {
        revoke::introspect(issuer, req, peer, identity, now).await
    } else if path == &*paths.jwks && get {
        let mut resp = json_response(StatusCode::OK, &issuer.key_ring().jwks(unix(now)));
        // Public keys may be cached briefly; a verifier meeting an unknown kid refetches.
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        resp.headers_mut().remove(header::PRAGMA);
        Ok(resp)
    } else if path == &*paths.metadata && get {
        Ok(json_response(StatusCode::OK, &metadata(issuer)))
    } else {
        let allow = if path == &*paths.jwks || path == &*paths.metadata {
            "GET, HEAD"
        } else {
            "POST"
        };
        let mut resp = OAuthError::method_not_allowed().response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        Ok(resp)
    };
    result.unwrap_or_else(|e| e.response())
}

/// RFC 8414 metadata.
fn metadata(issuer: &Issuer) -> Value {
    let s = issuer.settings();
    let url = |p: &str| format!("{}{p}", s.paths.origin);
    let auth_methods = [
        "client_secret_basic",
        "client_secret_post",
        "tls_client_auth",
    ];
    json!({
        "issuer": s.issuer,
        "token_endpoint": url(&s.paths.token),
        "jwks_uri": url(&s.paths.jwks),
        "revocation_endpoint": url(&s.paths.revoke),
        "introspection_endpoint": url(&s.paths.introspect),
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "tls_client_certificate_bound_access_tokens": true,
    })
}

/// Run `f` on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, OAuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| OAuthError::server_error())
}

/// A store failure: logged (it names the file or server, never a value), answered 503
/// `state_unavailable` when the shared store is unreachable or busy, else 500.
pub(super) fn store_failed(e: super::StoreError) -> OAuthError {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "issuer store unavailable");
        return OAuthError::state_unavailable();
    }
    tracing::error!(error = %e, "issuer store failed");
    OAuthError::server_error()
}

impl From<super::StoreError> for OAuthError {
    fn from(e: super::StoreError) -> Self {
        store_failed(e)
    }
}
