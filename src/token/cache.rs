//! Verified tokens, keyed by the SHA-256 of the token (the token itself is never stored), so a
//! repeat costs a hash and a lookup instead of a signature check. Bounded: when full, expired
//! entries and one eighth of the rest go.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

use dashmap::DashMap;

use super::keys::VerifyingKey;
use super::verify::Claims;

pub type Digest = [u8; 32];

/// SHA-256 of the token.
pub fn digest(token: &[u8]) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// One verified token.
#[derive(Clone)]
pub(crate) struct Entry {
    pub claims: Arc<Claims>,
    /// The key that verified it: the entry is only good while this key is in the issuer's set.
    pub key: Arc<VerifyingKey>,
    /// Index of the issuer in the verifier.
    pub issuer: usize,
    /// `exp + leeway`.
    pub expires_at: SystemTime,
    /// `nbf - leeway`.
    pub valid_from: SystemTime,
}

pub(crate) struct TokenCache {
    map: DashMap<Digest, Entry, BuildHasherDefault<DigestHasher>>,
    max: usize,
    /// Which eighth of the entries (by digest) the next eviction takes.
    victim: AtomicU8,
    /// Lookups that found an entry, and that did not (read by metrics at scrape time).
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    /// `max == 0` disables the cache.
    pub fn new(max: usize) -> Self {
        TokenCache {
            map: DashMap::with_hasher(BuildHasherDefault::default()),
            max,
            victim: AtomicU8::new(0),
            hits: std::sync::atomic::AtomicU64::new(0),
            misses: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Two refcount bumps; the shard's read lock is held only for the clone.
    pub fn get(&self, d: &Digest) -> Option<Entry> {
        let found = self.map.get(d).map(|e| e.value().clone());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        found
    }

    pub fn remove(&self, d: &Digest) {
        self.map.remove(d);
    }

    pub fn insert(&self, d: Digest, entry: Entry, now: SystemTime) {
        if self.max == 0 {
            return;
        }
        if self.map.len() >= self.max {
            self.evict(now);
        }
        self.map.insert(d, entry);
    }

    /// Drop expired entries and one eighth of the others, chosen by digest (uniform, and not
    /// steerable without valid tokens); repeated until there is room. Runs on a miss, which
    /// already paid for a signature check, and then leaves room for max/8 more inserts.
    fn evict(&self, now: SystemTime) {
        for _ in 0..8 {
            let victim = self.victim.fetch_add(1, Ordering::Relaxed) & 7;
            self.map
                .retain(|d, e| now < e.expires_at && (d[0] & 7) != victim);
            if self.map.len() < self.max {
                return;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// The keys are SHA-256 digests, already uniform: their first eight bytes are the hash.
/// Only verified tokens are inserted, so nobody can aim entries at one bucket.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as a length then the bytes; mixing both keeps any input working.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::keys::VerifyingKey;
    use crate::token::scopes::ScopeSet;
    use http::HeaderValue;
    use std::time::Duration;

    fn entry(expires_at: SystemTime) -> Entry {
        let claims = Claims {
            issuer: "t".into(),
            sub: None,
            client_id: None,
            scopes: ScopeSet::default(),
            exp: expires_at,
            nbf: None,
            iat: None,
            jti: None,
            cert_sha256: None,
            values: crate::token::verify::ClaimValues {
                subject: None,
                client_id: None,
                scopes: HeaderValue::from_static(""),
                issuer: HeaderValue::from_static("t"),
            },
        };
        let key = VerifyingKey::hs256(&[7u8; 32], None).expect("key");
        Entry {
            claims: Arc::new(claims),
            key: Arc::new(key),
            issuer: 0,
            expires_at,
            valid_from: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_cache_stays_bounded_when_more_than_max_tokens_are_inserted() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cache = TokenCache::new(100);
        let e = entry(now + Duration::from_secs(60));
        for i in 0u32..1_000 {
            cache.insert(digest(&i.to_le_bytes()), e.clone(), now);
            assert!(cache.len() <= 100, "len {} after {i}", cache.len());
        }
        assert!(cache.len() > 50, "eviction should free a fraction, not all");
    }

    #[test]
    fn eviction_drops_expired_entries_first() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cache = TokenCache::new(10);
        for i in 0u32..10 {
            cache.insert(digest(&i.to_le_bytes()), entry(now), now);
        }
        let live = digest(b"live");
        cache.insert(live, entry(now + Duration::from_secs(60)), now);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&live).is_some());
    }

    #[test]
    fn a_zero_sized_cache_stores_nothing() {
        let now = SystemTime::UNIX_EPOCH;
        let cache = TokenCache::new(0);
        cache.insert(digest(b"x"), entry(now), now);
        assert_eq!(cache.len(), 0);
    }
}
