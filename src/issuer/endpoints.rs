//! The issuer's HTTP endpoints. Every answer is JSON that no cache keeps; every refusal is
//! an RFC 6749 error that echoes nothing from the request.
//!
//! Store transactions and argon2 run on Tokio's blocking pool: an fsync or a 19 MiB hash
//! must not stall the connections sharing an async thread.

use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::clients::{cert_matches, verify_secret};
use super::config::is_label;
use super::request::{
    Credentials, OAuthError, Params, credentials, json_response, read_params, scope_list,
};
use super::store::ClientRecord;
use super::tokens::{self, Minted, RefreshRefusal};
use super::{Issuer, unix};
use crate::identity::ClientIdentity;
use crate::token::{MAX_TOKEN_BYTES, RouteAuth};

type Resp = Response<Full<Bytes>>;

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
        token(issuer, req, peer, identity, now).await
    } else if path == &*paths.revoke && post {
        revoke(issuer, req, peer, identity, now).await
    } else if path == &*paths.introspect && post {
        introspect(issuer, req, peer, identity, now).await
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

/// A client whose credentials checked out.
struct Authenticated {
    client: ClientRecord,
    by_certificate: bool,
}

/// Authenticate the request's client: throttled per client id and per address, a secret
/// checked with argon2 (as slowly for unknown ids), a certificate against the client's pins.
async fn authenticate(
    issuer: &Issuer,
    parts: &http::request::Parts,
    params: &Params,
    peer: IpAddr,
    identity: Option<&ClientIdentity>,
    now: SystemTime,
) -> Result<Authenticated, OAuthError> {
    let creds = credentials(&parts.headers, params, identity.is_some())?;
    let id = is_label(creds.id()).then(|| creds.id().to_owned());
    // A certificate cannot be guessed, so only secrets count against the client id (and a
    // flood of wrong secrets cannot lock out a client that uses its certificate).
    let counted = match &creds {
        Credentials::Secret { .. } => id.as_deref(),
        Credentials::Certificate { .. } => None,
    };
    let throttle = &issuer.inner.throttle;
    throttle.check(counted, peer, now).map_err(|retry| {
        // No client id: a throttled "id" may be anything, a pasted secret included.
        tracing::info!(%peer, retry_after_s = retry.as_secs(), "client authentication throttled");
        OAuthError::throttled(retry)
    })?;
    let record = match &id {
        Some(id) => {
            let (i, id) = (issuer.clone(), id.clone());
            blocking(move || i.store().read(|rx| rx.client(&id))).await??
        }
        None => None,
    };
    let usable = record.as_ref().filter(|c| !c.disabled);
    let ok = match &creds {
        Credentials::Secret { secret, .. } => {
            // Bound the memory argon2 takes under load; waiting is better than 19 MiB more.
            let _permit = issuer
                .inner
                .hashing
                .acquire()
                .await
                .map_err(|_| OAuthError::server_error())?;
            let hash = usable.and_then(|c| c.secret_hash.clone());
            let secret = secret.clone();
            blocking(move || verify_secret(secret.as_bytes(), hash.as_deref())).await?
        }
        Credentials::Certificate { .. } => usable.is_some_and(|c| cert_matches(c, identity)),
    };
    match (ok, usable) {
        (true, Some(client)) => {
            throttle.succeeded(&client.id);
            Ok(Authenticated {
                by_certificate: matches!(creds, Credentials::Certificate { .. }),
                client: client.clone(),
            })
        }
        _ => {
            throttle.failed(counted, peer, now);
            // The id is logged only when it names a client: an unknown "id" may be a
            // secret pasted into the wrong field.
            tracing::info!(
                method = creds.method(),
                client = record.as_ref().map(|c| c.id.as_str()),
                disabled = record.as_ref().is_some_and(|c| c.disabled),
                %peer,
                "client authentication failed"
            );
            Err(OAuthError::invalid_client())
        }
    }
}

/// Run `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, OAuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| OAuthError::server_error())
}

/// A store failure: logged (it names the file, never a value), answered 500.
fn store_failed(e: super::StoreError) -> OAuthError {
    tracing::error!(error = %e, "issuer store failed");
    OAuthError::server_error()
}

impl From<super::StoreError> for OAuthError {
    fn from(e: super::StoreError) -> Self {
        store_failed(e)
    }
}

// === POST /oauth2/token ===

async fn token<B>(
    issuer: &Issuer,
    req: Request<B>,
    peer: IpAddr,
    identity: Option<&ClientIdentity>,
    now: SystemTime,
) -> Result<Resp, OAuthError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, params) = read_params(req).await?;
    let auth = authenticate(issuer, &parts, &params, peer, identity, now).await?;
    let requested = params.get("scope").map(scope_list).transpose()?;
    // RFC 8705 3: a token obtained with the certificate is bound to it.
    let cnf = auth
        .by_certificate
        .then(|| identity.map(|i| i.cert_sha256))
        .flatten();
    let (issuer2, settings) = (issuer.clone(), issuer.settings());
    let key = issuer.key_ring().current().clone();
    let client = auth.client.clone();
    let at = unix(now);
    let minted = match params.get("grant_type") {
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
        Some("client_credentials") => {
            let scopes = match requested {
                None => client.scopes.clone(),
                Some(r) => {
                    let granted: Vec<String> = r
                        .into_iter()
                        .filter(|s| client.scopes.contains(s))
                        .collect();
                    if granted.is_empty() {
                        return Err(OAuthError::invalid_scope());
                    }
                    granted
                }
            };
            blocking(move || {
                issuer2.prune_if_due(at);
                tokens::issue(
                    issuer2.store(),
                    &key,
                    &settings,
                    &client,
                    scopes,
                    cnf.as_ref(),
                    at,
                )
            })
            .await??
        }
        Some("refresh_token") => {
            let Some(presented) = params.get("refresh_token").map(str::to_owned) else {
                return Err(OAuthError::invalid_request("refresh_token is missing"));
            };
            let refreshed = blocking(move || {
                tokens::refresh(
                    issuer2.store(),
                    &key,
                    &settings,
                    &client,
                    &presented,
                    requested.as_deref(),
                    cnf.as_ref(),
                    at,
                )
            })
            .await??;
            match refreshed {
                Ok(m) => m,
                Err(refusal) => return Err(refused(issuer, &auth.client, refusal)),
            }
        }
        Some(_) => return Err(OAuthError::unsupported_grant_type()),
    };
    tracing::info!(
        client = %auth.client.id,
        grant = params.get("grant_type").unwrap_or(""),
        method = if auth.by_certificate { "tls_client_auth" } else { "secret" },
        jti = %minted.jti,
        family = %minted.family,
        scope = %minted.scopes.join(" "),
        bound = cnf.is_some(),
        "access token issued"
    );
    Ok(token_response(&minted))
}

fn refused(issuer: &Issuer, client: &ClientRecord, refusal: RefreshRefusal) -> OAuthError {
    match refusal {
        RefreshRefusal::Invalid(why) => {
            tracing::info!(client = %client.id, reason = why, "refresh token refused");
            OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
        }
        RefreshRefusal::Reused {
            family,
            revoked_jtis,
        } => {
            let revocations = issuer.settings().link.revocations().clone();
            for (jti, exp) in &revoked_jtis {
                revocations.insert(jti, *exp);
            }
            tracing::warn!(
                client = %client.id,
                %family,
                access_tokens_revoked = revoked_jtis.len(),
                "a retired refresh token was presented: the token family is revoked"
            );
            OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
        }
        RefreshRefusal::Scope => OAuthError::invalid_scope(),
    }
}

fn token_response(m: &Minted) -> Resp {
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": m.access_token,
            "token_type": "Bearer",
            "expires_in": m.expires_in,
            "refresh_token": m.refresh_token,
            "scope": m.scopes.join(" "),
        }),
    )
}

// === POST /oauth2/revoke and /oauth2/introspect ===

/// Whether `token` is shaped like a JWT (ours are; our refresh tokens have no dot).
fn is_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Verify one of our own access tokens as the token stage would (keys, expiry, denylist).
/// Returns its claims as JSON (only after the signature held).
fn own_access_token(issuer: &Issuer, token: &str, now: SystemTime) -> Option<Value> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
    );
    let verifier = issuer.inner.verifier.load();
    verifier
        .authorize(&headers, &RouteAuth::any_token(), now)
        .ok()??;
    let payload = token.split('.').nth(1)?;
    let json =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
    serde_json::from_slice(&json).ok()
}

async fn revoke<B>(
    issuer: &Issuer,
    req: Request<B>,
    peer: IpAddr,
    identity: Option<&ClientIdentity>,
    now: SystemTime,
) -> Result<Resp, OAuthError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, params) = read_params(req).await?;
    let auth = authenticate(issuer, &parts, &params, peer, identity, now).await?;
    let Some(token) = params.get("token").map(str::to_owned) else {
        return Err(OAuthError::invalid_request("token is missing"));
    };
    let client_id = auth.client.id.clone();
    let at = unix(now);
    // RFC 7009 2.2: an unknown, expired or foreign token is answered 200 all the same, so
    // revocation tells nobody anything about a token.
    if is_jwt(&token) {
        let claims = own_access_token(issuer, &token, now);
        let mine = claims
            .as_ref()
            .filter(|c| c["client_id"] == client_id.as_str());
        if let Some((jti, exp)) =
            mine.and_then(|c| Some((c["jti"].as_str()?.to_owned(), c["exp"].as_u64()?)))
        {
            let i = issuer.clone();
            let j = jti.clone();
            blocking(move || tokens::revoke_access(i.store(), &j, exp)).await??;
            issuer.settings().link.revocations().insert(&jti, exp);
            tracing::info!(client = %client_id, %jti, "access token revoked");
        }
    } else {
        let i = issuer.clone();
        let c = client_id.clone();
        let revoked = blocking(move || tokens::revoke_refresh(i.store(), &c, &token, at)).await??;
        if let Some(r) = revoked {
            let revocations = issuer.settings().link.revocations().clone();
            for (jti, exp) in &r.access {
                revocations.insert(jti, *exp);
            }
            tracing::info!(client = %client_id, family = %r.family, access_tokens_revoked = r.access.len(), "refresh token family revoked");
        }
    }
    let mut resp = Response::new(Full::new(Bytes::new()));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn introspect<B>(
    issuer: &Issuer,
    req: Request<B>,
    peer: IpAddr,
    identity: Option<&ClientIdentity>,
    now: SystemTime,
) -> Result<Resp, OAuthError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, params) = read_params(req).await?;
    let auth = authenticate(issuer, &parts, &params, peer, identity, now).await?;
    let Some(token) = params.get("token").map(str::to_owned) else {
        return Err(OAuthError::invalid_request("token is missing"));
    };
    let settings = issuer.settings();
    let inactive = json!({"active": false});
    let body = if is_jwt(&token) {
        match own_access_token(issuer, &token, now) {
            Some(c) => {
                let mut out = json!({
                    "active": true,
                    "token_type": "Bearer",
                    "iss": c["iss"], "sub": c["sub"], "aud": c["aud"],
                    "client_id": c["client_id"], "jti": c["jti"],
                    "iat": c["iat"], "exp": c["exp"],
                    "scope": c.get("scope").cloned().unwrap_or(json!("")),
                });
                if let Some(cnf) = c.get("cnf") {
                    out["cnf"] = cnf.clone();
                }
                out
            }
            None => inactive,
        }
    } else {
        // A refresh token is only ever useful to its client, so only its client learns of it.
        let (i, s, c, at) = (
            issuer.clone(),
            settings.clone(),
            auth.client.id.clone(),
            unix(now),
        );
        match blocking(move || tokens::active_refresh(i.store(), &s, &c, &token, at)).await?? {
            Some(f) => json!({
                "active": true,
                "token_type": "refresh_token",
                "iss": settings.issuer,
                "sub": f.client_id,
                "client_id": f.client_id,
                "scope": f.scopes.join(" "),
                "iat": f.last_used,
                "exp": tokens::family_exp(&f, settings.refresh_idle_ttl),
            }),
            None => inactive,
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}
