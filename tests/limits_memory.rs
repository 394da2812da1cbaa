//! The rate-limit state's memory bound, measured with a counting allocator: a flood of
//! 2,000,000 distinct keys (random source addresses or tokens, each seen once) into state
//! capped at the default 1,000,000 keys stays under `max_keys * BYTES_PER_KEY` bytes, and the
//! tracked keys never exceed the cap.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use portcullis::limits::{Gcra, LimitState, Rate};
use portcullis::state::limits::{BYTES_PER_KEY, DEFAULT_MAX_KEYS, LocalLimits};

/// Bytes allocated and not yet freed, by anyone in this test binary.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn two_million_distinct_keys_stay_under_the_documented_bound() {
    let before = LIVE.load(Ordering::Relaxed);
    let limits = LocalLimits::new(DEFAULT_MAX_KEYS);
    // One request per key per minute: every key stays busy (not rested) for the whole
    // flood, the worst case for eviction.
    let rule = Gcra::new(Rate::parse("1/min").unwrap(), 1);
    let mut peak = 0isize;
    for i in 0u64..2_000_000 {
        let _ = limits.rate("route#0", &i.to_le_bytes(), rule, i * 1000);
        if i % 65_536 == 0 {
            peak = peak.max(LIVE.load(Ordering::Relaxed) - before);
        }
    }
    peak = peak.max(LIVE.load(Ordering::Relaxed) - before);
    let bound = (DEFAULT_MAX_KEYS * BYTES_PER_KEY) as isize;
    let tracked = limits.tracked();
    println!(
        "tracked {tracked} keys; peak {:.1} MiB, bound {:.1} MiB",
        peak as f64 / 1_048_576.0,
        bound as f64 / 1_048_576.0
    );
    assert!(tracked <= limits.max_keys(), "{tracked} keys tracked");
    assert!(
        tracked >= DEFAULT_MAX_KEYS / 2,
        "the cap is used: {tracked}"
    );
    assert!(
        peak <= bound,
        "peak {peak} bytes over the documented {bound} ({BYTES_PER_KEY} bytes per key)"
    );
}
