//! Client authentication for the token, revocation and introspection endpoints.

use std::net::IpAddr;
use std::time::SystemTime;

use super::blocking;
use crate::identity::ClientIdentity;
use crate::issuer::Issuer;
use crate::issuer::clients::{cert_matches, verify_secret};
use crate::issuer::config::is_label;
use crate::issuer::events::Event;
use crate::issuer::request::{Credentials, OAuthError, Params, credentials};
use crate::state::issuer::ClientRecord;

/// A client whose credentials checked out.
pub(super) struct Authenticated {
    pub client: ClientRecord,
    pub by_certificate: bool,
}

/// Authenticate the request's client: throttled per client id and per address, a secret
/// checked with argon2 (as slowly for unknown ids), a certificate against the client's pins.
pub(super) async fn authenticate(
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
    let unavailable = |_| {
        tracing::warn!("client authentication: the shared throttle counts are unavailable");
        OAuthError::state_unavailable()
    };
    throttle
        .check(counted, peer, now)
        .await
        .map_err(unavailable)?
        .map_err(|retry| {
            // No client id: a throttled "id" may be anything, a pasted secret included.
            tracing::info!(%peer, retry_after_s = retry.as_secs(), "client authentication throttled");
            issuer.count(Event::Throttled);
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
            throttle
                .succeeded(&client.id, now)
                .await
                .map_err(unavailable)?;
            Ok(Authenticated {
                by_certificate: matches!(creds, Credentials::Certificate { .. }),
                client: client.clone(),
            })
        }
        _ => {
            throttle
                .failed(counted, peer, now)
                .await
                .map_err(unavailable)?;
            // The id is logged only when it names a client: an unknown "id" may be a
            // secret pasted into the wrong field.
            tracing::info!(
                method = creds.method(),
                client = record.as_ref().map(|c| c.id.as_str()),
                disabled = record.as_ref().is_some_and(|c| c.disabled),
                %peer,
                "client authentication failed"
            );
            issuer.count(Event::AuthFailed);
            Err(OAuthError::invalid_client())
        }
    }
}
