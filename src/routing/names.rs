//! The host names a listener serves, and the misdirected-request check (RFC 9110 section
//! 15.5.20): a request is answered only under a name the listener serves, and only under the
//! name its TLS connection was opened for, so a route (a host-less catch-all above all) cannot
//! be reached under another name, and an HTTP/2 connection coalesced by a browser for another
//! origin is sent to open its own connection.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

use crate::denial::Denial;

/// Why an entry is not a name a listener can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("has a port: names are matched without one")]
    Port,
    #[error(
        "is not a wildcard of one label: write \"*.\" and a name of at least two labels (\"*.example.com\")"
    )]
    Wildcard,
    #[error(
        "is not a host name (letters, digits, '-', '_' and '.'), a \"*.\" wildcard or an IP address"
    )]
    NotAName,
}

/// One name as configured or as a certificate carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name<'a> {
    /// A canonical host name: lower case, no trailing dot.
    Exact(Cow<'a, str>),
    /// `*.example.com`, kept as its parent `example.com`: any one label under it.
    Wildcard(Cow<'a, str>),
    Ip(IpAddr),
}

impl<'a> Name<'a> {
    /// A host name (any case, a trailing root dot), `*.` and a name of two labels or more,
    /// or an IP address (`10.0.0.1`, `::1`, `[::1]`); never a port.
    pub fn parse(entry: &'a str) -> Result<Self, NameError> {
        if let Some(ip) = ip_literal(entry) {
            return Ok(Name::Ip(ip));
        }
        if let Some(parent) = entry.strip_prefix("*.") {
            return match super::host::canonical(parent) {
                Ok(p)
                    if p.port.is_none()
                        && p.name.contains('.')
                        && ip_literal(&p.name).is_none() =>
                {
                    Ok(Name::Wildcard(p.name))
                }
                Ok(p) if p.port.is_some() => Err(NameError::Port),
                _ => Err(NameError::Wildcard),
            };
        }
        match super::host::canonical(entry) {
            Ok(h) if h.port.is_some() => Err(NameError::Port),
            Ok(h) if !h.name.starts_with('[') => Ok(Name::Exact(h.name)),
            _ => Err(NameError::NotAName),
        }
    }
}

/// The names a listener serves. Empty: it has none (certificates without names and no
/// `hosts`), and any Host is served.
#[derive(Debug, Default, Clone)]
pub struct HostNames {
    exact: HashSet<Box<str>>,
    /// Parents of `*.` wildcards.
    wildcard_parents: HashSet<Box<str>>,
    ips: Vec<IpAddr>,
    /// Each certificate's own names: a Host other than the SNI is served when one
    /// certificate carries both (RFC 9113 9.1.1: the connection is authoritative for every
    /// name of its certificate, so browsers reuse it for them).
    certificates: Vec<HostNames>,
}

impl HostNames {
    /// Record the names one certificate carries together.
    pub fn add_certificate(&mut self, names: HostNames) {
        self.certificates.push(names);
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard_parents.is_empty() && self.ips.is_empty()
    }

    pub fn insert(&mut self, name: Name<'_>) {
        match name {
            Name::Exact(n) => {
                self.exact.insert(n.into());
            }
            Name::Wildcard(p) => {
                self.wildcard_parents.insert(p.into());
            }
            Name::Ip(ip) if !self.ips.contains(&ip) => self.ips.push(ip),
            Name::Ip(_) => {}
        }
    }

    /// Whether a canonical host name (see [`super::host::canonical`]) is one of these: the
    /// same name, one label under a wildcard's parent, or the same address (any spelling).
    pub fn contains(&self, host: &str) -> bool {
        self.contains_as(host, ip_literal(host))
    }

    /// [`contains`](Self::contains) for a host already read as an address (`ip`), or not
    /// one: a request's host is compared with several sets and parsed once.
    fn contains_as(&self, host: &str, ip: Option<IpAddr>) -> bool {
        if let Some(ip) = ip {
            return self.ips.contains(&ip);
        }
        self.exact.contains(host)
            || host
                .split_once('.')
                .is_some_and(|(_, parent)| self.wildcard_parents.contains(parent))
    }

    /// Whether every name `name` stands for is one of these (a wildcard only by the same
    /// wildcard).
    pub fn covers(&self, name: &Name<'_>) -> bool {
        match name {
            Name::Exact(n) => self.contains(n),
            Name::Wildcard(p) => self.wildcard_parents.contains(&**p),
            Name::Ip(ip) => self.ips.contains(ip),
        }
    }
}

/// The address a host spells as an IP literal (`127.0.0.1`, `[::1]`), IPv4-mapped IPv6
/// addresses as IPv4.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Refuses (421 `misdirected_request`) a request whose canonical host is not one of the
/// listener's `names` (when it has any) or is neither the name the client asked TLS for
/// (`sni`, when it sent one) nor another name of a certificate carrying that one. A request that names no host (HTTP/1.0 without Host) names no other
/// one and passes. Ports are not compared: a listener is often reached through another port
/// (a balancer, NAT, a container's port map), and routing ignores ports, so a port cannot
/// lead to another route.
pub fn check(names: &HostNames, sni: Option<&str>, host: Option<&str>) -> Result<(), Denial> {
    let Some(host) = host else {
        return Ok(());
    };
    let host_ip = ip_literal(host);
    if let Some(sni) = sni {
        let sni = sni.strip_suffix('.').unwrap_or(sni);
        if !sni.eq_ignore_ascii_case(host)
            && !names
                .certificates
                .iter()
                .any(|c| c.contains(sni) && c.contains_as(host, host_ip))
        {
            return Err(Denial::MisdirectedRequest);
        }
    }
    if !names.is_empty() && !names.contains_as(host, host_ip) {
        return Err(Denial::MisdirectedRequest);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[&str]) -> HostNames {
        let mut n = HostNames::default();
        for e in entries {
            n.insert(Name::parse(e).unwrap_or_else(|err| panic!("{e}: {err}")));
        }
        n
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let n = names(&["*.example.com"]);
        assert!(n.contains("api.example.com"));
        assert!(!n.contains("example.com"));
        assert!(!n.contains("a.api.example.com"));
        assert!(!n.contains("api.example.org"));
    }

    #[test]
    fn names_are_kept_canonical_and_addresses_match_in_any_spelling() {
        let n = names(&["API.Example.com.", "127.0.0.1", "[::1]", "2001:db8::1"]);
        assert!(n.contains("api.example.com"));
        assert!(n.contains("127.0.0.1"));
        assert!(n.contains("[::1]"));
        assert!(n.contains("[0:0::1]"));
        assert!(n.contains("[2001:db8:0::1]"));
        assert!(n.contains("[::ffff:127.0.0.1]"));
        assert!(!n.contains("127.0.0.2"));
        assert!(!n.contains("localhost"));
    }

    #[test]
    fn bad_entries_are_refused_with_their_reason() {
        for (entry, why) in [
            ("api.example.com:443", NameError::Port),
            ("[::1]:443", NameError::Port),
            ("*.example.com:443", NameError::Port),
            ("*.com", NameError::Wildcard),
            ("*.*.example.com", NameError::Wildcard),
            ("*.10.0.0.1", NameError::Wildcard),
            ("api*.example.com", NameError::NotAName),
            ("*", NameError::NotAName),
            ("https://api.example.com", NameError::NotAName),
            ("", NameError::NotAName),
            ("a..b", NameError::NotAName),
        ] {
            assert_eq!(Name::parse(entry), Err(why), "{entry}");
        }
    }

    #[test]
    fn a_host_unlike_the_sni_is_served_only_when_one_certificate_carries_both() {
        let mut n = names(&["localhost", "127.0.0.1", "api.example.com"]);
        n.add_certificate(names(&["localhost", "127.0.0.1"]));
        n.add_certificate(names(&["api.example.com"]));
        // The connection's certificate is valid for the address as well as the name.
        assert_eq!(check(&n, Some("localhost"), Some("127.0.0.1")), Ok(()));
        // Another certificate's name is not reached over this one's connection.
        assert_eq!(
            check(&n, Some("localhost"), Some("api.example.com")),
            Err(Denial::MisdirectedRequest)
        );
    }

    #[test]
    fn a_host_outside_the_names_or_unlike_the_sni_is_misdirected() {
        let n = names(&["*.example.com", "127.0.0.1"]);
        let misdirected = Err(Denial::MisdirectedRequest);
        assert_eq!(check(&n, None, Some("api.example.com")), Ok(()));
        assert_eq!(
            check(&n, Some("api.example.com"), Some("api.example.com")),
            Ok(())
        );
        assert_eq!(
            check(&n, Some("API.example.com."), Some("api.example.com")),
            Ok(())
        );
        assert_eq!(check(&n, None, Some("other.test")), misdirected);
        assert_eq!(
            check(&n, Some("a.example.com"), Some("b.example.com")),
            misdirected
        );
        assert_eq!(
            check(&n, Some("a.example.com"), Some("127.0.0.1")),
            misdirected
        );
        assert_eq!(check(&n, None, Some("127.0.0.1")), Ok(()));
        assert_eq!(check(&n, Some("a.example.com"), None), Ok(()));
        // Without names, any host the client asked TLS for.
        let none = HostNames::default();
        assert_eq!(check(&none, None, Some("anything.test")), Ok(()));
        assert_eq!(check(&none, Some("a.test"), Some("b.test")), misdirected);
    }

    #[test]
    fn a_wildcard_entry_is_covered_only_by_the_same_wildcard() {
        let certs = names(&["*.example.com", "localhost"]);
        for (entry, covered) in [
            ("api.example.com", true),
            ("*.example.com", true),
            ("localhost", true),
            ("*.api.example.com", false),
            ("example.com", false),
            ("127.0.0.1", false),
        ] {
            let name = Name::parse(entry).unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(certs.covers(&name), covered, "{entry}");
        }
    }
}
