//! Machine enrollment: one-time tokens, and the EST (RFC 7030) endpoints that turn a token and
//! a PKCS#10 CSR into a client certificate from the enrollment CA and a machine license bound
//! to that certificate's key.
//!
//! # Files
//! `tokens.rs` (making a token: what the admin API and `portcullis enroll token` share),
//! `csr.rs` (the CSR: signature, key type), `certificate.rs` (the certificate the gateway
//! signs), `pkcs7.rs` (the certs-only PKCS#7 EST answers with), `license.rs` (the machine
//! license from a template), `endpoints.rs` (the handlers and `simpleenroll`), `reenroll.rs`
//! (`simplereenroll`), `issued.rs` (signing, licensing and recording what a machine holds),
//! `revoke.rs` (revoking a machine: license, tokens, record).
//! The token and machine store is `crate::state::enrollment`.
//!
//! Tokens, keys and CSRs are never logged: logs name machines, templates and license ids.

pub mod certificate;
pub mod csr;
mod endpoints;
mod issued;
mod license;
pub mod pkcs7;
mod reenroll;
pub mod revoke;
pub mod tokens;

use std::sync::Arc;

pub use crate::config::enrollment::{EnrollmentSettings, KeyType, Template};
pub use crate::state::enrollment::{
    EnrollmentTokens, MachineRecord, Retiring, StoreError, TokenRecord, TokenRefusal,
};
pub use endpoints::{
    CACERTS, LICENSE_HEADER, SIMPLEENROLL, SIMPLEREENROLL, event_of, handle, handles,
};
pub use revoke::{RevokeMachineError, Revoked, revoke_machine};
pub use tokens::{MintError, Minted, mint};

/// The running enrollment: its settings, the open token store, and the keys of revoked
/// machines (refused on every listener and route). Cheap to share.
#[derive(Debug)]
pub struct Enrollment {
    pub settings: EnrollmentSettings,
    pub tokens: Arc<EnrollmentTokens>,
    revoked: arc_swap::ArcSwap<std::collections::HashSet<[u8; 32]>>,
}

impl Enrollment {
    /// Open the token store, or keep `previous`'s when it is the same file (redb allows one
    /// opener, and a reload must not lose the tokens in flight).
    pub fn open(
        settings: EnrollmentSettings,
        previous: Option<&Enrollment>,
        now: std::time::SystemTime,
    ) -> Result<Enrollment, StoreError> {
        let tokens = match previous {
            Some(p) if p.tokens.path() == settings.tokens => Arc::clone(&p.tokens),
            _ => Arc::new(EnrollmentTokens::open(&settings.tokens)?),
        };
        let enrollment = Enrollment {
            settings,
            tokens,
            revoked: arc_swap::ArcSwap::from_pointee(Default::default()),
        };
        enrollment.refresh_revoked(now)?;
        Ok(enrollment)
    }

    /// Whether the certificate key `spki_sha256` belongs to a revoked machine.
    pub fn is_revoked_key(&self, spki_sha256: &[u8; 32]) -> bool {
        self.revoked.load().contains(spki_sha256)
    }

    /// Re-read the revoked keys still in force at `now` (after a revocation).
    pub fn refresh_revoked(&self, now: std::time::SystemTime) -> Result<(), StoreError> {
        let pins = self.tokens.revoked_pins(crate::license::dates::unix(now))?;
        self.revoked.store(Arc::new(pins.into_iter().collect()));
        Ok(())
    }

    /// Apply the machines' scheduled revocations (re-enrollment's overlap) to `book`, which
    /// does not keep them across a rebuild: called whenever the book is new (start, reload).
    pub fn apply_schedules(&self, book: &crate::license::LicenseBook) -> Result<(), StoreError> {
        for (_, record) in self.tokens.machines()? {
            if let Some(r) = record.retiring {
                book.revoke_from(&r.license_id, r.revoke_at);
            }
        }
        Ok(())
    }
}
