//! Choosing a target: weighted round robin, least request (the better of two drawn by
//! weight), or rendezvous hashing on a key.
//!
//! Hand-written because each is a few lines over the targets we already hold, and the
//! crates we looked at (ring hashes, maglev tables) keep a table to rebuild per reload; a
//! rendezvous hash needs none and moves exactly the keys of an added or removed target.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::target::Target;
use crate::config::upstream::Balance;

/// A weighted round-robin schedule: target indices in smooth weighted order (nginx's
/// algorithm), so weights 3:1 give a b a a, not a a a b.
pub fn schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(u16::try_from(best).unwrap_or(0));
    }
    out
}

/// Picks among the targets `ok` admits (available, not yet tried by this request); `None`
/// when it admits none. `key`: the hash of the request's key, for `hash`.
pub struct Picker<'a> {
    pub targets: &'a [Target],
    pub balance: &'a Balance,
    pub schedule: &'a [u16],
    pub cursor: &'a AtomicUsize,
}

impl Picker<'_> {
    pub fn pick(&self, key: Option<u64>, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.targets.len();
        if n == 1 {
            return ok(0).then_some(0);
        }
        match (self.balance, key) {
            (Balance::RoundRobin, _) => {
                let len = self.schedule.len();
                let start = self.cursor.fetch_add(1, Relaxed);
                (0..len)
                    .map(|k| usize::from(self.schedule[(start + k) % len]))
                    .find(|&i| ok(i))
            }
            (Balance::Hash(_), Some(h)) => (0..n)
                .filter(|&i| ok(i))
                .map(|i| (i, score(h, &self.targets[i])))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(i, _)| i),
            // No key to hash (no such header, no token): spread by load instead.
            (Balance::LeastRequest | Balance::Hash(_), _) => {
                // Two different targets, each drawn by weight (the second from the rest):
                // with two targets, every request compares both.
                let draw = |skip: Option<usize>| {
                    let total: u64 = (0..n)
                        .filter(|&i| ok(i) && Some(i) != skip)
                        .map(|i| u64::from(self.targets[i].weight))
                        .sum();
                    if total == 0 {
                        return None;
                    }
                    let mut left = fastrand::u64(..total);
                    (0..n).filter(|&i| ok(i) && Some(i) != skip).find(|&i| {
                        let w = u64::from(self.targets[i].weight);
                        if left < w {
                            true
                        } else {
                            left -= w;
                            false
                        }
                    })
                };
                let a = draw(None)?;
                let Some(b) = draw(Some(a)) else {
                    return Some(a);
                };
                // Fewer in flight per unit of weight wins: compare a/wa with b/wb crosswise.
                let load = |i: usize, other: usize| {
                    (self.targets[i].in_flight() as u64) * u64::from(self.targets[other].weight)
                };
                Some(if load(b, a) < load(a, b) { b } else { a })
            }
        }
    }
}

/// Weighted rendezvous score of `target` for a key hashing to `h`: the target with the
/// highest score takes the key (`-w / ln(u)`, u uniform in (0, 1)).
fn score(h: u64, target: &Target) -> f64 {
    let x = mix(h ^ target.seed);
    let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(target.weight) / u.ln()
}

/// FNV-1a, finished with a mixer: stable across builds and machines (std's hasher is not
/// promised to be), so every gateway of a fleet sends a key to the same target.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::upstream::HashKey;
    use http::uri::Authority;
    use std::time::Duration;

    fn targets(weights: &[u32]) -> Vec<Target> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Target::new(
                    Authority::try_from(format!("10.0.0.{i}:80")).unwrap(),
                    *w,
                    None,
                    super::super::pool::Pool::new(Duration::from_secs(1), false, None, 0),
                )
            })
            .collect()
    }

    fn counts(p: &Picker<'_>, n: usize, rounds: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for _ in 0..rounds {
            c[p.pick(None, |_| true).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_weights_three_to_one_give_three_to_one_interleaved() {
        assert_eq!(schedule(&[3, 1]), vec![0, 0, 1, 0]);
        let t = targets(&[3, 1]);
        let sched = schedule(&[3, 1]);
        let cursor = AtomicUsize::new(0);
        let p = Picker {
            targets: &t,
            balance: &Balance::RoundRobin,
            schedule: &sched,
            cursor: &cursor,
        };
        assert_eq!(counts(&p, 2, 4000), vec![3000, 1000]);
    }

    #[test]
    fn round_robin_skips_targets_that_may_not_take_traffic() {
        let t = targets(&[1, 1, 1]);
        let sched = schedule(&[1, 1, 1]);
        let cursor = AtomicUsize::new(0);
        let p = Picker {
            targets: &t,
            balance: &Balance::RoundRobin,
            schedule: &sched,
            cursor: &cursor,
        };
        for _ in 0..10 {
            assert_ne!(p.pick(None, |i| i != 1), Some(1));
        }
        assert_eq!(p.pick(None, |_| false), None);
    }

    #[test]
    fn least_request_respects_weights_when_idle_and_prefers_the_less_loaded() {
        let t = targets(&[3, 1]);
        let cursor = AtomicUsize::new(0);
        let p = Picker {
            targets: &t,
            balance: &Balance::LeastRequest,
            schedule: &[],
            cursor: &cursor,
        };
        // Idle, ties go to the first draw: the split follows the weights.
        let c = counts(&p, 2, 4000);
        let share = c[0] as f64 / 4000.0;
        assert!((0.70..0.80).contains(&share), "{c:?}");
        // Target 0 busy with 10 requests (3.3 per unit of weight), target 1 with none:
        // both are compared every time, and target 1 wins every time.
        let busy: Vec<_> = (0..10).map(|_| t[0].pool.busy()).collect();
        assert_eq!(counts(&p, 2, 4000), vec![0, 4000]);
        // Loads per weight equal (3 on 3, 1 on 1): the draw decides, by weight again.
        drop(busy);
        let _busy: Vec<_> = (0..3)
            .map(|_| t[0].pool.busy())
            .chain([t[1].pool.busy()])
            .collect();
        let c = counts(&p, 2, 4000);
        assert!((2700..3300).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn hash_sends_a_key_to_one_target_and_moves_about_one_in_n_keys_when_one_is_added() {
        let three = targets(&[1, 1, 1]);
        let four = targets(&[1, 1, 1, 1]);
        let cursor = AtomicUsize::new(0);
        let balance = Balance::Hash(HashKey::ClientIp);
        let pick = |t: &[Target], k: &[u8]| {
            Picker {
                targets: t,
                balance: &balance,
                schedule: &[],
                cursor: &cursor,
            }
            .pick(Some(hash_bytes(k)), |_| true)
            .unwrap()
        };
        let mut moved = 0;
        let keys = 10_000;
        for k in 0..keys {
            let key = format!("tenant-{k}");
            let before = pick(&three, key.as_bytes());
            assert_eq!(before, pick(&three, key.as_bytes()));
            let after = pick(&four, key.as_bytes());
            if after != before {
                assert_eq!(after, 3, "a key moved between old targets");
                moved += 1;
            }
        }
        let share = f64::from(moved) / f64::from(keys);
        assert!((0.22..0.28).contains(&share), "moved {share}");
    }

    #[test]
    fn hash_spreads_keys_by_weight() {
        let t = targets(&[3, 1]);
        let cursor = AtomicUsize::new(0);
        let balance = Balance::Hash(HashKey::ClientIp);
        let p = Picker {
            targets: &t,
            balance: &balance,
            schedule: &[],
            cursor: &cursor,
        };
        let first = (0..8000)
            .filter(|k| p.pick(Some(hash_bytes(format!("k{k}").as_bytes())), |_| true) == Some(0))
            .count();
        let share = first as f64 / 8000.0;
        assert!((0.72..0.78).contains(&share), "{share}");
    }
}
