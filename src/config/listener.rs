//! `[[listeners]]`: address, TLS, client certificates, IP policy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::policy::*;
use crate::config::file::ListenerSection;
use crate::identity::PinSet;
use crate::ip_filter::{IpPolicy, IpSet};
use crate::report::Report;
use crate::routing::HostNames;
use crate::routing::names::Name;
use crate::tls::{self, ClientAuth, MinTls};

pub(super) struct ListenerSkeleton {
    pub(super) name: Arc<str>,
    pub(super) bind: SocketAddr,
    pub(super) tls: Arc<rustls::ServerConfig>,
    pub(super) cert_not_after: SystemTime,
    pub(super) pins: PinSet,
    pub(super) ip: IpPolicy,
    pub(super) trusted_proxies: IpSet,
    pub(super) forwarded_header: crate::ip_filter::ForwardedHeader,
    pub(super) proxy_protocol: bool,
    pub(super) flood: crate::limits::ConnFlood,
    pub(super) names: HostNames,
}

/// `revoked`: the keys enrollment revokes while running, refused in the handshake of a
/// listener that asks for client certificates.
pub(super) fn listener(
    r: &mut Report,
    key: &str,
    l: &ListenerSection,
    now: SystemTime,
    revoked: Option<&Arc<tls::RevokedKeys>>,
) -> Option<ListenerSkeleton> {
    let name = label_name(r, key, l.name.as_deref(), "listener");
    let bind = match l.bind.as_deref() {
        None => {
            r.error(
                format!("{key}.bind"),
                "missing: write e.g. \"0.0.0.0:8443\"",
            );
            None
        }
        Some(b) => {
            match b.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    r.error(
                    format!("{key}.bind"),
                    format!("\"{b}\" is not an IP:port address (e.g. \"0.0.0.0:8443\", \"[::]:8443\")"),
                );
                    None
                }
            }
        }
    };
    let min_tls = match l.min_tls.as_deref() {
        None | Some("1.2") => Some(MinTls::V1_2),
        Some("1.3") => Some(MinTls::V1_3),
        Some(v @ ("1.0" | "1.1" | "ssl3" | "SSLv3")) => {
            r.error(
                format!("{key}.min_tls"),
                format!("TLS {v} is not supported: use \"1.2\" or \"1.3\""),
            );
            None
        }
        Some(v) => {
            r.error(
                format!("{key}.min_tls"),
                format!("\"{v}\" is not a TLS version: use \"1.2\" or \"1.3\""),
            );
            None
        }
    };
    let kx = key_exchange(r, key, l.key_exchange.as_deref());
    let client_ca_key = format!("{key}.client_ca");
    let client_auth = match l.client_auth.as_deref() {
        None | Some("none") => {
            if l.client_ca.is_some() {
                r.warn(
                    &client_ca_key,
                    "ignored: client_auth is \"none\", so client certificates are not requested",
                );
            }
            Some(ClientAuth::None)
        }
        Some(mode @ ("optional" | "required")) => match l.client_ca.as_deref() {
            None => {
                r.error(
                    &client_ca_key,
                    format!("missing: client_auth = \"{mode}\" needs a CA bundle to verify client certificates"),
                );
                None
            }
            Some(ca) => {
                let path = r.resolve(ca);
                match tls::load_client_roots(&path) {
                    Ok(roots) if mode == "optional" => Some(ClientAuth::Optional(roots)),
                    Ok(roots) => Some(ClientAuth::Required(roots)),
                    Err(e) => {
                        r.error(&client_ca_key, e.to_string());
                        None
                    }
                }
            }
        },
        Some("pinned") => {
            if l.client_ca.is_some() {
                r.warn(
                    &client_ca_key,
                    "ignored: client_auth is \"pinned\", so certificates are admitted by their pins, not by a CA",
                );
            }
            if l.pins.as_ref().is_none_or(Vec::is_empty)
                && l.cert_fingerprints.as_ref().is_none_or(Vec::is_empty)
            {
                r.error(
                    format!("{key}.pins"),
                    "missing: client_auth = \"pinned\" admits only pinned certificates, so it needs pins or cert_fingerprints",
                );
            }
            Some(ClientAuth::Pinned)
        }
        Some(v) => {
            r.error(
                format!("{key}.client_auth"),
                format!(
                    "\"{v}\" is not a client auth mode: use \"none\", \"optional\", \"required\" or \"pinned\""
                ),
            );
            None
        }
    };
    let pins = pin_set(r, key, &l.pins, &l.cert_fingerprints);
    let ip = ip_policy(r, key, &l.allow, &l.deny);
    let trusted_proxies = cidr_list(r, &format!("{key}.trusted_proxies"), &l.trusted_proxies);
    let proxy_protocol = l.proxy_protocol.unwrap_or(false);
    let forwarded_header = match l.forwarded_header.as_deref() {
        None => Some(crate::ip_filter::ForwardedHeader::default()),
        Some(v) => {
            let parsed = crate::ip_filter::ForwardedHeader::parse(v);
            if parsed.is_none() {
                r.error(
                    format!("{key}.forwarded_header"),
                    format!("\"{v}\" is not one of \"x-forwarded-for\", \"forwarded\" (the header the trusted proxies write)"),
                );
            } else if trusted_proxies.as_ref().is_none_or(IpSet::is_empty) {
                r.warn(
                    format!("{key}.forwarded_header"),
                    "has no effect without trusted_proxies: no forwarding header is believed",
                );
            }
            parsed
        }
    };
    if proxy_protocol && trusted_proxies.as_ref().is_none_or(IpSet::is_empty) {
        r.error(
            format!("{key}.proxy_protocol"),
            "needs trusted_proxies: only they may send a PROXY header, anyone else could forge their address",
        );
    }

    if l.certificates.is_empty() {
        r.error(
            format!("{key}.certificates"),
            "missing: a listener needs at least one [[listeners.certificates]] (chain and key)",
        );
    }
    let mut certs = Vec::new();
    for (j, c) in l.certificates.iter().enumerate() {
        let ckey = format!("{key}.certificates[{j}]");
        let (Some(chain), Some(keyf)) = (c.chain.as_deref(), c.key.as_deref()) else {
            if c.chain.is_none() {
                r.error(
                    format!("{ckey}.chain"),
                    "missing: the PEM certificate chain file",
                );
            }
            if c.key.is_none() {
                r.error(format!("{ckey}.key"), "missing: the PEM private key file");
            }
            continue;
        };
        let (chain_path, key_path) = (r.resolve(chain), r.resolve(keyf));
        match tls::load_server_cert(&chain_path, &key_path, now) {
            Ok(loaded) => {
                if let Some(w) = &loaded.expiry_warning {
                    r.warn(format!("{ckey}.chain"), w.clone());
                }
                if j > 0 && loaded.names.is_empty() {
                    r.warn(
                        format!("{ckey}.chain"),
                        "has no DNS names, so SNI can never select it (only the first certificate is the default)",
                    );
                }
                certs.push(loaded);
            }
            Err(e) => r.error(format!("{ckey}.{}", e.key_field()), e.to_string()),
        }
    }

    let names = host_names(
        r,
        key,
        l.hosts.as_deref(),
        &certs,
        certs.len() == l.certificates.len(),
    );
    let flood = conn_flood(r, key, l, name.as_deref().unwrap_or("?"));
    let crls = client_crls(r, key, l, client_auth.as_ref(), now);
    let (name, bind, min_tls, client_auth, kx, mut crls) =
        (name?, bind?, min_tls?, client_auth?, kx?, crls?);
    crls.live = revoked.cloned();
    let (flood, names) = (flood?, names?);
    let (pins, ip, trusted_proxies, forwarded_header) =
        (pins?, ip?, trusted_proxies?, forwarded_header?);
    if certs.len() != l.certificates.len() || certs.is_empty() {
        return None;
    }
    let cert_not_after = certs
        .iter()
        .map(|c| c.not_after)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match tls::server_config_full(
        min_tls,
        client_auth,
        certs,
        l.tls_resumption.unwrap_or(true),
        &kx,
        &crls,
    ) {
        Ok(cfg) => Some(ListenerSkeleton {
            name,
            bind,
            tls: Arc::new(cfg),
            cert_not_after,
            pins,
            ip,
            trusted_proxies,
            forwarded_header,
            proxy_protocol,
            flood,
            names,
        }),
        Err(e) => {
            r.error(key, format!("cannot build the TLS configuration: {e}"));
            None
        }
    }
}

/// `hosts`, or else the certificates' DNS and IP names: the names the listener serves.
/// `certs_complete`: every certificate loaded, so what they cover is known.
fn host_names(
    r: &mut Report,
    key: &str,
    hosts: Option<&[String]>,
    certs: &[tls::LoadedCert],
    certs_complete: bool,
) -> Option<HostNames> {
    let mut from_certs = HostNames::default();
    let mut each = Vec::with_capacity(certs.len());
    for c in certs {
        let mut own = HostNames::default();
        // A SAN no client could match (a partial wildcard, say) is no name to serve.
        for name in c.names.iter().filter_map(|n| Name::parse(n).ok()) {
            from_certs.insert(name.clone());
            own.insert(name);
        }
        for ip in &c.ips {
            from_certs.insert(Name::Ip(ip.to_canonical()));
            own.insert(Name::Ip(ip.to_canonical()));
        }
        each.push(own);
    }
    let Some(hosts) = hosts else {
        if certs_complete && !certs.is_empty() && from_certs.is_empty() {
            r.warn(
                format!("{key}.hosts"),
                "not set, and the certificates carry no DNS or IP names: requests naming any host are served; list the names served (others get 421)",
            );
        }
        each.into_iter().for_each(|c| from_certs.add_certificate(c));
        return Some(from_certs);
    };
    if hosts.is_empty() {
        r.error(
            format!("{key}.hosts"),
            "is empty: list the names served, or leave it out to serve the certificates' names",
        );
        return None;
    }
    let mut names = HostNames::default();
    let mut ok = true;
    for (j, h) in hosts.iter().enumerate() {
        match Name::parse(h) {
            Ok(name) => {
                if certs_complete && !from_certs.covers(&name) {
                    r.warn(
                        format!("{key}.hosts[{j}]"),
                        format!("\"{h}\" is not among the certificates' names: only clients that do not check the certificate's name (pinned ones) can reach it"),
                    );
                }
                names.insert(name);
            }
            Err(e) => {
                r.error(format!("{key}.hosts[{j}]"), format!("\"{h}\" {e}"));
                ok = false;
            }
        }
    }
    each.into_iter().for_each(|c| names.add_certificate(c));
    ok.then_some(names)
}

/// `client_crl` and `client_crl_expired`: readable CRLs, only beside a CA (`optional` or
/// `required`); one past its next update is a warning, or refuses clients when asked.
fn client_crls(
    r: &mut Report,
    key: &str,
    l: &crate::config::file::ListenerSection,
    auth: Option<&ClientAuth>,
    now: SystemTime,
) -> Option<tls::ClientCrls> {
    let refuse_when_expired = match l.client_crl_expired.as_deref() {
        None | Some("warn") => false,
        Some("refuse") => true,
        Some(v) => {
            r.error(
                format!("{key}.client_crl_expired"),
                format!("\"{v}\" is not a choice: write \"warn\" or \"refuse\""),
            );
            return None;
        }
    };
    let Some(files) = l.client_crl.as_deref() else {
        if l.client_crl_expired.is_some() {
            r.warn(
                format!("{key}.client_crl_expired"),
                "ignored: no client_crl is set",
            );
        }
        return Some(tls::ClientCrls::default());
    };
    if !matches!(
        auth,
        Some(ClientAuth::Optional(_) | ClientAuth::Required(_)) | None
    ) {
        r.error(
            format!("{key}.client_crl"),
            "applies only with client_auth = \"optional\" or \"required\" (certificates from a CA)",
        );
        return None;
    }
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut crls = Vec::new();
    let mut ok = true;
    for (i, f) in files.iter().enumerate() {
        let path = r.resolve(f);
        match tls::load_crls(&path) {
            Ok(loaded) => {
                for c in loaded {
                    if let Some(next) = c.next_update.filter(|n| *n < now) {
                        let what = format!(
                            "{} is past its next update ({}): revocations since are unknown",
                            path.display(),
                            tls::rfc3339(next)
                        );
                        if refuse_when_expired {
                            r.warn(
                                format!("{key}.client_crl[{i}]"),
                                format!("{what}; client_crl_expired = \"refuse\" refuses every client certificate until it is renewed"),
                            );
                        } else {
                            r.warn(format!("{key}.client_crl[{i}]"), what);
                        }
                    }
                    crls.push(c.der);
                }
            }
            Err(e) => {
                r.error(format!("{key}.client_crl[{i}]"), e.to_string());
                ok = false;
            }
        }
    }
    ok.then_some(tls::ClientCrls {
        crls,
        refuse_when_expired,
        live: None,
    })
}

/// `key_exchange`: known group names, none twice, at least one; default
/// [`tls::DEFAULT_KEY_EXCHANGE`].
fn key_exchange(
    r: &mut Report,
    key: &str,
    names: Option<&[String]>,
) -> Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>> {
    let Some(names) = names else {
        return Some(tls::default_kx_groups());
    };
    if names.is_empty() {
        r.error(
            format!("{key}.key_exchange"),
            "is empty: name at least one group (leave it out for the default)",
        );
        return None;
    }
    let mut out: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
    let mut ok = true;
    for (i, n) in names.iter().enumerate() {
        match tls::kx_group(n) {
            Some(g) if out.iter().any(|o| o.name() == g.name()) => {
                r.error(
                    format!("{key}.key_exchange[{i}]"),
                    format!("\"{n}\" is listed twice"),
                );
                ok = false;
            }
            Some(g) => out.push(g),
            None => {
                r.error(
                    format!("{key}.key_exchange[{i}]"),
                    format!(
                        "\"{n}\" is not a key-exchange group (known: {})",
                        tls::KX_GROUP_NAMES
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A listener's or route's `name`: required, and safe as a metric label and log field.
pub(super) fn label_name(
    r: &mut Report,
    key: &str,
    name: Option<&str>,
    what: &str,
) -> Option<Arc<str>> {
    match name {
        None => {
            r.error(
                format!("{key}.name"),
                format!("missing: every {what} needs a name"),
            );
            None
        }
        Some(n) if !is_label(n) => {
            r.error(
                format!("{key}.name"),
                format!("\"{n}\" must be 1-64 characters of A-Z a-z 0-9 _ . -"),
            );
            None
        }
        Some(n) => Some(Arc::<str>::from(n)),
    }
}

/// Names that are safe as metric labels and log fields.
pub(super) fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `connection_rate`, `connection_burst`, `max_connections_per_ip`.
fn conn_flood(
    r: &mut Report,
    key: &str,
    l: &ListenerSection,
    name: &str,
) -> Option<crate::limits::ConnFlood> {
    use crate::limits::{Gcra, Rate};
    let mut ok = true;
    let rate = match l.connection_rate.as_deref() {
        None => None,
        Some(s) => match Rate::parse(s) {
            Ok(rate) => Some(Gcra::new(rate, l.connection_burst.unwrap_or(rate.count))),
            Err(why) => {
                r.error(format!("{key}.connection_rate"), format!("\"{s}\" {why}"));
                ok = false;
                None
            }
        },
    };
    if l.connection_burst.is_some() && l.connection_rate.is_none() {
        r.error(format!("{key}.connection_burst"), "needs a connection_rate");
    }
    if l.connection_burst == Some(0) {
        r.error(format!("{key}.connection_burst"), "must be at least 1");
    }
    if l.max_connections_per_ip == Some(0) {
        r.error(
            format!("{key}.max_connections_per_ip"),
            "must be at least 1 (0 would refuse every connection)",
        );
    }
    ok.then(|| crate::limits::ConnFlood {
        scope: format!("listener:{name}").into(),
        rate,
        per_ip: l.max_connections_per_ip,
    })
}
