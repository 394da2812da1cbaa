//! A credential the gateway injects into requests to a route's upstream, built at load from
//! a vault record: a header whose value is marked sensitive (HTTP/2 never indexes it, `Debug`
//! never prints it), or a query parameter. The client's own `Authorization` is removed first,
//! or kept under another name, so the upstream never mistakes it for the gateway's.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Where the credential goes.
#[derive(Clone, PartialEq, Eq)]
pub enum Inject {
    /// This header, replacing any value the client sent.
    Header(HeaderName, HeaderValue),
    /// This query parameter (name and value percent-encoded), replacing any of the client's.
    Query { name: Box<str>, value: Box<str> },
    /// `Authorization: Bearer` with a token the gateway obtains by the OAuth2 client
    /// credentials grant: the running token source at this index of the snapshot's.
    OAuth2 { source: usize },
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The vault record's name (for logs: never its value).
    pub record: Box<str>,
    pub inject: Inject,
    /// Keep the client's `Authorization` under this name instead of dropping it.
    pub client_authorization: Option<HeaderName>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let to = match &self.inject {
            Inject::Header(name, _) => format!("header {name}"),
            Inject::Query { name, .. } => format!("query {name}"),
            Inject::OAuth2 { source } => format!("oauth2 token source {source}"),
        };
        write!(f, "Credential({} -> {to}, <redacted>)", self.record)
    }
}

impl Credential {
    /// The header part: the client's `Authorization` moved or removed, then the credential
    /// header set (an OAuth2 token is set by the upstream side, which holds the token).
    pub fn apply(&self, h: &mut HeaderMap) {
        let client = h.remove(header::AUTHORIZATION);
        if let (Some(keep), Some(v)) = (&self.client_authorization, client) {
            h.insert(keep.clone(), v);
        }
        if let Inject::Header(name, value) = &self.inject {
            h.insert(name.clone(), value.clone());
        }
    }

    /// The OAuth2 token source this credential draws from, if it is one.
    pub fn token_source(&self) -> Option<usize> {
        match self.inject {
            Inject::OAuth2 { source } => Some(source),
            _ => None,
        }
    }

    /// The query with the credential's parameter in place of any the client sent, when it
    /// goes in the query.
    pub fn query(&self, query: Option<&str>) -> Option<String> {
        let Inject::Query { name, value } = &self.inject else {
            return None;
        };
        let mut out = String::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if key != &**name {
                out.push_str(pair);
                out.push('&');
            }
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
        Some(out)
    }
}

/// Percent-encode `b` for a query component (RFC 3986 unreserved characters pass).
pub fn encode_query(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_cred(keep: Option<&str>) -> Credential {
        let mut v = HeaderValue::from_static("sk_live_1");
        v.set_sensitive(true);
        Credential {
            record: "erp".into(),
            inject: Inject::Header(HeaderName::from_static("x-api-key"), v),
            client_authorization: keep.map(|k| HeaderName::from_bytes(k.as_bytes()).unwrap()),
        }
    }

    #[test]
    fn the_client_authorization_goes_or_moves_and_the_credential_replaces_any_client_copy() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        h.insert("x-api-key", HeaderValue::from_static("forged"));
        header_cred(None).apply(&mut h);
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert_eq!(h.get_all("x-api-key").iter().count(), 1);
        assert_eq!(h["x-api-key"], "sk_live_1");

        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        header_cred(Some("x-client-authorization")).apply(&mut h);
        assert_eq!(h["x-client-authorization"], "Bearer client");
    }

    #[test]
    fn a_query_credential_replaces_the_clients_parameter_of_the_same_name() {
        let c = Credential {
            record: "shop".into(),
            inject: Inject::Query {
                name: "api_key".into(),
                value: encode_query(b"a b&c").into(),
            },
            client_authorization: None,
        };
        assert_eq!(
            c.query(Some("page=2&api_key=forged&q=x")).as_deref(),
            Some("page=2&q=x&api_key=a%20b%26c")
        );
        assert_eq!(c.query(None).as_deref(), Some("api_key=a%20b%26c"));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let text = format!("{:?}", header_cred(None));
        assert!(!text.contains("sk_live_1"), "{text}");
    }
}
