//! `[[routes]]`: host, prefix, methods, upstream and the route's policy.

use std::collections::HashSet;

use http::Method;

use super::listener::*;
use super::policy::*;
use super::server::*;
use crate::config::file::{FileConfig, RouteSection};
use crate::config::upstream::{
    Protocol, UpstreamSettings, UpstreamSpec, parse_target, upstream_tls,
};
use crate::report::Report;
use crate::routing::{Route, normalize_prefix};

/// What every route is checked against: the whole file, its listener and issuer names, and
/// the time certificates are judged at.
pub(super) struct RouteInputs<'a> {
    pub listeners: &'a HashSet<&'a str>,
    pub file: &'a FileConfig,
    pub issuers: &'a [crate::token::TokenIssuerSection],
    pub now: std::time::SystemTime,
}

pub(super) fn route(
    r: &mut Report,
    key: &str,
    s: &RouteSection,
    id: usize,
    inputs: &RouteInputs<'_>,
) -> Option<(Route, UpstreamSpec, Option<HashSet<String>>)> {
    let RouteInputs {
        listeners,
        file,
        issuers,
        now,
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
    let protocol_key = format!("{key}.upstream_protocol");
    settings.protocol = match s.upstream_protocol.as_deref() {
        None | Some("auto") => Protocol::Auto,
        Some("http1") => Protocol::Http1,
        Some("h2") => Protocol::H2,
        Some("h2c") => Protocol::H2c,
        Some(p) => {
            r.error(
                protocol_key.clone(),
                format!("\"{p}\" is not one of \"auto\", \"http1\", \"h2\", \"h2c\""),
            );
            Protocol::Auto
        }
    };

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
            let mut schemes = (0, 0);
            for (j, t) in targets.iter().enumerate() {
                match parse_target(t) {
                    Ok((a, tls)) => {
                        if tls {
                            schemes.1 += 1;
                        } else {
                            schemes.0 += 1;
                        }
                        ok.push(a);
                    }
                    Err(why) => r.error(format!("{key}.upstream[{j}]"), format!("\"{t}\" {why}")),
                }
            }
            if schemes.0 > 0 && schemes.1 > 0 {
                r.error(
                    format!("{key}.upstream"),
                    "mixes http:// and https:// targets: a route's upstream traffic is encrypted all or not at all",
                );
                None
            } else {
                (ok.len() == targets.len()).then_some((ok, schemes.1 > 0))
            }
        }
    };
    let websocket = s.websocket.unwrap_or(false);
    if websocket {
        match settings.protocol {
            // An upgrade is an HTTP/1.1 exchange: the route's upstream connections are too.
            Protocol::Auto => settings.protocol = Protocol::Http1,
            Protocol::Http1 => {}
            Protocol::H2 | Protocol::H2c => r.error(
                protocol_key.clone(),
                "websocket = true needs HTTP/1.1 to the upstream (\"auto\" or \"http1\")",
            ),
        }
    }
    let https = upstream.as_ref().is_some_and(|(_, https)| *https);
    match (settings.protocol, https, upstream.is_some()) {
        (Protocol::H2c, true, _) => r.error(
            protocol_key,
            "\"h2c\" is HTTP/2 in clear, for http:// targets: https:// targets negotiate HTTP/2 by ALPN (\"auto\" or \"h2\")",
        ),
        (Protocol::H2, false, true) => r.error(
            protocol_key,
            "\"h2\" needs https:// targets; for HTTP/2 in clear on a trusted network use \"h2c\"",
        ),
        _ => {}
    }
    let tls = upstream_tls(
        r,
        &format!("{key}.upstream_tls"),
        s.upstream_tls.as_ref(),
        https,
        settings.protocol,
        now,
    );
    let upstream = upstream.map(|(targets, _)| targets);
    let rewrite = super::rewrite::rewrite(
        r,
        key,
        s.rewrite.as_ref(),
        s.request_headers.as_ref(),
        s.response_headers.as_ref(),
    );

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
        },
        UpstreamSpec {
            targets: upstream,
            settings,
            tls: tls?,
        },
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
