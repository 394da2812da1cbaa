//! HTTP/2 to an upstream on the `h2` crate itself rather than hyper's HTTP/2 client.
//!
//! Why not hyper's client: it hands each request through a channel to the connection's
//! task, which opens the stream and then spawns one more task per request to wait for the
//! response head and pass it back through a oneshot. Here the request's own task opens the
//! stream and waits for the head; a task is spawned only to stream a request body (as hyper
//! does), so a GET costs no task at all. hyper still serves every client connection and
//! still speaks HTTP/1.1 to upstreams. The connection settings are hyper's defaults, so an
//! upstream sees the same SETTINGS frame as before.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderValue, Method, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::body::RequestBody;
use super::pool::ExchangeError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// hyper's HTTP/2 client defaults (hyper 1.x, proto/h2/client.rs).
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// A handle on one upstream HTTP/2 connection; every request to the target shares it.
#[derive(Clone)]
pub struct Sender {
    send: SendRequest<Bytes>,
    /// Set when the connection's task ends or the connection refuses new streams.
    closed: Arc<AtomicBool>,
}

/// The HTTP/2 preface and SETTINGS exchange on `io` (TCP, or TLS that chose `h2`); with the
/// handle, the connection's reading and writing, to be spawned: it ends when the connection
/// closes.
pub async fn handshake<T>(
    io: T,
) -> Result<(Sender, impl Future<Output = ()> + Send + 'static), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let mark = Arc::clone(&closed);
    let driver = async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
        mark.store(true, Ordering::Release);
    };
    Ok((Sender { send, closed }, driver))
}

impl Sender {
    /// Closed, or going away: a new request needs a new connection.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until the connection may open one more stream (the upstream's
    /// `MAX_CONCURRENT_STREAMS`). An error means it never will (GOAWAY, closed): the handle
    /// is then marked closed, so the pool opens a new connection.
    pub async fn ready(&mut self) -> Result<(), h2::Error> {
        let ready = poll_fn(|cx| self.send.poll_ready(cx)).await;
        if ready.is_err() {
            self.closed.store(true, Ordering::Release);
        }
        ready
    }

    /// Opens a stream for `req` (its URI absolute: `:scheme` and `:authority`). A body is
    /// streamed by a task of its own, so the upstream may answer before it ends (gRPC).
    pub fn send(&mut self, req: Request<RequestBody>) -> Result<Exchange, h2::Error> {
        // Connection-specific headers are gone already: forward strips every hop-by-hop
        // header (`headers::strip_hop_by_hop`, keeping only `TE: trailers`) and rewrites may
        // not name them; h2 refuses a request that still has one, so none reaches the wire.
        let (mut parts, body) = req.into_parts();
        let end = body.is_end_stream();
        // As hyper: a known length is declared, except a zero one where the method gives a
        // body no meaning (GET, HEAD, ...).
        if let Some(len) = body.size_hint().exact()
            && (len != 0 || has_payload_semantics(&parts.method))
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
        {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let (response, stream) = self
            .send
            .send_request(Request::from_parts(parts, ()), end)?;
        let body = if end {
            None
        } else {
            let failed = Arc::new(Mutex::new(None));
            let (cancel, cancelled) = oneshot::channel();
            tokio::spawn(pipe(body, stream, Arc::clone(&failed), cancelled));
            Some(BodyTask {
                failed,
                cancel: Cancel(Some(cancel)),
            })
        };
        Ok(Exchange { response, body })
    }
}

/// A request on its way: the response head is awaited with [`Exchange::response`].
pub struct Exchange {
    response: ResponseFuture,
    /// The task streaming the request body, when there is one.
    body: Option<BodyTask>,
}

struct BodyTask {
    /// Where the task leaves the body's error, when it has one.
    failed: Arc<Mutex<Option<BoxError>>>,
    cancel: Cancel,
}

/// Tells the body's task to reset the stream when the exchange is dropped before its
/// response head (`response_timeout`, the client gone): otherwise a task waiting for window
/// that an upstream never grants would hold the stream, and the client's body, for as long
/// as the connection lives. Defused once the head has arrived: the body then streams on
/// (gRPC sends while it receives).
struct Cancel(Option<oneshot::Sender<()>>);

impl Drop for Cancel {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            let _ = cancel.send(());
        }
    }
}

impl Exchange {
    /// The upstream's response head; its body streams with flow control. When the request
    /// body failed (the client's, cut short or over its limit) and so reset the stream, that
    /// error, for the caller to tell the client's fault from the upstream's.
    pub async fn response(mut self) -> Result<Response<H2Body>, ExchangeError> {
        match (&mut self.response).await {
            Ok(resp) => {
                if let Some(body) = &mut self.body {
                    // Dropped unsent: the task sees the head arrived, and carries on.
                    body.cancel.0.take();
                }
                // h2 has refused a response whose Content-Length is not a number, and holds
                // the body to this value.
                let remaining = super::headers::content_length(resp.headers());
                Ok(resp.map(|recv| H2Body {
                    recv,
                    data_done: false,
                    remaining,
                }))
            }
            Err(e) => {
                let body = self
                    .body
                    .as_ref()
                    .and_then(|body| body.failed.lock().unwrap_or_else(|p| p.into_inner()).take());
                Err(match body {
                    Some(b) => ExchangeError::Body(b),
                    None => ExchangeError::H2(e),
                })
            }
        }
    }
}

/// The request body copied onto its stream, as hyper's `PipeToSendStream` does: a chunk
/// waits for window before the next is read, so a slow upstream holds the client back
/// instead of the gateway buffering the body. A body error resets the stream (CANCEL) after
/// leaving the error in `failed`; so does `cancelled` firing ([`Cancel`]).
async fn pipe(
    mut body: RequestBody,
    mut stream: SendStream<Bytes>,
    failed: Arc<Mutex<Option<BoxError>>>,
    cancelled: oneshot::Receiver<()>,
) {
    let mut cancelled = Some(cancelled);
    loop {
        // The next frame, unless the upstream reset the stream or the exchange was dropped.
        let next = poll_fn(|cx| {
            if is_cancelled(&mut cancelled, cx) {
                return Poll::Ready(Err(true));
            }
            if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(Err(false));
            }
            Pin::new(&mut body).poll_frame(cx).map(Ok)
        })
        .await;
        let frame = match next {
            Err(cancel) => {
                if cancel {
                    stream.send_reset(Reason::CANCEL);
                }
                return;
            }
            Ok(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Ok(Some(Err(e))) => {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                stream.send_reset(Reason::CANCEL);
                return;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                // One byte claimed, not the chunk: h2 raises the claim to what it buffers,
                // and claiming a whole chunk ahead would pin the connection's window.
                if !data.is_empty() {
                    stream.reserve_capacity(1);
                    match window(&mut stream, &mut cancelled).await {
                        Window::Open => {}
                        Window::Gone => return,
                        Window::Cancelled => {
                            stream.send_reset(Reason::CANCEL);
                            return;
                        }
                    }
                }
                if stream.send_data(data, end).is_err() || end {
                    return;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            stream.reserve_capacity(0);
            let _ = stream.send_trailers(trailers);
            return;
        }
        // Neither data nor trailers: skipped.
    }
}

/// Whether the exchange was dropped before its head ([`Cancel`]); once the signal is known
/// not to come (defused), it is no longer polled.
fn is_cancelled(cancelled: &mut Option<oneshot::Receiver<()>>, cx: &mut Context<'_>) -> bool {
    let Some(rx) = cancelled else {
        return false;
    };
    match Pin::new(rx).poll(cx) {
        Poll::Ready(Ok(())) => true,
        Poll::Ready(Err(_)) => {
            *cancelled = None;
            false
        }
        Poll::Pending => false,
    }
}

enum Window {
    /// The stream may send at least a byte.
    Open,
    /// The stream was reset or closed.
    Gone,
    /// The exchange was dropped before its head.
    Cancelled,
}

/// Waits for window on the stream.
async fn window(
    stream: &mut SendStream<Bytes>,
    cancelled: &mut Option<oneshot::Receiver<()>>,
) -> Window {
    poll_fn(|cx| {
        if is_cancelled(cancelled, cx) {
            return Poll::Ready(Window::Cancelled);
        }
        loop {
            if stream.capacity() > 0 {
                return Poll::Ready(Window::Open);
            }
            match ready!(stream.poll_capacity(cx)) {
                // A grant, perhaps of nothing: look again.
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Poll::Ready(Window::Gone),
            }
        }
    })
    .await
}

/// The upstream's response body: DATA frames (each released back to the flow-control
/// window as it is passed on), then the trailers.
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// What Content-Length still promises, for the size hint.
    remaining: Option<u64>,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(r) = &mut this.remaining {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // RST_STREAM(NO_ERROR) ends a response early without failing it (RFC 9113
                // section 8.1), as hyper treats it.
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if e.reason() == Some(Reason::NO_ERROR) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Methods for which a body has a defined meaning: a zero length is declared for them.
fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_length_is_declared_only_where_a_body_has_meaning() {
        for m in [Method::GET, Method::HEAD, Method::DELETE, Method::CONNECT] {
            assert!(!has_payload_semantics(&m), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::OPTIONS] {
            assert!(has_payload_semantics(&m), "{m}");
        }
    }
}
