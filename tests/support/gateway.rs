//! Config files and the gateway under test, started in-process with `portcullis::server::start`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis::denial::Denial;
use portcullis::metrics::ConnRefusal;
use portcullis::server::{ReloadError, ReloadSummary, Running, Shared, ShutdownHandle};

/// Write `toml` as `portcullis.toml` in `dir`; returns its path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A `[server]` table with the given keys (one per line).
pub fn server(keys: &str) -> String {
    format!("[server]\n{keys}\n\n")
}

/// A listener on 127.0.0.1:0 named `name` with the ECDSA `server.pem`/`server.key`; `keys` are
/// extra `key = value` lines (min_tls, client_auth, ...).
pub fn listener(name: &str, keys: &str) -> String {
    listener_with_certs(name, keys, &[("server.pem", "server.key")])
}

/// A listener with the given (chain, key) certificate files, first is the default.
pub fn listener_with_certs(name: &str, keys: &str, certs: &[(&str, &str)]) -> String {
    listener_at(name, "127.0.0.1:0", keys, certs)
}

/// A listener bound to `bind` (e.g. `"[::1]:0"`) with the given (chain, key) certificate
/// files, first is the default.
pub fn listener_at(name: &str, bind: &str, keys: &str, certs: &[(&str, &str)]) -> String {
    let mut s = format!("[[listeners]]\nname = \"{name}\"\nbind = \"{bind}\"\n{keys}\n");
    for (chain, key) in certs {
        s.push_str(&format!(
            "[[listeners.certificates]]\nchain = \"{chain}\"\nkey = \"{key}\"\n"
        ));
    }
    s.push('\n');
    s
}

/// A route `name` for `prefix` to `upstreams`; `keys` are extra lines (host, methods, ...).
pub fn route(name: &str, prefix: &str, upstreams: &[&str], keys: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = [{}]\n{keys}\n\n",
        ups.join(", ")
    )
}

/// One listener "public" and one route "/" to `upstream`.
pub fn simple(upstream: &str) -> String {
    format!(
        "{}{}",
        listener("public", ""),
        route("all", "/", &[upstream], "")
    )
}

/// A URL on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// The gateway, running in this test's runtime. Dropping it triggers shutdown.
pub struct Gateway {
    running: Option<Running>,
    handle: ShutdownHandle,
    pub config: PathBuf,
}

impl Gateway {
    /// Write `toml` into `dir` and start the gateway; panics with the config if it fails.
    pub async fn start(dir: &Path, toml: &str) -> Gateway {
        let config = write_config(dir, toml);
        let running = match portcullis::server::start(&config).await {
            Ok(r) => r,
            Err(e) => panic!("the gateway did not start: {e}\n--- config ---\n{toml}"),
        };
        let handle = running.shutdown_handle();
        Gateway {
            running: Some(running),
            handle,
            config,
        }
    }

    /// Wrap a gateway started elsewhere (e.g. after retrying `portcullis::server::start`).
    pub fn from_running(running: Running, config: PathBuf) -> Gateway {
        let handle = running.shutdown_handle();
        Gateway {
            running: Some(running),
            handle,
            config,
        }
    }

    /// Re-read the config file now (what SIGHUP and `POST /reload` do).
    pub async fn reload(
        &self,
    ) -> Result<portcullis::server::ReloadSummary, portcullis::server::ReloadError> {
        self.running
            .as_ref()
            .expect("gateway already taken")
            .gateway()
            .reload()
            .await
    }

    /// Bound address of listener "public".
    pub fn addr(&self) -> SocketAddr {
        self.addr_of("public")
    }

    pub fn addr_of(&self, listener: &str) -> SocketAddr {
        self.running
            .as_ref()
            .expect("gateway already taken")
            .local_addr(listener)
            .unwrap_or_else(|| panic!("no listener named {listener}"))
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// The state every connection shares: the live snapshot and the metrics.
    pub fn shared(&self) -> Arc<Shared> {
        self.running
            .as_ref()
            .expect("gateway already taken")
            .shared()
            .clone()
    }

    /// The denial counter for `d` (`portcullis_denials_total{reason=...}`).
    pub fn denial_count(&self, d: Denial) -> u64 {
        self.shared().metrics.denial_count(d)
    }

    /// Every metric as `/metrics` would serve it, parsed.
    pub fn metrics(&self) -> super::prometheus::Exposition {
        super::prometheus::parse(&self.shared().metrics.render()).expect("valid exposition")
    }

    /// The refused-connection counter for `r` (`portcullis_connections_refused_total`).
    pub fn refused_count(&self, r: ConnRefusal) -> u64 {
        self.shared().metrics.refused_count(r)
    }

    /// Bound address of the admin listener; panics if the config has no `[admin]`.
    /// The running token issuer of the live generation; panics without `[issuer]`.
    pub fn issuer(&self) -> Arc<portcullis::issuer::Issuer> {
        self.shared()
            .generation
            .load()
            .issuer
            .clone()
            .expect("the issuer is running")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.running
            .as_ref()
            .expect("gateway already taken")
            .admin_addr()
            .expect("the config has no [admin] section")
    }

    /// Take the `Running` (to call `wait`); the gateway is no longer shut down on drop.
    pub fn into_running(mut self) -> Running {
        self.running.take().expect("gateway already taken")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.running.is_some() {
            self.handle.trigger();
        }
    }
}
