//! The EST endpoints (RFC 7030), on `[enrollment] listener`, answered before routing:
//!
//! - `GET /.well-known/est/cacerts`: the enrollment CA, PKCS#7 certs-only, base64.
//! - `GET /.well-known/est/crl`: the enrollment CA's CRL, DER (`application/pkix-crl`); not
//!   an RFC 7030 operation, but under its prefix so that one listener serves the CA's all.
//! - `POST /.well-known/est/simpleenroll`: authenticated by a one-time enrollment token
//!   (`Authorization: Bearer <token>`, or HTTP Basic with the token as the password); the
//!   body is a base64 DER PKCS#10 CSR (`Content-Type: application/pkcs10`). The answer is
//!   the machine's certificate, PKCS#7 certs-only, base64
//!   (`application/pkcs7-mime; smime-type=certs-only`), and its machine license, already
//!   active, in the `X-Portcullis-License` header (a standard EST client ignores it).
//! - `POST /.well-known/est/simplereenroll`: over mutual TLS with the machine's current,
//!   unexpired certificate (its CN names the machine, its key is the one last enrolled, its
//!   license active); a CSR for a new key; the same answer. The license moves to the new
//!   key's pin: the old license stops granting `[enrollment] overlap` later.
//!
//! The token is checked first (401), then the CSR (400), then spent (one write transaction:
//! of two requests with one token, one wins). A spent token cannot be used again even if
//! the license could not be activated afterwards (500): make a new one.
//!
//! Refusals are JSON `{"error", "request_id", "message"?}`. Logs name the machine, the
//! template, the license and the certificate serial, never the token or the CSR. Each
//! enrollment and re-enrollment, and each refusal of a known token or certificate, is audited
//! (`audit.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};

use super::Enrollment;
use super::audit::{Note, token_reason};
use super::issued::{issue, store_machine};
use crate::identity::ClientIdentity;
use crate::state::enrollment_certs::Which;
use crate::state::licenses::Licensing;

pub const CACERTS: &str = "/.well-known/est/cacerts";
pub const SIMPLEENROLL: &str = "/.well-known/est/simpleenroll";
pub const SIMPLEREENROLL: &str = "/.well-known/est/simplereenroll";
pub const CRL: &str = "/.well-known/est/crl";
/// The header the machine's license text comes back in.
pub const LICENSE_HEADER: &str = "x-portcullis-license";
/// A CSR is a few KiB at most (an RSA-4096 one about 2 KiB of base64).
const MAX_BODY: usize = 64 * 1024;

pub(super) type Resp = Response<Full<Bytes>>;

/// Whether `path` is one of the EST endpoints (the `/.well-known/est/` space is the
/// gateway's on the enrollment listener: unknown ones there get 404, not a route).
pub fn handles(path: &str) -> bool {
    path.starts_with("/.well-known/est/")
}

/// The `portcullis_enrollment_events_total` event of an answer to `path` (`None`: not one
/// that changes anything).
pub fn event_of(path: &str, status: StatusCode) -> Option<&'static str> {
    let reenroll = match path {
        SIMPLEENROLL => false,
        SIMPLEREENROLL => true,
        _ => return None,
    };
    Some(match (status.as_u16(), reenroll) {
        (200, false) => "enrolled",
        (200, true) => "reenrolled",
        (401, false) => "token_refused",
        (401, true) => "reenroll_refused",
        (400 | 413 | 415, _) => "csr_refused",
        _ => "failed",
    })
}

/// Answer one request to an EST path. `request_id` goes into refusals and, with the TCP
/// `peer`, into the audit trail; `now` is the gateway's clock.
pub async fn handle<B>(
    enrollment: &Arc<Enrollment>,
    licensing: Option<&Arc<Licensing>>,
    req: Request<B>,
    identity: Option<&ClientIdentity>,
    (request_id, peer): (&str, SocketAddr),
    now: SystemTime,
) -> Resp
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let refuse = |status, reason: &str, message: Option<String>| {
        let mut body = serde_json::json!({"error": reason, "request_id": request_id});
        if let (Some(m), Some(o)) = (message, body.as_object_mut()) {
            o.insert("message".into(), m.into());
        }
        respond(status, "application/json", Bytes::from(body.to_string()))
    };
    let est = Est {
        enrollment,
        licensing,
        now,
        request_id,
        peer,
    };
    match (req.method().clone(), req.uri().path()) {
        (Method::GET | Method::HEAD, CACERTS) => {
            let p7 = super::pkcs7::certs_only(&[&enrollment.settings.ca_cert_der]);
            pkcs7_response("application/pkcs7-mime", &p7)
        }
        (Method::GET | Method::HEAD, CRL) => match enrollment.crl(now) {
            Ok(Some(crl)) => respond(
                StatusCode::OK,
                "application/pkix-crl",
                Bytes::from(crl.der.clone()),
            ),
            Ok(None) => refuse(
                StatusCode::NOT_FOUND,
                "crl_not_available",
                Some("the enrollment CA's key usage does not allow signing CRLs".into()),
            ),
            Err(e) => {
                tracing::error!(error = %e, "enrollment CRL not available");
                refuse(StatusCode::INTERNAL_SERVER_ERROR, "crl_not_signed", None)
            }
        },
        (Method::POST, SIMPLEENROLL | SIMPLEREENROLL) => {
            let mut note = Note::default();
            let (action, answer) = if req.uri().path() == SIMPLEENROLL {
                ("enrollment.enroll", simpleenroll(est, req, &mut note).await)
            } else {
                let answer = super::reenroll::simplereenroll(est, req, identity, &mut note).await;
                ("enrollment.reenroll", answer)
            };
            let (resp, result) = match answer {
                Ok(resp) => (resp, "ok"),
                Err(Refusal(status, reason, message)) => (refuse(status, reason, message), reason),
            };
            super::audit::write(&est, action, &note, result, resp).await
        }
        (_, CACERTS | CRL | SIMPLEENROLL | SIMPLEREENROLL) => {
            let mut r = refuse(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static(if matches!(req.uri().path(), CACERTS | CRL) {
                    "GET, HEAD"
                } else {
                    "POST"
                }),
            );
            r
        }
        _ => refuse(StatusCode::NOT_FOUND, "not_found", None),
    }
}

/// What every EST handler works with.
#[derive(Clone, Copy)]
pub(super) struct Est<'a> {
    pub enrollment: &'a Arc<Enrollment>,
    pub licensing: Option<&'a Arc<Licensing>>,
    pub now: SystemTime,
    pub request_id: &'a str,
    pub peer: SocketAddr,
}

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A refusal: status, stable reason, and what a client can act on.
pub(super) struct Refusal(pub StatusCode, pub &'static str, pub Option<String>);

impl Refusal {
    fn token() -> Refusal {
        Refusal(
            StatusCode::UNAUTHORIZED,
            "enrollment_token_refused",
            Some("the enrollment token is unknown, spent, expired or revoked".into()),
        )
    }
    pub(super) fn internal(reason: &'static str) -> Refusal {
        Refusal(StatusCode::INTERNAL_SERVER_ERROR, reason, None)
    }
}

async fn simpleenroll<B>(est: Est<'_>, req: Request<B>, note: &mut Note) -> Result<Resp, Refusal>
where
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>>,
{
    let (enrollment, licensing, now) = (est.enrollment, est.licensing, est.now);
    let at = crate::license::dates::unix(now);
    let Some(hash) = bearer_token(req.headers()).map(|t| crate::state::enrollment::hash(&t)) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "enrollment_token_missing",
            Some(
                "send the enrollment token as a Bearer token or as the HTTP Basic password".into(),
            ),
        ));
    };
    let tokens = Arc::clone(&enrollment.tokens);
    let Some(record) = blocking(move || tokens.find(&hash)).await? else {
        return Err(token_refused(super::TokenRefusal::Unknown, "peek", note));
    };
    note.machine = Some(record.machine.clone());
    if let Err(why) = record.check(at) {
        return Err(token_refused(why, "peek", note));
    }
    let csr = read_csr(enrollment, req, &record.machine).await?;

    let tokens = Arc::clone(&enrollment.tokens);
    let spent = blocking(move || tokens.spend(&hash, at)).await?;
    let record = spent.map_err(|why| token_refused(why, "spend", note))?;
    let licensing = licensing.ok_or_else(|| Refusal::internal("licenses_not_configured"))?;
    let issued = issue(
        enrollment,
        licensing,
        &record.machine,
        &record.template,
        &csr,
        now,
    )
    .await?;
    note.issued(&issued.serial, &issued.pin);
    // A machine enrolling afresh (reinstalled, a new token) drops what it held before.
    let (tokens, machine) = (Arc::clone(&enrollment.tokens), record.machine.clone());
    let before = blocking(move || tokens.machine(&machine)).await?;
    store_machine(
        enrollment,
        &record.machine,
        &record.template,
        &issued,
        None,
        None,
        at,
    )
    .await?;
    if let Some(old) = before {
        super::issued::revoke_held(licensing, &old, now).await;
    }
    // Its earlier certificates are superseded at once (a reinstalled machine, a new key).
    let others = Which::Machine {
        machine: record.machine.clone(),
        keep: Some(issued.serial.clone()),
    };
    super::issued::retire(enrollment, vec![(others, at)], now).await?;
    tracing::info!(
        machine = %record.machine,
        template = %record.template,
        license = %issued.license_id,
        key_type = csr.key_type.as_str(),
        "machine enrolled"
    );
    Ok(issued.response())
}

/// The CSR of an EST request: `application/pkcs10`, base64 DER, checked.
pub(super) async fn read_csr<B>(
    enrollment: &Enrollment,
    req: Request<B>,
    machine: &str,
) -> Result<super::csr::CheckedCsr, Refusal>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let pkcs10 = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/pkcs10"));
    if !pkcs10 {
        return Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            Some("send Content-Type: application/pkcs10".into()),
        ));
    }
    let body = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| Refusal(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None))?
        .to_bytes();
    let checked = super::pkcs7::decode_base64(&body)
        .ok_or(super::csr::CsrRefusal::Malformed)
        .and_then(|der| super::csr::check(&der, &enrollment.settings.key_types));
    checked.map_err(|why| {
        tracing::info!(machine = %machine, reason = why.reason(), "enrollment CSR refused");
        Refusal(StatusCode::BAD_REQUEST, why.reason(), Some(why.to_string()))
    })
}

/// The refusal of a token (logged; its precise reason noted for the audit trail).
fn token_refused(why: super::TokenRefusal, step: &'static str, note: &mut Note) -> Refusal {
    tracing::info!(reason = why.as_str(), step, "enrollment token refused");
    note.reason = Some(token_reason(why));
    Refusal::token()
}

/// Run a store call off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, super::StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "enrollment store failed");
            Err(Refusal::internal("enrollment_store_failed"))
        }
        Err(_) => Err(Refusal::internal("internal_error")),
    }
}

/// The token from `Authorization: Bearer <token>` or `Basic base64(<any user>:<token>)`.
fn bearer_token(headers: &http::HeaderMap) -> Option<zeroize::Zeroizing<String>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(zeroize::Zeroizing::new(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?,
        );
        let text = std::str::from_utf8(&decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(zeroize::Zeroizing::new(password.to_owned()));
    }
    None
}

pub(super) fn pkcs7_response(content_type: &'static str, der: &[u8]) -> Resp {
    let mut r = respond(
        StatusCode::OK,
        content_type,
        Bytes::from(super::pkcs7::base64_lines(der)),
    );
    r.headers_mut().insert(
        "content-transfer-encoding",
        HeaderValue::from_static("base64"),
    );
    r
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
