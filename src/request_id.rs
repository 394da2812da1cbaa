//! Request ids: cheap, unique, safe anywhere without escaping.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, HeaderValue};

/// The header that carries the id to the upstream and back to the client.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id: 8 hex digits fixed per process (random at start) then 16 of a counter.
/// Unique within a process and, with overwhelming probability, across restarts; cheap to make
/// (no lock, no allocation) and safe in headers, JSON and logs without escaping.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 24]);

impl RequestId {
    pub fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static PREFIX: OnceLock<u32> = OnceLock::new();
        let prefix = *PREFIX.get_or_init(|| {
            let mut b = [0u8; 4];
            // Without randomness the ids are still unique within the process.
            let _ = aws_lc_rs::rand::fill(&mut b);
            u32::from_le_bytes(b)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut out = [0u8; 24];
        hex_into(&mut out[..8], u64::from(prefix), 8);
        hex_into(&mut out[8..], n, 16);
        RequestId(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The id as a header value marked never-indexed for HPACK (HTTP/2 to the client and to
    /// upstreams): a value unique to one request indexed in the dynamic table would only
    /// push out the headers that repeat, and h2's encoder would compare each new id with
    /// every earlier one still in the table (~4,500 instructions a request, callgrind).
    /// HTTP/1.1 ignores the mark.
    pub fn header_value(&self) -> HeaderValue {
        let mut v = HeaderValue::from_bytes(&self.0).unwrap_or(HeaderValue::from_static("invalid"));
        v.set_sensitive(true);
        v
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hex_into(out: &mut [u8], mut v: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out[i] = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_hex_of_fixed_length() {
        let a = RequestId::next();
        let b = RequestId::next();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 24);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.as_str()[..8], b.as_str()[..8]);
    }

    #[test]
    fn the_header_value_carries_the_id_and_is_never_indexed_by_hpack() {
        let id = RequestId::next();
        let v = id.header_value();
        assert_eq!(v.as_bytes(), id.as_str().as_bytes());
        assert!(v.is_sensitive());
    }
}
