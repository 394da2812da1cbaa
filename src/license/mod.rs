//! Machine licenses: only licensed machines may call licensed routes.
//!
//! A license is a statement signed with the operator's licensing key (Ed25519): "machine M,
//! known by these certificate pins and/or these addresses, may use these routes from
//! `not_before` until `expires_at`". It travels as one line of text,
//! `PCL1.<payload>.<signature>` ([`format`](mod@format)), is issued and inspected with
//! `portcullis license ...` (`cli/license.rs`), and is activated or revoked at run time
//! through the admin listener (`state::licenses::LicenseService`, which persists it) and
//! published to the in-memory [`LicenseBook`] the request path reads.
//!
//! # The check, per request to a route with `license = "required"`
//!
//! After identity and ip_filter, [`LicenseBook::check`]:
//! 1. finds candidates by the client certificate's SPKI hash and by the client address
//!    (hash lookups, never a scan);
//! 2. keeps those whose binding holds (`pin`, `ip`, or `pin_and_ip` on the same license)
//!    and whose route list, if any, names the route;
//! 3. grants if one is not revoked and within its validity, or within the grace period after
//!    expiry (`in_grace`: the response carries a warning);
//! 4. otherwise denies with the most telling reason: revoked, expired, not yet valid, binding
//!    mismatch, missing.
//!
//! # Activation refuses, saying which
//!
//! Tampered (bad signature), truncated, malformed, re-encoded, unknown signing key, wrong
//! format version ([`LicenseError`]), already expired, or a duplicate id
//! ([`ActivationError`]). A refused activation changes nothing.

pub(crate) mod book;
pub(crate) mod config;
pub(crate) mod dates;
pub(crate) mod format;
mod index;
pub mod keys;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;
use std::time::SystemTime;

pub use crate::denial::LicenseDenial;
pub use book::LicenseBook;
pub use config::{LicenseSection, LicenseSettings, RouteLicense};
pub use format::{License, LicenseError, Match, Payload};
pub use keys::{KeyError, PublicKey, SigningKey, TrustedKeys, Verified};

/// What the license stage hands on: which license let the request through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseGrant {
    pub license_id: Arc<str>,
    pub machine_id: Arc<str>,
    /// The last second the license is valid.
    pub expires_at: SystemTime,
    /// Expired, but within the grace period: pass with a warning header and a metric.
    pub in_grace: bool,
    /// The scopes the license names (empty: none).
    pub scopes: Arc<[Box<str>]>,
    /// The plan the license carries: requests per calendar window, across routes.
    pub quota: Option<crate::limits::Quota>,
}

/// A license's state at a given time, as listed by the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LicenseState {
    Active,
    /// Expired, within the grace period: still granted.
    InGrace,
    Expired,
    NotYetValid,
    Revoked,
    /// Stored, but its signing key is no longer trusted: never granted.
    Untrusted,
}

impl LicenseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseState::Active => "active",
            LicenseState::InGrace => "in_grace",
            LicenseState::Expired => "expired",
            LicenseState::NotYetValid => "not_yet_valid",
            LicenseState::Revoked => "revoked",
            LicenseState::Untrusted => "untrusted",
        }
    }
}

/// One license as listed by `GET /licenses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseSummary {
    pub id: String,
    pub customer: String,
    pub machine_id: String,
    pub key_id: String,
    pub not_before: SystemTime,
    pub expires_at: SystemTime,
    pub state: LicenseState,
    pub quota: Option<crate::limits::Quota>,
}

impl LicenseSummary {
    /// `{"id","customer","machine_id","key_id","not_before","expires_at","state"}` (and
    /// `"quota"` when the license carries one), times in RFC 3339 UTC.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "customer": self.customer,
            "machine_id": self.machine_id,
            "key_id": self.key_id,
            "not_before": dates::rfc3339(dates::unix(self.not_before)),
            "expires_at": dates::rfc3339(dates::unix(self.expires_at)),
            "state": self.state.as_str(),
        });
        if let (Some(q), Some(o)) = (self.quota, v.as_object_mut()) {
            o.insert("quota".into(), q.to_text().into());
        }
        v
    }
}

/// License gauges for metrics (no per-license labels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LicenseCounts {
    /// Valid now (not revoked, not in grace).
    pub active: usize,
    /// Of `active`, those expiring within 7 days.
    pub expiring_within_7_days: usize,
    /// Expired, within the grace period.
    pub in_grace: usize,
}

// === The gateway's license state ===

/// The license stage: on a route with `license = "required"`, a license must grant for
/// this client (certificate and/or address) at `now`. `None`: the route needs none.
pub fn check(
    book: Option<&LicenseBook>,
    route: &crate::routing::Route,
    identity: Option<&crate::identity::ClientIdentity>,
    client_ip: std::net::IpAddr,
    now: SystemTime,
) -> Result<Option<LicenseGrant>, crate::denial::Denial> {
    match route.license {
        RouteLicense::NotRequired => Ok(None),
        RouteLicense::Required => {
            let Some(book) = book else {
                return Err(crate::denial::Denial::License(LicenseDenial::Missing));
            };
            book.check(identity, client_ip, &route.name, now)
                .map(Some)
                .map_err(crate::denial::Denial::License)
        }
    }
}
