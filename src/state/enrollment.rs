//! One-time enrollment tokens and enrolled machines on disk: a redb file (mode 0600), table
//! `enrollment_tokens_v1` of `SHA-256(token) -> record` (JSON: machine, template, times) and
//! table `enrolled_machines_v1` of `machine -> record` (template, current license, key pin).
//!
//! A token is `pce_` and 32 random bytes in base64url, shown once when it is made; only its
//! hash is stored, so the file (or a backup of it) enrolls nobody. Spending is one write
//! transaction: two requests with one token cannot both succeed.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

const TOKENS: TableDefinition<&[u8], &str> = TableDefinition::new("enrollment_tokens_v1");
/// `machine -> record` (JSON): what each enrolled machine holds now.
const MACHINES: TableDefinition<&str, &str> = TableDefinition::new("enrolled_machines_v1");
/// `SHA-256(SPKI) -> until` (Unix seconds): keys of revoked machines, refused everywhere
/// until their certificates have expired.
const REVOKED_PINS: TableDefinition<&[u8], u64> = TableDefinition::new("revoked_pins_v1");

/// What every token starts with, so a leaked one is recognisable (secret scanners) and a
/// bearer token of another kind is told apart.
pub const PREFIX: &str = "pce_";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the enrollment token store {}: {source}", path.display())]
    Open { path: PathBuf, source: redb::Error },
    #[error("the enrollment token store {} failed: {source}", path.display())]
    Io { path: PathBuf, source: redb::Error },
    #[error("the enrollment token store {} holds a record that cannot be read: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
    #[error("no random bytes for a token")]
    Random,
}

impl From<redb::Error> for Failure {
    fn from(e: redb::Error) -> Self {
        Failure::Db(e)
    }
}
impl From<redb::TransactionError> for Failure {
    fn from(e: redb::TransactionError) -> Self {
        Failure::Db(e.into())
    }
}
impl From<redb::StorageError> for Failure {
    fn from(e: redb::StorageError) -> Self {
        Failure::Db(e.into())
    }
}
impl From<redb::TableError> for Failure {
    fn from(e: redb::TableError) -> Self {
        Failure::Db(e.into())
    }
}

/// Inside a transaction: the database failed, or a record did not parse.
pub(super) enum Failure {
    Db(redb::Error),
    Corrupt(String),
}

/// One token, as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub machine: String,
    pub template: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The last second the token can be spent.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// An enrolled machine: the template its licenses come from and what it holds now (the
/// certificate key's pin and the license bound to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub template: String,
    pub license_id: String,
    /// `sha256/<base64>` of the current certificate's key.
    pub pin: String,
    /// Unix seconds of the last (re-)enrollment.
    pub enrolled_at: u64,
    /// The license the last re-enrollment replaced, still granting until `overlap` ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<Retiring>,
}

/// A replaced license and when it stops granting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retiring {
    pub license_id: String,
    /// `sha256/<base64>` of the replaced certificate's key.
    #[serde(default)]
    pub pin: String,
    /// Unix seconds.
    pub revoke_at: u64,
}

/// Why a token does not enroll. One refusal for the client (401); the log tells these apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("not a token this gateway made")]
    Unknown,
    #[error("already spent")]
    Spent,
    #[error("revoked")]
    Revoked,
    #[error("expired")]
    Expired,
}

impl TokenRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRefusal::Unknown => "unknown",
            TokenRefusal::Spent => "spent",
            TokenRefusal::Revoked => "revoked",
            TokenRefusal::Expired => "expired",
        }
    }
}

impl TokenRecord {
    /// Whether the record can be spent at `now`.
    pub fn check(&self, now: u64) -> Result<(), TokenRefusal> {
        if self.revoked_at.is_some() {
            Err(TokenRefusal::Revoked)
        } else if self.spent_at.is_some() {
            Err(TokenRefusal::Spent)
        } else if now > self.expires_at {
            Err(TokenRefusal::Expired)
        } else {
            Ok(())
        }
    }
}

/// A new token and the hash it is stored under.
pub fn new_token() -> Result<(zeroize::Zeroizing<String>, [u8; 32]), StoreError> {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut *raw)
        .map_err(|_| StoreError::Random)?;
    let token = zeroize::Zeroizing::new(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(*raw)));
    let hash = hash(&token);
    Ok((token, hash))
}

/// The key a token is stored under.
pub fn hash(token: &str) -> [u8; 32] {
    crate::identity::sha256(token.as_bytes())
}

/// The redb file of enrollment tokens (its path, for messages; the database).
pub struct EnrollmentTokens {
    path: PathBuf,
    pub(super) db: Database,
}

impl std::fmt::Debug for EnrollmentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentTokens")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EnrollmentTokens {
    /// Open the store at `path`, creating it (mode 0600) if missing. redb locks the file: a
    /// second opener, in this process or another, fails.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let opened = crate::state::db::open_private(path, 4 * 1024 * 1024);
        let store = EnrollmentTokens {
            path: path.to_path_buf(),
            db: opened.map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?,
        };
        // The tables exist from the start: a read of an empty store is no special case.
        store.write(|_| Ok(()))?;
        store.write_machines(|_| Ok(()))?;
        crate::state::db::in_write(&store.db, REVOKED_PINS, |_| Ok(()))
            .map_err(|f| store.failed(f))?;
        store.create_cert_tables()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Store a new token's record.
    pub fn insert(&self, hash: &[u8; 32], record: &TokenRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: e.to_string(),
        })?;
        self.write(|t| {
            t.insert(hash.as_slice(), json.as_str())?;
            Ok(())
        })
    }

    /// The record of `hash`, if it can be spent at `now` (nothing is changed).
    pub fn peek(
        &self,
        hash: &[u8; 32],
        now: u64,
    ) -> Result<Result<TokenRecord, TokenRefusal>, StoreError> {
        Ok(match self.find(hash)? {
            Some(record) => record.check(now).map(|()| record),
            None => Err(TokenRefusal::Unknown),
        })
    }

    /// The record of `hash`, spendable or not (a refusal of a known token names its machine).
    pub fn find(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let read = || -> Result<Option<String>, Failure> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(TOKENS)?;
            Ok(table.get(hash.as_slice())?.map(|v| v.value().to_owned()))
        };
        let found = read().map_err(|f| self.failed(f))?;
        found.map(|json| self.parse(&json)).transpose()
    }

    /// Spend `hash` at `now`: in one write transaction, check it and mark it spent.
    pub fn spend(
        &self,
        hash: &[u8; 32],
        now: u64,
    ) -> Result<Result<TokenRecord, TokenRefusal>, StoreError> {
        self.write(|t| {
            let Some(json) = t.get(hash.as_slice())?.map(|v| v.value().to_owned()) else {
                return Ok(Err(TokenRefusal::Unknown));
            };
            let mut record: TokenRecord =
                serde_json::from_str(&json).map_err(|e| Failure::Corrupt(e.to_string()))?;
            if let Err(why) = record.check(now) {
                return Ok(Err(why));
            }
            record.spent_at = Some(now);
            let json =
                serde_json::to_string(&record).map_err(|e| Failure::Corrupt(e.to_string()))?;
            t.insert(hash.as_slice(), json.as_str())?;
            Ok(Ok(record))
        })
    }

    /// Revoke every unspent, unrevoked token of `machine`; how many.
    pub fn revoke_machine(&self, machine: &str, now: u64) -> Result<usize, StoreError> {
        self.write(|t| {
            let mut changed = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let mut record: TokenRecord =
                    serde_json::from_str(v.value()).map_err(|e| Failure::Corrupt(e.to_string()))?;
                if record.machine == machine
                    && record.spent_at.is_none()
                    && record.revoked_at.is_none()
                {
                    record.revoked_at = Some(now);
                    let json = serde_json::to_string(&record)
                        .map_err(|e| Failure::Corrupt(e.to_string()))?;
                    changed.push((k.value().to_vec(), json));
                }
            }
            for (k, json) in &changed {
                t.insert(k.as_slice(), json.as_str())?;
            }
            Ok(changed.len())
        })
    }

    /// The record of `machine`, if it enrolled.
    pub fn machine(&self, machine: &str) -> Result<Option<MachineRecord>, StoreError> {
        let read = || -> Result<Option<String>, Failure> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(MACHINES)?;
            Ok(table.get(machine)?.map(|v| v.value().to_owned()))
        };
        match read().map_err(|f| self.failed(f))? {
            None => Ok(None),
            Some(json) => self.parse_machine(&json).map(Some),
        }
    }

    /// Refuse the key `spki_sha256` until `until` (Unix seconds; a later date wins).
    pub fn revoke_pin(&self, spki_sha256: &[u8; 32], until: u64) -> Result<(), StoreError> {
        crate::state::db::in_write(&self.db, REVOKED_PINS, |t| {
            let before = t
                .get(spki_sha256.as_slice())?
                .map(|v| v.value())
                .unwrap_or(0);
            t.insert(spki_sha256.as_slice(), before.max(until))?;
            Ok(())
        })
        .map_err(|f| self.failed(f))
    }

    /// The revoked keys still in force at `now`, each with the last second it is.
    pub fn revoked_pins(&self, now: u64) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        let read = || -> Result<Vec<([u8; 32], u64)>, Failure> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(REVOKED_PINS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, until) = row?;
                if let (Ok(pin), true) = (<[u8; 32]>::try_from(k.value()), until.value() >= now) {
                    out.push((pin, until.value()));
                }
            }
            Ok(out)
        };
        read().map_err(|f| self.failed(f))
    }

    /// Every enrolled machine's record.
    pub fn machines(&self) -> Result<Vec<(String, MachineRecord)>, StoreError> {
        let read = || -> Result<Vec<(String, String)>, Failure> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(MACHINES)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_owned(), v.value().to_owned()));
            }
            Ok(out)
        };
        let rows = read().map_err(|f| self.failed(f))?;
        rows.into_iter()
            .map(|(machine, json)| self.parse_machine(&json).map(|r| (machine, r)))
            .collect()
    }

    fn parse_machine(&self, json: &str) -> Result<MachineRecord, StoreError> {
        serde_json::from_str(json).map_err(|e| self.failed(Failure::Corrupt(e.to_string())))
    }

    /// Store `record` for `machine` if its current pin is `expected` (`None`: whatever it
    /// is), in one write transaction; false, and nothing written, if another change came
    /// first (two re-enrollments with one certificate: one wins).
    pub fn set_machine(
        &self,
        machine: &str,
        record: &MachineRecord,
        expected: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.write_machines(|t| {
            if let Some(pin) = expected {
                let current = t.get(machine)?.map(|v| v.value().to_owned());
                let current: Option<MachineRecord> = match current {
                    Some(json) => Some(
                        serde_json::from_str(&json).map_err(|e| Failure::Corrupt(e.to_string()))?,
                    ),
                    None => None,
                };
                if current.is_none_or(|c| c.pin != pin) {
                    return Ok(false);
                }
            }
            let json =
                serde_json::to_string(record).map_err(|e| Failure::Corrupt(e.to_string()))?;
            t.insert(machine, json.as_str())?;
            Ok(true)
        })
    }

    /// Forget `machine` (after its revocation); its record, if it had one.
    pub fn remove_machine(&self, machine: &str) -> Result<Option<MachineRecord>, StoreError> {
        self.write_machines(|t| {
            let Some(json) = t.remove(machine)?.map(|v| v.value().to_owned()) else {
                return Ok(None);
            };
            serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| Failure::Corrupt(e.to_string()))
        })
    }

    fn parse(&self, json: &str) -> Result<TokenRecord, StoreError> {
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: e.to_string(),
        })
    }

    pub(super) fn failed(&self, f: Failure) -> StoreError {
        match f {
            Failure::Db(source) => StoreError::Io {
                path: self.path.clone(),
                source,
            },
            Failure::Corrupt(what) => StoreError::Corrupt {
                path: self.path.clone(),
                what,
            },
        }
    }

    /// Run `f` in one write transaction; commit only if it returns Ok.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &[u8], &str>) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        crate::state::db::in_write(&self.db, TOKENS, f).map_err(|f| self.failed(f))
    }

    fn write_machines<T>(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &str, &str>) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        crate::state::db::in_write(&self.db, MACHINES, f).map_err(|f| self.failed(f))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn record(expires_at: u64) -> TokenRecord {
        TokenRecord {
            machine: "m1".into(),
            template: "agent".into(),
            created_at: 100,
            expires_at,
            spent_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_token_is_spent_once_and_its_store_holds_only_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let store = EnrollmentTokens::open(&path).unwrap();
        let (token, h) = new_token().unwrap();
        assert!(token.starts_with(PREFIX) && token.len() == PREFIX.len() + 43);
        store.insert(&h, &record(1000)).unwrap();
        assert!(store.peek(&h, 500).unwrap().is_ok());
        assert_eq!(store.spend(&h, 500).unwrap().unwrap().spent_at, Some(500));
        assert_eq!(store.spend(&h, 501).unwrap(), Err(TokenRefusal::Spent));
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        let text = token.as_bytes();
        assert!(!bytes.windows(text.len()).any(|w| w == text));
    }

    #[test]
    fn expired_revoked_and_unknown_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EnrollmentTokens::open(&dir.path().join("t.redb")).unwrap();
        let (_, a) = new_token().unwrap();
        let (_, b) = new_token().unwrap();
        let (_, c) = new_token().unwrap();
        store.insert(&a, &record(1000)).unwrap();
        store.insert(&b, &record(1000)).unwrap();
        assert_eq!(store.spend(&a, 1001).unwrap(), Err(TokenRefusal::Expired));
        assert_eq!(store.revoke_machine("m1", 10).unwrap(), 2);
        assert_eq!(store.spend(&b, 500).unwrap(), Err(TokenRefusal::Revoked));
        assert_eq!(store.spend(&c, 500).unwrap(), Err(TokenRefusal::Unknown));
    }
}
