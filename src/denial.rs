//! Every way a request can be refused, each with exactly one status, one stable reason (the
//! JSON `error` and the metric label) and nothing else: no internal address, no detail an
//! attacker could use. The matches are exhaustive on purpose, so a new denial cannot ship
//! without its status and reason.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::context::RequestId;
use crate::license::LicenseDenial;
use crate::token::TokenDenial;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Content-Length with Transfer-Encoding, or differing Content-Length values: a request
    /// smuggling attempt or a broken client.
    #[error("ambiguous request framing")]
    AmbiguousFraming,
    /// The path has dot segments or encoded separators an upstream could read differently.
    #[error("invalid request path")]
    InvalidPath,
    /// The Host (or request-target authority) is malformed, has userinfo, is missing or
    /// repeated on HTTP/1.1, or differs from `:authority` on HTTP/2.
    #[error("invalid host")]
    InvalidHost,
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
    /// The upstream did not send a response head within `response_timeout`.
    #[error("upstream timeout")]
    UpstreamTimeout,
}

impl Denial {
    /// Every variant, for metrics that pre-register one series per reason.
    pub const ALL: [Denial; 22] = [
        Denial::AmbiguousFraming,
        Denial::InvalidPath,
        Denial::InvalidHost,
        Denial::InvalidHeader,
        Denial::BadRequestBody,
        Denial::BadForwardedHeader,
        Denial::ClientCertNotPinned,
        Denial::IpNotAllowed,
        Denial::License(LicenseDenial::Missing),
        Denial::License(LicenseDenial::Expired),
        Denial::License(LicenseDenial::NotYetValid),
        Denial::License(LicenseDenial::Revoked),
        Denial::License(LicenseDenial::BindingMismatch),
        Denial::Token(TokenDenial::Missing),
        Denial::Token(TokenDenial::Invalid),
        Denial::Token(TokenDenial::Expired),
        Denial::Token(TokenDenial::InsufficientScope),
        Denial::NoRoute,
        Denial::MethodNotAllowed,
        Denial::PayloadTooLarge,
        Denial::UpstreamUnavailable,
        Denial::UpstreamTimeout,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            Denial::AmbiguousFraming => StatusCode::BAD_REQUEST,
            Denial::InvalidPath => StatusCode::BAD_REQUEST,
            Denial::InvalidHost => StatusCode::BAD_REQUEST,
            Denial::InvalidHeader => StatusCode::BAD_REQUEST,
            Denial::BadRequestBody => StatusCode::BAD_REQUEST,
            Denial::BadForwardedHeader => StatusCode::BAD_REQUEST,
            Denial::ClientCertNotPinned => StatusCode::FORBIDDEN,
            Denial::IpNotAllowed => StatusCode::FORBIDDEN,
            Denial::License(_) => StatusCode::FORBIDDEN,
            Denial::Token(d) => d.status(),
            Denial::NoRoute => StatusCode::NOT_FOUND,
            Denial::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Denial::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Denial::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Denial::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Stable machine reason: the JSON `error` and the metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::AmbiguousFraming => "ambiguous_framing",
            Denial::InvalidPath => "invalid_path",
            Denial::InvalidHost => "invalid_host",
            Denial::InvalidHeader => "invalid_header",
            Denial::BadRequestBody => "bad_request_body",
            Denial::BadForwardedHeader => "bad_forwarded_header",
            Denial::ClientCertNotPinned => "client_cert_not_pinned",
            Denial::IpNotAllowed => "ip_not_allowed",
            Denial::License(d) => d.reason(),
            Denial::Token(d) => d.reason(),
            Denial::NoRoute => "no_route",
            Denial::MethodNotAllowed => "method_not_allowed",
            Denial::PayloadTooLarge => "payload_too_large",
            Denial::UpstreamUnavailable => "upstream_unavailable",
            Denial::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// Whether the connection should be closed after the response: after a framing
    /// problem we cannot trust where the next request starts.
    pub fn closes_connection(self) -> bool {
        match self {
            Denial::AmbiguousFraming | Denial::PayloadTooLarge | Denial::BadRequestBody => true,
            Denial::InvalidPath
            | Denial::InvalidHost
            | Denial::InvalidHeader
            | Denial::BadForwardedHeader
            | Denial::ClientCertNotPinned
            | Denial::IpNotAllowed
            | Denial::License(_)
            | Denial::Token(_)
            | Denial::NoRoute
            | Denial::MethodNotAllowed
            | Denial::UpstreamUnavailable
            | Denial::UpstreamTimeout => false,
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
        h.insert(crate::context::X_REQUEST_ID, request_id.header_value());
        if self.closes_connection() {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_distinct_snake_case_and_its_status_is_an_error() {
        let mut seen = std::collections::HashSet::new();
        for d in Denial::ALL {
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
