//! Giving released memory back to the operating system.
//!
//! An idle HTTP/1.1 connection frees its HTTP buffers (`release_idle_after`), but glibc's
//! malloc keeps freed chunks in the process for reuse: after a burst of connections goes
//! idle the memory is free inside the process and still resident. `malloc_trim` returns
//! the whole free pages to the kernel. It walks the heap, so it runs only when connections
//! were parked since the last look, at most four times a second.

use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::watch;

/// Parked connections added since the last trim that make one worthwhile: each released
/// one freed about 20 KiB.
const TRIM_AFTER_PARKED: i64 = 16;

/// Watch `parked` (the parked-connections gauge) and trim when it has grown; ends when
/// `stop` turns true.
pub fn spawn_trimmer(parked: IntGauge, mut stop: watch::Receiver<bool>) {
    if !trim_supported() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut low = parked.get();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = parked.get();
            if now - low >= TRIM_AFTER_PARKED {
                trim();
                low = now;
            } else {
                // Connections woke up: count new releases from here.
                low = low.min(now);
            }
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_supported() -> bool {
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_supported() -> bool {
    false
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own heap under its lock; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
