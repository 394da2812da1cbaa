//! Pins: SPKI hashes (`sha256/<base64>`) and certificate fingerprints (SHA-256 hex).

use std::collections::HashSet;

use base64::Engine as _;

use super::{ClientIdentity, b64};

/// Why a configured pin could not be read. Completes "\"<pin>\" ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinParseError {
    #[error(
        "is not an SPKI pin: write \"sha256/\" followed by the base64 SHA-256 of the public key (`portcullis pin CERT.pem` prints it)"
    )]
    NotSpkiPin,
    #[error(
        "is not a SHA-256 certificate fingerprint: write 64 hex digits, colons allowed (`portcullis pin CERT.pem` prints it)"
    )]
    NotFingerprint,
}

/// `sha256/<base64>` -> the 32 hash bytes.
pub fn parse_spki_pin(s: &str) -> Result<[u8; 32], PinParseError> {
    let b = s
        .trim()
        .strip_prefix("sha256/")
        .ok_or(PinParseError::NotSpkiPin)?;
    let bytes = b64().decode(b).map_err(|_| PinParseError::NotSpkiPin)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| PinParseError::NotSpkiPin)
}

/// 64 hex digits, optionally colon-separated, any case -> the 32 hash bytes.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], PinParseError> {
    let hex: Vec<u8> = s.trim().bytes().filter(|&b| b != b':').collect();
    if hex.len() != 64 {
        return Err(PinParseError::NotFingerprint);
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let txt = std::str::from_utf8(pair).map_err(|_| PinParseError::NotFingerprint)?;
        out[i] = u8::from_str_radix(txt, 16).map_err(|_| PinParseError::NotFingerprint)?;
    }
    Ok(out)
}

pub fn format_spki_pin(h: &[u8; 32]) -> String {
    format!("sha256/{}", b64().encode(h))
}

pub fn format_fingerprint(h: &[u8; 32]) -> String {
    h.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A set of accepted keys and certificates. A client matches if its SPKI hash or its
/// certificate fingerprint is in the set. An empty set pins nothing (everyone matches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinSet {
    spki: HashSet<[u8; 32]>,
    certs: HashSet<[u8; 32]>,
}

impl PinSet {
    pub fn new(
        spki: impl IntoIterator<Item = [u8; 32]>,
        certs: impl IntoIterator<Item = [u8; 32]>,
    ) -> Self {
        PinSet {
            spki: spki.into_iter().collect(),
            certs: certs.into_iter().collect(),
        }
    }

    /// Whether this set restricts anything.
    pub fn is_empty(&self) -> bool {
        self.spki.is_empty() && self.certs.is_empty()
    }

    /// Whether `identity` is pinned. With an empty set, everyone (and no one) passes.
    pub fn admits(&self, identity: Option<&ClientIdentity>) -> bool {
        if self.is_empty() {
            return true;
        }
        identity.is_some_and(|id| {
            self.spki.contains(&id.spki_sha256) || self.certs.contains(&id.cert_sha256)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_round_trip_and_bad_pins_are_refused() {
        let h = [7u8; 32];
        assert_eq!(parse_spki_pin(&format_spki_pin(&h)), Ok(h));
        assert_eq!(parse_fingerprint(&format_fingerprint(&h)), Ok(h));
        assert_eq!(
            parse_fingerprint(&format_fingerprint(&h).replace(':', "").to_lowercase()),
            Ok(h)
        );
        for bad in ["", "sha256/", "sha1/AAAA", "sha256/!!!", "sha256/AAAA"] {
            assert_eq!(parse_spki_pin(bad), Err(PinParseError::NotSpkiPin), "{bad}");
        }
        for bad in ["", "AB:CD", &"G".repeat(64)] {
            assert_eq!(
                parse_fingerprint(bad),
                Err(PinParseError::NotFingerprint),
                "{bad}"
            );
        }
    }
}
