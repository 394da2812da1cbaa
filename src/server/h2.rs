//! HTTP/2 on an accepted connection: hyper's connection driven until it ends, with the flood
//! guard below it, the stalled-reader timeout, and the GOAWAYs counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::server::graceful::GracefulConnection;

use super::connection::{Signals, raised};
use super::h2_guard::{Watch, Why};
use crate::context::ConnContext;

/// How long a connection asked to end (a stalled reader) has to close before it is
/// dropped: its GOAWAY may never leave a socket the client does not read.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the HTTP/2 connection task watches besides hyper: the guard below it, whether the
/// client takes its responses, and where the GOAWAYs are counted.
pub(super) struct H2Watch<'a> {
    pub(super) watch: Arc<Watch>,
    pub(super) conn: &'a ConnContext,
    pub(super) send_timeout: Duration,
    pub(super) metrics: &'a crate::metrics::Metrics,
}

impl H2Watch<'_> {
    /// Whether responses have waited for the client (or our bytes for its reads) longer
    /// than `send_timeout`.
    fn stalled(&self, now: Instant) -> bool {
        let waited = self.conn.sending.stalled_for(now);
        let blocked = self.watch.blocked_for(now);
        waited.max(blocked).is_some_and(|d| d > self.send_timeout)
    }

    /// Count the GOAWAY that ended the connection, if the gateway sent one for a fault:
    /// the guard's, or h2's own (its error, under hyper's, says so).
    fn count(&self, ended: Option<&hyper::Error>) {
        if self.watch.ended().is_some() {
            self.metrics.h2_goaway(h2::Reason::ENHANCE_YOUR_CALM);
            return;
        }
        let mut source = ended.map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = source {
            if let Some(h2) = e.downcast_ref::<h2::Error>() {
                if let (true, false, Some(reason)) = (h2.is_go_away(), h2.is_remote(), h2.reason())
                    && reason != h2::Reason::NO_ERROR
                {
                    self.metrics.h2_goaway(reason);
                }
                return;
            }
            source = e.source();
        }
    }
}

/// Serve one HTTP/2 connection until it ends; on shutdown, finish the request in flight
/// and refuse the next (GOAWAY), until the drain deadline. A client that takes none of its
/// responses' bytes for `send_timeout` is ended (the guard's GOAWAY), and dropped if it
/// has not closed `CLOSE_GRACE` later.
pub(super) async fn drive<C>(
    mut served: std::pin::Pin<Box<C>>,
    mut signals: Signals,
    h2: H2Watch<'_>,
) where
    C: GracefulConnection<Error = hyper::Error>,
{
    // Checked twice per `send_timeout`: a stall ends between one and one and a half of it.
    let every = h2.send_timeout / 2;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut drop_at: Option<Instant> = None;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = &r {
                    tracing::debug!(peer = %h2.conn.peer, error = %e, "connection ended with an error");
                }
                h2.count(r.as_ref().err());
                return;
            }
            _ = raised(&mut signals.stop) => break,
            _ = tick.tick() => {
                let now = Instant::now();
                if drop_at.is_some_and(|at| now >= at) {
                    h2.count(None);
                    return;
                }
                if drop_at.is_none() && (h2.watch.ended().is_some() || h2.stalled(now)) {
                    tracing::debug!(peer = %h2.conn.peer, "HTTP/2 client stalled or flooded: ending the connection");
                    h2.watch.stop(Why::SendTimeout);
                    drop_at = Some(now + CLOSE_GRACE);
                    tick.reset_after(CLOSE_GRACE);
                }
            }
        }
    }
    served.as_mut().graceful_shutdown();
    tokio::select! {
        _ = served => {}
        _ = raised(&mut signals.kill) => {}
    }
}
