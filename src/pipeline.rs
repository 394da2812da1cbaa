//! The request path, in order. This is the only place that knows the order of the stages;
//! each stage lives in the module named after it.
//!
//! ```text
//! accept -> proxy protocol -> tls -> identity -> framing -> ip_filter -> host names
//!        -> [issuer] -> routing -> identity, ip_filter (route) -> license -> token
//!        -> upstream -> record
//! ```
//! `[issuer]`: requests to the gateway's own token issuer's paths, on its listener, are
//! answered by it instead of being routed.
//! accept and tls (with the PROXY header, the listener's IP lists before the handshake
//! and the identity digest) run once per connection, in `server/connection.rs`.
//! Listener-level policy runs before routing, so a refused client cannot probe which
//! routes exist. Routing sees the canonical host and path, which the upstream receives.

use std::sync::Arc;
use std::time::SystemTime;

use http::uri::PathAndQuery;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::context::{ConnContext, Exchange};
use crate::denial::Denial;
use crate::generation::Generation;
use crate::metrics::Metrics;
use crate::request_id::X_REQUEST_ID;
use crate::upstream::{self, ResponseBody};

/// Where an admitted request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// The gateway's own token issuer answers it (listener policy passed).
    Issuer,
    /// The EST enrollment endpoints answer it (listener policy passed).
    Enrollment,
    /// The route's upstream (the route, client and claims are in the exchange).
    Route,
}

/// Every policy stage, in order, on a request's head: framing, listener identity and IP
/// lists, the listener's host names (421), [issuer], routing, route identity and IP lists,
/// license, token. Each stage's outcome goes into the exchange. No body, and no I/O unless
/// the fleet shares its rate state (then a limit asks Redis): the same function decides for
/// the server and for the pipeline bench, where nothing waits.
pub async fn admit<'g, B>(
    generation: &'g Generation,
    conn: &ConnContext,
    req: &Request<B>,
    now: SystemTime,
    x: &mut Exchange<'g>,
) -> Result<Admitted, Denial> {
    let snapshot = &*generation.snapshot;
    // Framing first: nothing else may read a request whose length is in doubt.
    crate::framing::check(conn.ambiguous_framing(), req.headers())?;
    crate::framing::check_header_names(req.headers(), snapshot.underscores_in_headers)?;

    // A listener removed by a reload stops serving routes at once; its socket goes later.
    let listener = snapshot.listener(&conn.listener).ok_or(Denial::NoRoute)?;
    crate::identity::check(&listener.pins, conn.identity.as_ref())?;
    // A revoked enrolled machine's key, on every listener and route (its license too). The
    // handshake refuses it already; this catches connections opened before the revocation
    // and resumed sessions, which skip certificate verification.
    if let (Some(e), Some(id)) = (&generation.enrollment, conn.identity.as_ref())
        && e.is_revoked_key(&id.spki_sha256, now)
    {
        return Err(Denial::License(crate::denial::LicenseDenial::Revoked));
    }
    let origin = crate::ip_filter::Origin {
        ip: conn.origin.ip(),
        proxy_spoke_for_itself: conn.proxy_spoke_for_itself,
    };
    x.client = crate::ip_filter::check_listener(&listener.ip, origin, req.headers())?;

    // One canonical host and path, decided once: routing matches them and the upstream
    // receives them, so no spelling reaches a route's upstream past that route's policy.
    let target = crate::routing::request_target(req.uri(), req.headers(), req.version())?;
    x.canonical_path = canonical_path(&target, req.uri())?;
    x.host = target.host_header();
    // Only the listener's own names, and only the one TLS was opened for: a route cannot be
    // reached under another name, the issuer's paths included.
    crate::routing::names::check(&listener.names, conn.sni.as_deref(), target.host_name())?;

    // The gateway's own token issuer answers its paths on its listener, before routing:
    // its endpoints are not routes, and listener policy (pins, IP lists) still applied.
    if let (Some(own), Some(_)) = (&snapshot.issuer, &generation.issuer)
        && *own.listener == *conn.listener
        && own.handles(&target.path.path)
    {
        x.issuer = Some(own.name.clone());
        return Ok(Admitted::Issuer);
    }
    // Likewise the EST endpoints on the enrollment listener.
    if let (Some(e), Some(_)) = (&snapshot.enrollment, &generation.enrollment)
        && *e.listener == *conn.listener
        && crate::enrollment::handles(&target.path.path)
    {
        return Ok(Admitted::Enrollment);
    }

    let route = listener
        .routes
        .select(target.host_name(), &target.path, req.method())?;
    let parts = generation.route(route).ok_or(Denial::NoRoute)?;
    x.route = Some((route, parts));
    crate::identity::check(&route.pins, conn.identity.as_ref())?;
    crate::ip_filter::check_route(route, &x.client)?;
    let license = crate::license::check(
        generation.licensing.as_deref().map(|l| &**l.service.book()),
        route,
        conn.identity.as_ref(),
        x.client.ip,
        now,
    )?;
    x.in_grace = license.as_ref().is_some_and(|g| g.in_grace);
    x.license_id = license.as_ref().map(|g| Arc::clone(&g.license_id));
    // Limits keyed by what is known now run before any token signature is checked.
    let limits = &*route.limits;
    let mut caller = crate::limits::Caller {
        ip: x.client.ip,
        spki: conn.identity.as_ref().map(|i| &i.spki_sha256),
        license: license.as_ref().map(|g| &*g.license_id),
        sub: None,
        client_id: None,
        headers: req.headers(),
    };
    let at = crate::limits::Instant {
        mono_ns: x.mono_ns,
        unix_us: crate::clock::unix_us(now),
    };
    if !limits.is_empty() {
        crate::limits::check(
            limits,
            true,
            &caller,
            generation.limiter(),
            at,
            &mut x.slots,
        )
        .await?;
    }
    let presenter = crate::token::Presenter::Connection(conn.identity.as_ref());
    x.claims = snapshot
        .tokens
        .authorize_for(req.headers(), &route.auth, presenter, now)
        .map_err(Denial::Token)?;
    if limits.iter().any(|l| !l.key.before_token()) {
        caller.sub = x.claims.as_ref().and_then(|c| c.sub.as_deref());
        caller.client_id = x.claims.as_ref().and_then(|c| c.client_id.as_deref());
        crate::limits::check(
            limits,
            false,
            &caller,
            generation.limiter(),
            at,
            &mut x.slots,
        )
        .await?;
    }
    if crate::upstream::is_websocket_upgrade(req) && !route.websocket {
        return Err(Denial::WebSocketNotAllowed);
    }
    // Quotas last: only a request every other stage admitted uses up a plan.
    let license_quota = license
        .as_ref()
        .and_then(|g| g.quota.map(|q| (&*g.license_id, q)));
    if license_quota.is_some() || limits.iter().any(|l| l.quota.is_some()) {
        let Some(quotas) = generation.quotas() else {
            // Config validation makes a store exist wherever a quota can; never count on
            // that to admit.
            return Err(Denial::QuotaExhausted(crate::denial::LimitHit::ALL[0]));
        };
        caller.sub = x.claims.as_ref().and_then(|c| c.sub.as_deref());
        caller.client_id = x.claims.as_ref().and_then(|c| c.client_id.as_deref());
        crate::limits::take_quotas(
            limits,
            license_quota,
            &caller,
            quotas,
            crate::license::dates::unix(now),
        )
        .await?;
    }
    Ok(Admitted::Route)
}

/// The canonical path with the query as sent, when it differs from the path as sent.
fn canonical_path(
    target: &crate::routing::RequestTarget<'_>,
    uri: &http::Uri,
) -> Result<Option<PathAndQuery>, Denial> {
    match &target.path.path {
        std::borrow::Cow::Borrowed(_) => Ok(None),
        std::borrow::Cow::Owned(p) => {
            let text = match uri.query() {
                Some(q) => format!("{p}?{q}"),
                None => p.clone(),
            };
            PathAndQuery::try_from(text)
                .map(Some)
                .map_err(|_| Denial::InvalidPath)
        }
    }
}

/// Put the canonical path into the request's target (the query stays as sent).
fn apply_path(path: Option<PathAndQuery>, uri: &mut http::Uri) {
    if let Some(p) = path {
        let mut parts = std::mem::take(uri).into_parts();
        parts.path_and_query = Some(p);
        if let Ok(u) = http::Uri::from_parts(parts) {
            *uri = u;
        }
    }
}

/// Handle one request. Never fails: every refusal becomes its JSON denial.
///
/// `generation` is loaded once for the whole request (a reload mid-request does not mix two
/// configs), and `clock` read once (every time-dependent stage judges the same instant).
pub async fn handle(
    generation: Arc<Generation>,
    metrics: &Metrics,
    clock: &crate::clock::Clock,
    conn: &Arc<ConnContext>,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    let now = clock.now();
    // A refcount bump, not a copy: the log needs the path after the request is consumed.
    let mut x = Exchange::new(
        conn,
        req.method().clone(),
        req.uri().path_and_query().cloned(),
    );
    x.mono_ns = clock.mono_ns();
    let result = async {
        let admitted = admit(&generation, conn, &req, now, &mut x).await;
        // After admission, which judged whether the caller is a trusted proxy; before the
        // upstream, which is told the trace. Off: one Option check.
        if let Some(telemetry) = &generation.telemetry {
            let mut span = telemetry.begin(req.headers(), x.client.via_trusted_proxy, now);
            span.verdict(admitted.as_ref().err().map(|d| d.reason()));
            x.trace = Some(span);
        }
        let admitted = admitted?;
        // Whoever answers, it acts on the path the stages judged.
        apply_path(x.canonical_path.take(), req.uri_mut());
        match admitted {
            Admitted::Issuer => {
                let Some(issuer) = &generation.issuer else {
                    return Err(Denial::NoRoute);
                };
                let resp =
                    crate::issuer::handle(issuer, req, x.client.ip, conn.identity.as_ref(), now)
                        .await;
                Ok(own_answer(resp, &x).await)
            }
            Admitted::Enrollment => {
                let Some(enrollment) = &generation.enrollment else {
                    return Err(Denial::NoRoute);
                };
                let id = x.request_id;
                let path = req.uri().path().to_owned();
                let resp = crate::enrollment::handle(
                    enrollment,
                    generation.licensing.as_ref(),
                    req,
                    conn.identity.as_ref(),
                    (id.as_str(), conn.peer),
                    now,
                )
                .await;
                if resp
                    .extensions()
                    .get::<crate::enrollment::AuditFailed>()
                    .is_some()
                {
                    metrics.audit_failed();
                }
                if let Some(event) = crate::enrollment::event_of(&path, resp.status()) {
                    metrics.enrollment(event);
                }
                Ok(own_answer(resp, &x).await)
            }
            Admitted::Route => {
                upstream::forward(
                    &mut x,
                    conn,
                    (&generation.snapshot, &generation.scrub),
                    metrics,
                    req,
                )
                .await
            }
        }
    }
    .await;

    let (mut response, denial) = match result {
        Ok(mut resp) => {
            if x.in_grace {
                // RFC 9111 Warning 299 ("miscellaneous persistent warning"): clients and
                // operators see that the machine runs on its grace period.
                resp.headers_mut().insert(
                    http::header::WARNING,
                    http::HeaderValue::from_static(
                        "299 portcullis \"machine license expired; in grace period\"",
                    ),
                );
                metrics.license_grace();
            }
            (resp, None)
        }
        Err(d) => {
            metrics.denial(d);
            if let Some((route, _)) = x.route {
                metrics.limited(&route.name, d);
            }
            let mut resp = d.response(&x.request_id);
            // RFC 6750: a token refusal carries its challenge, built from the kind of
            // refusal and the route's requirement (never from the token).
            if let (Denial::Token(t), Some((route, _))) = (d, x.route) {
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    t.www_authenticate(&route.auth),
                );
            }
            (resp, Some(d))
        }
    };
    let elapsed = x.started.elapsed();
    match x.route {
        Some((route, parts)) => metrics.route_request(
            &parts.series,
            &route.name,
            &x.method,
            response.status(),
            elapsed,
        ),
        None => metrics.request(
            x.issuer.as_deref().unwrap_or("-"),
            &x.method,
            response.status(),
            elapsed,
        ),
    }
    let status = response.status().as_u16();
    // In-flight slots are held until the client has the whole body.
    response.body_mut().hold_slots(std::mem::take(&mut x.slots));
    // The span ends with the body, as the access line is written; both carry the trace id.
    let span = x.trace.take().map(|mut span| {
        if !span.is_recorded() {
            return span;
        }
        let route = x.route_name();
        span.finish(&crate::telemetry::Finished {
            request_id: x.request_id.as_str(),
            method: &x.method,
            path: x.path.as_ref().map(|p| p.path()),
            route: route.as_deref(),
            client_ip: x.client.ip,
            status,
            denial: denial.map(Denial::reason),
        });
        span
    });
    let mut line = x.into_access_line(conn, status, denial, &metrics.usage);
    line.grpc_status = crate::record::grpc_status(response.headers());
    if let Some(span) = span {
        line.trace_id = Some(span.context.trace_id);
        if let Some(recorded) = span.into_recorded() {
            response.body_mut().attach_span(recorded);
        }
    }
    response.body_mut().attach_log(line);
    response
}

/// An answer of the gateway's own endpoints (issuer, enrollment), with the request id.
async fn own_answer(
    resp: Response<http_body_util::Full<bytes::Bytes>>,
    x: &Exchange<'_>,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .insert(X_REQUEST_ID, x.request_id_header.clone());
    let body = match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    Response::from_parts(parts, ResponseBody::from(body))
}

/// A request head the framing scanner refused below hyper (hyper never saw it): its
/// denial response, counted like any other, and its access line. The method and path are
/// unknown (the head may not even have a request line), so the line says `-`.
pub fn refused_head(
    metrics: &Metrics,
    conn: &Arc<ConnContext>,
    denial: Denial,
) -> (Response<bytes::Bytes>, crate::record::AccessLine) {
    let method = http::Method::from_bytes(b"-").unwrap_or_default();
    let x = Exchange::new(conn, method, None);
    metrics.denial(denial);
    let response = denial.response(&x.request_id);
    metrics.request("-", &x.method, response.status(), x.started.elapsed());
    let status = response.status().as_u16();
    let line = x.into_access_line(conn, status, Some(denial), &metrics.usage);
    (response, line)
}
