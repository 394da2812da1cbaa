//! The `[enrollment]` config section, validated into [`EnrollmentSettings`]: the CA that signs
//! enrolled machines' certificates (`ca.rs`: a key file or a vault record), the license key
//! that signs their licenses, the CRL (`crl.rs`), and the templates those licenses are made
//! from (`templates.rs`).
//!
//! ```toml
//! [enrollment]
//! listener = "public"                # serves /.well-known/est/*
//! ca_cert = "enroll-ca.pem"
//! ca_key = "enroll-ca.key"           # mode 0600 (not readable by group or others), or
//! # ca_key_vault = "enroll-ca"        # a private_key record of [vault] (sealed at rest)
//! cert_lifetime = "7d"               # default 7d, 1h to 90d
//! key_types = ["ecdsa-p256", "ecdsa-p384", "ed25519"]   # the default
//! tokens = "/var/lib/portcullis/enroll.redb"
//! license_key = "keys/license.key"   # as `portcullis license keygen` writes it
//! overlap = "1h"                     # default 1h, at most 7d
//! crl_lifetime = "1h"                # see `crl.rs`; crl_file optional
//!
//! [[enrollment.templates]]
//! name = "agent"
//! routes = ["orders"]                # empty or absent: every licensed route
//! license_lifetime = "30d"           # default 30d, 1h to 3650d
//! quota = "100000/day"               # optional
//! customer = "Acme"                  # default: the template's name
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

mod ca;
pub mod crl;
mod templates;

use crate::license::SigningKey;
use crate::report::Report;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// Enrolled certificates are short-lived: a machine renews, a stolen one ages out.
pub const MAX_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// A machine's old certificate stays licensed this long at most after a re-enrollment.
pub const MAX_OVERLAP: Duration = Duration::from_secs(7 * 86_400);
const MAX_LICENSE_LIFETIME: Duration = Duration::from_secs(3650 * 86_400);

/// `[enrollment]` as written.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentSection {
    /// The listener that answers `/.well-known/est/*`. Required.
    pub listener: Option<String>,
    /// PEM certificate of the enrollment CA. Required.
    pub ca_cert: Option<String>,
    /// PEM private key file of the enrollment CA (PKCS#8), not readable by others; or
    /// `ca_key_vault`: exactly one of them.
    pub ca_key: Option<String>,
    /// The vault record (kind `private_key`) holding the CA's PEM private key.
    pub ca_key_vault: Option<String>,
    /// Lifetime of an enrolled certificate. Default "7d", 1h to 90d.
    pub cert_lifetime: Option<String>,
    /// CSR key types accepted. Default ECDSA P-256, P-384 and Ed25519.
    pub key_types: Option<Vec<String>>,
    /// The redb file of enrollment tokens (their hashes). Required.
    pub tokens: Option<String>,
    /// The license signing key (`portcullis license keygen`'s `.key`). Required; its public
    /// half must be one of `[licenses] trusted_keys`.
    pub license_key: Option<String>,
    /// After a re-enrollment, how long the old certificate stays licensed. Default "1h".
    pub overlap: Option<String>,
    /// The CRL's `next_update - this_update`. Default "1h", 5m to 7d.
    pub crl_lifetime: Option<String>,
    /// Where the PEM CRL is written (atomically), for other servers. Optional.
    pub crl_file: Option<String>,
    /// What an enrolled machine's license grants, by name.
    #[serde(default)]
    pub templates: Vec<TemplateSection>,
}

/// `[[enrollment.templates]]` as written.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSection {
    pub name: Option<String>,
    /// Route names; empty or absent: every licensed route.
    pub routes: Option<Vec<String>>,
    /// Default "30d".
    pub license_lifetime: Option<String>,
    /// `100000/day` (as a license's quota is written).
    pub quota: Option<String>,
    /// The license's `customer`. Default: the template's name.
    pub customer: Option<String>,
}

/// A CSR key type the gateway may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyType {
    pub const ALL: [KeyType; 6] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];
    pub const DEFAULT: [KeyType; 3] = [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Ed25519];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    pub fn parse(s: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One validated template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub routes: Vec<String>,
    pub license_lifetime: Duration,
    pub quota: Option<String>,
    pub customer: String,
}

/// The enrollment CA as rcgen signs with it.
pub type CaIssuer = rcgen::Issuer<'static, rcgen::KeyPair>;

/// `[enrollment]`, validated: the CA and the license key are loaded and proven to work.
#[derive(Clone)]
pub struct EnrollmentSettings {
    pub listener: Arc<str>,
    /// The CA certificate (DER), served by `/cacerts`.
    pub ca_cert_der: Arc<[u8]>,
    /// Signs enrolled certificates.
    pub ca: Arc<CaIssuer>,
    pub cert_lifetime: Duration,
    pub key_types: Vec<KeyType>,
    pub tokens: PathBuf,
    pub license_key: Arc<SigningKey>,
    pub overlap: Duration,
    pub templates: Vec<Template>,
    pub crl: crl::CrlSettings,
    /// The keys of revoked and retired certificates, refused in the handshake of every
    /// listener asking for client certificates; filled by the running enrollment.
    pub revoked: Arc<crate::tls::RevokedKeys>,
    /// `[admin] audit_log`, resolved once here so an enrollment appends to it without
    /// reading the config again.
    pub audit_log: Option<PathBuf>,
}

impl std::fmt::Debug for EnrollmentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentSettings")
            .field("listener", &self.listener)
            .field("tokens", &self.tokens)
            .field("license_key", &self.license_key)
            .finish_non_exhaustive()
    }
}

impl EnrollmentSettings {
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.name == name)
    }
}

/// What validation needs from the rest of the file.
pub struct Context<'a> {
    pub listeners: &'a std::collections::HashSet<&'a str>,
    pub routes: &'a [&'a str],
    pub trusted: Option<&'a crate::license::TrustedKeys>,
    /// The opened `[vault]`, for `ca_key_vault`.
    pub vault: Option<&'a crate::vault::Vault>,
    /// Whether the file has a `[vault]` section (it may be there and not open).
    pub vault_section: bool,
}

/// Validate `[enrollment]`, reporting each problem at its key path.
pub fn validate(
    s: &EnrollmentSection,
    cx: &Context<'_>,
    r: &mut Report,
) -> Option<EnrollmentSettings> {
    let before = r.errors.len();
    let listener = match s.listener.as_deref() {
        None => {
            r.error(
                "enrollment.listener",
                "required: the listener that serves /.well-known/est/*",
            );
            None
        }
        Some(l) if !cx.listeners.contains(l) => {
            r.error(
                "enrollment.listener",
                format!("no listener is named \"{l}\""),
            );
            None
        }
        Some(l) => Some(Arc::<str>::from(l)),
    };
    let ca = ca::ca(s, cx, r);
    let cert_lifetime = bounded(
        r,
        "enrollment.cert_lifetime",
        s.cert_lifetime.as_deref(),
        7 * DAY,
        (HOUR, MAX_CERT_LIFETIME),
    );
    let overlap = bounded(
        r,
        "enrollment.overlap",
        s.overlap.as_deref(),
        HOUR,
        (Duration::ZERO, MAX_OVERLAP),
    );
    let key_types = match &s.key_types {
        None => KeyType::DEFAULT.to_vec(),
        Some(list) if list.is_empty() => {
            r.error("enrollment.key_types", "empty: no CSR could be accepted");
            Vec::new()
        }
        Some(list) => {
            let mut out = Vec::new();
            for (i, k) in list.iter().enumerate() {
                match KeyType::parse(k) {
                    Some(t) if !out.contains(&t) => out.push(t),
                    Some(_) => r.error(
                        format!("enrollment.key_types[{i}]"),
                        format!("\"{k}\" is listed twice"),
                    ),
                    None => r.error(
                        format!("enrollment.key_types[{i}]"),
                        format!(
                            "\"{k}\" is not a key type (one of {})",
                            KeyType::ALL
                                .map(|t| format!("\"{}\"", t.as_str()))
                                .join(", ")
                        ),
                    ),
                }
            }
            out
        }
    };
    let tokens = match s.tokens.as_deref() {
        None | Some("") => {
            r.error("enrollment.tokens", "required: the redb file of enrollment tokens (e.g. \"/var/lib/portcullis/enroll.redb\")");
            None
        }
        Some(p) => crl::file_to_write(r, "enrollment.tokens", p),
    };
    let license_key = license_key(s, cx, r);
    let templates = templates::templates(s, cx, r);
    let crl = crl::validate(
        s.crl_lifetime.as_deref(),
        s.crl_file.as_deref(),
        ca.as_ref().map(|(der, _)| &**der),
        r,
    );
    if r.errors.len() > before {
        return None;
    }
    let (ca_cert_der, ca) = ca?;
    Some(EnrollmentSettings {
        listener: listener?,
        ca_cert_der,
        ca,
        cert_lifetime: cert_lifetime?,
        key_types,
        tokens: tokens?,
        license_key: license_key?,
        overlap: overlap?,
        templates,
        crl: crl?,
        revoked: Default::default(),
        audit_log: None,
    })
}

/// A duration in `range` (inclusive), `default` when absent.
fn bounded(
    r: &mut Report,
    key: &str,
    v: Option<&str>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Option<Duration> {
    let Some(v) = v else {
        return Some(default);
    };
    match super::issuer::parse_ttl(v, min, max) {
        Ok(d) => Some(d),
        Err(why) => {
            r.error(key, why);
            None
        }
    }
}

fn license_key(s: &EnrollmentSection, cx: &Context<'_>, r: &mut Report) -> Option<Arc<SigningKey>> {
    let Some(p) = s.license_key.as_deref() else {
        r.error(
            "enrollment.license_key",
            "required: the license signing key (`portcullis license keygen` writes it)",
        );
        return None;
    };
    let path = r.resolve(p);
    if let Some(why) = ca::readable_by_others(&path) {
        r.error("enrollment.license_key", why);
        return None;
    }
    let key = match SigningKey::load(&path) {
        Ok(k) => k,
        Err(e) => {
            r.error("enrollment.license_key", e.to_string());
            return None;
        }
    };
    match cx.trusted {
        None => {
            r.error(
                "enrollment",
                "needs a [licenses] section: enrolled machines get licenses",
            );
            None
        }
        Some(t) if t.get(key.public_key().kid()).is_none() => {
            r.error(
                "enrollment.license_key",
                format!(
                    "its public key (key id {}) is not one of [licenses] trusted_keys: its licenses would be refused",
                    key.public_key().kid()
                ),
            );
            None
        }
        Some(_) => Some(Arc::new(key)),
    }
}
