//! Usage per caller: requests, refusals and bytes of each machine license and each token
//! client over the last minute, hour and day, for `GET /usage` on the admin API.
//!
//! Metrics labelled by license or client would grow without bound (every machine a new
//! series, kept by every scraper forever); this table is bounded instead: at most
//! [`MAX_KEYS`] callers per kind, each a fixed ring of buckets, and a caller silent for a day
//! is forgotten when room is needed. A caller that finds the table full is counted in
//! `untracked`, not stored.
//!
//! Windows are bucketed, so "the last minute" is the last 6 ten-second buckets, the
//! current one partly elapsed (between 50 and 60 s of traffic); the hour is 12 five-minute
//! buckets and the day 24 one-hour buckets.
//!
//! Time is a parameter (`now`, Unix seconds): the access line passes the wall clock, tests
//! pass any instant.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use serde::Serialize;

/// Callers kept per kind.
pub const MAX_KEYS: usize = 10_000;

/// What a request adds to its caller's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub requests: u64,
    pub refusals: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Counts {
    /// One request: refused or not, with its bytes.
    pub fn request(refused: bool, bytes_in: u64, bytes_out: u64) -> Counts {
        Counts {
            requests: 1,
            refusals: u64::from(refused),
            bytes_in,
            bytes_out,
        }
    }

    fn add(&mut self, c: &Counts) {
        self.requests = self.requests.saturating_add(c.requests);
        self.refusals = self.refusals.saturating_add(c.refusals);
        self.bytes_in = self.bytes_in.saturating_add(c.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(c.bytes_out);
    }
}

/// One bucket: which interval it holds (its start divided by the width) and its counts.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    interval: u64,
    counts: Counts,
}

/// A ring of `N` buckets `WIDTH` seconds wide: the last `N * WIDTH` seconds.
#[derive(Debug, Clone, Copy)]
struct Ring<const N: usize, const WIDTH: u64> {
    buckets: [Bucket; N],
}

impl<const N: usize, const WIDTH: u64> Ring<N, WIDTH> {
    fn new() -> Self {
        Ring {
            buckets: [Bucket::default(); N],
        }
    }

    fn add(&mut self, now: u64, c: &Counts) {
        let interval = now / WIDTH;
        let b = &mut self.buckets[(interval % N as u64) as usize];
        if b.interval != interval {
            // A bucket of an interval long gone: it starts over.
            *b = Bucket {
                interval,
                counts: Counts::default(),
            };
        }
        b.counts.add(c);
    }

    fn sum(&self, now: u64) -> Counts {
        let current = now / WIDTH;
        let mut total = Counts::default();
        for b in &self.buckets {
            // Within the window, and not from the future (a clock stepped back).
            if b.interval <= current && current - b.interval < N as u64 {
                total.add(&b.counts);
            }
        }
        total
    }
}

/// One caller's windows.
#[derive(Debug, Clone)]
struct Windows {
    minute: Ring<6, 10>,
    hour: Ring<12, 300>,
    day: Ring<24, 3600>,
    last_seen: u64,
}

impl Windows {
    fn new() -> Self {
        Windows {
            minute: Ring::new(),
            hour: Ring::new(),
            day: Ring::new(),
            last_seen: 0,
        }
    }

    fn add(&mut self, now: u64, c: &Counts) {
        self.minute.add(now, c);
        self.hour.add(now, c);
        self.day.add(now, c);
        self.last_seen = self.last_seen.max(now);
    }
}

/// One caller's usage, as `GET /usage` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub key: String,
    pub minute: Counts,
    pub hour: Counts,
    pub day: Counts,
}

/// The kinds of caller usage is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The machine license that admitted the request.
    License,
    /// The verified token's `client_id` (or `azp`).
    Client,
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        match s {
            "license" => Some(By::License),
            "client" => Some(By::Client),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            By::License => "license",
            By::Client => "client",
        }
    }
}

/// One kind's table.
#[derive(Debug, Default)]
struct Table {
    callers: DashMap<Arc<str>, Windows>,
    untracked: AtomicU64,
    /// When the full table was last swept for silent callers: at most once a minute, so
    /// new callers arriving at a full table do not each pay for a sweep.
    last_sweep: AtomicU64,
}

impl Table {
    fn record(&self, key: &str, now: u64, c: &Counts) {
        // The common case, a caller already known: no allocation, one shard lock.
        if let Some(mut w) = self.callers.get_mut(key) {
            w.add(now, c);
            return;
        }
        if self.callers.len() >= MAX_KEYS {
            let last = self.last_sweep.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 60
                && self
                    .last_sweep
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.forget_silent(now);
            }
            if self.callers.len() >= MAX_KEYS {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.callers
            .entry(Arc::from(key))
            .or_insert_with(Windows::new)
            .add(now, c);
    }

    /// Drop callers silent for a whole day (their windows are all zero).
    fn forget_silent(&self, now: u64) {
        self.callers
            .retain(|_, w| now.saturating_sub(w.last_seen) < 24 * 3600);
    }

    fn entries(&self, now: u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .callers
            .iter()
            .map(|e| {
                let w = e.value();
                Entry {
                    key: e.key().to_string(),
                    minute: w.minute.sum(now),
                    hour: w.hour.sum(now),
                    day: w.day.sum(now),
                }
            })
            .filter(|e| e.day.requests > 0)
            .collect();
        // Busiest first over the day, then by name, so a script's diff is stable.
        out.sort_by(|a, b| {
            b.day
                .requests
                .cmp(&a.day.requests)
                .then_with(|| a.key.cmp(&b.key))
        });
        out
    }
}

/// Usage per license and per token client.
#[derive(Debug, Default)]
pub struct Usage {
    licenses: Table,
    clients: Table,
}

impl Usage {
    pub fn new() -> Self {
        Usage::default()
    }

    fn table(&self, by: By) -> &Table {
        match by {
            By::License => &self.licenses,
            By::Client => &self.clients,
        }
    }

    /// Count one request for `key` at `now` (Unix seconds).
    pub fn record(&self, by: By, key: &str, now: u64, c: &Counts) {
        self.table(by).record(key, now, c);
    }

    /// Every caller of `by` with traffic in the last day, at `now`, busiest first.
    pub fn entries(&self, by: By, now: u64) -> Vec<Entry> {
        self.table(by).entries(now)
    }

    /// Callers not stored because the table was full.
    pub fn untracked(&self, by: By) -> u64 {
        self.table(by).untracked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
