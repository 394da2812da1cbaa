//! Finished spans as OTLP/protobuf bytes (`ExportTraceServiceRequest`), written straight
//! from the SDK's `SpanData`: no intermediate proto structs (opentelemetry-proto's transform
//! made a `String` of every key and value, then prost encoded them, recomputing nested
//! lengths at each level, then dropped them: about 820 of the 1,100 instructions a request
//! that 1% sampling cost, callgrind).
//!
//! Fields are written in field-number order and proto3 defaults are left out, as prost
//! does, so the bytes are the ones opentelemetry-proto's transform and prost would give
//! (the tests check that). A nested message's length prefix is reserved as one byte and
//! widened after the message is written when it is 128 bytes or more: exact lengths,
//! one pass, no scratch buffers.
//!
//! Field numbers and wire types: opentelemetry-proto's `opentelemetry/proto/{collector/
//! trace,trace,common,resource}/v1/*.proto` (the generated `#[prost(tag = ..)]`s).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::SpanData;

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `SpanFlags`: the context's is-remote bit is known (always, here), and its value.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// The resource every span of an export shares, encoded once (when the SDK hands the
/// exporter its resource): the `Resource` message's body and the resource's schema URL.
#[derive(Debug, Default, Clone)]
pub struct EncodedResource {
    body: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub fn new(resource: &opentelemetry_sdk::Resource) -> Self {
        let mut body = Vec::new();
        for (k, v) in resource.iter() {
            message(&mut body, 1, |out| key_value(out, k.as_str(), v));
        }
        EncodedResource {
            body,
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// Append `spans` to `out` as one `ExportTraceServiceRequest`: one `ResourceSpans`, one
/// `ScopeSpans` per instrumentation scope (in order of first appearance; each holds its
/// spans in batch order).
pub fn encode_request(resource: &EncodedResource, spans: &[SpanData], out: &mut Vec<u8>) {
    // ExportTraceServiceRequest.resource_spans = 1
    message(out, 1, |out| {
        // ResourceSpans.resource = 1
        message(out, 1, |out| out.extend_from_slice(&resource.body));
        // The scopes, each once. A gateway has one (`portcullis`): one comparison a span.
        let mut scopes: Vec<&InstrumentationScope> = Vec::with_capacity(1);
        for s in spans {
            if !scopes.contains(&&s.instrumentation_scope) {
                scopes.push(&s.instrumentation_scope);
            }
        }
        for scope in scopes {
            // ResourceSpans.scope_spans = 2
            message(out, 2, |out| {
                // ScopeSpans.scope = 1
                message(out, 1, |out| instrumentation_scope(out, scope));
                for s in spans.iter().filter(|s| s.instrumentation_scope == *scope) {
                    // ScopeSpans.spans = 2
                    message(out, 2, |out| span(out, s));
                }
                // ScopeSpans.schema_url = 3
                string(out, 3, scope.schema_url().unwrap_or_default());
            });
        }
        // ResourceSpans.schema_url = 3
        string(out, 3, &resource.schema_url);
    });
}

/// `common.v1.InstrumentationScope`.
fn instrumentation_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(out, 1, scope.name());
    string(out, 2, scope.version().unwrap_or_default());
    for kv in scope.attributes() {
        message(out, 3, |out| attribute(out, kv));
    }
}

/// `trace.v1.Span`.
fn span(out: &mut Vec<u8>, s: &SpanData) {
    let cx = &s.span_context;
    bytes(out, 1, &cx.trace_id().to_bytes());
    bytes(out, 2, &cx.span_id().to_bytes());
    trace_state(out, 3, cx);
    if s.parent_span_id != SpanId::INVALID {
        bytes(out, 4, &s.parent_span_id.to_bytes());
    }
    string(out, 5, &s.name);
    uint(out, 6, span_kind(&s.span_kind));
    fixed64(out, 7, nanos(s.start_time));
    fixed64(out, 8, nanos(s.end_time));
    for kv in &s.attributes {
        message(out, 9, |out| attribute(out, kv));
    }
    uint(out, 10, u64::from(s.dropped_attributes_count));
    for e in &s.events.events {
        // Span.Event
        message(out, 11, |out| {
            fixed64(out, 1, nanos(e.timestamp));
            string(out, 2, &e.name);
            for kv in &e.attributes {
                message(out, 3, |out| attribute(out, kv));
            }
            uint(out, 4, u64::from(e.dropped_attributes_count));
        });
    }
    uint(out, 12, u64::from(s.events.dropped_count));
    for l in &s.links.links {
        // Span.Link
        message(out, 13, |out| {
            let cx = &l.span_context;
            bytes(out, 1, &cx.trace_id().to_bytes());
            bytes(out, 2, &cx.span_id().to_bytes());
            trace_state(out, 3, cx);
            for kv in &l.attributes {
                message(out, 4, |out| attribute(out, kv));
            }
            uint(out, 5, u64::from(l.dropped_attributes_count));
            fixed32(out, 6, flags(cx.is_remote(), cx));
        });
    }
    uint(out, 14, u64::from(s.links.dropped_count));
    // Status: always present (the transform writes it for Unset too).
    message(out, 15, |out| {
        let (message, code) = match &s.status {
            Status::Unset => ("", 0),
            Status::Ok => ("", 1),
            Status::Error { description } => (&**description, 2),
        };
        string(out, 2, message);
        uint(out, 3, code);
    });
    fixed32(out, 16, flags(s.parent_span_is_remote, cx));
}

/// The W3C trace flags with the is-remote bits, as opentelemetry-proto's `build_span_flags`.
fn flags(remote: bool, cx: &SpanContext) -> u32 {
    let mut f = u32::from(cx.trace_flags().to_u8()) | CONTEXT_HAS_IS_REMOTE;
    if remote {
        f |= CONTEXT_IS_REMOTE;
    }
    f
}

fn trace_state(out: &mut Vec<u8>, field: u32, cx: &SpanContext) {
    // Empty (the common case) allocates nothing.
    string(out, field, &cx.trace_state().header());
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// Nanoseconds since the epoch; 0 before it (as the transform's `to_nanos`).
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `common.v1.KeyValue`'s body.
fn attribute(out: &mut Vec<u8>, kv: &KeyValue) {
    key_value(out, kv.key.as_str(), &kv.value);
}

fn key_value(out: &mut Vec<u8>, key: &str, value: &Value) {
    string(out, 1, key);
    message(out, 2, |out| any_value(out, value));
}

/// `common.v1.AnyValue`'s body: the oneof's one field, written even when it is the type's
/// default (the variant is the information). A kind of value this encoder does not know
/// (`Value` is non-exhaustive) is an empty AnyValue rather than a panic.
fn any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => string_always(out, 1, s.as_str()),
        Value::Bool(b) => {
            key(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        Value::I64(i) => {
            key(out, 3, VARINT);
            varint(out, *i as u64);
        }
        Value::F64(f) => {
            key(out, 4, FIXED64);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        // ArrayValue.values = 1, each an AnyValue
        Value::Array(a) => message(out, 5, |out| match a {
            Array::Bool(v) => elements(out, v, |b| Value::Bool(*b)),
            Array::I64(v) => elements(out, v, |i| Value::I64(*i)),
            Array::F64(v) => elements(out, v, |f| Value::F64(*f)),
            Array::String(v) => {
                for s in v {
                    message(out, 1, |out| string_value(out, s));
                }
            }
            _ => {}
        }),
        _ => {}
    }
}

fn elements<T>(out: &mut Vec<u8>, values: &[T], value: impl Fn(&T) -> Value) {
    for v in values {
        message(out, 1, |out| any_value(out, &value(v)));
    }
}

fn string_value(out: &mut Vec<u8>, s: &StringValue) {
    string_always(out, 1, s.as_str());
}

/// A nested message: its key, then `body`'s bytes behind their exact length. One byte is
/// reserved for the length; a body of 128 bytes or more is moved up by the extra bytes.
fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let end = out.len();
    let len = (end - at - 1) as u64;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let mut prefix = [0u8; 10];
    let n = varint_into(&mut prefix, len);
    out.resize(end + n - 1, 0);
    out.copy_within(at + 1..end, at + n);
    out[at..at + n].copy_from_slice(&prefix[..n]);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn varint(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 10];
    let n = varint_into(&mut buf, v);
    out.extend_from_slice(&buf[..n]);
}

/// `v` as a base-128 varint at the start of `buf`; how many bytes it took (1 to 10).
fn varint_into(buf: &mut [u8; 10], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 && i < 9 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

/// A string or bytes field, left out when empty (proto3's default).
fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes(out, field, s.as_bytes());
    }
}

/// A oneof's string: written even when empty.
fn string_always(out: &mut Vec<u8>, field: u32, s: &str) {
    len_delimited(out, field, s.as_bytes());
}

/// A bytes field, left out when empty (proto3's default).
fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    if !b.is_empty() {
        len_delimited(out, field, b);
    }
}

/// Key, length, bytes.
fn len_delimited(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v);
    }
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        key(out, field, FIXED32);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{
        Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use proptest::prelude::*;
    use prost::Message as _;

    use super::{EncodedResource, encode_request};

    fn portcullis() -> InstrumentationScope {
        InstrumentationScope::builder("portcullis").build()
    }

    fn at(nanos: u64) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    fn context(
        trace: u128,
        span: u64,
        flags: TraceFlags,
        remote: bool,
        state: &str,
    ) -> SpanContext {
        let state = if state.is_empty() {
            TraceState::NONE
        } else {
            state.parse().unwrap()
        };
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            flags,
            remote,
            state,
        )
    }

    fn span(name: &str, parent: u64, remote_parent: bool) -> SpanData {
        SpanData {
            span_context: context(
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                0x00f0_67aa_0ba9_02b7,
                TraceFlags::SAMPLED,
                false,
                "",
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: remote_parent,
            span_kind: SpanKind::Server,
            name: Cow::Owned(name.to_owned()),
            start_time: at(1_700_000_000_123_456_789),
            end_time: at(1_700_000_000_223_456_789),
            attributes: vec![],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: portcullis(),
        }
    }

    /// Every kind of attribute value, arrays included (empty ones too).
    fn every_value() -> Vec<KeyValue> {
        vec![
            KeyValue::new("s", "text"),
            KeyValue::new("empty", ""),
            KeyValue::new("", "an empty key"),
            KeyValue::new("ünïcødé ✓", "値 🚀"),
            KeyValue::new("t", true),
            KeyValue::new("f", false),
            KeyValue::new("i", 200_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("neg", -1_i64),
            KeyValue::new("min", i64::MIN),
            KeyValue::new("max", i64::MAX),
            KeyValue::new("d", 1.5_f64),
            KeyValue::new("d0", 0.0_f64),
            KeyValue::new("dneg", -0.0_f64),
            KeyValue::new("dinf", f64::INFINITY),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![0, -7, 1 << 40]))),
            KeyValue::new("doubles", Value::Array(Array::F64(vec![0.25, -3.0]))),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from(""),
                    StringValue::from("ß".repeat(100)),
                ])),
            ),
            KeyValue::new("none", Value::Array(Array::I64(vec![]))),
            KeyValue::new("no strings", Value::Array(Array::String(vec![]))),
        ]
    }

    /// The spans the comparison covers: a remote parent, no parent, a local parent, every
    /// value type, events with attributes, links, each status, each kind, unicode and
    /// empty names, lengths that take 2- and 3-byte varints, a second scope.
    fn batch() -> Vec<SpanData> {
        let mut remote = span("GET app ✓", 0x0102_0304_0506_0708, true);
        remote.span_context = context(
            7,
            9,
            TraceFlags::SAMPLED,
            false,
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        );
        remote.attributes = every_value();
        remote.dropped_attributes_count = 3;
        remote.events = SpanEvents::default();
        remote.events.events = vec![
            Event::new(
                "policy admitted",
                at(1_700_000_000_150_000_000),
                vec![KeyValue::new("portcullis.route", "app")],
                0,
            ),
            Event::new("", at(0), vec![], 2),
            Event::new("every value", at(1), every_value(), 0),
        ];
        remote.events.dropped_count = 4;
        remote.status = Status::error("upstream error: ünïcødé");

        let mut root = span("", 0, false);
        root.span_kind = SpanKind::Internal;
        root.span_context = context(1, 2, TraceFlags::default(), false, "");

        let mut many = span(&"x".repeat(300), 0x11, false);
        many.span_kind = SpanKind::Client;
        many.status = Status::Ok;
        many.attributes = (0..200)
            .map(|i| KeyValue::new(format!("attr.{i}"), "v".repeat(i)))
            .collect();
        many.attributes
            .push(KeyValue::new("big", "b".repeat(20_000)));
        many.links = SpanLinks::default();
        many.links.links = vec![
            Link::new(
                context(3, 4, TraceFlags::SAMPLED, true, "k=v"),
                vec![KeyValue::new("link.attr", 1_i64)],
                1,
            ),
            Link::new(context(5, 6, TraceFlags::default(), false, ""), vec![], 0),
        ];
        many.links.dropped_count = 5;

        let mut producer = span("producer", 0, false);
        producer.span_kind = SpanKind::Producer;
        producer.start_time = std::time::UNIX_EPOCH - Duration::from_secs(1);
        producer.end_time = std::time::UNIX_EPOCH;
        producer.instrumentation_scope = InstrumentationScope::builder("other")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.0.0")
            .with_attributes([KeyValue::new("scope.attr", "x")])
            .build();

        let mut consumer = span("consumer", 0x22, true);
        consumer.span_kind = SpanKind::Consumer;

        vec![remote, root, many, producer, consumer]
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_schema_url(
                [
                    KeyValue::new("service.name", "portcullis-test"),
                    KeyValue::new("deployment.environment", "ci"),
                ],
                "https://opentelemetry.io/schemas/1.1.0",
            )
            .build()
    }

    fn ours(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(&EncodedResource::new(resource), spans, &mut out);
        out
    }

    /// opentelemetry-proto's transform, which opentelemetry-otlp sends.
    fn theirs(resource: &Resource, spans: Vec<SpanData>) -> ExportTraceServiceRequest {
        let resource = ResourceAttributesWithSchema::from(resource);
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
        }
    }

    #[test]
    fn the_request_is_the_one_opentelemetry_proto_would_send() {
        let resource = resource();
        let spans = batch();
        let bytes = ours(&resource, &spans);
        let expected = theirs(&resource, spans);
        let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        assert_eq!(decoded, expected);
        // Field order and defaults as prost writes them: the very same bytes.
        assert_eq!(bytes, expected.encode_to_vec());
        // Two scopes, in order of first appearance; the first holds four spans.
        let scopes = &decoded.resource_spans[0].scope_spans;
        assert_eq!(scopes.len(), 2);
        assert_eq!(scopes[0].spans.len(), 4);
        assert_eq!(scopes[1].scope.as_ref().unwrap().version, "1.2.3");
    }

    #[test]
    fn a_gateway_span_has_its_ids_flags_and_status() {
        use opentelemetry_proto::tonic::common::v1::any_value;
        let resource = Resource::builder_empty()
            .with_service_name("portcullis")
            .build();
        let spans = batch();
        let decoded = ExportTraceServiceRequest::decode(&ours(&resource, &spans)[..]).unwrap();
        let rs = &decoded.resource_spans[0];
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].key, "service.name");
        let scope = &rs.scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "portcullis");
        let s = &scope.spans[0];
        assert_eq!(s.trace_id, 7u128.to_be_bytes());
        assert_eq!(s.span_id, 9u64.to_be_bytes());
        assert_eq!(s.parent_span_id, 0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(s.flags, 0x301, "sampled, remote parent");
        assert_eq!(s.kind, 2);
        assert_eq!(s.trace_state, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
        let status = s.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "upstream error: ünïcødé")
        );
        let ints = s.attributes.iter().find(|kv| kv.key == "ints").unwrap();
        let Some(any_value::Value::ArrayValue(a)) = ints.value.as_ref().unwrap().value.as_ref()
        else {
            panic!("{ints:?}")
        };
        assert_eq!(a.values.len(), 3);
        let root = &scope.spans[1];
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.flags, 0x100, "not sampled, local");
        assert_eq!(root.status.as_ref().unwrap().code, 0);
    }

    #[test]
    fn nothing_to_export_is_an_empty_resource_spans() {
        let resource = resource();
        let bytes = ours(&resource, &[]);
        assert_eq!(bytes, theirs(&resource, vec![]).encode_to_vec());
    }

    #[test]
    fn nan_is_written_as_prost_writes_it() {
        let mut s = span("nan", 0, false);
        s.attributes = vec![
            KeyValue::new("nan", f64::NAN),
            KeyValue::new("nans", Value::Array(Array::F64(vec![f64::NAN]))),
        ];
        let resource = resource();
        let bytes = ours(&resource, std::slice::from_ref(&s));
        assert_eq!(bytes, theirs(&resource, vec![s]).encode_to_vec());
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<f64>().prop_map(Value::F64),
            ".{0,200}".prop_map(|s| Value::String(s.into())),
            prop::collection::vec(any::<i64>(), 0..40).prop_map(|v| Value::Array(Array::I64(v))),
            prop::collection::vec(any::<bool>(), 0..40).prop_map(|v| Value::Array(Array::Bool(v))),
            prop::collection::vec(any::<f64>(), 0..40).prop_map(|v| Value::Array(Array::F64(v))),
            prop::collection::vec(".{0,40}", 0..20).prop_map(|v| Value::Array(Array::String(
                v.into_iter().map(StringValue::from).collect()
            ))),
        ]
    }

    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec(
            (".{0,30}", any_value()).prop_map(|(k, v)| KeyValue::new(k, v)),
            0..30,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the values and lengths: no panic, and prost's own bytes.
        #[test]
        fn any_span_is_written_as_prost_writes_it(
            name in ".{0,300}",
            attrs in attributes(),
            event_attrs in attributes(),
            ids in (any::<u128>(), any::<u64>(), any::<u64>(), any::<u8>(), any::<bool>()),
            times in (any::<u64>(), any::<u64>()),
            counts in (any::<u32>(), any::<u32>()),
            description in ".{0,200}",
        ) {
            let mut s = span(&name, ids.2, ids.4);
            s.span_context = context(ids.0, ids.1, TraceFlags::new(ids.3), false, "");
            s.start_time = at(times.0);
            s.end_time = at(times.1);
            s.attributes = attrs;
            s.dropped_attributes_count = counts.0;
            s.events.events = vec![Event::new("e", at(times.0), event_attrs, counts.1)];
            s.status = Status::error(description);
            let resource = resource();
            let bytes = ours(&resource, std::slice::from_ref(&s));
            prop_assert_eq!(bytes, theirs(&resource, vec![s]).encode_to_vec());
        }
    }
}
