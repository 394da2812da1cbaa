//! The enrollment CA: its certificate from a file, its private key from a file (mode 0600)
//! or from a `private_key` record of the vault (`ca_key_vault`, sealed at rest), proven to
//! be a pair.

use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{CaIssuer, Context, EnrollmentSection};
use crate::report::Report;
use crate::vault::Kind;

const KEY_FILE: &str = "enrollment.ca_key";
const KEY_RECORD: &str = "enrollment.ca_key_vault";

/// The CA certificate and its key, proven to be a pair, as an rcgen issuer.
pub(super) fn ca(
    s: &EnrollmentSection,
    cx: &Context<'_>,
    r: &mut Report,
) -> Option<(Arc<[u8]>, Arc<CaIssuer>)> {
    let cert = read(r, "enrollment.ca_cert", s.ca_cert.as_deref(), false);
    let key = key(s, cx, r);
    let (cert, (at, key)) = (cert?, key?);
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
                at,
                format!("not a PEM private key this gateway can sign with: {e}"),
            );
            return None;
        }
    };
    if rcgen::PublicKeyData::subject_public_key_info(&pair) != spki {
        r.error(at, "is not the key of enrollment.ca_cert");
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

/// The CA's PEM private key and the key path that named it: exactly one of a file and a
/// vault record.
fn key(
    s: &EnrollmentSection,
    cx: &Context<'_>,
    r: &mut Report,
) -> Option<(&'static str, Zeroizing<String>)> {
    match (s.ca_key.as_deref(), s.ca_key_vault.as_deref()) {
        (Some(_), Some(_)) => {
            r.error(
                KEY_RECORD,
                "name one of ca_key (a PEM file) and ca_key_vault (a vault record), not both",
            );
            None
        }
        (None, None) => {
            r.error(
                KEY_FILE,
                "required: a PEM file, or ca_key_vault = \"RECORD\" for a key sealed in the vault",
            );
            None
        }
        (Some(file), None) => Some((KEY_FILE, read(r, KEY_FILE, Some(file), true)?)),
        (None, Some(name)) => Some((KEY_RECORD, from_vault(name, cx, r)?)),
    }
}

/// The PEM text of vault record `name`, which must be a `private_key`.
fn from_vault(name: &str, cx: &Context<'_>, r: &mut Report) -> Option<Zeroizing<String>> {
    let Some(vault) = cx.vault else {
        // A [vault] that does not open is reported at vault.* already.
        if !cx.vault_section {
            r.error(
                KEY_RECORD,
                "needs a [vault] section (file and master key source) to read the record from",
            );
        }
        return None;
    };
    let (kind, secret) = match vault.get(name) {
        Ok(found) => found,
        Err(e) => {
            r.error(KEY_RECORD, e.to_string());
            return None;
        }
    };
    if kind != Kind::PrivateKey {
        r.error(
            KEY_RECORD,
            format!(
                "the record \"{name}\" is of kind {}: store the CA key as a private_key \
                 (portcullis vault set {name} --kind private_key ... < enroll-ca.key)",
                kind.label()
            ),
        );
        return None;
    }
    match std::str::from_utf8(secret.expose()) {
        Ok(text) => Some(Zeroizing::new(text.to_owned())),
        Err(_) => {
            r.error(
                KEY_RECORD,
                format!("the record \"{name}\" is not a PEM private key (not text)"),
            );
            None
        }
    }
}

/// The text of the file `key` names; a private key must not be readable by group or others.
fn read(r: &mut Report, key: &str, v: Option<&str>, private: bool) -> Option<Zeroizing<String>> {
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
        Ok(t) => Some(Zeroizing::new(t)),
        Err(e) => {
            r.error(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Why a private key file is exposed, if it is: group or others may read it.
pub(super) fn readable_by_others(path: &Path) -> Option<String> {
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
