//! Quota counts a fleet shares: one counter per quota key and calendar window,
//! `{prefix}q:{key hex}:{window start}`, read, judged and counted in one Lua step (a
//! refused request counts nothing, as in the embedded store), expiring when its window ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{FailMode, RedisStore};
use crate::limits::{
    Quota, QuotaKey, QuotaUse, QuotaVerdict, SharedFuture, SharedQuotaState, Unavailable,
};

/// KEYS[1]: the window's counter. ARGV: the quota's count, the window's end (Unix seconds).
/// Returns the count after this request, or -1 when the count is used up.
const TAKE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return -1 end
redis.call('INCR', KEYS[1])
if n == 0 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return n + 1
";

/// The fleet's quota counts.
pub struct SharedQuotas {
    store: Arc<RedisStore>,
    take: redis::Script,
}

impl std::fmt::Debug for SharedQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedQuotas")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl SharedQuotas {
    pub fn new(store: Arc<RedisStore>) -> SharedQuotas {
        SharedQuotas {
            store,
            take: redis::Script::new(TAKE),
        }
    }

    fn key(&self, key: &QuotaKey, window_start: u64) -> Vec<u8> {
        let mut hex = [0u8; 32];
        for (i, b) in key.0.iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        self.store
            .key(&[b"q:", &hex, b":", window_start.to_string().as_bytes()])
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl SharedQuotaState for SharedQuotas {
    fn take<'a>(
        &'a self,
        key: &'a QuotaKey,
        quota: Quota,
        now: u64,
    ) -> SharedFuture<'a, Result<QuotaVerdict, Unavailable>> {
        Box::pin(async move {
            let (start, end) = quota.window.bounds(now);
            let mut call = self.take.key(self.key(key, start));
            call.arg(quota.count).arg(end);
            match self.store.invoke::<i64>(&call).await {
                Ok(n) if n >= 0 => Ok(QuotaVerdict::Taken {
                    remaining: quota.count.saturating_sub(n.unsigned_abs()),
                }),
                Ok(_) => Ok(QuotaVerdict::Exhausted { resets_at: end }),
                Err(_) => match self.store.settings().quotas {
                    FailMode::Closed => Err(Unavailable),
                    // Admitted uncounted: a window's count may run over by what passed
                    // while Redis was down (counted in the fallbacks metric).
                    FailMode::Open => {
                        self.store.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                        Ok(QuotaVerdict::Taken {
                            remaining: quota.count,
                        })
                    }
                },
            }
        })
    }

    fn usage<'a>(
        &'a self,
        key: &'a QuotaKey,
        quota: Quota,
        now: u64,
    ) -> SharedFuture<'a, Result<QuotaUse, Unavailable>> {
        Box::pin(async move {
            let (start, end) = quota.window.bounds(now);
            let used: Option<u64> = self
                .store
                .get(&self.key(key, start))
                .await
                .map_err(|_| Unavailable)?;
            Ok(QuotaUse {
                used: used.unwrap_or(0),
                resets_at: end,
            })
        })
    }
}
