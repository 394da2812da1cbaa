//! Unit tests of the license module. Keys are generated per test; time is always a
//! parameter (`at(..)`), nothing sleeps.

mod book;
mod format;

pub(crate) use std::net::IpAddr;
pub(crate) use std::time::{Duration, SystemTime};

pub(crate) use super::format::{Match, Payload};
pub(crate) use super::keys::{SigningKey, TrustedKeys, Verified};
pub(crate) use crate::identity::{ClientIdentity, format_spki_pin};

/// A fixed "now" (2027-01-15T08:00:00Z) and the default validity around it.
pub(crate) const NOW: u64 = 1_800_000_000;
pub(crate) const NOT_BEFORE: u64 = NOW - 86_400;
pub(crate) const EXPIRES: u64 = NOW + 30 * 86_400;

pub(crate) fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

pub(crate) fn key() -> SigningKey {
    SigningKey::generate().expect("key")
}

pub(crate) fn trust(keys: &[&SigningKey]) -> TrustedKeys {
    TrustedKeys::new(keys.iter().map(|k| k.public_key().clone()))
}

/// The SPKI hash of machine `n`.
pub(crate) fn spki(n: u8) -> [u8; 32] {
    [n; 32]
}

pub(crate) fn pin(n: u8) -> String {
    format_spki_pin(&spki(n))
}

/// A client that presented machine `n`'s certificate.
pub(crate) fn identity(n: u8) -> ClientIdentity {
    ClientIdentity {
        spki_sha256: spki(n),
        cert_sha256: [0; 32],
        subject: format!("CN=machine-{n}"),
        common_name: None,
        organization: None,
        sans: Vec::new(),
        serial: "01".into(),
        not_before: at(0),
        not_after: at(EXPIRES * 2),
    }
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A pin-bound license for machine 1, valid around `NOW`.
pub(crate) fn payload(id: &str) -> Payload {
    Payload {
        id: id.into(),
        kid: String::new(),
        customer: "Acme".into(),
        machine_id: "machine-1".into(),
        binding: Match::Pin,
        pins: vec![pin(1)],
        ips: Vec::new(),
        routes: Vec::new(),
        scopes: Vec::new(),
        issued_at: NOT_BEFORE,
        not_before: NOT_BEFORE,
        expires_at: EXPIRES,
        quota: None,
    }
}

pub(crate) fn issue(key: &SigningKey, p: &Payload) -> String {
    key.issue(p).expect("issue")
}

pub(crate) fn verified(key: &SigningKey, p: &Payload) -> Verified {
    trust(&[key]).verify(&issue(key, p)).expect("verify")
}
