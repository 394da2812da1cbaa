//! One target of an upstream and what the gateway knows of it: its pool, the requests it has
//! in flight, whether active checks pass, and passive outlier ejection. Every state change
//! takes `now` (milliseconds on the upstream clock), so tests move time instead of waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use http::HeaderValue;
use http::uri::Authority;

use super::pool;
use crate::config::upstream::{HealthCheck, Outlier};

pub struct Target {
    pub authority: Authority,
    pub weight: u32,
    /// How to reach it over TLS: the connector and the name to ask for and verify.
    pub tls: Option<pool::TlsTo>,
    /// The Host header for requests that arrived without one, and for `host = "target"`.
    pub host: HeaderValue,
    pub pool: Arc<pool::Pool>,
    /// Passes active health checks (true until a check says otherwise).
    healthy: AtomicBool,
    /// Consecutive active check results of the kind that would flip `healthy`.
    check_streak: AtomicU32,
    /// Consecutive failed exchanges (connect, TLS, timeout, reset, 5xx).
    failures: AtomicU32,
    /// Until when (upstream clock, ms) the target is ejected; 0: never was.
    ejected_until: AtomicU64,
    /// Ejections in a row without a success between them: the next one lasts longer.
    ejections_in_row: AtomicU32,
    /// Rendezvous hashing seed: the target's address, hashed once.
    pub seed: u64,
    pub stats: TargetStats,
}

/// Counters an operator reads (metrics, `GET /upstreams`).
#[derive(Default)]
pub struct TargetStats {
    pub ejections: AtomicU64,
    pub overloaded: AtomicU64,
}

/// What an exchange with a target came to, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A connect, TLS, timeout or reset failure, or a 5xx answer.
    Failure,
}

impl Target {
    pub fn new(
        authority: Authority,
        weight: u32,
        tls: Option<pool::TlsTo>,
        pool: Arc<pool::Pool>,
    ) -> Self {
        Target {
            // An authority is always a valid header value (checked characters).
            host: HeaderValue::from_str(authority.as_str())
                .unwrap_or(HeaderValue::from_static("localhost")),
            seed: super::balance::hash_bytes(authority.as_str().as_bytes()),
            authority,
            weight,
            tls,
            pool,
            healthy: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections_in_row: AtomicU32::new(0),
            stats: TargetStats::default(),
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) > now
    }

    /// Milliseconds of ejection left at `now`.
    pub fn ejected_for(&self, now: u64) -> u64 {
        self.ejected_until.load(Relaxed).saturating_sub(now)
    }

    /// May take traffic at `now`: healthy and not ejected.
    pub fn available(&self, now: u64) -> bool {
        self.healthy() && !self.ejected(now)
    }

    /// Requests in flight to this target now.
    pub fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }

    /// Carry what a previous generation learnt about the same address over a reload.
    pub fn inherit(&self, old: &Target) {
        self.healthy.store(old.healthy(), Relaxed);
        self.ejected_until
            .store(old.ejected_until.load(Relaxed), Relaxed);
        self.ejections_in_row
            .store(old.ejections_in_row.load(Relaxed), Relaxed);
    }

    /// One active check's result; says whether `healthy` flipped.
    pub fn check_result(&self, passed: bool, hc: &HealthCheck) -> Option<bool> {
        let healthy = self.healthy();
        if passed == healthy {
            self.check_streak.store(0, Relaxed);
            return None;
        }
        let needed = if passed {
            hc.healthy_threshold
        } else {
            hc.unhealthy_threshold
        };
        let streak = self.check_streak.fetch_add(1, Relaxed) + 1;
        if streak < needed {
            return None;
        }
        self.check_streak.store(0, Relaxed);
        self.healthy.store(passed, Relaxed);
        if passed {
            // Back after checks pass: a clean slate for outlier detection too.
            self.failures.store(0, Relaxed);
            self.ejected_until.store(0, Relaxed);
        }
        Some(passed)
    }
}

/// Record `outcome` of an exchange with `targets[i]` at `now`; a failure that completes
/// `consecutive_failures` ejects it, for `base_ejection` doubled per ejection in a row (up to
/// `max_ejection`), unless `max_ejected_percent` of the targets are ejected already. Says
/// whether it ejected.
pub fn record(targets: &[Target], i: usize, outcome: Outcome, o: &Outlier, now: u64) -> bool {
    let Some(t) = targets.get(i) else {
        return false;
    };
    match outcome {
        Outcome::Success => {
            if t.failures.load(Relaxed) != 0 {
                t.failures.store(0, Relaxed);
            }
            if t.ejections_in_row.load(Relaxed) != 0 && !t.ejected(now) {
                t.ejections_in_row.store(0, Relaxed);
            }
            false
        }
        Outcome::Failure => {
            let n = t.failures.fetch_add(1, Relaxed) + 1;
            if n < o.consecutive_failures || t.ejected(now) {
                return false;
            }
            let ejected_now = targets.iter().filter(|t| t.ejected(now)).count();
            let cap = targets.len() * o.max_ejected_percent as usize / 100;
            if ejected_now >= cap {
                return false;
            }
            t.failures.store(0, Relaxed);
            let in_row = t.ejections_in_row.fetch_add(1, Relaxed).min(16);
            let base = o.base_ejection.as_millis() as u64;
            let span = base
                .saturating_mul(1 << in_row)
                .min(o.max_ejection.as_millis() as u64);
            t.ejected_until.store(now + span, Relaxed);
            t.stats.ejections.fetch_add(1, Relaxed);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn targets(n: usize) -> Vec<Target> {
        (0..n)
            .map(|i| {
                Target::new(
                    Authority::try_from(format!("t{i}:1")).unwrap(),
                    1,
                    None,
                    pool::Pool::new(Duration::from_secs(1), false, None, 0),
                )
            })
            .collect()
    }

    fn outlier(percent: u32) -> Outlier {
        Outlier {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
            max_ejected_percent: percent,
        }
    }

    #[test]
    fn consecutive_failures_eject_and_the_ejection_grows_while_the_target_keeps_failing() {
        let t = targets(2);
        let o = outlier(50);
        assert!(!record(&t, 0, Outcome::Failure, &o, 0));
        assert!(!record(&t, 0, Outcome::Failure, &o, 0));
        assert!(record(&t, 0, Outcome::Failure, &o, 0));
        assert_eq!(t[0].ejected_for(0), 10_000);
        // Back at 10 s, fails three more times: 20 s, then 40 s, then capped at 60 s.
        for (at, span) in [(10_000, 20_000), (30_000, 40_000), (70_000, 60_000)] {
            for _ in 0..3 {
                record(&t, 0, Outcome::Failure, &o, at);
            }
            assert_eq!(t[0].ejected_for(at), span);
        }
        // A success once back resets the growth.
        record(&t, 0, Outcome::Success, &o, 130_000);
        for _ in 0..3 {
            record(&t, 0, Outcome::Failure, &o, 130_000);
        }
        assert_eq!(t[0].ejected_for(130_000), 10_000);
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        let t = targets(2);
        let o = outlier(50);
        for _ in 0..10 {
            record(&t, 0, Outcome::Failure, &o, 0);
            record(&t, 0, Outcome::Failure, &o, 0);
            record(&t, 0, Outcome::Success, &o, 0);
        }
        assert!(!t[0].ejected(0));
    }

    #[test]
    fn never_more_than_the_configured_share_is_ejected() {
        let t = targets(4);
        let o = outlier(50);
        for i in 0..4 {
            for _ in 0..3 {
                record(&t, i, Outcome::Failure, &o, 0);
            }
        }
        assert_eq!(t.iter().filter(|t| t.ejected(0)).count(), 2);
        // One target alone is never ejected at 50%.
        let one = targets(1);
        for _ in 0..10 {
            record(&one, 0, Outcome::Failure, &o, 0);
        }
        assert!(!one[0].ejected(0));
    }

    #[test]
    fn health_flips_only_after_its_threshold_in_a_row() {
        let t = targets(1);
        let hc = HealthCheck {
            path: http::uri::PathAndQuery::from_static("/"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expect_status: vec![],
        };
        assert_eq!(t[0].check_result(false, &hc), None);
        assert_eq!(t[0].check_result(false, &hc), None);
        assert_eq!(
            t[0].check_result(true, &hc),
            None,
            "a pass breaks the streak"
        );
        assert_eq!(t[0].check_result(false, &hc), None);
        assert_eq!(t[0].check_result(false, &hc), None);
        assert_eq!(t[0].check_result(false, &hc), Some(false));
        assert!(!t[0].healthy());
        assert_eq!(t[0].check_result(true, &hc), None);
        assert_eq!(t[0].check_result(true, &hc), Some(true));
        assert!(t[0].healthy());
    }
}
