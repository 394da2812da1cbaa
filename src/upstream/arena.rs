//! Small header values made for each request (the `traceparent` of a traced request) cut
//! from a chunk this thread shares among them: one allocation per chunk instead of one per
//! value. A value holds its chunk alive (the chunk is reference counted), so chunks stay
//! small: a request that lives long pins at most [`CHUNK`] bytes.
//!
//! Hand-written over an arena crate: `bytes` (already hyper's) does the sharing; what is
//! here is the choice of when to start a new chunk.

use std::cell::RefCell;

use bytes::BytesMut;
use http::HeaderValue;

/// Bytes per chunk: 18 `traceparent` values.
const CHUNK: usize = 1024;

thread_local! {
    static SPARE: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A traced request's `traceparent` for its upstream.
pub fn traceparent(t: &crate::trace_context::TraceContext) -> HeaderValue {
    let bytes = t.traceparent();
    debug_assert!(bytes.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-'));
    // SAFETY: `encode` writes only lower-case hex digits and dashes, all valid in a header
    // value (checked by `trace_context`'s tests and the assertion above); skipping the
    // check a byte saves about 220 instructions a traced request (callgrind).
    let mut v = unsafe { HeaderValue::from_maybe_shared_unchecked(cut(&bytes)) };
    // Unique to the request: never indexed by HPACK, as the request id (`RequestId::header_value`).
    v.set_sensitive(true);
    v
}

/// `bytes` copied into this thread's chunk.
fn cut(bytes: &[u8]) -> bytes::Bytes {
    SPARE
        .try_with(|spare| {
            // Not re-entered (nothing here calls back), but a failed borrow falls back
            // rather than panics.
            let mut spare = spare.try_borrow_mut().ok()?;
            if spare.capacity() < bytes.len() {
                *spare = BytesMut::with_capacity(CHUNK.max(bytes.len()));
            }
            spare.extend_from_slice(bytes);
            Some(spare.split().freeze())
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| bytes::Bytes::copy_from_slice(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cut_from_one_chunk_keep_their_own_bytes() {
        let values: Vec<bytes::Bytes> = (0..100)
            .map(|i| cut(format!("value-{i}").as_bytes()))
            .collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(&v[..], format!("value-{i}").as_bytes());
        }
        // Dropping some values and cutting more leaves the others intact.
        let kept: Vec<bytes::Bytes> = values.into_iter().step_by(7).collect();
        let more: Vec<bytes::Bytes> = (0..100).map(|_| cut(&[b'x'; 55])).collect();
        for (n, v) in kept.iter().enumerate() {
            assert_eq!(&v[..], format!("value-{}", n * 7).as_bytes());
        }
        assert!(more.iter().all(|v| v[..] == [b'x'; 55]));
    }

    #[test]
    fn a_traceparent_is_the_encoded_context_and_a_valid_header_value() {
        use crate::trace_context::{SpanId, TraceContext, TraceId, parse};
        for seed in 1..200u8 {
            let t = TraceContext {
                trace_id: TraceId([seed; 16]),
                span_id: SpanId([seed.wrapping_mul(31); 8]),
                sampled: seed % 2 == 0,
                keep_tracestate: false,
            };
            let v = traceparent(&t);
            assert!(HeaderValue::from_bytes(v.as_bytes()).is_ok());
            let back = parse(v.as_bytes()).unwrap();
            assert_eq!(back.trace_id, t.trace_id);
            assert_eq!(back.sampled(), t.sampled);
        }
    }

    #[test]
    fn a_value_longer_than_a_chunk_and_an_empty_one() {
        let long = vec![b'a'; CHUNK * 3];
        assert_eq!(&cut(&long)[..], &long[..]);
        assert_eq!(&cut(b"")[..], b"");
    }
}
