//! `POST /oauth2/token`: client credentials (RFC 6749 4.4) and refresh (RFC 6749 6).

use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::json;

use super::auth::authenticate;
use super::{Resp, blocking};
use crate::identity::ClientIdentity;
use crate::issuer::events::Event;
use crate::issuer::request::{OAuthError, json_response, read_params, scope_list};
use crate::issuer::tokens::{self, Minted, RefreshRefusal};
use crate::issuer::{Issuer, unix};
use crate::state::issuer::ClientRecord;

pub(super) async fn token<B>(
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
    // An empty `scope` asks for nothing in particular: the default, as if absent.
    let requested = params
        .get("scope")
        .map(scope_list)
        .transpose()?
        .filter(|r| !r.is_empty());
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
    issuer.count(match params.get("grant_type") {
        Some("refresh_token") => Event::Refreshed,
        _ => Event::Issued,
    });
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
            issuer.count(Event::RefreshRefused);
            OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
        }
        RefreshRefusal::Reused {
            family,
            revoked_jtis,
        } => {
            issuer.revoked(&revoked_jtis);
            issuer.count(Event::ReuseDetected);
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
