//! Reload when the config file changes. The folder is watched, not the file, because
//! editors and config managers replace the file (write a new one, rename it over the old),
//! which a watch on the old inode would miss. Events are debounced: a burst of writes is
//! one reload, of the finished file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::app::Gateway;

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
    let Some(name) = path.file_name().map(|n| n.to_owned()) else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let handler = move |res: notify::Result<Event>| {
        let Ok(event) = res else { return };
        let relevant = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) && event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(name.as_os_str()));
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
            if !path.exists() {
                // Mid-replace, or deleted: the next event (the rename in) triggers again.
                continue;
            }
            tracing::info!(file = %path.display(), "config file changed: reloading");
            // The outcome is logged and counted by reload itself.
            let _ = gateway.reload().await;
        }
    });
}
