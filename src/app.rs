//! Wiring: load the config, bind the listeners, run the accept loops, reload, drain on
//! shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::{self, ConfigErrors, ListenerPolicy, Snapshot};
use crate::generation::Generation;
use crate::listener::{self, Signals};
use crate::metrics::Metrics;
use crate::state::licenses::{Licensing, StoreError};

/// State every connection shares. The snapshot is the only thing a request reads config
/// from, and it is swapped whole.
pub struct Shared {
    /// The config and everything built from it, swapped whole by a reload.
    pub generation: ArcSwap<Generation>,
    pub metrics: Metrics,
    /// The time every stage judges by (system time; tests move it).
    pub clock: crate::clock::Clock,
    /// Connection permits to take out of circulation as open connections end (a reload
    /// lowered max_connections below the connections open then).
    pub permits_owed: std::sync::atomic::AtomicUsize,
    /// Permits in circulation (held or free): what a full drain waits for.
    pub permits_total: std::sync::atomic::AtomicUsize,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file is invalid; every problem is listed.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The metrics registry refused a metric (a duplicate name: a bug, not an input).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listener's address could not be bound (in use, not local, no permission).
    #[error("cannot bind listener \"{name}\" to {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The license store could not be opened.
    #[error("licenses.store: {0}")]
    LicenseStore(#[from] StoreError),
    /// The issuer's store could not be opened or prepared (boxed: a rare, large error).
    #[error("issuer.store: {0}")]
    Issuer(Box<crate::issuer::IssuerError>),
}

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

/// Starts a graceful shutdown when triggered. Cheap to clone.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// One running accept loop.
struct ListenerHandle {
    name: Arc<str>,
    /// The configured address (port 0 stays 0 here), compared on reload.
    bind: SocketAddr,
    /// The address actually bound.
    local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The running gateway: what reload and shutdown act on.
pub struct Gateway {
    shared: Arc<Shared>,
    config_path: PathBuf,
    listeners: Mutex<Vec<ListenerHandle>>,
    /// One reload at a time; never taken on the request path.
    reload_lock: tokio::sync::Mutex<()>,
    permits: Arc<Semaphore>,
    signals: Signals,
    stop: Arc<watch::Sender<bool>>,
    /// The admin listener as running (reconciled with the config on reload).
    admin: Mutex<Option<ListenerHandle>>,
    /// Itself, for tasks a reload starts (the admin listener holds an `Arc<Gateway>`).
    me: std::sync::Weak<Gateway>,
    /// Accept loops stopped by reloads, awaited at shutdown like the live ones.
    retired: Mutex<Vec<JoinHandle<()>>>,
}

/// A started gateway.
pub struct Running {
    gateway: Arc<Gateway>,
    task: JoinHandle<()>,
}

impl Running {
    /// The address a listener is bound to (useful when the config binds port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.gateway.local_addr(listener)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.gateway.stop.clone())
    }

    /// The state shared by every connection (the live snapshot, metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.gateway.shared
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The admin listener's bound address, if one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.gateway.admin_addr()
    }

    /// Wait until shutdown was triggered, the listeners closed and the in-flight requests
    /// finished (or the drain deadline passed).
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "shutdown task failed");
        }
    }
}

/// Load the config at `config_path`, bind its listeners and serve.
pub async fn start(config_path: &Path) -> Result<Running, StartError> {
    let loaded = config::load_file(config_path, SystemTime::now())?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    start_snapshot(loaded.snapshot).await
}

async fn bind(l: &ListenerPolicy) -> Result<(TcpListener, SocketAddr), std::io::Error> {
    let tcp = TcpListener::bind(l.bind).await?;
    let local = tcp.local_addr()?;
    Ok((tcp, local))
}

/// Serve an already validated snapshot.
pub async fn start_snapshot(snapshot: Snapshot) -> Result<Running, StartError> {
    let mut bound = Vec::with_capacity(snapshot.listeners.len());
    for l in &snapshot.listeners {
        let (tcp, local) = bind(l).await.map_err(|source| StartError::Bind {
            name: l.name.to_string(),
            addr: l.bind,
            source,
        })?;
        tracing::info!(listener = &*l.name, addr = %local, routes = l.routes.len(), "listening");
        bound.push((l.clone(), tcp, local));
    }

    let admin = match &snapshot.admin {
        None => None,
        Some(a) => {
            let tcp = TcpListener::bind(a.bind)
                .await
                .map_err(|source| StartError::Bind {
                    name: "admin".to_owned(),
                    addr: a.bind,
                    source,
                })?;
            let local = tcp.local_addr().map_err(|source| StartError::Bind {
                name: "admin".to_owned(),
                addr: a.bind,
                source,
            })?;
            tracing::info!(addr = %local, tls = a.tls.is_some(), token = a.token_sha256.is_some(), "admin listening");
            Some((tcp, local))
        }
    };

    let licensing = match &snapshot.licenses {
        Some(l) => Some(Arc::new(Licensing::open(l)?)),
        None => None,
    };
    // Opening fills the link the snapshot's verifier was built with: keys and revocations
    // are in place before the first request.
    let issuer = match &snapshot.issuer {
        Some(s) => Some(Arc::new(
            crate::issuer::Issuer::open(s.clone()).map_err(|e| StartError::Issuer(Box::new(e)))?,
        )),
        None => None,
    };
    // Remote JWKS are fetched before serving, so the first requests do not all fail; a
    // provider that does not answer in time is retried by the refresh task.
    let (stop_tx, stop_rx) = watch::channel(false);
    snapshot.tokens.spawn_refresh(stop_rx.clone());
    if !snapshot
        .tokens
        .wait_for_first_fetch(std::time::Duration::from_secs(10))
        .await
    {
        tracing::warn!(
            "a remote JWKS did not answer within 10 s; its tokens are refused until it does"
        );
    }
    let settings = snapshot.server.clone();
    let snapshot_max_connections = settings.max_connections;
    let config_path = snapshot.source.clone();
    let shared = Arc::new(Shared {
        generation: ArcSwap::from_pointee(Generation::new(snapshot, licensing, issuer, None)),
        metrics: Metrics::new(prometheus::Registry::new())?,
        clock: crate::clock::Clock::default(),
        permits_owed: std::sync::atomic::AtomicUsize::new(0),
        permits_total: std::sync::atomic::AtomicUsize::new(snapshot_max_connections),
    });
    shared
        .metrics
        .config_loaded(&shared.generation.load().snapshot, SystemTime::now());
    crate::memory::spawn_trimmer(shared.metrics.parked_connections.clone(), stop_rx.clone());
    let (kill_tx, kill_rx) = watch::channel(false);
    let gateway = Arc::new_cyclic(|me| Gateway {
        me: me.clone(),
        shared,
        config_path,
        listeners: Mutex::new(Vec::new()),
        reload_lock: tokio::sync::Mutex::new(()),
        permits: Arc::new(Semaphore::new(settings.max_connections)),
        signals: Signals {
            stop: stop_rx.clone(),
            kill: kill_rx,
        },
        stop: Arc::new(stop_tx),
        admin: Mutex::new(None),
        retired: Mutex::new(Vec::new()),
    });
    for (policy, tcp, local) in bound {
        gateway.spawn_listener(&policy, tcp, local);
    }
    if let (Some((tcp, local)), Some(bind)) = (
        admin,
        gateway
            .shared
            .generation
            .load()
            .snapshot
            .admin
            .as_ref()
            .map(|a| a.bind),
    ) {
        gateway.spawn_admin(tcp, bind, local);
    }
    if settings.watch_config {
        crate::reload::watch_config_file(gateway.clone(), stop_rx.clone());
    }

    let g = gateway.clone();
    let mut stop = stop_rx;
    let task = tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _reloads = g.reload_lock.lock().await;
        // The accept loops and the admin listener see the same signal; once their tasks have
        // ended their sockets are closed, so wait() really means "nothing listens".
        let mut tasks: Vec<JoinHandle<()>> = g
            .listeners
            .lock()
            .map(|mut h| h.drain(..).map(|h| h.task).collect())
            .unwrap_or_default();
        tasks.extend(
            g.retired
                .lock()
                .map(|mut r| std::mem::take(&mut *r))
                .unwrap_or_default(),
        );
        tasks.extend(
            g.admin
                .lock()
                .ok()
                .and_then(|mut a| a.take())
                .map(|h| h.task),
        );
        for t in tasks {
            let _ = t.await;
        }
        let total = g
            .shared
            .permits_total
            .load(std::sync::atomic::Ordering::SeqCst);
        let deadline = g.shared.generation.load().snapshot.server.shutdown_timeout;
        // Every open connection holds a permit: all of them back means all drained.
        let all = u32::try_from(total).unwrap_or(u32::MAX);
        match tokio::time::timeout(deadline, g.permits.acquire_many(all)).await {
            Ok(_) => tracing::info!("drained; stopped"),
            Err(_) => {
                let open = total.saturating_sub(g.permits.available_permits());
                tracing::warn!(
                    open,
                    "drain deadline passed; closing the remaining connections"
                );
                kill_tx.send_replace(true);
            }
        }
        // Close the license store now, not whenever the last task holding the shared state
        // lets go: a restart in the same process must be able to open it.
        let closing = g.shared.generation.load().without_stores();
        g.shared.generation.store(Arc::new(closing));
    });

    Ok(Running { gateway, task })
}

impl Gateway {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        let handles = self.listeners.lock().ok()?;
        handles
            .iter()
            .find(|h| &*h.name == listener)
            .map(|h| h.local)
    }

    /// The admin listener's bound address, if one runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.lock().ok()?.as_ref().map(|h| h.local)
    }

    fn spawn_admin(self: &Arc<Self>, tcp: TcpListener, bind: SocketAddr, local: SocketAddr) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(crate::admin::serve(
            tcp,
            self.clone(),
            self.signals.stop.clone(),
            stop_rx,
        ));
        if let Ok(mut slot) = self.admin.lock() {
            *slot = Some(ListenerHandle {
                name: Arc::from("admin"),
                bind,
                local,
                stop: stop_tx,
                task,
            });
        }
    }

    fn spawn_listener(&self, policy: &ListenerPolicy, tcp: TcpListener, local: SocketAddr) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(listener::accept_loop(
            tcp,
            policy.name.clone(),
            self.shared.clone(),
            self.permits.clone(),
            self.signals.clone(),
            stop_rx,
        ));
        if let Ok(mut handles) = self.listeners.lock() {
            handles.push(ListenerHandle {
                name: policy.name.clone(),
                bind: policy.bind,
                local,
                stop: stop_tx,
                task,
            });
        }
    }

    /// Re-read the config file. Only a wholly valid file changes anything: the snapshot is
    /// swapped atomically (in-flight requests finish on the one they started with; the
    /// next request on every keep-alive connection sees the new one), new and moved
    /// listeners are bound first (a bind failure aborts the reload), unchanged listeners
    /// keep their sockets, removed ones stop accepting.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let result = self.reload_inner().await;
        let now = SystemTime::now();
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
            let (tcp, local) = bind(l).await.map_err(|source| ReloadError::Bind {
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
                let tcp = TcpListener::bind(bind)
                    .await
                    .map_err(|source| ReloadError::Bind {
                        name: "admin".to_owned(),
                        addr: bind,
                        source,
                    })?;
                let local = tcp.local_addr().map_err(|source| ReloadError::Bind {
                    name: "admin".to_owned(),
                    addr: bind,
                    source,
                })?;
                Some((tcp, bind, local))
            }
            Some(_) | None => None,
        };

        // Licenses: same store file -> reconfigure in place; another -> open it (before the
        // swap, so a store that cannot be opened aborts the reload).
        let licensing = match &snapshot.licenses {
            None => None,
            Some(l) => match previous.licensing.clone() {
                Some(current) if current.store == l.store => {
                    for w in current
                        .service
                        .reconfigure(l.trusted_keys.clone(), l.grace)?
                        .warnings()
                    {
                        tracing::warn!("licenses: {w}");
                    }
                    Some(current)
                }
                Some(_) | None => Some(Arc::new(Licensing::open(l)?)),
            },
        };

        // Issuer: same store -> reconfigure in place (the snapshot inherited its link);
        // another -> open it, before the swap, so a store that cannot be opened aborts.
        let issuer = match &snapshot.issuer {
            None => None,
            Some(s) => match previous.issuer.clone() {
                Some(current) if current.settings().store == s.store => {
                    current
                        .reconfigure(s.clone())
                        .map_err(|e| ReloadError::Issuer(Box::new(e)))?;
                    Some(current)
                }
                Some(_) | None => Some(Arc::new(
                    crate::issuer::Issuer::open(s.clone())
                        .map_err(|e| ReloadError::Issuer(Box::new(e)))?,
                )),
            },
        };

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
        let generation = Generation::new(snapshot, licensing, issuer, Some(&previous));
        self.shared.generation.store(Arc::new(generation));
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
