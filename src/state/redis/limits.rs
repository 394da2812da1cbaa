//! Rate limits a fleet shares: GCRA in one Lua script, so a key's read, decision and write
//! are one atomic step on the server whichever instance asks (the same rule as
//! [`crate::limits::gcra::step`], in microseconds, on the Unix clock every instance shares).
//!
//! Keys: `{prefix}rl:{scope}\0{digest}`, binary-safe, where the digest is the first 16 bytes
//! of the caller's value's SHA-256: a key is never a secret (an API key header) and a caller
//! cannot make keys of any size. Each key expires when it would be rested, so Redis holds
//! only busy keys.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{CallError, FailMode, RedisStore};
use crate::limits::{Gcra, LimitState, SharedFuture, SharedLimitState, Unavailable, Verdict};
use crate::state::limits::LocalLimits;

/// KEYS[1]: the key. ARGV: now, t (one request's share), tau (the burst's span), all in
/// microseconds. Returns {1, used} when admitted (`used`: how far the new TAT lies ahead),
/// {0, wait} when refused. `%.0f`: Lua's own number-to-string would round to 14 digits.
const GCRA: &str = r"
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local nxt = tat + t
local allow_at = nxt - tau
if now < allow_at then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 1)
return {1, nxt - now}
";

/// Bytes of a value's SHA-256 in its key: 128 bits, no collision among any number of callers
/// a fleet will see.
const DIGEST_BYTES: usize = 16;

/// Rate state in Redis, with this instance's own state as the fallback while Redis cannot
/// answer (when rate limits fail open).
pub struct SharedLimits {
    store: Arc<RedisStore>,
    script: redis::Script,
    fallback: Arc<LocalLimits>,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    pub fn new(store: Arc<RedisStore>, fallback: Arc<LocalLimits>) -> SharedLimits {
        SharedLimits {
            store,
            script: redis::Script::new(GCRA),
            fallback,
        }
    }

    pub fn store(&self) -> &Arc<RedisStore> {
        &self.store
    }

    fn key(&self, scope: &str, value: &[u8]) -> Vec<u8> {
        // The value may be an API key a connector sends: Redis (its keyspace, its logs, its
        // backups) sees a digest, never the value. The scope is the config's own route name.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value);
        let short = &digest.as_ref()[..DIGEST_BYTES];
        // No route name or limit index holds a NUL, so the separator keeps pairs apart.
        self.store.key(&[b"rl:", scope.as_bytes(), b"\0", short])
    }

    async fn ask(
        &self,
        scope: &str,
        value: &[u8],
        rule: Gcra,
        now_us: u64,
    ) -> Result<Verdict, CallError> {
        // One request's share and the burst span in microseconds; a rate over a million a
        // second rounds up to one per microsecond.
        let t = (rule.t / 1_000).max(1);
        let tau = (rule.t.saturating_mul(u64::from(rule.burst)) / 1_000).max(t);
        let key = self.key(scope, value);
        let mut call = self.script.key(key);
        call.arg(now_us).arg(t).arg(tau);
        let (admitted, us): (u8, i64) = self.store.invoke(&call).await?;
        let us = u64::try_from(us).unwrap_or(0);
        Ok(if admitted == 1 {
            Verdict::Allow {
                remaining: u32::try_from(tau.saturating_sub(us) / t).unwrap_or(u32::MAX),
                reset: us.saturating_mul(1_000),
            }
        } else {
            Verdict::Deny {
                retry_after: us.max(1).saturating_mul(1_000),
            }
        })
    }
}

impl SharedLimitState for SharedLimits {
    fn rate<'a>(
        &'a self,
        scope: &'a str,
        value: &'a [u8],
        rule: Gcra,
        now_us: u64,
    ) -> SharedFuture<'a, Result<Verdict, Unavailable>> {
        Box::pin(async move {
            match self.ask(scope, value, rule, now_us).await {
                Ok(v) => Ok(v),
                Err(_) => match self.store.settings().rate_limits {
                    FailMode::Closed => Err(Unavailable),
                    FailMode::Open => {
                        self.store.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                        // The Unix clock in ns stands in for the monotonic one: the fallback
                        // only needs a clock that moves forward within this process.
                        Ok(self
                            .fallback
                            .rate(scope, value, rule, now_us.saturating_mul(1_000)))
                    }
                },
            }
        })
    }
}
