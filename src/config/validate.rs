//! `FileConfig` -> `Snapshot`. Every problem is collected with its key path; nothing stops at
//! the first error except a file that is not TOML or has a value of the wrong type.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;

use super::file::{FileConfig, ListenerSection, RouteSection, ServerSection};
use super::upstream::{UpstreamSettings, UpstreamSpec, parse_target};
use super::{
    AdminSettings, ConfigErrors, ConfigIssue, ListenerPolicy, Loaded, ServerSettings, Snapshot,
};
use crate::identity::{IdentityHeaders, PinSet, parse_fingerprint, parse_spki_pin};
use crate::ip_filter::{IpPolicy, IpSet};
use crate::report::Report;
use crate::routing::{Route, RouteTable, normalize_prefix};
use crate::tls::{self, ClientAuth, MinTls};

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
    let own_issuer = own_issuer(&mut r, file, previous);
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
    let mut listeners: Vec<(ListenerSkeleton, Vec<Arc<Route>>)> = Vec::new();
    let mut names = HashSet::new();
    let mut binds = HashMap::new();
    for (i, l) in file.listeners.iter().enumerate() {
        let key = format!("listeners[{i}]");
        if let Some(sk) = listener(&mut r, &key, l, now) {
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

    if file.routes.is_empty() {
        r.warn(
            "routes",
            "no [[routes]]: every request will get 404 no_route",
        );
    }
    let mut route_names = HashSet::new();
    // Each route's upstream, by route id (its place in this list).
    let mut upstreams = Vec::with_capacity(file.routes.len());
    for (i, rs) in file.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        let id = upstreams.len();
        let Some((route, spec, on)) = route(&mut r, &key, rs, &declared, id, file, &issuer_names)
        else {
            continue;
        };
        upstreams.push(spec);
        if !route_names.insert(route.name.clone()) {
            r.error(
                format!("{key}.name"),
                format!("route name \"{}\" is used twice", route.name),
            );
        }
        let route = Arc::new(route);
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
                routes.push(route.clone());
            }
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
                cert_not_after: sk.cert_not_after,
            })
        })
        .collect();
    Ok(Loaded {
        snapshot: Snapshot {
            source: path.to_path_buf(),
            server,
            upstreams,
            listeners,
            identity_headers,
            admin,
            licenses,
            tokens,
            claim_headers: token_settings.headers,
            underscores_in_headers,
            issuer: own_issuer,
            redacted: super::redact::redacted(file),
        },
        warnings: r.warnings,
    })
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

// === server ===

fn server_settings(r: &mut Report, s: &ServerSection) -> ServerSettings {
    let d = ServerSettings::default();
    ServerSettings {
        max_connections: count(
            r,
            "server.max_connections",
            s.max_connections,
            1,
            10_000_000,
        )
        .unwrap_or(d.max_connections),
        handshake_timeout: duration(r, "server.handshake_timeout", &s.handshake_timeout)
            .unwrap_or(d.handshake_timeout),
        header_read_timeout: duration(r, "server.header_read_timeout", &s.header_read_timeout)
            .unwrap_or(d.header_read_timeout),
        release_idle_after: duration(r, "server.release_idle_after", &s.release_idle_after)
            .unwrap_or(d.release_idle_after),
        // hyper's HTTP/1 reader cannot work with less than 8 KiB.
        max_header_bytes: count(
            r,
            "server.max_header_bytes",
            s.max_header_bytes,
            8192,
            1 << 20,
        )
        .unwrap_or(d.max_header_bytes),
        max_headers: count(r, "server.max_headers", s.max_headers, 1, 10_000)
            .unwrap_or(d.max_headers),
        shutdown_timeout: duration(r, "server.shutdown_timeout", &s.shutdown_timeout)
            .unwrap_or(d.shutdown_timeout),
        watch_config: s.watch_config.unwrap_or(d.watch_config),
    }
}

/// A count within `[min, max]`; `None` when absent or wrong (the error is reported).
fn count(r: &mut Report, key: &str, v: Option<u64>, min: u64, max: u64) -> Option<usize> {
    let v = v?;
    if v < min || v > max {
        r.error(key, format!("{v} is out of range: must be {min} to {max}"));
        return None;
    }
    usize::try_from(v).ok()
}

/// A positive duration such as "10s" or "500ms"; `None` when absent or wrong.
pub fn duration(r: &mut Report, key: &str, v: &Option<String>) -> Option<Duration> {
    let v = v.as_deref()?;
    match humantime::parse_duration(v) {
        Ok(d) if d.is_zero() => {
            r.error(key, format!("\"{v}\" must be longer than zero"));
            None
        }
        Ok(d) if d > Duration::from_secs(86_400) => {
            r.error(key, format!("\"{v}\" is longer than a day"));
            None
        }
        Ok(d) => Some(d),
        Err(_) => {
            r.error(
                key,
                format!("\"{v}\" is not a duration (write e.g. \"10s\", \"500ms\", \"2m\")"),
            );
            None
        }
    }
}

// === listeners ===

struct ListenerSkeleton {
    name: Arc<str>,
    bind: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    cert_not_after: SystemTime,
    pins: PinSet,
    ip: IpPolicy,
    trusted_proxies: IpSet,
    forwarded_header: crate::ip_filter::ForwardedHeader,
    proxy_protocol: bool,
}

fn listener(
    r: &mut Report,
    key: &str,
    l: &ListenerSection,
    now: SystemTime,
) -> Option<ListenerSkeleton> {
    let name = label_name(r, key, l.name.as_deref(), "listener");
    let bind = match l.bind.as_deref() {
        None => {
            r.error(
                format!("{key}.bind"),
                "missing: write e.g. \"0.0.0.0:8443\"",
            );
            None
        }
        Some(b) => {
            match b.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    r.error(
                    format!("{key}.bind"),
                    format!("\"{b}\" is not an IP:port address (e.g. \"0.0.0.0:8443\", \"[::]:8443\")"),
                );
                    None
                }
            }
        }
    };
    let min_tls = match l.min_tls.as_deref() {
        None | Some("1.2") => Some(MinTls::V1_2),
        Some("1.3") => Some(MinTls::V1_3),
        Some(v @ ("1.0" | "1.1" | "ssl3" | "SSLv3")) => {
            r.error(
                format!("{key}.min_tls"),
                format!("TLS {v} is not supported: use \"1.2\" or \"1.3\""),
            );
            None
        }
        Some(v) => {
            r.error(
                format!("{key}.min_tls"),
                format!("\"{v}\" is not a TLS version: use \"1.2\" or \"1.3\""),
            );
            None
        }
    };
    let client_ca_key = format!("{key}.client_ca");
    let client_auth = match l.client_auth.as_deref() {
        None | Some("none") => {
            if l.client_ca.is_some() {
                r.warn(
                    &client_ca_key,
                    "ignored: client_auth is \"none\", so client certificates are not requested",
                );
            }
            Some(ClientAuth::None)
        }
        Some(mode @ ("optional" | "required")) => match l.client_ca.as_deref() {
            None => {
                r.error(
                    &client_ca_key,
                    format!("missing: client_auth = \"{mode}\" needs a CA bundle to verify client certificates"),
                );
                None
            }
            Some(ca) => {
                let path = r.resolve(ca);
                match tls::load_client_roots(&path) {
                    Ok(roots) if mode == "optional" => Some(ClientAuth::Optional(roots)),
                    Ok(roots) => Some(ClientAuth::Required(roots)),
                    Err(e) => {
                        r.error(&client_ca_key, e.to_string());
                        None
                    }
                }
            }
        },
        Some("pinned") => {
            if l.client_ca.is_some() {
                r.warn(
                    &client_ca_key,
                    "ignored: client_auth is \"pinned\", so certificates are admitted by their pins, not by a CA",
                );
            }
            if l.pins.as_ref().is_none_or(Vec::is_empty)
                && l.cert_fingerprints.as_ref().is_none_or(Vec::is_empty)
            {
                r.error(
                    format!("{key}.pins"),
                    "missing: client_auth = \"pinned\" admits only pinned certificates, so it needs pins or cert_fingerprints",
                );
            }
            Some(ClientAuth::Pinned)
        }
        Some(v) => {
            r.error(
                format!("{key}.client_auth"),
                format!(
                    "\"{v}\" is not a client auth mode: use \"none\", \"optional\", \"required\" or \"pinned\""
                ),
            );
            None
        }
    };
    let pins = pin_set(r, key, &l.pins, &l.cert_fingerprints);
    let ip = ip_policy(r, key, &l.allow, &l.deny);
    let trusted_proxies = cidr_list(r, &format!("{key}.trusted_proxies"), &l.trusted_proxies);
    let proxy_protocol = l.proxy_protocol.unwrap_or(false);
    let forwarded_header = match l.forwarded_header.as_deref() {
        None => Some(crate::ip_filter::ForwardedHeader::default()),
        Some(v) => {
            let parsed = crate::ip_filter::ForwardedHeader::parse(v);
            if parsed.is_none() {
                r.error(
                    format!("{key}.forwarded_header"),
                    format!("\"{v}\" is not one of \"x-forwarded-for\", \"forwarded\" (the header the trusted proxies write)"),
                );
            } else if trusted_proxies.as_ref().is_none_or(IpSet::is_empty) {
                r.warn(
                    format!("{key}.forwarded_header"),
                    "has no effect without trusted_proxies: no forwarding header is believed",
                );
            }
            parsed
        }
    };
    if proxy_protocol && trusted_proxies.as_ref().is_none_or(IpSet::is_empty) {
        r.error(
            format!("{key}.proxy_protocol"),
            "needs trusted_proxies: only they may send a PROXY header, anyone else could forge their address",
        );
    }

    if l.certificates.is_empty() {
        r.error(
            format!("{key}.certificates"),
            "missing: a listener needs at least one [[listeners.certificates]] (chain and key)",
        );
    }
    let mut certs = Vec::new();
    for (j, c) in l.certificates.iter().enumerate() {
        let ckey = format!("{key}.certificates[{j}]");
        let (Some(chain), Some(keyf)) = (c.chain.as_deref(), c.key.as_deref()) else {
            if c.chain.is_none() {
                r.error(
                    format!("{ckey}.chain"),
                    "missing: the PEM certificate chain file",
                );
            }
            if c.key.is_none() {
                r.error(format!("{ckey}.key"), "missing: the PEM private key file");
            }
            continue;
        };
        let (chain_path, key_path) = (r.resolve(chain), r.resolve(keyf));
        match tls::load_server_cert(&chain_path, &key_path, now) {
            Ok(loaded) => {
                if let Some(w) = &loaded.expiry_warning {
                    r.warn(format!("{ckey}.chain"), w.clone());
                }
                if j > 0 && loaded.names.is_empty() {
                    r.warn(
                        format!("{ckey}.chain"),
                        "has no DNS names, so SNI can never select it (only the first certificate is the default)",
                    );
                }
                certs.push(loaded);
            }
            Err(e) => r.error(format!("{ckey}.{}", e.key_field()), e.to_string()),
        }
    }

    let (name, bind, min_tls, client_auth) = (name?, bind?, min_tls?, client_auth?);
    let (pins, ip, trusted_proxies, forwarded_header) =
        (pins?, ip?, trusted_proxies?, forwarded_header?);
    if certs.len() != l.certificates.len() || certs.is_empty() {
        return None;
    }
    let cert_not_after = certs
        .iter()
        .map(|c| c.not_after)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match tls::server_config_with(
        min_tls,
        client_auth,
        certs,
        l.tls_resumption.unwrap_or(true),
    ) {
        Ok(cfg) => Some(ListenerSkeleton {
            name,
            bind,
            tls: Arc::new(cfg),
            cert_not_after,
            pins,
            ip,
            trusted_proxies,
            forwarded_header,
            proxy_protocol,
        }),
        Err(e) => {
            r.error(key, format!("cannot build the TLS configuration: {e}"));
            None
        }
    }
}

/// A listener's or route's `name`: required, and safe as a metric label and log field.
fn label_name(r: &mut Report, key: &str, name: Option<&str>, what: &str) -> Option<Arc<str>> {
    match name {
        None => {
            r.error(
                format!("{key}.name"),
                format!("missing: every {what} needs a name"),
            );
            None
        }
        Some(n) if !is_label(n) => {
            r.error(
                format!("{key}.name"),
                format!("\"{n}\" must be 1-64 characters of A-Z a-z 0-9 _ . -"),
            );
            None
        }
        Some(n) => Some(Arc::<str>::from(n)),
    }
}

/// Names that are safe as metric labels and log fields.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

// === routes ===

fn route(
    r: &mut Report,
    key: &str,
    s: &RouteSection,
    listeners: &HashSet<&str>,
    id: usize,
    file: &FileConfig,
    issuers: &[crate::token::TokenIssuerSection],
) -> Option<(Route, UpstreamSpec, Option<HashSet<String>>)> {
    let licensing = file.licenses.is_some();
    let name = label_name(r, key, s.name.as_deref(), "route");

    let mut on = None;
    if let Some(ls) = &s.listeners {
        if ls.is_empty() {
            r.error(
                format!("{key}.listeners"),
                "empty: leave the key out to serve the route on every listener",
            );
        }
        for (j, l) in ls.iter().enumerate() {
            if !listeners.contains(l.as_str()) {
                r.error(
                    format!("{key}.listeners[{j}]"),
                    format!("no listener is named \"{l}\""),
                );
            }
        }
        on = Some(ls.iter().cloned().collect::<HashSet<_>>());
    }

    // Requests are routed on their canonical host (no trailing root dot): the route's host
    // is written the same way.
    let host = match s.host.as_deref() {
        None => Some(None),
        Some(h) if is_hostname(h.strip_suffix('.').unwrap_or(h)) => Some(Some(Box::<str>::from(
            h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase(),
        ))),
        Some(h) => {
            r.error(
                format!("{key}.host"),
                format!(
                    "\"{h}\" is not a host name (letters, digits, '-' and '.', no port, no scheme)"
                ),
            );
            None
        }
    };

    let prefix = match s.path_prefix.as_deref() {
        None => Some(Box::<str>::from("/")),
        Some(p) => match normalize_prefix(p) {
            Ok(p) => Some(p),
            Err(why) => {
                r.error(format!("{key}.path_prefix"), format!("\"{p}\" {why}"));
                None
            }
        },
    };

    let mut methods = None;
    let mut methods_ok = true;
    if let Some(ms) = &s.methods {
        if ms.is_empty() {
            r.error(
                format!("{key}.methods"),
                "empty: leave the key out to allow every method",
            );
            methods_ok = false;
        }
        let mut parsed = Vec::with_capacity(ms.len());
        for (j, m) in ms.iter().enumerate() {
            let valid_token = !m.is_empty()
                && m.bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) if valid_token => parsed.push(method),
                _ => {
                    methods_ok = false;
                    let hint = if m.bytes().any(|b| b.is_ascii_lowercase()) {
                        format!(
                            " (methods are case-sensitive: write \"{}\")",
                            m.to_ascii_uppercase()
                        )
                    } else {
                        String::new()
                    };
                    r.error(
                        format!("{key}.methods[{j}]"),
                        format!("\"{m}\" is not an HTTP method{hint}"),
                    );
                }
            }
        }
        methods = Some(parsed);
    }

    let mut settings = UpstreamSettings::default();
    if let Some(d) = duration(r, &format!("{key}.connect_timeout"), &s.connect_timeout) {
        settings.connect_timeout = d;
    }
    if let Some(d) = duration(r, &format!("{key}.response_timeout"), &s.response_timeout) {
        settings.response_timeout = d;
    }
    if let Some(d) = duration(r, &format!("{key}.idle_timeout"), &s.idle_timeout) {
        settings.idle_timeout = d;
    }

    let max_body_bytes = match s.max_body_bytes {
        Some(0) => {
            r.error(
                format!("{key}.max_body_bytes"),
                "0 would refuse every body: leave the key out for no limit",
            );
            None
        }
        v => Some(v),
    };

    let upstream = match s.upstream.as_deref() {
        None | Some([]) => {
            r.error(
                format!("{key}.upstream"),
                "missing: a route needs at least one target, e.g. [\"http://127.0.0.1:9000\"]",
            );
            None
        }
        Some(targets) => {
            let mut ok = Vec::with_capacity(targets.len());
            for (j, t) in targets.iter().enumerate() {
                match parse_target(t) {
                    Ok(a) => ok.push(a),
                    Err(why) => r.error(format!("{key}.upstream[{j}]"), format!("\"{t}\" {why}")),
                }
            }
            (ok.len() == targets.len()).then_some(ok)
        }
    };

    let pins = pin_set(r, key, &s.pins, &s.cert_fingerprints);
    let ip = ip_policy(r, key, &s.allow, &s.deny);
    let license =
        crate::license::config::route_license(r, &format!("{key}.license"), s.license.as_deref());
    if license == crate::license::RouteLicense::Required && !licensing {
        r.error(
            format!("{key}.license"),
            "\"required\" needs a [licenses] section (trusted_keys and store) to check licenses against",
        );
    }
    let auth = crate::token::validate_route_auth(
        key,
        crate::token::RouteAuthKeys {
            auth: &s.auth,
            scopes: &s.scopes,
            any_scopes: &s.any_scopes,
            issuers: &s.issuers,
        },
        issuers,
        r,
    );
    let (name, host, prefix, upstream, max_body_bytes, pins, ip, auth) = (
        name?,
        host?,
        prefix?,
        upstream?,
        max_body_bytes?,
        pins?,
        ip?,
        auth?,
    );
    if !methods_ok {
        return None;
    }
    Some((
        Route {
            id,
            name,
            host,
            path_prefix: prefix,
            methods,
            path_params: s.path_params.unwrap_or(false),
            case_insensitive: s.case_insensitive.unwrap_or(false),
            max_body_bytes,
            pins,
            ip,
            license,
            auth,
        },
        UpstreamSpec {
            targets: upstream,
            settings,
        },
        on,
    ))
}

// === admin ===

fn admin(r: &mut Report, a: &super::file::AdminSection, now: SystemTime) -> Option<AdminSettings> {
    let bind = match a.bind.as_deref() {
        None => {
            r.error("admin.bind", "missing: write e.g. \"127.0.0.1:9901\"");
            None
        }
        Some(b) => match b.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                r.error("admin.bind", format!("\"{b}\" is not an IP:port address"));
                None
            }
        },
    };
    let token_sha256 = match a.token_file.as_deref() {
        None => Some(None),
        Some(f) => {
            let path = r.resolve(f);
            match std::fs::read_to_string(&path) {
                Ok(t) if t.trim().len() >= 32 => {
                    Some(Some(crate::identity::sha256(t.trim().as_bytes())))
                }
                Ok(_) => {
                    r.error(
                        "admin.token_file",
                        format!(
                            "the token in {} is shorter than 32 characters",
                            path.display()
                        ),
                    );
                    None
                }
                Err(e) => {
                    r.error(
                        "admin.token_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
    };
    let mut hosts: Vec<Box<str>> = Vec::new();
    for (j, h) in a.hosts.iter().flatten().enumerate() {
        match crate::routing::host::canonical(h) {
            Ok(c) if c.port.is_none() => hosts.push(c.name.into_owned().into()),
            _ => r.error(
                format!("admin.hosts[{j}]"),
                format!("\"{h}\" is not a host name (letters, digits, '-' and '.', no port)"),
            ),
        }
    }
    let mut certs = Vec::new();
    for (j, c) in a.certificates.iter().enumerate() {
        let ckey = format!("admin.certificates[{j}]");
        let (Some(chain), Some(keyf)) = (c.chain.as_deref(), c.key.as_deref()) else {
            r.error(&ckey, "needs both chain and key");
            continue;
        };
        match tls::load_server_cert(&r.resolve(chain), &r.resolve(keyf), now) {
            Ok(c) => {
                // The names the admin certificate is valid for are names it answers to.
                for n in &c.names {
                    if let Ok(h) = crate::routing::host::canonical(n) {
                        hosts.push(h.name.into_owned().into());
                    }
                }
                certs.push(c)
            }
            Err(e) => r.error(format!("{ckey}.{}", e.key_field()), e.to_string()),
        }
    }
    let client_auth = match a.client_ca.as_deref() {
        None => Some(ClientAuth::None),
        Some(_) if a.certificates.is_empty() => {
            r.error(
                "admin.client_ca",
                "client certificates need TLS: add [[admin.certificates]]",
            );
            None
        }
        Some(ca) => match tls::load_client_roots(&r.resolve(ca)) {
            Ok(roots) => Some(ClientAuth::Required(roots)),
            Err(e) => {
                r.error("admin.client_ca", e.to_string());
                None
            }
        },
    };
    let (bind, token_sha256, client_auth) = (bind?, token_sha256?, client_auth?);
    let authenticated = token_sha256.is_some() || matches!(client_auth, ClientAuth::Required(_));
    if !bind.ip().is_loopback() && !authenticated {
        r.error(
            "admin.bind",
            format!("{bind} is reachable from other machines: the admin listener there needs client certificates (certificates + client_ca) or a token_file"),
        );
        return None;
    }
    if certs.len() != a.certificates.len() {
        return None;
    }
    let tls = if certs.is_empty() {
        None
    } else {
        match tls::server_config(MinTls::V1_2, client_auth, certs) {
            Ok(mut cfg) => {
                // Admin clients are tools like curl and Prometheus: HTTP/1.1 is enough.
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Arc::new(cfg))
            }
            Err(e) => {
                r.error("admin", format!("cannot build the TLS configuration: {e}"));
                return None;
            }
        }
    };
    Some(AdminSettings {
        bind,
        token_sha256,
        tls,
        hosts,
    })
}

// === identity and ip policy ===

/// `pins` and `cert_fingerprints` under `key`; `None` if any entry is wrong (reported).
fn pin_set(
    r: &mut Report,
    key: &str,
    pins: &Option<Vec<String>>,
    fps: &Option<Vec<String>>,
) -> Option<PinSet> {
    let mut ok = true;
    let mut spki = Vec::new();
    for (i, p) in pins.iter().flatten().enumerate() {
        match parse_spki_pin(p) {
            Ok(h) => spki.push(h),
            Err(e) => {
                ok = false;
                r.error(format!("{key}.pins[{i}]"), format!("\"{p}\" {e}"));
            }
        }
    }
    let mut certs = Vec::new();
    for (i, f) in fps.iter().flatten().enumerate() {
        match parse_fingerprint(f) {
            Ok(h) => certs.push(h),
            Err(e) => {
                ok = false;
                r.error(
                    format!("{key}.cert_fingerprints[{i}]"),
                    format!("\"{f}\" {e}"),
                );
            }
        }
    }
    ok.then(|| PinSet::new(spki, certs))
}

fn ip_policy(
    r: &mut Report,
    key: &str,
    allow: &Option<Vec<String>>,
    deny: &Option<Vec<String>>,
) -> Option<IpPolicy> {
    // `allow = []` reads as "allow nobody" but an empty allow list admits everyone: refuse it.
    if allow.as_ref().is_some_and(Vec::is_empty) {
        r.error(
            format!("{key}.allow"),
            "empty: an empty allow list would admit everyone; leave the key out for that, or list networks",
        );
        return None;
    }
    let allow = cidr_list(r, &format!("{key}.allow"), allow);
    let deny = cidr_list(r, &format!("{key}.deny"), deny);
    Some(IpPolicy {
        allow: allow?,
        deny: deny?,
    })
}

/// A list of CIDRs (a bare address means just that address); `None` if any is wrong.
fn cidr_list(r: &mut Report, key: &str, v: &Option<Vec<String>>) -> Option<IpSet> {
    let mut nets = Vec::new();
    let mut ok = true;
    for (i, s) in v.iter().flatten().enumerate() {
        let parsed = s
            .parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => nets.push(n),
            Err(_) => {
                ok = false;
                r.error(
                    format!("{key}[{i}]"),
                    format!("\"{s}\" is not an IP network (write e.g. \"10.0.0.0/8\", \"2001:db8::/32\" or \"192.0.2.7\")"),
                );
            }
        }
    }
    ok.then(|| IpSet::new(nets))
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
