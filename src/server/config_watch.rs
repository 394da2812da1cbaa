//! Reload when the config file changes. The folder is watched, not the file, because
//! editors and config managers replace the file (write a new one, rename it over the old),
//! and Kubernetes swaps a `..data` symlink so no event names the file at all. Any change in
//! the folder is debounced (a burst of writes is one look), and the file is reloaded only if
//! its content changed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::server::Gateway;

/// Quiet time after the last change before reloading.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watch the gateway's config file until `stop`. Failure to watch is logged, not fatal:
/// SIGHUP and `POST /reload` still work.
pub fn watch_config_file(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let path = gateway.config_path().to_path_buf();
    let Some(dir) = path.parent().map(|d| {
        if d.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            d.to_path_buf()
        }
    }) else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let handler = move |res: notify::Result<Event>| {
        let Ok(event) = res else { return };
        let relevant = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        );
        if relevant {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config folder; reload with SIGHUP or POST /reload");
        return;
    }
    tokio::spawn(async move {
        // Owning the watcher here keeps it alive exactly as long as this task.
        let _watcher = watcher;
        let mut last = content_hash(&path);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                got = rx.recv() => if got.is_none() { return },
            }
            // Debounce: wait until no event for DEBOUNCE.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                    got = rx.recv() => if got.is_none() { return },
                }
            }
            let now = content_hash(&path);
            if now.is_none() || now == last {
                // Mid-replace or deleted (the next event looks again), or another file in
                // the folder changed.
                continue;
            }
            last = now;
            tracing::info!(file = %path.display(), "config file changed: reloading");
            // The outcome is logged and counted by reload itself.
            let _ = gateway.reload().await;
        }
    });
}

/// SHA-256 of the file's bytes (following symlinks), `None` if it cannot be read now.
fn content_hash(path: &std::path::Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|b| crate::identity::sha256(&b))
}
