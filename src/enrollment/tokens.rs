//! Making a one-time enrollment token: the checks and the record the admin API
//! (`POST /enrollment/tokens`) and `portcullis enroll token` share.

use std::time::Duration;

use super::{EnrollmentSettings, EnrollmentTokens, StoreError, TokenRecord};

/// Longest a token may wait to be spent: it is a bearer secret in transit to a machine.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Longest machine name: it goes into license ids (`enr-<machine>-<8 hex>`, at most 64).
pub const MAX_MACHINE_LEN: usize = 48;

/// Why no token was made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("machine \"{0}\" must be 1 to 48 of A-Z a-z 0-9 _ . -")]
    Machine(String),
    #[error("no [[enrollment.templates]] is named \"{0}\"")]
    Template(String),
    #[error("expires: {0}")]
    Expires(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MintError {
    /// The request was wrong (400), not the store (500).
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, MintError::Store(_))
    }
}

/// A token made: shown once, never stored.
#[derive(Debug)]
pub struct Minted {
    pub token: zeroize::Zeroizing<String>,
    pub record: TokenRecord,
}

impl Minted {
    /// The answer of the admin API and the command line (the only place the token appears).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "token": self.token.as_str(),
            "machine": self.record.machine,
            "template": self.record.template,
            "expires_at": crate::license::dates::rfc3339(self.record.expires_at),
        })
    }
}

/// Whether `machine` can name an enrolled machine (its certificate CN, its license ids).
pub fn is_machine_name(machine: &str) -> bool {
    machine.len() <= MAX_MACHINE_LEN && crate::config::issuer::is_label(machine)
}

/// Make a token for `machine` with `template`, spendable until `now + expires` (`"24h"`).
pub fn mint(
    settings: &EnrollmentSettings,
    store: &EnrollmentTokens,
    machine: &str,
    template: &str,
    expires: &str,
    now: u64,
) -> Result<Minted, MintError> {
    if !is_machine_name(machine) {
        return Err(MintError::Machine(machine.to_owned()));
    }
    if settings.template(template).is_none() {
        return Err(MintError::Template(template.to_owned()));
    }
    let lifetime =
        crate::config::issuer::parse_ttl(expires, MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME)
            .map_err(MintError::Expires)?;
    let (token, hash) = crate::state::enrollment::new_token()?;
    let record = TokenRecord {
        machine: machine.to_owned(),
        template: template.to_owned(),
        created_at: now,
        expires_at: now.saturating_add(lifetime.as_secs()),
        spent_at: None,
        revoked_at: None,
    };
    store.insert(&hash, &record)?;
    tracing::info!(
        machine,
        template,
        expires_at = record.expires_at,
        "enrollment token made"
    );
    Ok(Minted { token, record })
}
