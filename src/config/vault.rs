//! `[vault]` and each route's `credentials` + `inject`: the vault is opened (and every record
//! checked) once per load, and each route's credential is built then, so a request only
//! inserts a header it already holds. A vault that does not open fails the load, and a
//! reload then keeps the last good config.

use base64::Engine;
use http::header::{HeaderName, HeaderValue};

use std::sync::Arc;

use super::file::{FileConfig, InjectSection, RouteSection};
use super::route::RouteInputs;
use super::upstream::{Transport, UpstreamSettings, UpstreamSpec, transport};
use crate::report::Report;
use crate::routing::rewrite::credential::{Credential, Inject, encode_query};
use crate::vault::{Kind, MasterSource, Secret, Vault};

/// An OAuth2 client credentials grant the gateway runs for the routes that inject it: the
/// client, the token endpoint and what it asks for. Routes with the same one share it (one
/// cached token, one grant at a time).
#[derive(Clone)]
pub struct TokenSourceSpec {
    /// The vault record's name (logs and metrics: never its value).
    pub record: Box<str>,
    pub client_id: Box<str>,
    pub client_secret: Arc<Secret>,
    /// Where the token endpoint is, with its TLS settings.
    pub endpoint: UpstreamSpec,
    /// The token endpoint's path (and query, if it has one).
    pub path: http::uri::PathAndQuery,
    pub scope: Option<Box<str>>,
    pub audience: Option<Box<str>>,
    pub client_auth: ClientAuth,
}

impl PartialEq for TokenSourceSpec {
    fn eq(&self, o: &Self) -> bool {
        self.record == o.record
            && self.client_id == o.client_id
            && self.client_secret.expose() == o.client_secret.expose()
            && self.endpoint == o.endpoint
            && self.path == o.path
            && self.scope == o.scope
            && self.audience == o.audience
            && self.client_auth == o.client_auth
    }
}

impl std::fmt::Debug for TokenSourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenSourceSpec({} at {}{}, <redacted>)",
            self.record, self.endpoint.name, self.path
        )
    }
}

/// How the client proves itself to the token endpoint (RFC 6749 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` with the form-encoded id and secret (`client_secret_basic`).
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Post,
}

/// The vault of `[vault]`, opened; `None` without the section or when it does not open
/// (reported).
pub fn open(r: &mut Report, file: &FileConfig) -> Option<Vault> {
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
/// An OAuth2 credential's token source joins `sources` (or names the same one there).
pub(super) fn credential(
    r: &mut Report,
    key: &str,
    s: &RouteSection,
    inputs: &RouteInputs<'_>,
    sources: &mut Vec<TokenSourceSpec>,
) -> Option<Option<Box<Credential>>> {
    let (file, vault) = (inputs.file, inputs.vault);
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
    if kind == Kind::PrivateKey {
        r.error(
            format!("{key}.credentials"),
            format!("record \"{name}\" is a private_key: it signs inside the gateway and is never sent upstream"),
        );
        return None;
    }
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
    if kind != Kind::OAuth2
        && r.misplaced(
            &format!("{key}.inject"),
            &[
                ("token_upstream", inject.token_upstream.is_some()),
                ("token_path", inject.token_path.is_some()),
                ("token_url", inject.token_url.is_some()),
                ("scope", inject.scope.is_some()),
                ("audience", inject.audience.is_some()),
                ("client_auth", inject.client_auth.is_some()),
            ],
            |_| {
                format!(
                    "applies to oauth2 records, and \"{name}\" is {}",
                    kind.label()
                )
            },
        )
    {
        return None;
    }
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
        (Kind::OAuth2, None, None) => {
            let spec = token_source(r, key, name, &secret, &inject, inputs)?;
            let source = match sources.iter().position(|s| *s == spec) {
                Some(i) => i,
                None => {
                    sources.push(spec);
                    sources.len() - 1
                }
            };
            Inject::OAuth2 { source }
        }
        // Refused above: never sent.
        (Kind::PrivateKey, _, _) => return None,
        (Kind::Basic | Kind::Bearer | Kind::OAuth2, _, _) => {
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

/// The token source of an oauth2 record: `client_id:client_secret` from the vault, the token
/// endpoint from `token_upstream` + `token_path` or from `token_url`.
fn token_source(
    r: &mut Report,
    key: &str,
    name: &str,
    secret: &Secret,
    inject: &InjectSection,
    inputs: &RouteInputs<'_>,
) -> Option<TokenSourceSpec> {
    let ikey = format!("{key}.inject");
    let (client_id, client_secret) = match secret
        .expose()
        .iter()
        .position(|&b| b == b':')
        .map(|at| secret.expose().split_at(at))
    {
        Some((id, rest)) if !id.is_empty() && rest.len() > 1 => match std::str::from_utf8(id) {
            Ok(id) => (id, Secret::new(rest[1..].to_vec())),
            Err(_) => {
                r.error(
                    format!("{key}.credentials"),
                    format!("record \"{name}\": the client id is not UTF-8"),
                );
                return None;
            }
        },
        _ => {
            r.error(
                format!("{key}.credentials"),
                format!("record \"{name}\" is not client_id:client_secret"),
            );
            return None;
        }
    };
    let client_auth = match inject.client_auth.as_deref() {
        None | Some("basic") => ClientAuth::Basic,
        Some("post") => ClientAuth::Post,
        Some(other) => {
            r.error(
                format!("{ikey}.client_auth"),
                format!("\"{other}\" is not \"basic\" or \"post\""),
            );
            return None;
        }
    };
    let text = |r: &mut Report, field: &str, v: &Option<String>| -> Option<Option<Box<str>>> {
        match v.as_deref() {
            None => Some(None),
            Some(t) if !t.is_empty() && t.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                Some(Some(t.into()))
            }
            Some(_) => {
                r.error(
                    format!("{ikey}.{field}"),
                    "must be printable ASCII, not empty",
                );
                None
            }
        }
    };
    let scope = text(r, "scope", &inject.scope)?;
    let audience = text(r, "audience", &inject.audience)?;
    let (endpoint, path) = match (
        inject.token_upstream.as_deref(),
        inject.token_path.as_deref(),
        inject.token_url.as_deref(),
    ) {
        (Some(up), Some(path), None) => {
            let spec =
                super::route::named_upstream(r, &format!("{ikey}.token_upstream"), up, inputs)?;
            let path = match path.parse::<http::uri::PathAndQuery>() {
                Ok(p) if path.starts_with('/') => p,
                _ => {
                    r.error(
                        format!("{ikey}.token_path"),
                        format!("\"{path}\" is not a path starting with /"),
                    );
                    return None;
                }
            };
            (spec.clone(), path)
        }
        (None, None, Some(url)) => {
            let uri = url
                .parse::<http::Uri>()
                .ok()
                .filter(|u| u.authority().is_some());
            let Some(uri) = uri else {
                r.error(
                    format!("{ikey}.token_url"),
                    format!(
                        "\"{url}\" is not a URL such as https://login.example.com/oauth2/token"
                    ),
                );
                return None;
            };
            if uri.scheme_str() != Some("https") {
                r.error(
                    format!("{ikey}.token_url"),
                    format!("\"{url}\" is not https://: a client secret never crosses a network in clear (a token endpoint on a trusted network can be an [[upstreams]] entry named by token_upstream)"),
                );
                return None;
            }
            let origin = format!("https://{}", uri.authority().map_or("", |a| a.as_str()));
            let mut settings = UpstreamSettings::default();
            let (targets, tls) = transport(
                r,
                &Transport {
                    targets: vec![(origin.as_str(), 1, format!("{ikey}.token_url"))],
                    targets_key: format!("{ikey}.token_url"),
                    key: &ikey,
                    connect_timeout: &None,
                    response_timeout: &None,
                    idle_timeout: &None,
                    upstream_protocol: None,
                    upstream_tls: None,
                    websocket: false,
                },
                &mut settings,
                inputs.now,
            )?;
            let path = uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            (
                UpstreamSpec {
                    name: Arc::from(format!("oauth2:{name}")),
                    named: false,
                    targets,
                    settings,
                    tls,
                },
                path,
            )
        }
        _ => {
            r.error(
                ikey,
                format!("record \"{name}\" is oauth2: name its token endpoint, either token_upstream = \"NAME\" with token_path = \"/oauth2/token\", or token_url = \"https://...\""),
            );
            return None;
        }
    };
    Some(TokenSourceSpec {
        record: name.into(),
        client_id: client_id.into(),
        client_secret: Arc::new(client_secret),
        endpoint,
        path,
        scope,
        audience,
        client_auth,
    })
}
