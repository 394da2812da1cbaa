//! The vault's file and record format (src/vault): any bytes as a vault file, opened under a
//! fixed master key. Beyond "no panic": a vault that opens opens every record (a tampered
//! record refuses the whole file), and opening is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::vault;
use portcullis::vault::MasterKey;

/// The throwaway master key the seeds are sealed under (seeds.rs): 32 bytes of 0x42.
const MASTER: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(master) = MasterKey::from_base64(MASTER) else {
        return;
    };
    let first = vault(text, &master);
    let second = vault(text, &master);
    assert_eq!(first.is_ok(), second.is_ok());
    if let (Ok(a), Ok(b)) = (first, second) {
        assert_eq!(a, b);
        for (_, kind, _) in &a {
            assert!(["api_key", "basic", "bearer", "oauth2"].contains(&kind.as_str()));
        }
    }
});
