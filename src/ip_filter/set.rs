//! A set of CIDRs as sorted, merged, disjoint ranges: membership is one binary search, so
//! 10,000 CIDRs cost about 14 comparisons, and nothing is allocated per lookup.

use std::net::IpAddr;

use ipnet::IpNet;

/// A set of IPv4 and IPv6 networks. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are
/// looked up as the IPv4 address they carry, so a v4 rule cannot be sidestepped over v6.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net.trunc() {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => {
                    let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                    // A v4-mapped v6 network is a v4 network: store it where lookups go.
                    match (n.network().to_ipv4_mapped(), n.prefix_len()) {
                        (Some(a), p) if p >= 96 => {
                            let lo4 = u32::from(a);
                            // /128 maps to /32: a shift by 32 must give no host bits, not
                            // wrap to a shift by 0 (which would cover half the internet).
                            let hi4 = lo4 | u32::MAX.checked_shr(u32::from(p - 96)).unwrap_or(0);
                            v4.push((lo4, hi4));
                        }
                        _ => v6.push((lo, hi)),
                    }
                }
            }
        }
        IpSet {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Number of disjoint ranges after merging (for logs and tests).
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
}

fn merge<T: Ord + Copy + num_like::Succ>(mut r: Vec<(T, T)>) -> Vec<(T, T)> {
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            // Overlapping or adjacent: extend.
            Some(last) if lo <= last.1.succ() => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out.shrink_to_fit();
    out
}

fn find<T: Ord + Copy>(r: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x is the only one that can hold it.
    let i = r.partition_point(|&(lo, _)| lo <= x);
    i > 0 && x <= r[i - 1].1
}

mod num_like {
    /// x + 1, saturating: the next address, for adjacency when merging.
    pub trait Succ {
        fn succ(self) -> Self;
    }
    impl Succ for u32 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> IpSet {
        IpSet::new(nets.iter().map(|n| n.parse::<IpNet>().expect("net")))
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn membership_table() {
        let s = set(&[
            "10.0.0.0/8",
            "192.168.1.7/32",
            "2001:db8::/32",
            "::ffff:172.16.0.0/108",
        ]);
        for (addr, inside) in [
            ("10.0.0.0", true),
            ("10.255.255.255", true),
            ("11.0.0.0", false),
            ("9.255.255.255", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("::ffff:10.1.2.3", true),
            ("::ffff:11.1.2.3", false),
            ("172.16.5.5", true),
            ("172.31.0.1", true),
            ("172.32.0.1", false),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
            ("::1", false),
        ] {
            assert_eq!(s.contains(ip(addr)), inside, "{addr}");
        }
    }

    #[test]
    fn a_v4_mapped_single_address_is_exactly_that_address() {
        let s = set(&["::ffff:192.0.2.7/128", "::ffff:198.51.100.0/120"]);
        assert!(s.contains(ip("192.0.2.7")));
        assert!(!s.contains(ip("192.0.2.8")));
        assert!(!s.contains(ip("255.255.255.255")));
        assert!(s.contains(ip("198.51.100.255")));
        assert!(!s.contains(ip("198.51.101.0")));
    }

    #[test]
    fn overlapping_and_adjacent_networks_merge() {
        let s = set(&[
            "10.0.0.0/25",
            "10.0.0.128/25",
            "10.0.0.0/24",
            "10.0.0.5/32",
            "0.0.0.0/0",
        ]);
        assert_eq!(s.ranges(), 1);
        assert!(s.contains(ip("255.255.255.255")));
        let s = set(&["::/0", "::1/128"]);
        assert_eq!(s.ranges(), 1);
        assert!(s.contains(ip("ffff::1")));
    }

    #[test]
    fn empty_set_contains_nothing() {
        let s = IpSet::default();
        assert!(!s.contains(ip("127.0.0.1")));
        assert!(s.is_empty());
    }
}
