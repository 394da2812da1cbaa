//! The gateway's own OAuth 2.0 token issuer, for integration clients (ERP agents,
//! connectors) that authenticate with their application credentials.
//!
//! # Endpoints (under `[issuer] path_prefix`, on `[issuer] listener`)
//! - `POST /oauth2/token` (RFC 6749): `client_credentials` (4.4) and `refresh_token` (6),
//!   form or JSON bodies; client authentication by HTTP Basic, form fields, or the client
//!   certificate (RFC 8705 `tls_client_auth`, which binds the token with `cnf.x5t#S256`).
//! - `POST /oauth2/revoke` (RFC 7009), `POST /oauth2/introspect` (RFC 7662): authenticated
//!   clients only.
//! - `GET /.well-known/jwks.json` and `GET /.well-known/oauth-authorization-server` (RFC
//!   8414), at the root.
//!
//! # How the gateway trusts it
//! Config validation turns `[issuer]` into [`OwnIssuerSettings`], which carries an
//! [`IssuerLink`]: the key set and denylist the gateway's `TokenVerifier` is built with
//! (`KeySource::Pushed`, and the issuer's [`Revocations`] as its `Denylist`). [`Issuer::open`]
//! fills that link from the store, and every key rotation and revocation updates it, so a
//! revoked token is refused on the next request and a new key verifies at once. A reload that
//! keeps the store inherits the running link, so the link lives as long as the open store.
//!
//! # Files
//! `config.rs` (the section), `crate::state::issuer` (what it holds, behind `IssuerState`), `clients.rs` (registry, argon2id),
//! `keys.rs` (signing keys, rotation, JWKS), `tokens.rs` (access tokens, refresh families),
//! `revocations.rs` (the denylist and the link), `throttle.rs` (failed authentication),
//! `request.rs` (bodies, client credentials, OAuth errors), `endpoints/` (the handlers),
//! `cli.rs` (`portcullis client ...`, `portcullis keys rotate`).
//!
//! Secrets, tokens and private keys are never logged: logs name clients, token ids (`jti`),
//! refresh families and key ids.

pub mod clients;
pub(crate) use crate::config::issuer as config;
mod endpoints;
pub mod events;
mod fleet;
pub(crate) mod keys;
// `pub(crate)`: the fuzzing facade reaches the form parser.
pub(crate) mod request;
mod throttle;
mod tokens;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

pub use crate::state::issuer::{IssuerState, PrivateKey, StoreError};
pub use crate::token::{IssuerLink, Revocations};
pub use config::{IssuerSection, OwnIssuerSettings, validate};
pub use endpoints::handle;
pub use keys::{KeyRing, Rotated, SigningAlg};

use crate::state::issuer::{Embedded, META_ACCESS_TTL};
use crate::token::{Denylist, IssuerSettings, TokenVerifier};
use throttle::{Limits, Throttles};

/// Argon2 verifications run at once (19 MiB each); more wait their turn.
const CONCURRENT_HASHES: usize = 4;
/// Least time between two prunings of expired families, revocations and keys.
const PRUNE_EVERY: u64 = 3600;

/// Why the issuer could not open or reconfigure.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `reconfigure` was given another store file: that needs a new `Issuer`.
    #[error("the issuer store moved from {} to {}: open a new issuer", from.display(), to.display())]
    StoreMoved {
        from: std::path::PathBuf,
        to: std::path::PathBuf,
    },
}

/// The running issuer: the open store and what is derived from it. Cheap to clone.
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ArcSwap<OwnIssuerSettings>,
    store: Box<dyn IssuerState>,
    /// The fleet's store when `store` is on it.
    shared: Option<Arc<crate::state::redis::RedisStore>>,
    ring: ArcSwap<KeyRing>,
    throttle: Throttles,
    /// Verifies the issuer's own access tokens for introspection and revocation: the same
    /// code, keys and denylist as the gateway's token stage.
    verifier: ArcSwap<TokenVerifier>,
    hashing: tokio::sync::Semaphore,
    last_prune: AtomicU64,
    /// Held while the keys change and the ring is rebuilt from the store, so two changes
    /// (a rotation, a pruning) cannot publish their rings out of order.
    keys_lock: Mutex<()>,
    /// A fleet resync is running (one at a time).
    resyncing: std::sync::atomic::AtomicBool,
    /// What the token endpoint did, for the metrics.
    events: Arc<events::Events>,
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("store", &self.inner.store)
            .field("kid", &self.inner.ring.load().current().kid())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Open (or create) the store of `settings`, make the first signing key if there is
    /// none (or a new one if `algorithm` changed), and fill `settings.link`.
    pub fn open(settings: OwnIssuerSettings) -> Result<Issuer, IssuerError> {
        Issuer::open_with(settings, Limits::default(), SystemTime::now())
    }

    /// [`open`](Self::open) on the fleet's shared store when there is one (`[state] backend
    /// = "redis"`), else on the embedded file.
    pub fn open_on(
        settings: OwnIssuerSettings,
        shared: Option<&Arc<crate::state::redis::RedisStore>>,
    ) -> Result<Issuer, IssuerError> {
        match shared {
            None => Issuer::open(settings),
            Some(store) => Issuer::open_in(
                settings,
                Box::new(crate::state::redis::issuer::RedisIssuerState::new(
                    Arc::clone(store),
                )),
                Some(Arc::clone(store)),
                Limits::default(),
                SystemTime::now(),
            ),
        }
    }

    /// Whether this issuer runs on the store `settings` and `shared` name (a reload keeps it
    /// then, and reconfigures it in place).
    pub fn same_store(
        &self,
        settings: &OwnIssuerSettings,
        shared: Option<&Arc<crate::state::redis::RedisStore>>,
    ) -> bool {
        match (&self.inner.shared, shared) {
            (None, None) => self.settings().store == settings.store,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The fleet's store this issuer shares, if it is on one.
    pub fn shared_store(&self) -> Option<&Arc<crate::state::redis::RedisStore>> {
        self.inner.shared.as_ref()
    }

    /// [`open`](Self::open) with other throttle limits, as of `now`.
    pub fn open_with(
        settings: OwnIssuerSettings,
        limits: Limits,
        now: SystemTime,
    ) -> Result<Issuer, IssuerError> {
        let store: Box<dyn IssuerState> = Box::new(Embedded::open(&settings.store)?);
        Issuer::open_in(settings, store, None, limits, now)
    }

    fn open_in(
        settings: OwnIssuerSettings,
        store: Box<dyn IssuerState>,
        shared: Option<Arc<crate::state::redis::RedisStore>>,
        limits: Limits,
        now: SystemTime,
    ) -> Result<Issuer, IssuerError> {
        let ring = prepare(&*store, &settings, unix(now))?;
        let verifier = own_verifier(&settings);
        let issuer = Issuer {
            inner: Arc::new(Inner {
                settings: ArcSwap::from_pointee(settings),
                store,
                throttle: Throttles::new(limits, shared.as_ref()),
                shared,
                ring: ArcSwap::from_pointee(ring),
                verifier: ArcSwap::from_pointee(verifier),
                hashing: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
                last_prune: AtomicU64::new(unix(now)),
                keys_lock: Mutex::new(()),
                resyncing: std::sync::atomic::AtomicBool::new(false),
                events: Arc::default(),
            }),
        };
        issuer.publish()?;
        // The ring may be new (a first key, another algorithm): the others reload theirs.
        issuer.keys_changed();
        issuer.join_fleet();
        let s = issuer.settings();
        tracing::info!(
            store = %issuer.inner.store.location(),
            issuer = %s.issuer,
            kid = %issuer.inner.ring.load().current().kid(),
            revocations = s.link.revocations().len(),
            "token issuer ready"
        );
        Ok(issuer)
    }

    /// Apply reloaded settings for the same store: lifetimes, `iss`, audience, paths; a
    /// changed `algorithm` rotates the signing key. A new link (one validation made rather
    /// than inherited) is filled before this returns.
    pub fn reconfigure(&self, settings: OwnIssuerSettings) -> Result<(), IssuerError> {
        let current = self.settings();
        if self.inner.shared.is_none() && settings.store != current.store {
            return Err(IssuerError::StoreMoved {
                from: current.store.clone(),
                to: settings.store,
            });
        }
        let _keys = self.keys_lock();
        let ring = prepare(&*self.inner.store, &settings, unix(SystemTime::now()))?;
        self.inner.ring.store(Arc::new(ring));
        self.inner.verifier.store(Arc::new(own_verifier(&settings)));
        self.inner.settings.store(Arc::new(settings));
        self.publish()
    }

    /// The settings in force.
    /// The token endpoint's event counts (shared: the metrics read them when scraped).
    pub fn events(&self) -> &Arc<events::Events> {
        &self.inner.events
    }

    pub(crate) fn count(&self, e: events::Event) {
        self.inner.events.count(e);
    }

    pub fn settings(&self) -> Arc<OwnIssuerSettings> {
        self.inner.settings.load_full()
    }

    /// This issuer as the gateway's verifier trusts it (name, `iss`, audience, pushed keys).
    pub fn verifier_source(&self) -> IssuerSettings {
        self.settings().verifier_source()
    }

    /// Revoked access tokens (by `jti`, until `exp`): persisted, loaded at open.
    pub fn denylist(&self) -> Arc<dyn Denylist> {
        self.settings().link.denylist()
    }

    /// Whether `path` is one of the issuer's endpoints (on its listener).
    pub fn handles(&self, path: &str) -> bool {
        self.settings().handles(path)
    }

    /// The listener the issuer is served on.
    pub fn listener(&self) -> Arc<str> {
        self.settings().listener.clone()
    }

    /// The open store (client registry operations on a running gateway).
    pub fn store(&self) -> &dyn IssuerState {
        &*self.inner.store
    }

    /// The keys in force: current and still published.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.inner.ring.load_full()
    }

    /// A new signing key at `now`; the old public key stays published until the tokens it
    /// signed have expired.
    pub fn rotate_key(&self, now: SystemTime) -> Result<Rotated, IssuerError> {
        self.rotate_key_with(None, now)
    }

    /// [`rotate_key`](Self::rotate_key) to `algorithm` (default: the configured one).
    pub fn rotate_key_with(
        &self,
        algorithm: Option<SigningAlg>,
        now: SystemTime,
    ) -> Result<Rotated, IssuerError> {
        let settings = self.settings();
        let (alg, sealer) = (
            algorithm.unwrap_or(settings.algorithm),
            settings.sealer.as_ref(),
        );
        let _keys = self.keys_lock();
        let rotated = self
            .inner
            .store
            .write(|tx| keys::rotate(tx, alg, unix(now), config::OWN_LEEWAY, sealer))?;
        self.reload_ring()?;
        self.keys_changed();
        tracing::info!(kid = %rotated.kid, alg = alg.name(), retired = ?rotated.retired.as_ref().map(|r| &r.0), "issuer signing key rotated");
        Ok(rotated)
    }

    fn keys_lock(&self) -> MutexGuard<'_, ()> {
        // The guard protects an order, not data: a poisoned lock is still usable.
        self.inner
            .keys_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Rebuild the ring from the store and publish it; callers hold the keys lock.
    fn reload_ring(&self) -> Result<(), IssuerError> {
        let settings = self.settings();
        let ring = self
            .inner
            .store
            .read(|rx| keys::load(rx, settings.sealer.as_ref()))?
            .ok_or(StoreError::Crypto("the store has no current signing key"))?;
        self.inner.ring.store(Arc::new(ring));
        self.publish()
    }

    /// Push keys and revocations into the link the gateway's verifier reads.
    fn publish(&self) -> Result<(), IssuerError> {
        let settings = self.settings();
        settings
            .link
            .keys()
            .replace(self.inner.ring.load().key_set());
        let revoked = self.inner.store.read(|rx| rx.revoked())?;
        settings.link.revocations().extend(revoked);
        Ok(())
    }

    /// Prune expired families, revocations and keys at most once per [`PRUNE_EVERY`]; the
    /// caller runs it off the async threads.
    fn prune_if_due(&self, now: u64) {
        let last = self.inner.last_prune.load(Ordering::Relaxed);
        if now < last.saturating_add(PRUNE_EVERY)
            || self
                .inner
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let grace = config::OWN_LEEWAY.as_secs();
        let _keys = self.keys_lock();
        match self.inner.store.write(|tx| tx.prune(now, grace)) {
            Ok(gone) => {
                self.settings().link.revocations().prune(now, grace);
                if gone > 0 {
                    tracing::debug!(records = gone, "issuer store pruned");
                }
                if let Err(e) = self.reload_ring() {
                    tracing::error!(error = %e, "issuer keys could not be reloaded after pruning");
                }
            }
            Err(e) => tracing::warn!(error = %e, "issuer store pruning failed"),
        }
    }
}

/// Record the access-token lifetime (key retention reads it), prune, and make sure a
/// current key of the configured algorithm exists. Returns the key ring.
fn prepare(
    store: &dyn IssuerState,
    settings: &OwnIssuerSettings,
    now: u64,
) -> Result<KeyRing, IssuerError> {
    let alg = settings.algorithm;
    let sealer = settings.sealer.as_ref();
    let ttl = settings.access_token_ttl.as_secs().to_string();
    let (rotated, sealed) = store.write(|tx| {
        tx.set_meta(META_ACCESS_TTL, &ttl)?;
        tx.prune(now, config::OWN_LEEWAY.as_secs())?;
        // A store from before the vault is sealed before anything else reads it.
        let sealed = match sealer {
            Some(s) => keys::seal_plain(tx, s)?,
            None => 0,
        };
        let current = match tx.meta(crate::state::issuer::META_CURRENT_KID)? {
            Some(kid) => tx.key(&kid)?,
            None => None,
        };
        let rotated = match current {
            Some(k) if k.alg == alg => None,
            Some(_) | None => Some(keys::rotate(tx, alg, now, config::OWN_LEEWAY, sealer)?),
        };
        Ok((rotated, sealed))
    })?;
    if sealed > 0 {
        tracing::info!(
            keys = sealed,
            "issuer signing keys stored in clear are now sealed under the vault's data key"
        );
    }
    if let Some(r) = rotated {
        tracing::info!(kid = %r.kid, alg = alg.name(), "issuer signing key created");
    }
    Ok(store
        .read(|rx| keys::load(rx, sealer))?
        .ok_or(StoreError::Crypto("the store has no current signing key"))?)
}

fn own_verifier(settings: &OwnIssuerSettings) -> TokenVerifier {
    // No cache: introspection and revocation are rare, and a cache would keep claims of a
    // token the same request is revoking.
    TokenVerifier::new(vec![settings.verifier_source()], settings.link.denylist())
        .with_cache_max_entries(0)
}
