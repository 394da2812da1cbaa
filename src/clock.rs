//! The gateway's clock. Every time-dependent stage reads the time once per request from
//! here, so tests move time (licenses expiring, tokens ageing) instead of sleeping.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The system clock, plus an offset that only tests change.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
    /// Non-zero: the monotonic clock stands still here (tests count a rate exactly).
    frozen_ns: AtomicU64,
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

    /// Nanoseconds on the monotonic clock (plus the test offset): what rate limits measure
    /// intervals with, which a wall-clock step (NTP, an operator) must not stretch or shrink.
    pub fn mono_ns(&self) -> u64 {
        let offset = self.offset_ms.load(Ordering::Relaxed).max(0).unsigned_abs();
        let base = match self.frozen_ns.load(Ordering::Relaxed) {
            0 => mono_at(Instant::now()),
            frozen => frozen,
        };
        base.saturating_add(offset.saturating_mul(1_000_000))
    }

    /// Stop the monotonic clock where it is; only [`advance`](Self::advance) moves it then
    /// (tests: count a rate limit exactly, whatever the machine's speed).
    pub fn freeze_monotonic(&self) {
        let now = mono_at(Instant::now()).max(1);
        self.frozen_ns.store(now, Ordering::Relaxed);
    }

    /// Move this gateway's time forward (tests: see a license or token expire).
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(
            i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// Whole Unix seconds now, on the system clock (for work outside a request, such as the
/// last flush of a store being closed).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `at` in nanoseconds since the first call in this process, on the monotonic clock.
pub fn mono_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// `at` in microseconds since the Unix epoch (0 before it): the clock a fleet's shared state
/// judges by, since instances share no monotonic clock.
pub fn unix_us(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
