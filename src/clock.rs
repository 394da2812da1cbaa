//! The gateway's clock. Every time-dependent stage reads the time once per request from
//! here, so tests move time (licenses expiring, tokens ageing) instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// The system clock, plus an offset that only tests change.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        match self.offset_ms.load(Ordering::Relaxed) {
            0 => now,
            ms if ms > 0 => now + Duration::from_millis(ms as u64),
            ms => now - Duration::from_millis(ms.unsigned_abs()),
        }
    }

    /// Move this gateway's time forward (tests: see a license or token expire).
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(
            i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }
}
