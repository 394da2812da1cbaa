//! The generic cell rate algorithm (GCRA, ITU-T I.371; the model of the `governor` crate and
//! of nginx's `limit_req`): one number per key, the theoretical arrival time (TAT) of the next
//! request, in nanoseconds on the caller's clock. Pure arithmetic on `now`, so tests need no
//! sleeps and a shared store (Redis) can run the same step in a script.
//!
//! Hand-written rather than `governor`: its limiters read their own clock (time could not be
//! a parameter), keep keyed state in a map with no cap on the number of keys, and cannot put
//! that state in the fleet's shared store; the step itself is ten lines.

use std::time::Duration;

/// A rate such as `100/s`: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// `"<count>/<unit>"`, unit one of `s`, `sec`, `second`, `m`, `min`, `minute`, `h`,
    /// `hour`, `d`, `day` (count 1 to 1,000,000,000). The error completes "\"<s>\" ...".
    pub fn parse(s: &str) -> Result<Rate, &'static str> {
        let Some((count, unit)) = s.split_once('/') else {
            return Err("is not a rate: write <count>/<unit>, such as \"100/s\" or \"6000/min\"");
        };
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| "has a count that is not a whole number")?;
        if count == 0 || count > 1_000_000_000 {
            return Err("has a count outside 1 to 1000000000");
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err("has an unknown unit: use s, min, h or day"),
        };
        Ok(Rate {
            count,
            per: Duration::from_secs(per),
        })
    }

    /// The window in whole seconds (for the `RateLimit-Policy` header's `w`).
    pub fn window_secs(&self) -> u64 {
        self.per.as_secs()
    }
}

/// A rate and a burst as GCRA parameters: the emission interval `t` (one request's share of
/// the window) and the burst `b` (how many may arrive at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds per request (at least 1).
    pub t: u64,
    /// Requests admitted at once from a rested key (at least 1).
    pub burst: u32,
}

impl Gcra {
    pub fn new(rate: Rate, burst: u32) -> Gcra {
        let per = u64::try_from(rate.per.as_nanos()).unwrap_or(u64::MAX);
        Gcra {
            t: (per / u64::from(rate.count.max(1))).max(1),
            burst: burst.max(1),
        }
    }

    /// The burst's span: `burst * t`.
    fn tau(&self) -> u64 {
        self.t.saturating_mul(u64::from(self.burst))
    }
}

/// The outcome of one request against one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; `remaining` more would be admitted now; the key is fully rested after
    /// `reset` nanoseconds.
    Allow { remaining: u32, reset: u64 },
    /// Refused; a request is admitted again after `retry_after` nanoseconds.
    Deny { retry_after: u64 },
}

/// One request at `now` against a key whose stored TAT is `tat` (`None`: never seen or
/// evicted, which is the same as rested). Returns the verdict and the TAT to store (unchanged
/// on a refusal, so refused requests cost the caller nothing).
pub fn step(tat: Option<u64>, now: u64, g: Gcra) -> (Verdict, u64) {
    let tat = tat.unwrap_or(now).max(now);
    let next = tat.saturating_add(g.t);
    // Admitted while the next TAT lies within one burst span of now.
    let allow_at = next.saturating_sub(g.tau());
    if now < allow_at {
        return (
            Verdict::Deny {
                retry_after: allow_at - now,
            },
            tat,
        );
    }
    let used = next - now;
    let free = g.tau().saturating_sub(used) / g.t;
    (
        Verdict::Allow {
            remaining: u32::try_from(free).unwrap_or(u32::MAX),
            reset: used,
        },
        next,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn run(g: Gcra, tat: &mut Option<u64>, now: u64) -> Verdict {
        let (v, next) = step(*tat, now, g);
        *tat = Some(next);
        v
    }

    #[test]
    fn rates_parse_with_their_units_and_refuse_the_rest() {
        assert_eq!(
            Rate::parse("100/s"),
            Ok(Rate {
                count: 100,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(Rate::parse("6000/min").map(|r| r.window_secs()), Ok(60));
        assert_eq!(Rate::parse("10/ hour").map(|r| r.window_secs()), Ok(3600));
        assert_eq!(Rate::parse("5/day").map(|r| r.window_secs()), Ok(86_400));
        for bad in [
            "100",
            "0/s",
            "-1/s",
            "1.5/s",
            "10/week",
            "/s",
            "5000000000/s",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rested_key_admits_the_burst_at_once_then_one_per_interval() {
        // 100/s, burst 20: 20 at t=0, the 21st refused with 10 ms to wait.
        let g = Gcra::new(Rate::parse("100/s").expect("rate"), 20);
        let mut tat = None;
        for i in 0..20 {
            match run(g, &mut tat, 0) {
                Verdict::Allow { remaining, .. } => assert_eq!(remaining, 19 - i),
                v => panic!("request {i} refused: {v:?}"),
            }
        }
        assert_eq!(
            run(g, &mut tat, 0),
            Verdict::Deny {
                retry_after: SEC / 100
            }
        );
        // After 10 ms exactly one more.
        assert!(matches!(run(g, &mut tat, SEC / 100), Verdict::Allow { .. }));
        assert!(matches!(run(g, &mut tat, SEC / 100), Verdict::Deny { .. }));
    }

    #[test]
    fn over_one_second_of_steady_pressure_about_the_rate_plus_burst_pass() {
        // A caller trying every millisecond for a second: 20 (burst) + ~100 (rate).
        let g = Gcra::new(Rate::parse("100/s").expect("rate"), 20);
        let mut tat = None;
        let passed = (0..1000)
            .filter(|ms| matches!(run(g, &mut tat, ms * SEC / 1000), Verdict::Allow { .. }))
            .count();
        assert!((118..=121).contains(&passed), "{passed}");
    }

    #[test]
    fn a_refusal_does_not_push_the_next_admission_further_away() {
        let g = Gcra::new(Rate::parse("1/s").expect("rate"), 1);
        let mut tat = None;
        assert!(matches!(run(g, &mut tat, 0), Verdict::Allow { .. }));
        for _ in 0..100 {
            assert!(matches!(run(g, &mut tat, SEC / 2), Verdict::Deny { .. }));
        }
        assert!(matches!(run(g, &mut tat, SEC), Verdict::Allow { .. }));
    }

    #[test]
    fn extreme_inputs_neither_overflow_nor_panic() {
        let g = Gcra::new(Rate::parse("1000000000/s").expect("rate"), u32::MAX);
        let _ = step(Some(u64::MAX), u64::MAX, g);
        let _ = step(None, 0, g);
        let slow = Gcra::new(Rate::parse("1/day").expect("rate"), 1);
        let _ = step(Some(u64::MAX - 1), 0, slow);
    }
}
