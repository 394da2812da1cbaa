//! The `[issuer]` config section, validated into [`OwnIssuerSettings`].
//!
//! ```toml
//! [issuer]
//! listener = "public"                 # requests under path_prefix on this listener go to the issuer
//! path_prefix = "/"                   # endpoints: /oauth2/token, /oauth2/revoke, /oauth2/introspect
//! issuer = "https://gw.example.com"   # `iss` of minted tokens, `issuer` of the metadata
//! store = "/var/lib/portcullis/issuer.redb"
//! algorithm = "ES256"                 # or "EdDSA"
//! access_token_ttl = "10m"
//! refresh_token_ttl = "30d"           # absolute
//! refresh_idle_ttl = "7d"
//! audience = "portcullis"             # `aud` of minted tokens
//! name = "portcullis"                 # what routes' `issuers = [...]` and x-auth-issuer call it
//! ```
//!
//! The well-known documents are served at the root whatever the prefix (RFC 8414 section 3):
//! `/.well-known/jwks.json` and `/.well-known/oauth-authorization-server[/<issuer path>]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::report::Report;
use crate::token::IssuerLink;

pub use crate::state::issuer::SigningAlg;
use crate::token::{IssuerSettings, KeySource};

/// Clock skew the gateway's verifier allows on its own tokens. Minting and verifying read
/// the same clock, so this only absorbs a system clock step between the two.
pub const OWN_LEEWAY: Duration = Duration::from_secs(5);

const DAY: Duration = Duration::from_secs(86_400);
/// Shortest and longest access-token lifetimes, for the section and per client.
pub const MIN_ACCESS_TTL: Duration = Duration::from_secs(30);
pub const MAX_ACCESS_TTL: Duration = DAY;

/// `[issuer]` as written.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// Config name of this issuer, for routes' `issuers` and the `x-auth-issuer` header.
    /// Default "portcullis".
    pub name: Option<String>,
    /// The listener whose requests under `path_prefix` go to the issuer. Required.
    pub listener: Option<String>,
    /// Prefix of `/oauth2/token`, `/oauth2/revoke`, `/oauth2/introspect`. Default "/".
    pub path_prefix: Option<String>,
    /// The `iss` of minted tokens: an https URL without query or fragment. Required.
    pub issuer: Option<String>,
    /// The redb file of clients, refresh tokens, revocations and signing keys. Required.
    /// Created (mode 0600) if missing; its folder must exist.
    pub store: Option<String>,
    /// "ES256" (default) or "EdDSA". A change rotates the signing key at the next start.
    pub algorithm: Option<String>,
    /// Access-token lifetime unless the client has its own. Default "10m", 30s to 24h.
    pub access_token_ttl: Option<String>,
    /// Refresh-token family lifetime from the first token on. Default "30d", 1h to 365d.
    pub refresh_token_ttl: Option<String>,
    /// A refresh token unused this long expires. Default "7d", at most refresh_token_ttl.
    pub refresh_idle_ttl: Option<String>,
    /// The `aud` of minted tokens (and the one audience the verifier accepts). Default
    /// "portcullis".
    pub audience: Option<String>,
}

/// `[issuer]`, validated. Cheap to clone.
#[derive(Clone)]
pub struct OwnIssuerSettings {
    pub name: Arc<str>,
    pub listener: Arc<str>,
    /// Normalised: "/" or "/a/b" without a trailing slash.
    pub path_prefix: Box<str>,
    pub issuer: String,
    pub store: PathBuf,
    pub algorithm: SigningAlg,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub refresh_idle_ttl: Duration,
    pub audience: String,
    pub paths: Paths,
    /// The keys and denylist the gateway's verifier reads. A runtime object, like an
    /// upstream pool: validation makes a fresh one, a reload that keeps the store inherits
    /// the running one, and `Issuer::open` fills it from the store.
    pub link: IssuerLink,
    /// The vault's data key, when the config has a `[vault]`: the signing keys are sealed
    /// under it at rest.
    pub sealer: Option<crate::vault::Sealer>,
}

impl std::fmt::Debug for OwnIssuerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnIssuerSettings")
            .field("name", &self.name)
            .field("listener", &self.listener)
            .field("issuer", &self.issuer)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The issuer's request paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub token: Box<str>,
    pub revoke: Box<str>,
    pub introspect: Box<str>,
    pub jwks: Box<str>,
    pub metadata: Box<str>,
    /// `https://host[:port]`: endpoint URLs in the metadata are this plus a path.
    pub origin: Box<str>,
}

impl OwnIssuerSettings {
    /// Whether `path` is one of the issuer's endpoints.
    pub fn handles(&self, path: &str) -> bool {
        let p = &self.paths;
        [&p.token, &p.revoke, &p.introspect, &p.jwks, &p.metadata]
            .iter()
            .any(|e| ***e == *path)
    }

    /// This issuer as the gateway's verifier trusts it: its `iss`, its one audience, and the
    /// public keys the issuer pushes (updated on every rotation).
    pub fn verifier_source(&self) -> IssuerSettings {
        IssuerSettings {
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            audiences: vec![self.audience.clone()],
            leeway: OWN_LEEWAY,
            // The longest access token the issuer can be set to issue.
            max_lifetime: MAX_ACCESS_TTL,
            keys: KeySource::Pushed(self.link.keys().clone()),
        }
    }
}

/// Validate `[issuer]`, reporting each problem at its key path. Whether `listener` names a
/// configured listener, and clashes with `[[token_issuers]]`, are checked by the caller,
/// which knows them.
pub fn validate(section: &IssuerSection, r: &mut Report) -> Option<OwnIssuerSettings> {
    let before = r.errors.len();
    let name = match section.name.as_deref() {
        None => Some(Arc::<str>::from("portcullis")),
        Some(n) if is_label(n) => Some(Arc::<str>::from(n)),
        Some(n) => {
            r.error(
                "issuer.name",
                format!("\"{n}\" must be 1-64 characters of A-Z a-z 0-9 _ . -"),
            );
            None
        }
    };
    let listener = match section.listener.as_deref() {
        None | Some("") => {
            r.error(
                "issuer.listener",
                "missing: the name of the listener that serves the token endpoint",
            );
            None
        }
        Some(l) => Some(Arc::<str>::from(l)),
    };
    let prefix = match section.path_prefix.as_deref() {
        None => Some(Box::<str>::from("/")),
        Some(p) => crate::routing::normalize_prefix(p)
            .map_err(|why| r.error("issuer.path_prefix", format!("\"{p}\" {why}")))
            .ok(),
    };
    let issuer = section.issuer.as_deref().and_then(|i| match issuer_url(i) {
        Ok(parts) => Some((i.to_owned(), parts)),
        Err(why) => {
            r.error("issuer.issuer", format!("\"{i}\" {why}"));
            None
        }
    });
    if section.issuer.is_none() {
        r.error(
            "issuer.issuer",
            "missing: the issuer URL minted tokens carry as `iss` (e.g. \"https://gw.example.com\")",
        );
    }
    let store = store_path(r, section.store.as_deref());
    let algorithm = match section.algorithm.as_deref() {
        None => Some(SigningAlg::ES256),
        Some(a) => SigningAlg::parse(a).or_else(|| {
            r.error(
                "issuer.algorithm",
                format!("\"{a}\" is not a signing algorithm: use \"ES256\" or \"EdDSA\""),
            );
            None
        }),
    };
    let ttl = |r: &mut Report, key: &str, v: &Option<String>, default, min, max| {
        ttl_within(r, &format!("issuer.{key}"), v.as_deref(), default, min, max)
    };
    let access = ttl(
        r,
        "access_token_ttl",
        &section.access_token_ttl,
        Duration::from_secs(600),
        MIN_ACCESS_TTL,
        MAX_ACCESS_TTL,
    );
    let refresh = ttl(
        r,
        "refresh_token_ttl",
        &section.refresh_token_ttl,
        30 * DAY,
        Duration::from_secs(3600),
        365 * DAY,
    );
    let idle = ttl(
        r,
        "refresh_idle_ttl",
        &section.refresh_idle_ttl,
        7 * DAY,
        Duration::from_secs(60),
        365 * DAY,
    );
    if let (Some(refresh), Some(idle)) = (refresh, idle)
        && idle > refresh
    {
        r.error(
            "issuer.refresh_idle_ttl",
            "is longer than refresh_token_ttl, so it would never apply",
        );
    }
    let audience = match section.audience.as_deref() {
        None => Some("portcullis".to_owned()),
        Some("") => {
            r.error("issuer.audience", "empty audience");
            None
        }
        Some(a) => Some(a.to_owned()),
    };
    let (name, listener, prefix, (issuer, (origin, issuer_path)), store, algorithm) =
        (name?, listener?, prefix?, issuer?, store?, algorithm?);
    let (access, refresh, idle, audience) = (access?, refresh?, idle?, audience?);
    if r.errors.len() != before {
        return None;
    }
    let under = |p: &str| {
        if &*prefix == "/" {
            p.to_owned()
        } else {
            format!("{prefix}{p}")
        }
    };
    let paths = Paths {
        token: under("/oauth2/token").into(),
        revoke: under("/oauth2/revoke").into(),
        introspect: under("/oauth2/introspect").into(),
        jwks: "/.well-known/jwks.json".into(),
        metadata: format!("/.well-known/oauth-authorization-server{issuer_path}").into(),
        origin: origin.into(),
    };
    Some(OwnIssuerSettings {
        name,
        listener,
        path_prefix: prefix,
        issuer,
        store,
        algorithm,
        access_token_ttl: access,
        refresh_token_ttl: refresh,
        refresh_idle_ttl: idle,
        audience,
        paths,
        link: IssuerLink::default(),
        sealer: None,
    })
}

/// `(origin, path)` of an issuer URL: https, a host, no user info, query or fragment (RFC
/// 8414 section 2). The path has no trailing slash (empty for none).
fn issuer_url(s: &str) -> Result<(String, String), &'static str> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| "is not a URL (write e.g. \"https://gw.example.com\")")?;
    if uri.scheme_str() != Some("https") {
        return Err("must be an https URL (RFC 8414)");
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err("must name a host without user info");
    }
    if uri.query().is_some() || s.contains('#') {
        return Err("must not have a query or fragment (RFC 8414)");
    }
    let path = uri.path().trim_end_matches('/').to_owned();
    Ok((format!("https://{authority}"), path))
}

/// The store file: required; its folder must exist.
fn store_path(r: &mut Report, v: Option<&str>) -> Option<PathBuf> {
    let Some(s) = v.filter(|s| !s.is_empty()) else {
        r.error(
            "issuer.store",
            "missing: the issuer's database file (e.g. \"/var/lib/portcullis/issuer.redb\")",
        );
        return None;
    };
    let path = r.resolve(s);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if path.is_dir() {
        r.error(
            "issuer.store",
            format!("{} is a folder; name a file in it", path.display()),
        );
        return None;
    }
    if let Some(d) = dir.filter(|d| !d.is_dir()) {
        r.error(
            "issuer.store",
            format!("the folder {} does not exist", d.display()),
        );
        return None;
    }
    Some(path)
}

/// A duration within `[min, max]`, `default` when absent; `None` (reported) when wrong.
pub(crate) fn ttl_within(
    r: &mut Report,
    key: &str,
    v: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Option<Duration> {
    let Some(v) = v else {
        return Some(default);
    };
    match parse_ttl(v, min, max) {
        Ok(d) => Some(d),
        Err(why) => {
            r.error(key, why);
            None
        }
    }
}

/// A duration such as "10m" within `[min, max]`; the error completes nothing, it is whole.
pub fn parse_ttl(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    match humantime::parse_duration(v) {
        Ok(d) if d < min || d > max => Err(format!(
            "\"{v}\" is out of range: {} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        )),
        Ok(d) => Ok(d),
        Err(_) => Err(format!(
            "\"{v}\" is not a duration (write e.g. \"10m\", \"7d\")"
        )),
    }
}

/// Names that are safe as metric labels, log fields and client ids.
pub(crate) fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
