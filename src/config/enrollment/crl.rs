//! `[enrollment] crl_lifetime` and `crl_file`: the certificate revocation list the gateway
//! signs with the enrollment CA, serves at `/.well-known/est/crl` and may write for other
//! servers.
//!
//! ```toml
//! [enrollment]
//! crl_lifetime = "1h"                # default 1h, 5m to 7d: next_update = this_update + it
//! crl_file = "/var/lib/portcullis/enroll.crl"   # optional: the PEM CRL, rewritten atomically
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::report::Report;

const MIN_LIFETIME: Duration = Duration::from_secs(300);
const MAX_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The CRL's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSettings {
    /// `next_update - this_update`; the CRL is rebuilt when half of it has passed.
    pub lifetime: Duration,
    /// Where the PEM CRL is written, if anywhere.
    pub file: Option<PathBuf>,
    /// The CA may sign CRLs (no key usage, or one with cRLSign). Without it, nothing is
    /// published; revoked keys are still refused by the gateway's own listeners.
    pub signed: bool,
}

/// Validate the CRL keys; `ca_der` is the enrollment CA certificate (when it loaded).
pub fn validate(
    lifetime: Option<&str>,
    file: Option<&str>,
    ca_der: Option<&[u8]>,
    r: &mut Report,
) -> Option<CrlSettings> {
    let lifetime = match lifetime {
        None => Some(DEFAULT_LIFETIME),
        Some(v) => match crate::config::issuer::parse_ttl(v, MIN_LIFETIME, MAX_LIFETIME) {
            Ok(d) => Some(d),
            Err(why) => {
                r.error("enrollment.crl_lifetime", why);
                None
            }
        },
    };
    let file = match file {
        None => Some(None),
        Some("") => {
            r.error("enrollment.crl_file", "empty: name a file, or leave it out");
            None
        }
        Some(p) => file_to_write(r, "enrollment.crl_file", p).map(Some),
    };
    let signed = ca_der.is_none_or(can_sign_crls);
    if !signed {
        let why = "the enrollment CA's key usage has no cRLSign, so the gateway cannot sign a \
                   CRL with it";
        if file.as_ref().is_some_and(Option::is_some) {
            r.error("enrollment.crl_file", why);
            return None;
        }
        r.warn(
            "enrollment.ca_cert",
            format!(
                "{why}: /.well-known/est/crl answers 404 (the gateway's own listeners still \
                 refuse revoked certificates)"
            ),
        );
    }
    Some(CrlSettings {
        lifetime: lifetime?,
        file: file?,
        signed,
    })
}

/// Whether the CA certificate allows signing CRLs (RFC 5280 4.2.1.3: without the extension,
/// every use is allowed).
fn can_sign_crls(der: &[u8]) -> bool {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => match c.key_usage() {
            Ok(Some(ku)) => ku.value.crl_sign(),
            Ok(None) => true,
            Err(_) => false,
        },
        Err(_) => false,
    }
}

/// The file `p` names (relative to the config), which the gateway creates or rewrites: its
/// folder must exist and it must not be a folder itself.
pub(super) fn file_to_write(r: &mut Report, key: &str, p: &str) -> Option<PathBuf> {
    let path = r.resolve(p);
    match path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        Some(d) => {
            r.error(key, format!("the folder {} does not exist", d.display()));
            None
        }
        None if path.is_dir() => {
            r.error(
                key,
                format!("{} is a folder; name a file in it", path.display()),
            );
            None
        }
        None => Some(path),
    }
}
