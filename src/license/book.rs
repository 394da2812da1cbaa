//! The in-memory license book: every activated license, indexed for the request path.
//!
//! Concurrency: the read path ([`LicenseBook::check`]) takes no lock. It loads the index
//! through one `ArcSwap` and reads a per-license `AtomicBool` for revocation, so a revocation
//! is one atomic store, seen by the next `check`, and an activation publishes a new index
//! (see `index.rs` for why that costs O(√n), not O(n)). Writers (activation, revocation,
//! reload: the admin path) serialise on a mutex the read path never touches.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::dates;
use super::format::{self, License, Match};
use super::index::Layers;
use super::keys::Verified;
use super::{LicenseCounts, LicenseDenial, LicenseGrant, LicenseState, LicenseSummary};
use crate::identity::ClientIdentity;

/// How far ahead `expiring_within_7_days` looks.
const EXPIRY_HORIZON: u64 = 7 * 24 * 3600;

/// One activated license, as the request path needs it.
pub struct Entry {
    id: Arc<str>,
    machine_id: Arc<str>,
    customer: Box<str>,
    kid: Box<str>,
    binding: Match,
    pub(super) pins: Box<[[u8; 32]]>,
    pub(super) nets: Box<[IpNet]>,
    routes: Box<[Box<str>]>,
    scopes: Arc<[Box<str>]>,
    quota: Option<crate::limits::Quota>,
    not_before: u64,
    expires_at: u64,
    expires_at_time: SystemTime,
    /// False for a stored license whose signing key is no longer trusted: listed, never indexed.
    trusted: bool,
    revoked: AtomicBool,
    /// A revocation scheduled in memory (re-enrollment's overlap): revoked from this Unix
    /// second on; `u64::MAX` when none. Whoever schedules it re-applies it after a rebuild.
    revoked_from: AtomicU64,
}

/// What one license says about one request.
enum Judgement {
    Grant,
    GraceGrant,
    Deny(LicenseDenial),
}

impl Entry {
    pub(crate) fn new(license: &License, trusted: bool, revoked: bool) -> Entry {
        let p = &license.payload;
        Entry {
            id: p.id.as_str().into(),
            machine_id: p.machine_id.as_str().into(),
            customer: p.customer.as_str().into(),
            kid: p.kid.as_str().into(),
            binding: p.binding,
            pins: license.pins.clone().into(),
            nets: license.nets.clone().into(),
            routes: p.routes.iter().map(|r| r.as_str().into()).collect(),
            scopes: p.scopes.iter().map(|s| s.as_str().into()).collect(),
            quota: license.quota,
            not_before: p.not_before,
            expires_at: p.expires_at,
            expires_at_time: dates::system(p.expires_at),
            trusted,
            revoked: AtomicBool::new(revoked),
            revoked_from: AtomicU64::new(u64::MAX),
        }
    }

    fn judge(
        &self,
        spki: Option<&[u8; 32]>,
        ip: IpAddr,
        route: &str,
        now: u64,
        grace: u64,
    ) -> Judgement {
        let pin_ok = || spki.is_some_and(|h| self.pins.contains(h));
        let ip_ok = || self.nets.iter().any(|n| n.contains(&ip));
        let bound = match self.binding {
            Match::Pin => pin_ok(),
            Match::Ip => ip_ok(),
            Match::PinAndIp => pin_ok() && ip_ok(),
        };
        // A license that is not this request's says nothing about its own state.
        if !bound || !(self.routes.is_empty() || self.routes.iter().any(|r| &**r == route)) {
            return Judgement::Deny(LicenseDenial::BindingMismatch);
        }
        if self.is_revoked(now) {
            Judgement::Deny(LicenseDenial::Revoked)
        } else if now < self.not_before {
            Judgement::Deny(LicenseDenial::NotYetValid)
        } else if now <= self.expires_at {
            Judgement::Grant
        } else if now - self.expires_at <= grace {
            Judgement::GraceGrant
        } else {
            Judgement::Deny(LicenseDenial::Expired)
        }
    }

    fn grant(&self, in_grace: bool) -> LicenseGrant {
        LicenseGrant {
            license_id: self.id.clone(),
            machine_id: self.machine_id.clone(),
            expires_at: self.expires_at_time,
            in_grace,
            scopes: self.scopes.clone(),
            quota: self.quota,
        }
    }

    /// Revoked, or past a scheduled revocation.
    fn is_revoked(&self, now: u64) -> bool {
        // Acquire pairs with the Release in `revoke`.
        self.revoked.load(Ordering::Acquire) || now >= self.revoked_from.load(Ordering::Acquire)
    }

    fn state(&self, now: u64, grace: u64) -> LicenseState {
        if self.is_revoked(now) {
            LicenseState::Revoked
        } else if !self.trusted {
            LicenseState::Untrusted
        } else if now < self.not_before {
            LicenseState::NotYetValid
        } else if now <= self.expires_at {
            LicenseState::Active
        } else if now - self.expires_at <= grace {
            LicenseState::InGrace
        } else {
            LicenseState::Expired
        }
    }

    fn summary(&self, now: u64, grace: u64) -> LicenseSummary {
        LicenseSummary {
            id: self.id.to_string(),
            customer: self.customer.to_string(),
            machine_id: self.machine_id.to_string(),
            key_id: self.kid.to_string(),
            not_before: dates::system(self.not_before),
            expires_at: self.expires_at_time,
            state: self.state(now, grace),
            quota: self.quota,
        }
    }
}

/// A license with this id is already in the book.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a license with id \"{0}\" is already activated")]
pub struct DuplicateId(pub String);

/// Every activated license, indexed by SPKI hash and by network. See the module doc.
pub struct LicenseBook {
    index: ArcSwap<Layers>,
    grace_secs: AtomicU64,
    records: Mutex<HashMap<Arc<str>, Arc<Entry>>>,
}

impl LicenseBook {
    /// An empty book granting `grace` after expiry (whole seconds; zero: none).
    pub fn new(grace: Duration) -> Self {
        LicenseBook {
            index: ArcSwap::from_pointee(Layers::default()),
            grace_secs: AtomicU64::new(grace.as_secs()),
            records: Mutex::new(HashMap::new()),
        }
    }

    /// May `identity` at `client_ip` call `route` at `now`?
    ///
    /// - `identity`: the verified client certificate, if any; `client_ip`: the resolved client
    ///   address (IPv4-mapped IPv6 is treated as IPv4); `route`: the route's name.
    /// - Candidates are the licenses indexed under the identity's SPKI hash or under a network
    ///   holding the address. One applies to the request if its `match` holds (`pin`: the SPKI
    ///   is listed; `ip`: the address is in a listed network; `pin_and_ip`: both, on that same
    ///   license) and, if it lists routes, `route` is among them.
    /// - Any applicable license that is not revoked and is within `not_before ..= expires_at`
    ///   grants; failing that, one within the grace period after `expires_at` grants with
    ///   `in_grace`.
    /// - Otherwise the most telling denial among the candidates, in this order: `Revoked` (an
    ///   operator decision), `Expired`, `NotYetValid` (the machine is licensed, but not now),
    ///   `BindingMismatch` (a license names this certificate or address but does not cover
    ///   this request: the other half of `pin_and_ip`, or a route it does not list), and
    ///   `Missing` (no license names this certificate or address).
    ///
    /// Cost: one atomic load, one hash probe for the SPKI and one per distinct prefix length
    /// for the address, then a look at each candidate. No lock, no allocation on a denial.
    pub fn check(
        &self,
        identity: Option<&ClientIdentity>,
        client_ip: IpAddr,
        route: &str,
        now: SystemTime,
    ) -> Result<LicenseGrant, LicenseDenial> {
        let now = dates::unix(now);
        let grace = self.grace_secs.load(Ordering::Relaxed);
        let ip = format::normalize_ip(client_ip);
        let spki = identity.map(|i| &i.spki_sha256);
        let layers = self.index.load();
        let mut granted = None;
        let mut in_grace = None;
        let mut denial = LicenseDenial::Missing;
        layers.visit(spki, ip, |e| match e.judge(spki, ip, route, now, grace) {
            Judgement::Grant => {
                granted = Some(e);
                true
            }
            Judgement::GraceGrant => {
                in_grace = in_grace.or(Some(e));
                false
            }
            Judgement::Deny(d) => {
                if d.rank() > denial.rank() {
                    denial = d;
                }
                false
            }
        });
        match (granted, in_grace) {
            (Some(e), _) => Ok(e.grant(false)),
            (None, Some(e)) => Ok(e.grant(true)),
            (None, None) => Err(denial),
        }
    }

    /// Add a verified license (in memory only: [`super::LicenseService`] persists first).
    pub fn insert(&self, license: &Verified) -> Result<(), DuplicateId> {
        let mut records = self.records();
        let id = license.payload().id.as_str();
        if records.contains_key(id) {
            return Err(DuplicateId(id.to_owned()));
        }
        let e = Arc::new(Entry::new(license.license(), true, false));
        records.insert(e.id.clone(), e.clone());
        self.index.store(Arc::new(self.index.load().with(&e)));
        Ok(())
    }

    /// Replace the whole book with `entries` (startup, reload, bulk loads): one index build
    /// instead of one publication per license. A later entry with an id already seen is dropped.
    pub(crate) fn replace_all(&self, entries: Vec<Entry>) {
        let mut records = self.records();
        records.clear();
        for e in entries {
            records.entry(e.id.clone()).or_insert_with(|| Arc::new(e));
        }
        let indexed = records.values().filter(|e| e.trusted);
        self.index.store(Arc::new(Layers::build(indexed)));
    }

    /// Replace the whole book with verified licenses, none revoked (benches, tests).
    pub fn replace_with<'a>(&self, licenses: impl IntoIterator<Item = &'a Verified>) {
        self.replace_all(
            licenses
                .into_iter()
                .map(|v| Entry::new(v.license(), true, false))
                .collect(),
        );
    }

    /// Mark `id` revoked: the next `check` denies it. False if there is no such license.
    pub fn revoke(&self, id: &str) -> bool {
        match self.records().get(id) {
            Some(e) => {
                e.revoked.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Deny `id` from Unix second `at` on (the earliest of its schedules wins), in memory
    /// only: the caller keeps the schedule and applies it again after the book is rebuilt
    /// (start, reload). False if there is no such license.
    pub fn revoke_from(&self, id: &str, at: u64) -> bool {
        match self.records().get(id) {
            Some(e) => {
                e.revoked_from.fetch_min(at, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// The grace period after expiry, whole seconds.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs.load(Ordering::Relaxed))
    }

    pub fn set_grace(&self, grace: Duration) {
        self.grace_secs.store(grace.as_secs(), Ordering::Relaxed);
    }

    /// The license `id` as listed.
    pub fn get(&self, id: &str, now: SystemTime) -> Option<LicenseSummary> {
        let grace = self.grace_secs.load(Ordering::Relaxed);
        self.records()
            .get(id)
            .map(|e| e.summary(dates::unix(now), grace))
    }

    /// Every license in the book, by id (admin `GET /licenses`).
    pub fn list(&self, now: SystemTime) -> Vec<LicenseSummary> {
        let (now, grace) = (dates::unix(now), self.grace_secs.load(Ordering::Relaxed));
        let mut out: Vec<_> = self
            .records()
            .values()
            .map(|e| e.summary(now, grace))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Gauges for metrics: no per-license labels. A scan under the writers' mutex, on the
    /// metrics path only.
    pub fn counts(&self, now: SystemTime) -> LicenseCounts {
        let (now, grace) = (dates::unix(now), self.grace_secs.load(Ordering::Relaxed));
        let mut c = LicenseCounts::default();
        for e in self.records().values() {
            match e.state(now, grace) {
                LicenseState::Active => {
                    c.active += 1;
                    if e.expires_at - now < EXPIRY_HORIZON {
                        c.expiring_within_7_days += 1;
                    }
                }
                LicenseState::InGrace => c.in_grace += 1,
                LicenseState::Expired
                | LicenseState::NotYetValid
                | LicenseState::Revoked
                | LicenseState::Untrusted => {}
            }
        }
        c
    }

    /// Number of licenses in the book, whatever their state.
    pub fn len(&self) -> usize {
        self.records().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn records(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Entry>>> {
        // A panic elsewhere while holding the lock leaves the map consistent (every write
        // is a single insert or clear), so a poisoned lock is still usable.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
