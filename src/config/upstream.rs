//! A route's upstream as configured: its targets and timeouts, plain settings. The running
//! pools are built from them per generation (`generation.rs`), keeping warm connections of
//! an upstream a reload leaves unchanged.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Uri;
use http::uri::Authority;

use crate::config::file::UpstreamTlsSection;
use crate::report::Report;
use crate::tls::MinTls;
use crate::tls::upstream::UpstreamTls;

/// What an upstream is: where it sends, how it spreads, checks and retries, how long it
/// waits, and (for `https://` targets) how it verifies them. A route's inline target list is
/// an upstream named after the route, with the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// The `[[upstreams]]` name, or the route's for an inline list: the metric label.
    pub name: Arc<str>,
    /// From `[[upstreams]]`: routes that name it share one running upstream.
    pub named: bool,
    pub targets: Vec<TargetSpec>,
    pub settings: UpstreamSettings,
    /// Set when the targets are `https://`: every target of an upstream is, or none is.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// One target and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub authority: Authority,
    /// 1..=1000.
    pub weight: u32,
}

/// How an upstream's traffic is sent, spread, checked, retried and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// Per attempt, to the response head.
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub protocol: Protocol,
    pub balance: Balance,
    /// Extra attempts after a failure.
    pub retries: u32,
    pub retry_budget: RetryBudget,
    pub outlier: Outlier,
    pub all_down: AllDown,
    /// HTTP/1.1 connections per target at most.
    pub max_connections: Option<u32>,
    /// Requests per target waiting for a connection under `max_connections`.
    pub max_pending: u32,
    /// The whole request across attempts, to the response head.
    pub deadline: Option<Duration>,
    /// Longest pause between two parts of a response body.
    pub body_timeout: Option<Duration>,
    pub health_check: Option<HealthCheck>,
}

/// How a request's target is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// In turn, each target as often as its weight says.
    RoundRobin,
    /// Of two targets drawn by weight, the one with fewer requests in flight per weight.
    LeastRequest,
    /// The same key to the same target (rendezvous hashing, weighted).
    Hash(HashKey),
}

impl Balance {
    pub fn label(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::Hash(_) => "hash",
        }
    }
}

/// What a `hash` upstream keeps together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(http::HeaderName),
    License,
    TokenSub,
}

/// Retries allowed per 10 s window: `max(min_retries, percent% of the requests)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    pub percent: u32,
    pub min_retries: u32,
}

/// Passive outlier ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    /// The first ejection; each one after doubles it, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// Never more than this share of the targets ejected at once.
    pub max_ejected_percent: u32,
}

/// What happens when no target is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllDown {
    /// 503 `no_healthy_upstream` at once.
    Fail,
    /// Every target is tried anyway (it may be the checks that are wrong).
    Panic,
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Statuses that pass; empty: any 2xx.
    pub expect_status: Vec<u16>,
}

impl HealthCheck {
    pub fn passes(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect_status.contains(&status)
        }
    }
}

/// Which HTTP the gateway speaks to a route's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/2 when a TLS target chooses it by ALPN, else HTTP/1.1 (always, in clear).
    #[default]
    Auto,
    Http1,
    /// HTTP/2 over TLS only (ALPN `h2`).
    H2,
    /// HTTP/2 in clear, with prior knowledge.
    H2c,
}

impl Protocol {
    /// The ALPN protocols offered to a TLS target.
    pub fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Protocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Protocol::Http1 | Protocol::H2c => vec![b"http/1.1".to_vec()],
            Protocol::H2 => vec![b"h2".to_vec()],
        }
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            protocol: Protocol::Auto,
            balance: Balance::LeastRequest,
            retries: 2,
            retry_budget: RetryBudget {
                percent: 20,
                min_retries: 3,
            },
            outlier: Outlier {
                consecutive_failures: 3,
                base_ejection: Duration::from_secs(10),
                max_ejection: Duration::from_secs(300),
                max_ejected_percent: 50,
            },
            all_down: AllDown::Fail,
            max_connections: None,
            max_pending: 1024,
            deadline: None,
            body_timeout: Some(Duration::from_secs(60)),
            health_check: None,
        }
    }
}

/// The transport keys an inline route upstream and an `[[upstreams]]` entry share.
pub(super) struct Transport<'a> {
    /// Each target's URL, weight and key path (`routes[0].upstream[1]`).
    pub targets: Vec<(&'a str, u32, String)>,
    /// Where a missing or mixed target list is reported.
    pub targets_key: String,
    /// The section's own key (`routes[0]`, `upstreams[1]`).
    pub key: &'a str,
    pub connect_timeout: &'a Option<String>,
    pub response_timeout: &'a Option<String>,
    pub idle_timeout: &'a Option<String>,
    pub upstream_protocol: Option<&'a str>,
    pub upstream_tls: Option<&'a UpstreamTlsSection>,
    /// A route that forwards WebSocket upgrades: HTTP/1.1 to its targets.
    pub websocket: bool,
}

/// Targets, timeouts, protocol and TLS, checked together (a mix of http:// and https://,
/// `h2c` with https://, `upstream_tls` without https:// are errors).
pub(super) fn transport(
    r: &mut Report,
    t: &Transport<'_>,
    settings: &mut UpstreamSettings,
    now: SystemTime,
) -> Option<(Vec<TargetSpec>, Option<Arc<UpstreamTls>>)> {
    use super::server::duration;
    let key = t.key;
    if let Some(d) = duration(r, &format!("{key}.connect_timeout"), t.connect_timeout) {
        settings.connect_timeout = d;
    }
    if let Some(d) = duration(r, &format!("{key}.response_timeout"), t.response_timeout) {
        settings.response_timeout = d;
    }
    if let Some(d) = duration(r, &format!("{key}.idle_timeout"), t.idle_timeout) {
        settings.idle_timeout = d;
    }
    let protocol_key = format!("{key}.upstream_protocol");
    settings.protocol = match t.upstream_protocol {
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
    let targets = if t.targets.is_empty() {
        r.error(
            t.targets_key.clone(),
            "missing: at least one target is needed, e.g. [\"http://127.0.0.1:9000\"]",
        );
        None
    } else {
        let mut ok = Vec::with_capacity(t.targets.len());
        let mut schemes = (0, 0);
        for (url, weight, at) in &t.targets {
            match parse_target(url) {
                Ok((authority, tls)) => {
                    if tls {
                        schemes.1 += 1;
                    } else {
                        schemes.0 += 1;
                    }
                    ok.push(TargetSpec {
                        authority,
                        weight: *weight,
                    });
                }
                Err(why) => r.error(at.clone(), format!("\"{url}\" {why}")),
            }
        }
        if schemes.0 > 0 && schemes.1 > 0 {
            r.error(
                t.targets_key.clone(),
                "mixes http:// and https:// targets: upstream traffic is encrypted all or not at all",
            );
            None
        } else {
            (ok.len() == t.targets.len()).then_some((ok, schemes.1 > 0))
        }
    };
    if t.websocket {
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
    let https = targets.as_ref().is_some_and(|(_, https)| *https);
    match (settings.protocol, https, targets.is_some()) {
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
        t.upstream_tls,
        https,
        settings.protocol,
        now,
    );
    Some((targets?.0, tls?))
}

/// Check a configured target: its authority, and whether it is `https://`. The error
/// completes the sentence "\"<t>\" ...".
pub fn parse_target(t: &str) -> Result<(Authority, bool), &'static str> {
    let not_url = "is not an http(s) URL (write e.g. \"https://10.0.0.5:8443\")";
    let uri: Uri = t.parse().map_err(|_| not_url)?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(not_url),
    };
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not contain credentials");
    }
    if authority.host().is_empty() {
        return Err("has no host");
    }
    if authority.port_u16() == Some(0) {
        return Err("has port 0");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must not have a path or query: requests keep their own path");
    }
    let authority = match (tls, authority.port_u16()) {
        // The port is explicit on the request path's connect; https defaults to 443.
        (true, None) => format!("{}:443", authority.host())
            .parse()
            .map_err(|_| "has no host")?,
        _ => authority.clone(),
    };
    Ok((authority, tls))
}

/// `upstream_tls` of a route whose targets are all `https://` (`https`) or all `http://`.
/// `Ok(None)`: plain HTTP. Every problem is reported under `key` (`routes[0].upstream_tls`).
pub(super) fn upstream_tls(
    r: &mut Report,
    key: &str,
    section: Option<&UpstreamTlsSection>,
    https: bool,
    protocol: Protocol,
    now: SystemTime,
) -> Option<Option<Arc<UpstreamTls>>> {
    if !https {
        if section.is_some() {
            r.error(
                key.to_owned(),
                "applies to https:// targets, and this route has none",
            );
            return None;
        }
        return Some(None);
    }
    let default = UpstreamTlsSection::default();
    let s = section.unwrap_or(&default);
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut ok = true;
    let mut fail = |r: &mut Report, field: &str, msg: String| {
        r.error(format!("{key}.{field}"), msg);
        ok = false;
    };
    let roots = match &s.ca {
        None => crate::tls::upstream::default_roots(),
        Some(ca) => {
            let path = r.resolve(ca);
            digest.update(&std::fs::read(&path).unwrap_or_default());
            match crate::tls::load_client_roots(&path) {
                Ok(roots) => roots,
                Err(e) => {
                    fail(r, "ca", e.to_string());
                    crate::tls::upstream::default_roots()
                }
            }
        }
    };
    digest.update(b"\0ca\0");
    let server_name = match &s.server_name {
        None => None,
        Some(n) => match rustls::pki_types::ServerName::try_from(n.clone()) {
            Ok(name) => {
                digest.update(n.as_bytes());
                Some(name)
            }
            Err(_) => {
                fail(
                    r,
                    "server_name",
                    format!("\"{n}\" is not a DNS name or IP address"),
                );
                None
            }
        },
    };
    digest.update(b"\0name\0");
    let mut pins = Vec::new();
    for (i, p) in s.pins.iter().flatten().enumerate() {
        match crate::identity::parse_spki_pin(p) {
            Ok(h) => {
                digest.update(&h);
                pins.push(h);
            }
            Err(e) => fail(r, &format!("pins[{i}]"), format!("\"{p}\": {e}")),
        }
    }
    let min = match s.min_tls.as_deref() {
        None | Some("1.2") => MinTls::V1_2,
        Some("1.3") => MinTls::V1_3,
        Some(v) => {
            fail(
                r,
                "min_tls",
                format!("\"{v}\" is not a TLS version this gateway speaks: use \"1.2\" or \"1.3\""),
            );
            MinTls::V1_2
        }
    };
    digest.update(if min == MinTls::V1_3 { b"1.3" } else { b"1.2" });
    let client = match (&s.client_certificate, &s.key) {
        (None, None) => None,
        (Some(_), None) => {
            fail(r, "key", "client_certificate needs its key".into());
            None
        }
        (None, Some(_)) => {
            fail(
                r,
                "client_certificate",
                "key needs its client_certificate".into(),
            );
            None
        }
        (Some(chain), Some(keyf)) => {
            let (chain, keyf) = (r.resolve(chain), r.resolve(keyf));
            digest.update(&std::fs::read(&chain).unwrap_or_default());
            digest.update(&std::fs::read(&keyf).unwrap_or_default());
            // The same checks as a listener's certificate: PEM, key matches, not expired.
            match crate::tls::load_server_cert(&chain, &keyf, now).and_then(|_| {
                Ok((
                    crate::tls::load_certs(&chain)?,
                    crate::tls::load_key(&keyf)?,
                ))
            }) {
                Ok(pair) => Some(pair),
                Err(e) => {
                    let field = match e.key_field() {
                        "key" => "key",
                        _ => "client_certificate",
                    };
                    fail(r, field, e.to_string());
                    None
                }
            }
        }
    };
    if !ok {
        return None;
    }
    digest.update(&protocol.alpn().concat());
    match crate::tls::upstream::client_config(roots, pins, min, client, protocol.alpn()) {
        Ok(config) => Some(Some(Arc::new(UpstreamTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            digest: {
                let mut d = [0u8; 32];
                d.copy_from_slice(digest.finish().as_ref());
                d
            },
        }))),
        Err(e) => {
            r.error(key.to_owned(), format!("cannot build the TLS client: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_http_or_https_host_port() {
        assert!(parse_target("http://127.0.0.1:9000").is_ok_and(|(_, tls)| !tls));
        assert!(parse_target("http://backend.internal").is_ok());
        assert!(parse_target("http://127.0.0.1:9000/").is_ok());
        assert_eq!(
            parse_target("https://erp.example").map(|(a, tls)| (a.to_string(), tls)),
            Ok(("erp.example:443".to_owned(), true))
        );
        for bad in [
            "htp://x",
            "127.0.0.1:9000",
            "ftp://x:1",
            "http://u:p@x:1",
            "http://x:1/api",
            "http://x:0",
            "http://x:1/?a=b",
            "",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
