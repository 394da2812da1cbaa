//! The canonical request host: decided once, used for routing, forwarded as the upstream's
//! Host.
//!
//! DNS and HTTP servers treat `Secure.Example.COM.:443` and `secure.example.com` as one
//! name; routing must too, or a spelling misses the protected `host = ...` route, falls to a
//! host-less open one, and the upstream serves the protected virtual host behind it. So: lower
//! case, port dropped, one trailing root dot dropped; refused (400 `invalid_host`): userinfo,
//! characters outside a host name or IP literal, empty labels, a malformed port.

use std::borrow::Cow;

use http::HeaderValue;

/// Why a host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("userinfo ('@') in the host")]
    Userinfo,
    #[error("a character outside a host name or IP literal")]
    Character,
    #[error("an empty label ('..', a leading '.')")]
    EmptyLabel,
    #[error("a port that is not a number")]
    Port,
}

/// A host as the gateway routes on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalHost<'a> {
    /// Lower case, no port, no trailing dot; IPv6 literals keep their brackets.
    pub name: Cow<'a, str>,
    /// The port as sent, if any (digits only).
    pub port: Option<&'a str>,
    /// `name` and `port` spell exactly the input: the client's header can be forwarded as is.
    pub unchanged: bool,
}

impl CanonicalHost<'_> {
    /// The Host header for the upstream: the client's own header value when it was
    /// canonical (no copy), else the canonical spelling with the port the client gave.
    pub fn header(&self, sent: Option<&HeaderValue>) -> Option<HeaderValue> {
        if let (true, Some(sent)) = (self.unchanged, sent) {
            return Some(sent.clone());
        }
        let text = match self.port {
            Some(p) => format!("{}:{p}", self.name),
            None => self.name.clone().into_owned(),
        };
        HeaderValue::from_str(&text).ok()
    }
}

/// The canonical form of a Host header value or request-target authority.
pub fn canonical(raw: &str) -> Result<CanonicalHost<'_>, HostError> {
    if raw.starts_with('[') {
        return ip_literal(raw);
    }
    // One pass over a host name and its port: letters, digits, '-' and '_' (internal names
    // carry underscores) in non-empty labels, at most one trailing root dot.
    let b = raw.as_bytes();
    let (mut label_empty, mut upper, mut end) = (true, false, b.len());
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'.' if label_empty => return Err(HostError::EmptyLabel),
            b'.' => label_empty = true,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label_empty = false,
            b'A'..=b'Z' => (label_empty, upper) = (false, true),
            b'@' => return Err(HostError::Userinfo),
            b':' => {
                end = i;
                break;
            }
            _ => return Err(HostError::Character),
        }
    }
    let host = &raw[..end];
    // "example.com." ends on an empty label after its root dot; "" and "." never had one.
    let trimmed = match host.strip_suffix('.') {
        Some(t) if label_empty && !t.is_empty() => t,
        _ if label_empty => return Err(HostError::EmptyLabel),
        _ => host,
    };
    if trimmed.len() > 253 {
        return Err(HostError::Character);
    }
    let port = match raw.get(end + 1..) {
        None => None,
        Some(p) => {
            if !p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(if p.contains('@') {
                    HostError::Userinfo
                } else {
                    HostError::Port
                });
            }
            Some(p)
        }
    };
    let name = if upper {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    };
    Ok(CanonicalHost {
        name,
        port,
        unchanged: !upper && trimmed.len() == host.len(),
    })
}

/// `[v6]` or `[v6]:port`.
fn ip_literal(raw: &str) -> Result<CanonicalHost<'_>, HostError> {
    if raw.contains('@') {
        return Err(HostError::Userinfo);
    }
    // The port's colon is the one after the closing bracket.
    let end = raw.find(']').ok_or(HostError::Character)?;
    let (host, port) = match &raw[end + 1..] {
        "" => (raw, None),
        rest => match rest.strip_prefix(':') {
            Some(port) => (&raw[..=end], Some(port)),
            None => return Err(HostError::Character),
        },
    };
    if let Some(p) = port
        && !p.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(HostError::Port);
    }
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .ok_or(HostError::Character)?;
    if inner.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(HostError::Character);
    }
    let name = lower(host);
    let unchanged = matches!(name, Cow::Borrowed(_));
    Ok(CanonicalHost {
        name,
        port,
        unchanged,
    })
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> Result<String, HostError> {
        canonical(raw).map(|h| h.name.into_owned())
    }

    #[test]
    fn spellings_of_one_host_fold_to_one_name() {
        for raw in [
            "secure.example.com",
            "secure.example.com.",
            "SECURE.Example.com",
            "secure.example.com:443",
            "Secure.Example.Com.:8443",
            "secure.example.com:",
        ] {
            assert_eq!(name(raw), Ok("secure.example.com".into()), "{raw}");
        }
        assert_eq!(name("[::1]:8443"), Ok("[::1]".into()));
        assert_eq!(name("[2001:DB8::1]"), Ok("[2001:db8::1]".into()));
        assert_eq!(name("127.0.0.1:80"), Ok("127.0.0.1".into()));
        assert_eq!(name("svc_a.internal"), Ok("svc_a.internal".into()));
    }

    #[test]
    fn malformed_hosts_are_refused() {
        for (raw, why) in [
            ("user@secure.example.com", HostError::Userinfo),
            ("a:b@secure.example.com", HostError::Userinfo),
            ("secure.example.com..", HostError::EmptyLabel),
            (".secure.example.com", HostError::EmptyLabel),
            ("secure..example.com", HostError::EmptyLabel),
            (".", HostError::EmptyLabel),
            ("", HostError::EmptyLabel),
            ("secure.example.com:44x", HostError::Port),
            ("secure.example.com:1:2", HostError::Port),
            ("sec ure.example.com", HostError::Character),
            ("secure.example.com%2e", HostError::Character),
            ("secure.example.com/x", HostError::Character),
            ("[::1", HostError::Character),
            ("[not-v6]", HostError::Character),
            ("[::1]x", HostError::Character),
        ] {
            assert_eq!(name(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn the_forwarded_host_is_the_canonical_spelling_with_the_port() {
        let sent = HeaderValue::from_static("Secure.Example.com.:8443");
        let h = canonical("Secure.Example.com.:8443").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            h.header(Some(&sent)),
            Some(HeaderValue::from_static("secure.example.com:8443"))
        );
        let sent = HeaderValue::from_static("api.example.com:8443");
        let h = canonical("api.example.com:8443").unwrap_or_else(|e| panic!("{e}"));
        assert!(h.unchanged);
        assert_eq!(
            h.header(Some(&sent)),
            Some(HeaderValue::from_static("api.example.com:8443"))
        );
    }

    proptest::proptest! {
        /// Any input is refused or folds to a name that is its own canonical form: lower
        /// case, no port, no trailing dot.
        #[test]
        fn canonical_hosts_are_fixed_points(raw in "[a-zA-Z0-9._@:\\[\\]%-]{0,24}") {
            if let Ok(h) = canonical(&raw) {
                let again = canonical(&h.name).map(|a| a.name.into_owned());
                proptest::prop_assert_eq!(again, Ok(h.name.to_string()));
                proptest::prop_assert!(!h.name.bytes().any(|b| b.is_ascii_uppercase()));
                proptest::prop_assert!(!h.name.ends_with('.'));
            }
        }
    }
}
