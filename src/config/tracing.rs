//! `[tracing]`: where spans go (an OTLP collector, over gRPC or HTTP/protobuf), how many
//! are kept, and whose `traceparent` the gateway adopts.

use super::file::TracingSection;
use crate::report::Report;

/// The collector's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    /// HTTP/protobuf (`POST /v1/traces`).
    Http,
}

/// Whose incoming `traceparent` continues their trace; anyone else's is replaced by a
/// fresh trace id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustIncoming {
    /// Callers the listener's IP policy treats as trusted proxies (`trusted_proxies`).
    TrustedProxies,
    All,
    None,
}

/// `[tracing]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The collector's URL; for HTTP, the full `/v1/traces` URL.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub sampling_ratio: f64,
    pub service_name: String,
    pub trust_incoming: TrustIncoming,
    /// How often the batch of finished spans is exported.
    pub export_interval: std::time::Duration,
}

pub const DEFAULT_EXPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
pub const DEFAULT_SAMPLING_RATIO: f64 = 0.01;
pub const DEFAULT_SERVICE_NAME: &str = "portcullis";

pub(super) fn tracing(r: &mut Report, s: &TracingSection) -> Option<TracingSettings> {
    let before = r.errors.len();
    let protocol = match s.protocol.as_deref().unwrap_or("http") {
        "http" => OtlpProtocol::Http,
        "grpc" => OtlpProtocol::Grpc,
        other => {
            r.error(
                "tracing.protocol",
                format!("\"{other}\" is not one of \"grpc\", \"http\" (HTTP/protobuf)"),
            );
            OtlpProtocol::Http
        }
    };
    let endpoint = match s.otlp_endpoint.as_deref() {
        None => {
            r.error(
                "tracing.otlp_endpoint",
                "missing: the OTLP collector, e.g. \"http://127.0.0.1:4318\" (http) or \"http://127.0.0.1:4317\" (grpc)",
            );
            String::new()
        }
        Some(u) => match endpoint(u, protocol) {
            Ok(e) => e,
            Err(why) => {
                r.error("tracing.otlp_endpoint", why);
                String::new()
            }
        },
    };
    let sampling_ratio = s.sampling_ratio.unwrap_or(DEFAULT_SAMPLING_RATIO);
    if !(0.0..=1.0).contains(&sampling_ratio) {
        r.error(
            "tracing.sampling_ratio",
            format!("{sampling_ratio} is out of range: must be 0.0 to 1.0"),
        );
    }
    let service_name = s
        .service_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    if service_name.trim().is_empty() || service_name.len() > 255 {
        r.error(
            "tracing.service_name",
            "must be 1 to 255 characters, not blank",
        );
    }
    let trust_incoming = match s.trust_incoming.as_deref().unwrap_or("trusted_proxies") {
        "trusted_proxies" => TrustIncoming::TrustedProxies,
        "all" => TrustIncoming::All,
        "none" => TrustIncoming::None,
        other => {
            r.error(
                "tracing.trust_incoming",
                format!("\"{other}\" is not one of \"trusted_proxies\", \"all\", \"none\""),
            );
            TrustIncoming::None
        }
    };
    let export_interval = match s.export_interval.as_deref() {
        None => DEFAULT_EXPORT_INTERVAL,
        Some(v) => {
            let range = (
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(60),
            );
            super::issuer::parse_ttl(v, range.0, range.1).unwrap_or_else(|why| {
                r.error("tracing.export_interval", why);
                DEFAULT_EXPORT_INTERVAL
            })
        }
    };
    (r.errors.len() == before).then_some(TracingSettings {
        endpoint,
        protocol,
        sampling_ratio,
        service_name,
        trust_incoming,
        export_interval,
    })
}

/// The collector URL as the exporter takes it: `http://` only (TLS to the collector is not
/// built in; a collector agent beside the gateway is the usual set-up), no credentials, no
/// query. For HTTP a bare `http://host:port` gets the standard `/v1/traces` path.
fn endpoint(u: &str, protocol: OtlpProtocol) -> Result<String, String> {
    let uri: http::Uri = u
        .parse()
        .map_err(|_| format!("\"{u}\" is not a URL (write e.g. \"http://127.0.0.1:4318\")"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "\"{u}\": https is not supported for the collector; run a collector agent the gateway reaches over http (loopback or a private network)"
            ));
        }
        _ => return Err(format!("\"{u}\" must start with http://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("\"{u}\" names no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "\"{u}\" carries credentials; the URL is shown in GET /config and logs"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("\"{u}\" has a query string; name the path only"));
    }
    let path = uri.path();
    Ok(match protocol {
        OtlpProtocol::Http if path.is_empty() || path == "/" => {
            format!("http://{authority}/v1/traces")
        }
        OtlpProtocol::Http => format!("http://{authority}{path}"),
        OtlpProtocol::Grpc if path.is_empty() || path == "/" => format!("http://{authority}"),
        OtlpProtocol::Grpc => {
            return Err(format!(
                "\"{u}\": a gRPC collector is named by host and port only (no path)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: TracingSection) -> Result<TracingSettings, Vec<String>> {
        let path = std::path::Path::new("gw.toml");
        let mut r = Report::new(path);
        match tracing(&mut r, &s) {
            Some(t) => Ok(t),
            None => Err(r.errors.iter().map(ToString::to_string).collect()),
        }
    }

    #[test]
    fn defaults_are_http_one_percent_and_trusted_proxies_only() {
        let t = check(TracingSection {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(t.protocol, OtlpProtocol::Http);
        assert_eq!(t.sampling_ratio, 0.01);
        assert_eq!(t.service_name, "portcullis");
        assert_eq!(t.export_interval, std::time::Duration::from_secs(5));
        assert_eq!(t.trust_incoming, TrustIncoming::TrustedProxies);
    }

    #[test]
    fn bad_endpoints_are_refused_with_the_reason() {
        for (u, protocol, why) in [
            ("collector:4317", "grpc", "must start with http://"),
            ("https://c:4317", "grpc", "https is not supported"),
            ("http://u:p@c:4318", "http", "credentials"),
            ("http://c:4318/v1/traces?x=1", "http", "query"),
            ("http://c:4317/v1", "grpc", "host and port only"),
        ] {
            let e = check(TracingSection {
                otlp_endpoint: Some(u.into()),
                protocol: Some(protocol.into()),
                ..Default::default()
            })
            .unwrap_err();
            assert!(
                e[0].contains("tracing.otlp_endpoint") && e[0].contains(why),
                "{u}: {e:?}"
            );
        }
    }

    #[test]
    fn the_export_interval_is_read_and_held_to_its_range() {
        let with = |v: &str| {
            check(TracingSection {
                otlp_endpoint: Some("http://127.0.0.1:4318".into()),
                export_interval: Some(v.into()),
                ..Default::default()
            })
        };
        assert_eq!(
            with("250ms").unwrap().export_interval,
            std::time::Duration::from_millis(250)
        );
        for (v, why) in [
            ("10ms", "out of range"),
            ("2h", "out of range"),
            ("soon", "not a duration"),
        ] {
            let e = with(v).unwrap_err();
            assert!(
                e[0].contains("tracing.export_interval") && e[0].contains(why),
                "{v}: {e:?}"
            );
        }
    }
}
