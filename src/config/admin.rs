//! `[admin]`: the admin listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::AdminSettings;
use crate::report::Report;
use crate::tls::{self, ClientAuth, MinTls};

pub(super) fn admin(
    r: &mut Report,
    a: &super::file::AdminSection,
    now: SystemTime,
) -> Option<AdminSettings> {
    let bind = match a.bind.as_deref() {
        None => {
            r.error("admin.bind", "missing: write e.g. \"127.0.0.1:9901\"");
            None
        }
        Some(b) => match b.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                r.error("admin.bind", format!("\"{b}\" is not an IP:port address"));
                None
            }
        },
    };
    let legacy_token = match a.token_file.as_deref() {
        None => Some(None),
        Some(f) => token_digest(r, "admin.token_file", f).map(Some),
    };
    let mut hosts: Vec<Box<str>> = Vec::new();
    for (j, h) in a.hosts.iter().flatten().enumerate() {
        match crate::routing::host::canonical(h) {
            Ok(c) if c.port.is_none() => hosts.push(c.name.into_owned().into()),
            _ => r.error(
                format!("admin.hosts[{j}]"),
                format!("\"{h}\" is not a host name (letters, digits, '-' and '.', no port)"),
            ),
        }
    }
    let mut certs = Vec::new();
    for (j, c) in a.certificates.iter().enumerate() {
        let ckey = format!("admin.certificates[{j}]");
        let (Some(chain), Some(keyf)) = (c.chain.as_deref(), c.key.as_deref()) else {
            r.error(&ckey, "needs both chain and key");
            continue;
        };
        match tls::load_server_cert(&r.resolve(chain), &r.resolve(keyf), now) {
            Ok(c) => {
                // The names the admin certificate is valid for are names it answers to.
                for n in &c.names {
                    if let Ok(h) = crate::routing::host::canonical(n) {
                        hosts.push(h.name.into_owned().into());
                    }
                }
                certs.push(c)
            }
            Err(e) => r.error(format!("{ckey}.{}", e.key_field()), e.to_string()),
        }
    }
    let pinned_only = a.client_ca.is_none()
        && !a.certificates.is_empty()
        && a.identities.iter().any(|i| i.pins.is_some());
    let client_auth = match a.client_ca.as_deref() {
        // Identities by pin alone: any certificate at the handshake, admitted by its pin.
        None if pinned_only => Some(ClientAuth::Pinned),
        None => Some(ClientAuth::None),
        Some(_) if a.certificates.is_empty() => {
            r.error(
                "admin.client_ca",
                "client certificates need TLS: add [[admin.certificates]]",
            );
            None
        }
        Some(ca) => match tls::load_client_roots(&r.resolve(ca)) {
            Ok(roots) => Some(ClientAuth::Required(roots)),
            Err(e) => {
                r.error("admin.client_ca", e.to_string());
                None
            }
        },
    };
    let identities = identities(r, a, legacy_token.flatten());
    let audit_log = a.audit_log.as_deref().map(|f| r.resolve(f));
    let (bind, _, client_auth, identities) = (bind?, legacy_token?, client_auth?, identities?);
    let authenticated = identities
        .iter()
        .any(|i| i.credential != AdminCredential::Loopback)
        || matches!(client_auth, ClientAuth::Required(_));
    if !bind.ip().is_loopback() && !authenticated {
        r.error(
            "admin.bind",
            format!("{bind} is reachable from other machines: the admin listener there needs client certificates (certificates + client_ca), a token_file or [[admin.identities]]"),
        );
        return None;
    }
    if certs.len() != a.certificates.len() {
        return None;
    }
    let tls = if certs.is_empty() {
        None
    } else {
        match tls::server_config(MinTls::V1_2, client_auth, certs) {
            Ok(mut cfg) => {
                // Admin clients are tools like curl and Prometheus: HTTP/1.1 is enough.
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Arc::new(cfg))
            }
            Err(e) => {
                r.error("admin", format!("cannot build the TLS configuration: {e}"));
                return None;
            }
        }
    };
    Some(AdminSettings {
        bind,
        identities,
        tls,
        hosts,
        audit_log,
    })
}

/// What an admin identity may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminRole {
    /// Health, metrics, config, upstreams and every listing.
    Viewer,
    /// A viewer that also reloads and activates or revokes licenses.
    Operator,
    /// Everything: issuer clients, signing keys, and what comes after.
    Admin,
}

impl AdminRole {
    pub fn label(self) -> &'static str {
        match self {
            AdminRole::Viewer => "viewer",
            AdminRole::Operator => "operator",
            AdminRole::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [AdminRole::Viewer, AdminRole::Operator, AdminRole::Admin]
            .into_iter()
            .find(|r| r.label() == s)
    }
}

/// How an admin identity proves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCredential {
    /// SHA-256 of its bearer token; only the hash is kept in memory.
    Token([u8; 32]),
    /// SPKI SHA-256 digests of its client certificates.
    Pins(Vec<[u8; 32]>),
    /// Its client certificate's subject, in the form `identity::subject_key` compares.
    Subject(String),
    /// A client certificate of the admin `client_ca` with no identity of its own: only when
    /// no identity is configured and no token is set (the single-admin set-up).
    AnyClientOfCa,
    /// Anyone reaching a loopback listener that asks for nothing: only when nothing is set.
    Loopback,
}

/// One named admin identity with its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminIdentity {
    pub name: Box<str>,
    pub role: AdminRole,
    pub credential: AdminCredential,
}

/// `[[admin.identities]]`, and the single identity a set-up without them has. `None` when
/// any entry is wrong (each problem reported).
fn identities(
    r: &mut Report,
    a: &super::file::AdminSection,
    legacy_token: Option<[u8; 32]>,
) -> Option<Vec<AdminIdentity>> {
    let mut out = Vec::new();
    let mut ok = true;
    if let Some(t) = legacy_token {
        out.push(AdminIdentity {
            name: "admin".into(),
            role: AdminRole::Admin,
            credential: AdminCredential::Token(t),
        });
    }
    for (j, i) in a.identities.iter().enumerate() {
        let key = format!("admin.identities[{j}]");
        match identity(
            r,
            &key,
            i,
            a.client_ca.is_some(),
            !a.certificates.is_empty(),
        ) {
            Some(id) => {
                let clash = out.iter().find(|o| {
                    o.name == id.name
                        || matches!((&o.credential, &id.credential), (AdminCredential::Token(x), AdminCredential::Token(y)) if x == y)
                });
                if let Some(other) = clash {
                    r.error(
                        &key,
                        format!(
                            "has the same name or token as the identity \"{}\": each identity needs its own",
                            other.name
                        ),
                    );
                    ok = false;
                } else {
                    out.push(id);
                }
            }
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    if out.is_empty() {
        out.push(if a.client_ca.is_some() {
            AdminIdentity {
                name: "client_ca".into(),
                role: AdminRole::Admin,
                credential: AdminCredential::AnyClientOfCa,
            }
        } else {
            AdminIdentity {
                name: "loopback".into(),
                role: AdminRole::Admin,
                credential: AdminCredential::Loopback,
            }
        });
    }
    Some(out)
}

/// One `[[admin.identities]]` entry at `key`.
fn identity(
    r: &mut Report,
    key: &str,
    i: &super::file::AdminIdentitySection,
    has_client_ca: bool,
    has_tls: bool,
) -> Option<AdminIdentity> {
    let name = match i.name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() && n.len() <= 64 && !n.chars().any(char::is_control) => {
            Some(Box::<str>::from(n))
        }
        Some(_) => {
            r.error(
                format!("{key}.name"),
                "must be 1 to 64 printable characters",
            );
            None
        }
        None => {
            r.error(
                format!("{key}.name"),
                "missing: name the identity, e.g. \"prometheus\"",
            );
            None
        }
    };
    let role = match i.role.as_deref() {
        Some(s) => match AdminRole::parse(s) {
            Some(role) => Some(role),
            None => {
                r.error(
                    format!("{key}.role"),
                    format!("\"{s}\" is not a role: write \"viewer\", \"operator\" or \"admin\""),
                );
                None
            }
        },
        None => {
            r.error(
                format!("{key}.role"),
                "missing: write \"viewer\", \"operator\" or \"admin\"",
            );
            None
        }
    };
    let given = [
        i.token_file.is_some(),
        i.pins.is_some(),
        i.subject.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        r.error(
            key,
            "needs exactly one of token_file, pins or subject (one credential per identity)",
        );
        return None;
    }
    let credential = if let Some(f) = i.token_file.as_deref() {
        token_digest(r, &format!("{key}.token_file"), f).map(AdminCredential::Token)
    } else if let Some(pins) = &i.pins {
        let mut digests = Vec::new();
        for (k, p) in pins.iter().enumerate() {
            match crate::identity::parse_spki_pin(p) {
                Ok(d) => digests.push(d),
                Err(e) => r.error(format!("{key}.pins[{k}]"), e.to_string()),
            }
        }
        if pins.is_empty() {
            r.error(format!("{key}.pins"), "is empty: list at least one pin");
            None
        } else if !has_tls {
            r.error(
                format!("{key}.pins"),
                "client certificates need TLS: add [[admin.certificates]]",
            );
            None
        } else if digests.len() == pins.len() {
            Some(AdminCredential::Pins(digests))
        } else {
            None
        }
    } else if let Some(subject) = i.subject.as_deref() {
        if !has_client_ca {
            r.error(
                format!("{key}.subject"),
                "needs client_ca: a self-signed certificate can claim any subject (use pins without a CA)",
            );
            None
        } else if subject.trim().is_empty() {
            r.error(format!("{key}.subject"), "is empty");
            None
        } else {
            Some(AdminCredential::Subject(crate::identity::subject_key(
                subject,
            )))
        }
    } else {
        None
    };
    Some(AdminIdentity {
        name: name?,
        role: role?,
        credential: credential?,
    })
}

/// SHA-256 of the token in `file` (at least 32 characters); only the hash is kept.
fn token_digest(r: &mut Report, key: &str, file: &str) -> Option<[u8; 32]> {
    let path = r.resolve(file);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => Some(crate::identity::sha256(t.trim().as_bytes())),
        Ok(_) => {
            r.error(
                key,
                format!(
                    "the token in {} is shorter than 32 characters",
                    path.display()
                ),
            );
            None
        }
        Err(e) => {
            r.error(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}
