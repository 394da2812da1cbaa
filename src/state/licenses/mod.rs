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
/// keeps the file reconfigures in place: redb allows one opener per file), and the quota
/// counts kept in the same file.
pub struct Licensing {
    pub store: std::path::PathBuf,
    pub service: LicenseService,
    pub quotas: std::sync::Arc<crate::state::quotas::EmbeddedQuotas>,
}

impl Licensing {
    /// Open the store of `settings`; warnings (licenses whose key is no longer trusted,
    /// entries that no longer verify) are logged. `max_keys` bounds the quota counts held in
    /// memory; `now` (Unix seconds) decides which stored counts are still current.
    pub fn open(settings: &LicenseSettings, max_keys: usize, now: u64) -> Result<Self, StoreError> {
        let path = &settings.store;
        let db = std::sync::Arc::new(EmbeddedLicenses::open_db(path)?);
        let store = EmbeddedLicenses::in_db(std::sync::Arc::clone(&db), path)?;
        let quotas =
            crate::state::quotas::EmbeddedQuotas::in_db(db, path, max_keys, now).map_err(|e| {
                match e {
                    crate::state::quotas::QuotaStoreError::Open { path, source }
                    | crate::state::quotas::QuotaStoreError::Io { path, source } => {
                        StoreError::Io { path, source }
                    }
                }
            })?;
        let (service, report) = LicenseService::with_store(
            Box::new(store),
            settings.trusted_keys.clone(),
            settings.grace,
        )?;
        for w in report.warnings() {
            tracing::warn!("licenses: {w}");
        }
        Ok(Licensing {
            store: path.clone(),
            service,
            quotas: std::sync::Arc::new(quotas),
        })
    }
}
