//! The license text: `PCL1.<payload>.<signature>`, one line, copy-pasteable.
//!
//! - `PCL1` names the format version; a later format gets a new prefix (`PCL2`), so an old
//!   gateway refuses it by name instead of misreading it.
//! - `<payload>` is base64url (no padding) of the canonical JSON of [`Payload`]: fields in
//!   declaration order, no whitespace, empty lists omitted, times in Unix seconds.
//! - `<signature>` is base64url (no padding) of the 64-byte Ed25519 signature over the ASCII
//!   bytes `PCL1.<payload>` (as in JWS), so the version and the exact encoding are signed.
//!
//! There is exactly one text for a given payload and signature: padding, the standard base64
//! alphabet, stray bits in the last character, whitespace or key order in the JSON are all
//! refused as re-encodings, so a license id always names one text.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::dates::MAX_UNIX;
use crate::identity::{format_spki_pin, parse_spki_pin};

/// The version prefix this gateway reads and writes.
pub const VERSION: &str = "PCL1";
/// Longest license text accepted; a real one is well under 2 KiB.
pub const MAX_TEXT_LEN: usize = 16 * 1024;
/// Most pins, addresses, routes or scopes in one license.
pub const MAX_LIST: usize = 64;

/// Why a license text is refused. Each variant is one category an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    /// Not a license at all, or damaged in a way that is not truncation or re-encoding.
    #[error("the license is malformed: {0}")]
    Malformed(String),
    /// Part of the text is missing (the end was cut off).
    #[error("the license is truncated: {0}; copy the whole line, from \"PCL1.\" to its end")]
    Truncated(String),
    /// The same content, encoded differently from what was signed.
    #[error(
        "the license was re-encoded ({0}); use the exact text `portcullis license issue` printed"
    )]
    ReEncoded(String),
    /// A `PCLn.` prefix other than `PCL1.`.
    #[error("the license has format version \"{found}\", but this gateway reads only \"PCL1\"")]
    UnsupportedVersion { found: String },
    /// Signed by a key that is not among the trusted issuer keys.
    #[error(
        "the license was signed by key {kid}, which is not one of the trusted issuer keys ([licenses] trusted_keys)"
    )]
    UnknownKey { kid: String },
    /// The signature does not verify: the contents changed after signing.
    #[error(
        "the license signature does not match its contents: it was altered (tampered with or corrupted) after signing"
    )]
    Tampered,
    /// Correctly signed, but the statement itself is unusable (say, no bindings).
    #[error("the license is signed but unusable: {0}")]
    Invalid(String),
}

/// How a license binds to a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// The client certificate's SPKI hash must be one of `pins`.
    Pin,
    /// The client address must be in one of `ips`.
    Ip,
    /// Both, on the same license.
    PinAndIp,
}

impl Match {
    pub fn as_str(self) -> &'static str {
        match self {
            Match::Pin => "pin",
            Match::Ip => "ip",
            Match::PinAndIp => "pin_and_ip",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Match::Pin, Match::Ip, Match::PinAndIp]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
    pub fn needs_pin(self) -> bool {
        matches!(self, Match::Pin | Match::PinAndIp)
    }
    pub fn needs_ip(self) -> bool {
        matches!(self, Match::Ip | Match::PinAndIp)
    }
}

/// The signed statement. Field order is the canonical JSON order: do not reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Unique license id: 1 to 64 of `A-Z a-z 0-9 . _ -` (it appears in admin URLs).
    pub id: String,
    /// Key id of the signing key (see [`super::keys::PublicKey::kid`]).
    pub kid: String,
    pub customer: String,
    pub machine_id: String,
    #[serde(rename = "match")]
    pub binding: Match,
    /// SPKI pins, `sha256/<base64>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<String>,
    /// Networks in CIDR form with host bits clear (`10.1.2.0/24`, `10.1.2.3/32`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Route names this license covers; empty: every licensed route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Scopes granted to the machine, carried for later stages; empty: none named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub issued_at: u64,
    /// First second the license is valid (Unix seconds, inclusive).
    pub not_before: u64,
    /// Last second the license is valid (Unix seconds, inclusive).
    pub expires_at: u64,
    /// The machine's plan: requests per calendar window, `100000/day` (canonical spelling,
    /// window hour, day or month). Absent in licenses issued before quotas, which still
    /// verify; a gateway that predates the field refuses a license carrying it (it could not
    /// enforce it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

/// A payload that passed the semantic checks, with its bindings parsed. Whether its signature
/// was checked is a separate matter (see [`super::keys::TrustedKeys::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub payload: Payload,
    /// SPKI SHA-256 hashes, from `payload.pins`.
    pub pins: Vec<[u8; 32]>,
    /// Networks from `payload.ips`, IPv4-mapped IPv6 networks turned into IPv4.
    pub nets: Vec<IpNet>,
    /// From `payload.quota`.
    pub quota: Option<crate::limits::Quota>,
}

/// The three parts of a license text, decoded but not interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The whole license text, trimmed: what is stored and compared.
    pub text: &'a str,
    /// `PCL1.<payload>`: the signed bytes.
    pub signed: &'a str,
    pub payload: Vec<u8>,
    pub signature: [u8; 64],
}

// === encoding ===

/// The `PCL1.<payload>` part for `payload`: what the issuer signs.
pub fn signed_part(payload: &Payload) -> Result<String, LicenseError> {
    let json = serde_json::to_vec(payload)
        .map_err(|e| LicenseError::Malformed(format!("the payload cannot be encoded: {e}")))?;
    Ok(format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(json)))
}

/// The full license text from its signed part and signature.
pub fn join(signed: &str, signature: &[u8; 64]) -> String {
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

// === decoding ===

/// Split and base64url-decode a license text. Surrounding whitespace (a pasted newline) is
/// ignored; anything else that is not the one canonical encoding is refused.
pub fn open_envelope(text: &str) -> Result<Envelope<'_>, LicenseError> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if text.is_empty() {
        return Err(LicenseError::Truncated("it is empty".into()));
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(LicenseError::Malformed(format!(
            "it is longer than {MAX_TEXT_LEN} bytes"
        )));
    }
    let mut parts = text.split('.');
    let version = parts.next().unwrap_or_default();
    if version != VERSION {
        return Err(wrong_prefix(text, version));
    }
    let Some(payload_b64) = parts.next() else {
        return Err(LicenseError::Truncated("the payload is missing".into()));
    };
    let Some(signature_b64) = parts.next() else {
        return Err(LicenseError::Truncated("the signature is missing".into()));
    };
    if parts.next().is_some() {
        return Err(LicenseError::Malformed(
            "it has data after the signature".into(),
        ));
    }
    let payload = base64url(payload_b64, "payload", None)?;
    let signature = base64url(signature_b64, "signature", Some(SIGNATURE_CHARS))?;
    // 86 characters always decode to 64 bytes; checked all the same.
    let signature = <[u8; 64]>::try_from(signature.as_slice())
        .map_err(|_| LicenseError::Malformed("the signature is not 64 bytes".into()))?;
    Ok(Envelope {
        text,
        signed: &text[..VERSION.len() + 1 + payload_b64.len()],
        payload,
        signature,
    })
}

/// The error for a text that does not start with `PCL1.`.
fn wrong_prefix(text: &str, version: &str) -> LicenseError {
    let looks_versioned = version.len() > 3
        && version.len() <= 8
        && version.starts_with("PCL")
        && version[3..].bytes().all(|b| b.is_ascii_digit());
    if looks_versioned {
        LicenseError::UnsupportedVersion {
            found: version.to_owned(),
        }
    } else if text == version && VERSION.starts_with(version) {
        LicenseError::Truncated("only the start of the prefix is there".into())
    } else {
        LicenseError::Malformed("it does not start with \"PCL1.\": not a portcullis license".into())
    }
}

/// Length of a 64-byte signature in unpadded base64.
const SIGNATURE_CHARS: usize = 86;

/// Strict base64url: no padding, URL-safe alphabet, no stray bits in the last character.
/// With `expected_len`, a shorter part is truncated and a longer one has trailing data.
fn base64url(s: &str, what: &str, expected_len: Option<usize>) -> Result<Vec<u8>, LicenseError> {
    if s.is_empty() {
        return Err(LicenseError::Truncated(format!("the {what} is empty")));
    }
    if s.contains('=') {
        return Err(LicenseError::ReEncoded(format!(
            "base64 padding added to the {what}"
        )));
    }
    if s.contains(['+', '/']) {
        return Err(LicenseError::ReEncoded(format!(
            "the {what} uses the standard base64 alphabet instead of base64url"
        )));
    }
    if let Some(at) = s
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(LicenseError::Malformed(format!(
            "the {what} has a character that is not base64url at offset {at}"
        )));
    }
    match expected_len {
        Some(n) if s.len() < n => {
            return Err(LicenseError::Truncated(format!(
                "the {what} is {} characters instead of {n}",
                s.len()
            )));
        }
        Some(n) if s.len() > n => {
            return Err(LicenseError::Malformed(format!(
                "it has data after the {what}"
            )));
        }
        Some(_) | None => {}
    }
    URL_SAFE_NO_PAD.decode(s).map_err(|e| match e {
        base64::DecodeError::InvalidLength(_) => {
            LicenseError::Truncated(format!("the {what} ends in the middle of a byte"))
        }
        base64::DecodeError::InvalidLastSymbol(..) => LicenseError::ReEncoded(format!(
            "the last character of the {what} carries stray bits"
        )),
        base64::DecodeError::InvalidByte(..) | base64::DecodeError::InvalidPadding => {
            LicenseError::Malformed(format!("the {what} is not base64url"))
        }
    })
}

/// Parse the payload JSON and insist it is the canonical encoding of what it says.
pub fn parse_payload(json: &[u8]) -> Result<Payload, LicenseError> {
    let payload: Payload = serde_json::from_slice(json)
        .map_err(|e| LicenseError::Malformed(format!("the payload is not a license ({e})")))?;
    let again = serde_json::to_vec(&payload)
        .map_err(|e| LicenseError::Malformed(format!("the payload cannot be encoded: {e}")))?;
    if again != json {
        return Err(LicenseError::ReEncoded(
            "the payload JSON is not in its canonical form".into(),
        ));
    }
    Ok(payload)
}

// === meaning ===

impl License {
    /// Check what the payload says and parse its bindings. Errors are [`LicenseError::Invalid`].
    pub fn from_payload(payload: Payload) -> Result<License, LicenseError> {
        let bad = |m: String| Err(LicenseError::Invalid(m));
        if !is_id(&payload.id) {
            return bad("the id must be 1 to 64 of A-Z a-z 0-9 . _ -".into());
        }
        if payload.kid.len() != 16 || !payload.kid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("the key id is not 16 hex digits".into());
        }
        for (what, v) in [
            ("customer", &payload.customer),
            ("machine id", &payload.machine_id),
        ] {
            if !is_label(v, 256) {
                return bad(format!(
                    "the {what} must be 1 to 256 characters without control characters"
                ));
            }
        }
        for (what, list) in [("routes", &payload.routes), ("scopes", &payload.scopes)] {
            if list.len() > MAX_LIST || list.iter().any(|s| !is_label(s, 128)) {
                return bad(format!(
                    "{what}: at most {MAX_LIST}, each 1 to 128 characters"
                ));
            }
            if has_duplicates(list) {
                return bad(format!("{what} lists a name twice"));
            }
        }
        let b = payload.binding;
        if b.needs_pin() == payload.pins.is_empty() {
            return bad(format!(
                "match = {} {} pins",
                b.as_str(),
                if b.needs_pin() { "needs" } else { "takes no" }
            ));
        }
        if b.needs_ip() == payload.ips.is_empty() {
            return bad(format!(
                "match = {} {} addresses",
                b.as_str(),
                if b.needs_ip() { "needs" } else { "takes no" }
            ));
        }
        if payload.pins.len() > MAX_LIST || payload.ips.len() > MAX_LIST {
            return bad(format!("at most {MAX_LIST} pins and {MAX_LIST} addresses"));
        }
        if has_duplicates(&payload.pins) || has_duplicates(&payload.ips) {
            return bad("a pin or address is listed twice".into());
        }
        let mut pins = Vec::with_capacity(payload.pins.len());
        for p in &payload.pins {
            match parse_spki_pin(p) {
                Ok(h) if format_spki_pin(&h) == *p => pins.push(h),
                Ok(_) | Err(_) => return bad(format!("\"{p}\" is not an SPKI pin")),
            }
        }
        let mut nets = Vec::with_capacity(payload.ips.len());
        for s in &payload.ips {
            match s.parse::<IpNet>() {
                Ok(n) if n.to_string() == *s && n.trunc() == n => nets.push(normalize_net(n)),
                Ok(_) | Err(_) => {
                    return bad(format!(
                        "\"{s}\" is not a network in CIDR form with host bits clear"
                    ));
                }
            }
        }
        let times = [payload.issued_at, payload.not_before, payload.expires_at];
        if times.iter().any(|&t| t > MAX_UNIX) {
            return bad("a time is after the year 9999".into());
        }
        if payload.not_before > payload.expires_at {
            return bad("not_before is after expires_at".into());
        }
        let quota = match payload.quota.as_deref() {
            None => None,
            Some(s) => match crate::limits::Quota::parse(s) {
                Ok(q) if q.to_text() == s => Some(q),
                Ok(q) => {
                    return bad(format!(
                        "the quota \"{s}\" must be written \"{}\"",
                        q.to_text()
                    ));
                }
                Err(why) => return bad(format!("the quota \"{s}\" {why}")),
            },
        };
        Ok(License {
            payload,
            pins,
            nets,
            quota,
        })
    }
}

/// Whether `s` can be a license id.
pub fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_label(s: &str, max_chars: usize) -> bool {
    !s.is_empty() && s.chars().count() <= max_chars && !s.chars().any(char::is_control)
}

fn has_duplicates(list: &[String]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    !list.iter().all(|s| seen.insert(s.as_str()))
}

/// `::ffff:a.b.c.d` as `a.b.c.d`: a dual-stack socket reports IPv4 clients this way.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// `::ffff:10.0.0.0/104` as `10.0.0.0/8`, so one index serves both spellings.
pub fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, n.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        IpNet::V4(_) | IpNet::V6(_) => net,
    }
}
