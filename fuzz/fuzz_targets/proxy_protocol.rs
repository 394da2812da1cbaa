//! PROXY protocol v1/v2 (src/ip_filter/proxy_protocol.rs), read from a byte stream as a
//! connection reads it. Beyond "no panic": the reader consumes only its header (the bytes
//! after it are the TLS ClientHello), its answer does not depend on those later bytes, and
//! an address it reports encodes back (v1 and v2) to a header that reads as the same address;
//! a canonical v2 header re-encodes to exactly its own bytes.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::proxy_header;
use portcullis::ip_filter::proxy_protocol::{encode_v1, encode_v2};

/// v1 is at most 107 bytes; v2 is 16 bytes and a body of at most 1024.
const MOST: usize = 16 + 1024;

fuzz_target!(|data: &[u8]| {
    let (result, used) = proxy_header(data);
    assert!(used <= data.len() && used <= MOST, "read {used} bytes");
    let Ok(answer) = result else {
        return;
    };
    let head = &data[..used];
    // The same header alone gives the same answer: nothing past it was needed.
    let (again, used_again) = proxy_header(head);
    assert_eq!(again.ok(), Some(answer), "answer changed without the tail");
    assert_eq!(used_again, used);
    if head.starts_with(b"PROXY ") {
        assert!(used <= 107 && head.ends_with(b"\r\n"), "v1 line {head:?}");
    } else {
        assert_eq!(
            used,
            16 + usize::from(u16::from_be_bytes([head[14], head[15]]))
        );
    }
    let Some(src) = answer else {
        return;
    };
    let dst = match src.ip() {
        IpAddr::V4(_) => SocketAddr::from(([192, 0, 2, 1], 443)),
        IpAddr::V6(_) => SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 443)),
    };
    for encoded in [encode_v1(src, dst), encode_v2(src, dst)] {
        let (back, n) = proxy_header(&encoded);
        assert_eq!(back.ok(), Some(Some(src)), "{encoded:?}");
        assert_eq!(n, encoded.len());
    }
    // A v2 PROXY header over TCP with a bare address block is the one encoding of its
    // addresses: encoding them again gives the same bytes.
    if !head.starts_with(b"PROXY ") && head[12] == 0x21 {
        let body = &head[16..];
        let dst = match (head[13], body.len()) {
            (0x11, 12) => Some(SocketAddr::new(
                IpAddr::from(<[u8; 4]>::try_from(&body[4..8]).unwrap_or_default()),
                u16::from_be_bytes([body[10], body[11]]),
            )),
            (0x21, 36) => Some(SocketAddr::new(
                IpAddr::from(<[u8; 16]>::try_from(&body[16..32]).unwrap_or_default()),
                u16::from_be_bytes([body[34], body[35]]),
            )),
            _ => None,
        };
        if let Some(dst) = dst {
            assert_eq!(encode_v2(src, dst), head);
        }
    }
});
