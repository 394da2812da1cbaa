//! Enrollment tokens on the admin API (role admin: a token is a certificate and a license
//! waiting to be claimed):
//!
//! - `POST /enrollment/tokens` with JSON `{"machine", "template", "expires": "24h"}`: 201 and
//!   `{"token", "machine", "template", "expires_at"}`, the token shown this once
//!   (`Cache-Control: no-store`; only its hash is stored);
//! - `DELETE /enrollment/tokens/{machine}`: revokes the machine's unspent tokens,
//!   `{"machine", "revoked": n}`;
//! - `DELETE /enrollment/machines/{machine}`: revokes the machine (its license, its unspent
//!   tokens, its record), `{"machine", "license", "tokens_revoked"}`; 404 if unknown.
//!
//! Store calls run on the blocking pool.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{AdminResponse, AuditTarget, error, json, read_body};
use crate::enrollment::Enrollment;
use crate::request_id::RequestId;

/// `POST /enrollment/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    machine: String,
    template: String,
    #[serde(default = "default_expires")]
    expires: String,
}

fn default_expires() -> String {
    "24h".to_owned()
}

/// `DELETE /enrollment/machines/{machine}`.
pub(super) async fn revoke_machine(
    enrollment: Option<Arc<Enrollment>>,
    licensing: Option<Arc<crate::state::licenses::Licensing>>,
    id: &RequestId,
    req: Request<Incoming>,
    now: std::time::SystemTime,
) -> AdminResponse {
    let (Some(enrollment), Some(licensing)) = (enrollment, licensing) else {
        return error(id, StatusCode::NOT_FOUND, "enrollment_not_configured");
    };
    let machine = match (
        req.method(),
        req.uri().path().strip_prefix("/enrollment/machines/"),
    ) {
        (&Method::DELETE, Some(m)) if !m.is_empty() => m.to_owned(),
        _ => return error(id, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    };
    let done = tokio::task::spawn_blocking(move || {
        let done = crate::enrollment::revoke_machine(
            &enrollment.tokens,
            &licensing.service,
            &machine,
            now,
        )?;
        enrollment.refresh_revoked(now)?;
        Ok::<_, crate::enrollment::RevokeMachineError>(done)
    })
    .await;
    match done {
        Ok(Ok(r)) if r.is_unknown() => error(id, StatusCode::NOT_FOUND, "machine_not_found"),
        Ok(Ok(r)) => json(id, StatusCode::OK, &r.to_json()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "enrolled machine revocation could not be stored");
            error(
                id,
                StatusCode::INTERNAL_SERVER_ERROR,
                "enrollment_store_failed",
            )
        }
        Err(_) => error(id, StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

/// Route `/enrollment/tokens...`.
pub(super) async fn handle(
    enrollment: Option<Arc<Enrollment>>,
    id: &RequestId,
    req: Request<Incoming>,
    now: std::time::SystemTime,
) -> AdminResponse {
    let Some(enrollment) = enrollment else {
        return error(id, StatusCode::NOT_FOUND, "enrollment_not_configured");
    };
    let at = crate::license::dates::unix(now);
    let path = req.uri().path().to_owned();
    match (
        req.method().clone(),
        path.strip_prefix("/enrollment/tokens"),
    ) {
        (Method::POST, Some("" | "/")) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(status) => return error(id, status, "bad_request"),
            };
            let Ok(new) = serde_json::from_slice::<NewToken>(&body) else {
                return detail(
                    id,
                    "bad_request",
                    "expected JSON {\"machine\", \"template\", \"expires\"}".into(),
                );
            };
            let target = AuditTarget(new.machine.clone().into());
            let e = Arc::clone(&enrollment);
            let minted = tokio::task::spawn_blocking(move || {
                crate::enrollment::mint(
                    &e.settings,
                    &e.tokens,
                    &new.machine,
                    &new.template,
                    &new.expires,
                    at,
                )
            })
            .await;
            // `json` marks every answer no-store: this one carries the token.
            let mut resp = match minted {
                Ok(Ok(m)) => json(id, StatusCode::CREATED, &m.to_json()),
                Ok(Err(e)) if e.is_bad_request() => detail(id, "bad_request", e.to_string()),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "enrollment token could not be stored");
                    error(
                        id,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "enrollment_store_failed",
                    )
                }
                Err(_) => error(id, StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            };
            resp.extensions_mut().insert(target);
            resp
        }
        (Method::DELETE, Some(rest)) if rest.len() > 1 => {
            let machine = rest[1..].to_owned();
            let e = Arc::clone(&enrollment);
            let m = machine.clone();
            match tokio::task::spawn_blocking(move || e.tokens.revoke_machine(&m, at)).await {
                Ok(Ok(n)) => {
                    tracing::info!(machine = %machine, revoked = n, "enrollment tokens revoked");
                    json(
                        id,
                        StatusCode::OK,
                        &serde_json::json!({"machine": machine, "revoked": n}),
                    )
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "enrollment token revocation could not be stored");
                    error(
                        id,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "enrollment_store_failed",
                    )
                }
                Err(_) => error(id, StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            }
        }
        _ => error(id, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    }
}

/// A 400 with what was wrong.
fn detail(id: &RequestId, reason: &str, message: String) -> AdminResponse {
    json(
        id,
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": reason, "request_id": id.as_str(), "message": message}),
    )
}
