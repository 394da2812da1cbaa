//! The request path, in order. This is the only place that knows the order of the stages;
//! each stage lives in the module named after it.
//!
//! ```text
//! accept -> proxy protocol -> tls -> identity -> framing -> ip_filter -> [issuer]
//!        -> routing -> identity, ip_filter (route) -> license -> token -> upstream -> record
//! ```
//! `[issuer]`: requests to the gateway's own token issuer's paths, on its listener, are
//! answered by it instead of being routed.
//! accept and tls (with the PROXY header, the listener's IP lists before the handshake
//! and the identity digest) run once per connection, in `server/connection.rs`.
//! Listener-level policy runs before routing, so a refused client cannot probe which
//! routes exist. Routing sees the canonical host and path, which the upstream receives.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::context::{ConnContext, RequestContext};
use crate::denial::Denial;
use crate::generation::{Generation, RouteParts};
use crate::ip_filter::ClientAddr;
use crate::metrics::Metrics;
use crate::record::AccessLine;
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::routing::Route;
use crate::token::Claims;
use crate::upstream::{self, ForwardLog, ResponseBody};

/// What the policy stages learned on the way, kept for the response, the metrics and the
/// log whatever the outcome.
#[derive(Debug)]
pub struct Seen<'s> {
    /// The route selected, once routing has run.
    pub route: Option<&'s Arc<Route>>,
    /// The client's address as the IP stage judged it (after trusted X-Forwarded-For).
    pub client_ip: IpAddr,
    /// The bearer challenge, when the token stage refused.
    pub www_authenticate: Option<HeaderValue>,
    /// Admitted on an expired license's grace period.
    pub in_grace: bool,
}

/// Where an admitted request goes.
#[derive(Debug)]
pub enum Admitted<'s> {
    /// The gateway's own token issuer answers it (listener policy passed).
    Issuer(ClientAddr, Canonical),
    /// The route's upstream, with the client as judged and the token's claims.
    Route {
        route: &'s Arc<Route>,
        /// The route's upstream and metric series in this generation.
        parts: &'s RouteParts,
        client: ClientAddr,
        claims: Option<Arc<Claims>>,
        canonical: Canonical,
    },
}

/// What the request becomes on its way on: the canonical path and host it was judged by.
#[derive(Debug, Default)]
pub struct Canonical {
    /// The canonical path with the query, when it differs from the path as sent.
    pub path: Option<PathAndQuery>,
    /// The Host header for the upstream (canonical host, the client's port).
    pub host: Option<HeaderValue>,
}

impl Canonical {
    fn of(target: &crate::routing::RequestTarget<'_>, uri: &http::Uri) -> Result<Self, Denial> {
        let path = match &target.path.path {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(p) => {
                let text = match uri.query() {
                    Some(q) => format!("{p}?{q}"),
                    None => p.clone(),
                };
                Some(PathAndQuery::try_from(text).map_err(|_| Denial::InvalidPath)?)
            }
        };
        Ok(Canonical {
            path,
            host: target.host_header(),
        })
    }

    /// Put the canonical path into the request's target (the query stays as sent).
    pub fn apply_path(&mut self, uri: &mut http::Uri) {
        if let Some(p) = self.path.take() {
            let mut parts = std::mem::take(uri).into_parts();
            parts.path_and_query = Some(p);
            if let Ok(u) = http::Uri::from_parts(parts) {
                *uri = u;
            }
        }
    }
}

/// Every policy stage, in order, on a request's head: framing, listener identity and IP
/// lists, [issuer], routing, route identity and IP lists, license, token. No I/O and no
/// body: the same function decides for the server and for the pipeline bench.
pub fn admit<'s, B>(
    generation: &'s Generation,
    conn: &ConnContext,
    req: &Request<B>,
    now: SystemTime,
    seen: &mut Seen<'s>,
) -> Result<Admitted<'s>, Denial> {
    let snapshot = &*generation.snapshot;
    // Framing first: nothing else may read a request whose length is in doubt.
    crate::framing::check(conn.ambiguous_framing(), req.headers())?;
    crate::framing::check_header_names(req.headers(), snapshot.underscores_in_headers)?;

    // A listener removed by a reload stops serving routes at once; its socket goes later.
    let listener = snapshot.listener(&conn.listener).ok_or(Denial::NoRoute)?;
    crate::identity::check(&listener.pins, conn.identity.as_ref())?;
    let origin = crate::ip_filter::Origin {
        ip: conn.origin.ip(),
        proxy_spoke_for_itself: conn.proxy_spoke_for_itself,
    };
    let client = crate::ip_filter::check_listener(&listener.ip, origin, req.headers())?;
    seen.client_ip = client.ip;

    // One canonical host and path, decided once: routing matches them and the upstream
    // receives them, so no spelling reaches a route's upstream past that route's policy.
    let target = crate::routing::request_target(req.uri(), req.headers(), req.version())?;

    // The gateway's own token issuer answers its paths on its listener, before routing:
    // its endpoints are not routes, and listener policy (pins, IP lists) still applied.
    if let Some(own) = &snapshot.issuer
        && *own.listener == *conn.listener
        && own.handles(&target.path.path)
        && generation.issuer.is_some()
    {
        return Ok(Admitted::Issuer(client, Canonical::of(&target, req.uri())?));
    }

    let route = listener
        .routes
        .select(target.host_name(), &target.path, req.method())?;
    seen.route = Some(route);
    crate::identity::check(&route.pins, conn.identity.as_ref())?;
    crate::ip_filter::check_route(route, &client)?;
    let license = crate::license::check(
        generation.licensing.as_deref().map(|l| &**l.service.book()),
        route,
        conn.identity.as_ref(),
        client.ip,
        now,
    )?;
    seen.in_grace = license.as_ref().is_some_and(|g| g.in_grace);
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
            seen.www_authenticate = Some(d.www_authenticate(&route.auth));
            Denial::Token(d)
        })?;
    let parts = generation.route(route).ok_or(Denial::NoRoute)?;
    Ok(Admitted::Route {
        route,
        parts,
        client,
        claims,
        canonical: Canonical::of(&target, req.uri())?,
    })
}

/// Handle one request. Never fails: every refusal becomes its JSON denial.
///
/// `generation` is loaded once for the whole request (a reload mid-request does not mix two
/// configs), and `now` read once (every time-dependent stage judges the same instant).
pub async fn handle(
    generation: Arc<Generation>,
    metrics: &Metrics,
    now: SystemTime,
    conn: &ConnContext,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let request_id = RequestId::next();
    let snapshot = &*generation.snapshot;
    let method = req.method().clone();
    // A refcount bump, not a copy: the log needs the path after the request is consumed.
    let path_and_query = req.uri().path_and_query().cloned();

    let mut seen = Seen {
        route: None,
        client_ip: conn.origin.ip().to_canonical(),
        www_authenticate: None,
        in_grace: false,
    };
    let mut issuer_name = None;
    let mut forwarded = ForwardLog::default();
    let mut req = req;
    let result = async {
        match admit(&generation, conn, &req, now, &mut seen)? {
            Admitted::Issuer(client, mut canonical) => {
                canonical.apply_path(req.uri_mut());
                // Both were there a moment ago, in `admit`; a reload may have just gone by.
                let (Some(own), Some(issuer)) = (&snapshot.issuer, &generation.issuer) else {
                    return Err(Denial::NoRoute);
                };
                issuer_name = Some(own.name.clone());
                let resp =
                    crate::issuer::handle(issuer, req, client.ip, conn.identity.as_ref(), now)
                        .await;
                let (mut parts, body) = resp.into_parts();
                parts
                    .headers
                    .insert(X_REQUEST_ID, request_id.header_value());
                let body = match http_body_util::BodyExt::collect(body).await {
                    Ok(collected) => collected.to_bytes(),
                    Err(never) => match never {},
                };
                Ok(Response::from_parts(parts, ResponseBody::from(body)))
            }
            Admitted::Route {
                route,
                parts,
                client,
                claims,
                mut canonical,
            } => {
                canonical.apply_path(req.uri_mut());
                let ctx = RequestContext {
                    host: canonical.host,
                    request_id: &request_id,
                    request_id_header: request_id.header_value(),
                    conn,
                    client,
                    route,
                    parts,
                    identity_headers: &snapshot.identity_headers,
                    claims,
                    claim_headers: &snapshot.claim_headers,
                    underscores_in_headers: snapshot.underscores_in_headers,
                    metrics,
                };
                upstream::forward(&ctx, req, &mut forwarded).await
            }
        }
    }
    .await;
    let Seen {
        route: matched,
        client_ip,
        www_authenticate,
        in_grace,
    } = seen;
    let route_name = matched.map(|r| r.name.clone()).or(issuer_name);

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
                metrics.license_grace();
            }
            (resp, None)
        }
        Err(d) => {
            metrics.denial(d);
            let mut resp = d.response(&request_id);
            if let Some(challenge) = www_authenticate {
                resp.headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, challenge);
            }
            (resp, Some(d))
        }
    };
    match matched.and_then(|r| Some((r, generation.route(r)?))) {
        Some((route, parts)) => metrics.route_request(
            &parts.series,
            &route.name,
            &method,
            response.status(),
            started.elapsed(),
        ),
        None => metrics.request(
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
