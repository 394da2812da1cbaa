//! The issuer's database: one redb file (mode 0600) holding clients, signing keys (private
//! halves included: hence the mode), refresh-token families, refresh-token hashes and
//! revoked access-token ids.
//!
//! Every change is one redb write transaction committed with `Durability::Immediate` (redb's
//! default): when `commit` returns the change is on disk, and redb's copy-on-write commit
//! means a crash leaves the old state or the new one, never a mix. redb runs one write
//! transaction at a time, so a read-check-write inside one (a refresh-token rotation) is
//! atomic against every other writer: two refreshes of one token cannot both pass.
//!
//! Records are JSON in `&[u8]` values: a field added later reads old records with its
//! default, and a new incompatible layout gets a new table name (`_v2`).

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableDatabase as _, ReadableTable, ReadableTableMetadata as _,
    TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    ClientRecord, FamilyRecord, IssuerRead, IssuerState, IssuerTx, KeyRecord, ReadBody, StoreError,
    TxError, WriteBody,
};

/// `client_id -> ClientRecord`.
const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients_v1");
/// `kid -> KeyRecord`.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signing_keys_v1");
/// `family id -> FamilyRecord`.
const FAMILIES: TableDefinition<&str, &[u8]> = TableDefinition::new("refresh_families_v1");
/// `SHA-256(refresh token) -> family id`, for the current and every retired token of a
/// family, so a retired token is recognised (reuse detection) until the family expires.
const REFRESH: TableDefinition<&[u8], &str> = TableDefinition::new("refresh_tokens_v1");
/// `jti -> exp` (Unix seconds) of revoked access tokens.
const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked_jti_v1");
/// Small settings: the current kid, the configured access-token lifetime.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta_v1");

/// `?` on every redb error type inside a transaction.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for TxError {
            fn from(e: $t) -> Self {
                TxError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

// === The store ===

/// The open redb file.
pub struct Embedded {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "issuer state {}", self.path.display())
    }
}

impl Embedded {
    /// Open the store at `path`, creating it (mode 0600) if missing. The folder must exist.
    /// A file readable by others is narrowed to 0600 (it holds private keys).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |e: redb::Error| StoreError::Open {
            path: path.to_path_buf(),
            source: e,
        };
        // A file readable by others is narrowed first (no-op when it does not exist yet).
        narrow_mode(path);
        // Clients, keys and live families: a few MiB; redb's default cache is 1 GiB.
        let db = crate::state::db::open_private(path, 32 * 1024 * 1024).map_err(|e| match e {
            redb::Error::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_path_buf(),
            },
            e => open_err(e),
        })?;
        let store = Embedded {
            db,
            path: path.to_path_buf(),
        };
        // Create every table, so reads of a new store need no special case.
        store.run_write(|txn| {
            txn.open_table(CLIENTS)?;
            txn.open_table(KEYS)?;
            txn.open_table(FAMILIES)?;
            txn.open_table(REFRESH)?;
            txn.open_table(REVOKED)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn run_write(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(), TxError>,
    ) -> Result<(), StoreError> {
        let run = || -> Result<(), TxError> {
            let txn = self.db.begin_write()?;
            f(&txn)?;
            txn.commit()?;
            Ok(())
        };
        run().map_err(|e| self.error(e))
    }

    fn error(&self, e: TxError) -> StoreError {
        match e {
            TxError::Redb(source) => StoreError::Io {
                path: self.path.clone(),
                source,
            },
            TxError::Corrupt(what) => StoreError::Corrupt {
                path: self.path.clone(),
                what,
            },
            TxError::Crypto(what) => StoreError::Crypto(what),
            TxError::Sealed(what) => StoreError::Sealed {
                path: self.path.clone(),
                what,
            },
            TxError::Unavailable(what) => StoreError::Unavailable {
                location: self.path.display().to_string(),
                what,
            },
        }
    }
}

impl IssuerState for Embedded {
    // redb runs one write transaction at a time, so a body runs exactly once.
    fn transact(&self, body: &mut WriteBody<'_>) -> Result<(), StoreError> {
        self.run_write(|txn| body(&mut Tx { txn }))
    }

    fn snapshot(&self, body: &mut ReadBody<'_>) -> Result<(), StoreError> {
        let mut run = || -> Result<(), TxError> {
            let txn = self.db.begin_read()?;
            body(&Rx { txn })
        };
        run().map_err(|e| self.error(e))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// A store file from an older version or copied around may be group- or world-readable.
fn narrow_mode(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "issuer store was readable by others; narrowed to mode 0600")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "issuer store is readable by others and cannot be narrowed to 0600")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

// === Reading (shared by read and write transactions) ===

fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, TxError> {
    match table.get(key)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| TxError::Corrupt(format!("record \"{key:.64}\": {e}"))),
    }
}

fn all_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<T>, TxError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        out.push(
            serde_json::from_slice(v.value())
                .map_err(|e| TxError::Corrupt(format!("record \"{:.64}\": {e}", k.value())))?,
        );
    }
    Ok(out)
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, TxError> {
    serde_json::to_vec(v).map_err(|e| TxError::Corrupt(e.to_string()))
}

/// The reads, once for both kinds of redb transaction.
macro_rules! reads {
    ($t:ty) => {
        impl IssuerRead for $t {
            fn client(&self, id: &str) -> Result<Option<ClientRecord>, TxError> {
                get_json(&self.txn.open_table(CLIENTS)?, id)
            }
            fn clients(&self) -> Result<Vec<ClientRecord>, TxError> {
                all_json(&self.txn.open_table(CLIENTS)?)
            }
            fn keys(&self) -> Result<Vec<KeyRecord>, TxError> {
                all_json(&self.txn.open_table(KEYS)?)
            }
            fn key(&self, kid: &str) -> Result<Option<KeyRecord>, TxError> {
                get_json(&self.txn.open_table(KEYS)?, kid)
            }
            fn family(&self, id: &str) -> Result<Option<FamilyRecord>, TxError> {
                get_json(&self.txn.open_table(FAMILIES)?, id)
            }
            fn family_of(&self, hash: &[u8; 32]) -> Result<Option<String>, TxError> {
                let table = self.txn.open_table(REFRESH)?;
                Ok(table.get(&hash[..])?.map(|v| v.value().to_owned()))
            }
            fn revoked(&self) -> Result<Vec<(String, u64)>, TxError> {
                let table = self.txn.open_table(REVOKED)?;
                let mut out = Vec::new();
                for row in table.iter()? {
                    let (k, v) = row?;
                    out.push((k.value().to_owned(), v.value()));
                }
                Ok(out)
            }
            fn meta(&self, key: &str) -> Result<Option<String>, TxError> {
                let table = self.txn.open_table(META)?;
                Ok(table.get(key)?.map(|v| v.value().to_owned()))
            }
            fn families(&self) -> Result<Vec<FamilyRecord>, TxError> {
                all_json(&self.txn.open_table(FAMILIES)?)
            }
            fn refresh_hashes(&self) -> Result<Vec<([u8; 32], String)>, TxError> {
                let table = self.txn.open_table(REFRESH)?;
                let mut out = Vec::new();
                for row in table.iter()? {
                    let (k, v) = row?;
                    let hash: [u8; 32] = k.value().try_into().map_err(|_| {
                        TxError::Corrupt("a refresh-token hash is not 32 bytes".into())
                    })?;
                    out.push((hash, v.value().to_owned()));
                }
                Ok(out)
            }
            fn metas(&self) -> Result<Vec<(String, String)>, TxError> {
                let table = self.txn.open_table(META)?;
                let mut out = Vec::new();
                for row in table.iter()? {
                    let (k, v) = row?;
                    out.push((k.value().to_owned(), v.value().to_owned()));
                }
                Ok(out)
            }
        }
    };
}

/// A read transaction.
struct Rx {
    txn: ReadTransaction,
}

/// A write transaction. Tables are opened per call, so no two handles overlap.
struct Tx<'a> {
    txn: &'a WriteTransaction,
}

reads!(Rx);
reads!(Tx<'_>);

impl IssuerTx for Tx<'_> {
    fn put_client(&mut self, c: &ClientRecord) -> Result<(), TxError> {
        self.txn
            .open_table(CLIENTS)?
            .insert(c.id.as_str(), to_json(c)?.as_slice())?;
        Ok(())
    }
    fn put_key(&mut self, k: &KeyRecord) -> Result<(), TxError> {
        self.txn
            .open_table(KEYS)?
            .insert(k.kid.as_str(), to_json(k)?.as_slice())?;
        Ok(())
    }
    fn put_family(&mut self, f: &FamilyRecord) -> Result<(), TxError> {
        self.txn
            .open_table(FAMILIES)?
            .insert(f.id.as_str(), to_json(f)?.as_slice())?;
        Ok(())
    }
    fn put_refresh(&mut self, hash: &[u8; 32], family: &str) -> Result<(), TxError> {
        self.txn.open_table(REFRESH)?.insert(&hash[..], family)?;
        Ok(())
    }
    fn revoke_jti(&mut self, jti: &str, exp: u64) -> Result<(), TxError> {
        self.txn.open_table(REVOKED)?.insert(jti, exp)?;
        Ok(())
    }
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), TxError> {
        self.txn.open_table(META)?.insert(key, value)?;
        Ok(())
    }

    fn prune(&mut self, now: u64, grace: u64) -> Result<usize, TxError> {
        let mut gone = 0;
        let mut dead = std::collections::HashSet::new();
        {
            let mut families = self.txn.open_table(FAMILIES)?;
            let mut expired = Vec::new();
            for row in families.iter()? {
                let (k, v) = row?;
                let f: FamilyRecord = serde_json::from_slice(v.value())
                    .map_err(|e| TxError::Corrupt(format!("family: {e}")))?;
                if f.expires_at.saturating_add(grace) < now {
                    expired.push(k.value().to_owned());
                }
            }
            for id in expired {
                families.remove(id.as_str())?;
                dead.insert(id);
                gone += 1;
            }
        }
        if !dead.is_empty() {
            let mut refresh = self.txn.open_table(REFRESH)?;
            let before = refresh.len()?;
            refresh.retain(|_, family| !dead.contains(family))?;
            gone += usize::try_from(before.saturating_sub(refresh.len()?)).unwrap_or(0);
        }
        {
            let mut revoked = self.txn.open_table(REVOKED)?;
            let before = revoked.len()?;
            revoked.retain(|_, exp| exp.saturating_add(grace) >= now)?;
            gone += usize::try_from(before.saturating_sub(revoked.len()?)).unwrap_or(0);
        }
        {
            let mut keys = self.txn.open_table(KEYS)?;
            let mut ended = Vec::new();
            for row in keys.iter()? {
                let (k, v) = row?;
                let rec: KeyRecord = serde_json::from_slice(v.value())
                    .map_err(|e| TxError::Corrupt(format!("key: {e}")))?;
                if rec.retain_until.is_some_and(|t| t < now) {
                    ended.push(k.value().to_owned());
                }
            }
            for kid in ended {
                keys.remove(kid.as_str())?;
                gone += 1;
            }
        }
        Ok(gone)
    }
}
