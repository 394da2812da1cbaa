//! The fleet backend: state several gateway instances share through one Redis (or Valkey)
//! server or a Redis Cluster. One [`RedisStore`] per process holds its connections
//! (`conn.rs`: multiplexed async ones for the request path, synchronous ones to the node
//! holding the control plane), a health gate and the counters `/metrics` shows.
//!
//! Why the `redis` crate and not `fred`: it is the client Redis itself maintains, with tokio,
//! rustls, ACL users, Lua scripts (EVALSHA with a fallback to EVAL) and Cluster, and it adds
//! fewer dependencies; fred's extra features (sentinel pools, tracing) are not needed here.
//!
//! When Redis does not answer within `command_timeout`, or refuses, the gate closes for a
//! back-off (100 ms doubling to 5 s): calls then fail at once, without waiting on a dead
//! server, until one probe per back-off gets through. Each concern then does what its
//! failure mode says ([`FailMode`]).

mod conn;
pub mod issuer;
pub mod licenses;
pub mod limits;
pub mod quotas;
pub mod throttle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub use conn::CONTROL_TAG;
use conn::{AnyConn, ControlNode, Pool};
use zeroize::Zeroizing;

/// What a concern does while the shared store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Answer from this instance's own bounded state (each instance then limits alone).
    Open,
    /// Refuse with 503 `state_unavailable` rather than risk a wrong answer.
    Closed,
}

impl FailMode {
    pub fn parse(s: &str) -> Option<FailMode> {
        match s {
            "fail_open" => Some(FailMode::Open),
            "fail_closed" => Some(FailMode::Closed),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            FailMode::Open => "fail_open",
            FailMode::Closed => "fail_closed",
        }
    }
}

/// `[state]` with `backend = "redis"`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port[/db]` or `rediss://` (TLS), with no credentials in it.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Zeroizing<String>>,
    /// PEM roots for `rediss://` (default: the system's).
    pub ca: Option<Vec<u8>>,
    /// Put in front of every key, so several fleets (or other users) share one server.
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Multiplexed connections per instance (one server; a Cluster uses one per node).
    pub pool_size: usize,
    /// `url` is one node of a Redis Cluster, which tells the others.
    pub cluster: bool,
    /// What rate limits do while Redis cannot answer.
    pub rate_limits: FailMode,
    /// What quotas do while Redis cannot answer.
    pub quotas: FailMode,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password; the URL holds none (validation refuses one).
        f.debug_struct("RedisSettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("cluster", &self.cluster)
            .field("rate_limits", &self.rate_limits)
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state.url: {0}")]
    Url(String),
    #[error("state: the Redis client could not be built: {0}")]
    Client(String),
}

/// Upper bounds (microseconds) of the call-latency buckets `/metrics` shows.
pub const LATENCY_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

/// How the shared store has answered, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Calls not tried because the gate was closed (Redis down, in back-off).
    pub skipped: AtomicU64,
    /// Answers a concern took from its local fallback (fail_open).
    pub fallbacks: AtomicU64,
    /// Calls per latency bucket; the last counts the slower ones.
    pub buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub latency_sum_us: AtomicU64,
}

impl StoreStats {
    fn observe(&self, us: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// The back-off gate: closed for a while after a failure, so a dead server costs each
/// request nothing but an atomic load.
#[derive(Debug)]
struct Gate {
    up: AtomicBool,
    /// Monotonic nanoseconds before which calls are not tried.
    closed_until: AtomicU64,
    backoff_ns: AtomicU64,
}

const MIN_BACKOFF_NS: u64 = 100_000_000;
const MAX_BACKOFF_NS: u64 = 5_000_000_000;

impl Gate {
    /// Whether a call may be tried at `now` (ns). While closed, the first caller past the
    /// deadline takes the probe and pushes the deadline on, so one call probes at a time.
    fn admit(&self, now: u64) -> bool {
        if self.up.load(Ordering::Acquire) {
            return true;
        }
        let until = self.closed_until.load(Ordering::Acquire);
        now >= until
            && self
                .closed_until
                .compare_exchange(
                    until,
                    now.saturating_add(self.backoff_ns.load(Ordering::Relaxed)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Returns whether this success reopened the gate.
    fn success(&self) -> bool {
        self.backoff_ns.store(MIN_BACKOFF_NS, Ordering::Relaxed);
        !self.up.swap(true, Ordering::AcqRel)
    }

    /// Returns whether this failure closed the gate.
    fn failure(&self, now: u64) -> bool {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        let backoff = if was_up {
            MIN_BACKOFF_NS
        } else {
            (self.backoff_ns.load(Ordering::Relaxed) * 2).min(MAX_BACKOFF_NS)
        };
        self.backoff_ns.store(backoff, Ordering::Relaxed);
        self.closed_until
            .store(now.saturating_add(backoff), Ordering::Release);
        was_up
    }
}

/// Why a call got no answer (logged and counted; never shown to a client).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the store is in back-off after a failure")]
    Skipped,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

/// The connections to one Redis server, shared by every generation that names the same
/// settings (a reload with the same `[state]` keeps them).
pub struct RedisStore {
    settings: RedisSettings,
    /// For connections other than the pool's: the issuer's synchronous ones, pub/sub.
    client: redis::Client,
    pool: Pool,
    next: AtomicUsize,
    /// Where the control plane's synchronous connections go (in a Cluster: its slot's owner).
    control: ControlNode,
    /// Synchronous connections for the stores the blocking pool calls (issuer, licenses).
    idle: std::sync::Mutex<Vec<redis::Connection>>,
    gate: Gate,
    pub stats: StoreStats,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Set up the pool without waiting for the server: a gateway starts (and serves, as each
    /// concern's failure mode says) while Redis is still down, and connects when it is up.
    /// Must run inside a tokio runtime.
    pub fn connect(settings: RedisSettings) -> Result<RedisStore, StoreError> {
        let client = conn::client(&settings, &settings.url)?;
        let pool = Pool::open(&settings, &client)?;
        Ok(RedisStore {
            settings,
            client,
            pool,
            next: AtomicUsize::new(0),
            control: ControlNode::new(),
            idle: std::sync::Mutex::new(Vec::new()),
            // Up until a call fails: every first call is tried (the watcher's first ping, at
            // once, finds out either way), rather than all but one skipped as during a
            // back-off.
            gate: Gate {
                up: AtomicBool::new(true),
                closed_until: AtomicU64::new(0),
                backoff_ns: AtomicU64::new(MIN_BACKOFF_NS),
            },
            stats: StoreStats::default(),
        })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Whether the last call got an answer.
    pub fn is_up(&self) -> bool {
        self.gate.up.load(Ordering::Acquire)
    }

    /// `key_prefix` + `parts`, binary-safe.
    pub fn key(&self, parts: &[&[u8]]) -> Vec<u8> {
        let len = self.settings.key_prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut k = Vec::with_capacity(len);
        k.extend_from_slice(self.settings.key_prefix.as_bytes());
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }

    /// Run one script invocation through the gate, the timeout and the counters.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, CallError> {
        self.run(async |mut conn: AnyConn| call.invoke_async::<T>(&mut conn).await)
            .await
    }

    /// A pipeline (or `MULTI` block), through the gate, the timeout and the counters.
    pub async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, CallError> {
        self.run(async |mut conn: AnyConn| pipe.query_async::<T>(&mut conn).await)
            .await
    }

    /// `GET key`, through the gate, the timeout and the counters.
    pub async fn get<T: redis::FromRedisValue>(&self, key: &[u8]) -> Result<T, CallError> {
        self.run(async |mut conn: AnyConn| {
            redis::cmd("GET").arg(key).query_async::<T>(&mut conn).await
        })
        .await
    }

    /// `PING`, through the same gate and counters as every call.
    pub async fn ping(&self) -> Result<(), CallError> {
        self.run(async |mut conn: AnyConn| redis::cmd("PING").query_async::<()>(&mut conn).await)
            .await
    }

    async fn run<T>(
        &self,
        call: impl AsyncFnOnce(AnyConn) -> redis::RedisResult<T>,
    ) -> Result<T, CallError> {
        let started = crate::clock::mono_at(std::time::Instant::now());
        if !self.gate.admit(started) {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::Skipped);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let timeout = self.settings.command_timeout;
        let attempt = async {
            // A handle on a multiplexed connection (a Cluster's is made at the first call).
            let conn = self.pool.get(n).await?;
            call(conn).await
        };
        let outcome = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Redis(e)),
            Err(_) => Err(CallError::Timeout(timeout)),
        };
        match &outcome {
            Ok(_) => self.answered(started),
            Err(e) => {
                match e {
                    CallError::Timeout(_) => &self.stats.timeouts,
                    _ => &self.stats.errors,
                }
                .fetch_add(1, Ordering::Relaxed);
                self.close_gate(e);
            }
        }
        outcome
    }

    /// Ping once a second while the store is in use, so `/readyz` and `/metrics` tell the
    /// truth on a quiet gateway and a recovered server is found before the next request
    /// needs it. Ends when the last generation using the store drops it.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                // The outcome is in the gate and the counters.
                let _ = store.ping().await;
            }
        });
    }
}

/// Idle synchronous connections kept for the next call.
const IDLE_SYNC_CONNECTIONS: usize = 8;

/// The synchronous side, for stores whose callers run on the blocking pool (the issuer's
/// transactions, the license book): the same gate and counters as the async calls.
impl RedisStore {
    /// A connection through the gate: while Redis is known to be down, callers are refused
    /// at once instead of each waiting out a connect timeout. The error says why (no
    /// credential in it).
    pub(crate) fn sync_connection(&self) -> Result<redis::Connection, String> {
        let now = crate::clock::mono_at(std::time::Instant::now());
        if !self.gate.admit(now) {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::Skipped.to_string());
        }
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        self.control
            .open(&self.settings, &self.client)
            .map_err(|e| self.sync_failed(&e))
    }

    /// Keep `conn` for the next call (it must be in a clean state: no open transaction).
    pub(crate) fn give_back(&self, conn: redis::Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_SYNC_CONNECTIONS
        {
            idle.push(conn);
        }
    }

    /// A call that began at `started` (monotonic ns) got its answer on `conn`.
    pub(crate) fn sync_succeeded(&self, conn: redis::Connection, started: u64) {
        self.answered(started);
        self.give_back(conn);
    }

    /// A call that began at `started` got an answer: counted, timed, and the gate opened.
    fn answered(&self, started: u64) {
        let done = crate::clock::mono_at(std::time::Instant::now());
        self.stats.ok.fetch_add(1, Ordering::Relaxed);
        self.stats.observe(done.saturating_sub(started) / 1_000);
        if self.gate.success() {
            tracing::info!(prefix = %self.settings.key_prefix, "shared state: Redis answers again");
        }
    }

    /// A call failed (its connection is dropped); returns the reason to report.
    pub(crate) fn sync_failed(&self, e: &redis::RedisError) -> String {
        self.control.failed(e);
        if e.is_timeout() {
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.close_gate(e);
        e.to_string()
    }

    /// Like [`sync_failed`](Self::sync_failed), for a failure already turned into text.
    pub(crate) fn sync_failed_with(&self, what: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.close_gate(&what);
    }

    fn close_gate(&self, why: &dyn std::fmt::Display) {
        let now = crate::clock::mono_at(std::time::Instant::now());
        if self.gate.failure(now) {
            tracing::warn!(prefix = %self.settings.key_prefix, error = %why, "shared state: Redis does not answer; each concern follows its failure mode until it does");
        }
    }
}

/// How often each instance reads the shared licenses, keys and revocations again, whatever
/// the channel said: the bound on how long a lost message can matter.
pub const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// How often an idle store is pinged.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What a fleet listener hears (see [`RedisStore::listen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// A message another instance (or this one) announced.
    Message(&'a str),
    /// Read the whole state again: the subscription has just been (re)made, so messages
    /// may have been missed, or the reconciliation period has passed.
    Resync,
}

impl RedisStore {
    /// The pub/sub channel of this fleet (one per key prefix).
    fn channel(&self) -> String {
        format!("{}events", self.settings.key_prefix)
    }

    /// Tell every instance (this one too) `message`, without waiting: a lost message is
    /// made good by each listener's periodic resync.
    pub fn announce(self: &Arc<Self>, message: String) {
        let store = Arc::clone(self);
        let publish = async move {
            let channel = store.channel();
            let _ = store
                .run(async |mut conn: AnyConn| {
                    redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(&message)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(publish);
            }
            // Outside a runtime (a CLI command): the others resync within their period.
            Err(_) => tracing::debug!("fleet message not sent outside the runtime"),
        }
    }

    /// Call `on` with every message on the fleet's channel, with [`Heard::Resync`] after
    /// each (re)subscription and every `resync_every`, until `on` returns false. Reconnects
    /// with back-off (100 ms doubling to 5 s) when the subscription drops.
    pub fn listen(
        self: &Arc<Self>,
        resync_every: Duration,
        on: impl Fn(Heard<'_>) -> bool + Send + Sync + 'static,
    ) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let Some(store) = weak.upgrade() else { return };
                let channel = store.channel();
                let client = store.client.clone();
                let connect_timeout = store.settings.connect_timeout;
                drop(store);
                let subscribed = tokio::time::timeout(connect_timeout, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                let pubsub = match subscribed {
                    Ok(Ok(p)) => Some(p),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "fleet channel: cannot subscribe");
                        None
                    }
                    Err(_) => None,
                };
                // Resync after each attempt: while unsubscribed, the periodic resync below
                // is what bounds a missed message.
                if !on(Heard::Resync) {
                    return;
                }
                let Some(pubsub) = pubsub else {
                    if !resync_while_waiting(&on, backoff, resync_every).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                };
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                let mut tick = tokio::time::interval(resync_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tokio::select! {
                        msg = futures_util::StreamExt::next(&mut messages) => match msg {
                            Some(m) => {
                                if let Ok(text) = std::str::from_utf8(m.get_payload_bytes())
                                    && !on(Heard::Message(text))
                                {
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = tick.tick() => {
                            if !on(Heard::Resync) {
                                return;
                            }
                        }
                    }
                }
                tracing::debug!("fleet channel: subscription dropped; resubscribing");
            }
        });
    }
}

/// Wait `backoff`, resyncing every `every` meanwhile; false when the listener is done.
async fn resync_while_waiting(
    on: &(impl Fn(Heard<'_>) -> bool + Send + Sync),
    backoff: Duration,
    every: Duration,
) -> bool {
    let mut left = backoff;
    while !left.is_zero() {
        let step = left.min(every);
        tokio::time::sleep(step).await;
        left -= step;
        if step == every && !on(Heard::Resync) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate {
            up: AtomicBool::new(true),
            closed_until: AtomicU64::new(0),
            backoff_ns: AtomicU64::new(MIN_BACKOFF_NS),
        }
    }

    #[test]
    fn a_failure_closes_the_gate_for_a_backoff_that_doubles_and_one_probe_passes_each_time() {
        let g = gate();
        assert!(g.admit(0));
        assert!(g.failure(1_000), "the first failure reports the change");
        assert!(
            !g.admit(1_000 + MIN_BACKOFF_NS - 1),
            "closed during the back-off"
        );
        assert!(g.admit(1_000 + MIN_BACKOFF_NS), "one probe after it");
        assert!(
            !g.admit(1_000 + MIN_BACKOFF_NS),
            "a second caller at the same instant waits"
        );
        assert!(!g.failure(2 * MIN_BACKOFF_NS), "already down");
        assert!(!g.admit(2 * MIN_BACKOFF_NS + 2 * MIN_BACKOFF_NS - 1));
        assert!(g.admit(4 * MIN_BACKOFF_NS), "the back-off doubled");
        for _ in 0..20 {
            g.failure(0);
        }
        assert_eq!(g.backoff_ns.load(Ordering::Relaxed), MAX_BACKOFF_NS);
        assert!(g.success(), "the first success reports the change");
        assert!(g.admit(0));
        assert_eq!(g.backoff_ns.load(Ordering::Relaxed), MIN_BACKOFF_NS);
    }

    #[test]
    fn settings_never_print_the_password() {
        let s = RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            username: Some("gw".into()),
            password: Some(Zeroizing::new("hunter2-secret".into())),
            ca: None,
            key_prefix: "p:".into(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(100),
            pool_size: 2,
            cluster: false,
            rate_limits: FailMode::Open,
            quotas: FailMode::Open,
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
