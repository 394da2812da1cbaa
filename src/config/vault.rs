//! `[vault]` and each route's `credentials` + `inject`: the vault is opened (and every record
//! checked) once per load, and each route's credential is built then, so a request only
//! inserts a header it already holds. A vault that does not open fails the load, and a
//! reload then keeps the last good config.

use base64::Engine;
use http::header::{HeaderName, HeaderValue};

use super::file::{FileConfig, RouteSection};
use crate::report::Report;
use crate::routing::rewrite::credential::{Credential, Inject, encode_query};
use crate::vault::{Kind, MasterSource, Vault};

/// The vault of `[vault]`, opened; `None` without the section or when it does not open
/// (reported).
pub(super) fn open(r: &mut Report, file: &FileConfig) -> Option<Vault> {
    let s = file.vault.as_ref()?;
    let Some(path) = s.file.as_deref() else {
        r.error(
            "vault.file",
            "missing: the vault file (portcullis vault init makes one)",
        );
        return None;
    };
    let source = match (
        &s.master_key_file,
        &s.master_key_env,
        &s.master_key_credential,
    ) {
        (Some(f), None, None) => MasterSource::File(r.resolve(f)),
        (None, Some(v), None) => MasterSource::Env(v.clone()),
        (None, None, Some(c)) => MasterSource::Credential(c.clone()),
        _ => {
            r.error(
                "vault",
                "name exactly one of master_key_file, master_key_env, master_key_credential (the master key never sits in the config)",
            );
            return None;
        }
    };
    let master = match source.load() {
        Ok(m) => m,
        Err(e) => {
            r.error("vault.master_key", e.to_string());
            return None;
        }
    };
    match Vault::open(&r.resolve(path), &master) {
        Ok(v) => Some(v),
        Err(e) => {
            r.error("vault.file", e.to_string());
            None
        }
    }
}

/// The route's credential: `Some(None)` when it has none, `None` when it is wrong (reported).
pub(super) fn credential(
    r: &mut Report,
    key: &str,
    s: &RouteSection,
    file: &FileConfig,
    vault: Option<&Vault>,
) -> Option<Option<Box<Credential>>> {
    let Some(name) = s.credentials.as_deref() else {
        if s.inject.is_some() {
            r.error(
                format!("{key}.inject"),
                "applies with credentials = \"NAME\" only",
            );
            return None;
        }
        return Some(None);
    };
    let Some(vault) = vault else {
        if file.vault.is_none() {
            r.error(
                format!("{key}.credentials"),
                "needs a [vault] section (file and master key source)",
            );
        }
        return None;
    };
    let (kind, secret) = match vault.get(name) {
        Ok(found) => found,
        Err(e) => {
            r.error(format!("{key}.credentials"), e.to_string());
            return None;
        }
    };
    let inject = s.inject.clone().unwrap_or_default();
    let client_authorization = match inject.client_authorization.as_deref() {
        None => None,
        Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) if n != http::header::AUTHORIZATION => Some(n),
            _ => {
                r.error(
                    format!("{key}.inject.client_authorization"),
                    format!("\"{h}\" is not a header name other than authorization"),
                );
                return None;
            }
        },
    };
    let value = |bytes: Vec<u8>| {
        let mut v = HeaderValue::from_bytes(&bytes).ok()?;
        v.set_sensitive(true);
        Some(v)
    };
    let bad_value = |r: &mut Report| {
        r.error(
            format!("{key}.credentials"),
            format!("record \"{name}\" holds bytes a header cannot carry (a line break?)"),
        );
    };
    let inject = match (kind, inject.header.as_deref(), inject.query.as_deref()) {
        (Kind::ApiKey, Some(h), None) => {
            let Ok(n) = HeaderName::from_bytes(h.as_bytes()) else {
                r.error(
                    format!("{key}.inject.header"),
                    format!("\"{h}\" is not a header name"),
                );
                return None;
            };
            let Some(v) = value(secret.expose().to_vec()) else {
                bad_value(r);
                return None;
            };
            Inject::Header(n, v)
        }
        (Kind::ApiKey, None, Some(q)) if !q.is_empty() => Inject::Query {
            name: encode_query(q.as_bytes()).into(),
            value: encode_query(secret.expose()).into(),
        },
        (Kind::ApiKey, _, _) => {
            r.error(
                format!("{key}.inject"),
                format!("record \"{name}\" is an api_key: say where it goes, inject = {{ header = \"X-Api-Key\" }} or {{ query = \"api_key\" }}"),
            );
            return None;
        }
        (Kind::Basic | Kind::Bearer, None, None) => {
            let mut text = Vec::new();
            if kind == Kind::Basic {
                text.extend_from_slice(b"Basic ");
                text.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(secret.expose())
                        .as_bytes(),
                );
            } else {
                text.extend_from_slice(b"Bearer ");
                text.extend_from_slice(secret.expose());
            }
            let v = value(text.clone());
            zeroize::Zeroize::zeroize(&mut text);
            let Some(v) = v else {
                bad_value(r);
                return None;
            };
            Inject::Header(http::header::AUTHORIZATION, v)
        }
        (Kind::Basic | Kind::Bearer, _, _) => {
            r.error(
                format!("{key}.inject"),
                format!(
                    "record \"{name}\" ({}) goes in Authorization: leave out header and query",
                    kind.label()
                ),
            );
            return None;
        }
    };
    Some(Some(Box::new(Credential {
        record: name.into(),
        inject,
        client_authorization,
    })))
}
