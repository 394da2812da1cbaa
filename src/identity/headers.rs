//! The client's certificate identity, passed to upstreams in headers. Client-sent copies
//! of those headers are removed from every request, whether or not it has an identity,
//! so nobody can claim an identity through us.

use http::{HeaderName, HeaderValue};

use super::ClientIdentity;
use crate::report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Subject,
    CommonName,
    Spki,
    Fingerprint,
    Serial,
}

/// `[identity_headers]` as written: each field's header name (`None`: the default; `""`:
/// turned off).
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityHeaderNames<'a> {
    pub subject: Option<&'a str>,
    pub common_name: Option<&'a str>,
    pub spki: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub serial: Option<&'a str>,
}

/// Which headers carry which part of the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    names: Vec<(HeaderName, Field)>,
    /// Removed from every client request: the configured names and every default name,
    /// since an upstream may still read a default that was renamed or turned off.
    scrub: Vec<HeaderName>,
}

/// Headers that must never be taken over: they carry framing, routing or our own facts.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
];

impl Default for IdentityHeaders {
    fn default() -> Self {
        let names = default_names();
        IdentityHeaders {
            scrub: names.iter().map(|(n, _)| n.clone()).collect(),
            names,
        }
    }
}

fn default_names() -> Vec<(HeaderName, Field)> {
    vec![
        (
            HeaderName::from_static("x-client-cert-subject"),
            Field::Subject,
        ),
        (
            HeaderName::from_static("x-client-cert-cn"),
            Field::CommonName,
        ),
        (HeaderName::from_static("x-client-cert-spki"), Field::Spki),
        (
            HeaderName::from_static("x-client-cert-fingerprint"),
            Field::Fingerprint,
        ),
        (
            HeaderName::from_static("x-client-cert-serial"),
            Field::Serial,
        ),
    ]
}

impl IdentityHeaders {
    /// The configured names, one per field as written under `[identity_headers]` (`None`:
    /// the default name; `""`: turned off), problems reported at their keys.
    pub fn from_names(s: &IdentityHeaderNames<'_>, r: &mut Report) -> Self {
        let defaults = IdentityHeaders::default();
        let mut names: Vec<(HeaderName, Field)> = Vec::new();
        let mut keys: Vec<&str> = Vec::new();
        for (key, value, field) in [
            ("subject", s.subject, Field::Subject),
            ("common_name", s.common_name, Field::CommonName),
            ("spki", s.spki, Field::Spki),
            ("fingerprint", s.fingerprint, Field::Fingerprint),
            ("serial", s.serial, Field::Serial),
        ] {
            let name = match value {
                None => match defaults.names.iter().find(|(_, f)| *f == field) {
                    Some((n, _)) => n.clone(),
                    None => continue,
                },
                Some("") => continue,
                Some(v) => match HeaderName::from_bytes(v.as_bytes()) {
                    Ok(n) if RESERVED.contains(&n.as_str()) || n.as_str().starts_with("proxy-") => {
                        r.error(
                            format!("identity_headers.{key}"),
                            format!("\"{v}\" is a header the gateway manages itself; choose another name"),
                        );
                        continue;
                    }
                    Ok(n) => n,
                    Err(_) => {
                        r.error(
                            format!("identity_headers.{key}"),
                            format!("\"{v}\" is not a valid header name"),
                        );
                        continue;
                    }
                },
            };
            // Defaults count too: renaming one field onto another's default name would
            // send two values under one header.
            if let Some(i) = names.iter().position(|(o, _)| *o == name) {
                r.error(
                    format!("identity_headers.{key}"),
                    format!(
                        "\"{name}\" is already the header of identity_headers.{}; give one of them another name (or \"\" to turn it off)",
                        keys[i]
                    ),
                );
                continue;
            }
            names.push((name, field));
            keys.push(key);
        }
        let mut scrub = defaults.scrub;
        for (n, _) in &names {
            if !scrub.contains(n) {
                scrub.push(n.clone());
            }
        }
        IdentityHeaders { names, scrub }
    }

    /// Every name removed from client requests (configured and default).
    pub fn scrubbed(&self) -> impl Iterator<Item = &HeaderName> + Clone {
        self.scrub.iter()
    }

    /// Each configured header with its value for `v` (a field the certificate lacks, such
    /// as a CN, is left out).
    pub fn values<'a>(
        &'a self,
        v: &'a IdentityValues,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
        self.names.iter().filter_map(move |(name, field)| {
            let value = match field {
                Field::Subject => Some(&v.subject),
                Field::CommonName => v.common_name.as_ref(),
                Field::Spki => Some(&v.spki),
                Field::Fingerprint => Some(&v.fingerprint),
                Field::Serial => Some(&v.serial),
            };
            value.map(|value| (name, value))
        })
    }
}

/// Header values of one identity, made once per connection; cloning one per request is a
/// reference-count increment.
#[derive(Debug, Clone)]
pub struct IdentityValues {
    subject: HeaderValue,
    common_name: Option<HeaderValue>,
    spki: HeaderValue,
    fingerprint: HeaderValue,
    serial: HeaderValue,
}

impl IdentityValues {
    pub fn new(id: &ClientIdentity) -> Self {
        IdentityValues {
            subject: safe_value(&id.subject),
            common_name: id.common_name.as_deref().map(safe_value),
            spki: safe_value(&id.spki_pin()),
            fingerprint: safe_value(&id.fingerprint()),
            serial: safe_value(&id.serial),
        }
    }
}

/// A header value from certificate text: control characters (which could split headers)
/// are percent-encoded; UTF-8 passes as bytes.
fn safe_value(s: &str) -> HeaderValue {
    let mut out = Vec::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b < 0x20 || b == 0x7f || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_certificate_text_cannot_split_headers() {
        assert_eq!(safe_value("CN=a\r\nX-Evil: 1"), "CN=a%0D%0AX-Evil: 1");
        assert_eq!(
            safe_value("O=Müller"),
            HeaderValue::from_bytes("O=Müller".as_bytes()).unwrap_or(HeaderValue::from_static(""))
        );
    }
}
