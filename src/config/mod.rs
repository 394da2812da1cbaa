//! Configuration: `FileConfig` (the TOML as written) -> `validate` -> [`Snapshot`] (compiled,
//! ready to serve). A snapshot is immutable; a reload builds a new one and swaps it in whole.

mod admin;
pub mod enrollment;
pub mod enrollment_crl;
mod enrollment_keys;
pub use admin::{AdminCredential, AdminIdentity, AdminRole};
pub mod file;
mod limits;
mod listener;
mod policy;
mod redact;
mod rewrite;
mod route;
mod server;
pub mod state;
pub mod tracing;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::identity::{IdentityHeaders, PinSet};

use crate::routing::RouteTable;

pub(crate) mod issuer;
pub(crate) mod upstream;
mod upstreams;
pub mod vault;

pub use crate::report::{ConfigErrors, ConfigIssue, Report};
pub use server::duration;
pub use validate::{build_snapshot, parse_file_config};
pub use vault::open as open_vault;

// === Snapshot ===

/// The whole validated config, compiled: TLS acceptor configs, route tables, upstream pools.
/// One `load()` per request feeds every stage.
pub struct Snapshot {
    /// The file this snapshot was built from.
    pub source: PathBuf,
    pub server: ServerSettings,
    pub listeners: Vec<Arc<ListenerPolicy>>,
    /// Each route's upstream, by [`Route::id`](crate::routing::Route::id).
    pub upstreams: Vec<upstream::UpstreamSpec>,
    /// The OAuth2 client credentials grants routes inject tokens from, by the index their
    /// credential names.
    pub token_sources: Vec<vault::TokenSourceSpec>,
    /// Each route's token source (an index into `token_sources`), by route id.
    pub route_tokens: Vec<Option<usize>>,
    /// Header names for the client identity sent upstream.
    pub identity_headers: IdentityHeaders,
    pub admin: Option<AdminSettings>,
    /// `[licenses]`: trusted issuer keys, store, grace.
    pub licenses: Option<crate::license::LicenseSettings>,
    /// Bearer-token verification for every `[[token_issuers]]` (and its verified-token cache).
    pub tokens: Arc<crate::token::TokenVerifier>,
    /// Headers that carry verified claims to upstreams.
    pub claim_headers: crate::token::ClaimHeaders,
    /// `[issuer]`: the gateway's own token issuer, and the link its verifier reads.
    pub issuer: Option<issuer::OwnIssuerSettings>,
    /// `[enrollment]`: the EST endpoints' CA, token store, license key and templates.
    pub enrollment: Option<enrollment::EnrollmentSettings>,
    /// What happens to client headers whose names have underscores.
    pub underscores_in_headers: crate::framing::UnderscoreHeaders,
    /// Rate-limit keys tracked at most (`[limits] max_keys`).
    pub limit_keys: usize,
    /// `[limits] quota_store`: where quota counts persist (else the license store's file).
    pub quota_store: Option<std::path::PathBuf>,
    /// `[state] backend = "redis"`: the server the fleet shares state through; `None` for the
    /// embedded backend.
    pub shared_state: Option<crate::state::redis::RedisSettings>,
    /// `[tracing]`: span export and trace context; `None` (the default): off.
    pub tracing: Option<tracing::TracingSettings>,
    /// The config file as parsed, secrets redacted, for `GET /config`.
    pub redacted: serde_json::Value,
}

impl Snapshot {
    /// The OAuth2 token source of the route with this id, if its credential is one.
    pub fn route_token_source(&self, route: usize) -> Option<usize> {
        self.route_tokens.get(route).copied().flatten()
    }

    /// The policy of the listener named `name`, if it is still configured.
    ///
    /// Linear: a gateway has a handful of listeners, and comparing a few short strings is
    /// cheaper than hashing one.
    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerPolicy>> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    /// Route count across listeners (a route served on two listeners counts once per listener).
    /// Routes in the file, each once however many listeners serve it.
    pub fn route_count(&self) -> usize {
        let mut names: Vec<&str> = self
            .listeners
            .iter()
            .flat_map(|l| l.routes.iter().map(|r| &*r.name))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }
}

/// Process-wide limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// An idle HTTP/1.1 connection's buffers are freed after this long.
    pub release_idle_after: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub shutdown_timeout: Duration,
    /// How long responses may wait for an HTTP/2 client that takes none of their bytes.
    pub send_timeout: Duration,
    pub watch_config: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            release_idle_after: Duration::from_millis(250),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            shutdown_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            watch_config: true,
        }
    }
}

/// One listener's compiled policy.
pub struct ListenerPolicy {
    pub name: Arc<str>,
    pub bind: SocketAddr,
    pub tls: Arc<rustls::ServerConfig>,
    pub routes: RouteTable,
    /// Client certificates admitted on this listener; empty: any.
    pub pins: PinSet,
    /// Client addresses admitted, and whose forwarding headers are believed.
    pub ip: crate::ip_filter::ListenerIp,
    /// A PROXY protocol header precedes TLS on every connection.
    pub proxy_protocol: bool,
    /// Per-address connection rate and cap, checked at accept.
    pub flood: crate::limits::ConnFlood,
    /// Earliest `not_after` among the listener's server certificates (for metrics and warnings).
    pub cert_not_after: SystemTime,
    /// The host names served (`hosts`, else the certificates' names); others get 421.
    pub names: crate::routing::HostNames,
}

/// The admin listener's settings.
pub struct AdminSettings {
    pub bind: SocketAddr,
    /// Who may call it and with which role; never empty (a set-up without identities has
    /// one: its token, its CA's clients, or loopback).
    pub identities: Vec<AdminIdentity>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Canonical host names the admin API answers to besides its own address.
    pub hosts: Vec<Box<str>>,
    /// The append-only audit trail file, if set (audit lines always go to the log too).
    pub audit_log: Option<PathBuf>,
}

// === Loading ===

/// A config that passed validation, with the warnings it produced.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<ConfigIssue>,
}

/// Read, parse and validate the file at `path` as of `now` (certificate expiry is judged
/// against `now`, so tests can move time).
pub fn load_file(path: &Path, now: SystemTime) -> Result<Loaded, ConfigErrors> {
    load_str(path, &read(path)?, now)
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigIssue::new(
            path,
            "",
            format!("cannot read config file: {e}"),
        )])
    })
}

/// The certificate, key, CA and CRL files the config at `path` names for its listeners, its
/// admin listener and its upstreams' TLS (resolved from its folder), for watching: a renewed
/// certificate takes effect like a config change. Empty when the file cannot be read or
/// parsed.
pub fn tls_files(path: &Path) -> Vec<std::path::PathBuf> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(file) = parse_file_config(path, &text) else {
        return Vec::new();
    };
    let r = Report::new(path);
    let mut out = Vec::new();
    let mut add = |f: &Option<String>| {
        if let Some(f) = f {
            out.push(r.resolve(f));
        }
    };
    for l in &file.listeners {
        for c in &l.certificates {
            add(&c.chain);
            add(&c.key);
        }
        add(&l.client_ca);
        for crl in l.client_crl.iter().flatten() {
            add(&Some(crl.clone()));
        }
    }
    if let Some(a) = &file.admin {
        for c in &a.certificates {
            add(&c.chain);
            add(&c.key);
        }
        add(&a.client_ca);
    }
    let upstream_tls = file
        .routes
        .iter()
        .filter_map(|r| r.upstream_tls.as_ref())
        .chain(
            file.upstreams
                .iter()
                .filter_map(|u| u.upstream_tls.as_ref()),
        );
    for t in upstream_tls {
        add(&t.ca);
        add(&t.client_certificate);
        add(&t.key);
    }
    out.sort();
    out.dedup();
    out
}

/// The `[state]` Redis settings of the config at `path` (with its password read from its file
/// or the vault), for commands that open the fleet's store themselves; `None` for the
/// embedded backend. The error lists every problem of the section.
pub fn shared_state_of(path: &Path) -> Result<Option<crate::state::redis::RedisSettings>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = parse_file_config(path, &text).map_err(|e| e.to_string())?;
    let mut r = Report::new(path);
    let vault = open_vault(&mut r, &file);
    let settings = state::state(&mut r, &file, vault.as_ref());
    if r.errors.is_empty() {
        Ok(settings)
    } else {
        Err(r
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// Parse and validate `text` as if read from `path` (relative paths resolve from its folder).
pub fn load_str(path: &Path, text: &str, now: SystemTime) -> Result<Loaded, ConfigErrors> {
    build_all(path, text, now, None)
}

/// Every problem at once: keys of the wrong type or name are reported and left out, and the
/// rest of the file is validated too (its problems at keys already reported are left out).
fn build_all(
    path: &Path,
    text: &str,
    now: SystemTime,
    previous: Option<&Snapshot>,
) -> Result<Loaded, ConfigErrors> {
    let (file, mut issues) = validate::parse_file_config_lenient(path, text);
    let Some(file) = file else {
        return Err(ConfigErrors(issues));
    };
    match build_snapshot(path, &file, now, previous) {
        Ok(loaded) if issues.is_empty() => Ok(loaded),
        Ok(_) => Err(ConfigErrors(issues)),
        Err(more) => {
            for m in more.0 {
                if !issues
                    .iter()
                    .any(|i| !i.key.is_empty() && m.key.starts_with(&i.key))
                {
                    issues.push(m);
                }
            }
            Err(ConfigErrors(issues))
        }
    }
}

/// Like [`load_file`], for a reload: unchanged upstreams keep `previous`'s warm pools.
pub fn reload_file(
    path: &Path,
    now: SystemTime,
    previous: &Snapshot,
) -> Result<Loaded, ConfigErrors> {
    build_all(path, &read(path)?, now, Some(previous))
}
