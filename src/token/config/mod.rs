//! Token config: the `[[token_issuers]]` and `[token]` sections as written, and their
//! validation into [`IssuerSettings`], [`TokenSettings`] and, per route,
//! [`RouteAuth`](crate::token::RouteAuth).
//!
//! # Route rule
//! With no `[[token_issuers]]`, routes default to `auth = "none"` (and naming scopes is an
//! error: nothing could verify them). With issuers configured, every route must say
//! `auth = "bearer"` or `auth = "none"`: forgetting it is an error, never an open route.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod issuer;
mod route;

use super::{ClaimHeaders, DEFAULT_CACHE_ENTRIES, IssuerSettings};
use crate::report::Report;
use issuer::issuer;
#[cfg(test)]
pub(crate) use route::route_auth;
pub use route::{RouteAuthKeys, validate_route_auth};

/// One trusted token issuer.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIssuerSection {
    /// Unique name, used by routes (`issuers = [...]`), logs and `x-auth-issuer`.
    pub name: Option<String>,
    /// The exact `iss` of its tokens.
    pub issuer: Option<String>,
    /// Accepted `aud` values; at least one.
    pub audiences: Option<Vec<String>>,
    /// Clock skew allowed on `exp`, `nbf`, `iat`. Default "60s", at most "5m".
    pub leeway: Option<String>,
    /// Longest lifetime a token may claim: one whose `exp` lies further ahead of now is
    /// refused (a forged or mis-issued token that would never expire). Default "24h",
    /// "1m" to "90d".
    pub max_lifetime: Option<String>,
    /// Algorithms the issuer's keys may be used with (RS256, PS256, ES256, ES384, EdDSA;
    /// HS256 only with `hs256_secret_file`). Required for JWKS sources; the default for `keys`.
    pub algorithms: Option<Vec<String>>,
    /// Public keys from PEM files. Exactly one of `keys`, `jwks_file`, `jwks_url`,
    /// `hs256_secret_file`.
    pub keys: Option<Vec<TokenKeySection>>,
    /// A JWKS document on disk, read with the config.
    pub jwks_file: Option<String>,
    /// A JWKS URL (https only), fetched at start and refreshed in the background.
    pub jwks_url: Option<String>,
    /// PEM CA bundle the JWKS server must chain to; required with `jwks_url`. For a public
    /// identity provider, the system bundle (e.g. /etc/ssl/certs/ca-certificates.crt).
    pub jwks_ca: Option<String>,
    /// Time between JWKS fetches. Default "10m", at least "10s".
    pub jwks_refresh: Option<String>,
    /// Least time between fetches caused by unknown kids. Default "30s".
    pub jwks_min_refetch: Option<String>,
    /// Limit on one JWKS fetch. Default "10s".
    pub jwks_timeout: Option<String>,
    /// A file holding the HS256 shared secret (raw bytes, one trailing newline ignored; at
    /// least 32 bytes). Never mixed with asymmetric keys.
    pub hs256_secret_file: Option<String>,
}

/// A public key file.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenKeySection {
    /// PEM file with a `PUBLIC KEY` block.
    pub pem: Option<String>,
    /// Tokens naming this kid use this key; a key without kid is tried for any kid not in
    /// the set.
    pub kid: Option<String>,
    /// Algorithms for this key; default: the issuer's `algorithms` that fit the key.
    pub algorithms: Option<Vec<String>>,
}

/// Token settings shared by all issuers.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// Verified tokens kept in memory. Default 100000; 0 turns caching off.
    pub cache_max_entries: Option<u64>,
    /// Pass the Authorization header of a verified token on to the upstream. Default false.
    pub keep_authorization: Option<bool>,
    /// Header carrying `sub` to the upstream. Default "x-auth-subject"; "" sends none.
    pub subject_header: Option<String>,
    /// Header carrying `client_id` (or `azp`). Default "x-auth-client-id"; "" sends none.
    pub client_id_header: Option<String>,
    /// Header carrying the scopes, space-separated. Default "x-auth-scopes"; "" sends none.
    pub scopes_header: Option<String>,
    /// Header carrying the issuer's name. Default "x-auth-issuer"; "" sends none.
    pub issuer_header: Option<String>,
}

/// `[token]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub cache_max_entries: usize,
    pub headers: ClaimHeaders,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            cache_max_entries: DEFAULT_CACHE_ENTRIES,
            headers: ClaimHeaders::default(),
        }
    }
}

// === Findings ===

/// Problems found, with key paths, before they go to the config [`Report`]. Its own type so
/// the token rules can be tested without a whole config file.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    base: PathBuf,
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

impl Findings {
    pub fn new(base: &Path) -> Self {
        Findings {
            base: base.to_path_buf(),
            ..Findings::default()
        }
    }
    pub fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push((key.into(), message.into()));
    }
    pub fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push((key.into(), message.into()));
    }
    /// A config path, relative to the config file's folder.
    pub fn resolve(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }
    fn report(self, r: &mut Report) {
        for (k, m) in self.errors {
            r.error(k, m);
        }
        for (k, m) in self.warnings {
            r.warn(k, m);
        }
    }
}

/// The folder relative paths resolve from (the Report knows the config file).
fn base(r: &Report) -> PathBuf {
    r.resolve("")
}

// === validation ===

/// Validate every `[[token_issuers]]`: `None` when any has an error (all are reported).
pub fn validate_issuers(
    sections: &[TokenIssuerSection],
    r: &mut Report,
) -> Option<Vec<IssuerSettings>> {
    let mut f = Findings::new(&base(r));
    let out = issuers(&mut f, sections);
    f.report(r);
    out
}

pub(crate) fn issuers(
    f: &mut Findings,
    sections: &[TokenIssuerSection],
) -> Option<Vec<IssuerSettings>> {
    let before = f.errors.len();
    let mut names = HashSet::new();
    let mut isses = HashSet::new();
    let mut out = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        let key = format!("token_issuers[{i}]");
        if let Some(n) = &s.name
            && !names.insert(n.as_str())
        {
            f.error(
                format!("{key}.name"),
                format!("issuer name \"{n}\" is used twice"),
            );
        }
        if let Some(iss) = &s.issuer
            && !isses.insert(iss.as_str())
        {
            f.error(
                format!("{key}.issuer"),
                format!("\"{iss}\" is configured twice: which keys would verify it?"),
            );
        }
        if let Some(settings) = issuer(f, &key, s) {
            out.push(settings);
        }
    }
    (f.errors.len() == before).then_some(out)
}

/// Validate `[token]`; problems are reported and their defaults kept.
pub fn validate_token_section(s: &TokenSection, r: &mut Report) -> TokenSettings {
    let mut f = Findings::new(&base(r));
    let out = token_section(&mut f, s);
    f.report(r);
    out
}

pub(crate) fn token_section(f: &mut Findings, s: &TokenSection) -> TokenSettings {
    let mut out = TokenSettings::default();
    match s.cache_max_entries {
        Some(n) if n > 10_000_000 => f.error(
            "token.cache_max_entries",
            format!("{n} is out of range: must be 0 (no cache) to 10000000"),
        ),
        Some(n) => out.cache_max_entries = usize::try_from(n).unwrap_or(DEFAULT_CACHE_ENTRIES),
        None => {}
    }
    let h = &mut out.headers;
    h.keep_authorization = s.keep_authorization.unwrap_or(false);
    let mut seen = HashSet::new();
    for (field, value, slot) in [
        ("subject_header", &s.subject_header, &mut h.subject),
        ("client_id_header", &s.client_id_header, &mut h.client_id),
        ("scopes_header", &s.scopes_header, &mut h.scopes),
        ("issuer_header", &s.issuer_header, &mut h.issuer),
    ] {
        let key = format!("token.{field}");
        match value.as_deref() {
            None => {}
            Some("") => *slot = None,
            Some(v) => match http::HeaderName::from_bytes(v.as_bytes()) {
                Ok(name) if reserved(name.as_str()) => f.error(
                    key,
                    format!("\"{v}\" is a header the gateway or HTTP itself owns"),
                ),
                Ok(name) => *slot = Some(name),
                Err(_) => f.error(key, format!("\"{v}\" is not a header name")),
            },
        }
        if let Some(name) = slot.as_ref()
            && !seen.insert(name.clone())
        {
            f.error(
                format!("token.{field}"),
                format!("\"{name}\" is used for two claims"),
            );
        }
    }
    out
}

/// Headers a claim header must not replace: framing, routing, credentials, our own.
fn reserved(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "te"
            | "upgrade"
            | "cookie"
            | "x-request-id"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
    ) || name.starts_with("proxy-")
}

/// A duration that may be zero (leeway), up to `max`.
pub(crate) fn duration(
    f: &mut Findings,
    key: &str,
    v: &Option<String>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Option<Duration> {
    let Some(v) = v.as_deref() else {
        return Some(default);
    };
    match humantime::parse_duration(v) {
        Ok(d) if d < min || d > max => {
            f.error(
                key,
                format!(
                    "\"{v}\" is out of range: {} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            None
        }
        Ok(d) => Some(d),
        Err(_) => {
            f.error(
                key,
                format!("\"{v}\" is not a duration (write e.g. \"60s\", \"10m\")"),
            );
            None
        }
    }
}
