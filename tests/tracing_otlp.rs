//! Proves `[tracing]` end to end with a real OTLP receiver started here (gRPC: tonic's
//! server machinery with opentelemetry-proto's messages; HTTP/protobuf: hyper and prost):
//! a trusted caller's trace is continued, the upstream's parent is the exported span, the
//! span carries the request id; an untrusted caller's `traceparent` is not adopted;
//! sampling 0 exports nothing yet still propagates; an unreachable collector fails no
//! request; a refusal's span names its reason; a reload changes the sampling ratio; the
//! binary's access line carries the trace id.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::*;
use tonic::Status;
use tonic_prost::ProstCodec;

/// What a client sends: trace 4bf9..., parent 00f0..., sampled.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{PARENT}-01")
}

/// The spans a test collector received.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

impl Received {
    fn take(&self, req: ExportTraceServiceRequest) {
        let spans = req
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }

    /// Poll until `n` spans have arrived (the batch processor sends about once a second).
    async fn wait_for(&self, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the collector received {} of {n} spans",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Grpc,
    Http,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Grpc => "grpc",
            Proto::Http => "http",
        }
    }
}

struct Export(Received);

impl tonic::server::UnaryService<ExportTraceServiceRequest> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<ExportTraceServiceResponse>, Status>>;
    fn call(&mut self, req: tonic::Request<ExportTraceServiceRequest>) -> Self::Future {
        self.0.take(req.into_inner());
        std::future::ready(Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        })))
    }
}

/// An OTLP receiver on 127.0.0.1:0: gRPC's TraceService/Export over h2c, or HTTP/1.1
/// `POST /v1/traces` with a protobuf body.
async fn collector(proto: Proto) -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let r = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(proto, r, req).await) }
                    },
                );
                let io = TokioIo::new(tcp);
                let _ = match proto {
                    Proto::Grpc => {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await
                    }
                    Proto::Http => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                    }
                };
            });
        }
    });
    (addr, received)
}

async fn answer(
    proto: Proto,
    r: Received,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<tonic::body::Body> {
    match proto {
        Proto::Grpc => {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<
                ExportTraceServiceResponse,
                ExportTraceServiceRequest,
            >::default());
            match req.uri().path() {
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export" => {
                    grpc.unary(Export(r), req).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            }
        }
        Proto::Http => {
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(
                req.headers().get("content-type").unwrap(),
                "application/x-protobuf"
            );
            let body = req.into_body().collect().await.unwrap().to_bytes();
            r.take(ExportTraceServiceRequest::decode(body).unwrap());
            let reply = ExportTraceServiceResponse::default().encode_to_vec();
            http::Response::builder()
                .header("content-type", "application/x-protobuf")
                .body(tonic::body::Body::new(http_body_util::Full::new(
                    bytes::Bytes::from(reply),
                )))
                .unwrap()
        }
    }
}

/// A gateway whose listener trusts 127.0.0.1 as a proxy, one route "app" to `up`, and
/// `[tracing]` with `tracing` lines.
async fn gateway(pki: &Pki, up: &Upstream, tracing: &str) -> Gateway {
    let toml = format!(
        "{}{}{}[tracing]\n{tracing}\n",
        server("shutdown_timeout = \"2s\""),
        listener("public", "trusted_proxies = [\"127.0.0.1/32\"]"),
        route("app", "/", &[&up.url()], ""),
    ) + &route(
        "closed",
        "/closed",
        &[&up.url()],
        "deny = [\"127.0.0.0/8\"]",
    );
    Gateway::start(pki.dir(), &toml).await
}

fn tracing_to(addr: &str, proto: Proto, ratio: f64) -> String {
    format!(
        "otlp_endpoint = \"{addr}\"\nprotocol = \"{proto}\"\nsampling_ratio = {ratio:?}\nexport_interval = \"100ms\"\n",
        proto = proto.name()
    )
}

/// A collector speaking `proto`, an echo upstream, and a gateway exporting to the one with
/// `ratio` and forwarding to the other.
struct Traced {
    pki: Pki,
    up: Upstream,
    received: Received,
    gw: Gateway,
}

impl Traced {
    async fn start(proto: Proto, ratio: f64) -> Traced {
        let pki = Pki::generate();
        let up = Upstream::echo("app").await;
        let (at, received) = collector(proto).await;
        let gw = gateway(
            &pki,
            &up,
            &tracing_to(&format!("http://{at}"), proto, ratio),
        )
        .await;
        Traced {
            pki,
            up,
            received,
            gw,
        }
    }

    async fn call(&self, source: &str, traceparent: Option<&str>) -> (TestResponse, Echo) {
        call(&self.pki, &self.gw, source, traceparent).await
    }
}

/// Shut the gateway down and wait (at most 20 s): its last spans are flushed by then.
async fn stop(gw: Gateway) {
    let handle = gw.shutdown_handle();
    let running = gw.into_running();
    handle.trigger();
    tokio::time::timeout(Duration::from_secs(20), running.wait())
        .await
        .expect("shutdown within 20 s");
}

/// One GET from `source` (127.0.0.1 is the trusted proxy), with a `traceparent` if given.
async fn call(
    pki: &Pki,
    gw: &Gateway,
    source: &str,
    traceparent: Option<&str>,
) -> (TestResponse, Echo) {
    let tls = TlsClient::new(pki)
        .connect_from(source.parse().unwrap(), gw.addr(), "localhost")
        .await
        .unwrap();
    let mut h1 = H1::handshake(tls).await.unwrap();
    let mut req = request("GET", "/orders?token=secret");
    if let Some(tp) = traceparent {
        req = req
            .header("traceparent", tp)
            .header("tracestate", "congo=t61rcWkgMzE");
    }
    let resp = h1.call(req.body(support::empty()).unwrap()).await.unwrap();
    let echo = resp.echo();
    (resp, echo)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|v| match v {
            Value::StringValue(s) => s,
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// (trace id, parent id, flags) of the `traceparent` the upstream received.
fn upstream_parent(echo: &Echo) -> (String, String, String) {
    let tp = echo
        .header("traceparent")
        .expect("the upstream got a traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

async fn a_trusted_callers_trace_is_continued_and_its_span_exported(proto: Proto) {
    let t = Traced::start(proto, 1.0).await;
    let (resp, echo) = t.call("127.0.0.1", Some(&traceparent())).await;
    let (trace, parent, flags) = upstream_parent(&echo);
    assert_eq!(
        trace, TRACE,
        "the trusted caller's trace continues upstream"
    );
    assert_ne!(
        parent, PARENT,
        "the upstream's parent is the gateway's span"
    );
    assert_eq!(flags, "01");
    assert_eq!(echo.header("tracestate"), Some("congo=t61rcWkgMzE"));

    let spans = t.received.wait_for(1).await;
    assert_eq!(spans.len(), 1, "one span per request");
    let span = &spans[0];
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(
        hex(&span.span_id),
        parent,
        "the upstream's parent is the exported span"
    );
    assert_eq!(hex(&span.parent_span_id), PARENT);
    assert_eq!(span.name, "GET app");
    let request_id = resp.headers.get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(
        attr(span, "portcullis.request_id").as_deref(),
        Some(request_id)
    );
    assert_eq!(
        attr(span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(span, "url.path").as_deref(), Some("/orders"));
    assert_eq!(attr(span, "http.route").as_deref(), Some("app"));
    let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["policy admitted", "upstream attempt"]);
    // The target that answered: the attempt's, as the access line names it.
    let attempt = &span.events[1];
    let upstream = attempt
        .attributes
        .iter()
        .find(|kv| kv.key == "portcullis.upstream")
        .and_then(|kv| kv.value.as_ref()?.value.clone());
    assert_eq!(upstream, Some(Value::StringValue("app#0".into())));
    assert_eq!(
        attr(span, "portcullis.upstream"),
        None,
        "not repeated on the span"
    );
    // Never the query string or the upstream's address.
    let all = format!("{span:?}");
    assert!(
        !all.contains("secret") && !all.contains(&t.up.url()[7..]),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_a_trusted_callers_trace_is_continued_and_its_span_exported() {
    a_trusted_callers_trace_is_continued_and_its_span_exported(Proto::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_a_trusted_callers_trace_is_continued_and_its_span_exported() {
    a_trusted_callers_trace_is_continued_and_its_span_exported(Proto::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_callers_traceparent_is_replaced_by_a_fresh_trace() {
    let t = Traced::start(Proto::Http, 1.0).await;
    let (_, echo) = t.call("127.0.0.2", Some(&traceparent())).await;
    let (trace, parent, _) = upstream_parent(&echo);
    assert_ne!(
        trace, TRACE,
        "an untrusted caller's trace id is not adopted"
    );
    assert_eq!(echo.header("tracestate"), None, "nor its tracestate");
    let spans = t.received.wait_for(1).await;
    assert_eq!(hex(&spans[0].trace_id), trace);
    assert_eq!(hex(&spans[0].span_id), parent);
    assert!(
        spans[0].parent_span_id.is_empty(),
        "a new trace has no parent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_exported_with_its_denial_reason() {
    let t = Traced::start(Proto::Http, 1.0).await;
    let req = request("GET", "/closed")
        .header("traceparent", traceparent())
        .body(support::empty())
        .unwrap();
    let resp = send_one(&t.pki, t.gw.addr(), req).await;
    assert_eq!(resp.status, 403);
    let spans = t.received.wait_for(1).await;
    let span = &spans[0];
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(span.name, "GET closed");
    assert_eq!(
        attr(span, "portcullis.denial").as_deref(),
        Some("ip_not_allowed")
    );
    assert_eq!(
        attr(span, "http.response.status_code").as_deref(),
        Some("403")
    );
    let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["policy refused"], "no upstream attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_ratio_zero_exports_nothing_but_still_propagates() {
    let t = Traced::start(Proto::Grpc, 0.0).await;
    let mut traces = Vec::new();
    for _ in 0..5 {
        let (_, echo) = t.call("127.0.0.1", None).await;
        let (trace, _, flags) = upstream_parent(&echo);
        assert_eq!(flags, "00", "not sampled, and the upstream is told so");
        traces.push(trace);
    }
    traces.dedup();
    assert_eq!(traces.len(), 5, "each request is a trace of its own");
    // Shutdown flushes whatever was queued: after it, nothing can still arrive.
    stop(t.gw).await;
    assert!(t.received.spans().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_no_request() {
    for proto in [Proto::Grpc, Proto::Http] {
        let pki = Pki::generate();
        let up = Upstream::echo("app").await;
        let gw = gateway(&pki, &up, &tracing_to(&closed_port_url(), proto, 1.0)).await;
        for _ in 0..10 {
            let (resp, _) = call(&pki, &gw, "127.0.0.1", Some(&traceparent())).await;
            assert_eq!(resp.status, 200);
        }
        // The shutdown's flush is bounded too.
        stop(gw).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_sampling_ratio() {
    let t = Traced::start(Proto::Grpc, 0.0).await;
    let (_, echo) = t.call("127.0.0.1", None).await;
    assert_eq!(upstream_parent(&echo).2, "00");

    let text = std::fs::read_to_string(&t.gw.config)
        .unwrap()
        .replace("sampling_ratio = 0.0", "sampling_ratio = 1.0");
    std::fs::write(&t.gw.config, text).unwrap();
    t.gw.reload().await.unwrap();
    let (_, echo) = t.call("127.0.0.1", None).await;
    let (trace, parent, flags) = upstream_parent(&echo);
    assert_eq!(flags, "01");
    let spans = t.received.wait_for(1).await;
    assert_eq!(hex(&spans[0].trace_id), trace);
    assert_eq!(hex(&spans[0].span_id), parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_line_carries_the_trace_id() {
    let pki = Pki::generate();
    let up = Upstream::echo("app").await;
    let (at, _received) = collector(Proto::Http).await;
    let toml = format!(
        "{}{}[tracing]\n{}",
        listener("public", "trusted_proxies = [\"127.0.0.1/32\"]"),
        route("app", "/", &[&up.url()], ""),
        tracing_to(&format!("http://{at}"), Proto::Http, 0.0)
    );
    let mut proc = ops::Proc::spawn(&write_config(pki.dir(), &toml), "json");
    let addr = proc.listener_addr("public").await;
    let req = request("GET", "/a")
        .header("traceparent", traceparent())
        .body(support::empty())
        .unwrap();
    let resp = send_one(&pki, addr, req).await;
    let id = resp.headers.get("x-request-id").unwrap().to_str().unwrap();
    let line = proc
        .wait_for_line("the access line", |l| {
            l.is_access() && l.str("request_id") == Some(id)
        })
        .await;
    assert_eq!(line.str("trace_id"), Some(TRACE), "{}", line.raw);
    proc.signal("TERM");
    proc.wait_exit(Duration::from_secs(20)).await;
}
