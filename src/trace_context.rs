//! W3C Trace Context (`traceparent`, `tracestate`): what a caller says about its trace, and
//! what the gateway tells its upstream. Pure: bytes in, values out; a malformed header is
//! `None` (the gateway then starts a fresh trace), never a panic or a refusal.
//!
//! Hand-written rather than the OpenTelemetry propagator: `traceparent` is 55 bytes at fixed
//! positions, and the propagator goes through a `Context` and a string map per request,
//! where this reads the header's bytes in place and writes the outgoing one without
//! allocating more than its value.

use http::{HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` passed on. The W3C spec asks vendors to propagate at least 512
/// characters; a longer one (32 members at most, each up to ~512) is dropped whole, since
/// cutting members out would need parsing every one of them.
pub const MAX_TRACESTATE: usize = 512;

/// A 16-byte trace id; never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span (parent) id; never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// A caller's `traceparent`, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    /// The trace flags byte; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// The trace the gateway's own span belongs to: what the upstream is told and the log
/// links to the request id. Plain bytes (32 of them), so that it lives inline in the
/// request's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    /// The gateway's span: the upstream's parent.
    pub span_id: SpanId,
    pub sampled: bool,
    /// The caller's `tracestate` goes on as sent: its `traceparent` was adopted and the
    /// `tracestate` is one we pass (see [`tracestate_passes`]). Otherwise it is removed.
    pub keep_tracestate: bool,
}

impl TraceContext {
    /// The `traceparent` the upstream receives: version 00, this trace, the gateway's span.
    pub fn traceparent(&self) -> [u8; 55] {
        encode(self.trace_id, self.span_id, self.sampled)
    }
}

/// Read a `traceparent` value. Version `00` must be exactly 55 bytes; a later version
/// (not `ff`) may carry more after its first four fields, which are read the same way
/// (the spec's forward compatibility). Upper-case hex is invalid, as the spec says.
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    match version {
        0xff => return None,
        0 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    let mut trace_id = [0u8; 16];
    hex_into(&value[3..35], &mut trace_id)?;
    let mut parent_id = [0u8; 8];
    hex_into(&value[36..52], &mut parent_id)?;
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id: TraceId(trace_id),
        parent_id: SpanId(parent_id),
        flags,
    })
}

/// Whether the caller's `tracestate` is passed on: present, short enough, and a single
/// header line of visible ASCII (several lines would have to be joined, which is not worth
/// an allocation).
pub fn tracestate_passes(values: http::header::GetAll<'_, HeaderValue>) -> bool {
    let mut it = values.iter();
    let Some(first) = it.next() else {
        return false;
    };
    it.next().is_none()
        && !first.is_empty()
        && first.len() <= MAX_TRACESTATE
        && first.as_bytes().iter().all(|b| (0x20..0x7f).contains(b))
}

/// `00-<trace id>-<span id>-<flags>`, as bytes.
pub fn encode(trace_id: TraceId, span_id: SpanId, sampled: bool) -> [u8; 55] {
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    write_hex(&trace_id.0, &mut out[3..35]);
    out[35] = b'-';
    write_hex(&span_id.0, &mut out[36..52]);
    out[52] = b'-';
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Each byte's two hex digits: one lookup a byte where nibbles take two (every traced
/// request writes 24 bytes of ids).
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some(nibble(two[0])? << 4 | nibble(two[1])?)
}

fn hex_into(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_byte(&hex[2 * i..2 * i + 2])?;
    }
    Some(())
}

/// Lower-case hex of `bytes` (at most 16), as the headers write ids.
fn fmt_hex(bytes: &[u8], f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    let mut out = [0u8; 32];
    let out = &mut out[..2 * bytes.len()];
    write_hex(bytes, out);
    f.write_str(std::str::from_utf8(out).unwrap_or("-"))
}

/// Ids print as the headers write them, in logs and in debug output alike.
macro_rules! hex_id {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                fmt_hex(&self.0, f)
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                fmt_hex(&self.0, f)
            }
        }
    };
}

hex_id!(TraceId);
hex_id!(SpanId);

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read_and_written_back_the_same() {
        let p = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled());
        assert_eq!(&encode(p.trace_id, p.parent_id, true)[..], GOOD.as_bytes());
        assert_eq!(
            &encode(p.trace_id, p.parent_id, false)[..],
            GOOD.replace("-01", "-00").as_bytes()
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored_without_a_panic() {
        let bad = [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // upper case, non-hex, wrong separators
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            // version 00 with trailing data; the forbidden version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // a later version must separate what follows with a dash
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ];
        for b in bad {
            assert_eq!(parse(b.as_bytes()), None, "{b:?}");
        }
        // Every prefix and every single-byte change of a good header: no panic.
        for n in 0..GOOD.len() {
            let _ = parse(&GOOD.as_bytes()[..n]);
            for c in [0u8, b'-', b'z', 0xff] {
                let mut v = GOOD.as_bytes().to_vec();
                v[n] = c;
                let _ = parse(&v);
            }
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes-next";
        let p = parse(v.as_bytes()).unwrap();
        assert!(!p.sampled());
        assert_eq!(p.parent_id.to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn tracestate_is_passed_on_only_when_short_single_and_printable() {
        let mut h = http::HeaderMap::new();
        assert!(!tracestate_passes(h.get_all(TRACESTATE)));
        h.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        assert!(tracestate_passes(h.get_all(TRACESTATE)));
        h.insert(
            TRACESTATE,
            HeaderValue::from_str(&"a".repeat(MAX_TRACESTATE + 1)).unwrap(),
        );
        assert!(!tracestate_passes(h.get_all(TRACESTATE)));
        h.insert(TRACESTATE, HeaderValue::from_static("a=1"));
        h.append(TRACESTATE, HeaderValue::from_static("b=2"));
        assert!(!tracestate_passes(h.get_all(TRACESTATE)));
        h.insert(TRACESTATE, HeaderValue::from_static("a=\t1"));
        assert!(!tracestate_passes(h.get_all(TRACESTATE)));
    }
}
