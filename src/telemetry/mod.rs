//! `[tracing]`'s running part: the OpenTelemetry tracer, its OTLP exporter (ours:
//! [`export`], encoding with [`otlp`]), and the span each request gets. The server starts
//! one per config (a reload with the same section keeps it) and flushes it at shutdown.
//!
//! Export never blocks a request: a span ends into the SDK's batch span processor (a
//! bounded queue, `try_send`; full means the span is dropped), whose task sends batches
//! from the Tokio runtime (the exporter's hyper connection needs one). Only sampled spans
//! carry attributes and events; an unsampled request costs one span context (ids and a
//! sampling decision), which it needs anyway to tell the upstream its trace.

mod export;
mod otlp;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use crate::config::tracing::{TracingSettings, TrustIncoming};
use crate::trace_context::{self, SpanId, TraceContext, TraceId};

/// How long one export may take, and a shutdown's flush at most.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans waiting for export at most; more are dropped (counted in the warning).
const MAX_QUEUE: usize = 4096;

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("tracing.otlp_endpoint: cannot set up the OTLP exporter: {0}")]
    Exporter(#[from] export::ExportError),
}

/// The tracer of one `[tracing]` section.
pub struct Telemetry {
    settings: TracingSettings,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Telemetry {
    /// Set up the exporter and the tracer. Call inside the Tokio runtime: the batch
    /// processor's task is spawned on it.
    pub fn start(settings: &TracingSettings) -> Result<Self, TelemetryError> {
        let exporter =
            export::OtlpExporter::new(&settings.endpoint, settings.protocol, EXPORT_TIMEOUT)?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUE)
            .with_scheduled_delay(settings.export_interval)
            .with_max_export_timeout(EXPORT_TIMEOUT)
            .build();
        let processor =
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                Reported::new(exporter, &settings.endpoint),
                opentelemetry_sdk::runtime::Tokio,
            )
            .with_batch_config(batches)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // `begin` samples (a trusted caller's decision stands; new traces by ratio) and
            // asks the SDK for sampled spans only: what it asks for, it records.
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("portcullis");
        Ok(Telemetry {
            settings: settings.clone(),
            provider,
            tracer,
        })
    }

    pub fn settings(&self) -> &TracingSettings {
        &self.settings
    }

    /// The span of a request: a child of the caller's `traceparent` when `via_trusted_proxy`
    /// (the IP stage's verdict on the caller) and the section trust it, else a new trace.
    pub fn begin(
        &self,
        headers: &HeaderMap,
        via_trusted_proxy: bool,
        at: SystemTime,
    ) -> RequestSpan {
        let trusted = match self.settings.trust_incoming {
            TrustIncoming::All => true,
            TrustIncoming::TrustedProxies => via_trusted_proxy,
            TrustIncoming::None => false,
        };
        let parent = trusted
            .then(|| headers.get(trace_context::TRACEPARENT))
            .flatten()
            .and_then(|v| trace_context::parse(v.as_bytes()));
        // Sampling is decided here, before the SDK is asked: a span not sampled (99 in 100
        // at the default ratio) costs two random numbers and no SDK span (which cost about
        // 3,000 instructions a request even unrecorded, callgrind).
        let (trace_id, sampled) = match &parent {
            Some(p) => (p.trace_id, p.flags & 1 == 1),
            None => {
                let id = nonzero(|| fastrand::u128(..));
                (
                    TraceId(id.to_be_bytes()),
                    sampled_by_ratio(id, self.settings.sampling_ratio),
                )
            }
        };
        let keep_tracestate = parent.is_some()
            && trace_context::tracestate_passes(headers.get_all(trace_context::TRACESTATE));
        if !sampled {
            return RequestSpan {
                context: TraceContext {
                    trace_id,
                    span_id: SpanId(nonzero(|| fastrand::u64(..)).to_be_bytes()),
                    sampled: false,
                    keep_tracestate,
                },
                span: None,
            };
        }
        let cx = match &parent {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                opentelemetry::TraceId::from_bytes(p.trace_id.0),
                opentelemetry::SpanId::from_bytes(p.parent_id.0),
                TraceFlags::new(p.flags),
                true,
                TraceState::NONE,
            )),
            None => Context::new(),
        };
        // A fixed name: renamed when the route is known. A new trace's id is the SDK's own
        // (the one drawn above only decided that it is sampled).
        let builder = self
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_start_time(at);
        let span = self.tracer.build_with_context(builder, &cx);
        let sc = span.span_context();
        let context = TraceContext {
            trace_id: TraceId(sc.trace_id().to_bytes()),
            span_id: SpanId(sc.span_id().to_bytes()),
            sampled: sc.is_sampled(),
            keep_tracestate,
        };
        RequestSpan {
            context,
            span: Some(RecordedSpan(Box::new(span))),
        }
    }

    /// Send what is queued and stop, within [`EXPORT_TIMEOUT`] (an unreachable collector
    /// does not hold a shutdown or a reload longer). Off the async workers: the SDK waits
    /// for its batch task by blocking.
    pub async fn shutdown(self: Arc<Self>) {
        let flush = tokio::task::spawn_blocking(move || self.provider.shutdown());
        match tokio::time::timeout(EXPORT_TIMEOUT + Duration::from_secs(1), flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "tracing: spans not flushed at shutdown"),
            Ok(Err(_)) | Err(_) => tracing::warn!("tracing: the span flush did not finish in time"),
        }
    }
}

/// A random id that is not zero (the W3C spec's invalid id), drawn again in the 1 in 2^64
/// case.
fn nonzero<T: PartialEq + Default>(draw: impl Fn() -> T) -> T {
    loop {
        let id = draw();
        if id != T::default() {
            return id;
        }
    }
}

/// TraceIdRatioBased's rule: a trace is sampled when its id's low 63 bits are below
/// `ratio` * 2^63, so every id is judged the same way wherever it is judged.
fn sampled_by_ratio(id: u128, ratio: f64) -> bool {
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    ((id as u64) >> 1) < bound
}

/// One request's span and the trace context it gives the upstream. Inline in the request's
/// record: only a sampled request allocates (its SDK span).
pub struct RequestSpan {
    pub context: TraceContext,
    /// The SDK's span, for sampled requests only.
    span: Option<RecordedSpan>,
}

/// A sampled request's SDK span: exported when dropped (the SDK ends a span on drop), so
/// the response body holds it until the client has the whole answer.
pub struct RecordedSpan(Box<opentelemetry_sdk::trace::Span>);

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSpan")
            .field("context", &self.context)
            .finish()
    }
}

/// What came of one attempt to reach a target.
#[derive(Debug, Clone, Copy)]
pub enum Attempt {
    Status(u16),
    Timeout,
    Overloaded,
    Connect,
    Tls,
    Exchange,
}

/// What a finished request was, for its span.
pub struct Finished<'a> {
    pub request_id: &'a str,
    pub method: &'a http::Method,
    pub path: Option<&'a str>,
    pub route: Option<&'a str>,
    pub client_ip: std::net::IpAddr,
    pub status: u16,
    pub denial: Option<&'static str>,
}

impl RequestSpan {
    /// Whether this request's span is exported (sampled): only then do its attributes and
    /// events matter, and the caller may skip gathering them.
    pub fn is_recorded(&self) -> bool {
        self.span.is_some()
    }

    /// The SDK span when it is exported (attributes and events are kept only then).
    fn recording(&mut self) -> Option<&mut opentelemetry_sdk::trace::Span> {
        self.span
            .as_mut()
            .map(|s| &mut *s.0)
            .filter(|s| s.is_recording())
    }

    /// The policy stages' verdict: admitted, or refused for `reason`. The route is the
    /// span's `http.route` (and in its name), not repeated here.
    pub fn verdict(&mut self, denial: Option<&'static str>) {
        let Some(span) = self.recording() else {
            return;
        };
        match denial {
            Some(reason) => span.add_event(
                "policy refused",
                vec![KeyValue::new("portcullis.denial", reason)],
            ),
            None => span.add_event("policy admitted", Vec::new()),
        }
    }

    /// One attempt to reach target `index` of `route`, sent at `sent_at`.
    pub fn attempt(
        &mut self,
        route: &str,
        index: usize,
        sent_at: std::time::Instant,
        outcome: Attempt,
    ) {
        let Some(span) = self.recording() else {
            return;
        };
        let outcome = match outcome {
            Attempt::Status(s) => KeyValue::new("http.response.status_code", i64::from(s)),
            Attempt::Timeout => KeyValue::new("error.type", "timeout"),
            Attempt::Overloaded => KeyValue::new("error.type", "overloaded"),
            Attempt::Connect => KeyValue::new("error.type", "connect"),
            Attempt::Tls => KeyValue::new("error.type", "tls"),
            Attempt::Exchange => KeyValue::new("error.type", "exchange"),
        };
        span.add_event(
            "upstream attempt",
            vec![
                // route#index, as the access line names it: never the internal address.
                KeyValue::new("portcullis.upstream", format!("{route}#{index}")),
                KeyValue::new("duration_us", sent_at.elapsed().as_micros() as i64),
                outcome,
            ],
        );
    }

    /// The request's attributes, once its response head is known. No query string, no
    /// header, no token: what the access line shows.
    pub fn finish(&mut self, f: &Finished<'_>) {
        let Some(span) = self.recording() else {
            return;
        };
        let name = match f.route {
            Some(r) => format!("{} {r}", f.method),
            None => f.method.to_string(),
        };
        span.update_name(Cow::Owned(name));
        let mut attrs = vec![
            KeyValue::new("portcullis.request_id", f.request_id.to_owned()),
            KeyValue::new("http.request.method", f.method.to_string()),
            KeyValue::new("http.response.status_code", i64::from(f.status)),
            KeyValue::new("client.address", f.client_ip.to_string()),
        ];
        if let Some(p) = f.path {
            attrs.push(KeyValue::new("url.path", p.to_owned()));
        }
        // The target that answered is the last attempt event's `portcullis.upstream`.
        if let Some(r) = f.route {
            attrs.push(KeyValue::new("http.route", r.to_owned()));
        }
        if let Some(d) = f.denial {
            attrs.push(KeyValue::new("portcullis.denial", d));
        }
        span.set_attributes(attrs);
        // A server span is an error on 5xx only (OpenTelemetry HTTP conventions): a 4xx is
        // the client's.
        if f.status >= 500 {
            span.set_status(Status::error(f.denial.unwrap_or("upstream error")));
        }
    }

    /// What must outlive the response head: the SDK span of a sampled request (ended when
    /// dropped), nothing otherwise.
    pub fn into_recorded(self) -> Option<RecordedSpan> {
        self.span
    }
}

/// The exporter, with its failures reported: the first at once, then at most one warning a
/// minute with the count, so an unreachable collector shows in the log without filling it.
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    endpoint: Arc<str>,
    failures: AtomicU64,
    last_warned_ms: AtomicU64,
}

impl<E> Reported<E> {
    fn new(inner: E, endpoint: &str) -> Self {
        Reported {
            inner,
            endpoint: Arc::from(endpoint),
            failures: AtomicU64::new(0),
            last_warned_ms: AtomicU64::new(0),
        }
    }
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            let failed = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            let now = crate::upstream::epoch_ms().max(1);
            let last = self.last_warned_ms.load(Ordering::Relaxed);
            if (last == 0 || now.saturating_sub(last) >= 60_000)
                && self
                    .last_warned_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(endpoint = &*self.endpoint, spans, failed_exports = failed, error = %e, "tracing: spans could not be exported");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod sampling_tests {
    use super::sampled_by_ratio;

    #[test]
    fn the_ratio_samples_its_share_of_ids_and_the_ends_are_never_and_always() {
        let ids =
            (0..10_000u128).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        let sampled = ids.clone().filter(|id| sampled_by_ratio(*id, 0.01)).count();
        assert!(
            (50..=200).contains(&sampled),
            "1% of 10,000 sampled {sampled}"
        );
        assert_eq!(
            ids.clone().filter(|id| sampled_by_ratio(*id, 0.0)).count(),
            0
        );
        assert_eq!(ids.filter(|id| sampled_by_ratio(*id, 1.0)).count(), 10_000);
        assert!(!sampled_by_ratio(u128::from(u64::MAX), 0.999));
    }
}
