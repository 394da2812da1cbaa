//! `[[routes]]`: host, prefix, methods, upstream and the route's policy.

use std::collections::HashSet;

use http::Method;

use super::listener::*;
use super::policy::*;
use crate::config::file::RouteUpstream;
use crate::config::file::{FileConfig, RouteSection};
use crate::config::upstream::{Protocol, Transport, UpstreamSettings, UpstreamSpec, transport};
use crate::report::Report;
use crate::routing::{Route, normalize_prefix};

/// What every route is checked against: the whole file, its listener and issuer names, and
/// the time certificates are judged at.
pub(super) struct RouteInputs<'a> {
    pub listeners: &'a HashSet<&'a str>,
    pub file: &'a FileConfig,
    pub issuers: &'a [crate::token::TokenIssuerSection],
    /// The `[[upstreams]]` that validated, by name.
    pub upstreams: &'a std::collections::HashMap<String, UpstreamSpec>,
    /// `[vault]`, opened.
    pub vault: Option<&'a crate::vault::Vault>,
    pub now: std::time::SystemTime,
}

pub(super) fn route(
    r: &mut Report,
    key: &str,
    s: &RouteSection,
    id: usize,
    inputs: &RouteInputs<'_>,
    token_sources: &mut Vec<super::vault::TokenSourceSpec>,
) -> Option<(Route, UpstreamSpec, Option<HashSet<String>>)> {
    let RouteInputs {
        listeners,
        file,
        issuers,
        ..
    } = *inputs;
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

    let websocket = s.websocket.unwrap_or(false);
    let upstream = route_upstream(r, key, s, name.as_deref(), websocket, inputs);
    let rewrite = super::rewrite::rewrite(
        r,
        key,
        s.rewrite.as_ref(),
        s.request_headers.as_ref(),
        s.response_headers.as_ref(),
    );

    let credential = super::vault::credential(r, key, s, inputs, token_sources);
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
    let limits = route_limits(
        r,
        key,
        s,
        file,
        name.as_deref().unwrap_or("?"),
        license,
        &auth,
    );
    let (name, host, prefix, upstream, max_body_bytes, pins, ip, auth, limits) = (
        name?,
        host?,
        prefix?,
        upstream?,
        max_body_bytes?,
        pins?,
        ip?,
        auth?,
        limits?,
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
            limits,
            rewrite: rewrite?.map(Box::new),
            websocket,
            retry_non_idempotent: s.retry_non_idempotent.unwrap_or(false),
            credential: credential?,
        },
        upstream,
        on,
    ))
}

/// The route's own `limits`, else `[limits] default` (validated once in `validate.rs`, so its
/// problems are not repeated per route). A key the route cannot tell callers apart by is a
/// warning: every request would share one key.
fn route_limits(
    r: &mut Report,
    key: &str,
    s: &RouteSection,
    file: &FileConfig,
    name: &str,
    license: crate::license::RouteLicense,
    auth: &Option<crate::token::RouteAuth>,
) -> Option<std::sync::Arc<[crate::limits::Limit]>> {
    let (entries, at) = match (
        &s.limits,
        file.limits.as_ref().and_then(|l| l.default.as_ref()),
    ) {
        (Some(own), _) => (own, format!("{key}.limits")),
        (None, Some(default)) => {
            let mut scratch = Report::new(std::path::Path::new(""));
            return super::limits::limits(&mut scratch, "limits.default", name, default);
        }
        (None, None) => return Some(std::sync::Arc::from([])),
    };
    let built = super::limits::limits(r, &at, name, entries)?;
    let bearer = matches!(auth, Some(crate::token::RouteAuth::Bearer { .. }));
    for (i, l) in built.iter().enumerate() {
        use crate::limits::LimitKey;
        let shared = match l.key {
            LimitKey::License => license != crate::license::RouteLicense::Required,
            LimitKey::TokenSub | LimitKey::ClientId => !bearer,
            _ => false,
        };
        if shared {
            r.warn(
                format!("{at}[{i}].key"),
                "this route does not establish that identity (license = \"required\" or auth = \"bearer\"): every request shares one key",
            );
        }
    }
    Some(built)
}

/// The route's upstream: a named `[[upstreams]]` entry (whose transport keys then live there,
/// not on the route), or its own target list with the defaults, named after the route.
fn route_upstream(
    r: &mut Report,
    key: &str,
    s: &RouteSection,
    name: Option<&str>,
    websocket: bool,
    inputs: &RouteInputs<'_>,
) -> Option<UpstreamSpec> {
    match &s.upstream {
        None => {
            r.error(
                format!("{key}.upstream"),
                "missing: a route needs an upstream: the name of an [[upstreams]] entry, or targets such as [\"http://127.0.0.1:9000\"]",
            );
            None
        }
        Some(RouteUpstream::Named(n)) => {
            r.misplaced(
                key,
                &[
                    ("upstream_tls", s.upstream_tls.is_some()),
                    ("upstream_protocol", s.upstream_protocol.is_some()),
                    ("connect_timeout", s.connect_timeout.is_some()),
                    ("response_timeout", s.response_timeout.is_some()),
                    ("idle_timeout", s.idle_timeout.is_some()),
                ],
                |field| format!("the route uses [[upstreams]] \"{n}\": set {field} there"),
            );
            if n.contains("://") {
                r.error(
                    format!("{key}.upstream"),
                    format!("\"{n}\" is a URL: a route's own targets are a list (upstream = [\"{n}\"]); a single name refers to an [[upstreams]] entry"),
                );
                return None;
            }
            let spec = named_upstream(r, &format!("{key}.upstream"), n, inputs)?;
            let clear = spec.tls.is_none() && spec.settings.protocol == Protocol::Auto;
            if websocket && !clear && spec.settings.protocol != Protocol::Http1 {
                r.error(
                    format!("{key}.websocket"),
                    format!("WebSocket needs HTTP/1.1 to the upstream: set upstream_protocol = \"http1\" on [[upstreams]] \"{n}\""),
                );
                return None;
            }
            Some(spec.clone())
        }
        Some(RouteUpstream::Inline(targets)) => {
            // An inline list keeps what it always did: targets in turn.
            let mut settings = UpstreamSettings {
                balance: crate::config::upstream::Balance::RoundRobin,
                ..UpstreamSettings::default()
            };
            let (targets, tls) = transport(
                r,
                &Transport {
                    targets: targets
                        .iter()
                        .enumerate()
                        .map(|(j, t)| (t.as_str(), 1, format!("{key}.upstream[{j}]")))
                        .collect(),
                    targets_key: format!("{key}.upstream"),
                    key,
                    connect_timeout: &s.connect_timeout,
                    response_timeout: &s.response_timeout,
                    idle_timeout: &s.idle_timeout,
                    upstream_protocol: s.upstream_protocol.as_deref(),
                    upstream_tls: s.upstream_tls.as_ref(),
                    websocket,
                },
                &mut settings,
                inputs.now,
            )?;
            Some(UpstreamSpec {
                name: std::sync::Arc::from(name?),
                named: false,
                targets,
                settings,
                tls,
            })
        }
    }
}

/// The `[[upstreams]]` entry named `name`, for the key `at`: reported when none has that
/// name (an entry that exists but failed validation was reported already).
pub(super) fn named_upstream<'a>(
    r: &mut Report,
    at: &str,
    name: &str,
    inputs: &RouteInputs<'a>,
) -> Option<&'a UpstreamSpec> {
    let found = inputs.upstreams.get(name);
    if found.is_none()
        && !inputs
            .file
            .upstreams
            .iter()
            .any(|u| u.name.as_deref() == Some(name))
    {
        r.error(
            at.to_owned(),
            format!("no [[upstreams]] entry is named \"{name}\""),
        );
    }
    found
}
