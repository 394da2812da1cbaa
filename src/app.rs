//! Wiring: load the config, bind the listeners, run the accept loops, drain on shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{self, ConfigErrors, Snapshot};
use crate::listener::{self, Signals};
use crate::metrics::Metrics;

/// State every connection shares. The snapshot is the only thing a request reads config
/// from, and it is swapped whole.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
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
}

/// Starts a graceful shutdown when triggered. Cheap to clone.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// A started gateway.
pub struct Running {
    addrs: Vec<(Arc<str>, SocketAddr)>,
    shutdown: ShutdownHandle,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Running {
    /// The address a listener is bound to (useful when the config binds port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| &**n == listener)
            .map(|(_, a)| *a)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The state shared by every connection (the live snapshot).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
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

/// Serve an already validated snapshot.
pub async fn start_snapshot(snapshot: Snapshot) -> Result<Running, StartError> {
    let mut bound = Vec::with_capacity(snapshot.listeners.len());
    for l in &snapshot.listeners {
        let tcp = TcpListener::bind(l.bind)
            .await
            .map_err(|source| StartError::Bind {
                name: l.name.to_string(),
                addr: l.bind,
                source,
            })?;
        let addr = tcp.local_addr().map_err(|source| StartError::Bind {
            name: l.name.to_string(),
            addr: l.bind,
            source,
        })?;
        tracing::info!(listener = &*l.name, %addr, routes = l.routes.len(), "listening");
        bound.push((l.name.clone(), addr, tcp));
    }

    let settings = snapshot.server.clone();
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
        metrics: Metrics::new(prometheus::Registry::new())?,
    });
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (kill_tx, kill_rx) = watch::channel(false);
    let signals = Signals {
        stop: stop_rx.clone(),
        kill: kill_rx,
    };

    let mut loops = JoinSet::new();
    let mut addrs = Vec::with_capacity(bound.len());
    for (name, addr, tcp) in bound {
        addrs.push((name.clone(), addr));
        loops.spawn(listener::accept_loop(
            tcp,
            name,
            shared.clone(),
            permits.clone(),
            signals.clone(),
        ));
    }

    let mut stop = stop_rx;
    let task = tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        while loops.join_next().await.is_some() {}
        // Every open connection holds a permit: all of them back means all drained.
        let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
        match tokio::time::timeout(settings.shutdown_timeout, permits.acquire_many(all)).await {
            Ok(_) => tracing::info!("drained; stopped"),
            Err(_) => {
                let open = settings.max_connections - permits.available_permits();
                tracing::warn!(
                    open,
                    "drain deadline passed; closing the remaining connections"
                );
                kill_tx.send_replace(true);
            }
        }
    });

    Ok(Running {
        addrs,
        shutdown: ShutdownHandle(Arc::new(stop_tx)),
        task,
        shared,
    })
}
