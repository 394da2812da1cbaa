//! The token endpoint's form decoding (src/issuer/request.rs). Beyond "no panic": decoding
//! never grows a component, and what it decodes encodes back to a body that decodes to the
//! same pairs (print/parse round trip, with every byte escaped the strictest way).
#![no_main]

use std::fmt::Write;

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::form;

fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"-._*".contains(&b) => out.push(char::from(b)),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(pairs) = form(data) else {
        return;
    };
    let decoded: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(decoded <= data.len());
    let mut body = String::new();
    for (k, v) in &pairs {
        if !body.is_empty() {
            body.push('&');
        }
        encode(k, &mut body);
        body.push('=');
        encode(v, &mut body);
    }
    assert_eq!(form(body.as_bytes()).as_ref(), Some(&pairs), "{body:?}");
});
