//! The request path, in order. This is the only place that knows the order of the stages;
//! each stage lives in the module named after it.
//!
//! ```text
//! accept -> tls -> framing -> identity -> ip_filter -> [issuer] -> routing
//!        -> identity, ip_filter (route) -> license -> token -> forward -> record
//! ```
//! `[issuer]`: requests to the gateway's own token issuer's paths, on its listener, are
//! answered by it instead of being routed.
//! accept and tls (with the PROXY header, the listener's IP lists before the handshake
//! and the identity digest) run once per connection, in `listener.rs`. Listener-level
//! policy runs before routing, so a refused client cannot probe which routes exist.

use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::Shared;
use crate::context::{ConnContext, RequestContext, RequestId, X_REQUEST_ID};
use crate::denial::Denial;
use crate::forward::{self, ForwardLog, ResponseBody};
use crate::record::AccessLine;

/// Handle one request. Never fails: every refusal becomes its JSON denial.
pub async fn handle(
    shared: &Shared,
    conn: &ConnContext,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let request_id = RequestId::next();
    // One snapshot for the whole request: a reload mid-request does not mix two configs.
    let snapshot = shared.snapshot.load_full();
    // One clock reading per request: every time-dependent stage judges the same instant.
    let now = shared.clock.now();
    let mut in_grace = false;
    let mut www_authenticate = None;
    let method = req.method().clone();
    // A refcount bump, not a copy: the log needs the path after the request is consumed.
    let path_and_query = req.uri().path_and_query().cloned();

    let mut route_name = None;
    let mut matched = None;
    let mut client_ip = conn.origin.ip().to_canonical();
    let mut forwarded = ForwardLog::default();
    let result = async {
        // Framing first: nothing else may read a request whose length is in doubt.
        crate::framing::check(conn, req.headers())?;

        // A listener removed by a reload stops serving routes at once; its socket goes later.
        let listener = snapshot.listener(&conn.listener).ok_or(Denial::NoRoute)?;
        crate::identity::check(&listener.pins, conn)?;
        let client = crate::ip_filter::check_listener(listener, conn, req.headers())?;
        client_ip = client.ip;

        // The gateway's own token issuer answers its paths on its listener, before routing:
        // its endpoints are not routes, and listener policy (pins, IP lists) still applied.
        if let Some(own) = &snapshot.issuer
            && *own.listener == *conn.listener
            && own.handles(req.uri().path())
            && let Some(issuer) = shared.issuer.load_full()
        {
            route_name = Some(own.name.clone());
            let resp =
                crate::issuer::handle(&issuer, req, client.ip, conn.identity.as_ref(), now).await;
            let (mut parts, body) = resp.into_parts();
            parts
                .headers
                .insert(X_REQUEST_ID, request_id.header_value());
            let body = match http_body_util::BodyExt::collect(body).await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            return Ok(Response::from_parts(parts, ResponseBody::from(body)));
        }

        let host = req.uri().host().or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let route = listener
            .routes
            .select(host, req.uri().path(), req.method())?;
        route_name = Some(route.name.clone());
        matched = Some(route);
        crate::identity::check(&route.pins, conn)?;
        crate::ip_filter::check_route(route, &client)?;
        let licensing = shared.licensing.load();
        let license = crate::license::check(
            licensing.as_deref(),
            route,
            conn.identity.as_ref(),
            client.ip,
            now,
        )?;
        in_grace = license.as_ref().is_some_and(|g| g.in_grace);
        let claims = snapshot
            .tokens
            .authorize_for(
                req.headers(),
                &route.auth,
                crate::token::Presenter::Connection(conn.identity.as_ref()),
                now,
            )
            .map_err(|d| {
                // RFC 6750: the challenge says what was wrong (never echoing the token).
                www_authenticate = Some(d.www_authenticate(&route.auth));
                Denial::Token(d)
            })?;

        let ctx = RequestContext {
            request_id: &request_id,
            request_id_header: request_id.header_value(),
            conn,
            client,
            route,
            identity_headers: &snapshot.identity_headers,
            claims,
            claim_headers: &snapshot.claim_headers,
            metrics: &shared.metrics,
        };
        forward::forward(&ctx, req, &mut forwarded).await
    }
    .await;

    let (response, denial) = match result {
        Ok(mut resp) => {
            if in_grace {
                // RFC 9111 Warning 299 ("miscellaneous persistent warning"): clients and
                // operators see that the machine runs on its grace period.
                resp.headers_mut().insert(
                    http::header::WARNING,
                    http::HeaderValue::from_static(
                        "299 portcullis \"machine license expired; in grace period\"",
                    ),
                );
                shared.metrics.license_grace();
            }
            (resp, None)
        }
        Err(d) => {
            shared.metrics.denial(d);
            let mut resp = d.response(&request_id);
            if let Some(challenge) = www_authenticate {
                resp.headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, challenge);
            }
            (resp, Some(d))
        }
    };
    match matched {
        Some(route) => shared.metrics.route_request(
            &route.series,
            &route.name,
            &method,
            response.status(),
            started.elapsed(),
        ),
        None => shared.metrics.request(
            route_name.as_deref().unwrap_or("-"),
            &method,
            response.status(),
            started.elapsed(),
        ),
    }
    let status = response.status().as_u16();
    let mut response = response;
    response.body_mut().attach_log(AccessLine {
        request_id,
        listener: conn.listener.clone(),
        route: route_name,
        method,
        path: path_and_query,
        status,
        denial,
        started,
        client_ip,
        target: forwarded.target,
        bytes_in: forwarded.bytes_in,
        bytes_out: 0,
    });
    response
}
