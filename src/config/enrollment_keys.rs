//! `[enrollment]`'s keys: the CA certificate and key that sign machines' certificates, and
//! the license signing key, loaded and checked (a pair, a CA, not readable by others,
//! trusted by `[licenses]`). Moved out of `enrollment.rs`, which validates the rest.

use std::path::Path;
use std::sync::Arc;

use super::enrollment::{CaIssuer, Context, EnrollmentSection};
use crate::license::SigningKey;
use crate::report::Report;

/// The CA certificate and its key, proven to be a pair, as an rcgen issuer.
pub(super) fn ca(s: &EnrollmentSection, r: &mut Report) -> Option<(Arc<[u8]>, Arc<CaIssuer>)> {
    let cert = read(r, "enrollment.ca_cert", s.ca_cert.as_deref(), false);
    let key = read(r, "enrollment.ca_key", s.ca_key.as_deref(), true);
    let (cert, key) = (cert?, key?);
    let der: rustls_pki_types::CertificateDer<'static> =
        match rustls_pki_types::pem::PemObject::from_pem_slice(cert.as_bytes()) {
            Ok(der) => der,
            Err(e) => {
                r.error("enrollment.ca_cert", format!("not a PEM certificate: {e}"));
                return None;
            }
        };
    let spki = match x509_parser::parse_x509_certificate(&der) {
        Ok((_, c)) => {
            if !c.is_ca() {
                r.error(
                    "enrollment.ca_cert",
                    "not a CA certificate (basicConstraints cA is not set)",
                );
                return None;
            }
            c.tbs_certificate.subject_pki.raw.to_vec()
        }
        Err(e) => {
            r.error(
                "enrollment.ca_cert",
                format!("the certificate does not parse: {e}"),
            );
            return None;
        }
    };
    let pair = match rcgen::KeyPair::from_pem(&key) {
        Ok(p) => p,
        Err(e) => {
            r.error(
                "enrollment.ca_key",
                format!("not a PEM private key this gateway can sign with: {e}"),
            );
            return None;
        }
    };
    if rcgen::PublicKeyData::subject_public_key_info(&pair) != spki {
        r.error("enrollment.ca_key", "is not the key of enrollment.ca_cert");
        return None;
    }
    match rcgen::Issuer::from_ca_cert_der(&der, pair) {
        Ok(issuer) => Some((Arc::from(der.as_ref()), Arc::new(issuer))),
        Err(e) => {
            r.error(
                "enrollment.ca_cert",
                format!("cannot sign with this CA: {e}"),
            );
            None
        }
    }
}

/// The text of the file `key` names; a private key must not be readable by group or others.
fn read(
    r: &mut Report,
    key: &str,
    v: Option<&str>,
    private: bool,
) -> Option<zeroize::Zeroizing<String>> {
    let Some(v) = v else {
        r.error(key, "required: a PEM file");
        return None;
    };
    let path = r.resolve(v);
    if private && let Some(why) = readable_by_others(&path) {
        r.error(key, why);
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(t) => Some(zeroize::Zeroizing::new(t)),
        Err(e) => {
            r.error(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Why a private key file is exposed, if it is: group or others may read it.
fn readable_by_others(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            return Some(format!(
                "{} is readable by group or others (mode {:o}): chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

pub(super) fn license_key(
    s: &EnrollmentSection,
    cx: &Context<'_>,
    r: &mut Report,
) -> Option<Arc<SigningKey>> {
    let Some(p) = s.license_key.as_deref() else {
        r.error(
            "enrollment.license_key",
            "required: the license signing key (`portcullis license keygen` writes it)",
        );
        return None;
    };
    let path = r.resolve(p);
    if let Some(why) = readable_by_others(&path) {
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
