//! The admin listener: `GET /metrics`, `/healthz`, `/readyz`, `/config`, `/upstreams`,
//! `POST /reload`, licenses, the issuer's clients and keys (`issuer.rs`), enrollment tokens
//! (`enrollment.rs`). A separate
//! listener (loopback by default; TLS with client certificates and/or tokens elsewhere).
//! Each request is checked for its origin, then its identity and role (`access.rs`); every
//! change tried is audited (`crate::record::audit`). Its refusals use the gateway's JSON shape.

mod access;
mod console;
mod enrollment;
mod history;
mod issuer;
mod status;

pub(crate) use history::{History, ReloadRecord};

use std::convert::Infallible;
use std::net::SocketAddr;
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

use crate::identity::ClientIdentity;
use crate::record::audit;
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::server::Gateway;
use crate::state::licenses::{ActivationError, RevokeError};

pub(super) type AdminResponse = Response<Full<Bytes>>;

/// Serve the admin API on `tcp` until `stop`.
pub(crate) async fn serve(
    tcp: TcpListener,
    gateway: Arc<Gateway>,
    stop: watch::Receiver<bool>,
    this_admin_stop: watch::Receiver<bool>,
) {
    let connection_stop = stop.clone();
    super::connection::accept_until(tcp, "admin", stop, this_admin_stop, |stream, peer| {
        let gateway = gateway.clone();
        let stop = connection_stop.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, peer, gateway, stop).await {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    })
    .await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tls = gateway
        .shared()
        .generation
        .load()
        .snapshot
        .admin
        .as_ref()
        .and_then(|a| a.tls.clone());
    let local = stream.local_addr()?;
    let service = |cert: Option<ClientIdentity>| {
        let at = Arc::new(Peer { local, peer, cert });
        let g = gateway.clone();
        service_fn(move |req| {
            let (g, at) = (g.clone(), at.clone());
            async move { Ok::<_, Infallible>(handle(&g, req, &at).await) }
        })
    };
    let http = auto::Builder::new(TokioExecutor::new());
    let timeout = std::time::Duration::from_secs(10);
    match tls {
        Some(cfg) => {
            let tls =
                tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(cfg).accept(stream))
                    .await??;
            // Digested once per connection, like the gateway's client identity.
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| ClientIdentity::from_der(c).ok());
            let conn = http.serve_connection(TokioIo::new(tls), service(cert));
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r?,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
        }
        None => {
            let conn = http.serve_connection(TokioIo::new(stream), service(None));
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r?,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
        }
    }
    Ok(())
}

/// The shared store as `/readyz` shows it. A store that is down does not make the instance
/// unready: each concern answers as its failure mode says, and taking every instance out of
/// the balancer because Redis is down would turn a degraded fleet into a dead one.
fn state_view(
    store: Option<&std::sync::Arc<crate::state::redis::RedisStore>>,
) -> serde_json::Value {
    match store {
        None => serde_json::json!({"backend": "embedded", "status": "up"}),
        Some(s) => serde_json::json!({
            "backend": "redis",
            "status": if s.is_up() { "up" } else { "down" },
            "on_unavailable": {
                "rate_limits": s.settings().rate_limits.label(),
                "quotas": s.settings().quotas.label(),
                "issuer": "fail_closed",
                "licenses": "fail_closed",
            },
        }),
    }
}

/// Where an admin request came from: the listener address it reached, the client's address
/// and its client certificate.
pub(super) struct Peer {
    local: SocketAddr,
    peer: SocketAddr,
    cert: Option<ClientIdentity>,
}

/// Check an admin request's origin, find who sent it and whether their role allows it, route
/// it, and write the audit line of a request that changes something.
async fn handle(gateway: &Gateway, req: Request<Incoming>, at: &Peer) -> AdminResponse {
    let id = RequestId::next();
    let shared = gateway.shared();
    let (own, caller, audit_log) = {
        let generation = shared.generation.load();
        let admin = generation.snapshot.admin.as_ref();
        // Before authentication: a page in a browser on this host, rebinding its own DNS
        // name to 127.0.0.1, reaches the admin port with its own name in Host (421), and a
        // page posting across origins carries its own Origin (403).
        let own = OwnNames {
            local: at.local,
            hosts: admin.map(|a| a.hosts.clone()).unwrap_or_default(),
        };
        let token = access::presented_token(
            req.headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        let identities = admin.map(|a| a.identities.as_slice()).unwrap_or_default();
        let caller = access::authenticate(identities, token.as_deref(), at.cert.as_ref());
        (own, caller, admin.and_then(|a| a.audit_log.clone()))
    };
    if let Err(refusal) = check_origin(&own, &req) {
        return error(&id, refusal.status(), refusal.reason());
    }
    let Some(caller) = caller else {
        shared.metrics.admin_request("none", "unauthorized");
        let mut resp = error(&id, StatusCode::UNAUTHORIZED, "unauthorized");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
        );
        if console::is_console(req.uri().path()) {
            // A browser opening the console shows its sign-in prompt for this challenge
            // (the token is the password); it never does for Bearer.
            resp.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis-admin\", charset=\"UTF-8\""),
            );
            console::secure(resp.headers_mut());
        }
        return resp;
    };
    let audited = access::changes(req.method());
    let (action, path_target) = access::action(req.method(), req.uri().path());
    let path_target = path_target.map(|t| audit::bounded(t).to_owned());
    let resp = if caller.role < access::required_role(req.method(), req.uri().path()) {
        shared
            .metrics
            .admin_request(caller.role.label(), "forbidden");
        error(&id, StatusCode::FORBIDDEN, "forbidden_for_role")
    } else {
        shared.metrics.admin_request(caller.role.label(), "allowed");
        route(gateway, &id, req, &caller).await
    };
    if audited {
        let target = resp
            .extensions()
            .get::<AuditTarget>()
            .map(|t| audit::bounded(&t.0))
            .or(path_target.as_deref());
        let result = resp
            .extensions()
            .get::<ErrorReason>()
            .map_or("ok", |r| &*r.0);
        let entry = audit::Entry {
            time: audit::Entry::time(shared.clock.now()),
            source: audit::Source::Admin,
            identity: Some(&caller.name),
            role: Some(caller.role.label()),
            action,
            target,
            result,
            status: Some(resp.status().as_u16()),
            request_id: id.as_str(),
            peer: at.peer.to_string(),
            serial: None,
            pin: None,
        };
        gateway.history().audit(history::AuditRecord {
            time: entry.time.clone(),
            identity: caller.name.clone(),
            role: caller.role.label(),
            action,
            target: target.map(Into::into),
            result: result.into(),
            status: resp.status().as_u16(),
            request_id: id.as_str().into(),
        });
        if let Err(e) = audit::record(audit_log.as_deref(), &entry).await {
            shared.metrics.audit_failed();
            tracing::error!(error = %e, request_id = id.as_str(), "the audit_log file did not take an entry");
        }
    }
    resp
}

/// The target a change created (a new license's id, a new client's id), for the audit
/// trail, when its path does not name it.
#[derive(Debug, Clone)]
pub(super) struct AuditTarget(pub Box<str>);

/// The `error` of a refusal, for the audit trail.
#[derive(Debug, Clone)]
struct ErrorReason(Box<str>);

/// Route an authorized admin request.
async fn route(
    gateway: &Gateway,
    id: &RequestId,
    req: Request<Incoming>,
    caller: &access::Caller,
) -> AdminResponse {
    let id = *id;
    let shared = gateway.shared();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => json(&id, StatusCode::OK, &status::view(gateway, caller)),
        (&Method::GET, path) if console::is_console(path) => console::serve(&id, path),
        (&Method::GET, "/healthz") => {
            json(&id, StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (&Method::GET, "/readyz") => {
            let generation = shared.generation.load();
            let snap = &generation.snapshot;
            let bound = snap
                .listeners
                .iter()
                .all(|l| gateway.local_addr(&l.name).is_some());
            let body = serde_json::json!({
                "status": if bound { "ready" } else { "starting" },
                "listeners": snap.listeners.len(),
                "routes": snap.route_count(),
                "state": state_view(generation.shared_state()),
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
            let generation = shared.generation.load();
            let counts = generation
                .licensing
                .as_ref()
                .map(|l| l.service.book().counts(shared.clock.now()));
            shared.metrics.set_license_counts(counts);
            shared.metrics.fold_token_cache(&generation.snapshot.tokens);
            shared.metrics.set_state_store(generation.shared_state());
            let upstreams = generation.upstreams();
            shared
                .metrics
                .set_upstream_connections(upstreams.iter().map(|u| {
                    let (h1, h2) = u.open_connections();
                    (&**u.name(), h1, h2)
                }));
            shared
                .metrics
                .set_target_health(upstreams.iter().flat_map(|u| {
                    u.targets()
                        .iter()
                        .map(|t| (&**u.name(), t.authority.as_str(), t.healthy()))
                }));
            let mut resp = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp.headers_mut().insert(X_REQUEST_ID, id.header_value());
            resp
        }
        (&Method::GET, "/upstreams") => {
            let generation = shared.generation.load();
            let body = serde_json::json!({
                "upstreams": generation
                    .upstreams()
                    .iter()
                    .map(|u| u.view())
                    .collect::<Vec<_>>(),
            });
            json(&id, StatusCode::OK, &body)
        }
        (&Method::GET, "/config") => {
            let generation = shared.generation.load();
            let snap = &generation.snapshot;
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
        (&Method::GET, "/usage") => usage(&id, &shared.metrics.usage, req.uri().query()),
        (_, "/healthz" | "/readyz" | "/metrics" | "/config" | "/reload" | "/status" | "/usage") => {
            error(&id, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        }
        (_, path) if path == "/licenses" || path.starts_with("/licenses/") => {
            licenses(gateway, &id, req).await
        }
        (_, path) if path.starts_with("/enrollment/machines/") => {
            let generation = shared.generation.load();
            let (e, l) = (generation.enrollment.clone(), generation.licensing.clone());
            let resp = enrollment::revoke_machine(e, l, &id, req, shared.clock.now()).await;
            if resp.status() == StatusCode::OK {
                shared.metrics.enrollment("machine_revoked");
            }
            resp
        }
        (_, path) if path == "/enrollment/tokens" || path.starts_with("/enrollment/tokens/") => {
            let enrollment = shared.generation.load().enrollment.clone();
            let resp = enrollment::handle(enrollment, &id, req, shared.clock.now()).await;
            if resp.status() == StatusCode::CREATED {
                shared.metrics.enrollment("token_made");
            }
            resp
        }
        (_, path) if console::is_console(path) => {
            error(&id, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        }
        (_, path)
            if path == "/clients" || path.starts_with("/clients/") || path == "/keys/rotate" =>
        {
            let issuer = shared.generation.load().issuer.clone();
            issuer::handle(issuer, &id, req, shared.clock.now()).await
        }
        _ => error(&id, StatusCode::NOT_FOUND, "not_found"),
    }
}

/// `GET /usage?by=license|client`: requests, refusals and bytes per caller over the last
/// minute, hour and day (see `crate::usage`), busiest first. The wall clock here and in the
/// access line that counts them.
fn usage(id: &RequestId, usage: &crate::usage::Usage, query: Option<&str>) -> AdminResponse {
    let by = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("by="))
        .unwrap_or("license");
    let Some(by) = crate::usage::By::parse(by) else {
        return json(
            id,
            StatusCode::BAD_REQUEST,
            &serde_json::json!({
                "error": "bad_request",
                "request_id": id.as_str(),
                "detail": "by must be license or client",
            }),
        );
    };
    let now = crate::clock::unix_now();
    json(
        id,
        StatusCode::OK,
        &serde_json::json!({
            "by": by.label(),
            "windows": {"minute": 60, "hour": 3600, "day": 86400},
            "entries": usage.entries(by, now),
            "untracked": usage.untracked(by),
        }),
    )
}

/// `GET /licenses`, `GET /licenses/{id}` (with its quota's use), `POST /licenses` (the
/// license text, or JSON `{"license": "..."}`), `DELETE /licenses/{id}`.
async fn licenses(gateway: &Gateway, id: &RequestId, req: Request<Incoming>) -> AdminResponse {
    let Some(licensing) = gateway.shared().generation.load().licensing.clone() else {
        return error(id, StatusCode::NOT_FOUND, "licenses_not_configured");
    };
    let now = gateway.shared().clock.now();
    let service = &licensing.service;
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.strip_prefix("/licenses")) {
        (Method::GET, Some("" | "/")) => {
            let list: Vec<serde_json::Value> =
                service.list(now).iter().map(|l| l.to_json()).collect();
            json(id, StatusCode::OK, &serde_json::json!({ "licenses": list }))
        }
        (Method::GET, Some(rest)) if rest.len() > 1 => {
            let license_id = &rest[1..];
            match service.book().get(license_id, now) {
                Some(summary) => {
                    let generation = gateway.shared().generation.load_full();
                    let usage = match summary.quota {
                        Some(q) => match generation.quotas() {
                            Some(quotas) => {
                                let key = crate::limits::QuotaKey::license(&summary.id);
                                let at = crate::license::dates::unix(now);
                                quotas.usage(&key, q, at).await
                            }
                            None => None,
                        },
                        None => None,
                    };
                    json(id, StatusCode::OK, &license_detail(&summary, usage))
                }
                None => error(id, StatusCode::NOT_FOUND, "license_not_found"),
            }
        }
        (Method::POST, Some("" | "/")) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(status) => return error(id, status, "bad_request"),
            };
            let text = license_text(&body);
            let outcome = match blocking(&licensing, move |s| s.activate(&text, now)).await {
                Ok(o) => o,
                Err(status) => return error(id, status, "license_store_failed"),
            };
            match outcome {
                Ok(summary) => {
                    tracing::info!(license = %summary.id, customer = %summary.customer, machine = %summary.machine_id, "license activated");
                    let mut resp = json(id, StatusCode::CREATED, &summary.to_json());
                    resp.extensions_mut()
                        .insert(AuditTarget(summary.id.to_string().into()));
                    resp
                }
                Err(e) => {
                    let (status, reason) = match &e {
                        ActivationError::Duplicate { .. } => {
                            (StatusCode::CONFLICT, "license_duplicate")
                        }
                        ActivationError::Store(e) if e.is_unavailable() => {
                            (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable")
                        }
                        ActivationError::Store(_) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, "license_store_failed")
                        }
                        ActivationError::Refused(_) | ActivationError::AlreadyExpired { .. } => {
                            (StatusCode::BAD_REQUEST, "license_refused")
                        }
                    };
                    tracing::warn!(reason, error = %e, "license activation refused");
                    // A store's error names its file or server: the log has it, the
                    // response does not.
                    if matches!(e, ActivationError::Store(_)) {
                        return error(id, status, reason);
                    }
                    json(
                        id,
                        status,
                        &serde_json::json!({"error": reason, "request_id": id.as_str(), "message": e.to_string()}),
                    )
                }
            }
        }
        (Method::DELETE, Some(rest)) if rest.len() > 1 => {
            let license_id = rest[1..].to_owned();
            let outcome = match blocking(&licensing, move |s| s.revoke(&license_id, now)).await {
                Ok(o) => o,
                Err(status) => return error(id, status, "license_store_failed"),
            };
            match outcome {
                Ok(summary) => {
                    tracing::info!(license = %summary.id, "license revoked");
                    json(id, StatusCode::OK, &summary.to_json())
                }
                Err(RevokeError::NotFound { .. }) => {
                    error(id, StatusCode::NOT_FOUND, "license_not_found")
                }
                Err(RevokeError::Store(e)) if e.is_unavailable() => {
                    tracing::warn!(error = %e, "license revocation could not be stored");
                    error(id, StatusCode::SERVICE_UNAVAILABLE, "state_unavailable")
                }
                Err(e @ RevokeError::Store(_)) => {
                    tracing::error!(error = %e, "license revocation could not be stored");
                    error(
                        id,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "license_store_failed",
                    )
                }
            }
        }
        _ => error(id, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    }
}

/// Run a license change off the async threads: on a fleet's store it is a network round
/// trip. Err: the task died (500).
async fn blocking<T: Send + 'static>(
    licensing: &Arc<crate::state::licenses::Licensing>,
    f: impl FnOnce(&crate::state::licenses::LicenseService) -> T + Send + 'static,
) -> Result<T, StatusCode> {
    let l = Arc::clone(licensing);
    tokio::task::spawn_blocking(move || f(&l.service))
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

/// `GET /licenses/{id}`: the listing's fields and, for a license carrying a quota, its use
/// in the current window: `{"limit","window","used","remaining","resets_at"}`.
fn license_detail(
    summary: &crate::license::LicenseSummary,
    usage: Option<crate::limits::QuotaUse>,
) -> serde_json::Value {
    let mut v = summary.to_json();
    if let (Some(q), Some(usage), Some(o)) = (summary.quota, usage, v.as_object_mut()) {
        o.insert(
            "quota".into(),
            serde_json::json!({
                "limit": q.count,
                "window": q.window.label(),
                "used": usage.used,
                "remaining": q.count.saturating_sub(usage.used),
                "resets_at": crate::license::dates::rfc3339(usage.resets_at),
            }),
        );
    }
    v
}

/// The license text from a body: the text itself, or JSON `{"license": "..."}`.
fn license_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.starts_with('{')
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(trimmed)
        && let Some(l) = v.get("license").and_then(|l| l.as_str())
    {
        return l.trim().to_owned();
    }
    trimmed.to_owned()
}

/// A request body of at most 64 KiB (a license is well under 4 KiB).
pub(super) async fn read_body(req: Request<Incoming>) -> Result<Bytes, StatusCode> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(StatusCode::PAYLOAD_TOO_LARGE),
    }
}

/// The names the admin API answers to.
struct OwnNames {
    local: std::net::SocketAddr,
    hosts: Vec<Box<str>>,
}

impl OwnNames {
    /// Its configured and certificate names, the address it was reached at, and
    /// `localhost` when that address is loopback.
    fn knows(&self, name: &str) -> bool {
        if self.hosts.iter().any(|h| **h == *name) {
            return true;
        }
        let ip = self.local.ip().to_canonical();
        if name == "localhost" || name == "localhost.localdomain" {
            return ip.is_loopback();
        }
        crate::routing::names::ip_literal(name).is_some_and(|n| n == ip)
    }
}

/// Why a request is refused before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OriginRefusal {
    /// Host names none of the admin API's own names (or is missing or malformed).
    Misdirected,
    /// A state-changing request from a page of another origin.
    CrossOrigin,
}

impl OriginRefusal {
    fn status(self) -> StatusCode {
        match self {
            OriginRefusal::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            OriginRefusal::CrossOrigin => StatusCode::FORBIDDEN,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            OriginRefusal::Misdirected => "misdirected_request",
            OriginRefusal::CrossOrigin => "cross_origin_refused",
        }
    }
}

/// Host must be one of the admin API's own names; a request that changes something must not
/// carry an `Origin` (or `Sec-Fetch-Site`) of another site.
fn check_origin<B>(own: &OwnNames, req: &Request<B>) -> Result<(), OriginRefusal> {
    let host = match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().map_err(|_| OriginRefusal::Misdirected))
            .transpose()?,
    };
    let host = host.ok_or(OriginRefusal::Misdirected)?;
    let host = crate::routing::host::canonical(host).map_err(|_| OriginRefusal::Misdirected)?;
    if !own.knows(&host.name) {
        return Err(OriginRefusal::Misdirected);
    }
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if req
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site")
    {
        return Err(OriginRefusal::CrossOrigin);
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        // Tools (curl, scripts) send no Origin; browsers always do on a cross-origin POST.
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| OriginRefusal::CrossOrigin)?;
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or(OriginRefusal::CrossOrigin)?;
    let theirs =
        crate::routing::host::canonical(authority).map_err(|_| OriginRefusal::CrossOrigin)?;
    if theirs.name != host.name || theirs.port != host.port {
        return Err(OriginRefusal::CrossOrigin);
    }
    Ok(())
}

pub(super) fn json(id: &RequestId, status: StatusCode, body: &serde_json::Value) -> AdminResponse {
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
    if let Some(reason) = body.get("error").and_then(|e| e.as_str()) {
        resp.extensions_mut().insert(ErrorReason(reason.into()));
    }
    resp
}

pub(super) fn error(id: &RequestId, status: StatusCode, reason: &str) -> AdminResponse {
    json(
        id,
        status,
        &serde_json::json!({"error": reason, "request_id": id.as_str()}),
    )
}
