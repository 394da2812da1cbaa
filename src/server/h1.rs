//! HTTP/1.1 on an accepted connection: hyper's connection over the scanned stream, the
//! idle release of its buffers, and the gateway's own answer to a head the framing scanner
//! refused.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::connection::{Signals, raised};
use super::scanned::ScannedStream;
use crate::context::ConnContext;
use crate::server::Shared;

/// When an idle HTTP/1.1 connection gives back its HTTP state.
#[derive(Clone, Copy)]
pub(super) struct IdleRelease {
    pub(super) after: Duration,
    pub(super) keep_alive: Duration,
}

type H1Io = ScannedStream<Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// Serve HTTP/1.1 until the client or shutdown ends it. A connection idle for
/// `idle.after` (no request in flight, no byte of the next one read) is released: hyper's
/// connection, with its 8 KiB read and 8 KiB write buffers, is dropped, and the task waits
/// on the socket alone until the client sends again, then serves it with a new one. Busy
/// connections never pay for this; idle ones hold the TLS session and little else, as
/// nginx's idle keep-alive connections do.
pub(super) async fn serve_h1<S>(
    builder: &http1::Builder,
    mut io: H1Io,
    service: S,
    conn: &Arc<ConnContext>,
    idle: IdleRelease,
    mut signals: Signals,
    shared: &Shared,
) where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::upstream::ResponseBody>
        + Clone,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::AsyncWriteExt;
    loop {
        // With upgrades: a WebSocket route takes the connection over after its 101.
        let mut served = Box::pin(
            builder
                .serve_connection(TokioIo::new(io), service.clone())
                .with_upgrades(),
        );
        let start = tokio::time::Instant::now() + idle.after;
        let mut tick = tokio::time::interval_at(start, idle.after);
        let mut released = false;
        let ended = loop {
            tokio::select! {
                r = served.as_mut() => break r,
                _ = tick.tick(), if !released => {
                    if conn.is_idle() {
                        // hyper closes an idle connection at once; its shutdown of the
                        // stream is held off, so only hyper's state goes.
                        released = true;
                        conn.framing.hold_open.store(true, Relaxed);
                        served.as_mut().graceful_shutdown();
                    }
                }
                _ = raised(&mut signals.stop) => {
                    // Finish the request in flight, refuse the next (Connection: close).
                    conn.framing.hold_open.store(false, Relaxed);
                    served.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = served.as_mut() => {}
                        _ = raised(&mut signals.kill) => {}
                    }
                    return;
                }
            }
        };
        let refusal = conn.framing.refusal.get().copied();
        if let Err(e) = ended {
            tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
            // hyper broke off before a refused head's turn (counted and logged, not
            // answered: the stream may be gone), or refused a head the scanner passed (a
            // gap in `framing::head` to close: hyper sent its own bare status).
            let missed = (e.is_parse() || e.is_parse_too_large()).then_some(
                crate::denial::Denial::Head(crate::denial::HeadRefusal::Malformed),
            );
            if let Some(d) = refusal.or(missed) {
                let (_, line) = crate::pipeline::refused_head(&shared.metrics, conn, d);
                line.write();
            }
            return;
        }
        if !released && refusal.is_none() {
            // The client closed, or the exchange asked to (Connection: close); hyper has
            // shut the stream down.
            return;
        }
        conn.framing.hold_open.store(false, Relaxed);
        drop(tick);
        let Some(http1::Parts {
            io: released_io,
            read_buf,
            ..
        }) = std::pin::Pin::into_inner(served).into_parts()
        else {
            // Upgraded: the tunnel owns the stream now.
            return;
        };
        io = released_io.into_inner();
        if let Some(d) = refusal {
            answer_refused_head(io, d, conn, shared).await;
            return;
        }
        if !read_buf.is_empty() {
            // Bytes arrived as it was released: serve them now.
            io.replay(read_buf);
            continue;
        }
        // hyper's (empty) read buffer still owns its 8 KiB allocation.
        drop(read_buf);
        io.shrink();
        // Parked: no HTTP state, only the TLS session; the socket says when to go on.
        let keep_alive = idle.keep_alive.saturating_sub(idle.after);
        let parked = GaugeGuard::inc(&shared.metrics.parked_connections);
        let close = tokio::select! {
            r = io.get_ref().get_ref().0.readable() => r.is_err(),
            _ = tokio::time::sleep(keep_alive) => true,
            _ = raised(&mut signals.stop) => true,
        };
        drop(parked);
        if close {
            let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
            return;
        }
    }
}

/// Answer a head the framing scanner refused (every request before it has been answered),
/// in the gateway's own shape, and close: the JSON denial, its request id, the denial
/// metric and an access line, where hyper would have sent a bare status.
async fn answer_refused_head(
    mut io: H1Io,
    denial: crate::denial::Denial,
    conn: &Arc<ConnContext>,
    shared: &Shared,
) {
    use tokio::io::AsyncWriteExt;
    let (response, mut line) = crate::pipeline::refused_head(&shared.metrics, conn, denial);
    let wire = wire_response(&response);
    let written = tokio::time::timeout(Duration::from_secs(5), async {
        io.write_all(&wire).await?;
        io.flush().await?;
        io.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        line.bytes_out = response.body().len() as u64;
    }
    line.write();
}

/// An HTTP/1.1 response as bytes, for the one the gateway writes without hyper. The
/// connection closes after it.
fn wire_response(resp: &http::Response<bytes::Bytes>) -> Vec<u8> {
    let status = resp.status();
    let body = resp.body();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        if name == http::header::CONNECTION || name == http::header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Counts one on a gauge while alive, however the scope ends.
struct GaugeGuard<'a>(&'a prometheus::IntGauge);

impl<'a> GaugeGuard<'a> {
    fn inc(g: &'a prometheus::IntGauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
