//! When the agent acts: a pure function of `now` and the certificate's validity, so the
//! tests move time instead of waiting for it.

use std::time::Duration;

/// The first retry waits this long; each failure doubles it up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// However long the gateway is away, the agent asks again at least this often.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// A certificate's validity, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

impl Validity {
    /// Two thirds of the lifetime: late enough to use the certificate, early enough that a
    /// third of it is left to retry in when the gateway is away.
    pub fn renew_at(self) -> u64 {
        let life = self.not_after.saturating_sub(self.not_before);
        self.not_before
            .saturating_add(life / 3 * 2 + life % 3 * 2 / 3)
    }
}

/// What the agent does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No certificate: spend the token.
    Enroll,
    /// Re-enroll with the current certificate now.
    Renew,
    /// Nothing to do for this long.
    Wait(Duration),
    /// The certificate has expired (at this Unix second): it cannot re-enroll, and only a
    /// new token enrolls the machine again.
    Expired(u64),
}

/// The next step at `now` (Unix seconds) for the certificate held, if any.
pub fn next(now: u64, held: Option<Validity>) -> Step {
    match held {
        None => Step::Enroll,
        Some(v) if now >= v.not_after => Step::Expired(v.not_after),
        Some(v) if now >= v.renew_at() => Step::Renew,
        Some(v) => Step::Wait(Duration::from_secs(v.renew_at() - now)),
    }
}

/// How long to wait after the `failures`-th failure in a row (1 for the first): doubling from
/// [`FIRST_BACKOFF`], at most [`MAX_BACKOFF`], then spread by `jitter` (0.0 to 1.0) over its
/// upper half so that a fleet that lost its gateway at once does not come back at once.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let full = FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF);
    // NaN would panic in mul_f64.
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    full.mul_f64(0.5 + jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn week_from(start: u64) -> Validity {
        Validity {
            not_before: start,
            not_after: start + 9 * DAY,
        }
    }

    #[test]
    fn a_fresh_certificate_waits_until_two_thirds_of_its_lifetime() {
        let v = week_from(1_000);
        assert_eq!(v.renew_at(), 1_000 + 6 * DAY);
        assert_eq!(
            next(1_000, Some(v)),
            Step::Wait(Duration::from_secs(6 * DAY))
        );
        assert_eq!(
            next(1_000 + DAY, Some(v)),
            Step::Wait(Duration::from_secs(5 * DAY))
        );
        assert_eq!(
            next(1_000 + 6 * DAY - 1, Some(v)),
            Step::Wait(Duration::from_secs(1))
        );
        assert_eq!(next(1_000 + 6 * DAY, Some(v)), Step::Renew);
    }

    #[test]
    fn a_certificate_already_past_two_thirds_renews_at_once() {
        let v = week_from(1_000);
        assert_eq!(next(1_000 + 8 * DAY, Some(v)), Step::Renew);
        assert_eq!(next(1_000 + 9 * DAY - 1, Some(v)), Step::Renew);
    }

    #[test]
    fn no_certificate_enrolls_and_an_expired_one_needs_a_new_token() {
        let v = week_from(1_000);
        assert_eq!(next(5, None), Step::Enroll);
        assert_eq!(
            next(1_000 + 9 * DAY, Some(v)),
            Step::Expired(1_000 + 9 * DAY)
        );
        assert_eq!(next(u64::MAX, Some(v)), Step::Expired(1_000 + 9 * DAY));
    }

    #[test]
    fn two_thirds_of_an_odd_lifetime_neither_overflows_nor_rounds_past_the_end() {
        let v = Validity {
            not_before: 10,
            not_after: 13,
        };
        assert_eq!(v.renew_at(), 12);
        let v = Validity {
            not_before: 10,
            not_after: 11,
        };
        assert!(v.renew_at() < 11);
        let v = Validity {
            not_before: u64::MAX - 3,
            not_after: u64::MAX,
        };
        assert_eq!(v.renew_at(), u64::MAX - 1);
        // A certificate whose end is before its start is already expired, never waited on.
        let v = Validity {
            not_before: 100,
            not_after: 50,
        };
        assert_eq!(next(60, Some(v)), Step::Expired(50));
    }

    #[test]
    fn backoff_doubles_is_bounded_and_jitter_only_shortens_it() {
        assert_eq!(backoff(1, 1.0), FIRST_BACKOFF);
        assert_eq!(backoff(2, 1.0), FIRST_BACKOFF * 2);
        assert_eq!(backoff(3, 1.0), FIRST_BACKOFF * 4);
        assert_eq!(backoff(0, 1.0), FIRST_BACKOFF);
        for failures in [8, 30, u32::MAX] {
            assert_eq!(backoff(failures, 1.0), MAX_BACKOFF);
        }
        assert_eq!(backoff(1, 0.0), FIRST_BACKOFF / 2);
        for j in [-1.0, 0.0, 0.3, 0.99, 1.0, 7.0, f64::NAN] {
            let d = backoff(u32::MAX, j);
            assert!(d >= MAX_BACKOFF / 2 && d <= MAX_BACKOFF, "{j}: {d:?}");
        }
    }
}
