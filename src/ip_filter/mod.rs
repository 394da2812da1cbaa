//! IP policy: allow and deny lists per listener and per route, and who the client is when
//! the peer is a trusted proxy (X-Forwarded-For, `Forwarded`, PROXY protocol).
//!
//! Deny wins over allow; an empty allow list allows everyone not denied. Listener lists
//! are checked twice: at accept against the connection's origin (so strangers cost no TLS
//! handshake), and on every request against the resolved client address. Route lists are
//! checked on every request.

mod forwarded;
pub mod proxy_protocol;
mod set;

use std::net::IpAddr;

use http::HeaderMap;

use crate::denial::Denial;
use crate::routing::Route;

pub use forwarded::{BadForwardedHeader, client_ip, forwarded_for_list};

/// Which forwarding header a listener's trusted proxies write. Only that one is believed;
/// a client can add the other one unhindered by the proxy, so it is never read.
///
/// # Default
/// `XForwardedFor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`.
    Forwarded,
}

impl ForwardedHeader {
    /// The setting for a config value; `None` for anything else.
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "x-forwarded-for" => Some(ForwardedHeader::XForwardedFor),
            "forwarded" => Some(ForwardedHeader::Forwarded),
            _ => None,
        }
    }
}
pub use set::IpSet;

/// An allow list and a deny list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpPolicy {
    /// Empty: everyone not denied.
    pub allow: IpSet,
    pub deny: IpSet,
}

impl IpPolicy {
    pub fn admits(&self, ip: IpAddr) -> bool {
        if self.deny.contains(ip) {
            return false;
        }
        self.allow.is_empty() || self.allow.contains(ip)
    }
}

/// The client of a request, as far as policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    pub ip: IpAddr,
    /// The connection's origin is a trusted proxy: its forwarding headers were believed
    /// and are passed on; otherwise they were ignored and are overwritten.
    pub via_trusted_proxy: bool,
    /// The header the trusted proxy writes (meaningful with `via_trusted_proxy`).
    pub forwarded_header: ForwardedHeader,
}

/// A listener's IP policy: its lists, and whose forwarding headers it believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerIp {
    /// Client addresses admitted on the listener.
    pub lists: IpPolicy,
    /// Peers whose forwarding header (and PROXY header) are believed.
    pub trusted_proxies: IpSet,
    /// The one forwarding header the trusted proxies write; the other is never believed.
    pub forwarded_header: ForwardedHeader,
}

/// Where a request's connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The TCP peer, or the source a PROXY header reported.
    pub ip: IpAddr,
    /// A trusted balancer's PROXY header said it speaks for itself (v1 `UNKNOWN`, v2
    /// `LOCAL`): the peer is the client, and no forwarding header is read.
    pub proxy_spoke_for_itself: bool,
}

/// The listener half of the stage: who the client is, and whether the listener admits it.
pub fn check_listener(
    l: &ListenerIp,
    origin: Origin,
    headers: &HeaderMap,
) -> Result<ClientAddr, Denial> {
    let ip = origin.ip.to_canonical();
    // A balancer whose PROXY header spoke for itself has said it is the client: nothing
    // on the connection names another one.
    let via_trusted_proxy = !origin.proxy_spoke_for_itself
        && !l.trusted_proxies.is_empty()
        && l.trusted_proxies.contains(ip);
    let client = if via_trusted_proxy {
        client_ip(ip, headers, &l.trusted_proxies, l.forwarded_header)
            .map_err(|_| Denial::BadForwardedHeader)?
    } else {
        ip
    };
    if !l.lists.admits(client) {
        return Err(Denial::IpNotAllowed);
    }
    Ok(ClientAddr {
        ip: client,
        via_trusted_proxy,
        forwarded_header: l.forwarded_header,
    })
}

/// The route half: the route's own lists.
pub fn check_route(route: &Route, client: &ClientAddr) -> Result<(), Denial> {
    if route.ip.admits(client.ip) {
        Ok(())
    } else {
        Err(Denial::IpNotAllowed)
    }
}

/// Whether a connection from `origin` may proceed to the TLS handshake: trusted proxies
/// always (their clients are checked per request), anyone else if the listener admits them.
pub fn admits_connection(l: &ListenerIp, origin: IpAddr) -> bool {
    let origin = origin.to_canonical();
    l.trusted_proxies.contains(origin) || l.lists.admits(origin)
}
