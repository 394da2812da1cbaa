//! The token issuer's state: clients, signing keys, refresh-token families and their token
//! hashes, revoked access-token ids, and a few settings.
//!
//! The issuer talks to it through one interface, [`IssuerState`]: a transaction over
//! [`IssuerTx`] (or a consistent read over [`IssuerRead`]). Every read-check-write of the
//! issuer (a refresh-token rotation, adding a client) runs inside one transaction, so it is
//! atomic against every other writer on the same state: of two refreshes of one token, one
//! wins. `embedded.rs` keeps it in a redb file (one opener, serialised writers); a shared
//! backend (Redis) implements the same contract with optimistic transactions, which is why a
//! transaction body may run more than once and must have no effect outside the transaction.

mod embedded;
mod records;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use embedded::Embedded;
pub use records::{ClientRecord, FamilyRecord, KeyRecord, PrivateKey, SigningAlg};

/// Meta key: the kid that signs now.
pub const META_CURRENT_KID: &str = "current_kid";
/// Meta key: the issuer's configured access-token lifetime, in seconds (key retention reads it).
pub const META_ACCESS_TTL: &str = "access_token_ttl_secs";

/// Why the state could not be opened, read or written. Names the file, never a value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Something else (a running gateway, another CLI) has the file open: redb allows one.
    #[error(
        "the issuer store {} is already open (by a running gateway?): redb allows one opener",
        path.display()
    )]
    InUse { path: PathBuf },
    /// The file could not be created or opened (missing folder, permissions, not redb).
    #[error("cannot open the issuer store {}: {source}", path.display())]
    Open { path: PathBuf, source: redb::Error },
    /// A read or write transaction failed; nothing was changed.
    #[error("the issuer store {} failed: {source}", path.display())]
    Io { path: PathBuf, source: redb::Error },
    /// A record is not one this version understands (edited outside portcullis?).
    #[error("the issuer store {} holds a record that cannot be read: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
    /// Key generation or signing failed (the system random source or aws-lc).
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// Signing keys sealed under the vault cannot be opened (no vault, or another one), or
    /// would be written in clear into a store whose keys are sealed.
    #[error("the issuer store {}: {what}", path.display())]
    Sealed { path: PathBuf, what: String },
    /// The backend broke its own contract (a transaction reported success without running).
    #[error("the issuer store failed: {0}")]
    Backend(&'static str),
    /// The shared store (Redis) did not answer; nothing was changed. Names the server and
    /// the key prefix, never a credential.
    #[error("the issuer store {location} is unavailable: {what}")]
    Unavailable { location: String, what: String },
    /// Other instances changed what a transaction read every time it ran.
    #[error("the issuer store {location}: gave up after {attempts} attempts met concurrent writes")]
    Contention { location: String, attempts: usize },
}

impl StoreError {
    /// Whether the request may succeed later, unchanged (the store was unreachable or busy):
    /// answered 503 `state_unavailable`, not 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Contention { .. }
        )
    }
}

/// What fails inside a transaction, before the backend adds where it happened.
#[derive(Debug)]
pub enum TxError {
    Redb(redb::Error),
    Corrupt(String),
    Crypto(&'static str),
    Sealed(String),
    /// The shared store did not answer.
    Unavailable(String),
}

/// Reads, in a read or a write transaction.
pub trait IssuerRead {
    fn client(&self, id: &str) -> Result<Option<ClientRecord>, TxError>;
    fn clients(&self) -> Result<Vec<ClientRecord>, TxError>;
    fn keys(&self) -> Result<Vec<KeyRecord>, TxError>;
    fn key(&self, kid: &str) -> Result<Option<KeyRecord>, TxError>;
    fn family(&self, id: &str) -> Result<Option<FamilyRecord>, TxError>;
    /// The family of the refresh token whose SHA-256 is `hash` (current or retired).
    fn family_of(&self, hash: &[u8; 32]) -> Result<Option<String>, TxError>;
    /// `(jti, exp)` of every revoked access token.
    fn revoked(&self) -> Result<Vec<(String, u64)>, TxError>;
    fn meta(&self, key: &str) -> Result<Option<String>, TxError>;
    /// Every refresh-token family (for moving the state to another store).
    fn families(&self) -> Result<Vec<FamilyRecord>, TxError>;
    /// Every refresh-token hash and its family (for moving the state to another store).
    fn refresh_hashes(&self) -> Result<Vec<([u8; 32], String)>, TxError>;
    /// Every meta entry (for moving the state to another store).
    fn metas(&self) -> Result<Vec<(String, String)>, TxError>;
}

/// Writes, in a write transaction; they take effect when the transaction commits.
pub trait IssuerTx: IssuerRead {
    fn put_client(&mut self, c: &ClientRecord) -> Result<(), TxError>;
    fn put_key(&mut self, k: &KeyRecord) -> Result<(), TxError>;
    fn put_family(&mut self, f: &FamilyRecord) -> Result<(), TxError>;
    fn put_refresh(&mut self, hash: &[u8; 32], family: &str) -> Result<(), TxError>;
    fn revoke_jti(&mut self, jti: &str, exp: u64) -> Result<(), TxError>;
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), TxError>;
    /// Drop what can no longer matter at `now` (Unix seconds): families past their absolute
    /// expiry (and their token hashes), revocations of tokens expired for longer than
    /// `grace`, keys whose retention ended. Returns how many records went.
    fn prune(&mut self, now: u64, grace: u64) -> Result<usize, TxError>;
}

/// A body run in a transaction. It may run more than once (see the module doc).
pub type WriteBody<'a> = dyn FnMut(&mut dyn IssuerTx) -> Result<(), TxError> + 'a;
/// A body run over a consistent read.
pub type ReadBody<'a> = dyn FnMut(&dyn IssuerRead) -> Result<(), TxError> + 'a;

/// Where the issuer's state lives. Object-safe, so the issuer holds whichever backend the
/// config chose; [`write`](dyn IssuerState::write) and [`read`](dyn IssuerState::read) are
/// the typed front.
pub trait IssuerState: Send + Sync + std::fmt::Debug {
    /// Run `body` in one write transaction; commit only if it returns Ok. Blocks while
    /// another writer runs (callers on the async path use `spawn_blocking`).
    fn transact(&self, body: &mut WriteBody<'_>) -> Result<(), StoreError>;
    /// Run `body` over one consistent snapshot.
    fn snapshot(&self, body: &mut ReadBody<'_>) -> Result<(), StoreError>;
    /// Where it lives, for logs and errors (a path; never a credential).
    fn location(&self) -> String;
}

impl dyn IssuerState + '_ {
    /// Run `f` in one write transaction and return what it returned.
    pub fn write<T>(
        &self,
        mut f: impl FnMut(&mut dyn IssuerTx) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let mut out = None;
        self.transact(&mut |tx| {
            out = Some(f(tx)?);
            Ok(())
        })?;
        out.ok_or(StoreError::Backend(
            "it committed without running the transaction",
        ))
    }

    /// Run `f` over one consistent snapshot and return what it returned.
    pub fn read<T>(
        &self,
        mut f: impl FnMut(&dyn IssuerRead) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let mut out = None;
        self.snapshot(&mut |rx| {
            out = Some(f(rx)?);
            Ok(())
        })?;
        out.ok_or(StoreError::Backend("it read without running the body"))
    }
}
