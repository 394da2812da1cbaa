//! Body types: the request body on its way up (with the route's size limit enforced while
//! it streams) and the response body on its way down (the upstream's, or a small denial).

use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::multiplex::H2Body;
use super::pool::{ExchangeError, Lease};
use crate::record::AccessLine;

/// The request body grew past the route's `max_body_bytes` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the route's max_body_bytes")]
pub struct BodyTooLarge;

/// The client's request body failed while streaming (a malformed chunk, a connection
/// closed before the declared length): the client's error, not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("client request body failed: {0}")]
pub struct ClientBodyError(#[source] hyper::Error);

/// Whether an exchange error was caused by `E` somewhere in its chain of sources.
fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<E>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Whether a client error was caused by [`BodyTooLarge`].
pub(crate) fn is_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<BodyTooLarge>(e)
}

/// Whether an exchange failed because the client's body did.
pub(crate) fn is_client_body_error(e: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<ClientBodyError>(e)
}

/// The client's body, passed through frame by frame, failing once more than `remaining`
/// bytes have been seen.
pub struct RequestBody {
    /// `None`: no body (a retried request's copy, a health check).
    inner: Option<Incoming>,
    remaining: u64,
    /// Bytes passed so far, for the access log (only for requests that have a body).
    seen: Option<Arc<AtomicU64>>,
    /// A body of the gateway's own (a token request's form), sent before anything else.
    own: Option<Bytes>,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: Option<u64>, seen: Option<Arc<AtomicU64>>) -> Self {
        RequestBody {
            inner: Some(inner),
            remaining: limit.unwrap_or(u64::MAX),
            seen,
            own: None,
        }
    }

    /// No body at all.
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            remaining: 0,
            seen: None,
            own: None,
        }
    }

    /// A body of the gateway's own, whole.
    pub fn full(bytes: Bytes) -> Self {
        RequestBody {
            inner: None,
            remaining: 0,
            seen: None,
            own: Some(bytes),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(own) = self.own.take() {
            return Poll::Ready(Some(Ok(Frame::data(own))));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    self.remaining -= len;
                    if let Some(seen) = &self.seen {
                        seen.fetch_add(len, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.own.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(own) = &self.own {
            return SizeHint::with_exact(own.len() as u64);
        }
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// What the client receives: the upstream's streamed body or a small body of our own,
/// with the access-log line that is written when the body is done.
pub struct ResponseBody {
    kind: Kind,
    log: Option<AccessLine>,
    /// Keeps the request counted as in flight on its connection until this is dropped.
    in_flight: Option<crate::context::InFlight>,
    /// The limits' in-flight slots, given back when this is dropped.
    slots: Vec<crate::limits::InFlightSlot>,
    /// The request's span, ended when the body is done (like the access line).
    span: Option<crate::telemetry::RecordedSpan>,
}

/// An upstream's response body, by the HTTP spoken to it: hyper's for HTTP/1.1, the h2
/// stream's for HTTP/2 ([`super::multiplex`]).
pub enum UpstreamBody {
    Http1(Incoming),
    H2(H2Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        match self.get_mut() {
            UpstreamBody::Http1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(ExchangeError::Http1))),
            UpstreamBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(ExchangeError::H2))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
        }
    }
}

enum Kind {
    /// The upstream's body and the connection it arrives on, returned to its pool when the
    /// body has ended, and its `body_timeout`.
    Upstream(UpstreamBody, Option<Lease>, Option<Idle>),
    Full(Option<Bytes>),
}

/// The upstream's `body_timeout`: its timer is made only when the body first waits, so a
/// body that arrives whole (most do) costs no timer.
struct Idle {
    after: std::time::Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Idle {
    /// Whether the body has now waited longer than allowed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let after = self.after;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Data arrived: the wait starts again.
    fn reset(&mut self) {
        if let Some(t) = self.timer.as_mut() {
            t.as_mut().reset(tokio::time::Instant::now() + self.after);
        }
    }
}

/// A response body that paused longer than the upstream's `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's response body paused longer than body_timeout")]
pub struct BodyTimeout;

impl ResponseBody {
    /// The upstream's body, arriving on the connection `lease`; `body_timeout` bounds its
    /// pauses.
    pub(crate) fn upstream(
        body: UpstreamBody,
        lease: Lease,
        body_timeout: Option<std::time::Duration>,
    ) -> Self {
        let lease = if body.is_end_stream() {
            // Nothing to read (204, 304, HEAD, Content-Length: 0): reusable at once.
            lease.checkin();
            None
        } else {
            Some(lease)
        };
        ResponseBody {
            kind: Kind::Upstream(
                body,
                lease,
                body_timeout.map(|after| Idle { after, timer: None }),
            ),
            log: None,
            in_flight: None,
            slots: Vec::new(),
            span: None,
        }
    }

    /// Attach the access-log line; it is written when this body is dropped.
    pub fn attach_log(&mut self, line: AccessLine) {
        self.log = Some(line);
    }

    /// Attach the request's span; it ends when this body is dropped.
    pub fn attach_span(&mut self, span: crate::telemetry::RecordedSpan) {
        self.span = Some(span);
    }

    /// Hold the limits' in-flight slots until this body is dropped.
    pub fn hold_slots(&mut self, slots: Vec<crate::limits::InFlightSlot>) {
        self.slots = slots;
    }

    /// Count the request in flight until this body is dropped.
    pub fn hold(&mut self, mut in_flight: crate::context::InFlight) {
        // The head is ready: from here the client has to take the response.
        in_flight.waiting_for_client(true);
        self.in_flight = Some(in_flight);
    }
}

fn checkin(lease: &mut Option<Lease>) {
    if let Some(lease) = lease.take() {
        lease.checkin();
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(line) = &self.log {
            line.write();
        }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(b: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Full(Some(b)),
            log: None,
            in_flight: None,
            slots: Vec::new(),
            span: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Upstream(b, lease, idle) => {
                let polled = Pin::new(&mut *b).poll_frame(cx);
                match &polled {
                    // The end, seen as the end or as the last frame (hyper stops polling a
                    // body once it reports its end): the connection is free again.
                    Poll::Ready(None) => checkin(lease),
                    Poll::Ready(Some(Ok(_))) if b.is_end_stream() => checkin(lease),
                    // A broken exchange: the connection closes with the lease.
                    Poll::Ready(Some(Err(_))) => *lease = None,
                    Poll::Ready(Some(Ok(_))) => {
                        if let Some(idle) = idle {
                            idle.reset();
                        }
                    }
                    Poll::Pending => {
                        if let Some(idle) = idle
                            && idle.expired(cx)
                        {
                            // The connection may hold the rest: it is closed, not pooled.
                            *lease = None;
                            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                        }
                    }
                }
                polled.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as Self::Error)))
            }
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        };
        if let Some(in_flight) = &mut this.in_flight {
            // Bytes handed over wait for the client to take them; a pending body waits on
            // its upstream, an ended one on nothing.
            in_flight.waiting_for_client(matches!(polled, Poll::Ready(Some(Ok(_)))));
        }
        if let (Poll::Ready(Some(Ok(frame))), Some(log)) = (&polled, &mut this.log) {
            if let Some(data) = frame.data_ref() {
                log.bytes_out += data.len() as u64;
            } else if let Some(trailers) = frame.trailers_ref() {
                // gRPC puts the call's status in the trailers.
                log.grpc_status = crate::record::grpc_status(trailers).or(log.grpc_status);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(b, _, _) => b.is_end_stream(),
            Kind::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(b, _, _) => b.size_hint(),
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
        }
    }
}
