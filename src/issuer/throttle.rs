//! Failed client authentication, counted per client id and per client address in fixed
//! windows: past the limit, further attempts get 429 with `Retry-After` until the window
//! ends, right or wrong, so a secret cannot be guessed faster than the limit allows and the
//! argon2 work an attacker can cause is bounded.
//!
//! # Defaults
//! 5 failures per client id and 20 per address in a 60 s window. A success clears the
//! client id's count, not the address's (one working client must not launder another's
//! guesses). Each map holds at most 65,536 keys: when full, windows that ended are dropped;
//! if none has, a new key is not tracked (its address still is).

use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

/// Limits, per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_client: u32,
    pub per_address: u32,
    pub window: Duration,
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_client: 5,
            per_address: 20,
            window: Duration::from_secs(60),
            max_keys: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// Milliseconds since the Unix epoch.
    started: u64,
    failures: u32,
}

/// The failure counters.
#[derive(Debug, Default)]
pub struct Throttle {
    limits: Limits,
    by_client: DashMap<Box<str>, Window>,
    by_address: DashMap<IpAddr, Window>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        Throttle {
            limits,
            ..Throttle::default()
        }
    }

    /// `Err(retry_after)` when `client` (if counted) or `address` is over its limit at `now`.
    pub fn check(
        &self,
        client: Option<&str>,
        address: IpAddr,
        now: SystemTime,
    ) -> Result<(), Duration> {
        let now = millis(now);
        let over = |w: Option<Window>, limit: u32| {
            w.filter(|w| w.failures >= limit)
                .map(|w| w.started.saturating_add(self.window_ms()))
                .filter(|end| *end > now)
        };
        let by_client =
            client.and_then(|c| over(self.by_client.get(c).map(|w| *w), self.limits.per_client));
        let by_address = over(
            self.by_address.get(&address).map(|w| *w),
            self.limits.per_address,
        );
        match by_client.max(by_address) {
            // Round up: a client told "retry after 0 s" would come straight back.
            Some(end) => Err(Duration::from_secs((end - now).div_ceil(1000).max(1))),
            None => Ok(()),
        }
    }

    /// Count a failed authentication (`client`: the id it claimed, if well-formed).
    pub fn failed(&self, client: Option<&str>, address: IpAddr, now: SystemTime) {
        let now = millis(now);
        if let Some(c) = client {
            self.bump(&self.by_client, Box::<str>::from(c), now);
        }
        self.bump(&self.by_address, address, now);
    }

    /// A successful authentication of `client` clears its count.
    pub fn succeeded(&self, client: &str) {
        self.by_client.remove(client);
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.limits.window.as_millis()).unwrap_or(u64::MAX)
    }

    fn bump<K: Eq + Hash>(&self, map: &DashMap<K, Window>, key: K, now: u64) {
        let window = self.window_ms();
        if !map.contains_key(&key) && map.len() >= self.limits.max_keys {
            map.retain(|_, w| w.started.saturating_add(window) > now);
            if map.len() >= self.limits.max_keys {
                return;
            }
        }
        let mut w = map.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if w.started.saturating_add(window) <= now {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

/// The counts this issuer keeps: in process, or in the fleet's Redis (one limit for every
/// instance). The shared counts fail closed: an attempt Redis cannot count is refused.
#[derive(Debug)]
pub enum Throttles {
    Local(Throttle),
    Shared(crate::state::redis::throttle::SharedThrottle),
}

/// The shared store could not count an attempt.
pub struct Unavailable;

impl Throttles {
    pub fn new(
        limits: Limits,
        shared: Option<&std::sync::Arc<crate::state::redis::RedisStore>>,
    ) -> Self {
        match shared {
            None => Throttles::Local(Throttle::new(limits)),
            Some(store) => Throttles::Shared(crate::state::redis::throttle::SharedThrottle::new(
                std::sync::Arc::clone(store),
                crate::state::redis::throttle::ThrottleLimits {
                    per_client: limits.per_client,
                    per_address: limits.per_address,
                    window: limits.window,
                },
            )),
        }
    }

    /// [`Throttle::check`].
    pub async fn check(
        &self,
        client: Option<&str>,
        address: IpAddr,
        now: SystemTime,
    ) -> Result<Result<(), Duration>, Unavailable> {
        match self {
            Throttles::Local(t) => Ok(t.check(client, address, now)),
            Throttles::Shared(t) => t
                .check(client, address, millis(now))
                .await
                .map_err(|_| Unavailable),
        }
    }

    /// [`Throttle::failed`].
    pub async fn failed(
        &self,
        client: Option<&str>,
        address: IpAddr,
        now: SystemTime,
    ) -> Result<(), Unavailable> {
        match self {
            Throttles::Local(t) => {
                t.failed(client, address, now);
                Ok(())
            }
            Throttles::Shared(t) => t
                .failed(client, address, millis(now))
                .await
                .map_err(|_| Unavailable),
        }
    }

    /// [`Throttle::succeeded`].
    pub async fn succeeded(&self, client: &str, now: SystemTime) -> Result<(), Unavailable> {
        match self {
            Throttles::Local(t) => {
                t.succeeded(client);
                Ok(())
            }
            Throttles::Shared(t) => t
                .succeeded(client, millis(now))
                .await
                .map_err(|_| Unavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn a_client_id_is_throttled_after_its_limit_until_the_window_ends() {
        let t = Throttle::new(Limits::default());
        for i in 0..5 {
            assert!(t.check(Some("erp"), IP, at(i)).is_ok());
            t.failed(Some("erp"), IP, at(i));
        }
        assert_eq!(
            t.check(Some("erp"), OTHER_IP, at(10)),
            Err(Duration::from_secs(50))
        );
        assert!(t.check(Some("other"), OTHER_IP, at(10)).is_ok());
        assert!(t.check(Some("erp"), OTHER_IP, at(60)).is_ok());
    }

    #[test]
    fn an_address_is_throttled_across_client_ids_and_a_success_does_not_clear_it() {
        let t = Throttle::new(Limits::default());
        for i in 0..20 {
            t.failed(Some(&format!("guess-{i}")), IP, at(0));
        }
        t.succeeded("guess-1");
        assert_eq!(
            t.check(Some("fresh"), IP, at(1)),
            Err(Duration::from_secs(59))
        );
        assert!(t.check(Some("fresh"), OTHER_IP, at(1)).is_ok());
    }

    #[test]
    fn a_success_clears_the_client_count() {
        let t = Throttle::new(Limits::default());
        for _ in 0..4 {
            t.failed(Some("erp"), IP, at(0));
        }
        t.succeeded("erp");
        t.failed(Some("erp"), IP, at(1));
        assert!(t.check(Some("erp"), IP, at(1)).is_ok());
    }

    #[test]
    fn the_maps_stay_bounded() {
        let t = Throttle::new(Limits {
            max_keys: 10,
            ..Limits::default()
        });
        for i in 0..100 {
            t.failed(Some(&format!("id-{i}")), IP, at(0));
        }
        assert!(t.by_client.len() <= 10);
        // Ended windows make room again.
        t.failed(Some("late"), IP, at(120));
        assert!(t.by_client.contains_key("late"));
    }
}
