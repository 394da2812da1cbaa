//! The token issuer's registry on the admin API, so nothing needs the gateway stopped (and, on
//! a fleet's store, every instance sees the change at once):
//!
//! - `GET /clients`: every client (id, state, authentication, scopes, lifetime; never a hash);
//! - `POST /clients` with JSON `{"id", "scopes": [...], "cert_pins": [...], "cert_only",
//!   "access_ttl": "5m"}`: 201 and the secret, shown this once;
//! - `POST /clients/{id}/disable`, `POST /clients/{id}/rotate-secret` (the new secret, once);
//! - `POST /keys/rotate` with optional JSON `{"algorithm": "ES256" | "EdDSA"}`.
//!
//! Responses that carry a secret are `Cache-Control: no-store`. Store calls run on the
//! blocking pool.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{AdminResponse, AuditTarget, error, json, read_body};
use crate::issuer::Issuer;
use crate::issuer::clients::{self, NewClient, RegistryError};
use crate::request_id::RequestId;
use crate::state::issuer::ClientRecord;

/// `POST /clients`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClientBody {
    id: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    cert_pins: Vec<String>,
    #[serde(default)]
    cert_only: bool,
    access_ttl: Option<String>,
}

/// `POST /keys/rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    algorithm: Option<String>,
}

/// Route `/clients...` and `/keys/rotate`.
pub(super) async fn handle(
    issuer: Option<Arc<Issuer>>,
    id: &RequestId,
    req: Request<Incoming>,
    now: std::time::SystemTime,
) -> AdminResponse {
    let Some(issuer) = issuer else {
        return error(id, StatusCode::NOT_FOUND, "issuer_not_configured");
    };
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let at = crate::issuer::unix(now);
    match (method, path.as_str()) {
        (Method::GET, "/clients") => {
            let i = Arc::clone(&issuer);
            match blocking(move || clients::list(i.store())).await {
                Ok(list) => json(
                    id,
                    StatusCode::OK,
                    &serde_json::json!({"clients": list.iter().map(view).collect::<Vec<_>>()}),
                ),
                Err(e) => registry_error(id, e),
            }
        }
        (Method::POST, "/clients") => {
            let new = match read_json::<NewClientBody>(req).await {
                Ok(b) => b,
                Err(message) => return invalid(id, &message),
            };
            let new = match new_client(new) {
                Ok(n) => n,
                Err(message) => return invalid(id, &message),
            };
            let i = Arc::clone(&issuer);
            match blocking(move || clients::add(i.store(), &new, at)).await {
                Ok((rec, secret)) => {
                    tracing::info!(client = %rec.id, "issuer client added through the admin API");
                    let mut body = view(&rec);
                    body["client_secret"] = secret
                        .as_ref()
                        .map_or(serde_json::Value::Null, |s| s.expose().into());
                    let mut resp = no_store(json(id, StatusCode::CREATED, &body));
                    resp.extensions_mut()
                        .insert(AuditTarget(rec.id.as_str().into()));
                    resp
                }
                Err(e) => registry_error(id, e),
            }
        }
        (Method::POST, p) if p.starts_with("/clients/") => {
            let rest = &p["/clients/".len()..];
            let (client, action) = rest.split_once('/').unwrap_or((rest, ""));
            let client = client.to_owned();
            let i = Arc::clone(&issuer);
            match action {
                "disable" => match blocking(move || clients::disable(i.store(), &client)).await {
                    Ok(rec) => {
                        tracing::info!(client = %rec.id, "issuer client disabled through the admin API");
                        json(id, StatusCode::OK, &view(&rec))
                    }
                    Err(e) => registry_error(id, e),
                },
                "rotate-secret" => {
                    match blocking(move || clients::rotate_secret(i.store(), &client, at)).await {
                        Ok((rec, secret)) => {
                            tracing::info!(client = %rec.id, "issuer client secret rotated through the admin API");
                            let mut body = view(&rec);
                            body["client_secret"] = secret.expose().into();
                            no_store(json(id, StatusCode::OK, &body))
                        }
                        Err(e) => registry_error(id, e),
                    }
                }
                _ => error(id, StatusCode::NOT_FOUND, "not_found"),
            }
        }
        (Method::POST, "/keys/rotate") => {
            let body = match read_json::<RotateBody>(req).await {
                Ok(b) => b,
                Err(message) => return invalid(id, &message),
            };
            let algorithm = match body.algorithm.as_deref() {
                None => None,
                Some(a) => match crate::state::issuer::SigningAlg::parse(a) {
                    Some(alg) => Some(alg),
                    None => return invalid(id, "algorithm: use ES256 or EdDSA"),
                },
            };
            let i = Arc::clone(&issuer);
            let rotated =
                tokio::task::spawn_blocking(move || i.rotate_key_with(algorithm, now)).await;
            match rotated {
                Ok(Ok(r)) => json(
                    id,
                    StatusCode::OK,
                    &serde_json::json!({
                        "kid": r.kid,
                        "alg": r.alg.name(),
                        "retired": r.retired.as_ref().map(|(kid, until)| serde_json::json!({
                            "kid": kid,
                            "published_until": crate::license::dates::rfc3339(*until),
                        })),
                    }),
                ),
                Ok(Err(e)) => {
                    let unavailable =
                        matches!(&e, crate::issuer::IssuerError::Store(s) if s.is_unavailable());
                    tracing::warn!(error = %e, "key rotation through the admin API failed");
                    if unavailable {
                        error(id, StatusCode::SERVICE_UNAVAILABLE, "state_unavailable")
                    } else {
                        error(id, StatusCode::INTERNAL_SERVER_ERROR, "issuer_store_failed")
                    }
                }
                Err(_) => error(id, StatusCode::INTERNAL_SERVER_ERROR, "issuer_store_failed"),
            }
        }
        (_, "/clients" | "/keys/rotate") => {
            error(id, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        }
        _ => error(id, StatusCode::NOT_FOUND, "not_found"),
    }
}

/// A client as the admin API shows it: never its secret's hash.
fn view(c: &ClientRecord) -> serde_json::Value {
    serde_json::json!({
        "client_id": c.id,
        "state": if c.disabled { "disabled" } else { "active" },
        "secret": c.secret_hash.is_some(),
        "cert_pins": c.cert_pins,
        "scopes": c.scopes,
        "access_ttl_secs": c.access_token_ttl,
        "created_at": crate::license::dates::rfc3339(c.created_at),
        "secret_rotated_at": c.secret_rotated_at.map(crate::license::dates::rfc3339),
    })
}

fn new_client(b: NewClientBody) -> Result<NewClient, String> {
    let mut pins = Vec::with_capacity(b.cert_pins.len());
    for (i, p) in b.cert_pins.iter().enumerate() {
        pins.push(
            crate::identity::parse_spki_pin(p)
                .map_err(|e| format!("cert_pins[{i}]: \"{p:.80}\" {e}"))?,
        );
    }
    let access_token_ttl = b
        .access_ttl
        .as_deref()
        .map(|t| {
            crate::issuer::config::parse_ttl(
                t,
                crate::issuer::config::MIN_ACCESS_TTL,
                crate::issuer::config::MAX_ACCESS_TTL,
            )
        })
        .transpose()
        .map_err(|m| format!("access_ttl: {m}"))?;
    Ok(NewClient {
        id: b.id,
        scopes: b.scopes,
        cert_pins: pins,
        cert_only: b.cert_only,
        access_token_ttl,
    })
}

async fn read_json<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, String> {
    let body = read_body(req)
        .await
        .map_err(|_| "the body is larger than 64 KiB".to_owned())?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| format!("the body is not the expected JSON: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(RegistryError::Store(
            crate::state::issuer::StoreError::Backend("the blocking task failed"),
        ))
    })
}

fn registry_error(id: &RequestId, e: RegistryError) -> AdminResponse {
    match e {
        RegistryError::Exists(_) => error(id, StatusCode::CONFLICT, "client_exists"),
        RegistryError::NotFound(_) => error(id, StatusCode::NOT_FOUND, "client_not_found"),
        RegistryError::Invalid(m) => invalid(id, &m),
        RegistryError::Store(s) if s.is_unavailable() => {
            tracing::warn!(error = %s, "issuer store unavailable");
            error(id, StatusCode::SERVICE_UNAVAILABLE, "state_unavailable")
        }
        RegistryError::Store(s) => {
            tracing::error!(error = %s, "issuer store failed");
            error(id, StatusCode::INTERNAL_SERVER_ERROR, "issuer_store_failed")
        }
    }
}

fn invalid(id: &RequestId, message: &str) -> AdminResponse {
    json(
        id,
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": "invalid_request", "request_id": id.as_str(), "message": message}),
    )
}

fn no_store(mut resp: AdminResponse) -> AdminResponse {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
