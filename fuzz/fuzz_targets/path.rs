//! Path percent-decoding and normalisation (src/routing/path.rs). Beyond "no panic": a path
//! that passes has no dot segment (also none that an upstream could make by decoding,
//! dropping `;` parameters, or both), no `//`, no `\`, no control character, every escape left
//! is upper-case and of a byte that must stay escaped, and it is its own canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::routing::path::canonical;

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = canonical(raw) else {
        return;
    };
    let p: &str = &c.path;
    if p == "*" {
        return;
    }
    assert!(p.starts_with('/'), "{p:?}");
    assert!(!p.contains("//") && !p.contains('\\'), "{p:?}");
    assert!(!p.bytes().any(|b| b < 0x20 || b == 0x7f), "{p:?}");
    let b = p.as_bytes();
    for (i, _) in p.match_indices('%') {
        let hex = b.get(i + 1..i + 3).unwrap_or_default();
        assert!(
            hex.len() == 2
                && hex
                    .iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
            "escape at {i} in {p:?}"
        );
        let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("00"), 16).unwrap_or(0);
        assert!(
            !unreserved(v) && v != b'/' && v != b'\\' && v >= 0x20 && v != 0x7f,
            "{p:?}"
        );
    }
    for seg in p.split('/') {
        // What a servlet container routes on: the segment before any `;` (or `%3B`).
        let name = seg.split(';').next().unwrap_or("");
        let name = name.split("%3B").next().unwrap_or("");
        assert!(
            name != "." && name != "..",
            "dot segment in {p:?} from {raw:?}"
        );
    }
    assert_eq!(c.has_upper, p.bytes().any(|b| b.is_ascii_uppercase()));
    let again = canonical(p).map(|c| c.path.into_owned());
    assert_eq!(again.as_deref(), Ok(p), "not idempotent");
    let key = c.match_key();
    assert!(!key.contains(';') && !key.contains("%3B"), "{key:?}");
});
