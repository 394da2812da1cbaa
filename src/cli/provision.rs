//! `portcullis license activate --config FILE LICENSE`: activate a license into the store
//! the config names, with the gateway stopped (redb allows one opener; a running gateway
//! takes licenses through its admin API). For provisioning a machine before first start.

use std::path::Path;
use std::time::SystemTime;

use crate::report::ConfigErrors;
use crate::state::licenses::{ActivationError, LicenseService, StoreError};

/// Why an offline activation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{}: has no [licenses] section, so there is no store to activate into", .0.display())]
    NoLicenses(std::path::PathBuf),
    #[error(
        "licenses.store: {0} (is the gateway running? use POST /licenses on its admin listener)"
    )]
    Store(#[from] StoreError),
    #[error(transparent)]
    Activation(#[from] ActivationError),
}

/// Activate `text` into the store of the config at `config`, as of `now`; the summary line.
pub fn activate_offline(
    config: &Path,
    text: &str,
    now: SystemTime,
) -> Result<String, ProvisionError> {
    let loaded = crate::config::load_file(config, now)?;
    let settings = loaded
        .snapshot
        .licenses
        .as_ref()
        .ok_or_else(|| ProvisionError::NoLicenses(config.to_path_buf()))?;
    let (service, _report) = LicenseService::open(
        &settings.store,
        settings.trusted_keys.clone(),
        settings.grace,
    )?;
    let summary = service.activate(text.trim(), now)?;
    Ok(format!("{}\n", summary.to_json()))
}
