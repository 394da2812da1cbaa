//! Rate limits and in-flight caps: a route's limits (or the configured default), each keyed
//! by who is asking, judged with GCRA ([`gcra`]) against a keyed store passed in (floor 2
//! keeps it: in process, or shared by a fleet).
//!
//! Order, kept by `pipeline.rs`: the limits keyed by what is known before the token stage
//! (address, certificate, a header, the route as a whole, the license) run before any
//! signature is checked, so a flood of forged tokens is refused before it costs verification;
//! those keyed by the token (`token_sub`, `client_id`) run after it.

pub mod gcra;
pub mod quota;

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use http::header::HeaderName;

pub use crate::denial::{ConnRefusal, LimitHit, LimitKind, LimitRefusal};
pub use gcra::{Gcra, Rate, Verdict};
pub use quota::{Quota, QuotaKey, QuotaState, QuotaUse, QuotaVerdict, Window};

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client address as the IP stage judged it (after trusted proxies).
    ClientIp,
    /// The client certificate's SPKI pin (requests without one share one key).
    Cert,
    /// The machine license that granted the request (requests without one share one key).
    License,
    /// The bearer token's `sub`.
    TokenSub,
    /// The bearer token's `client_id` (or `azp`).
    ClientId,
    /// A request header's value (requests without it share one key).
    Header(HeaderName),
    /// The route as a whole: every caller shares one key.
    Route,
}

impl LimitKey {
    /// `client_ip`, `cert`, `license`, `token_sub`, `client_id`, `header:NAME` or `route`.
    /// The error completes "\"<s>\" ...".
    pub fn parse(s: &str) -> Result<LimitKey, &'static str> {
        Ok(match s {
            "client_ip" => LimitKey::ClientIp,
            "cert" => LimitKey::Cert,
            "license" => LimitKey::License,
            "token_sub" => LimitKey::TokenSub,
            "client_id" => LimitKey::ClientId,
            "route" => LimitKey::Route,
            _ => match s.strip_prefix("header:") {
                Some(name) => LimitKey::Header(
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| "names a header that is not a valid header name")?,
                ),
                None => {
                    return Err(
                        "is not a limit key: use client_ip, cert, license, token_sub, client_id, header:NAME or route",
                    );
                }
            },
        })
    }

    pub fn kind(&self) -> LimitKind {
        match self {
            LimitKey::ClientIp => LimitKind::ClientIp,
            LimitKey::Cert => LimitKind::Cert,
            LimitKey::License => LimitKind::License,
            LimitKey::TokenSub => LimitKind::TokenSub,
            LimitKey::ClientId => LimitKind::ClientId,
            LimitKey::Header(_) => LimitKind::Header,
            LimitKey::Route => LimitKind::Route,
        }
    }

    /// Whether the key is known before the token stage runs.
    pub fn before_token(&self) -> bool {
        !matches!(self, LimitKey::TokenSub | LimitKey::ClientId)
    }
}

/// One configured limit.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Its name in the store and in `RateLimit-Policy`: `<route>#<index>` (stable across
    /// reloads and across a fleet with the same config).
    pub scope: Arc<str>,
    pub key: LimitKey,
    /// The rate, with its GCRA parameters; `None`: an in-flight cap only.
    pub rate: Option<(Rate, Gcra)>,
    /// Requests of one key being served at once; `None`: no cap.
    pub max_in_flight: Option<u32>,
    /// Requests of one key per calendar window, counted once the request is admitted.
    pub quota: Option<Quota>,
}

/// Flood control at accept, per client address (after a trusted PROXY header): checked
/// before any TLS work, like the listener's IP lists.
#[derive(Debug, Clone, Default)]
pub struct ConnFlood {
    /// `listener:<name>`: the key scope in the store.
    pub scope: Arc<str>,
    /// New connections per address.
    pub rate: Option<Gcra>,
    /// Open connections per address.
    pub per_ip: Option<u32>,
}

impl ConnFlood {
    /// Admit a new connection from `ip` at `now` (nanoseconds). `Ok(slot)`: admitted,
    /// holding `slot` (if capped) for the connection's life.
    pub fn admit(
        &self,
        ip: IpAddr,
        state: &dyn LimitState,
        now: u64,
    ) -> Result<Option<InFlightSlot>, ConnRefusal> {
        if self.rate.is_none() && self.per_ip.is_none() {
            return Ok(None);
        }
        let caller_ip = ip.to_canonical();
        let octets = match caller_ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        if let Some(rule) = self.rate
            && let Verdict::Deny { .. } = state.rate(&self.scope, &octets, rule, now)
        {
            return Err(ConnRefusal::Flood);
        }
        match self.per_ip {
            None => Ok(None),
            Some(max) => state
                .acquire(&self.scope, &octets, max)
                .map(Some)
                .ok_or(ConnRefusal::Flood),
        }
    }
}

/// What the keys are read from.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub ip: IpAddr,
    pub spki: Option<&'a [u8; 32]>,
    pub license: Option<&'a str>,
    pub sub: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl Caller<'_> {
    /// The key's value for this caller, written into `buf` (no allocation for the fixed-size
    /// kinds). Absent values (no certificate, no header) share the empty key.
    pub fn value<'b>(&'b self, key: &LimitKey, buf: &'b mut [u8; 16]) -> &'b [u8] {
        match key {
            LimitKey::ClientIp => match self.ip.to_canonical() {
                IpAddr::V4(v4) => {
                    buf[..4].copy_from_slice(&v4.octets());
                    &buf[..4]
                }
                IpAddr::V6(v6) => {
                    *buf = v6.octets();
                    &buf[..]
                }
            },
            LimitKey::Cert => self.spki.map_or(&[][..], |s| &s[..]),
            LimitKey::License => self.license.map_or(&[][..], str::as_bytes),
            LimitKey::TokenSub => self.sub.map_or(&[][..], str::as_bytes),
            LimitKey::ClientId => self.client_id.map_or(&[][..], str::as_bytes),
            LimitKey::Header(name) => self.headers.get(name).map_or(&[][..], |v| v.as_bytes()),
            LimitKey::Route => &[],
        }
    }
}

/// A keyed store of GCRA state and in-flight counts (floor 2 implements it).
pub trait LimitState: Send + Sync + std::fmt::Debug {
    /// One request by `value` under `scope`'s rule at `now` (nanoseconds on the caller's
    /// clock), atomic per key.
    fn rate(&self, scope: &str, value: &[u8], rule: Gcra, now: u64) -> Verdict;
    /// Take one in-flight slot of `value` under `scope` if fewer than `max` are taken.
    fn acquire(&self, scope: &str, value: &[u8], max: u32) -> Option<InFlightSlot>;
}

/// A taken in-flight slot; dropping it gives the slot back.
pub struct InFlightSlot {
    _release: Box<dyn Send + Sync>,
}

impl InFlightSlot {
    pub fn new(release: impl Send + Sync + 'static) -> Self {
        InFlightSlot {
            _release: Box::new(release),
        }
    }
}

impl std::fmt::Debug for InFlightSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlightSlot")
    }
}

/// Rate state a fleet shares (floor 2 keeps it in Redis). An answer may wait on the network,
/// so it is a future, boxed: one allocation is nothing beside a round trip.
pub trait SharedLimitState: Send + Sync + std::fmt::Debug {
    /// One request by `value` under `scope`'s rule at `now_us` (Unix microseconds: the one
    /// clock a fleet shares). `Err` when the store cannot answer and rate limits fail closed;
    /// when they fail open, the store answers from its bounded local fallback instead.
    fn rate<'a>(
        &'a self,
        scope: &'a str,
        value: &'a [u8],
        rule: Gcra,
        now_us: u64,
    ) -> SharedFuture<'a, Result<Verdict, Unavailable>>;
}

/// What a [`SharedLimitState`] call returns.
pub type SharedFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The shared store could not answer, and the concern asked fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Where this generation keeps rate state: in process, or shared by the fleet. In-flight
/// caps count requests this instance holds open, so they stay local either way.
#[derive(Debug, Clone, Copy)]
pub enum Limiter<'a> {
    Local(&'a dyn LimitState),
    Shared {
        rates: &'a dyn SharedLimitState,
        in_flight: &'a dyn LimitState,
    },
}

/// The instant a limit judges by, on both clocks: monotonic nanoseconds for the process's
/// own state, Unix microseconds for the state a fleet shares.
#[derive(Debug, Clone, Copy)]
pub struct Instant {
    pub mono_ns: u64,
    pub unix_us: u64,
}

/// Judge `caller` against each of `limits` whose key is known in this phase
/// (`before_token`). The first refusal wins; slots taken for admitted in-flight caps are
/// pushed to `slots`, to be held until the response is done.
pub async fn check(
    limits: &[Limit],
    before_token: bool,
    caller: &Caller<'_>,
    limiter: Limiter<'_>,
    now: Instant,
    slots: &mut Vec<InFlightSlot>,
) -> Result<(), LimitRefusal> {
    for limit in limits
        .iter()
        .filter(|l| l.key.before_token() == before_token)
    {
        let mut buf = [0u8; 16];
        let value = caller.value(&limit.key, &mut buf);
        if let Some((rate, rule)) = limit.rate {
            let verdict = match limiter {
                Limiter::Local(state) => state.rate(&limit.scope, value, rule, now.mono_ns),
                Limiter::Shared { rates, .. } => rates
                    .rate(&limit.scope, value, rule, now.unix_us)
                    .await
                    .map_err(|Unavailable| LimitRefusal::Unavailable)?,
            };
            if let Verdict::Deny { retry_after } = verdict {
                return Err(LimitRefusal::Rate(LimitHit {
                    kind: limit.key.kind(),
                    retry_after_secs: secs_up(retry_after),
                    quota: u64::from(rate.count),
                    window_secs: u32::try_from(rate.window_secs()).unwrap_or(u32::MAX),
                }));
            }
        }
        if let Some(max) = limit.max_in_flight {
            let state = match limiter {
                Limiter::Local(state) => state,
                Limiter::Shared { in_flight, .. } => in_flight,
            };
            match state.acquire(&limit.scope, value, max) {
                Some(slot) => slots.push(slot),
                None => return Err(LimitRefusal::InFlight(limit.key.kind())),
            }
        }
    }
    Ok(())
}

/// Count an admitted request against the quotas that apply: the one the machine license
/// carries (`license`: its id and quota) and each of `limits` with a quota. They run last,
/// once every other stage has admitted the request, so a refused request uses up no plan.
/// `now` is Unix seconds (windows are calendar windows). A quota already counted stays
/// counted when a later one refuses: the request was a real attempt against each.
pub async fn take_quotas(
    limits: &[Limit],
    license: Option<(&str, Quota)>,
    caller: &Caller<'_>,
    state: Quotas<'_>,
    now: u64,
) -> Result<(), LimitRefusal> {
    let refuse = |kind: LimitKind, quota: Quota, resets_at: u64| {
        LimitRefusal::Quota(LimitHit {
            kind,
            retry_after_secs: u32::try_from(resets_at.saturating_sub(now).max(1))
                .unwrap_or(u32::MAX),
            quota: quota.count,
            window_secs: {
                let (start, end) = quota.window.bounds(now);
                u32::try_from(end - start).unwrap_or(u32::MAX)
            },
        })
    };
    if let Some((id, quota)) = license
        && let QuotaVerdict::Exhausted { resets_at } =
            state.take(&QuotaKey::license(id), quota, now).await?
    {
        return Err(refuse(LimitKind::License, quota, resets_at));
    }
    for limit in limits {
        let Some(quota) = limit.quota else { continue };
        let mut buf = [0u8; 16];
        let key = QuotaKey::of(&limit.scope, caller.value(&limit.key, &mut buf));
        if let QuotaVerdict::Exhausted { resets_at } = state.take(&key, quota, now).await? {
            return Err(refuse(limit.key.kind(), quota, resets_at));
        }
    }
    Ok(())
}

/// Quota counts a fleet shares (floor 2 keeps them in Redis).
pub trait SharedQuotaState: Send + Sync + std::fmt::Debug {
    /// [`QuotaState::take`], answered by the shared store. `Err` when it cannot answer and
    /// quotas fail closed; when they fail open, the request is admitted uncounted.
    fn take<'a>(
        &'a self,
        key: &'a QuotaKey,
        quota: Quota,
        now: u64,
    ) -> SharedFuture<'a, Result<QuotaVerdict, Unavailable>>;
    /// [`QuotaState::usage`] (for the admin API); `Err` when the store cannot answer.
    fn usage<'a>(
        &'a self,
        key: &'a QuotaKey,
        quota: Quota,
        now: u64,
    ) -> SharedFuture<'a, Result<QuotaUse, Unavailable>>;
}

/// Where this generation counts quotas.
#[derive(Debug, Clone, Copy)]
pub enum Quotas<'a> {
    Local(&'a dyn QuotaState),
    Shared(&'a dyn SharedQuotaState),
}

impl Quotas<'_> {
    async fn take(
        self,
        key: &QuotaKey,
        quota: Quota,
        now: u64,
    ) -> Result<QuotaVerdict, LimitRefusal> {
        match self {
            Quotas::Local(s) => Ok(s.take(key, quota, now)),
            Quotas::Shared(s) => s
                .take(key, quota, now)
                .await
                .map_err(|Unavailable| LimitRefusal::Unavailable),
        }
    }

    /// What `key` has used of `quota` at `now`; `None` when the shared store cannot answer.
    pub async fn usage(self, key: &QuotaKey, quota: Quota, now: u64) -> Option<QuotaUse> {
        match self {
            Quotas::Local(s) => Some(s.usage(key, quota, now)),
            Quotas::Shared(s) => s.usage(key, quota, now).await.ok(),
        }
    }
}

/// Nanoseconds to whole seconds, rounded up (Retry-After takes seconds; 0 would invite an
/// immediate retry that is still refused).
fn secs_up(ns: u64) -> u32 {
    u32::try_from(ns.div_ceil(1_000_000_000).max(1)).unwrap_or(u32::MAX)
}
