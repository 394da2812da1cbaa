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
//! `revoke.rs` (revoking a machine: license, tokens, record), `crl.rs` (the CRL and the
//! revoked keys the listeners refuse), `audit.rs` (the audit entry of each enrollment).
//! The token and machine store is `crate::state::enrollment`.
//!
//! Tokens, keys and CSRs are never logged: logs name machines, templates and license ids.

mod audit;
pub mod certificate;
pub mod crl;
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
pub use audit::AuditFailed;
pub use endpoints::{
    CACERTS, LICENSE_HEADER, SIMPLEENROLL, SIMPLEREENROLL, event_of, handle, handles,
};
pub use revoke::{RevokeMachineError, Revoked, revoke_machine};
pub use tokens::{MintError, Minted, mint};

/// The running enrollment: its settings (with the revoked keys the listeners refuse), the
/// open token store, and the CRL last published. Cheap to share.
#[derive(Debug)]
pub struct Enrollment {
    pub settings: EnrollmentSettings,
    pub tokens: Arc<EnrollmentTokens>,
    crl: arc_swap::ArcSwapOption<crl::Crl>,
}

impl Enrollment {
    /// Open the token store, or keep `previous`'s when it is the same file (redb allows one
    /// opener, and a reload must not lose the tokens in flight); fill the revoked keys and
    /// publish a CRL.
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
            crl: arc_swap::ArcSwapOption::empty(),
        };
        enrollment.refresh_revoked(now)?;
        Ok(enrollment)
    }

    /// Whether the certificate key `spki_sha256` is refused at `now` (a revoked machine's,
    /// or one retired by re-enrollment after its overlap).
    pub fn is_revoked_key(&self, spki_sha256: &[u8; 32], now: std::time::SystemTime) -> bool {
        self.settings
            .revoked
            .is_revoked(spki_sha256, crate::license::dates::unix(now))
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
