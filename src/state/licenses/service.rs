//! Activation and revocation at run time: what the admin endpoints call. Each change is
//! verified, persisted in one store transaction, then published to the book, so the next
//! request sees it and a restart keeps it.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::store::{EmbeddedLicenses, LicenseStore, StoreError, StoredLicense};
use crate::license::book::{Entry, LicenseBook};
use crate::license::dates;
use crate::license::format::{self, License, LicenseError};
use crate::license::keys::TrustedKeys;
use crate::license::{LicenseState, LicenseSummary};

/// Why `POST /licenses` refused a license. Nothing in the store or the book changed.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The text is not a valid license from a trusted key (which way: see [`LicenseError`]).
    #[error(transparent)]
    Refused(#[from] LicenseError),
    /// `expires_at` is already past (grace does not apply to activation).
    #[error("license \"{id}\" already expired at {expired_at}")]
    AlreadyExpired { id: String, expired_at: String },
    /// The id is already activated (possibly revoked: a revoked id cannot come back).
    #[error("a license with id \"{id}\" is already activated")]
    Duplicate { id: String },
    /// The store could not be written; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why `DELETE /licenses/{id}` failed.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no license with id \"{id}\" is activated")]
    NotFound { id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What loading the store found, for the log. Licenses listed here are never granted.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Licenses loaded and granting (whatever their dates).
    pub loaded: usize,
    /// Stored licenses whose signing key is not trusted now: `(id, key id)`. Kept in the
    /// store and listed as `untrusted`; trusting the key again brings them back.
    pub untrusted: Vec<(String, String)>,
    /// Stored texts that no longer verify (the file was edited outside portcullis): `(id,
    /// why)`. Kept in the store, not listed.
    pub unreadable: Vec<(String, LicenseError)>,
}

impl OpenReport {
    /// One operator-facing line per problem.
    pub fn warnings(&self) -> Vec<String> {
        let untrusted = self.untrusted.iter().map(|(id, kid)| {
            format!("license \"{id}\" is signed by key {kid}, which is no longer trusted: it is not granted")
        });
        let unreadable = self
            .unreadable
            .iter()
            .map(|(id, e)| format!("stored license \"{id}\" is not granted: {e}"));
        untrusted.chain(unreadable).collect()
    }
}

/// The license book and its store, kept in step. Cheap to share behind an `Arc`.
pub struct LicenseService {
    book: Arc<LicenseBook>,
    store: Box<dyn LicenseStore>,
    /// Held by every writer, so verify, persist and publish happen as one step.
    keys: Mutex<TrustedKeys>,
}

impl std::fmt::Debug for LicenseService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LicenseService")
            .field("store", &self.store)
            .field("licenses", &self.book.len())
            .finish()
    }
}

impl LicenseService {
    /// Open (or create) the store at `store_path` and load every activation and revocation
    /// into a new book. Licenses signed by a key not in `keys` stay stored but do not grant.
    pub fn open(
        store_path: &Path,
        keys: TrustedKeys,
        grace: Duration,
    ) -> Result<(Self, OpenReport), StoreError> {
        Self::with_store(Box::new(EmbeddedLicenses::open(store_path)?), keys, grace)
    }

    /// The service over `store`, loaded.
    pub fn with_store(
        store: Box<dyn LicenseStore>,
        keys: TrustedKeys,
        grace: Duration,
    ) -> Result<(Self, OpenReport), StoreError> {
        let service = LicenseService {
            book: Arc::new(LicenseBook::new(grace)),
            store,
            keys: Mutex::new(TrustedKeys::default()),
        };
        let report = service.reconfigure(keys, grace)?;
        Ok((service, report))
    }

    /// Apply new trusted keys and grace (a config reload): re-read the store and rebuild the
    /// book in place. The store stays open (redb allows one opener).
    pub fn reconfigure(
        &self,
        keys: TrustedKeys,
        grace: Duration,
    ) -> Result<OpenReport, StoreError> {
        let mut held = self.lock();
        let mut report = OpenReport::default();
        let mut entries = Vec::new();
        for stored in self.store.all()? {
            let revoked = stored.revoked_at.is_some();
            match keys.verify(&stored.text) {
                Ok(v) if v.payload().id == stored.id => {
                    report.loaded += 1;
                    entries.push(Entry::new(v.license(), true, revoked));
                }
                Ok(_) => report.unreadable.push((
                    stored.id,
                    LicenseError::Invalid("its id differs from the id it is stored under".into()),
                )),
                Err(LicenseError::UnknownKey { kid }) => match unverified(&stored.text) {
                    Some(l) if l.payload.id == stored.id => {
                        entries.push(Entry::new(&l, false, revoked));
                        report.untrusted.push((stored.id, kid));
                    }
                    Some(_) | None => report
                        .unreadable
                        .push((stored.id, LicenseError::UnknownKey { kid })),
                },
                Err(e) => report.unreadable.push((stored.id, e)),
            }
        }
        self.book.set_grace(grace);
        self.book.replace_all(entries);
        *held = keys;
        Ok(report)
    }

    /// Re-read the store with the keys and grace in force (another instance of a fleet
    /// changed it).
    pub fn refresh(&self) -> Result<OpenReport, StoreError> {
        let keys = self.lock().clone();
        self.reconfigure(keys, self.book.grace())
    }

    /// The book the request path checks.
    pub fn book(&self) -> &Arc<LicenseBook> {
        &self.book
    }

    /// Verify `text` with the trusted keys, refuse it if expired at `now` or already
    /// activated, persist it, then publish it: the next `check` sees it.
    pub fn activate(&self, text: &str, now: SystemTime) -> Result<LicenseSummary, ActivationError> {
        let keys = self.lock();
        let verified = keys.verify(text)?;
        let p = verified.payload();
        if dates::unix(now) > p.expires_at {
            return Err(ActivationError::AlreadyExpired {
                id: p.id.clone(),
                expired_at: dates::rfc3339(p.expires_at),
            });
        }
        let stored = StoredLicense {
            id: p.id.clone(),
            text: verified.text().to_owned(),
            activated_at: dates::unix(now),
            revoked_at: None,
        };
        if !self.store.insert_new(&stored)? {
            return Err(ActivationError::Duplicate { id: p.id.clone() });
        }
        // The store decides duplicates (it also holds licenses the book leaves out), so the
        // book cannot disagree; if it somehow did, the store is the truth after a restart.
        let _ = self.book.insert(&verified);
        self.store.changed();
        drop(keys);
        self.book
            .get(&p.id, now)
            .ok_or(ActivationError::Duplicate { id: p.id.clone() })
    }

    /// Revoke `id`: persisted, then denied from the next `check` on. A revoked license stays
    /// listed as revoked; revoking it again changes nothing.
    pub fn revoke(&self, id: &str, now: SystemTime) -> Result<LicenseSummary, RevokeError> {
        let _keys = self.lock();
        let not_found = || RevokeError::NotFound { id: id.to_owned() };
        let stored = self
            .store
            .revoke(id, dates::unix(now))?
            .ok_or_else(not_found)?;
        self.book.revoke(id);
        self.store.changed();
        // A stored license the book does not list (unreadable) is still revoked on disk.
        match self.book.get(id, now) {
            Some(s) => Ok(s),
            None => unverified(&stored.text)
                .map(|l| summary_of(&l, LicenseState::Revoked))
                .ok_or_else(not_found),
        }
    }

    /// Every license in the book, by id, with its state at `now`.
    pub fn list(&self, now: SystemTime) -> Vec<LicenseSummary> {
        self.book.list(now)
    }

    fn lock(&self) -> MutexGuard<'_, TrustedKeys> {
        // Writers leave no half-done state in memory (the store is the transaction), so a
        // poisoned lock is still usable.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The license `text` says, signature unchecked (to list an untrusted one).
fn unverified(text: &str) -> Option<License> {
    let env = format::open_envelope(text).ok()?;
    let payload = format::parse_payload(&env.payload).ok()?;
    License::from_payload(payload).ok()
}

fn summary_of(l: &License, state: LicenseState) -> LicenseSummary {
    let p = &l.payload;
    LicenseSummary {
        id: p.id.clone(),
        customer: p.customer.clone(),
        machine_id: p.machine_id.clone(),
        key_id: p.kid.clone(),
        not_before: dates::system(p.not_before),
        expires_at: dates::system(p.expires_at),
        state,
        quota: l.quota,
    }
}
