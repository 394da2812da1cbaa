//! Reload: re-read the config, bind what is new, build one generation and store it once,
//! then start and stop accept loops to match.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Gateway, bind};
use crate::config::{self, ConfigErrors};
use crate::generation::Generation;
use crate::state::licenses::{Licensing, StoreError};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid; every problem is listed.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A new or moved listener's address could not be bound.
    #[error("cannot bind listener \"{name}\" to {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The (new) license store could not be opened or re-read.
    #[error("licenses.store: {0}")]
    LicenseStore(#[from] StoreError),
    /// The (new) issuer store could not be opened, or the issuer not reconfigured.
    #[error("issuer.store: {0}")]
    Issuer(Box<crate::issuer::IssuerError>),
    /// `[enrollment] tokens` could not be opened (boxed: a rare, large error).
    #[error("enrollment.tokens: {0}")]
    Enrollment(Box<crate::enrollment::StoreError>),
    /// `[limits] quota_store` could not be opened.
    #[error("limits.quota_store: {0}")]
    QuotaStore(Box<crate::state::quotas::QuotaStoreError>),
    /// `[state]`'s Redis client could not be set up.
    #[error("{0}")]
    SharedState(#[from] crate::state::redis::StoreError),
    /// `[tracing]`'s new exporter could not be set up.
    #[error("{0}")]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub listeners: usize,
    pub routes: usize,
    /// Listeners bound anew (added, or moved to another address).
    pub rebound: Vec<String>,
    /// Listeners that stopped accepting (removed, or moved away from an address).
    pub closed: Vec<String>,
    pub warnings: Vec<String>,
}

impl Gateway {
    /// Re-read the config file. Only a wholly valid file changes anything: the snapshot is
    /// swapped atomically (in-flight requests finish on the one they started with; the
    /// next request on every keep-alive connection sees the new one), new and moved
    /// listeners are bound first (a bind failure aborts the reload), unchanged listeners
    /// keep their sockets, removed ones stop accepting.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let result = self.reload_inner().await;
        let now = SystemTime::now();
        let time = crate::license::dates::rfc3339(crate::license::dates::unix(now));
        self.history().reload(match &result {
            Ok(s) => super::admin::ReloadRecord {
                time,
                result: "ok",
                listeners: s.listeners,
                routes: s.routes,
                errors: 0,
            },
            Err(e) => super::admin::ReloadRecord {
                time,
                result: "failed",
                listeners: 0,
                routes: 0,
                errors: match e {
                    ReloadError::Config(c) => c.0.len(),
                    _ => 1,
                },
            },
        });
        match &result {
            Ok(s) => {
                self.shared.metrics.reload(true, now);
                self.shared
                    .metrics
                    .config_loaded(&self.shared.generation.load().snapshot, now);
                tracing::info!(listeners = s.listeners, routes = s.routes, rebound = ?s.rebound, closed = ?s.closed, "config reloaded");
            }
            Err(e) => {
                self.shared.metrics.reload(false, now);
                for line in e.to_string().lines() {
                    tracing::error!("config reload refused, nothing changed: {line}");
                }
            }
        }
        result
    }

    async fn reload_inner(&self) -> Result<ReloadSummary, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        if *self.signals.stop.borrow() {
            return Err(ReloadError::ShuttingDown);
        }
        let previous = self.shared.generation.load_full();
        let path = self.config_path.clone();
        let before = Arc::clone(&previous.snapshot);
        let loaded = tokio::task::spawn_blocking(move || {
            config::reload_file(&path, SystemTime::now(), &before)
        })
        .await
        .map_err(|e| {
            ReloadError::Config(ConfigErrors(vec![config::ConfigIssue::new(
                &self.config_path,
                "",
                format!("validation did not finish: {e}"),
            )]))
        })??;
        let snapshot = loaded.snapshot;

        // Bind what is new or moved before touching anything.
        let current: HashMap<Arc<str>, SocketAddr> = self
            .listeners
            .lock()
            .map(|h| h.iter().map(|h| (h.name.clone(), h.bind)).collect())
            .unwrap_or_default();
        let mut fresh = Vec::new();
        for l in &snapshot.listeners {
            if current.get(&l.name) == Some(&l.bind) {
                continue;
            }
            let (tcp, local) = bind(l.bind).await.map_err(|source| ReloadError::Bind {
                name: l.name.to_string(),
                addr: l.bind,
                source,
            })?;
            fresh.push((l.clone(), tcp, local));
        }

        // Tokens: keys already fetched from an unchanged JWKS URL carry over; the new
        // verifier's refresh tasks run until shutdown or until it is replaced.
        snapshot.tokens.inherit_keys(&previous.snapshot.tokens);
        snapshot.tokens.spawn_refresh(self.signals.stop.clone());

        // The admin listener is reconciled like the others: a new or moved one is bound
        // before anything changes; one removed from the config stops. (Leaving the old
        // socket serving would judge its callers by the new config's authentication.)
        let admin_now = self
            .admin
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(|h| h.bind));
        let admin_wanted = snapshot.admin.as_ref().map(|a| a.bind);
        let fresh_admin = match admin_wanted {
            Some(bind) if admin_now != Some(bind) => {
                let (tcp, local) = super::bind(bind)
                    .await
                    .map_err(|source| ReloadError::Bind {
                        name: "admin".to_owned(),
                        addr: bind,
                        source,
                    })?;
                Some((tcp, bind, local))
            }
            Some(_) | None => None,
        };

        let shared_state = crate::generation::open_shared_state(&snapshot, Some(&previous))?;

        // Licenses: same store file -> reconfigure in place; another -> open it (before the
        // swap, so a store that cannot be opened aborts the reload).
        let licensing = match &snapshot.licenses {
            None => None,
            Some(l) => match previous.licensing.clone() {
                Some(current) if current.same_store(l, shared_state.as_ref()) => {
                    for w in current
                        .service
                        .reconfigure(l.trusted_keys.clone(), l.grace)?
                        .warnings()
                    {
                        tracing::warn!("licenses: {w}");
                    }
                    Some(current)
                }
                Some(_) | None => match &shared_state {
                    Some(shared) => Some(Licensing::open_shared(l, shared)?),
                    None => Some(Arc::new(Licensing::open(
                        l,
                        snapshot.limit_keys,
                        crate::license::dates::unix(self.shared.clock.now()),
                    )?)),
                },
            },
        };
        let quota_file = crate::generation::open_quota_file(
            &snapshot,
            Some(&previous),
            crate::license::dates::unix(self.shared.clock.now()),
        )
        .map_err(|e| ReloadError::QuotaStore(Box::new(e)))?;

        // Issuer: same store -> reconfigure in place (the snapshot inherited its link);
        // another -> open it, before the swap, so a store that cannot be opened aborts.
        let issuer = match &snapshot.issuer {
            None => None,
            Some(s) => match previous.issuer.clone() {
                Some(current) if current.same_store(s, shared_state.as_ref()) => {
                    current
                        .reconfigure(s.clone())
                        .map_err(|e| ReloadError::Issuer(Box::new(e)))?;
                    Some(current)
                }
                Some(_) | None => Some(Arc::new(
                    crate::issuer::Issuer::open_on(s.clone(), shared_state.as_ref())
                        .map_err(|e| ReloadError::Issuer(Box::new(e)))?,
                )),
            },
        };

        // A changed [tracing] starts its exporter now; the old one is flushed after the swap.
        let telemetry = crate::generation::open_telemetry(&snapshot, Some(&previous))?;
        // Enrollment: the same token file is kept open; another is opened before the swap.
        let enrollment = match &snapshot.enrollment {
            None => None,
            Some(e) => Some(Arc::new(
                crate::enrollment::Enrollment::open(
                    e.clone(),
                    previous.enrollment.as_deref(),
                    self.shared.clock.now(),
                )
                .map_err(|e| ReloadError::Enrollment(Box::new(e)))?,
            )),
        };
        // The book was rebuilt: the overlaps of re-enrolled machines apply again.
        if let (Some(e), Some(l)) = (&enrollment, &licensing) {
            e.apply_schedules(l.service.book())
                .map_err(|e| ReloadError::Enrollment(Box::new(e)))?;
        }

        // Commit: swap, then start new loops and stop the ones no longer wanted. The old
        // verifier's cache counts are folded in first so the counters lose nothing.
        self.shared
            .metrics
            .fold_token_cache(&previous.snapshot.tokens);
        let server = snapshot.server.clone();
        let summary_counts = (snapshot.listeners.len(), snapshot.route_count());
        let keep: HashMap<Arc<str>, SocketAddr> = snapshot
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.bind))
            .collect();
        // One store: a request sees this whole generation or the previous one, never the
        // licensing of one with the routes of the other.
        let generation = Generation::new(
            snapshot,
            licensing,
            issuer,
            quota_file,
            shared_state,
            telemetry,
            Some(&previous),
        )
        .with_enrollment(enrollment);
        // The token endpoint's counts come from the issuer in force.
        self.shared.metrics.set_issuer(generation.issuer.as_deref());
        let replaced = previous.telemetry.clone().filter(|old| {
            generation
                .telemetry
                .as_ref()
                .is_none_or(|new| !Arc::ptr_eq(old, new))
        });
        self.shared.generation.store(Arc::new(generation));
        if let Some(old) = replaced {
            // Spans of requests still in flight on the old generation may be lost.
            tokio::spawn(old.shutdown());
        }
        let mut closed = Vec::new();
        if let Ok(mut handles) = self.listeners.lock() {
            let (stay, go): (Vec<_>, Vec<_>) = handles
                .drain(..)
                .partition(|h| keep.get(&h.name) == Some(&h.bind));
            *handles = stay;
            for h in go {
                h.stop.send_replace(true);
                closed.push(h.name.to_string());
                if let Ok(mut retired) = self.retired.lock() {
                    retired.push(h.task);
                }
            }
        }
        if admin_now != admin_wanted
            && let Some(old) = self.admin.lock().ok().and_then(|mut a| a.take())
        {
            old.stop.send_replace(true);
            closed.push("admin".to_owned());
            if let Ok(mut retired) = self.retired.lock() {
                retired.push(old.task);
            }
        }
        let mut rebound = Vec::new();
        if let Some((tcp, bind, local)) = fresh_admin
            && let Some(me) = self.me.upgrade()
        {
            tracing::info!(addr = %local, "admin listening");
            rebound.push("admin".to_owned());
            me.spawn_admin(tcp, bind, local);
        }
        for (policy, tcp, local) in fresh {
            tracing::info!(listener = &*policy.name, addr = %local, "listening");
            rebound.push(policy.name.to_string());
            self.spawn_listener(&policy, tcp, local);
        }
        self.resize_permits(server.max_connections);

        Ok(ReloadSummary {
            listeners: summary_counts.0,
            routes: summary_counts.1,
            rebound,
            closed,
            warnings: loaded.warnings.iter().map(ToString::to_string).collect(),
        })
    }

    /// Grow or shrink the connection limit. Shrinking takes free permits away; if too few
    /// are free, the rest go as open connections end (their permits are forgotten then).
    fn resize_permits(&self, wanted: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        let total = &self.shared.permits_total;
        // `total` counts permits in circulation, owed ones included until they are taken.
        let owed = self.shared.permits_owed.swap(0, SeqCst);
        let effective = total.load(SeqCst).saturating_sub(owed);
        if wanted >= effective {
            // Cancelling a debt is free; the rest are new permits.
            let grow = wanted - effective;
            let cancel = grow.min(owed);
            self.shared.permits_owed.store(owed - cancel, SeqCst);
            self.permits.add_permits(grow - cancel);
            total.fetch_add(grow - cancel, SeqCst);
        } else {
            let shrink = effective - wanted;
            let removed = self.permits.forget_permits(shrink);
            total.fetch_sub(removed, SeqCst);
            let still = owed + (shrink - removed);
            self.shared.permits_owed.store(still, SeqCst);
            if shrink > removed {
                tracing::warn!(
                    wanted,
                    "max_connections lowered below the open connections; the limit applies as they close"
                );
            }
        }
    }
}
