//! The line of a connection refused before any request: by the PROXY header check, the
//! listener's IP lists, the flood limits or the TLS handshake. Such a client never sends a
//! request, so without this line the log would not show it at all. At most
//! [`super::flood::CONNECTION_LINES_PER_S`] a second: a flood of refused connections is
//! counted in the metrics whole, and only sampled here.

use std::net::SocketAddr;

use crate::denial::{ConnRefusal, HandshakeFailure};

/// What is known of a refused connection.
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    pub listener: &'a str,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client as a trusted PROXY header reported it (else the peer).
    pub origin: SocketAddr,
    pub reason: ConnRefusal,
    /// Why the handshake failed, for handshake refusals.
    pub handshake: Option<HandshakeFailure>,
}

impl Refused<'_> {
    /// Write the line (if the per-second allowance has room); `now_ms` on a clock that
    /// does not go back.
    pub fn write(&self, now_ms: u64) {
        if !tracing::enabled!(target: "portcullis::access", tracing::Level::INFO)
            || !super::flood::admit_connection_line(now_ms)
        {
            return;
        }
        tracing::info!(
            target: "portcullis::access",
            kind = "connection",
            listener = self.listener,
            client_ip = %self.origin.ip(),
            peer_ip = %self.peer.ip(),
            reason = self.reason.label(),
            handshake = self.handshake.map_or("-", HandshakeFailure::label),
        );
    }
}
