//! Request framing: refuse any request whose length two parsers could disagree on.
//!
//! hyper already refuses differing Content-Length values and a Transfer-Encoding that does
//! not end in chunked. It accepts Content-Length together with Transfer-Encoding (dropping
//! the length before we see the request), which is what request smuggling through a chain
//! of proxies relies on; [`scanner`] watches the raw bytes below hyper to catch it, and
//! once a connection has sent such a head every request on it is refused.

pub mod head;
pub mod scanner;

use http::{HeaderMap, header};

use crate::denial::Denial;

/// The framing stage. `ambiguous`: the connection has already sent a head whose framing
/// the scanner below hyper found ambiguous.
pub fn check(ambiguous: bool, h: &HeaderMap) -> Result<(), Denial> {
    if ambiguous {
        return Err(Denial::AmbiguousFraming);
    }
    check_headers(h)
}

/// What to do with a client header whose name has an underscore. CGI, WSGI, Rack and PHP
/// hand `X_Client_Cert` and `X-Client-Cert` to the application as one variable, so such a
/// name can impersonate a header the gateway writes.
///
/// # Default
/// `Drop`, like nginx's `underscores_in_headers off`. Whatever the setting, a name that
/// folds (`_` to `-`, any case) onto a header the gateway writes is always removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnderscoreHeaders {
    /// Remove such headers before forwarding.
    #[default]
    Drop,
    /// Refuse the request with 400 `invalid_header`.
    Refuse,
    /// Forward them (except names that fold onto the gateway's own).
    Allow,
}

impl UnderscoreHeaders {
    /// The setting for a config value; `None` for anything else.
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "drop" => Some(UnderscoreHeaders::Drop),
            "refuse" => Some(UnderscoreHeaders::Refuse),
            "allow" => Some(UnderscoreHeaders::Allow),
            _ => None,
        }
    }
}

/// Refuse a header name with an underscore when the gateway is set to.
pub fn check_header_names(h: &HeaderMap, setting: UnderscoreHeaders) -> Result<(), Denial> {
    if setting == UnderscoreHeaders::Refuse && h.keys().any(|k| k.as_str().contains('_')) {
        return Err(Denial::InvalidHeader);
    }
    Ok(())
}

/// What the headers alone show (all that is left to check on HTTP/2).
fn check_headers(h: &HeaderMap) -> Result<(), Denial> {
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok(());
    };
    if h.contains_key(header::TRANSFER_ENCODING) {
        return Err(Denial::AmbiguousFraming);
    }
    let first = single_length(first.as_bytes())?;
    for other in lengths {
        if single_length(other.as_bytes())? != first {
            return Err(Denial::AmbiguousFraming);
        }
    }
    Ok(())
}

/// A Content-Length value: digits, or a comma list of equal digit strings (RFC 9110 8.6).
fn single_length(v: &[u8]) -> Result<u64, Denial> {
    let mut value = None;
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(Denial::AmbiguousFraming);
        }
        let n = std::str::from_utf8(part)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(Denial::AmbiguousFraming)?;
        match value {
            Some(prev) if prev != n => return Err(Denial::AmbiguousFraming),
            _ => value = Some(n),
        }
    }
    value.ok_or(Denial::AmbiguousFraming)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn framing_table() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], true),
            (&[("content-length", "5")], true),
            (&[("transfer-encoding", "chunked")], true),
            (&[("content-length", "5"), ("content-length", "5")], true),
            (&[("content-length", "5, 5")], true),
            (
                &[("content-length", "5"), ("transfer-encoding", "chunked")],
                false,
            ),
            (&[("content-length", "5"), ("content-length", "6")], false),
            (&[("content-length", "5, 6")], false),
            (&[("content-length", "+5")], false),
            (&[("content-length", "")], false),
            (&[("content-length", "99999999999999999999999")], false),
        ];
        for (pairs, ok) in cases {
            assert_eq!(check_headers(&headers(pairs)).is_ok(), *ok, "{pairs:?}");
        }
    }
}
