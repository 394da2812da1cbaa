//! Activated licenses on disk: a redb file (mode 0600), one table `licenses_v1` of
//! `id -> (license text, activated_at, revoked_at)` (Unix seconds).
//!
//! Every activation and every revocation is one redb write transaction, committed with
//! `Durability::Immediate` (redb's default): when `commit` returns the change is on disk, and
//! redb's copy-on-write commit means a crash at any point leaves either the old state or the
//! new one, never a mix. So a crash mid-write loses nothing that was acknowledged.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

/// `id -> (text, activated_at, revoked_at)`. A new layout gets a new table name.
const LICENSES: TableDefinition<&str, (&str, u64, Option<u64>)> =
    TableDefinition::new("licenses_v1");

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be created or opened (missing folder, permissions, in use by
    /// another process, not a redb file).
    #[error("cannot open the license store {}: {source}", path.display())]
    Open { path: PathBuf, source: redb::Error },
    /// A read or write transaction failed; nothing was changed.
    #[error("the license store {} failed: {source}", path.display())]
    Io { path: PathBuf, source: redb::Error },
    /// The shared store (Redis) did not answer; nothing was changed.
    #[error("the license store {location} is unavailable: {what}")]
    Unavailable { location: String, what: String },
    /// A stored record is not one this version understands.
    #[error("the license store {location} holds a record that cannot be read: {what}")]
    Corrupt { location: String, what: String },
}

impl StoreError {
    /// The shared store did not answer: the caller may try again (503, not 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// One stored license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLicense {
    pub id: String,
    pub text: String,
    pub activated_at: u64,
    pub revoked_at: Option<u64>,
}

/// Where activated licenses live: one interface, so a fleet backend (Redis) can stand beside
/// the embedded file. Each call is one atomic step.
pub trait LicenseStore: Send + Sync + std::fmt::Debug {
    /// Every stored license, by id.
    fn all(&self) -> Result<Vec<StoredLicense>, StoreError>;
    /// Store `license` unless its id is taken. Ok(false): taken, nothing written.
    fn insert_new(&self, license: &StoredLicense) -> Result<bool, StoreError>;
    /// Mark `id` revoked at `at` (Unix seconds). A license already revoked keeps its first
    /// revocation time. None: no such license.
    fn revoke(&self, id: &str, at: u64) -> Result<Option<StoredLicense>, StoreError>;
    /// Called after an activation or revocation was stored: a shared store tells the other
    /// instances, which re-read it.
    fn changed(&self) {}
}

/// The redb file of activated licenses.
pub struct EmbeddedLicenses {
    db: std::sync::Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedLicenses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LicenseStore({})", self.path.display())
    }
}

impl EmbeddedLicenses {
    /// Open the store at `path`, creating it (mode 0600) if it does not exist. The folder
    /// must exist. redb locks the file: a second open, in this process or another, fails.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::in_db(std::sync::Arc::new(Self::open_db(path)?), path)
    }

    /// Open (or create, mode 0600) the redb file at `path`, to share with the quota counts.
    pub fn open_db(path: &Path) -> Result<Database, StoreError> {
        // The store holds a few MiB at most; redb's default cache is 1 GiB.
        crate::state::db::open_private(path, 16 * 1024 * 1024).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: e,
        })
    }

    /// The licenses in `db`, the file at `path` already open.
    pub fn in_db(db: std::sync::Arc<Database>, path: &Path) -> Result<Self, StoreError> {
        let store = EmbeddedLicenses {
            db,
            path: path.to_path_buf(),
        };
        // Create the table, so reads of an empty store need no special case.
        store.write(|_| Ok(()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` in one write transaction; commit only if it returns Ok.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &str, (&str, u64, Option<u64>)>) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        crate::state::db::in_write(&self.db, LICENSES, f).map_err(|source| self.io(source))
    }

    fn io(&self, source: redb::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl LicenseStore for EmbeddedLicenses {
    fn all(&self) -> Result<Vec<StoredLicense>, StoreError> {
        let read = || -> Result<Vec<StoredLicense>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(LICENSES)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                let (text, activated_at, revoked_at) = v.value();
                out.push(StoredLicense {
                    id: k.value().to_owned(),
                    text: text.to_owned(),
                    activated_at,
                    revoked_at,
                });
            }
            Ok(out)
        };
        read().map_err(|source| self.io(source))
    }

    fn insert_new(&self, license: &StoredLicense) -> Result<bool, StoreError> {
        self.write(|table| {
            if table.get(license.id.as_str())?.is_some() {
                return Ok(false);
            }
            let value = (
                license.text.as_str(),
                license.activated_at,
                license.revoked_at,
            );
            table.insert(license.id.as_str(), value)?;
            Ok(true)
        })
    }

    fn revoke(&self, id: &str, at: u64) -> Result<Option<StoredLicense>, StoreError> {
        self.write(|table| {
            let Some((text, activated_at, revoked_at)) = table.get(id)?.map(|g| {
                let (t, a, r) = g.value();
                (t.to_owned(), a, r)
            }) else {
                return Ok(None);
            };
            let revoked_at = revoked_at.or(Some(at));
            table.insert(id, (text.as_str(), activated_at, revoked_at))?;
            Ok(Some(StoredLicense {
                id: id.to_owned(),
                text,
                activated_at,
                revoked_at,
            }))
        })
    }
}
