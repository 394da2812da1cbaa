//! `[state]`: where the state a fleet shares lives. `embedded` (the default) keeps today's
//! memory and redb files; `redis` names one Redis server that every instance uses.

use std::time::Duration;

use zeroize::Zeroizing;

use super::file::{FileConfig, StateSection};
use crate::report::Report;
use crate::state::redis::{FailMode, RedisSettings};
use crate::vault::{Kind, Vault};

pub const DEFAULT_KEY_PREFIX: &str = "portcullis:";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
const DEFAULT_POOL_SIZE: usize = 2;

/// The Redis settings when `[state] backend = "redis"`; `None` for the embedded backend or
/// when something is wrong (reported).
pub(super) fn state(
    r: &mut Report,
    file: &FileConfig,
    vault: Option<&Vault>,
) -> Option<RedisSettings> {
    let s = file.state.as_ref()?;
    match s.backend.as_deref().unwrap_or("embedded") {
        "embedded" => {
            embedded_only(r, s);
            None
        }
        "redis" => redis(r, s, vault),
        other => {
            r.error(
                "state.backend",
                format!("\"{other}\" is not a backend (write \"embedded\" or \"redis\")"),
            );
            None
        }
    }
}

/// Keys that mean something only to the redis backend are refused beside `embedded`, so a
/// half-finished switch is not silently a single machine.
fn embedded_only(r: &mut Report, s: &StateSection) {
    let set = [
        ("url", s.url.is_some()),
        ("username", s.username.is_some()),
        ("password_file", s.password_file.is_some()),
        ("password_credential", s.password_credential.is_some()),
        ("ca", s.ca.is_some()),
        ("key_prefix", s.key_prefix.is_some()),
        ("connect_timeout", s.connect_timeout.is_some()),
        ("command_timeout", s.command_timeout.is_some()),
        ("pool_size", s.pool_size.is_some()),
        (
            "on_unavailable.rate_limits",
            s.on_unavailable.rate_limits.is_some(),
        ),
        ("on_unavailable.quotas", s.on_unavailable.quotas.is_some()),
        ("cluster", s.cluster.is_some()),
    ];
    for (key, _) in set.iter().filter(|(_, on)| *on) {
        r.error(
            format!("state.{key}"),
            "applies only with backend = \"redis\"",
        );
    }
}

fn redis(r: &mut Report, s: &StateSection, vault: Option<&Vault>) -> Option<RedisSettings> {
    let mut ok = true;
    let url = match s.url.as_deref() {
        None => {
            r.error(
                "state.url",
                "missing: the Redis server, e.g. \"redis://10.0.0.5:6379\" or \"rediss://redis.internal:6380\" for TLS",
            );
            None
        }
        Some(u) => match url_checked(u) {
            Ok(()) => Some(u.to_owned()),
            Err(why) => {
                r.error("state.url", why);
                None
            }
        },
    };
    let mut username = s.username.clone();
    let password = match (&s.password_file, &s.password_credential) {
        (Some(_), Some(_)) => {
            r.error(
                "state",
                "name one of password_file and password_credential, not both",
            );
            ok = false;
            None
        }
        (Some(f), None) => {
            let path = r.resolve(f);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let text = Zeroizing::new(text);
                    match text.lines().next().map(str::trim_end) {
                        Some(p) if !p.is_empty() => Some(Zeroizing::new(p.to_owned())),
                        _ => {
                            r.error(
                                "state.password_file",
                                format!("{} holds no password on its first line", path.display()),
                            );
                            ok = false;
                            None
                        }
                    }
                }
                Err(e) => {
                    r.error(
                        "state.password_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    ok = false;
                    None
                }
            }
        }
        (None, Some(name)) => match credential(r, name, vault, &mut username) {
            Some(p) => Some(p),
            None => {
                ok = false;
                None
            }
        },
        (None, None) => None,
    };
    if username.is_some() && password.is_none() && ok {
        r.error(
            "state.username",
            "an ACL user needs a password: set password_file or password_credential",
        );
        ok = false;
    }
    let ca = match s.ca.as_deref() {
        None => None,
        Some(c) => {
            let path = r.resolve(c);
            match std::fs::read(&path) {
                Ok(pem) if url.as_deref().is_some_and(|u| u.starts_with("rediss://")) => Some(pem),
                Ok(_) => {
                    r.error("state.ca", "applies only to a rediss:// (TLS) url");
                    ok = false;
                    None
                }
                Err(e) => {
                    r.error("state.ca", format!("{}: {e}", path.display()));
                    ok = false;
                    None
                }
            }
        }
    };
    let key_prefix = s
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if key_prefix.len() > 64 || key_prefix.bytes().any(|b| b.is_ascii_control()) {
        r.error(
            "state.key_prefix",
            "must be at most 64 characters with no control characters",
        );
        ok = false;
    }
    let connect_timeout = super::server::duration(r, "state.connect_timeout", &s.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let command_timeout = super::server::duration(r, "state.command_timeout", &s.command_timeout)
        .unwrap_or(DEFAULT_COMMAND_TIMEOUT);
    let pool_size = match s.pool_size {
        Some(0) => {
            r.error("state.pool_size", "must be at least 1");
            ok = false;
            DEFAULT_POOL_SIZE
        }
        Some(n) if n > 64 => {
            r.error(
                "state.pool_size",
                format!("{n} is more than 64 connections"),
            );
            ok = false;
            DEFAULT_POOL_SIZE
        }
        Some(n) => n,
        None => DEFAULT_POOL_SIZE,
    };
    let rate_limits = fail_mode(
        r,
        "state.on_unavailable.rate_limits",
        &s.on_unavailable.rate_limits,
        FailMode::Open,
    );
    let quotas = fail_mode(
        r,
        "state.on_unavailable.quotas",
        &s.on_unavailable.quotas,
        FailMode::Open,
    );
    let (url, rate_limits, quotas) = (url?, rate_limits?, quotas?);
    ok.then_some(RedisSettings {
        url,
        username,
        password,
        ca,
        key_prefix,
        connect_timeout,
        command_timeout,
        pool_size,
        cluster: s.cluster.unwrap_or(false),
        rate_limits,
        quotas,
    })
}

fn fail_mode(r: &mut Report, key: &str, v: &Option<String>, default: FailMode) -> Option<FailMode> {
    match v.as_deref() {
        None => Some(default),
        Some(m) => FailMode::parse(m).or_else(|| {
            r.error(
                key,
                format!("\"{m}\" is not a failure mode (write \"fail_open\" or \"fail_closed\")"),
            );
            None
        }),
    }
}

/// A Redis URL the gateway accepts: `redis://` or `rediss://`, a host, and no credentials
/// (a password in the config would be shown by `/config` and kept in backups).
fn url_checked(u: &str) -> Result<(), String> {
    let rest = if let Some(rest) = u.strip_prefix("rediss://") {
        rest
    } else if let Some(rest) = u.strip_prefix("redis://") {
        rest
    } else {
        return Err(format!(
            "\"{u}\" is not a Redis URL (write redis://host:port or rediss://host:port for TLS)"
        ));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err(
            "holds credentials: put the user in state.username and the password in state.password_file or state.password_credential".into(),
        );
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(format!("\"{u}\" names no host"));
    }
    use redis::IntoConnectionInfo;
    u.into_connection_info()
        .map(|_| ())
        .map_err(|e| format!("\"{u}\": {e}"))
}

/// The password from a vault record: `api_key` holds the password, `basic` holds
/// `user:password` (and so also names the user, unless `username` is set).
fn credential(
    r: &mut Report,
    name: &str,
    vault: Option<&Vault>,
    username: &mut Option<String>,
) -> Option<Zeroizing<String>> {
    let Some(vault) = vault else {
        r.error(
            "state.password_credential",
            "needs a [vault] to read the record from",
        );
        return None;
    };
    let (kind, secret) = match vault.get(name) {
        Ok(found) => found,
        Err(e) => {
            r.error("state.password_credential", e.to_string());
            return None;
        }
    };
    let Ok(text) = std::str::from_utf8(secret.expose()) else {
        r.error(
            "state.password_credential",
            format!("the record \"{name}\" is not UTF-8 text"),
        );
        return None;
    };
    match kind {
        Kind::ApiKey => Some(Zeroizing::new(text.to_owned())),
        Kind::Basic => {
            let Some((user, password)) = text.split_once(':') else {
                r.error(
                    "state.password_credential",
                    format!("the basic record \"{name}\" has no user:password"),
                );
                return None;
            };
            if username.is_none() {
                *username = Some(user.to_owned());
            }
            Some(Zeroizing::new(password.to_owned()))
        }
        other => {
            r.error(
                "state.password_credential",
                format!(
                    "the record \"{name}\" is of kind {}: use api_key (the password) or basic (user:password)",
                    other.label()
                ),
            );
            None
        }
    }
}
