//! Host normalisation (src/routing/host.rs). Beyond "no panic": the canonical name is lower
//! case, has no port, no trailing dot and no empty label, is its own canonical form
//! (idempotent), and `unchanged` is true only when it spells the input exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::host;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((name, port, unchanged)) = host(raw) else {
        return;
    };
    assert!(!name.is_empty(), "{raw:?}");
    assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
    if let Some(p) = &port {
        assert!(p.bytes().all(|b| b.is_ascii_digit()), "port {p:?}");
    }
    if name.starts_with('[') {
        let inner = &name[1..name.len() - 1];
        assert!(inner.parse::<std::net::Ipv6Addr>().is_ok(), "{name:?}");
    } else {
        assert!(!name.ends_with('.') && !name.starts_with('.') && !name.contains(".."));
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
            "{name:?}"
        );
        assert!(name.len() <= 253);
    }
    assert_eq!(
        host(&name),
        Ok((name.clone(), None, true)),
        "not idempotent"
    );
    if unchanged {
        let spelled = match &port {
            Some(p) => format!("{name}:{p}"),
            None => name.clone(),
        };
        assert_eq!(spelled, raw, "unchanged, yet spelt otherwise");
    }
});
