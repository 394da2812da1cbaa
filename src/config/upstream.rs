//! A route's upstream as configured: its targets and timeouts, plain settings. The running
//! pools are built from them per generation (`generation.rs`), keeping warm connections of
//! an upstream a reload leaves unchanged.

use std::time::Duration;

use http::Uri;
use http::uri::Authority;

/// What a route's upstream is: where it sends and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub targets: Vec<Authority>,
    pub settings: UpstreamSettings,
}

/// Timeouts of one route's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Check a configured target. The error completes the sentence "\"<t>\" ...".
pub fn parse_target(t: &str) -> Result<Authority, &'static str> {
    let uri: Uri = t
        .parse()
        .map_err(|_| "is not an http URL (write e.g. \"http://10.0.0.5:8080\")")?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "uses https, which upstreams do not support yet: use http:// on a trusted network",
            );
        }
        _ => return Err("is not an http URL (write e.g. \"http://10.0.0.5:8080\")"),
    }
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
    Ok(authority.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_plain_http_host_port() {
        assert!(parse_target("http://127.0.0.1:9000").is_ok());
        assert!(parse_target("http://backend.internal").is_ok());
        assert!(parse_target("http://127.0.0.1:9000/").is_ok());
        for bad in [
            "htp://x",
            "127.0.0.1:9000",
            "https://x:1",
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
