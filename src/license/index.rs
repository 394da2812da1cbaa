//! The lookup structure behind [`super::LicenseBook::check`]: licenses by SPKI hash and by
//! network, so a request finds its candidates without scanning.
//!
//! - SPKI: one `HashMap<[u8; 32], _>`.
//! - Addresses: per address family, one `HashMap<(prefix length, masked address), _>` plus
//!   the list of prefix lengths present. A lookup masks the address once per length present
//!   (at most 33 for IPv4, 129 for IPv6; a handful in practice) and probes the map.
//!
//! Readers see an immutable [`Layers`] through an `ArcSwap`. A write copies only the small
//! `recent` layer; when `recent` outgrows about the square root of `base`, the two are merged
//! into a new `base`. So an activation costs O(√n) amortized instead of a full O(n) copy,
//! and the read path stays one atomic load plus two probes per key.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::book::Entry;

/// The licenses one key leads to. Almost always one, so no allocation for that case.
#[derive(Clone)]
enum Hits {
    One(Arc<Entry>),
    Many(Vec<Arc<Entry>>),
}

impl Hits {
    fn push(&mut self, e: Arc<Entry>) {
        match self {
            Hits::One(first) => *self = Hits::Many(vec![first.clone(), e]),
            Hits::Many(v) => v.push(e),
        }
    }
    fn as_slice(&self) -> &[Arc<Entry>] {
        match self {
            Hits::One(e) => std::slice::from_ref(e),
            Hits::Many(v) => v,
        }
    }
}

fn add<K: Eq + Hash>(map: &mut HashMap<K, Hits>, key: K, e: &Arc<Entry>) {
    map.entry(key)
        .and_modify(|h| h.push(e.clone()))
        .or_insert_with(|| Hits::One(e.clone()));
}

/// An address family's bits, masked to a prefix length.
trait Bits: Copy + Eq + Hash {
    fn masked(self, len: u8) -> Self;
}
impl Bits for u32 {
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else if len >= 32 {
            self
        } else {
            self & (u32::MAX << (32 - u32::from(len)))
        }
    }
}
impl Bits for u128 {
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else if len >= 128 {
            self
        } else {
            self & (u128::MAX << (128 - u32::from(len)))
        }
    }
}

#[derive(Clone, Default)]
struct PrefixMap<A: Bits> {
    map: HashMap<(u8, A), Hits>,
    /// Prefix lengths present, longest first (most specific candidates come first).
    lengths: Vec<u8>,
}

impl<A: Bits> PrefixMap<A> {
    fn insert(&mut self, addr: A, len: u8, e: &Arc<Entry>) {
        add(&mut self.map, (len, addr.masked(len)), e);
        if let Err(at) = self.lengths.binary_search_by(|l| len.cmp(l)) {
            self.lengths.insert(at, len);
        }
    }
    fn visit<'a>(&'a self, addr: A, f: &mut impl FnMut(&'a Arc<Entry>) -> bool) -> bool {
        for &len in &self.lengths {
            if let Some(h) = self.map.get(&(len, addr.masked(len))) {
                for e in h.as_slice() {
                    if f(e) {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// One immutable layer of the index.
#[derive(Clone, Default)]
pub(super) struct Index {
    by_spki: HashMap<[u8; 32], Hits>,
    v4: PrefixMap<u32>,
    v6: PrefixMap<u128>,
    licenses: usize,
}

impl Index {
    /// Index `e` under its pins and its networks. A `pin_and_ip` license is indexed under
    /// both, so a caller with the right address but the wrong certificate is told
    /// `binding_mismatch` rather than `missing`.
    pub(super) fn insert(&mut self, e: &Arc<Entry>) {
        for pin in e.pins.iter() {
            add(&mut self.by_spki, *pin, e);
        }
        for net in e.nets.iter() {
            match net {
                IpNet::V4(n) => self.v4.insert(u32::from(n.network()), n.prefix_len(), e),
                IpNet::V6(n) => self.v6.insert(u128::from(n.network()), n.prefix_len(), e),
            }
        }
        self.licenses += 1;
    }

    /// Call `f` on every license indexed under `spki` or under a network holding `ip`
    /// (already normalised), until `f` returns true. A license may be visited twice.
    fn visit<'a>(
        &'a self,
        spki: Option<&[u8; 32]>,
        ip: IpAddr,
        f: &mut impl FnMut(&'a Arc<Entry>) -> bool,
    ) -> bool {
        if let Some(h) = spki.and_then(|k| self.by_spki.get(k)) {
            for e in h.as_slice() {
                if f(e) {
                    return true;
                }
            }
        }
        match ip {
            IpAddr::V4(a) => self.v4.visit(u32::from(a), f),
            IpAddr::V6(a) => self.v6.visit(u128::from(a), f),
        }
    }
}

/// What readers load: a large, rarely rebuilt `base` and a small `recent` layer.
#[derive(Clone, Default)]
pub(super) struct Layers {
    base: Arc<Index>,
    recent: Arc<Index>,
}

impl Layers {
    pub(super) fn build<'a>(entries: impl IntoIterator<Item = &'a Arc<Entry>>) -> Self {
        let mut base = Index::default();
        for e in entries {
            base.insert(e);
        }
        Layers {
            base: Arc::new(base),
            recent: Arc::default(),
        }
    }

    /// A copy of `self` with `e` added (the caller publishes it).
    pub(super) fn with(&self, e: &Arc<Entry>) -> Self {
        let mut recent = Index::clone(&self.recent);
        recent.insert(e);
        if recent.licenses * recent.licenses > self.base.licenses.max(1024) {
            let mut base = Index::clone(&self.base);
            merge(&mut base, &recent);
            Layers {
                base: Arc::new(base),
                recent: Arc::default(),
            }
        } else {
            Layers {
                base: self.base.clone(),
                recent: Arc::new(recent),
            }
        }
    }

    pub(super) fn visit<'a>(
        &'a self,
        spki: Option<&[u8; 32]>,
        ip: IpAddr,
        mut f: impl FnMut(&'a Arc<Entry>) -> bool,
    ) {
        if !self.base.visit(spki, ip, &mut f) {
            self.recent.visit(spki, ip, &mut f);
        }
    }
}

fn merge(into: &mut Index, from: &Index) {
    fn extend<K: Eq + Hash + Clone>(into: &mut HashMap<K, Hits>, from: &HashMap<K, Hits>) {
        for (k, h) in from {
            for e in h.as_slice() {
                add(into, k.clone(), e);
            }
        }
    }
    extend(&mut into.by_spki, &from.by_spki);
    extend(&mut into.v4.map, &from.v4.map);
    extend(&mut into.v6.map, &from.v6.map);
    for (dst, src) in [
        (&mut into.v4.lengths, &from.v4.lengths),
        (&mut into.v6.lengths, &from.v6.lengths),
    ] {
        dst.extend_from_slice(src);
        dst.sort_unstable_by(|a, b| b.cmp(a));
        dst.dedup();
    }
    into.licenses += from.licenses;
}
