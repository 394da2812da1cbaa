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
    let token_sha256 = match a.token_file.as_deref() {
        None => Some(None),
        Some(f) => {
            let path = r.resolve(f);
            match std::fs::read_to_string(&path) {
                Ok(t) if t.trim().len() >= 32 => {
                    Some(Some(crate::identity::sha256(t.trim().as_bytes())))
                }
                Ok(_) => {
                    r.error(
                        "admin.token_file",
                        format!(
                            "the token in {} is shorter than 32 characters",
                            path.display()
                        ),
                    );
                    None
                }
                Err(e) => {
                    r.error(
                        "admin.token_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
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
    let client_auth = match a.client_ca.as_deref() {
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
    let (bind, token_sha256, client_auth) = (bind?, token_sha256?, client_auth?);
    let authenticated = token_sha256.is_some() || matches!(client_auth, ClientAuth::Required(_));
    if !bind.ip().is_loopback() && !authenticated {
        r.error(
            "admin.bind",
            format!("{bind} is reachable from other machines: the admin listener there needs client certificates (certificates + client_ca) or a token_file"),
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
        token_sha256,
        tls,
        hosts,
    })
}
