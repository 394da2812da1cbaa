//! HTTP/1.1 on an accepted connection: hyper's connection over the scanned stream, the
//! idle release of its buffers, and the gateway's own answer to a head the framing scanner
//! refused.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;

use super::connection::{Signals, raised};
use super::scanned::ScannedStream;
use crate::context::ConnContext;
use crate::server::Shared;

/// When an idle HTTP/1.1 connection gives back its HTTP state.
#[derive(Clone, Copy)]
pub(super) struct IdleRelease {
    pub(super) after: Duration,
    /// `header_read_timeout`: how long a connection may wait for a head, idle or with part
    /// of one arrived, before it is closed.
    pub(super) keep_alive: Duration,
}

/// What the connection's tick finds due.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Nothing,
    /// Idle for `after`: give back hyper's state.
    Release,
    /// Waited `keep_alive` for a head (none of it, or part of it): close.
    Close,
}

/// Where a connection stands at a tick.
#[derive(Clone, Copy)]
struct Seen {
    /// A request is being served (its response not yet done).
    busy: bool,
    /// No byte of the next message has arrived.
    between_messages: bool,
    /// Heads handed to hyper so far.
    heads: u64,
}

/// The header read timeout and the idle release, kept by counting the connection's ticks
/// instead of by hyper's timer. Why: hyper's `header_read_timeout` allocates, arms and
/// cancels a timer for every request (~1,000 instructions, a clock read and one more read
/// poll each, `CALLGRIND=1 benches/profile.sh`), where the tick already runs for the
/// release and reads no clock. A limit is enforced within one tick (`every`) after it
/// passes, never before.
struct Waiting {
    every: Duration,
    /// Consecutive ticks that found the connection idle.
    idle: u32,
    /// Consecutive ticks that found it waiting on the same unfinished head.
    head: u32,
    heads: u64,
}

impl Waiting {
    fn new(limits: IdleRelease) -> Self {
        Waiting {
            // Often enough to hold `keep_alive` to within a quarter of it.
            every: limits
                .after
                .min(limits.keep_alive / 4)
                .max(Duration::from_millis(1)),
            idle: 0,
            head: 0,
            heads: 0,
        }
    }

    fn tick(&mut self, seen: Seen, limits: IdleRelease) -> Due {
        // n ticks in a row span at least n - 1 periods: the wait began after the first.
        let waited = |ticks: u32| self.every.saturating_mul(ticks.saturating_sub(1));
        if seen.busy {
            (self.idle, self.head) = (0, 0);
            return Due::Nothing;
        }
        if seen.between_messages {
            self.head = 0;
            self.idle = self.idle.saturating_add(1);
            if waited(self.idle) >= limits.keep_alive {
                return Due::Close;
            }
            // Released at the first idle tick when `every` is `after`, as before.
            if self.every.saturating_mul(self.idle) >= limits.after {
                return Due::Release;
            }
            return Due::Nothing;
        }
        self.idle = 0;
        if seen.heads != self.heads {
            // Another request was served since: this is a new head's wait.
            (self.heads, self.head) = (seen.heads, 0);
        }
        self.head = self.head.saturating_add(1);
        if waited(self.head) >= limits.keep_alive {
            Due::Close
        } else {
            Due::Nothing
        }
    }
}

type H1Io = ScannedStream<Box<tokio_rustls::server::TlsStream<crate::tls::Socket>>>;

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
        let mut waiting = Waiting::new(idle);
        let start = tokio::time::Instant::now() + waiting.every;
        let mut tick = tokio::time::interval_at(start, waiting.every);
        let mut released = false;
        let ended = loop {
            tokio::select! {
                r = served.as_mut() => break r,
                _ = tick.tick(), if !released => {
                    let seen = Seen {
                        busy: conn.in_flight.load(Relaxed) > 0,
                        between_messages: conn.framing.between_messages.load(Relaxed),
                        heads: conn.framing.heads.load(Relaxed),
                    };
                    match waiting.tick(seen, idle) {
                        Due::Nothing => {}
                        Due::Release => {
                            // hyper closes an idle connection at once; its shutdown of the
                            // stream is held off, so only hyper's state goes.
                            released = true;
                            conn.framing.hold_open.store(true, Relaxed);
                            served.as_mut().graceful_shutdown();
                        }
                        Due::Close => {
                            // As hyper's header timeout did: the connection is dropped.
                            tracing::debug!(peer = %conn.peer, between_messages = seen.between_messages, "no request head within header_read_timeout");
                            return;
                        }
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
            r = io.get_ref().get_ref().0.tcp().readable() => r.is_err(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits(after_ms: u64, keep_alive_ms: u64) -> IdleRelease {
        IdleRelease {
            after: MS * after_ms as u32,
            keep_alive: MS * keep_alive_ms as u32,
        }
    }

    const IDLE: Seen = Seen {
        busy: false,
        between_messages: true,
        heads: 0,
    };

    fn head_pending(heads: u64) -> Seen {
        Seen {
            busy: false,
            between_messages: false,
            heads,
        }
    }

    /// Ticks until `seen` (the same at every tick) makes something due, and what.
    fn ticks_until_due(w: &mut Waiting, seen: Seen, l: IdleRelease) -> (u32, Due) {
        for n in 1..10_000 {
            match w.tick(seen, l) {
                Due::Nothing => {}
                due => return (n, due),
            }
        }
        panic!("nothing came due");
    }

    #[test]
    fn an_idle_connection_is_released_at_its_first_idle_tick_by_default() {
        let l = limits(250, 10_000);
        let mut w = Waiting::new(l);
        assert_eq!(w.every, MS * 250);
        assert_eq!(ticks_until_due(&mut w, IDLE, l), (1, Due::Release));
    }

    #[test]
    fn an_unfinished_head_is_closed_after_header_read_timeout_never_before() {
        let l = limits(250, 10_000);
        let mut w = Waiting::new(l);
        let (n, due) = ticks_until_due(&mut w, head_pending(0), l);
        assert_eq!(due, Due::Close);
        // n ticks span at least (n - 1) periods since the wait began, at most n.
        let (least, most) = (w.every * (n - 1), w.every * n);
        assert!(least >= l.keep_alive, "closed after {least:?}");
        assert!(most <= l.keep_alive + w.every, "closed only after {most:?}");
    }

    #[test]
    fn the_tick_runs_often_enough_for_a_short_header_read_timeout() {
        // release_idle_after longer than a quarter of header_read_timeout: the tick
        // follows the timeout, and the release still waits for `after`.
        let l = limits(400, 500);
        let mut w = Waiting::new(l);
        assert_eq!(w.every, MS * 125);
        let (n, due) = ticks_until_due(&mut w, head_pending(3), l);
        assert_eq!(
            (n, due),
            (5, Due::Close),
            "4 full periods of 125 ms = 500 ms"
        );
        let mut w = Waiting::new(l);
        assert_eq!(ticks_until_due(&mut w, IDLE, l), (4, Due::Release));
    }

    #[test]
    fn idle_longer_than_header_read_timeout_closes_when_release_comes_later() {
        let l = limits(2_000, 1_000);
        let mut w = Waiting::new(l);
        let (n, due) = ticks_until_due(&mut w, IDLE, l);
        assert_eq!(due, Due::Close);
        assert!(w.every * (n - 1) >= l.keep_alive);
    }

    #[test]
    fn a_served_request_or_a_new_head_starts_the_wait_again() {
        let l = limits(50, 500);
        let mut w = Waiting::new(l);
        // Ten ticks into one head's wait (of 11 needed)...
        for _ in 0..10 {
            assert_eq!(w.tick(head_pending(7), l), Due::Nothing);
        }
        // ...a request was served between two ticks: the pending head is a new one.
        for _ in 0..10 {
            assert_eq!(w.tick(head_pending(8), l), Due::Nothing);
        }
        // A busy tick resets the count too.
        w.tick(
            Seen {
                busy: true,
                between_messages: false,
                heads: 8,
            },
            l,
        );
        for _ in 0..10 {
            assert_eq!(w.tick(head_pending(8), l), Due::Nothing);
        }
        assert_eq!(w.tick(head_pending(8), l), Due::Close);
    }

    #[test]
    fn a_busy_connection_is_never_released_or_closed() {
        let l = limits(1, 4);
        let mut w = Waiting::new(l);
        let busy = Seen {
            busy: true,
            between_messages: true,
            heads: 1,
        };
        for _ in 0..1_000 {
            assert_eq!(w.tick(busy, l), Due::Nothing);
        }
    }
}
