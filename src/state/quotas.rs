//! Quota counts, kept in memory and written behind to a redb table, so a restart is no way
//! around a quota.
//!
//! A request counts in memory (one sharded map lookup under a short lock); a writer task
//! flushes the changed counts once a second in one transaction, and the last flush runs on
//! shutdown (and when the store is dropped). A crash loses at most the last second's counts:
//! the machine gets that many requests back, never fewer. The table holds
//! `key (16-byte digest) -> (resets_at, used)`; rows of windows that have turned are pruned
//! on open and hourly after.
//!
//! Memory is bounded like the rate limits': at most `max_keys` counts are held; beyond it,
//! counts already on disk are dropped from memory (the oldest windows first) and read back
//! from the table when their key returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::limits::{Quota, QuotaKey, QuotaState, QuotaUse, QuotaVerdict};

/// `digest -> (resets_at, used)`. A new layout gets a new table name.
const QUOTAS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("quotas_v1");

const SHARDS: usize = 16;

/// Why the quota store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum QuotaStoreError {
    #[error("cannot open the quota store {}: {source}", path.display())]
    Open { path: PathBuf, source: redb::Error },
    #[error("the quota store {} failed: {source}", path.display())]
    Io { path: PathBuf, source: redb::Error },
}

#[derive(Debug, Clone, Copy)]
struct Count {
    /// First second of the next window: the count is void from then on.
    resets_at: u64,
    used: u64,
    /// Changed since the last flush.
    dirty: bool,
}

/// Quota counts behind a redb file (its own, or the license store's).
pub struct EmbeddedQuotas {
    db: Arc<Database>,
    path: PathBuf,
    shards: Box<[Mutex<HashMap<QuotaKey, Count>>]>,
    per_shard: usize,
    /// Some count was dropped from memory: a miss must look in the table.
    evicted: AtomicBool,
    /// The hour (Unix seconds / 3600) of the last prune.
    pruned_hour: AtomicU64,
}

impl std::fmt::Debug for EmbeddedQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuotaStore({})", self.path.display())
    }
}

impl EmbeddedQuotas {
    /// Open (or create, mode 0600) the quota file at `path` and load the counts of windows
    /// that have not turned at `now` (Unix seconds).
    pub fn open(path: &Path, max_keys: usize, now: u64) -> Result<Self, QuotaStoreError> {
        let db = crate::state::db::open_private(path, 32 * 1024 * 1024).map_err(|source| {
            QuotaStoreError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Self::in_db(Arc::new(db), path, max_keys, now)
    }

    /// Keep the counts in `db`, a database already open (the license store's: redb allows
    /// one opener per file).
    pub fn in_db(
        db: Arc<Database>,
        path: &Path,
        max_keys: usize,
        now: u64,
    ) -> Result<Self, QuotaStoreError> {
        let store = EmbeddedQuotas {
            db,
            path: path.to_path_buf(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            evicted: AtomicBool::new(false),
            pruned_hour: AtomicU64::new(now / 3600),
        };
        store.load(now).map_err(|source| store.io(source))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts held in memory (for tests and the memory bound).
    pub fn held(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Write every changed count in one transaction (and, once an hour, drop the rows of
    /// windows that turned before `now`). Returns how many counts were written. On failure
    /// the counts stay marked changed, so the next flush tries them again.
    pub fn flush(&self, now: u64) -> Result<usize, QuotaStoreError> {
        let mut batch = Vec::new();
        for shard in self.shards.iter() {
            for (k, c) in lock(shard).iter_mut().filter(|(_, c)| c.dirty) {
                c.dirty = false;
                batch.push((*k, c.resets_at, c.used));
            }
        }
        let prune = now / 3600 != self.pruned_hour.load(Ordering::Relaxed);
        if batch.is_empty() && !prune {
            return Ok(0);
        }
        let write = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(QUOTAS)?;
                for (k, resets_at, used) in &batch {
                    table.insert(&k.0[..], (*resets_at, *used))?;
                }
                if prune {
                    table.retain(|_, (resets_at, _)| resets_at > now)?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        match write() {
            Ok(()) => {
                if prune {
                    self.pruned_hour.store(now / 3600, Ordering::Relaxed);
                }
                Ok(batch.len())
            }
            Err(source) => {
                for (k, _, _) in &batch {
                    if let Some(c) = lock(self.shard(k)).get_mut(k) {
                        c.dirty = true;
                    }
                }
                Err(self.io(source))
            }
        }
    }

    fn load(&self, now: u64) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(QUOTAS)?;
            table.retain(|_, (resets_at, _)| resets_at > now)?;
            for row in table.iter()? {
                let (k, v) = row?;
                let Ok(key) = <[u8; 16]>::try_from(k.value()) else {
                    continue;
                };
                let key = QuotaKey(key);
                let (resets_at, used) = v.value();
                let mut shard = lock(self.shard(&key));
                if shard.len() >= self.per_shard {
                    // The rest stay on disk and are read back when their key returns.
                    self.evicted.store(true, Ordering::Relaxed);
                    continue;
                }
                shard.insert(
                    key,
                    Count {
                        resets_at,
                        used,
                        dirty: false,
                    },
                );
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn shard(&self, key: &QuotaKey) -> &Mutex<HashMap<QuotaKey, Count>> {
        // The key is a digest already: its first byte is uniform.
        &self.shards[usize::from(key.0[0]) % SHARDS]
    }

    /// The count of `key` as stored, if it was dropped from memory earlier.
    fn stored(&self, key: &QuotaKey) -> Option<Count> {
        if !self.evicted.load(Ordering::Relaxed) {
            return None;
        }
        let read = || -> Result<Option<(u64, u64)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(QUOTAS)?;
            Ok(table.get(&key.0[..])?.map(|v| v.value()))
        };
        match read() {
            Ok(v) => v.map(|(resets_at, used)| Count {
                resets_at,
                used,
                dirty: false,
            }),
            Err(e) => {
                // Counting from zero would hand the key its quota back; it is logged, and
                // the flush that follows writes the larger of the two counts it then has.
                tracing::error!(error = %self.io(e), "quota store read failed");
                None
            }
        }
    }

    /// Make room in a full shard: drop counts already on disk, those of the earliest
    /// windows first, an eighth of the shard at a time (amortised constant time).
    fn evict(&self, shard: &mut HashMap<QuotaKey, Count>) {
        let mut clean: Vec<(u64, QuotaKey)> = shard
            .iter()
            .filter(|(_, c)| !c.dirty)
            .map(|(k, c)| (c.resets_at, *k))
            .collect();
        let n = (self.per_shard / 8).max(1).min(clean.len());
        if n == 0 {
            // Every count is waiting for the next flush: hold them (at most a second's worth).
            return;
        }
        clean.select_nth_unstable(n - 1);
        for (_, k) in &clean[..n] {
            shard.remove(k);
        }
        self.evicted.store(true, Ordering::Relaxed);
    }

    fn io(&self, source: redb::Error) -> QuotaStoreError {
        QuotaStoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl QuotaState for EmbeddedQuotas {
    fn take(&self, key: &QuotaKey, quota: Quota, now: u64) -> QuotaVerdict {
        let mut shard = lock(self.shard(key));
        let count = match shard.get_mut(key) {
            Some(c) => c,
            None => {
                let stored = self.stored(key).unwrap_or(Count {
                    resets_at: 0,
                    used: 0,
                    dirty: false,
                });
                if shard.len() >= self.per_shard {
                    self.evict(&mut shard);
                }
                shard.entry(*key).or_insert(stored)
            }
        };
        if now >= count.resets_at {
            count.resets_at = quota.window.bounds(now).1;
            count.used = 0;
        }
        if count.used >= quota.count {
            return QuotaVerdict::Exhausted {
                resets_at: count.resets_at,
            };
        }
        count.used += 1;
        count.dirty = true;
        QuotaVerdict::Taken {
            remaining: quota.count - count.used,
        }
    }

    fn usage(&self, key: &QuotaKey, quota: Quota, now: u64) -> QuotaUse {
        let held = lock(self.shard(key)).get(key).copied();
        let count = held.or_else(|| self.stored(key));
        match count {
            Some(c) if now < c.resets_at => QuotaUse {
                used: c.used,
                resets_at: c.resets_at,
            },
            Some(_) | None => QuotaUse {
                used: 0,
                resets_at: quota.window.bounds(now).1,
            },
        }
    }
}

impl Drop for EmbeddedQuotas {
    /// The last flush: a store replaced by a reload or closed at shutdown loses nothing.
    fn drop(&mut self) {
        let now = crate::clock::unix_now();
        if let Err(e) = self.flush(now) {
            tracing::error!(error = %e, "quota counts could not be written on close");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic mid-update leaves a count at worst one off; the map itself stays sound.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Window;

    const DAY: u64 = 86_400;
    /// 2027-03-14T12:00:00Z.
    const NOON: u64 = 1_805_025_600;

    fn day(count: u64) -> Quota {
        Quota {
            count,
            window: Window::Day,
        }
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_quota_is_used_up_then_refused_until_the_window_turns() {
        let d = dir();
        let q = EmbeddedQuotas::open(&d.path().join("q.redb"), 1000, NOON).unwrap();
        let k = QuotaKey::license("lic-1");
        for left in (0..3).rev() {
            assert_eq!(
                q.take(&k, day(3), NOON),
                QuotaVerdict::Taken { remaining: left }
            );
        }
        let midnight = NOON + DAY / 2;
        assert_eq!(
            q.take(&k, day(3), NOON + 10),
            QuotaVerdict::Exhausted {
                resets_at: midnight
            }
        );
        // A refusal is not counted.
        assert_eq!(q.usage(&k, day(3), NOON).used, 3);
        // Another key has its own count.
        assert_eq!(
            q.take(&QuotaKey::license("lic-2"), day(3), NOON),
            QuotaVerdict::Taken { remaining: 2 }
        );
        assert_eq!(
            q.take(&k, day(3), midnight),
            QuotaVerdict::Taken { remaining: 2 }
        );
    }

    #[test]
    fn counts_survive_closing_and_reopening_the_file() {
        let d = dir();
        let path = d.path().join("q.redb");
        let k = QuotaKey::of("orders#0", b"10.0.0.1");
        {
            let q = EmbeddedQuotas::open(&path, 1000, NOON).unwrap();
            for _ in 0..5 {
                q.take(&k, day(10), NOON);
            }
            assert_eq!(q.flush(NOON).unwrap(), 1);
            // Two more, written by the flush on drop.
            q.take(&k, day(10), NOON);
            q.take(&k, day(10), NOON);
        }
        let q = EmbeddedQuotas::open(&path, 1000, NOON + 60).unwrap();
        assert_eq!(q.usage(&k, day(10), NOON + 60).used, 7);
        drop(q);
        // Opened after the window turned: the row is pruned, the count starts again.
        let q = EmbeddedQuotas::open(&path, 1000, NOON + DAY).unwrap();
        assert_eq!(q.held(), 0);
        assert_eq!(q.usage(&k, day(10), NOON + DAY).used, 0);
    }

    #[test]
    fn counts_dropped_from_memory_are_read_back_from_the_table() {
        let d = dir();
        // 16 shards of one count each.
        let q = EmbeddedQuotas::open(&d.path().join("q.redb"), 16, NOON).unwrap();
        let keys: Vec<QuotaKey> = (0u32..200)
            .map(|i| QuotaKey::of("r#0", &i.to_be_bytes()))
            .collect();
        for k in &keys {
            q.take(k, day(5), NOON);
            q.take(k, day(5), NOON);
            q.flush(NOON).unwrap();
        }
        assert!(q.held() <= 16, "{} counts held", q.held());
        for k in &keys {
            assert_eq!(q.usage(k, day(5), NOON).used, 2);
            assert_eq!(
                q.take(k, day(5), NOON),
                QuotaVerdict::Taken { remaining: 2 }
            );
        }
    }
}
