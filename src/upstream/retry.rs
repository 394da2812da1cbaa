//! Which requests may be tried again, and the budget that keeps retries from multiplying an
//! outage: per upstream, retries in a 10 s window stay under `max(min_retries, percent% of
//! the window's requests)` (Envoy's and Finagle's retry budgets work the same way).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::Method;

use crate::config::upstream::RetryBudget;

/// The window the budget counts in, in milliseconds.
const WINDOW_MS: u64 = 10_000;

/// Requests and retries counted in the current window. Atomics, not a lock: every request
/// to the upstream counts here. A count racing a window's turn may land in either window.
#[derive(Debug, Default)]
pub struct Budget {
    start: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Budget {
    fn roll(&self, now: u64) {
        let start = self.start.load(Relaxed);
        if now >= start + WINDOW_MS
            && self
                .start
                .compare_exchange(start, now - now % WINDOW_MS, Relaxed, Relaxed)
                .is_ok()
        {
            self.requests.store(0, Relaxed);
            self.retries.store(0, Relaxed);
        }
    }

    /// A request (not a retry) arrived at `now`.
    pub fn request(&self, now: u64) {
        self.roll(now);
        self.requests.fetch_add(1, Relaxed);
    }

    /// Take one retry at `now` if `budget` allows it.
    pub fn take_retry(&self, budget: RetryBudget, now: u64) -> bool {
        self.roll(now);
        let allowed = (self.requests.load(Relaxed) * u64::from(budget.percent) / 100)
            .max(u64::from(budget.min_retries));
        self.retries
            .fetch_update(Relaxed, Relaxed, |r| (r < allowed).then_some(r + 1))
            .is_ok()
    }
}

/// Methods a retry cannot repeat the effect of (RFC 9110 section 9.2.2).
pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: RetryBudget = RetryBudget {
        percent: 20,
        min_retries: 3,
    };

    #[test]
    fn retries_stay_under_the_share_of_requests_in_the_window() {
        let b = Budget::default();
        for _ in 0..100 {
            b.request(1_000);
        }
        let granted = (0..100).filter(|_| b.take_retry(BUDGET, 1_000)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn a_quiet_upstream_still_gets_the_minimum_and_a_new_window_refills() {
        let b = Budget::default();
        b.request(0);
        let granted = (0..10).filter(|_| b.take_retry(BUDGET, 0)).count();
        assert_eq!(granted, 3);
        assert!(!b.take_retry(BUDGET, 9_999));
        assert!(b.take_retry(BUDGET, 10_000));
    }

    #[test]
    fn only_idempotent_methods_are_repeatable() {
        assert!(idempotent(&Method::GET) && idempotent(&Method::PUT));
        assert!(!idempotent(&Method::POST) && !idempotent(&Method::PATCH));
    }
}
