//! The bearer credential (RFC 6750): read from the one Authorization header, never from the
//! query string or a form body; and the refusals, with their `WWW-Authenticate` challenges.

use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};

pub use crate::denial::TokenDenial;

use super::scopes::RouteAuth;

/// Tokens longer than this are refused before any parsing or hashing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

impl TokenDenial {
    /// The RFC 6750 challenge. Built from the route's requirement only: never from the token.
    pub fn www_authenticate(&self, required: &RouteAuth) -> HeaderValue {
        match self {
            // 3.1: no error code when the request carried no bearer credential.
            TokenDenial::Missing => HeaderValue::from_static("Bearer"),
            TokenDenial::Invalid => HeaderValue::from_static("Bearer error=\"invalid_token\""),
            TokenDenial::Expired => HeaderValue::from_static(
                "Bearer error=\"invalid_token\", error_description=\"the token has expired\"",
            ),
            TokenDenial::InsufficientScope => insufficient_scope(required),
        }
    }
}

/// `scope` lists what the route needs; when some are alternatives the description says which.
/// Route scopes are validated scope-tokens (no quote, backslash or control byte), so they are
/// safe inside the quoted string.
fn insufficient_scope(required: &RouteAuth) -> HeaderValue {
    const PLAIN: &str = "Bearer error=\"insufficient_scope\"";
    let (all_of, any_of) = match required {
        RouteAuth::Bearer { all_of, any_of, .. } => (all_of, any_of),
        RouteAuth::None => return HeaderValue::from_static(PLAIN),
    };
    let mut v = String::from(PLAIN);
    let listed: Vec<&str> = all_of.iter().chain(any_of).map(String::as_str).collect();
    if !listed.is_empty() {
        v.push_str(", scope=\"");
        v.push_str(&listed.join(" "));
        v.push('"');
    }
    if !any_of.is_empty() {
        v.push_str(", error_description=\"requires ");
        if !all_of.is_empty() {
            v.push_str("all of: ");
            v.push_str(&all_of.join(" "));
            v.push_str("; and ");
        }
        v.push_str("one of: ");
        v.push_str(&any_of.join(" "));
        v.push('"');
    }
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(PLAIN))
}

/// The token from `Authorization: Bearer <token>`, as bytes: a cache hit needs no more (a
/// token in the cache was checked to be base64url when verified); the shape check on a miss
/// refuses anything else.
///
/// - no header, or another scheme (`Basic ...`): `Missing`
/// - several Authorization headers: `Invalid` (which one would count is ambiguous)
/// - `Bearer` with nothing after it, over 8 KiB: `Invalid`
/// - the scheme is case-insensitive (RFC 9110 11.1): `bearer x` is accepted
pub(crate) fn extract(headers: &HeaderMap) -> Result<&[u8], TokenDenial> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(TokenDenial::Missing)?;
    if values.next().is_some() {
        return Err(TokenDenial::Invalid);
    }
    // Checked before anything reads the value: a 1 MiB header costs a length comparison.
    if value.len() > MAX_TOKEN_BYTES + 64 {
        return Err(TokenDenial::Invalid);
    }
    let value = value.as_bytes().trim_ascii();
    let split = value.iter().position(|b| *b == b' ' || *b == b'\t');
    let (scheme, rest) = value.split_at(split.unwrap_or(value.len()));
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(TokenDenial::Missing);
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(TokenDenial::Invalid);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                AUTHORIZATION,
                HeaderValue::from_str(v).expect("header value"),
            );
        }
        h
    }

    #[test]
    fn each_authorization_shape_is_missing_invalid_or_a_token() {
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let at_limit = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
        // (Authorization values, what extract makes of them)
        type Case<'a> = (&'a [&'a str], Result<&'a [u8], TokenDenial>);
        let cases: &[Case] = &[
            (&[], Err(TokenDenial::Missing)),
            (&["Basic dXNlcjpwYXNz"], Err(TokenDenial::Missing)),
            (&["Bearerx abc"], Err(TokenDenial::Missing)),
            (&["Bearer"], Err(TokenDenial::Invalid)),
            (&["Bearer    "], Err(TokenDenial::Invalid)),
            (&["Bearer a.b.c", "Bearer d.e.f"], Err(TokenDenial::Invalid)),
            (&[&long], Err(TokenDenial::Invalid)),
            (&["Bearer a.b.c"], Ok(&b"a.b.c"[..])),
            (&["bearer a.b.c"], Ok(&b"a.b.c"[..])),
            (&["BEARER \t  a.b.c  "], Ok(&b"a.b.c"[..])),
        ];
        for (values, want) in cases {
            let h = headers(values);
            let got = extract(&h);
            assert_eq!(got, *want, "{:.40?}", values);
        }
        let h = headers(&[&at_limit]);
        assert_eq!(extract(&h).map(<[u8]>::len), Ok(MAX_TOKEN_BYTES));
    }

    #[test]
    fn non_ascii_tokens_fail_the_shape_check() {
        let mut h = HeaderMap::new();
        let v =
            HeaderValue::from_bytes(b"Bearer a.\xffb.c").expect("obs-text is a valid header value");
        h.insert(AUTHORIZATION, v);
        let token = extract(&h).expect("a bearer credential");
        assert!(crate::token::verify::split(token).is_err());
    }

    #[test]
    fn challenges_follow_rfc_6750_and_list_the_route_scopes() {
        let route = RouteAuth::Bearer {
            issuers: None,
            all_of: vec!["orders:read".into()],
            any_of: vec!["eu".into(), "us".into()],
        };
        assert_eq!(TokenDenial::Missing.www_authenticate(&route), "Bearer");
        assert_eq!(
            TokenDenial::Invalid.www_authenticate(&route),
            "Bearer error=\"invalid_token\""
        );
        assert!(
            TokenDenial::Expired
                .www_authenticate(&route)
                .to_str()
                .unwrap_or_default()
                .starts_with("Bearer error=\"invalid_token\"")
        );
        assert_eq!(
            TokenDenial::InsufficientScope.www_authenticate(&route),
            "Bearer error=\"insufficient_scope\", scope=\"orders:read eu us\", \
             error_description=\"requires all of: orders:read; and one of: eu us\""
        );
        let simple = RouteAuth::Bearer {
            issuers: None,
            all_of: vec!["a".into(), "b".into()],
            any_of: vec![],
        };
        assert_eq!(
            TokenDenial::InsufficientScope.www_authenticate(&simple),
            "Bearer error=\"insufficient_scope\", scope=\"a b\""
        );
    }

    #[test]
    fn statuses_and_reasons() {
        let all = [
            TokenDenial::Missing,
            TokenDenial::Invalid,
            TokenDenial::Expired,
            TokenDenial::InsufficientScope,
        ];
        let got: Vec<_> = all
            .iter()
            .map(|d| (d.status().as_u16(), d.reason()))
            .collect();
        assert_eq!(
            got,
            [
                (401, "token_missing"),
                (401, "token_invalid"),
                (401, "token_expired"),
                (403, "insufficient_scope")
            ]
        );
    }
}
