//! `portcullis client add | list | disable | rotate-secret` and `portcullis keys rotate`:
//! functions that return the text to print or a typed error; `main.rs` only prints.
//!
//! With `--config FILE` whose `[admin]` listener answers, a command is a call to the running
//! gateway's admin API (`POST /clients`, `POST /keys/rotate`, ...): nothing needs a stop, and
//! on a fleet's store every instance sees the change. Otherwise the gateway is stopped and the
//! command opens the store itself: the config's `[state]` Redis, else its `[issuer] store`
//! file, or the file named by `--store FILE`. redb allows one opener, so a file in use by a
//! gateway without an admin listener is refused with a message saying so.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Subcommand};

use crate::identity::parse_spki_pin;
use crate::issuer::clients::{self, NewClient, RegistryError};
use crate::issuer::config::{
    MAX_ACCESS_TTL, MIN_ACCESS_TTL, OWN_LEEWAY, OwnIssuerSettings, parse_ttl,
};
use crate::issuer::keys;
use crate::issuer::unix;
use crate::license::dates::rfc3339;
use crate::state::issuer::{
    ClientRecord, Embedded, IssuerState, META_ACCESS_TTL, META_CURRENT_KID, SigningAlg, StoreError,
};

/// Where the store is: exactly one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct StoreArg {
    /// The gateway's config file: the store (and algorithm) come from its `[issuer]` section.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The issuer's store file itself (created, mode 0600, if missing).
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,
}

/// `portcullis client ...`: the token issuer's client registry.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client and print its secret. The secret is shown this once: only its
    /// argon2id hash is stored.
    Add {
        #[command(flatten)]
        store: StoreArg,
        /// Client id: 1-64 of A-Z a-z 0-9 _ . -
        #[arg(long)]
        id: String,
        /// Scopes the client may be granted, comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        scopes: Vec<String>,
        /// SPKI pin (`sha256/<base64>`, see `portcullis pin`) of a certificate the client
        /// may authenticate with (RFC 8705 tls_client_auth). Repeatable.
        #[arg(long = "cert-pin", value_name = "PIN")]
        cert_pins: Vec<String>,
        /// Certificate authentication only: no secret is made.
        #[arg(long, requires = "cert_pins")]
        cert_only: bool,
        /// The client's access-token lifetime (e.g. "5m"). Default: the issuer's.
        #[arg(long, value_name = "DURATION")]
        access_ttl: Option<String>,
    },
    /// List clients: id, state, authentication, scopes.
    List {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Disable a client: its credentials and refresh tokens stop working.
    Disable {
        #[command(flatten)]
        store: StoreArg,
        /// The client id.
        id: String,
    },
    /// Replace a client's secret and print the new one (shown this once); the old one
    /// stops working.
    RotateSecret {
        #[command(flatten)]
        store: StoreArg,
        /// The client id.
        id: String,
    },
}

/// `portcullis keys ...`: the token issuer's signing keys.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key (new kid) for the tokens minted from now on. The previous
    /// public key stays in the JWKS until the tokens it signed have expired.
    Rotate {
        #[command(flatten)]
        store: StoreArg,
        /// ES256 or EdDSA. Default: the config's `algorithm`, else the current key's.
        #[arg(long, value_name = "ALG")]
        algorithm: Option<String>,
    },
}

/// Why a command failed (printed as `error: ...`, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config file is unreadable or its `[issuer]` section is invalid.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A flag's value is unusable.
    #[error("{flag}: {message}")]
    Arg { flag: &'static str, message: String },
    #[error(transparent)]
    Admin(#[from] super::admin_api::AdminCallError),
}

fn arg(flag: &'static str, message: impl Into<String>) -> CliError {
    CliError::Arg {
        flag,
        message: message.into(),
    }
}

/// The store file and, with `--config`, the issuer settings.
fn locate(s: &StoreArg) -> Result<(PathBuf, Option<OwnIssuerSettings>), CliError> {
    match (&s.config, &s.store) {
        (Some(config), _) => {
            let settings = settings_from(config)?;
            Ok((settings.store.clone(), Some(settings)))
        }
        (None, Some(store)) => Ok((store.clone(), None)),
        (None, None) => Err(arg("--config/--store", "name the config or the store file")),
    }
}

/// The store a stopped gateway would use: the config's `[state]` Redis when it names one
/// (with the runtime its connections need), else the issuer's file.
struct Opened {
    store: Box<dyn IssuerState>,
    _runtime: Option<tokio::runtime::Runtime>,
}

fn open_store(s: &StoreArg) -> Result<Opened, CliError> {
    if let Some(config) = &s.config
        && let Some(settings) = crate::config::shared_state_of(config).map_err(CliError::Config)?
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Config(format!("cannot start the async runtime: {e}")))?;
        let _in = runtime.enter();
        let shared = crate::state::redis::RedisStore::connect(settings)
            .map_err(|e| CliError::Config(e.to_string()))?;
        let store = crate::state::redis::issuer::RedisIssuerState::new(std::sync::Arc::new(shared));
        return Ok(Opened {
            store: Box::new(store),
            _runtime: Some(runtime),
        });
    }
    Ok(Opened {
        store: Box::new(Embedded::open(&locate(s)?.0)?),
        _runtime: None,
    })
}

/// Call the running gateway's admin API when `--config` names one that answers; `Ok(None)`
/// when there is none (or nothing listens: the gateway is stopped).
fn through_admin(
    s: &StoreArg,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, CliError> {
    let Some(config) = &s.config else {
        return Ok(None);
    };
    let Some(target) = super::admin_api::target(config)? else {
        return Ok(None);
    };
    let Some((status, v)) = target.call(method, path, body)? else {
        return Ok(None);
    };
    let message = || {
        v["message"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or("refused")
            .to_owned()
    };
    match status.as_u16() {
        200 | 201 => Ok(Some(v)),
        409 => Err(RegistryError::Exists(path_id(path)).into()),
        404 if v["error"] == "client_not_found" => {
            Err(RegistryError::NotFound(path_id(path)).into())
        }
        400 => Err(RegistryError::Invalid(message()).into()),
        _ => Err(CliError::Config(format!(
            "the gateway's admin API at {} refused: {} {}",
            target.addr,
            status,
            message()
        ))),
    }
}

/// The client id in `/clients/{id}/...`.
fn path_id(path: &str) -> String {
    path.trim_start_matches("/clients/")
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned()
}

fn settings_from(config: &Path) -> Result<OwnIssuerSettings, CliError> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| CliError::Config(format!("cannot read {}: {e}", config.display())))?;
    let file = crate::config::parse_file_config(config, &text)
        .map_err(|e| CliError::Config(e.to_string()))?;
    let Some(section) = file.issuer.as_ref() else {
        return Err(CliError::Config(format!(
            "{}: no [issuer] section: give --store FILE instead",
            config.display()
        )));
    };
    let mut r = crate::config::Report::new(config);
    let settings = crate::issuer::config::validate(section, &mut r).map(|mut s| {
        // Keys are sealed under the config's vault, as the gateway would seal them.
        s.sealer = crate::config::open_vault(&mut r, &file).map(|v| v.sealer());
        s
    });
    match settings {
        Some(s) if r.errors.is_empty() => Ok(s),
        _ => Err(CliError::Config(
            r.errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )),
    }
}

/// Run one `client` command as of `now`; the text to print.
pub fn run_client(cmd: ClientCommand, now: SystemTime) -> Result<String, CliError> {
    let now = unix(now);
    match cmd {
        ClientCommand::Add {
            store,
            id,
            scopes,
            cert_pins,
            cert_only,
            access_ttl,
        } => {
            let mut pins = Vec::new();
            for p in &cert_pins {
                pins.push(
                    parse_spki_pin(p).map_err(|e| arg("--cert-pin", format!("\"{p}\" {e}")))?,
                );
            }
            let access_token_ttl = access_ttl
                .as_deref()
                .map(|t| parse_ttl(t, MIN_ACCESS_TTL, MAX_ACCESS_TTL))
                .transpose()
                .map_err(|m| arg("--access-ttl", m))?;
            let body = serde_json::json!({
                "id": id, "scopes": scopes, "cert_pins": cert_pins, "cert_only": cert_only,
                "access_ttl": access_ttl,
            });
            if let Some(v) = through_admin(&store, http::Method::POST, "/clients", Some(body))? {
                return Ok(added(&v));
            }
            let new = NewClient {
                id,
                scopes,
                cert_pins: pins,
                cert_only,
                access_token_ttl,
            };
            let opened = open_store(&store)?;
            let (rec, secret) = clients::add(&*opened.store, &new, now)?;
            let mut out = format!("client_id:     {}\n", rec.id);
            match secret {
                Some(s) => {
                    out.push_str(&format!("client_secret: {}\n", s.expose()));
                    out.push_str("(shown this once: only its argon2id hash is stored)\n");
                }
                None => out.push_str("client_secret: none (certificate authentication only)\n"),
            }
            out.push_str(&format!(
                "scopes:        {}\n",
                none_if_empty(&rec.scopes.join(" "))
            ));
            Ok(out)
        }
        ClientCommand::List { store } => {
            let list = match through_admin(&store, http::Method::GET, "/clients", None)? {
                Some(v) => v["clients"]
                    .as_array()
                    .map(|a| a.iter().map(record_of).collect())
                    .unwrap_or_default(),
                None => clients::list(&*open_store(&store)?.store)?,
            };
            if list.is_empty() {
                return Ok("no clients\n".to_owned());
            }
            let mut out = format!(
                "{:<24} {:<9} {:<12} {:<8} SCOPES\n",
                "ID", "STATE", "AUTH", "TTL"
            );
            for c in &list {
                out.push_str(&row(c));
            }
            Ok(out)
        }
        ClientCommand::Disable { store, id } => {
            let path = format!("/clients/{id}/disable");
            if through_admin(&store, http::Method::POST, &path, None)?.is_some() {
                return Ok(format!("client {id} disabled\n"));
            }
            let rec = clients::disable(&*open_store(&store)?.store, &id)?;
            Ok(format!("client {} disabled\n", rec.id))
        }
        ClientCommand::RotateSecret { store, id } => {
            let path = format!("/clients/{id}/rotate-secret");
            let (id, secret) = match through_admin(&store, http::Method::POST, &path, None)? {
                Some(v) => (
                    v["client_id"].as_str().unwrap_or(&id).to_owned(),
                    zeroize::Zeroizing::new(v["client_secret"].as_str().unwrap_or("").to_owned()),
                ),
                None => {
                    let (rec, secret) =
                        clients::rotate_secret(&*open_store(&store)?.store, &id, now)?;
                    (rec.id, zeroize::Zeroizing::new(secret.expose().to_owned()))
                }
            };
            Ok(format!(
                "client_id:     {id}\nclient_secret: {}\n(shown this once; the previous secret no longer works)\n",
                secret.as_str()
            ))
        }
    }
}

/// What `POST /clients` answered, printed as a direct `add` prints it.
fn added(v: &serde_json::Value) -> String {
    let mut out = format!("client_id:     {}\n", v["client_id"].as_str().unwrap_or(""));
    match v["client_secret"].as_str() {
        Some(s) => {
            out.push_str(&format!("client_secret: {s}\n"));
            out.push_str("(shown this once: only its argon2id hash is stored)\n");
        }
        None => out.push_str("client_secret: none (certificate authentication only)\n"),
    }
    let scopes: Vec<&str> = v["scopes"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "scopes:        {}\n",
        none_if_empty(&scopes.join(" "))
    ));
    out
}

/// A client as `GET /clients` shows it, as a record to print (no secret hash: only whether
/// there is one).
fn record_of(v: &serde_json::Value) -> ClientRecord {
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    ClientRecord {
        id: v["client_id"].as_str().unwrap_or("").to_owned(),
        secret_hash: v["secret"].as_bool().unwrap_or(false).then(String::new),
        scopes: strings("scopes"),
        cert_pins: strings("cert_pins"),
        access_token_ttl: v["access_ttl_secs"].as_u64(),
        disabled: v["state"] == "disabled",
        created_at: 0,
        secret_rotated_at: None,
    }
}

fn none_if_empty(s: &str) -> &str {
    if s.is_empty() { "(none)" } else { s }
}

fn row(c: &ClientRecord) -> String {
    let auth = match (c.secret_hash.is_some(), c.cert_pins.is_empty()) {
        (true, true) => "secret",
        (true, false) => "secret+cert",
        (false, false) => "cert",
        (false, true) => "none",
    };
    let ttl = c
        .access_token_ttl
        .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string())
        .unwrap_or_else(|| "default".to_owned());
    format!(
        "{:<24} {:<9} {:<12} {:<8} {}\n",
        c.id,
        if c.disabled { "disabled" } else { "active" },
        auth,
        ttl,
        none_if_empty(&c.scopes.join(" "))
    )
}

/// Run one `keys` command as of `now`; the text to print.
pub fn run_keys(cmd: KeysCommand, now: SystemTime) -> Result<String, CliError> {
    let now = unix(now);
    match cmd {
        KeysCommand::Rotate { store, algorithm } => {
            let flag = algorithm
                .as_deref()
                .map(|a| {
                    SigningAlg::parse(a).ok_or_else(|| arg("--algorithm", "use ES256 or EdDSA"))
                })
                .transpose()?;
            let body = flag.map(|a| serde_json::json!({"algorithm": a.name()}));
            if let Some(v) = through_admin(&store, http::Method::POST, "/keys/rotate", body)? {
                let mut out = format!(
                    "new signing key: {} ({})\n",
                    v["kid"].as_str().unwrap_or(""),
                    v["alg"].as_str().unwrap_or("")
                );
                if let (Some(old), Some(until)) = (
                    v["retired"]["kid"].as_str(),
                    v["retired"]["published_until"].as_str(),
                ) {
                    out.push_str(&format!(
                        "previous key {old} stays in the JWKS until {until} (its tokens have expired by then)\n"
                    ));
                }
                return Ok(out);
            }
            let settings = locate(&store)?.1;
            let opened = open_store(&store)?;
            let store = opened.store;
            let sealer = settings.as_ref().and_then(|s| s.sealer.as_ref());
            let rotated = store.write(|tx| {
                if let Some(s) = &settings {
                    // Retention of the old key reads the configured access-token lifetime.
                    tx.set_meta(META_ACCESS_TTL, &s.access_token_ttl.as_secs().to_string())?;
                }
                let current = match tx.meta(META_CURRENT_KID)? {
                    Some(kid) => tx.key(&kid)?.map(|k| k.alg),
                    None => None,
                };
                let alg = flag
                    .or(settings.as_ref().map(|s| s.algorithm))
                    .or(current)
                    .unwrap_or(SigningAlg::ES256);
                keys::rotate(tx, alg, now, OWN_LEEWAY, sealer)
            })?;
            let mut out = format!(
                "new signing key: {} ({})\n",
                rotated.kid,
                rotated.alg.name()
            );
            if let Some((old, until)) = rotated.retired {
                out.push_str(&format!(
                    "previous key {old} stays in the JWKS until {} (its tokens have expired by then)\n",
                    rfc3339(until)
                ));
            }
            Ok(out)
        }
    }
}
