//! The license format (src/license/format.rs): `PCL1.<payload>.<signature>`. Beyond "no
//! panic": a text that opens and whose payload passes the checks is the one canonical
//! encoding of that payload and signature (it encodes back to the same text), its bindings
//! hold what the payload says, and a trusted key that did not sign it refuses it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::{license_text, license_unsigned};
use portcullis::license::{LicenseError, PublicKey, TrustedKeys};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // An arbitrary public key: the fuzzer's signatures are never its.
    let keys = TrustedKeys::new([PublicKey::from_raw([7; 32])]);
    let verified = keys.verify(text);
    assert!(
        verified.is_err(),
        "a license verified under a key nobody holds"
    );
    let Ok((signed, signature, license)) = license_unsigned(text) else {
        return;
    };
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    assert_eq!(license_text(&license, &signature).as_deref(), Ok(trimmed));
    assert!(trimmed.starts_with(&format!("{signed}.")));
    assert_eq!(license.pins.len(), license.payload.pins.len());
    assert_eq!(license.nets.len(), license.payload.ips.len());
    assert!(license.payload.not_before <= license.payload.expires_at);
    // The envelope and payload passed: the only refusals left are the key and signature.
    assert!(
        matches!(
            verified,
            Err(LicenseError::UnknownKey { .. } | LicenseError::Tampered)
        ),
        "{verified:?}"
    );
});
