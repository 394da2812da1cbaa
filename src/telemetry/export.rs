//! The OTLP span exporter: each batch encoded by [`super::otlp`] and sent over one kept
//! connection, HTTP/1.1 `POST` with a protobuf body or gRPC's unary `TraceService/Export`
//! over HTTP/2 (prior knowledge: the endpoint is `http://`). A failed exchange drops the
//! connection; the next export connects again (a reused connection that fails is retried
//! once on a new one, as it may have been closed by the collector while idle).
//!
//! Collector credentials come from the environment, as opentelemetry-otlp read them:
//! `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`
//! (`key=value,key2=value2`, values percent-decoded), sent with every export and never
//! shown (marked sensitive; not in `Debug` or any error).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::otlp::{EncodedResource, encode_request};
use crate::config::tracing::OtlpProtocol;

/// gRPC's method path for a trace export.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// A collector's answer body read at most (an `ExportTraceServiceResponse`: a few bytes,
/// more with a partial-success message).
const MAX_ANSWER: usize = 64 * 1024;
/// A gRPC status or message shown at most, in characters.
const MAX_SHOWN: usize = 200;
/// Where the collector's request headers are read from: the first set wins.
const HEADER_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];

/// Why an export failed. No secret in any of them: the endpoint carries no credentials and
/// the collector's answers are shown shortened.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the OTLP endpoint is not a URL with a host: {0}")]
    Endpoint(String),
    #[error("cannot connect to the collector: {0}")]
    Connect(std::io::Error),
    #[error("the exchange with the collector failed: {0}")]
    Exchange(#[from] hyper::Error),
    #[error("the export request could not be built: {0}")]
    Request(#[from] http::Error),
    #[error("the collector answered HTTP {0}")]
    Status(StatusCode),
    #[error("the collector's answer could not be read: {0}")]
    Answer(String),
    #[error("the collector answered gRPC status {code}: {message}")]
    Grpc { code: String, message: String },
    #[error("the collector's gRPC answer has no grpc-status")]
    NoGrpcStatus,
    #[error("the batch is too large for one gRPC message ({0} bytes)")]
    TooLarge(usize),
    #[error("no answer from the collector within {0:?}")]
    Timeout(Duration),
}

/// The OTLP exporter (gRPC or HTTP/protobuf), for the SDK's batch span processor.
pub struct OtlpExporter {
    protocol: OtlpProtocol,
    /// Where the TCP connection goes.
    host: String,
    port: u16,
    /// `host[:port]`, for HTTP/1.1's Host header.
    authority: String,
    /// The request target: the path for HTTP/1.1, the absolute URI for HTTP/2.
    target: Uri,
    /// From [`HEADER_VARS`]: credentials, never shown.
    headers: HeaderMap,
    timeout: Duration,
    resource: EncodedResource,
    conn: tokio::sync::Mutex<Option<Conn>>,
    shut_down: AtomicBool,
}

enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("protocol", &self.protocol)
            .field("target", &self.target)
            .finish()
    }
}

impl OtlpExporter {
    /// An exporter to `endpoint` (validated by the config: `http://host[:port]` for gRPC,
    /// the full URL for HTTP), each export bounded by `timeout`. Connects at the first
    /// export.
    pub fn new(
        endpoint: &str,
        protocol: OtlpProtocol,
        timeout: Duration,
    ) -> Result<Self, ExportError> {
        let bad = || ExportError::Endpoint(endpoint.to_owned());
        let uri: Uri = endpoint.parse().map_err(|_| bad())?;
        let authority = uri.authority().ok_or_else(bad)?.clone();
        // IPv6 literals come bracketed in a URI, not in a socket address.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(80);
        let target = match protocol {
            OtlpProtocol::Http => uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .parse()
                .map_err(|_| bad())?,
            OtlpProtocol::Grpc => Uri::builder()
                .scheme("http")
                .authority(authority.clone())
                .path_and_query(GRPC_EXPORT)
                .build()
                .map_err(|_| bad())?,
        };
        Ok(OtlpExporter {
            protocol,
            host,
            port,
            authority: authority.as_str().to_owned(),
            target,
            headers: headers_from_env(),
            timeout,
            resource: EncodedResource::default(),
            conn: tokio::sync::Mutex::new(None),
            shut_down: AtomicBool::new(false),
        })
    }

    /// The request body: the encoded `ExportTraceServiceRequest`, behind gRPC's 5-byte
    /// message prefix (not compressed, big-endian length) for gRPC.
    fn body(&self, spans: &[SpanData]) -> Result<Bytes, ExportError> {
        // About 600 bytes a gateway span.
        let mut out = Vec::with_capacity(256 + spans.len() * 768);
        match self.protocol {
            OtlpProtocol::Http => encode_request(&self.resource, spans, &mut out),
            OtlpProtocol::Grpc => {
                out.extend_from_slice(&[0; 5]);
                encode_request(&self.resource, spans, &mut out);
                let len = out.len() - 5;
                let prefix = u32::try_from(len).map_err(|_| ExportError::TooLarge(len))?;
                out[1..5].copy_from_slice(&prefix.to_be_bytes());
            }
        }
        Ok(Bytes::from(out))
    }

    async fn send(&self, body: Bytes) -> Result<(), ExportError> {
        let mut slot = self.conn.lock().await;
        // Taken out while in use: an export cut short (the SDK's own timeout) leaves no
        // half-used connection behind.
        let reused = slot.take().filter(|c| !c.is_closed());
        let mut conn = match reused {
            Some(c) => match self.exchange(c, body.clone()).await {
                Ok(c) => {
                    *slot = Some(c);
                    return Ok(());
                }
                // Only a failed exchange is retried: an answer (an HTTP or gRPC error) is
                // the collector's word.
                Err(ExportError::Exchange(_)) => self.connect().await?,
                Err(e) => return Err(e),
            },
            None => self.connect().await?,
        };
        conn = self.exchange(conn, body).await?;
        *slot = Some(conn);
        Ok(())
    }

    async fn connect(&self) -> Result<Conn, ExportError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(ExportError::Connect)?;
        tcp.set_nodelay(true).map_err(ExportError::Connect)?;
        let io = TokioIo::new(tcp);
        Ok(match self.protocol {
            OtlpProtocol::Http => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "tracing: the collector connection ended with an error");
                    }
                });
                Conn::H1(sender)
            }
            OtlpProtocol::Grpc => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "tracing: the collector connection ended with an error");
                    }
                });
                Conn::H2(sender)
            }
        })
    }

    /// One export on `conn`; the connection back when it may be used again.
    async fn exchange(&self, conn: Conn, body: Bytes) -> Result<Conn, ExportError> {
        match conn {
            Conn::H1(mut sender) => {
                sender.ready().await?;
                let req = Request::post(self.target.clone())
                    .header(header::HOST, self.authority.as_str())
                    .header(header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(body))?;
                let req = self.with_configured_headers(req);
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                // Read to the end, so the connection can carry the next export.
                read_answer(resp.into_body()).await?;
                if !status.is_success() {
                    return Err(ExportError::Status(status));
                }
                Ok(Conn::H1(sender))
            }
            Conn::H2(mut sender) => {
                sender.ready().await?;
                let req = Request::post(self.target.clone())
                    .header(header::CONTENT_TYPE, "application/grpc")
                    .header(header::TE, "trailers")
                    .body(Full::new(body))?;
                let req = self.with_configured_headers(req);
                let resp = sender.send_request(req).await?;
                if resp.status() != StatusCode::OK {
                    return Err(ExportError::Status(resp.status()));
                }
                let (head, body) = resp.into_parts();
                // A trailers-only answer has its grpc-status in the head.
                let trailers;
                let fields = if head.headers.contains_key("grpc-status") {
                    &head.headers
                } else {
                    trailers = read_answer(body).await?;
                    trailers.as_ref().ok_or(ExportError::NoGrpcStatus)?
                };
                grpc_status(fields)?;
                Ok(Conn::H2(sender))
            }
        }
    }

    /// The environment's headers added to `req`; never over one the protocol sets.
    fn with_configured_headers<B>(&self, mut req: Request<B>) -> Request<B> {
        let headers = req.headers_mut();
        for (name, value) in &self.headers {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        req
    }
}

/// The headers of the first of [`HEADER_VARS`] set; none when neither is.
fn headers_from_env() -> HeaderMap {
    HEADER_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .map(|s| parse_headers(&s))
        .unwrap_or_default()
}

/// `key=value` pairs separated by commas, as opentelemetry-otlp parsed them: keys and
/// values trimmed, values percent-decoded (kept as written when that fails), a pair with
/// an empty side or an invalid name or value left out.
fn parse_headers(input: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for pair in input.split_terminator(',').map(str::trim) {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        let value = percent_decoded(value).unwrap_or_else(|| value.to_owned());
        if name.is_empty() || value.is_empty() {
            continue;
        }
        let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            continue;
        };
        value.set_sensitive(true);
        map.insert(name, value);
    }
    map
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decoded(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hi = char::from(bytes.next()?).to_digit(16)?;
        let lo = char::from(bytes.next()?).to_digit(16)?;
        out.push((hi * 16 + lo) as u8);
    }
    String::from_utf8(out).ok()
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }
}

/// Read an answer body to its end (at most [`MAX_ANSWER`] bytes); its trailers if any.
async fn read_answer(body: hyper::body::Incoming) -> Result<Option<HeaderMap>, ExportError> {
    let collected = Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| ExportError::Answer(e.to_string()))?;
    Ok(collected.trailers().cloned())
}

/// `grpc-status: 0` is success; anything else is the collector's refusal.
fn grpc_status(fields: &HeaderMap) -> Result<(), ExportError> {
    let code = fields.get("grpc-status").ok_or(ExportError::NoGrpcStatus)?;
    if code.as_bytes() == b"0" {
        return Ok(());
    }
    let shown = |v: Option<&http::HeaderValue>| {
        v.map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(MAX_SHOWN)
                .collect()
        })
        .unwrap_or_default()
    };
    Err(ExportError::Grpc {
        code: shown(Some(code)),
        message: shown(fields.get("grpc-message")),
    })
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let failed = |e: ExportError| OTelSdkError::InternalFailure(e.to_string());
        let body = self.body(&batch).map_err(failed)?;
        drop(batch);
        match tokio::time::timeout(self.timeout, self.send(body)).await {
            Ok(result) => result.map_err(failed),
            Err(_) => Err(failed(ExportError::Timeout(self.timeout))),
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shut_down.store(true, Ordering::Relaxed);
        // Dropping the sender closes an idle connection. In use (an export still running),
        // it is dropped when that export ends: the shut-down flag keeps it from being used
        // again.
        if let Ok(mut slot) = self.conn.try_lock() {
            slot.take();
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_parsed_as_opentelemetry_otlp_parsed_them() {
        let h = parse_headers(
            " Authorization = Bearer%20abc%2Fdef , x-tenant=a=b,empty=, =v, bad name=x, \
             raw=100%,utf=%C3%A9,",
        );
        assert_eq!(h["authorization"], "Bearer abc/def");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["x-tenant"], "a=b");
        assert_eq!(h["raw"], "100%", "a malformed escape is kept as written");
        assert_eq!(h["utf"], "é");
        assert_eq!(h.len(), 4, "{h:?}");
        assert!(parse_headers("").is_empty());
    }

    #[test]
    fn configured_headers_never_replace_the_protocols() {
        let mut e = OtlpExporter::new(
            "http://127.0.0.1:4317",
            OtlpProtocol::Grpc,
            Duration::from_secs(1),
        )
        .unwrap();
        e.headers = parse_headers("content-type=text/plain,authorization=Basic%20x");
        let req = Request::post(e.target.clone())
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(())
            .unwrap();
        let req = e.with_configured_headers(req);
        assert_eq!(req.headers()[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(req.headers()[header::AUTHORIZATION], "Basic x");
        assert_eq!(
            req.uri(),
            "http://127.0.0.1:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        assert!(!format!("{e:?}").contains("Basic"));
    }

    #[test]
    fn an_http_endpoint_keeps_its_path_and_defaults_to_port_80() {
        let e = OtlpExporter::new(
            "http://collector/custom/traces",
            OtlpProtocol::Http,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!((e.host.as_str(), e.port), ("collector", 80));
        assert_eq!(e.target, "/custom/traces");
        assert_eq!(e.authority, "collector");
        let v6 = OtlpExporter::new(
            "http://[::1]:4318/v1/traces",
            OtlpProtocol::Http,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4318));
    }
}
