//! Every way a request can be refused, each with exactly one status, one stable reason (the
//! JSON `error` and the metric label) and nothing else: no internal address, no detail an
//! attacker could use. The matches are exhaustive on purpose, so a new denial cannot ship
//! without its status and reason.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::request_id::RequestId;

/// A fieldless enum and `ALL`, its every variant, from one list: a new variant is in `ALL`
/// (and so gets its metric series) by being declared.
macro_rules! listed {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident),+ $(,)? }) => {
        $(#[$m])* pub enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
        }
    };
}

/// [`Denial`] and `Denial::all()` from one list: a variant that wraps a stage's refusal
/// contributes every value of it.
macro_rules! denials {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident $(($inner:ty))?),+ $(,)? }) => {
        $(#[$m])* pub enum $name { $($(#[$vm])* $v $(($inner))?),+ }
        impl $name {
            /// Every denial, each wrapped refusal expanded: one metric series each.
            pub fn all() -> Vec<$name> {
                std::iter::empty()
                    $( .chain(denials!(@each $name::$v $(, $inner)?)) )+
                    .collect()
            }
        }
    };
    (@each $path:path) => { std::iter::once($path) };
    (@each $path:path, $inner:ty) => { <$inner>::ALL.iter().map(|i| $path(*i)) };
}

denials! {
/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Content-Length with Transfer-Encoding, or differing Content-Length values: a request
    /// smuggling attempt or a broken client.
    #[error("ambiguous request framing")]
    AmbiguousFraming,
    /// A request head hyper would refuse (too large, too many headers, a syntax error, an
    /// unknown transfer coding): answered by the gateway in its own shape, before hyper
    /// sees it, and the connection closed.
    #[error("{}", .0.reason())]
    Head(HeadRefusal),
    /// The path has dot segments or encoded separators an upstream could read differently.
    #[error("invalid request path")]
    InvalidPath,
    /// The Host (or request-target authority) is malformed, has userinfo, is missing or
    /// repeated on HTTP/1.1, or differs from `:authority` on HTTP/2.
    #[error("invalid host")]
    InvalidHost,
    /// The host the request names is not one the listener serves (its certificates' names
    /// or its `hosts`), or not the name the client asked TLS for (SNI).
    #[error("misdirected request")]
    MisdirectedRequest,
    /// A header name has an underscore and the gateway is set to refuse those
    /// (`underscores_in_headers = "refuse"`).
    #[error("invalid header")]
    InvalidHeader,
    /// The client's body broke off or was malformed (bad chunk size, ended early): the
    /// client's fault, never counted against the upstream.
    #[error("bad request body")]
    BadRequestBody,
    /// A trusted proxy sent an X-Forwarded-For or Forwarded header we cannot read.
    #[error("bad forwarded header")]
    BadForwardedHeader,
    /// The client certificate (or its absence) does not match the listener's or route's pins.
    #[error("client certificate not pinned")]
    ClientCertNotPinned,
    /// The client address is denied, or not allowed, by the listener or the route.
    #[error("ip not allowed")]
    IpNotAllowed,
    /// The route needs a machine license and none grants (each reason its own).
    #[error("{}", .0.reason())]
    License(LicenseDenial),
    /// The route needs a bearer token: missing, invalid or expired (401), or without the
    /// route's scopes (403).
    #[error("{}", .0.reason())]
    Token(TokenDenial),
    /// Over one of the route's rate limits (429, with `Retry-After` and the RateLimit
    /// headers).
    #[error("rate limited")]
    RateLimited(LimitHit),
    /// A quota (the route's, or the one the machine license carries) is used up for this
    /// window (429, with `Retry-After` at the window's turn and the RateLimit headers).
    #[error("quota exhausted")]
    QuotaExhausted(LimitHit),
    /// Over one of the route's in-flight caps (503; nothing queues).
    #[error("too many in flight")]
    TooManyInFlight(InFlightHit),
    /// A WebSocket upgrade on a route without `websocket = true`.
    #[error("websocket not allowed")]
    WebSocketNotAllowed,
    /// No route matches host and path.
    #[error("no route")]
    NoRoute,
    /// A route matches host and path but not the method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is larger than the route's `max_body_bytes`.
    #[error("payload too large")]
    PayloadTooLarge,
    /// No target accepted a connection, or the upstream broke the exchange.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The TLS handshake with the upstream failed (certificate, name, pin, or the upstream
    /// refused ours); the reason is in the log and the metric, never in the response.
    #[error("upstream tls failed")]
    UpstreamTlsFailed,
    /// The upstream did not send a response head within `response_timeout` (or the
    /// whole request took longer than the upstream's `deadline`).
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// Health checks found no target of the upstream healthy (`all_down = "fail"`).
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// Every connection a target may have (`max_connections`) is busy and `max_pending`
    /// requests wait already: the circuit breaker.
    #[error("upstream overloaded")]
    UpstreamOverloaded,
    /// The route injects an OAuth2 credential and no token could be had from the token
    /// endpoint; the reason is in the log, never in the response.
    #[error("upstream credentials unavailable")]
    UpstreamCredentialsUnavailable,
    /// The fleet's shared state (Redis) cannot answer and this concern is set to fail
    /// closed: a refusal rather than a wrong answer. The reason is in the log and metrics.
    #[error("state unavailable")]
    StateUnavailable,
}
}

impl Denial {
    pub fn status(self) -> StatusCode {
        match self {
            Denial::AmbiguousFraming => StatusCode::BAD_REQUEST,
            Denial::Head(h) => h.status(),
            Denial::InvalidPath => StatusCode::BAD_REQUEST,
            Denial::InvalidHost => StatusCode::BAD_REQUEST,
            Denial::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            Denial::InvalidHeader => StatusCode::BAD_REQUEST,
            Denial::BadRequestBody => StatusCode::BAD_REQUEST,
            Denial::BadForwardedHeader => StatusCode::BAD_REQUEST,
            Denial::ClientCertNotPinned => StatusCode::FORBIDDEN,
            Denial::IpNotAllowed => StatusCode::FORBIDDEN,
            Denial::License(_) => StatusCode::FORBIDDEN,
            Denial::Token(d) => d.status(),
            Denial::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Denial::QuotaExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            Denial::TooManyInFlight(_) => StatusCode::SERVICE_UNAVAILABLE,
            Denial::WebSocketNotAllowed => StatusCode::FORBIDDEN,
            Denial::NoRoute => StatusCode::NOT_FOUND,
            Denial::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Denial::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Denial::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Denial::UpstreamTlsFailed => StatusCode::BAD_GATEWAY,
            Denial::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Denial::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            Denial::UpstreamOverloaded => StatusCode::SERVICE_UNAVAILABLE,
            Denial::UpstreamCredentialsUnavailable => StatusCode::BAD_GATEWAY,
            Denial::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Stable machine reason: the JSON `error` and the metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::AmbiguousFraming => "ambiguous_framing",
            Denial::Head(h) => h.reason(),
            Denial::InvalidPath => "invalid_path",
            Denial::InvalidHost => "invalid_host",
            Denial::MisdirectedRequest => "misdirected_request",
            Denial::InvalidHeader => "invalid_header",
            Denial::BadRequestBody => "bad_request_body",
            Denial::BadForwardedHeader => "bad_forwarded_header",
            Denial::ClientCertNotPinned => "client_cert_not_pinned",
            Denial::IpNotAllowed => "ip_not_allowed",
            Denial::License(d) => d.reason(),
            Denial::Token(d) => d.reason(),
            Denial::RateLimited(_) => "rate_limited",
            Denial::QuotaExhausted(_) => "quota_exhausted",
            Denial::TooManyInFlight(_) => "too_many_in_flight",
            Denial::WebSocketNotAllowed => "websocket_not_allowed",
            Denial::NoRoute => "no_route",
            Denial::MethodNotAllowed => "method_not_allowed",
            Denial::PayloadTooLarge => "payload_too_large",
            Denial::UpstreamUnavailable => "upstream_unavailable",
            Denial::UpstreamTlsFailed => "upstream_tls_failed",
            Denial::UpstreamTimeout => "upstream_timeout",
            Denial::NoHealthyUpstream => "no_healthy_upstream",
            Denial::UpstreamOverloaded => "upstream_overloaded",
            Denial::UpstreamCredentialsUnavailable => "upstream_credentials_unavailable",
            Denial::StateUnavailable => "state_unavailable",
        }
    }

    /// Whether the connection should be closed after the response: after a framing
    /// problem we cannot trust where the next request starts.
    pub fn closes_connection(self) -> bool {
        match self {
            Denial::AmbiguousFraming
            | Denial::Head(_)
            | Denial::PayloadTooLarge
            | Denial::BadRequestBody => true,
            Denial::InvalidPath
            | Denial::InvalidHost
            | Denial::MisdirectedRequest
            | Denial::InvalidHeader
            | Denial::BadForwardedHeader
            | Denial::ClientCertNotPinned
            | Denial::IpNotAllowed
            | Denial::License(_)
            | Denial::Token(_)
            | Denial::RateLimited(_)
            | Denial::QuotaExhausted(_)
            | Denial::TooManyInFlight(_)
            | Denial::WebSocketNotAllowed
            | Denial::NoRoute
            | Denial::MethodNotAllowed
            | Denial::UpstreamUnavailable
            | Denial::UpstreamTlsFailed
            | Denial::UpstreamTimeout
            | Denial::NoHealthyUpstream
            | Denial::UpstreamOverloaded
            | Denial::UpstreamCredentialsUnavailable
            | Denial::StateUnavailable => false,
        }
    }

    /// The response: status, `{"error","request_id"}` body, `x-request-id` header.
    pub fn response<B: From<Bytes>>(self, request_id: &RequestId) -> Response<B> {
        let body = format!(
            "{{\"error\":\"{}\",\"request_id\":\"{}\"}}",
            self.reason(),
            request_id.as_str()
        );
        let mut resp = Response::new(B::from(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(crate::request_id::X_REQUEST_ID, request_id.header_value());
        if self.closes_connection() {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        match self {
            Denial::RateLimited(hit) => hit.write_headers(h, ""),
            Denial::QuotaExhausted(hit) => hit.write_headers(h, "_quota"),
            Denial::TooManyInFlight(_) | Denial::UpstreamOverloaded | Denial::StateUnavailable => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

// === The stages' refusals ===

listed! {
/// Why a request head was refused below hyper: everything hyper's own parser refuses (it
/// would answer with a bare status and no body), found first by the framing scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadRefusal {
    /// The head reached `max_header_bytes` (431 `header_too_large`).
    TooLarge,
    /// More header lines than `max_headers` (431 `too_many_headers`).
    TooManyHeaders,
    /// A request target longer than 65,534 bytes (414 `uri_too_long`).
    UriTooLong,
    /// Not HTTP/1.x syntax: a bad request line, version, method or target, a NUL, bare CR
    /// or other control byte, an obsolete folded line, a header line without a name
    /// (400 `malformed_request`).
    Malformed,
    /// A Transfer-Encoding whose last coding is not `chunked`, or any Transfer-Encoding on
    /// HTTP/1.0 (400 `unsupported_transfer_coding`).
    UnsupportedTransferCoding,
}}

impl HeadRefusal {
    pub fn status(self) -> StatusCode {
        match self {
            HeadRefusal::TooLarge | HeadRefusal::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadRefusal::UriTooLong => StatusCode::URI_TOO_LONG,
            HeadRefusal::Malformed | HeadRefusal::UnsupportedTransferCoding => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// The stable machine reason (JSON `error`, metric label).
    pub fn reason(self) -> &'static str {
        match self {
            HeadRefusal::TooLarge => "header_too_large",
            HeadRefusal::TooManyHeaders => "too_many_headers",
            HeadRefusal::UriTooLong => "uri_too_long",
            HeadRefusal::Malformed => "malformed_request",
            HeadRefusal::UnsupportedTransferCoding => "unsupported_transfer_coding",
        }
    }
}

listed! {
/// Why the license stage refused a request: one variant per denial reason (403 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LicenseDenial {
    /// No license names the client's certificate or address: `license_missing`.
    Missing,
    /// The machine's license expired (and any grace period is over): `license_expired`.
    Expired,
    /// The machine's license starts later: `license_not_yet_valid`.
    NotYetValid,
    /// The machine's license was revoked: `license_revoked`.
    Revoked,
    /// A license names the certificate or the address but does not cover this request (the
    /// other half of `pin_and_ip` differs, or the route is not listed):
    /// `license_binding_mismatch`.
    BindingMismatch,
}}

impl LicenseDenial {
    /// The stable machine reason (JSON `error`, metric label).
    pub fn reason(self) -> &'static str {
        match self {
            LicenseDenial::Missing => "license_missing",
            LicenseDenial::Expired => "license_expired",
            LicenseDenial::NotYetValid => "license_not_yet_valid",
            LicenseDenial::Revoked => "license_revoked",
            LicenseDenial::BindingMismatch => "license_binding_mismatch",
        }
    }

    /// Which denial wins when several licenses deny: higher is more telling.
    pub fn rank(self) -> u8 {
        match self {
            LicenseDenial::Missing => 0,
            LicenseDenial::BindingMismatch => 1,
            LicenseDenial::NotYetValid => 2,
            LicenseDenial::Expired => 3,
            LicenseDenial::Revoked => 4,
        }
    }
}

listed! {
/// Why a request did not get through the token stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenDenial {
    /// No bearer credential: no Authorization header, or one with another scheme (RFC 6750
    /// 3.1 treats an unsupported scheme as no authentication information).
    #[error("bearer token missing")]
    Missing,
    /// A bearer credential that is not a valid token for this route: malformed, bad
    /// signature, unknown issuer or key, wrong audience, not yet valid, revoked, another
    /// issuer than the route accepts, several Authorization headers, over 8 KiB.
    #[error("bearer token invalid")]
    Invalid,
    /// A valid token whose `exp` (plus leeway) has passed.
    #[error("bearer token expired")]
    Expired,
    /// A valid token without the scopes the route requires.
    #[error("insufficient scope")]
    InsufficientScope,
}}

impl TokenDenial {
    pub fn status(self) -> StatusCode {
        match self {
            TokenDenial::Missing | TokenDenial::Invalid | TokenDenial::Expired => {
                StatusCode::UNAUTHORIZED
            }
            TokenDenial::InsufficientScope => StatusCode::FORBIDDEN,
        }
    }

    /// Stable machine reason (JSON `error`, metric label).
    pub fn reason(self) -> &'static str {
        match self {
            TokenDenial::Missing => "token_missing",
            TokenDenial::Invalid => "token_invalid",
            TokenDenial::Expired => "token_expired",
            TokenDenial::InsufficientScope => "insufficient_scope",
        }
    }
}

// === Limits ===

listed! {
/// What a limit counts by, as a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    ClientIp,
    Cert,
    License,
    TokenSub,
    ClientId,
    Header,
    Route,
}}

impl LimitKind {
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::ClientIp => "client_ip",
            LimitKind::Cert => "cert",
            LimitKind::License => "license",
            LimitKind::TokenSub => "token_sub",
            LimitKind::ClientId => "client_id",
            LimitKind::Header => "header",
            LimitKind::Route => "route",
        }
    }
}

/// A rate limit that refused: which kind, when to come back, and the policy for the
/// `RateLimit-Policy` / `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitHit {
    pub kind: LimitKind,
    /// Whole seconds, at least 1.
    pub retry_after_secs: u32,
    /// Requests per window.
    pub quota: u64,
    pub window_secs: u32,
}

impl LimitHit {
    /// One representative: the denial's reason does not depend on the numbers or the kind
    /// (the kind has its own series, `portcullis_limited_total`).
    pub const ALL: &'static [LimitHit] = &[LimitHit {
        kind: LimitKind::Route,
        retry_after_secs: 1,
        quota: 0,
        window_secs: 0,
    }];

    /// `suffix` tells a quota's policy (`"license_quota"`) from a rate's (`"license"`).
    fn write_headers(&self, h: &mut http::HeaderMap, suffix: &str) {
        let name = self.kind.label();
        let policy = format!("\"{name}{suffix}\";q={};w={}", self.quota, self.window_secs);
        let state = format!("\"{name}{suffix}\";r=0;t={}", self.retry_after_secs);
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        if let Ok(v) = HeaderValue::try_from(policy) {
            h.insert(RATELIMIT_POLICY, v);
        }
        if let Ok(v) = HeaderValue::try_from(state) {
            h.insert(RATELIMIT, v);
        }
    }
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-09).
pub const RATELIMIT_POLICY: header::HeaderName =
    header::HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: the remaining quota `r` and seconds `t` until it resets.
pub const RATELIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit");

/// An in-flight cap that refused, and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlightHit {
    pub kind: LimitKind,
}

impl InFlightHit {
    /// One representative (see [`LimitHit::ALL`]).
    pub const ALL: &'static [InFlightHit] = &[InFlightHit {
        kind: LimitKind::Route,
    }];
}

/// Why the limits stage refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    Rate(LimitHit),
    Quota(LimitHit),
    InFlight(LimitKind),
    /// The shared store could not answer and the limit fails closed.
    Unavailable,
}

impl From<LimitRefusal> for Denial {
    fn from(r: LimitRefusal) -> Denial {
        match r {
            LimitRefusal::Rate(hit) => Denial::RateLimited(hit),
            LimitRefusal::Quota(hit) => Denial::QuotaExhausted(hit),
            LimitRefusal::InFlight(kind) => Denial::TooManyInFlight(InFlightHit { kind }),
            LimitRefusal::Unavailable => Denial::StateUnavailable,
        }
    }
}

// === Connection refusals ===

listed! {
/// Why a connection was closed before any HTTP was spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// `max_connections` reached.
    Limit,
    /// The listener's deny or allow list refused the connection's origin.
    IpNotAllowed,
    /// The origin opened connections faster than `connection_rate`, or holds
    /// `max_connections_per_ip` already.
    Flood,
    /// A PROXY header from an untrusted peer, a missing or malformed one, or a timeout.
    ProxyProtocol,
    /// The TLS handshake failed or timed out.
    Handshake,
}}

impl ConnRefusal {
    pub fn label(self) -> &'static str {
        match self {
            ConnRefusal::Limit => "connection_limit",
            ConnRefusal::IpNotAllowed => "ip_not_allowed",
            ConnRefusal::Flood => "connection_flood",
            ConnRefusal::ProxyProtocol => "proxy_protocol",
            ConnRefusal::Handshake => "tls_handshake",
        }
    }
}

listed! {
/// Why a TLS handshake failed, as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    Timeout,
    /// No common version or suite (e.g. a TLS 1.0/1.1-only client).
    Incompatible,
    NoClientCert,
    BadClientCert,
    /// The client certificate is revoked (its key revoked by enrollment, or a CRL lists it).
    RevokedClientCert,
    /// Not TLS, or a broken message.
    Malformed,
    /// The client sent an alert (it refused our certificate, say).
    ClientAlert,
    /// The connection closed mid-handshake, or anything else.
    Other,
}}

impl HandshakeFailure {
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::NoClientCert => "no_client_certificate",
            HandshakeFailure::BadClientCert => "bad_client_certificate",
            HandshakeFailure::RevokedClientCert => "revoked_client_certificate",
            HandshakeFailure::Malformed => "malformed",
            HandshakeFailure::ClientAlert => "client_alert",
            HandshakeFailure::Other => "other",
        }
    }

    /// Classify the error tokio-rustls returned.
    pub fn of(e: &std::io::Error) -> Self {
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return HandshakeFailure::Other;
        };
        match tls {
            rustls::Error::PeerIncompatible(_) => HandshakeFailure::Incompatible,
            rustls::Error::NoCertificatesPresented => HandshakeFailure::NoClientCert,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked) => {
                HandshakeFailure::RevokedClientCert
            }
            rustls::Error::InvalidCertificate(_) => HandshakeFailure::BadClientCert,
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. } => HandshakeFailure::Malformed,
            rustls::Error::AlertReceived(_) => HandshakeFailure::ClientAlert,
            _ => HandshakeFailure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_distinct_snake_case_and_its_status_is_an_error() {
        let mut seen = std::collections::HashSet::new();
        for d in Denial::all() {
            assert!(seen.insert(d.reason()), "duplicate reason {}", d.reason());
            assert!(
                d.reason()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert!(d.status().is_client_error() || d.status().is_server_error());
        }
    }

    #[test]
    fn denial_body_is_the_json_error_and_request_id() {
        let id = RequestId::next();
        let resp: Response<Bytes> = Denial::NoRoute.response(&id);
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = String::from_utf8(resp.body().to_vec()).unwrap_or_default();
        assert_eq!(
            body,
            format!(
                "{{\"error\":\"no_route\",\"request_id\":\"{}\"}}",
                id.as_str()
            )
        );
        assert_eq!(resp.headers()["x-request-id"], id.as_str());
    }
}
