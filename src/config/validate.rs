//! `FileConfig` -> `Snapshot`. Every problem is collected with its key path; nothing stops at
//! the first error except a file that is not TOML or has a value of the wrong type.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::admin::*;
use super::file::FileConfig;
use super::listener::*;
use super::route::*;
use super::server::*;
use super::{ConfigErrors, ConfigIssue, ListenerPolicy, Loaded, Snapshot};
use crate::identity::IdentityHeaders;
use crate::report::Report;
use crate::routing::{Route, RouteTable};

/// Parse TOML into the file mirror. Type errors name the key path (`routes[2].upstream`).
pub fn parse_file_config(path: &Path, text: &str) -> Result<FileConfig, ConfigErrors> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let at = line_of(e.span())
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        ConfigErrors(vec![ConfigIssue::new(
            path,
            "",
            format!("not valid TOML: {}{at}", e.message().trim()),
        )])
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let at = line_of(inner.span())
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        let key = if key == "." { String::new() } else { key };
        ConfigErrors(vec![ConfigIssue::new(
            path,
            key,
            format!("{}{at}", inner.message().trim()),
        )])
    })
}

/// At most this many keys of the wrong type or name are reported and left out before
/// parsing gives up.
const MAX_PARSE_PROBLEMS: usize = 50;

/// [`parse_file_config`], reading past keys of the wrong type or name: each is reported (the
/// first with its line) and left out, so that validation can report the rest of the file's
/// problems too. `None` (with the issues) when the TOML itself does not parse, or a problem
/// cannot be cut out.
pub fn parse_file_config_lenient(
    path: &Path,
    text: &str,
) -> (Option<FileConfig>, Vec<ConfigIssue>) {
    let mut issues = match parse_file_config(path, text) {
        Ok(f) => return (Some(f), Vec::new()),
        Err(e) => e.0,
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return (None, issues);
    };
    let mut value = toml::Value::Table(table);
    for _ in 0..MAX_PARSE_PROBLEMS {
        let Some(last) = issues.last() else {
            return (None, issues);
        };
        if !remove_key(&mut value, &last.key, &last.message) {
            return (None, issues);
        }
        match serde_path_to_error::deserialize::<_, FileConfig>(value.clone()) {
            Ok(f) => return (Some(f), issues),
            Err(e) => {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                issues.push(ConfigIssue::new(path, key, e.into_inner().message().trim()));
            }
        }
    }
    (None, issues)
}

/// Take the value at `key` (`routes[2].upstream`, as serde_path_to_error prints it) out of
/// `root`; an unknown field's name comes from `message`. False when there is nothing to cut.
fn remove_key(root: &mut toml::Value, key: &str, message: &str) -> bool {
    let mut segments: Vec<(&str, Vec<usize>)> = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        let indexes = rest
            .split('[')
            .filter_map(|i| i.trim_end_matches(']').parse::<usize>().ok())
            .collect();
        segments.push((name, indexes));
    }
    // "unknown field `x`, expected ...": the path may stop at the table holding it.
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next());
    if let Some(field) = unknown
        && segments
            .last()
            .is_none_or(|(n, i)| *n != field || !i.is_empty())
    {
        segments.push((field, Vec::new()));
    }
    let Some(((last_name, last_indexes), parents)) = segments.split_last() else {
        return false;
    };
    let mut at = root;
    for (name, indexes) in parents {
        let Some(next) = at.get_mut(*name) else {
            return false;
        };
        at = next;
        for i in indexes {
            let Some(next) = at.get_mut(*i) else {
                return false;
            };
            at = next;
        }
    }
    match last_indexes.split_last() {
        None => at
            .as_table_mut()
            .is_some_and(|t| t.remove(*last_name).is_some()),
        Some((last_i, inner)) => {
            let Some(mut arr) = at.get_mut(*last_name) else {
                return false;
            };
            for i in inner {
                let Some(next) = arr.get_mut(*i) else {
                    return false;
                };
                arr = next;
            }
            match arr.as_array_mut() {
                Some(a) if *last_i < a.len() => {
                    a.remove(*last_i);
                    true
                }
                _ => false,
            }
        }
    }
}

/// Validate the whole file and compile it. `now` judges certificate expiry.
///
/// `previous` (on reload) lends the running issuer's link to a new issuer on the same store.
pub fn build_snapshot(
    path: &Path,
    file: &FileConfig,
    now: SystemTime,
    previous: Option<&Snapshot>,
) -> Result<Loaded, ConfigErrors> {
    let mut r = Report::new(path);
    let server = server_settings(&mut r, &file.server);
    let underscores_in_headers = match file.server.underscores_in_headers.as_deref() {
        None => crate::framing::UnderscoreHeaders::default(),
        Some(v) => crate::framing::UnderscoreHeaders::parse(v).unwrap_or_else(|| {
            r.error(
                "server.underscores_in_headers",
                format!("\"{v}\" is not one of \"drop\", \"refuse\", \"allow\""),
            );
            crate::framing::UnderscoreHeaders::default()
        }),
    };
    let identity_headers = match &file.identity_headers {
        None => IdentityHeaders::default(),
        Some(s) => IdentityHeaders::from_names(
            &crate::identity::IdentityHeaderNames {
                subject: s.subject.as_deref(),
                common_name: s.common_name.as_deref(),
                spki: s.spki.as_deref(),
                fingerprint: s.fingerprint.as_deref(),
                serial: s.serial.as_deref(),
            },
            &mut r,
        ),
    };
    let admin = file.admin.as_ref().and_then(|a| admin(&mut r, a, now));
    let licenses = file
        .licenses
        .as_ref()
        .and_then(|l| crate::license::config::validate(l, &mut r));
    let token_issuers = crate::token::validate_issuers(&file.token_issuers, &mut r);
    let token_settings = crate::token::validate_token_section(&file.token, &mut r);
    let mut own_issuer = own_issuer(&mut r, file, previous);
    // Routes may name the own issuer like any other: `issuers = ["portcullis"]`.
    let mut issuer_names = file.token_issuers.clone();
    if let Some(own) = &own_issuer {
        issuer_names.push(crate::token::TokenIssuerSection {
            name: Some(own.name.to_string()),
            ..Default::default()
        });
    }

    if file.listeners.is_empty() {
        r.error("listeners", "at least one [[listeners]] entry is required");
    }
    let revoked = revoked_keys(&r, file, previous);
    let mut listeners: Vec<(ListenerSkeleton, Vec<Arc<Route>>)> = Vec::new();
    let mut names = HashSet::new();
    let mut binds = HashMap::new();
    for (i, l) in file.listeners.iter().enumerate() {
        let key = format!("listeners[{i}]");
        if let Some(sk) = listener(&mut r, &key, l, now, revoked.as_ref()) {
            if !names.insert(sk.name.clone()) {
                r.error(
                    format!("{key}.name"),
                    format!("listener name \"{}\" is used twice", sk.name),
                );
            }
            if sk.bind.port() != 0
                && let Some(prev) = binds.insert(sk.bind, i)
            {
                r.error(
                    format!("{key}.bind"),
                    format!("{} is already bound by listeners[{prev}]", sk.bind),
                );
            }
            listeners.push((sk, Vec::new()));
        }
    }
    let declared: HashSet<&str> = file
        .listeners
        .iter()
        .filter_map(|l| l.name.as_deref())
        .collect();
    if let Some(own) = &own_issuer
        && !declared.contains(&*own.listener)
    {
        r.error(
            "issuer.listener",
            format!("no listener is named \"{}\"", own.listener),
        );
    }

    // Opened before [enrollment], whose CA key may be sealed in it.
    let vault = super::vault::open(&mut r, file);
    let enrollment = file.enrollment.as_ref().and_then(|e| {
        let routes: Vec<&str> = file
            .routes
            .iter()
            .filter_map(|r| r.name.as_deref())
            .collect();
        let cx = super::enrollment::Context {
            listeners: &declared,
            routes: &routes,
            trusted: licenses.as_ref().map(|l| &l.trusted_keys),
            vault: vault.as_ref(),
            vault_section: file.vault.is_some(),
        };
        let mut settings = super::enrollment::validate(e, &cx, &mut r)?;
        settings.revoked = revoked.clone().unwrap_or_default();
        settings.audit_log = admin.as_ref().and_then(|a| a.audit_log.clone());
        Some(settings)
    });
    if let Some(e) = &enrollment {
        // redb allows one opener: two sections on one file would lock each other out.
        let taken = [
            licenses
                .as_ref()
                .map(|l| ("licenses.store", l.store.as_path())),
            own_issuer
                .as_ref()
                .map(|i| ("issuer.store", i.store.as_path())),
        ];
        for (key, path) in taken.into_iter().flatten() {
            if path == e.tokens {
                r.error(
                    "enrollment.tokens",
                    format!("the same file as {key}: use a file of its own"),
                );
            }
        }
    }

    if file.routes.is_empty() {
        r.warn(
            "routes",
            "no [[routes]]: every request will get 404 no_route",
        );
    }
    // `[limits] default` is checked here once; each route without limits of its own uses it.
    let mut limit_keys = crate::state::limits::DEFAULT_MAX_KEYS;
    if let Some(l) = &file.limits {
        if let Some(d) = &l.default {
            let _ = super::limits::limits(&mut r, "limits.default", "default", d);
        }
        match l.max_keys {
            Some(n) if n < 1000 => r.error(
                "limits.max_keys",
                format!("{n} is too few to track (at least 1000)"),
            ),
            Some(n) => limit_keys = n,
            None => {}
        }
    }
    let quota_store = {
        let mut others: Vec<(&str, &Path)> = Vec::new();
        if let Some(l) = &licenses {
            others.push(("licenses.store", &l.store));
        }
        if let Some(i) = &own_issuer {
            others.push(("issuer.store", &i.store));
        }
        super::limits::quota_store(&mut r, file, &others)
    };
    let named_upstreams = super::upstreams::upstreams(&mut r, file, now);
    let fleet = file
        .state
        .as_ref()
        .is_some_and(|s| s.backend.as_deref() == Some("redis"));
    if let Some(own) = own_issuer.as_mut() {
        own.sealer = vault.as_ref().map(|v| v.sealer());
        match (own.sealer.is_none(), fleet) {
            // In Redis the keys would cross the network and sit in its memory, replicas and
            // backups in clear.
            (true, true) => r.error(
                "issuer",
                "with [state] backend = \"redis\" the issuer's signing keys would be stored in \
                 Redis in clear: add a [vault] (the same on every instance) to seal them",
            ),
            (true, false) => r.warn(
                "issuer",
                "the issuer's signing keys are stored in clear in its store, protected by the \
                 file's mode only: add a [vault] to seal them",
            ),
            (false, _) => {}
        }
    }
    let shared_state = super::state::state(&mut r, file, vault.as_ref());
    let tracing = file
        .tracing
        .as_ref()
        .and_then(|t| super::tracing::tracing(&mut r, t));
    // Not an error: it is the safe outcome, but likely not what was meant.
    if tracing
        .as_ref()
        .is_some_and(|t| t.trust_incoming == super::tracing::TrustIncoming::TrustedProxies)
        && file
            .listeners
            .iter()
            .all(|l| l.trusted_proxies.as_ref().is_none_or(Vec::is_empty))
    {
        r.warn(
            "tracing.trust_incoming",
            "\"trusted_proxies\" but no listener names trusted_proxies: every request starts a new trace",
        );
    }
    let inputs = RouteInputs {
        listeners: &declared,
        file,
        issuers: &issuer_names,
        upstreams: &named_upstreams,
        vault: vault.as_ref(),
        now,
    };
    let mut route_names = HashSet::new();
    // Each route's upstream, by route id (its place in this list).
    let mut upstreams = Vec::with_capacity(file.routes.len());
    // The OAuth2 token sources the routes inject from, each once.
    let mut token_sources = Vec::new();
    let mut route_tokens = Vec::with_capacity(file.routes.len());
    for (i, rs) in file.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        let id = upstreams.len();
        let Some((route, spec, on)) = route(&mut r, &key, rs, id, &inputs, &mut token_sources)
        else {
            continue;
        };
        upstreams.push(spec);
        route_tokens.push(route.credential.as_ref().and_then(|c| c.token_source()));
        if !route_names.insert(route.name.clone()) {
            r.error(
                format!("{key}.name"),
                format!("route name \"{}\" is used twice", route.name),
            );
        }
        let route = Arc::new(route);
        // Listeners of the route that do not serve its host (their names are known).
        let mut unserved = Vec::new();
        for (sk, routes) in listeners.iter_mut() {
            if on.as_ref().is_none_or(|on| on.contains(&*sk.name)) {
                if let Some(dup) = routes
                    .iter()
                    .find(|o| o.host == route.host && o.path_prefix == route.path_prefix)
                {
                    r.error(
                        key.clone(),
                        format!(
                            "same host and path_prefix as route \"{}\" on listener \"{}\"",
                            dup.name, sk.name
                        ),
                    );
                }
                if route
                    .host
                    .as_deref()
                    .is_some_and(|h| !sk.names.is_empty() && !sk.names.contains(h))
                {
                    unserved.push(format!("\"{}\"", sk.name));
                }
                routes.push(route.clone());
            }
        }
        // A warning, not an error: the route fails closed (421), and a renewed certificate
        // that drops a name must still reload.
        if let (Some(host), false) = (route.host.as_deref(), unserved.is_empty()) {
            r.warn(
                format!("{key}.host"),
                format!(
                    "\"{host}\" is not a name served by {} {} (its certificates' names or hosts): requests for it get 421 misdirected_request there",
                    if unserved.len() == 1 { "listener" } else { "listeners" },
                    unserved.join(", ")
                ),
            );
        }
    }

    if !r.errors.is_empty() {
        return Err(ConfigErrors(r.errors));
    }
    let Some(mut token_issuers) = token_issuers else {
        return Err(ConfigErrors(r.errors));
    };
    // The gateway trusts its own issuer with no extra config: its pushed keys join the
    // verifier's issuers, and its revocations are the verifier's denylist.
    let denylist: Arc<dyn crate::token::Denylist> = match &own_issuer {
        Some(own) => {
            token_issuers.push(own.verifier_source());
            own.link.denylist()
        }
        None => Arc::new(crate::token::NoRevocations),
    };
    let tokens = Arc::new(
        crate::token::TokenVerifier::new(token_issuers, denylist)
            .with_cache_max_entries(token_settings.cache_max_entries),
    );
    let listeners = listeners
        .into_iter()
        .map(|(sk, routes)| {
            Arc::new(ListenerPolicy {
                name: sk.name,
                bind: sk.bind,
                tls: sk.tls,
                routes: RouteTable::new(routes),
                pins: sk.pins,
                ip: crate::ip_filter::ListenerIp {
                    lists: sk.ip,
                    trusted_proxies: sk.trusted_proxies,
                    forwarded_header: sk.forwarded_header,
                },
                proxy_protocol: sk.proxy_protocol,
                flood: sk.flood,
                cert_not_after: sk.cert_not_after,
                names: sk.names,
            })
        })
        .collect();
    Ok(Loaded {
        snapshot: Snapshot {
            source: path.to_path_buf(),
            server,
            upstreams,
            token_sources,
            route_tokens,
            listeners,
            identity_headers,
            admin,
            licenses,
            tokens,
            claim_headers: token_settings.headers,
            underscores_in_headers,
            limit_keys,
            quota_store,
            shared_state,
            issuer: own_issuer,
            tracing,
            enrollment,
            redacted: super::redact::redacted(file),
        },
        warnings: r.warnings,
    })
}

// === enrollment ===

/// The set of revoked keys the listeners' verifiers read, when `[enrollment]` is configured:
/// `previous`'s when it keeps the same token store (whose running enrollment keeps filling
/// it, so listeners of both generations refuse the same keys), else a new one.
fn revoked_keys(
    r: &Report,
    file: &FileConfig,
    previous: Option<&Snapshot>,
) -> Option<Arc<crate::tls::RevokedKeys>> {
    let section = file.enrollment.as_ref()?;
    let tokens = section.tokens.as_deref().map(|p| r.resolve(p));
    let running = previous
        .and_then(|p| p.enrollment.as_ref())
        .filter(|p| Some(&p.tokens) == tokens.as_ref());
    Some(running.map_or_else(Default::default, |p| Arc::clone(&p.revoked)))
}

// === issuer ===

/// `[issuer]`, validated, with the link of `previous` when it uses the same store: the
/// running issuer keeps filling that link, so the new snapshot's verifier sees its keys and
/// revocations at once (like a warm upstream pool carried over).
fn own_issuer(
    r: &mut Report,
    file: &FileConfig,
    previous: Option<&Snapshot>,
) -> Option<super::issuer::OwnIssuerSettings> {
    let mut own = super::issuer::validate(file.issuer.as_ref()?, r)?;
    for (i, t) in file.token_issuers.iter().enumerate() {
        if t.name.as_deref() == Some(&*own.name) {
            r.error(
                format!("token_issuers[{i}].name"),
                format!("\"{}\" is the name of the gateway's own [issuer]", own.name),
            );
        }
        if t.issuer.as_deref() == Some(own.issuer.as_str()) {
            r.error(
                format!("token_issuers[{i}].issuer"),
                format!(
                    "\"{}\" is the gateway's own [issuer]: which keys would verify it?",
                    own.issuer
                ),
            );
        }
    }
    if let Some(running) = previous
        .and_then(|p| p.issuer.as_ref())
        .filter(|p| p.store == own.store)
    {
        own.link = running.link.clone();
    }
    Some(own)
}
