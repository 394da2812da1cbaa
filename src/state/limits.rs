//! Rate-limit and in-flight state in process memory ([`LocalLimits`]): the embedded backend of
//! [`LimitState`].
//!
//! Keys are `(scope, value)` hashed with a per-process random SipHash key, so a caller cannot
//! choose values that pile into one bucket; one 64-bit hash per key (a chance collision among
//! a million keys is about 3 in 100 million, and at worst shares a limit).
//!
//! Memory is bounded: GCRA state is one `u64` per key in 64 shards, each shard capped at
//! `max_keys / 64`. A key whose TAT is in the past is rested, the same as absent, so it is
//! dropped first at no cost to accuracy; only when a shard is full of busy keys do the ones
//! that rest soonest (the oldest) go, an eighth of the shard at a time so a flood of new keys
//! costs amortised constant time. In-flight counts exist only while a request holds a slot.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::limits::{Gcra, InFlightSlot, LimitState, Verdict, gcra};

const SHARDS: usize = 64;

/// Default cap on tracked rate-limit keys.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Bytes per tracked key at most, for the documented bound: a hashbrown bucket of
/// `(u64, u64)` is 17 bytes, at a load factor no lower than 7/16 after growth (it doubles at
/// 7/8 full): 17 * 16 / 7 < 39.
pub const BYTES_PER_KEY: usize = 39;

/// The keys are already random hashes: hashing them again would only cost time.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else so it is still a function of the input.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<V> = HashMap<u64, V, BuildHasherDefault<Identity>>;

/// GCRA state and in-flight counts for one process.
pub struct LocalLimits {
    hasher: RandomState,
    rates: Box<[Mutex<Map<u64>>]>,
    shard_cap: usize,
    in_flight: Arc<[Mutex<Map<u32>>]>,
}

impl std::fmt::Debug for LocalLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimits")
            .field("max_keys", &(self.shard_cap * SHARDS))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard cannot leave a map half-changed in a way that matters
    // here (each change is one insert or remove): keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalLimits {
    /// State for at most `max_keys` rate-limit keys (at least one per shard).
    pub fn new(max_keys: usize) -> Self {
        LocalLimits {
            hasher: RandomState::new(),
            rates: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            shard_cap: (max_keys / SHARDS).max(1),
            in_flight: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
        }
    }

    /// The cap `new(max_keys)` would have (a whole number of keys per shard).
    pub fn rounded(max_keys: usize) -> usize {
        (max_keys / SHARDS).max(1) * SHARDS
    }

    /// The configured cap.
    pub fn max_keys(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// Rate-limit keys tracked now.
    pub fn tracked(&self) -> usize {
        self.rates.iter().map(|s| lock(s).len()).sum()
    }

    fn key(&self, scope: &str, value: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        // No length prefixes: UTF-8 never holds 0xFF, so the separator keeps
        // (scope, value) pairs apart with fewer bytes to hash.
        h.write(scope.as_bytes());
        h.write_u8(0xff);
        h.write(value);
        h.finish()
    }

    /// Make room in a full shard: drop rested keys, then, if that freed less than an
    /// eighth, the eighth that rests soonest.
    fn make_room(map: &mut Map<u64>, cap: usize, now: u64) {
        map.retain(|_, tat| *tat > now);
        let want = cap - cap / 8;
        if map.len() <= want {
            return;
        }
        let mut tats: Vec<u64> = map.values().copied().collect();
        let cut = map.len() - want;
        let (_, nth, _) = tats.select_nth_unstable(cut - 1);
        let cut_tat = *nth;
        let mut left = cut;
        map.retain(|_, tat| {
            if left > 0 && *tat <= cut_tat {
                left -= 1;
                false
            } else {
                true
            }
        });
    }
}

impl LimitState for LocalLimits {
    fn rate(&self, scope: &str, value: &[u8], rule: Gcra, now: u64) -> Verdict {
        let key = self.key(scope, value);
        let mut shard = lock(&self.rates[(key as usize) % SHARDS]);
        let full = shard.len() >= self.shard_cap;
        match shard.entry(key) {
            // One lookup for a known key, the common case.
            Entry::Occupied(mut e) => {
                let (verdict, next) = gcra::step(Some(*e.get()), now, rule);
                if matches!(verdict, Verdict::Allow { .. }) {
                    e.insert(next);
                }
                verdict
            }
            Entry::Vacant(e) => {
                let (verdict, next) = gcra::step(None, now, rule);
                if matches!(verdict, Verdict::Allow { .. }) {
                    if full {
                        Self::make_room(&mut shard, self.shard_cap, now);
                        shard.insert(key, next);
                    } else {
                        e.insert(next);
                    }
                }
                verdict
            }
        }
    }

    fn acquire(&self, scope: &str, value: &[u8], max: u32) -> Option<InFlightSlot> {
        let key = self.key(scope, value);
        let index = (key as usize) % SHARDS;
        {
            let mut shard = lock(&self.in_flight[index]);
            let n = shard.entry(key).or_insert(0);
            if *n >= max {
                if *n == 0 {
                    shard.remove(&key);
                }
                return None;
            }
            *n += 1;
        }
        Some(InFlightSlot::new(Release {
            shards: Arc::clone(&self.in_flight),
            index,
            key,
        }))
    }
}

/// Gives an in-flight slot back; the count goes when it reaches zero.
struct Release {
    shards: Arc<[Mutex<Map<u32>>]>,
    index: usize,
    key: u64,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut shard = lock(&self.shards[self.index]);
        if let Some(n) = shard.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Rate;

    const SEC: u64 = 1_000_000_000;

    fn rule(rate: &str, burst: u32) -> Gcra {
        Gcra::new(Rate::parse(rate).expect("rate"), burst)
    }

    #[test]
    fn keys_and_scopes_are_counted_apart() {
        let l = LocalLimits::new(1000);
        let g = rule("1/s", 1);
        assert!(matches!(l.rate("r#0", b"a", g, 0), Verdict::Allow { .. }));
        assert!(matches!(l.rate("r#0", b"a", g, 0), Verdict::Deny { .. }));
        assert!(matches!(l.rate("r#0", b"b", g, 0), Verdict::Allow { .. }));
        assert!(matches!(l.rate("r#1", b"a", g, 0), Verdict::Allow { .. }));
    }

    #[test]
    fn refused_requests_store_nothing() {
        let l = LocalLimits::new(1000);
        let g = rule("1/s", 1);
        let _ = l.rate("r", b"a", g, 0);
        for _ in 0..10 {
            let _ = l.rate("r", b"a", g, 0);
        }
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn a_flood_of_busy_new_keys_stays_under_the_cap() {
        let l = LocalLimits::new(64 * 100);
        let g = rule("1/min", 1);
        for i in 0u32..50_000 {
            let _ = l.rate("r", &i.to_be_bytes(), g, u64::from(i) * SEC / 1000);
            assert!(l.tracked() <= l.max_keys());
        }
        assert!(
            l.tracked() > l.max_keys() / 2,
            "the cap is used, not emptied"
        );
    }

    #[test]
    fn rested_keys_are_evicted_before_a_limited_one() {
        let l = LocalLimits::new(64 * 100);
        let slow = rule("1/min", 1);
        let fast = rule("1000/s", 1);
        assert!(matches!(
            l.rate("r", b"busy", slow, 0),
            Verdict::Allow { .. }
        ));
        // 100,000 keys that rest 1 ms after their one request, over 30 s.
        for i in 0u32..100_000 {
            let _ = l.rate(
                "f",
                &i.to_be_bytes(),
                fast,
                u64::from(i) * SEC * 30 / 100_000,
            );
        }
        assert!(
            matches!(l.rate("r", b"busy", slow, 30 * SEC), Verdict::Deny { .. }),
            "the limited key kept its state through the flood"
        );
    }

    #[test]
    fn in_flight_slots_cap_and_come_back_when_dropped() {
        let l = LocalLimits::new(1000);
        let a = l.acquire("r", b"x", 2).expect("first");
        let b = l.acquire("r", b"x", 2).expect("second");
        assert!(l.acquire("r", b"x", 2).is_none());
        assert!(l.acquire("r", b"y", 2).is_some(), "another key has its own");
        drop(a);
        let c = l.acquire("r", b"x", 2).expect("a slot came back");
        drop((b, c));
        assert!(
            l.in_flight.iter().all(|s| lock(s).is_empty()),
            "no count is kept for a key with nothing in flight"
        );
    }
}
