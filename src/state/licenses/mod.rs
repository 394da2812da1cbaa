//! Machine licenses as the gateway keeps them: activated licenses persisted in a redb file
//! ([`store`]), the service that activates, revokes and re-reads them ([`service`]), and
//! publishes them to the in-memory [`crate::license::LicenseBook`] the request path reads.

mod service;
mod store;

#[cfg(test)]
mod tests;

pub use service::{ActivationError, LicenseService, OpenReport, RevokeError};
pub use store::{EmbeddedLicenses, LicenseStore, StoreError, StoredLicense};

use crate::license::LicenseSettings;

/// The license service the gateway runs, with the store file it has open (a reload that
/// keeps the file reconfigures in place: redb allows one opener per file), and the quota
/// counts kept in the same file.
pub struct Licensing {
    pub store: std::path::PathBuf,
    pub service: LicenseService,
    /// Quota counts in the license file; `None` on the fleet's store, where the file is
    /// not opened.
    pub quotas: Option<std::sync::Arc<crate::state::quotas::EmbeddedQuotas>>,
    /// The fleet's store, when the licenses are on it.
    pub shared: Option<std::sync::Arc<crate::state::redis::RedisStore>>,
}

/// The service over `store`, loaded; what it could not grant is logged.
fn service_over(
    store: Box<dyn LicenseStore>,
    settings: &LicenseSettings,
) -> Result<LicenseService, StoreError> {
    let (service, report) =
        LicenseService::with_store(store, settings.trusted_keys.clone(), settings.grace)?;
    for w in report.warnings() {
        tracing::warn!("licenses: {w}");
    }
    Ok(service)
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
        let service = service_over(Box::new(store), settings)?;
        Ok(Licensing {
            store: path.clone(),
            service,
            quotas: Some(std::sync::Arc::new(quotas)),
            shared: None,
        })
    }

    /// The licenses of a fleet, in its Redis: the book is read from there, and every change
    /// announced on the fleet channel (or found by the periodic resync) makes this instance
    /// read it again.
    pub fn open_shared(
        settings: &LicenseSettings,
        shared: &std::sync::Arc<crate::state::redis::RedisStore>,
    ) -> Result<std::sync::Arc<Self>, StoreError> {
        let store =
            crate::state::redis::licenses::RedisLicenses::new(std::sync::Arc::clone(shared));
        let service = service_over(Box::new(store), settings)?;
        let licensing = std::sync::Arc::new(Licensing {
            store: settings.store.clone(),
            service,
            quotas: None,
            shared: Some(std::sync::Arc::clone(shared)),
        });
        let weak = std::sync::Arc::downgrade(&licensing);
        shared.listen(crate::state::redis::RESYNC_EVERY, move |heard| {
            let Some(l) = weak.upgrade() else {
                return false;
            };
            if matches!(heard, crate::state::redis::Heard::Message(m) if m != crate::state::redis::licenses::CHANGED)
            {
                return true;
            }
            // Off the async threads: the read is a blocking call.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = l.service.refresh() {
                    tracing::warn!(error = %e, "licenses: cannot read the fleet's licenses; keeping the book as it is");
                }
            });
            true
        });
        Ok(licensing)
    }

    /// Whether this runs on the store `settings` and `shared` name (a reload keeps it then).
    pub fn same_store(
        &self,
        settings: &LicenseSettings,
        shared: Option<&std::sync::Arc<crate::state::redis::RedisStore>>,
    ) -> bool {
        match (&self.shared, shared) {
            (None, None) => self.store == settings.store,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}
