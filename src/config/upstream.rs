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

/// What a route's upstream is: where it sends, how long it waits, and (for `https://`
/// targets) how it verifies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub targets: Vec<Authority>,
    pub settings: UpstreamSettings,
    /// Set when the targets are `https://`: every target of a route is, or none is.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// Timeouts and protocol of one route's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub protocol: Protocol,
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
        }
    }
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
