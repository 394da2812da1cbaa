//! Client identity: who is calling, by certificate. Digested once per connection from the
//! verified peer certificate, then only compared.

mod headers;
mod pins;

use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub use headers::{IdentityHeaderNames, IdentityHeaders, IdentityValues};
pub use pins::{
    PinParseError, PinSet, format_fingerprint, format_spki_pin, parse_fingerprint, parse_spki_pin,
};

/// What the peer certificate says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// SHA-256 of the DER SubjectPublicKeyInfo: the key, whatever certificate carries it.
    pub spki_sha256: [u8; 32],
    /// SHA-256 of the whole DER certificate.
    pub cert_sha256: [u8; 32],
    /// The full subject as an RFC 4514 string (`CN=agent-7,O=Acme`).
    pub subject: String,
    pub common_name: Option<String>,
    pub organization: Option<String>,
    /// DNS names, IP addresses, e-mail addresses and URIs from the SAN extension.
    pub sans: Vec<String>,
    /// Serial number, lower-case hex with no separators.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The identity stage: the connection's certificate must satisfy `pins` (a listener's or a
/// route's). The digest was made once at handshake; this is one hash-set lookup.
pub fn check(
    pins: &PinSet,
    identity: Option<&ClientIdentity>,
) -> Result<(), crate::denial::Denial> {
    if pins.admits(identity) {
        Ok(())
    } else {
        Err(crate::denial::Denial::ClientCertNotPinned)
    }
}

/// The certificate could not be read (only possible for a certificate the TLS layer let
/// through without parsing it, which rustls does not do; handled all the same).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the client certificate is not valid X.509: {0}")]
pub struct IdentityError(String);

impl ClientIdentity {
    /// Digest an end-entity certificate (DER).
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError(e.to_string()))?;
        let first = |it: &mut dyn Iterator<
            Item = &x509_parser::x509::AttributeTypeAndValue<'_>,
        >| { it.next().and_then(|a| a.as_str().ok()).map(str::to_owned) };
        let subject = cert.subject();
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for n in &ext.value.general_names {
                match n {
                    GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                    GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                    GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                    GeneralName::IPAddress(b) => {
                        if let Some(ip) = ip_from_bytes(b) {
                            sans.push(format!("IP:{ip}"));
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        Ok(ClientIdentity {
            spki_sha256: sha256(cert.public_key().raw),
            cert_sha256: sha256(der),
            subject: subject.to_string(),
            common_name: first(&mut subject.iter_common_name()),
            organization: first(&mut subject.iter_organization()),
            sans,
            serial: cert
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            not_before: unix_to_system(validity.not_before.timestamp()),
            not_after: unix_to_system(validity.not_after.timestamp()),
        })
    }

    /// The SPKI pin in the HPKP / curl `--pinnedpubkey` form: `sha256/<base64>`.
    pub fn spki_pin(&self) -> String {
        format_spki_pin(&self.spki_sha256)
    }

    /// The certificate fingerprint as colon-separated upper-case hex (the `openssl x509
    /// -fingerprint -sha256` form).
    pub fn fingerprint(&self) -> String {
        format_fingerprint(&self.cert_sha256)
    }
}

/// A subject in the form identities compare: RFC 4514 attributes with no space around the
/// separators and upper-case attribute types, so `cn=ops, O=Example` written in a config
/// matches the `CN=ops,O=Example` a certificate carries. Values keep their case.
pub fn subject_key(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    let mut rest = subject;
    while !rest.is_empty() {
        // A separator is a ',' not escaped by a backslash.
        let mut end = rest.len();
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                ',' if !escaped => {
                    end = i;
                    break;
                }
                _ => escaped = false,
            }
        }
        let part = rest[..end].trim();
        if !out.is_empty() {
            out.push(',');
        }
        match part.split_once('=') {
            Some((kind, value)) => {
                out.push_str(&kind.trim().to_ascii_uppercase());
                out.push('=');
                out.push_str(value.trim());
            }
            None => out.push_str(part),
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    out
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Base64 (standard alphabet, padded), as used by SPKI pins.
pub(crate) fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// What `portcullis pin FILE` prints: per certificate in the PEM file, its subject, SPKI
/// pin, fingerprint and validity, ready to paste into `pins` or `cert_fingerprints`.
pub fn describe_pem_file(path: &std::path::Path) -> Result<String, crate::tls::TlsFileError> {
    use std::fmt::Write;
    let certs = crate::tls::load_certs(path)?;
    let mut out = String::new();
    for (i, der) in certs.iter().enumerate() {
        let id = ClientIdentity::from_der(der.as_ref()).map_err(|e| {
            crate::tls::TlsFileError::BadCertificate {
                path: path.to_path_buf(),
                reason: e.0,
            }
        })?;
        let secs = |t: SystemTime| match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(_) => 0,
        };
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "subject:      {}", id.subject);
        let _ = writeln!(out, "spki pin:     {}", id.spki_pin());
        let _ = writeln!(out, "fingerprint:  {}", id.fingerprint());
        let _ = writeln!(out, "serial:       {}", id.serial);
        let _ = writeln!(
            out,
            "valid:        {} to {}",
            crate::tls::rfc3339(secs(id.not_before)),
            crate::tls::rfc3339(secs(id.not_after))
        );
        if !id.sans.is_empty() {
            let _ = writeln!(out, "names:        {}", id.sans.join(", "));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    #[test]
    fn subject_key_ignores_spacing_and_attribute_case_but_keeps_escaped_commas() {
        assert_eq!(subject_key("cn=ops , o=Example"), "CN=ops,O=Example");
        assert_eq!(subject_key(r"CN=Doe\, Jane,O=X"), r"CN=Doe\, Jane,O=X");
        assert_ne!(subject_key("CN=ops"), subject_key("CN=Ops"));
        assert_eq!(subject_key(""), "");
    }

    #[test]
    fn identity_carries_subject_sans_serial_and_the_spki_pin_of_the_key() {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec![
            "agent-7.example.com".to_owned(),
            "10.1.2.3".to_owned(),
        ])
        .expect("params");
        p.distinguished_name.push(DnType::CommonName, "agent-7");
        p.distinguished_name.push(DnType::OrganizationName, "Acme");
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0xab]));
        let cert = p.self_signed(&key).expect("cert");
        let id = ClientIdentity::from_der(cert.der()).expect("identity");
        assert_eq!(id.common_name.as_deref(), Some("agent-7"));
        assert_eq!(id.organization.as_deref(), Some("Acme"));
        assert!(id.subject.contains("CN=agent-7"), "{}", id.subject);
        assert_eq!(id.sans, ["DNS:agent-7.example.com", "IP:10.1.2.3"]);
        assert_eq!(id.serial, "01ab");
        // A subject written in a config matches the certificate's however it is spaced.
        assert_eq!(
            subject_key(&id.subject),
            subject_key("cn=agent-7 ,  O=Acme")
        );
        // The SPKI pin is the hash of the key alone: a second certificate for the same key pins the same.
        let again = CertificateParams::new(vec!["other".to_owned()])
            .expect("p")
            .self_signed(&key)
            .expect("c");
        let id2 = ClientIdentity::from_der(again.der()).expect("identity");
        assert_eq!(id.spki_sha256, id2.spki_sha256);
        assert_ne!(id.cert_sha256, id2.cert_sha256);
        assert_eq!(
            id.spki_sha256,
            sha256(&rcgen::PublicKeyData::subject_public_key_info(&key))
        );
        assert!(id.spki_pin().starts_with("sha256/"));
    }

    #[test]
    fn garbage_is_not_an_identity() {
        assert!(ClientIdentity::from_der(b"not a certificate").is_err());
    }
}
