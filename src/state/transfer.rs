//! Moving a gateway's state between stores: from the embedded files to a fleet's Redis
//! (`portcullis state import`) and back (`state export`). Every kind of lasting state goes:
//! the issuer's clients, signing keys (sealed as they are), refresh families and token
//! hashes, revocations and settings, and the licenses with their activation and revocation
//! times. The target must hold none of it yet, so a move never mixes two histories.
//!
//! Not moved: rate-limit state (it rests within seconds) and quota counts of the current
//! window (the embedded file keeps a window's end, not which window it was).

use crate::state::issuer::{IssuerState, StoreError};
use crate::state::licenses::{LicenseStore, StoreError as LicenseStoreError};

/// What a move copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub clients: usize,
    pub keys: usize,
    pub families: usize,
    pub refresh_hashes: usize,
    pub revocations: usize,
    pub licenses: usize,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} clients, {} signing keys, {} refresh families ({} token hashes), {} revocations, {} licenses",
            self.clients,
            self.keys,
            self.families,
            self.refresh_hashes,
            self.revocations,
            self.licenses
        )
    }
}

/// Why a move stopped; the target is unchanged for the kind that failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(
        "{target} already holds {what}: move into an empty store (a new Redis key_prefix, or new files)"
    )]
    NotEmpty { target: String, what: String },
    #[error(transparent)]
    Issuer(#[from] StoreError),
    #[error(transparent)]
    Licenses(#[from] LicenseStoreError),
}

/// Copy the issuer's state from `from` into the empty `to`, in one transaction of `to`.
pub fn copy_issuer(
    from: &dyn IssuerState,
    to: &dyn IssuerState,
    moved: &mut Moved,
) -> Result<(), TransferError> {
    let (clients, keys, families, hashes, revoked, metas) = from.read(|rx| {
        Ok((
            rx.clients()?,
            rx.keys()?,
            rx.families()?,
            rx.refresh_hashes()?,
            rx.revoked()?,
            rx.metas()?,
        ))
    })?;
    let (held_clients, held_keys) = to.read(|rx| Ok((rx.clients()?.len(), rx.keys()?.len())))?;
    if held_clients + held_keys > 0 {
        return Err(TransferError::NotEmpty {
            target: to.location(),
            what: format!("{held_clients} issuer clients and {held_keys} signing keys"),
        });
    }
    to.write(|tx| {
        for c in &clients {
            tx.put_client(c)?;
        }
        for k in &keys {
            tx.put_key(k)?;
        }
        // Families before their hashes: a hash lives as long as its family.
        for f in &families {
            tx.put_family(f)?;
        }
        for (hash, family) in &hashes {
            tx.put_refresh(hash, family)?;
        }
        for (jti, exp) in &revoked {
            tx.revoke_jti(jti, *exp)?;
        }
        for (k, v) in &metas {
            tx.set_meta(k, v)?;
        }
        Ok(())
    })?;
    moved.clients += clients.len();
    moved.keys += keys.len();
    moved.families += families.len();
    moved.refresh_hashes += hashes.len();
    moved.revocations += revoked.len();
    Ok(())
}

/// Copy every license (with its activation and revocation times) into the empty `to`.
pub fn copy_licenses(
    from: &dyn LicenseStore,
    to: &dyn LicenseStore,
    moved: &mut Moved,
) -> Result<(), TransferError> {
    let held = to.all()?.len();
    if held > 0 {
        return Err(TransferError::NotEmpty {
            target: format!("{to:?}"),
            what: format!("{held} licenses"),
        });
    }
    for l in from.all()? {
        to.insert_new(&l)?;
        moved.licenses += 1;
    }
    to.changed();
    Ok(())
}
