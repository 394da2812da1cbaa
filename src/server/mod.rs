//! Wiring: load the config, bind the listeners, run the accept loops, reload, drain on
//! shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

mod admin;
mod config_watch;
mod connection;
mod crl;
mod h1;
mod h2;
mod h2_guard;
mod memory;
mod reload;
mod scanned;

use crate::config::{self, ConfigErrors, ListenerPolicy, Snapshot};
use crate::generation::Generation;
use crate::metrics::Metrics;
use crate::state::licenses::{Licensing, StoreError};
use connection::Signals;
pub use reload::{ReloadError, ReloadSummary};

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
    /// `[enrollment] tokens` could not be opened (boxed: a rare, large error).
    #[error("enrollment.tokens: {0}")]
    Enrollment(Box<crate::enrollment::StoreError>),
    /// `[limits] quota_store` could not be opened.
    #[error("limits.quota_store: {0}")]
    QuotaStore(Box<crate::state::quotas::QuotaStoreError>),
    /// `[state]`'s Redis client could not be set up.
    #[error("{0}")]
    SharedState(#[from] crate::state::redis::StoreError),
    /// `[tracing]`'s exporter could not be set up.
    #[error("{0}")]
    Telemetry(#[from] crate::telemetry::TelemetryError),
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
    /// The last reloads and admin changes, for `GET /status`.
    history: admin::History,
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

/// Bind `addr`, with the address actually bound (port 0 resolved): one way for gateway and
/// admin listeners, at start and on reload.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), std::io::Error> {
    let tcp = TcpListener::bind(addr).await?;
    let local = tcp.local_addr()?;
    Ok((tcp, local))
}

/// Serve an already validated snapshot.
pub async fn start_snapshot(snapshot: Snapshot) -> Result<Running, StartError> {
    let mut bound = Vec::with_capacity(snapshot.listeners.len());
    for l in &snapshot.listeners {
        let (tcp, local) = bind(l.bind).await.map_err(|source| StartError::Bind {
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
            let (tcp, local) = bind(a.bind).await.map_err(|source| StartError::Bind {
                name: "admin".to_owned(),
                addr: a.bind,
                source,
            })?;
            tracing::info!(addr = %local, tls = a.tls.is_some(), identities = a.identities.len(), audit_log = a.audit_log.is_some(), "admin listening");
            Some((tcp, local))
        }
    };

    let clock = crate::clock::Clock::default();
    let unix_now = crate::license::dates::unix(clock.now());
    let shared_state = crate::generation::open_shared_state(&snapshot, None)?;
    let licensing = match (&snapshot.licenses, &shared_state) {
        (Some(l), Some(shared)) => Some(Licensing::open_shared(l, shared)?),
        (Some(l), None) => Some(Arc::new(Licensing::open(l, snapshot.limit_keys, unix_now)?)),
        (None, _) => None,
    };
    let quota_file = crate::generation::open_quota_file(&snapshot, None, unix_now)
        .map_err(|e| StartError::QuotaStore(Box::new(e)))?;
    let telemetry = crate::generation::open_telemetry(&snapshot, None)?;
    // Opening fills the link the snapshot's verifier was built with: keys and revocations
    // are in place before the first request.
    let issuer = match &snapshot.issuer {
        Some(s) => Some(Arc::new(
            crate::issuer::Issuer::open_on(s.clone(), shared_state.as_ref())
                .map_err(|e| StartError::Issuer(Box::new(e)))?,
        )),
        None => None,
    };
    let enrollment = match &snapshot.enrollment {
        Some(e) => Some(Arc::new(
            crate::enrollment::Enrollment::open(e.clone(), None, clock.now())
                .map_err(|e| StartError::Enrollment(Box::new(e)))?,
        )),
        None => None,
    };
    if let (Some(e), Some(l)) = (&enrollment, &licensing) {
        e.apply_schedules(l.service.book())
            .map_err(|e| StartError::Enrollment(Box::new(e)))?;
    }
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
        generation: ArcSwap::from_pointee(
            Generation::new(
                snapshot,
                licensing,
                issuer,
                quota_file,
                shared_state,
                telemetry,
                None,
            )
            .with_enrollment(enrollment),
        ),
        metrics: Metrics::new(prometheus::Registry::new())?,
        clock,
        permits_owed: std::sync::atomic::AtomicUsize::new(0),
        permits_total: std::sync::atomic::AtomicUsize::new(snapshot_max_connections),
    });
    shared
        .metrics
        .set_issuer(shared.generation.load().issuer.as_deref());
    shared
        .metrics
        .config_loaded(&shared.generation.load().snapshot, SystemTime::now());
    let quota_writer = spawn_quota_writer(Arc::clone(&shared), stop_rx.clone());
    crl::spawn(Arc::clone(&shared), stop_rx.clone());
    crate::server::memory::spawn_trimmer(
        shared.metrics.parked_connections.clone(),
        stop_rx.clone(),
    );
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
        history: admin::History::default(),
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
        crate::server::config_watch::watch_config_file(gateway.clone(), stop_rx.clone());
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
        // lets go: a restart in the same process must be able to open it. The quota writer
        // may be in a write holding the generation: it ends first.
        let _ = quota_writer.await;
        flush_quotas(&g.shared);
        let closing = g.shared.generation.load().without_stores();
        // The last spans go to the collector (bounded: an unreachable one holds nothing).
        if let Some(t) = closing.telemetry.clone() {
            t.shutdown().await;
        }
        g.shared.generation.store(Arc::new(closing));
    });

    Ok(Running { gateway, task })
}

/// Write changed quota counts once a second (the store keeps them in memory between), so a
/// crash loses at most a second's counts; the last write runs at shutdown.
fn spawn_quota_writer(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let generation = shared.generation.load_full();
            // redb commits with an fsync: off the async workers.
            let clock_now = crate::license::dates::unix(shared.clock.now());
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(q) = &generation.quotas
                    && let Err(e) = q.flush(clock_now)
                {
                    tracing::error!(error = %e, "quota counts could not be written; retrying in 1 s");
                }
            })
            .await;
        }
    })
}

/// Write changed quota counts now (shutdown).
fn flush_quotas(shared: &Shared) {
    if let Some(q) = &shared.generation.load().quotas
        && let Err(e) = q.flush(crate::license::dates::unix(shared.clock.now()))
    {
        tracing::error!(error = %e, "quota counts could not be written at shutdown");
    }
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

    /// The last reloads and admin changes (bounded).
    pub(crate) fn history(&self) -> &admin::History {
        &self.history
    }

    fn spawn_admin(self: &Arc<Self>, tcp: TcpListener, bind: SocketAddr, local: SocketAddr) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(crate::server::admin::serve(
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
        let task = tokio::spawn(connection::accept_loop(
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
}
