//! Revoking an enrolled machine: its license (refused at once on every licensed route), its
//! certificate's key (refused on every listener and route until the certificate could have
//! expired), its unspent tokens, and its record (so it cannot re-enroll). Shared by the
//! admin API (`DELETE /enrollment/machines/{machine}`) and `portcullis enroll revoke`.
//! Its certificates are marked revoked in the store: the caller refreshes the running
//! enrollment (`Enrollment::refresh_revoked`), which refuses them in the handshake of every
//! listener asking for client certificates and lists them in a new CRL.

use std::time::SystemTime;

use super::{EnrollmentTokens, StoreError};
use crate::state::enrollment_certs::{Retire, Which};
use crate::state::licenses::{LicenseService, RevokeError};

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub machine: String,
    /// The license revoked, if the machine had enrolled.
    pub license: Option<String>,
    pub tokens: usize,
}

impl Revoked {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"machine": self.machine, "license": self.license, "tokens_revoked": self.tokens})
    }

    /// Nothing was known of this machine.
    pub fn is_unknown(&self) -> bool {
        self.license.is_none() && self.tokens == 0
    }
}

/// Why a revocation failed part-way (what was done before is kept).
#[derive(Debug, thiserror::Error)]
pub enum RevokeMachineError {
    #[error(transparent)]
    Tokens(#[from] StoreError),
    #[error(transparent)]
    License(#[from] RevokeError),
}

/// Revoke `machine` at `now`: its license first (the part that admits it), then its tokens
/// and its record.
pub fn revoke_machine(
    tokens: &EnrollmentTokens,
    licenses: &LicenseService,
    machine: &str,
    now: SystemTime,
) -> Result<Revoked, RevokeMachineError> {
    let at = crate::license::dates::unix(now);
    let record = tokens.machine(machine)?;
    let held = record.iter().flat_map(|r| {
        std::iter::once(&r.license_id).chain(r.retiring.as_ref().map(|t| &t.license_id))
    });
    for id in held {
        match licenses.revoke(id, now) {
            // Revoked already, or removed from the store by hand: nothing admits it.
            Ok(_) | Err(RevokeError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Its current key and one still in its overlap, until the longest certificate the
    // gateway can have signed for them has expired.
    let until = at.saturating_add(crate::config::enrollment::MAX_CERT_LIFETIME.as_secs());
    let pins = record
        .iter()
        .flat_map(|r| std::iter::once(&r.pin).chain(r.retiring.as_ref().map(|t| &t.pin)));
    for pin in pins.filter_map(|p| crate::identity::parse_spki_pin(p).ok()) {
        tokens.revoke_pin(&pin, until)?;
    }
    let every = Which::Machine {
        machine: machine.to_owned(),
        keep: None,
    };
    tokens.retire_certs(&every, Retire::Revoked { at })?;
    let revoked_tokens = tokens.revoke_machine(machine, at)?;
    tokens.remove_machine(machine)?;
    let done = Revoked {
        machine: machine.to_owned(),
        license: record.map(|r| r.license_id),
        tokens: revoked_tokens,
    };
    tracing::info!(machine, license = ?done.license, tokens = done.tokens, "enrolled machine revoked");
    Ok(done)
}
