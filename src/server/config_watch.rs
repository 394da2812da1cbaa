//! Reload when the config file, or a certificate, key, CA or CRL file it names for its
//! listeners, changes: a certificate renewed on disk (certbot, an ACME client, a secrets
//! operator's symlink swap) takes effect for new handshakes like a config change, with the
//! same rule (a bad new file is refused and the last good config stays). Folders are
//! watched, not files, because editors and config managers replace files (write a new one,
//! rename it over the old), and Kubernetes swaps a `..data` symlink so no event names the
//! file at all. Any change is debounced (a burst of writes is one look), and a reload
//! happens only if the content of one of the files changed.

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
    let mut watched = vec![dir];
    watch_tls_folders(&mut watcher, &mut watched, &path);
    tokio::spawn(async move {
        // Owning the watcher here keeps it alive exactly as long as this task.
        let mut watcher = watcher;
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
            tracing::info!(file = %path.display(), "config or certificate files changed: reloading");
            // The outcome is logged and counted by reload itself.
            let _ = gateway.reload().await;
            // The config may name other files now.
            watch_tls_folders(&mut watcher, &mut watched, &path);
        }
    });
}

/// Watch the folders of the TLS files `config` names that are not watched yet.
fn watch_tls_folders(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut Vec<PathBuf>,
    config: &std::path::Path,
) {
    for file in crate::config::tls_files(config) {
        let Some(dir) = file.parent().map(std::path::Path::to_path_buf) else {
            continue;
        };
        if watched.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => watched.push(dir),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch a certificate folder; renewals there need SIGHUP or POST /reload");
            }
        }
    }
}

/// SHA-256 over the config file's bytes and those of every TLS file it names (following
/// symlinks), `None` if the config cannot be read now. A TLS file that cannot be read (mid
/// replace) counts as empty: the next event looks again.
fn content_hash(path: &std::path::Path) -> Option<[u8; 32]> {
    let config = std::fs::read(path).ok()?;
    let mut all = crate::identity::sha256(&config).to_vec();
    for f in crate::config::tls_files(path) {
        all.extend_from_slice(&crate::identity::sha256(
            &std::fs::read(&f).unwrap_or_default(),
        ));
    }
    Some(crate::identity::sha256(&all))
}
