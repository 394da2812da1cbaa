//! The token issuer's state in Redis, for a fleet: every instance reads and writes the same
//! clients, signing keys, refresh families and revocations.
//!
//! The [`IssuerState`] contract is one transaction per read-check-write. Here it is Redis's
//! optimistic transaction: every key the body reads is `WATCH`ed before it is read, its writes
//! are buffered (and read back by the body itself), and they go in one `MULTI`/`EXEC`. When
//! another instance changed a watched key in between, `EXEC` does nothing and the body runs
//! again on fresh reads, so of two refreshes of one token exactly one commits. The issuer runs
//! these calls on the blocking pool, so the connection is the crate's synchronous one.
//!
//! Layout, under `key_prefix` + `{iss}` (one hash tag, so a transaction's keys share a slot):
//! `c:ID` client, `k:KID` signing key, `f:ID` family and `r:HEX` refresh-token hash (both
//! expiring an hour after the family's absolute expiry), the sets `clients` and `keys`, the
//! sorted set `revoked` (jti by exp) and the hash `meta`. Records are the embedded store's JSON.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use redis::{Commands, Connection};

use super::RedisStore;
use crate::state::issuer::{
    ClientRecord, FamilyRecord, IssuerRead, IssuerState, IssuerTx, KeyRecord, ReadBody, StoreError,
    TxError, WriteBody,
};

/// Bodies run at most this many times against competing writers before the caller is told.
const MAX_ATTEMPTS: usize = 64;
/// Families and refresh hashes stay this long past the family's absolute expiry (the
/// embedded store prunes them with the same kind of slack).
const FAMILY_SLACK_SECS: u64 = 3600;

/// The issuer's state on the fleet's Redis.
pub struct RedisIssuerState {
    store: Arc<RedisStore>,
    prefix: String,
}

impl std::fmt::Debug for RedisIssuerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIssuerState")
            .field("location", &self.location())
            .finish_non_exhaustive()
    }
}

impl RedisIssuerState {
    pub fn new(store: Arc<RedisStore>) -> RedisIssuerState {
        let prefix = format!("{}{}", store.settings().key_prefix, super::CONTROL_TAG);
        RedisIssuerState { store, prefix }
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            location: self.location(),
            what: what.to_string(),
        }
    }

    /// Run `body` until its reads were not changed by another writer before its writes
    /// committed (or it fails, or [`MAX_ATTEMPTS`] runs all met competition).
    fn run(
        &self,
        body: &mut dyn FnMut(&mut Tx<'_>) -> Result<(), TxError>,
    ) -> Result<(), StoreError> {
        let started = crate::clock::mono_at(std::time::Instant::now());
        let mut conn = self
            .store
            .sync_connection()
            .map_err(|e| self.unavailable(e))?;
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = Tx {
                conn: RefCell::new(&mut conn),
                prefix: &self.prefix,
                watched: RefCell::new(BTreeSet::new()),
                writes: Writes::default(),
            };
            let outcome = body(&mut tx);
            let writes = std::mem::take(&mut tx.writes);
            drop(tx);
            match outcome {
                Ok(()) => {}
                Err(TxError::Unavailable(what)) => {
                    self.store.sync_failed_with(&what);
                    return Err(self.unavailable(what));
                }
                Err(e) => {
                    // The connection is in a clean state once the watches are dropped.
                    if redis::cmd("UNWATCH").query::<()>(&mut conn).is_ok() {
                        self.store.give_back(conn);
                    }
                    return Err(self.error(e));
                }
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            writes.apply(&mut pipe, &self.prefix);
            match pipe.query::<Option<Vec<redis::Value>>>(&mut conn) {
                Ok(Some(_)) => {
                    self.store.sync_succeeded(conn, started);
                    return Ok(());
                }
                // A watched key changed: read again and decide again.
                Ok(None) => continue,
                Err(e) => return Err(self.unavailable(self.store.sync_failed(&e))),
            }
        }
        self.store.give_back(conn);
        Err(StoreError::Contention {
            location: self.location(),
            attempts: MAX_ATTEMPTS,
        })
    }

    fn error(&self, e: TxError) -> StoreError {
        match e {
            TxError::Unavailable(what) => self.unavailable(what),
            TxError::Corrupt(what) => StoreError::Corrupt {
                path: self.location().into(),
                what,
            },
            TxError::Crypto(what) => StoreError::Crypto(what),
            TxError::Sealed(what) => StoreError::Sealed {
                path: self.location().into(),
                what,
            },
            TxError::Redb(e) => self.unavailable(e),
        }
    }
}

impl IssuerState for RedisIssuerState {
    fn transact(&self, body: &mut WriteBody<'_>) -> Result<(), StoreError> {
        self.run(&mut |tx| body(tx))
    }

    // A read is a transaction with no writes: its `EXEC` fails if anything read changed, so
    // the body saw one consistent state.
    fn snapshot(&self, body: &mut ReadBody<'_>) -> Result<(), StoreError> {
        self.run(&mut |tx| body(tx))
    }

    fn location(&self) -> String {
        // Not the server's address: logs name the store by its keys.
        format!("in Redis (keys {}*)", self.prefix)
    }
}

/// What a transaction will write, in order of kind; the body reads its own writes from here.
#[derive(Default)]
struct Writes {
    /// Record key (without the prefix) -> (JSON, Unix second it expires at).
    records: BTreeMap<String, (String, Option<u64>)>,
    deleted: BTreeSet<String>,
    /// (set, member) added and removed.
    added: BTreeSet<(&'static str, String)>,
    removed: BTreeSet<(&'static str, String)>,
    revoked: BTreeMap<String, u64>,
    /// Revocations with `exp` below this go.
    revoked_below: Option<u64>,
    meta: BTreeMap<String, String>,
}

impl Writes {
    fn apply(self, pipe: &mut redis::Pipeline, prefix: &str) {
        let k = |s: &str| format!("{prefix}{s}");
        for (key, (json, expires)) in self.records {
            match expires {
                Some(at) => pipe.cmd("SET").arg(k(&key)).arg(json).arg("EXAT").arg(at),
                None => pipe.cmd("SET").arg(k(&key)).arg(json),
            }
            .ignore();
        }
        for key in self.deleted {
            pipe.cmd("DEL").arg(k(&key)).ignore();
        }
        for (set, member) in self.added {
            pipe.cmd("SADD").arg(k(set)).arg(member).ignore();
        }
        for (set, member) in self.removed {
            pipe.cmd("SREM").arg(k(set)).arg(member).ignore();
        }
        if let Some(below) = self.revoked_below {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(k(REVOKED))
                .arg("-inf")
                .arg(format!("({below}"))
                .ignore();
        }
        for (jti, exp) in self.revoked {
            pipe.cmd("ZADD").arg(k(REVOKED)).arg(exp).arg(jti).ignore();
        }
        for (field, value) in self.meta {
            pipe.cmd("HSET").arg(k(META)).arg(field).arg(value).ignore();
        }
        // EXEC answers an empty transaction with an empty array, and nil when a watched key
        // changed: the check the caller wants either way.
    }
}

const CLIENTS: &str = "clients";
const KEYS: &str = "keys";
const REVOKED: &str = "revoked";
const META: &str = "meta";

fn client_key(id: &str) -> String {
    format!("c:{id}")
}
fn key_key(kid: &str) -> String {
    format!("k:{kid}")
}
fn family_key(id: &str) -> String {
    format!("f:{id}")
}
fn refresh_key(hash: &[u8; 32]) -> String {
    format!("r:{}", hex(hash))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One run of a transaction body.
struct Tx<'c> {
    conn: RefCell<&'c mut Connection>,
    prefix: &'c str,
    watched: RefCell<BTreeSet<String>>,
    writes: Writes,
}

fn down(e: redis::RedisError) -> TxError {
    TxError::Unavailable(e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, json: &str) -> Result<T, TxError> {
    serde_json::from_str(json).map_err(|e| TxError::Corrupt(format!("record \"{key:.64}\": {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, TxError> {
    serde_json::to_string(v).map_err(|e| TxError::Corrupt(e.to_string()))
}

impl Tx<'_> {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// WATCH `keys` not yet watched in this run, so a change by anyone else from now on
    /// voids the commit.
    fn watch(&self, keys: &[&str]) -> Result<(), TxError> {
        let mut watched = self.watched.borrow_mut();
        let new: Vec<String> = keys
            .iter()
            .filter(|k| !watched.contains(**k))
            .map(|k| self.full(k))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        redis::cmd("WATCH")
            .arg(&new)
            .query::<()>(&mut **self.conn.borrow_mut())
            .map_err(down)?;
        watched.extend(keys.iter().map(|k| (*k).to_owned()));
        Ok(())
    }

    /// A record, as this transaction would leave it.
    fn record(&self, key: &str) -> Result<Option<String>, TxError> {
        if let Some((json, _)) = self.writes.records.get(key) {
            return Ok(Some(json.clone()));
        }
        if self.writes.deleted.contains(key) {
            return Ok(None);
        }
        self.watch(&[key])?;
        self.conn
            .borrow_mut()
            .get::<_, Option<String>>(self.full(key))
            .map_err(down)
    }

    fn records<T: serde::de::DeserializeOwned>(
        &self,
        set: &'static str,
        key_of: fn(&str) -> String,
    ) -> Result<Vec<T>, TxError> {
        self.watch(&[set])?;
        let mut members: BTreeSet<String> = self
            .conn
            .borrow_mut()
            .smembers::<_, BTreeSet<String>>(self.full(set))
            .map_err(down)?;
        for (s, m) in &self.writes.added {
            if *s == set {
                members.insert(m.clone());
            }
        }
        for (s, m) in &self.writes.removed {
            if *s == set {
                members.remove(m);
            }
        }
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            let key = key_of(&m);
            if let Some(json) = self.record(&key)? {
                out.push(parse(&key, &json)?);
            }
        }
        Ok(out)
    }

    fn put(&mut self, key: String, json: String, expires: Option<u64>) {
        self.writes.deleted.remove(&key);
        self.writes.records.insert(key, (json, expires));
    }
}

impl IssuerRead for Tx<'_> {
    fn client(&self, id: &str) -> Result<Option<ClientRecord>, TxError> {
        let key = client_key(id);
        self.record(&key)?.map(|j| parse(&key, &j)).transpose()
    }

    fn clients(&self) -> Result<Vec<ClientRecord>, TxError> {
        self.records(CLIENTS, client_key)
    }

    fn keys(&self) -> Result<Vec<KeyRecord>, TxError> {
        self.records(KEYS, key_key)
    }

    fn key(&self, kid: &str) -> Result<Option<KeyRecord>, TxError> {
        let key = key_key(kid);
        self.record(&key)?.map(|j| parse(&key, &j)).transpose()
    }

    fn family(&self, id: &str) -> Result<Option<FamilyRecord>, TxError> {
        let key = family_key(id);
        self.record(&key)?.map(|j| parse(&key, &j)).transpose()
    }

    fn family_of(&self, hash: &[u8; 32]) -> Result<Option<String>, TxError> {
        self.record(&refresh_key(hash))
    }

    fn revoked(&self) -> Result<Vec<(String, u64)>, TxError> {
        self.watch(&[REVOKED])?;
        let stored: Vec<(String, u64)> = self
            .conn
            .borrow_mut()
            .zrange_withscores(self.full(REVOKED), 0, -1)
            .map_err(down)?;
        let mut all: HashMap<String, u64> = stored.into_iter().collect();
        all.extend(self.writes.revoked.iter().map(|(j, e)| (j.clone(), *e)));
        if let Some(below) = self.writes.revoked_below {
            all.retain(|_, exp| *exp >= below);
        }
        Ok(all.into_iter().collect())
    }

    fn families(&self) -> Result<Vec<FamilyRecord>, TxError> {
        let mut out = Vec::new();
        for key in self.scan("f:*")? {
            if let Some(json) = self.record(&key)? {
                out.push(parse(&key, &json)?);
            }
        }
        Ok(out)
    }

    fn refresh_hashes(&self) -> Result<Vec<([u8; 32], String)>, TxError> {
        let mut out = Vec::new();
        for key in self.scan("r:*")? {
            let hash = key
                .strip_prefix("r:")
                .and_then(unhex)
                .ok_or_else(|| TxError::Corrupt(format!("key \"{key:.80}\" is not r:<64 hex>")))?;
            if let Some(family) = self.record(&key)? {
                out.push((hash, family));
            }
        }
        Ok(out)
    }

    fn metas(&self) -> Result<Vec<(String, String)>, TxError> {
        self.watch(&[META])?;
        let mut all: BTreeMap<String, String> = self
            .conn
            .borrow_mut()
            .hgetall(self.full(META))
            .map_err(down)?;
        all.extend(self.writes.meta.clone());
        Ok(all.into_iter().collect())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, TxError> {
        if let Some(v) = self.writes.meta.get(key) {
            return Ok(Some(v.clone()));
        }
        self.watch(&[META])?;
        self.conn
            .borrow_mut()
            .hget::<_, _, Option<String>>(self.full(META), key)
            .map_err(down)
    }
}

impl Tx<'_> {
    /// The record keys under `pattern` (after the prefix), watched; SCAN, so a large store
    /// is read in steps without blocking the server. Only for moving state.
    fn scan(&self, pattern: &str) -> Result<Vec<String>, TxError> {
        let full = format!("{}{pattern}", glob_escape(self.prefix));
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&full)
                .arg("COUNT")
                .arg(1000)
                .query(&mut **self.conn.borrow_mut())
                .map_err(down)?;
            out.extend(
                batch
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(self.prefix).map(str::to_owned)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// `s` with the glob characters SCAN MATCH gives meaning to escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl IssuerTx for Tx<'_> {
    fn put_client(&mut self, c: &ClientRecord) -> Result<(), TxError> {
        let json = to_json(c)?;
        self.put(client_key(&c.id), json, None);
        self.writes.added.insert((CLIENTS, c.id.clone()));
        Ok(())
    }

    fn put_key(&mut self, k: &KeyRecord) -> Result<(), TxError> {
        let json = to_json(k)?;
        self.put(key_key(&k.kid), json, None);
        self.writes.added.insert((KEYS, k.kid.clone()));
        Ok(())
    }

    fn put_family(&mut self, f: &FamilyRecord) -> Result<(), TxError> {
        let json = to_json(f)?;
        let until = f.expires_at.saturating_add(FAMILY_SLACK_SECS);
        self.put(family_key(&f.id), json, Some(until));
        Ok(())
    }

    fn put_refresh(&mut self, hash: &[u8; 32], family: &str) -> Result<(), TxError> {
        // A hash lives as long as its family's record.
        let until = self
            .family(family)?
            .map(|f| f.expires_at.saturating_add(FAMILY_SLACK_SECS));
        self.put(refresh_key(hash), family.to_owned(), until);
        Ok(())
    }

    fn revoke_jti(&mut self, jti: &str, exp: u64) -> Result<(), TxError> {
        self.writes.revoked.insert(jti.to_owned(), exp);
        Ok(())
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), TxError> {
        self.writes.meta.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn prune(&mut self, now: u64, grace: u64) -> Result<usize, TxError> {
        // Families and their refresh hashes expire by themselves (EXAT).
        let below = now.saturating_sub(grace);
        let mut gone = self
            .revoked()?
            .iter()
            .filter(|(_, exp)| *exp < below)
            .count();
        self.writes.revoked_below = Some(below);
        self.writes.revoked.retain(|_, exp| *exp >= below);
        for k in self.keys()? {
            if k.retain_until.is_some_and(|t| t < now) {
                let key = key_key(&k.kid);
                self.writes.records.remove(&key);
                self.writes.deleted.insert(key);
                self.writes.removed.insert((KEYS, k.kid.clone()));
                self.writes.added.remove(&(KEYS, k.kid));
                gone += 1;
            }
        }
        Ok(gone)
    }
}
