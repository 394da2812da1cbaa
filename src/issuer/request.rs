//! Reading an OAuth request: the body (form or JSON, at most 16 KiB), the client's
//! credentials (HTTP Basic, form fields, or its certificate), and the error responses of RFC
//! 6749 section 5.2.
//!
//! Parameters hold secrets (`client_secret`, `refresh_token`, `token`), so nothing here is
//! Debug-printable with its values.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use serde_json::{Value, json};

/// Largest request body read; a token request is a few hundred bytes.
pub const MAX_BODY: usize = 16 * 1024;

// === Errors ===

/// An RFC 6749 section 5.2 error response (and 413, 429, 405, 500 in the same shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    /// A fixed, safe text: never echoes input.
    pub description: &'static str,
    pub retry_after: Option<Duration>,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        OAuthError {
            status,
            code,
            description,
            retry_after: None,
        }
    }
    pub fn invalid_request(d: &'static str) -> Self {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    /// 401 with a Basic challenge (RFC 6749 5.2), whichever method the client tried.
    pub fn invalid_client() -> Self {
        OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }
    pub fn invalid_grant(d: &'static str) -> Self {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    pub fn invalid_scope() -> Self {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the requested scope is not granted to this client",
        )
    }
    pub fn unsupported_grant_type() -> Self {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "supported: client_credentials, refresh_token",
        )
    }
    pub fn throttled(retry_after: Duration) -> Self {
        OAuthError {
            retry_after: Some(retry_after),
            ..OAuthError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "too many failed authentication attempts; retry later",
            )
        }
    }
    pub fn too_large() -> Self {
        OAuthError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is larger than 16 KiB",
        )
    }
    pub fn method_not_allowed() -> Self {
        OAuthError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "method not allowed",
        )
    }
    pub fn server_error() -> Self {
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the issuer could not complete the request",
        )
    }

    /// The shared store did not answer: try again shortly (never a wrong answer).
    pub fn state_unavailable() -> Self {
        OAuthError {
            retry_after: Some(Duration::from_secs(1)),
            ..OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state_unavailable",
                "the issuer's store is unavailable; try again shortly",
            )
        }
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        let body = json!({"error": self.code, "error_description": self.description});
        let mut resp = json_response(self.status, &body);
        let h = resp.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis\""),
            );
        }
        if let Some(after) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        resp
    }
}

/// A JSON response that no cache keeps (RFC 6749 5.1: tokens and errors alike).
pub fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec(body).unwrap_or_default();
    text.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

// === Parameters ===

/// The request's parameters, each at most once (RFC 6749 3.2).
#[derive(Default)]
pub struct Params(Vec<(String, String)>);

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn new(pairs: Vec<(String, String)>) -> Result<Params, OAuthError> {
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(o, _)| o == k) {
                return Err(OAuthError::invalid_request("a parameter is repeated"));
            }
        }
        Ok(Params(pairs))
    }
}

/// Read the body of `req` as form (`application/x-www-form-urlencoded`) or JSON
/// (`application/json`, an object of strings) parameters.
pub async fn read_params<B>(
    req: http::Request<B>,
) -> Result<(http::request::Parts, Params), OAuthError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(OAuthError::too_large()),
        Err(_) => {
            return Err(OAuthError::invalid_request(
                "the request body could not be read",
            ));
        }
    };
    let essence = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let pairs = match essence.as_deref() {
        Some("application/x-www-form-urlencoded") => parse_form(&bytes).ok_or(
            OAuthError::invalid_request("the form body is not valid URL encoding"),
        )?,
        Some("application/json") => parse_json(&bytes)?,
        None if bytes.is_empty() => Vec::new(),
        _ => {
            return Err(OAuthError::invalid_request(
                "send application/x-www-form-urlencoded or application/json",
            ));
        }
    };
    Ok((parts, Params::new(pairs)?))
}

/// `application/x-www-form-urlencoded` (WHATWG URL, section 5.1): `&`-separated pairs, `+`
/// for space, `%XX` escapes. Stricter than browsers: a bad escape or invalid UTF-8 is an
/// error rather than replaced, so a secret is never silently altered. Hand-written: it is
/// twenty lines, and neither `url` nor `serde_urlencoded` is in the tree.
pub fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        out.push((form_decode(k)?, form_decode(v)?));
    }
    Some(out)
}

/// Decode one form-encoded component.
pub fn form_decode(s: &[u8]) -> Option<String> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex(*s.get(i + 1)?)?;
                let lo = hex(*s.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

pub(super) fn parse_json(body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    // serde_json refuses nothing about duplicate keys in a Map (the last wins), so read
    // pairs in order and let `Params::new` refuse repeats.
    let bad = || OAuthError::invalid_request("the JSON body must be an object of string values");
    let value: Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let Value::Object(map) = value else {
        return Err(bad());
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        match v {
            Value::String(s) => out.push((k, s)),
            // `"scope": ["a", "b"]` is what a JSON client may naturally send.
            Value::Array(items) if k == "scope" => {
                let scopes: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
                out.push((k, scopes.ok_or_else(bad)?.join(" ")));
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

// === Client credentials ===

/// How the client says who it is.
pub enum Credentials {
    /// `client_secret_basic` or `client_secret_post`.
    Secret {
        id: String,
        secret: String,
        method: &'static str,
    },
    /// `tls_client_auth`: `client_id` in the body, proof by the connection's certificate.
    Certificate { id: String },
}

impl Credentials {
    pub fn id(&self) -> &str {
        match self {
            Credentials::Secret { id, .. } | Credentials::Certificate { id } => id,
        }
    }
    pub fn method(&self) -> &'static str {
        match self {
            Credentials::Secret { method, .. } => method,
            Credentials::Certificate { .. } => "tls_client_auth",
        }
    }
}

/// The credentials of a request, or why there are none usable. One method per request (RFC
/// 6749 2.3): a secret in both the header and the body is refused.
pub fn credentials(
    headers: &HeaderMap,
    params: &Params,
    has_certificate: bool,
) -> Result<Credentials, OAuthError> {
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = auth.next() {
        if auth.next().is_some() {
            return Err(OAuthError::invalid_request("several Authorization headers"));
        }
        let (id, secret) = basic(value).ok_or_else(OAuthError::invalid_client)?;
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the authenticated client",
            ));
        }
        return Ok(Credentials::Secret {
            id,
            secret,
            method: "client_secret_basic",
        });
    }
    match (body_id, body_secret) {
        (Some(id), Some(secret)) => Ok(Credentials::Secret {
            id: id.to_owned(),
            secret: secret.to_owned(),
            method: "client_secret_post",
        }),
        (Some(id), None) if has_certificate => Ok(Credentials::Certificate { id: id.to_owned() }),
        _ => Err(OAuthError::invalid_client()),
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 2.3.1).
fn basic(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let id = form_decode(&decoded[..colon])?;
    let secret = form_decode(&decoded[colon + 1..])?;
    (!id.is_empty()).then_some((id, secret))
}

/// Space-separated scope tokens (RFC 6749 3.3), deduplicated in order; `Err` for a
/// character a scope may not have.
pub fn scope_list(s: &str) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    for t in s.split(' ').filter(|t| !t.is_empty()) {
        if !crate::token::is_scope_token(t) {
            return Err(OAuthError::invalid_scope());
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}
