//! The admin listener: `GET /metrics`, `/healthz`, `/readyz`, `/config`, `POST /reload`.
//! A separate listener (loopback by default; TLS with client certificates and/or a bearer
//! token elsewhere). Its refusals use the gateway's JSON shape.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::Gateway;
use crate::context::{RequestId, X_REQUEST_ID};

type AdminResponse = Response<Full<Bytes>>;

/// Serve the admin API on `tcp` until `stop`.
pub(crate) async fn serve(
    tcp: TcpListener,
    gateway: Arc<Gateway>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            r = tcp.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let gateway = gateway.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, gateway, stop).await {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}

async fn connection(
    stream: TcpStream,
    gateway: Arc<Gateway>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tls = gateway
        .shared()
        .snapshot
        .load()
        .admin
        .as_ref()
        .and_then(|a| a.tls.clone());
    let g = gateway.clone();
    let service = service_fn(move |req| {
        let g = g.clone();
        async move { Ok::<_, Infallible>(handle(&g, req).await) }
    });
    let http = auto::Builder::new(TokioExecutor::new());
    let timeout = std::time::Duration::from_secs(10);
    match tls {
        Some(cfg) => {
            let tls =
                tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(cfg).accept(stream))
                    .await??;
            let conn = http.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r?,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
        }
        None => {
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r?,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
        }
    }
    Ok(())
}

/// Route an admin request.
pub async fn handle(gateway: &Gateway, req: Request<Incoming>) -> AdminResponse {
    let id = RequestId::next();
    if !authorized(gateway, &req) {
        let mut resp = error(&id, StatusCode::UNAUTHORIZED, "unauthorized");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
        );
        return resp;
    }
    let shared = gateway.shared();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => {
            json(&id, StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (&Method::GET, "/readyz") => {
            let snap = shared.snapshot.load();
            let bound = snap
                .listeners
                .iter()
                .all(|l| gateway.local_addr(&l.name).is_some());
            let body = serde_json::json!({
                "status": if bound { "ready" } else { "starting" },
                "listeners": snap.listeners.len(),
                "routes": snap.route_count(),
            });
            json(
                &id,
                if bound {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &body,
            )
        }
        (&Method::GET, "/metrics") => {
            let mut resp = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp.headers_mut().insert(X_REQUEST_ID, id.header_value());
            resp
        }
        (&Method::GET, "/config") => {
            let snap = shared.snapshot.load();
            let body = serde_json::json!({
                "source": snap.source.display().to_string(),
                "config": snap.redacted,
            });
            json(&id, StatusCode::OK, &body)
        }
        (&Method::POST, "/reload") => match gateway.reload().await {
            Ok(s) => json(
                &id,
                StatusCode::OK,
                &serde_json::json!({
                    "result": "reloaded",
                    "listeners": s.listeners,
                    "routes": s.routes,
                    "rebound": s.rebound,
                    "closed": s.closed,
                    "warnings": s.warnings,
                }),
            ),
            Err(e) => {
                let errors: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
                json(
                    &id,
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "reload_failed", "request_id": id.as_str(), "errors": errors}),
                )
            }
        },
        (_, "/healthz" | "/readyz" | "/metrics" | "/config" | "/reload") => {
            error(&id, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        }
        _ => error(&id, StatusCode::NOT_FOUND, "not_found"),
    }
}

/// With a token configured, every request needs `Authorization: Bearer <token>`; compared
/// as SHA-256 digests in constant time, so timing says nothing about the token.
fn authorized(gateway: &Gateway, req: &Request<Incoming>) -> bool {
    let snap = gateway.shared().snapshot.load();
    let Some(expected) = snap.admin.as_ref().and_then(|a| a.token_sha256) else {
        return true;
    };
    let Some(presented) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return false;
    };
    let digest = crate::identity::sha256(presented.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(&digest, &expected).is_ok()
}

fn json(id: &RequestId, status: StatusCode, body: &serde_json::Value) -> AdminResponse {
    let mut text = serde_json::to_vec(body).unwrap_or_default();
    text.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(X_REQUEST_ID, id.header_value());
    resp
}

fn error(id: &RequestId, status: StatusCode, reason: &str) -> AdminResponse {
    json(
        id,
        status,
        &serde_json::json!({"error": reason, "request_id": id.as_str()}),
    )
}
