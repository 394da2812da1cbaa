//! `POST /oauth2/revoke` (RFC 7009) and `POST /oauth2/introspect` (RFC 7662), for
//! authenticated clients only.

use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::auth::authenticate;
use super::{Resp, blocking};
use crate::identity::ClientIdentity;
use crate::issuer::events::Event;
use crate::issuer::request::{OAuthError, json_response, read_params};
use crate::issuer::tokens;
use crate::issuer::{Issuer, unix};
use crate::token::{MAX_TOKEN_BYTES, Presenter, RouteAuth};

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
        .authorize_for(
            &headers,
            &RouteAuth::any_token(),
            Presenter::Inspection,
            now,
        )
        .ok()??;
    let payload = token.split('.').nth(1)?;
    let json =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
    serde_json::from_slice(&json).ok()
}

pub(super) async fn revoke<B>(
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
            issuer.revoked(&[(jti.clone(), exp)]);
            tracing::info!(client = %client_id, %jti, "access token revoked");
            issuer.count(Event::Revoked);
        }
    } else {
        let i = issuer.clone();
        let c = client_id.clone();
        let revoked = blocking(move || tokens::revoke_refresh(i.store(), &c, &token, at)).await??;
        if let Some(r) = revoked {
            issuer.revoked(&r.access);
            tracing::info!(client = %client_id, family = %r.family, access_tokens_revoked = r.access.len(), "refresh token family revoked");
            issuer.count(Event::Revoked);
        }
    }
    let mut resp = Response::new(Full::new(Bytes::new()));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub(super) async fn introspect<B>(
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
