//! Machine licenses as the gateway keeps them: activated licenses persisted in a redb file
//! ([`store`]), the service that activates, revokes and re-reads them ([`service`]), and
//! publishes them to the in-memory [`crate::license::LicenseBook`] the request path reads.

mod service;
mod store;

#[cfg(test)]
mod tests;

pub use service::{ActivationError, LicenseService, OpenReport, RevokeError};
pub use store::{EmbeddedLicenses, LicenseStore, StoreError};

use crate::license::LicenseSettings;

/// The license service the gateway runs, with the store file it has open (a reload that
/// keeps the file reconfigures in place: redb allows one opener per file).
pub struct Licensing {
    pub store: std::path::PathBuf,
    pub service: LicenseService,
}

impl Licensing {
    /// Open the store of `settings`; warnings (licenses whose key is no longer trusted,
    /// entries that no longer verify) are logged.
    pub fn open(settings: &LicenseSettings) -> Result<Self, StoreError> {
        let (service, report) = LicenseService::open(
            &settings.store,
            settings.trusted_keys.clone(),
            settings.grace,
        )?;
        for w in report.warnings() {
            tracing::warn!("licenses: {w}");
        }
        Ok(Licensing {
            store: settings.store.clone(),
            service,
        })
    }
}
