//! The token endpoint's failed-authentication counts, shared by a fleet: a guesser spreading
//! attempts over the instances meets one limit. Counts sit in fixed windows aligned on the
//! Unix clock (`{prefix}{iss}th:c:{client}:{n}` and `...th:a:{address}:{n}`, window `n` =
//! `now / window`), each expiring a second after its window ends. The caller passes `now`,
//! so the window a count falls in never depends on Redis's clock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::RedisStore;
use crate::limits::Unavailable;

/// The limits, per window (the issuer's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    pub per_client: u32,
    pub per_address: u32,
    pub window: Duration,
}

/// Failure counts in the fleet's Redis.
#[derive(Debug)]
pub struct SharedThrottle {
    store: Arc<RedisStore>,
    limits: ThrottleLimits,
}

impl SharedThrottle {
    pub fn new(store: Arc<RedisStore>, limits: ThrottleLimits) -> SharedThrottle {
        SharedThrottle { store, limits }
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.limits.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The window holding `now_ms`: its number and its end.
    fn window(&self, now_ms: u64) -> (u64, u64) {
        let n = now_ms / self.window_ms();
        (n, (n + 1).saturating_mul(self.window_ms()))
    }

    fn client_key(&self, client: &str, n: u64) -> Vec<u8> {
        self.store.key(&[
            b"{iss}th:c:",
            client.as_bytes(),
            b":",
            n.to_string().as_bytes(),
        ])
    }

    fn address_key(&self, address: IpAddr, n: u64) -> Vec<u8> {
        self.store.key(&[
            super::CONTROL_TAG.as_bytes(),
            b"th:a:",
            address.to_string().as_bytes(),
            b":",
            n.to_string().as_bytes(),
        ])
    }

    /// `Ok(Err(retry_after))` when `client` (if counted) or `address` is over its limit at
    /// `now_ms`; `Err` when Redis cannot answer (the endpoint fails closed).
    pub async fn check(
        &self,
        client: Option<&str>,
        address: IpAddr,
        now_ms: u64,
    ) -> Result<Result<(), Duration>, Unavailable> {
        let (n, end) = self.window(now_ms);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.address_key(address, n));
        if let Some(c) = client {
            pipe.cmd("GET").arg(self.client_key(c, n));
        }
        let counts: Vec<Option<u32>> = self.store.pipeline(&pipe).await.map_err(|_| Unavailable)?;
        let over = |i: usize, limit: u32| counts.get(i).copied().flatten().unwrap_or(0) >= limit;
        if over(0, self.limits.per_address) || (client.is_some() && over(1, self.limits.per_client))
        {
            // Round up: a client told "retry after 0 s" would come straight back.
            let secs = end.saturating_sub(now_ms).div_ceil(1000).max(1);
            return Ok(Err(Duration::from_secs(secs)));
        }
        Ok(Ok(()))
    }

    /// Count a failed authentication (`client`: the id it claimed, if well-formed).
    pub async fn failed(
        &self,
        client: Option<&str>,
        address: IpAddr,
        now_ms: u64,
    ) -> Result<(), Unavailable> {
        let (n, end) = self.window(now_ms);
        let expire = end.saturating_add(1000);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut keys = vec![self.address_key(address, n)];
        if let Some(c) = client {
            keys.push(self.client_key(c, n));
        }
        for k in keys {
            pipe.cmd("INCR").arg(&k).ignore();
            pipe.cmd("PEXPIREAT").arg(&k).arg(expire).ignore();
        }
        self.store
            .pipeline::<()>(&pipe)
            .await
            .map_err(|_| Unavailable)
    }

    /// A successful authentication of `client` clears its count (not its address's).
    pub async fn succeeded(&self, client: &str, now_ms: u64) -> Result<(), Unavailable> {
        let (n, _) = self.window(now_ms);
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.client_key(client, n)).ignore();
        self.store
            .pipeline::<()>(&pipe)
            .await
            .map_err(|_| Unavailable)
    }
}
