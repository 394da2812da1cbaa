//! What the issuer mints: access tokens (JWTs signed with the current key) and refresh
//! tokens (256 random bits, opaque, stored only as SHA-256 hashes) in families.
//!
//! # Refresh families (RFC 9700 section 4.14.2)
//! A client-credentials grant starts a family. Each refresh returns a new refresh token
//! and retires the one presented; presenting a retired token revokes the whole family and
//! the access tokens it issued that may still be valid. The check and the rotation run in
//! one store write transaction, and redb runs those one at a time: of two concurrent
//! refreshes of one token exactly one succeeds, and the other presented a token that was
//! retired by then, so it also revokes the family (a client must not refresh one token
//! twice; it can always start again with its credentials).
//!
//! A family expires `refresh_token_ttl` after it started (absolute) or `refresh_idle_ttl`
//! after its last refresh (idle), and is refused once its client is disabled.

use std::time::Duration;

use serde_json::{Value, json};

use super::clients::random_b64url;
use super::config::{OWN_LEEWAY, OwnIssuerSettings};
use super::keys::SigningKey;
use crate::identity::sha256;
use crate::state::issuer::{
    ClientRecord, FamilyRecord, IssuerState, IssuerTx, StoreError, TxError,
};

/// Access-token ids kept per family for revoking them with it; older ones have expired.
const MAX_TRACKED_ACCESS: usize = 16;
/// Longest refresh token looked up (ours are 43 characters).
const MAX_REFRESH_TOKEN: usize = 128;

/// A token response's content.
#[derive(Debug)]
pub struct Minted {
    pub access_token: String,
    pub jti: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub family: String,
    pub scopes: Vec<String>,
}

/// Why a refresh was refused (`invalid_grant`, or `invalid_scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRefusal {
    /// Unknown, malformed, expired, revoked, or another client's token. Nothing changed.
    Invalid(&'static str),
    /// A retired token: the family and its live access tokens are now revoked.
    Reused {
        family: String,
        revoked_jtis: Vec<(String, u64)>,
    },
    /// The requested scope is not within the family's.
    Scope,
}

/// The access-token lifetime for `client`.
pub fn access_ttl(settings: &OwnIssuerSettings, client: &ClientRecord) -> u64 {
    client
        .access_token_ttl
        .unwrap_or(settings.access_token_ttl.as_secs())
}

/// Sign an access token for `client` with `scopes`, bound to a certificate when `cnf` (its
/// SHA-256) is given (RFC 8705 `cnf.x5t#S256`). Returns `(token, jti, exp)`.
fn access_token(
    key: &SigningKey,
    settings: &OwnIssuerSettings,
    client: &ClientRecord,
    scopes: &[String],
    cnf: Option<&[u8; 32]>,
    now: u64,
) -> Result<(String, String, u64), TxError> {
    let jti = random_b64url::<16>().map_err(|_| TxError::Crypto("random source failed"))?;
    let exp = now.saturating_add(access_ttl(settings, client));
    let mut claims = json!({
        "iss": settings.issuer,
        "sub": client.id,
        "aud": settings.audience,
        "iat": now,
        "exp": exp,
        "jti": jti,
        "client_id": client.id,
    });
    if !scopes.is_empty() {
        claims["scope"] = Value::String(scopes.join(" "));
    }
    if let Some(hash) = cnf {
        claims["cnf"] = json!({ "x5t#S256": b64url(hash) });
    }
    Ok((key.sign_jwt(&claims)?, jti, exp))
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn new_refresh_token() -> Result<(String, [u8; 32]), TxError> {
    let token = random_b64url::<32>().map_err(|_| TxError::Crypto("random source failed"))?;
    let hash = sha256(token.as_bytes());
    Ok((token, hash))
}

/// Client credentials: an access token and a new refresh family, in one transaction.
pub fn issue(
    store: &dyn IssuerState,
    key: &SigningKey,
    settings: &OwnIssuerSettings,
    client: &ClientRecord,
    scopes: Vec<String>,
    cnf: Option<&[u8; 32]>,
    now: u64,
) -> Result<Minted, StoreError> {
    store.write(|tx| {
        let (access_token, jti, exp) = access_token(key, settings, client, &scopes, cnf, now)?;
        let (refresh_token, hash) = new_refresh_token()?;
        let family = FamilyRecord {
            id: random_b64url::<16>().map_err(|_| TxError::Crypto("random source failed"))?,
            client_id: client.id.clone(),
            scopes: scopes.clone(),
            created_at: now,
            expires_at: now.saturating_add(settings.refresh_token_ttl.as_secs()),
            last_used: now,
            current: hex(&hash),
            generation: 0,
            revoked_at: None,
            access: vec![(jti.clone(), exp)],
        };
        tx.put_refresh(&hash, &family.id)?;
        tx.put_family(&family)?;
        Ok(Minted {
            access_token,
            jti,
            expires_in: exp - now,
            refresh_token,
            family: family.id,
            scopes: scopes.clone(),
        })
    })
}

/// The refresh-token grant for the authenticated `client`: rotate `token` within its
/// family, or refuse (see [`RefreshRefusal`]). `requested`: the `scope` parameter, which
/// may narrow the access token's scopes, never widen them.
#[allow(clippy::too_many_arguments)]
pub fn refresh(
    store: &dyn IssuerState,
    key: &SigningKey,
    settings: &OwnIssuerSettings,
    client: &ClientRecord,
    token: &str,
    requested: Option<&[String]>,
    cnf: Option<&[u8; 32]>,
    now: u64,
) -> Result<Result<Minted, RefreshRefusal>, StoreError> {
    if token.is_empty() || token.len() > MAX_REFRESH_TOKEN {
        return Ok(Err(RefreshRefusal::Invalid("malformed")));
    }
    let hash = sha256(token.as_bytes());
    store.write(|tx| {
        let Some(mut family) = family_of(tx, &hash)? else {
            return Ok(Err(RefreshRefusal::Invalid("unknown")));
        };
        if family.client_id != client.id {
            return Ok(Err(RefreshRefusal::Invalid("another client's token")));
        }
        if family.revoked_at.is_some() {
            return Ok(Err(RefreshRefusal::Invalid("revoked family")));
        }
        if family.current != hex(&hash) {
            let revoked_jtis = revoke_family(tx, &mut family, now)?;
            return Ok(Err(RefreshRefusal::Reused {
                family: family.id,
                revoked_jtis,
            }));
        }
        let idle_end = family
            .last_used
            .saturating_add(settings.refresh_idle_ttl.as_secs());
        if now >= family.expires_at || now >= idle_end {
            return Ok(Err(RefreshRefusal::Invalid("expired")));
        }
        let scopes: Vec<String> = match requested {
            None => family.scopes.clone(),
            Some(r) if r.iter().all(|s| family.scopes.contains(s)) => r.to_vec(),
            Some(_) => return Ok(Err(RefreshRefusal::Scope)),
        };
        // The client may have lost scopes since the family started.
        let scopes: Vec<String> = scopes
            .into_iter()
            .filter(|s| client.scopes.contains(s))
            .collect();
        let (access_token, jti, exp) = access_token(key, settings, client, &scopes, cnf, now)?;
        let (refresh_token, next) = new_refresh_token()?;
        tx.put_refresh(&next, &family.id)?;
        family.current = hex(&next);
        family.generation += 1;
        family.last_used = now;
        track_access(&mut family, jti.clone(), exp, now);
        tx.put_family(&family)?;
        Ok(Ok(Minted {
            access_token,
            jti,
            expires_in: exp - now,
            refresh_token,
            family: family.id,
            scopes,
        }))
    })
}

fn family_of(tx: &dyn IssuerTx, hash: &[u8; 32]) -> Result<Option<FamilyRecord>, TxError> {
    match tx.family_of(hash)? {
        None => Ok(None),
        Some(id) => tx.family(&id),
    }
}

/// Keep the family's recent access-token ids, dropping expired ones.
fn track_access(family: &mut FamilyRecord, jti: String, exp: u64, now: u64) {
    let grace = OWN_LEEWAY.as_secs();
    family
        .access
        .retain(|(_, e)| e.saturating_add(grace) >= now);
    family.access.push((jti, exp));
    if family.access.len() > MAX_TRACKED_ACCESS {
        let extra = family.access.len() - MAX_TRACKED_ACCESS;
        family.access.drain(..extra);
    }
}

/// Mark `family` revoked and deny its access tokens that may still be valid; returns those.
fn revoke_family(
    tx: &mut dyn IssuerTx,
    family: &mut FamilyRecord,
    now: u64,
) -> Result<Vec<(String, u64)>, TxError> {
    let grace = OWN_LEEWAY.as_secs();
    family.revoked_at = Some(now);
    let live: Vec<(String, u64)> = family
        .access
        .iter()
        .filter(|(_, exp)| exp.saturating_add(grace) >= now)
        .cloned()
        .collect();
    for (jti, exp) in &live {
        tx.revoke_jti(jti, *exp)?;
    }
    tx.put_family(family)?;
    Ok(live)
}

/// A family revoked through RFC 7009, and the access tokens revoked with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRevoked {
    pub family: String,
    pub access: Vec<(String, u64)>,
}

/// RFC 7009 for a refresh token: revoke its family if it is `client_id`'s; `None` when it
/// is not (nothing changed).
pub fn revoke_refresh(
    store: &dyn IssuerState,
    client_id: &str,
    token: &str,
    now: u64,
) -> Result<Option<FamilyRevoked>, StoreError> {
    if token.is_empty() || token.len() > MAX_REFRESH_TOKEN {
        return Ok(None);
    }
    let hash = sha256(token.as_bytes());
    store.write(|tx| {
        let Some(mut family) = family_of(tx, &hash)? else {
            return Ok(None);
        };
        if family.client_id != client_id || family.revoked_at.is_some() {
            return Ok(None);
        }
        let access = revoke_family(tx, &mut family, now)?;
        Ok(Some(FamilyRevoked {
            family: family.id,
            access,
        }))
    })
}

/// RFC 7009 for an access token: deny `jti` until `exp`.
pub fn revoke_access(store: &dyn IssuerState, jti: &str, exp: u64) -> Result<(), StoreError> {
    store.write(|tx| tx.revoke_jti(jti, exp))
}

/// The family of a refresh token that `client_id` may use now (RFC 7662 `active`): the
/// current token of a live family of that client.
pub fn active_refresh(
    store: &dyn IssuerState,
    settings: &OwnIssuerSettings,
    client_id: &str,
    token: &str,
    now: u64,
) -> Result<Option<FamilyRecord>, StoreError> {
    if token.is_empty() || token.len() > MAX_REFRESH_TOKEN {
        return Ok(None);
    }
    let hash = sha256(token.as_bytes());
    let idle = settings.refresh_idle_ttl;
    store.read(|rx| {
        let Some(id) = rx.family_of(&hash)? else {
            return Ok(None);
        };
        Ok(rx.family(&id)?.filter(|f| {
            f.client_id == client_id
                && f.revoked_at.is_none()
                && f.current == hex(&hash)
                && now < f.expires_at
                && now < f.last_used.saturating_add(idle.as_secs())
        }))
    })
}

/// When a family ends for the idle rule, for introspection's `exp`.
pub fn family_exp(family: &FamilyRecord, idle: Duration) -> u64 {
    family
        .expires_at
        .min(family.last_used.saturating_add(idle.as_secs()))
}
