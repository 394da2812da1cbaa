//! What the token endpoint did, counted for `portcullis_issuer_events_total{event}`: tokens
//! issued and refreshed, refresh tokens refused and reused (a reuse revokes its family),
//! revocations, failed client authentications and throttled attempts. Plain atomics, read
//! when the metrics are scraped; no label carries a client id, so the series stay bounded.

use std::sync::atomic::{AtomicU64, Ordering};

/// One kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An access token issued by `client_credentials`.
    Issued,
    /// A refresh token exchanged for a new pair.
    Refreshed,
    /// A refresh token refused (unknown, expired, revoked, another client's).
    RefreshRefused,
    /// A retired refresh token presented again: its whole family was revoked.
    ReuseDetected,
    /// An access token or a refresh-token family revoked through `/oauth2/revoke`.
    Revoked,
    /// A client authentication that failed (wrong secret, unknown or disabled client).
    AuthFailed,
    /// An authentication attempt refused by the throttle before it was checked.
    Throttled,
}

impl Event {
    pub const ALL: [Event; 7] = [
        Event::Issued,
        Event::Refreshed,
        Event::RefreshRefused,
        Event::ReuseDetected,
        Event::Revoked,
        Event::AuthFailed,
        Event::Throttled,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Event::Issued => "issued",
            Event::Refreshed => "refreshed",
            Event::RefreshRefused => "refresh_refused",
            Event::ReuseDetected => "reuse_detected",
            Event::Revoked => "revoked",
            Event::AuthFailed => "auth_failed",
            Event::Throttled => "throttled",
        }
    }
}

/// The counts, one per [`Event`].
#[derive(Debug, Default)]
pub struct Events([AtomicU64; Event::ALL.len()]);

impl Events {
    pub fn count(&self, e: Event) {
        self.0[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every event with its count so far.
    pub fn snapshot(&self) -> impl Iterator<Item = (Event, u64)> + '_ {
        Event::ALL
            .iter()
            .map(|e| (*e, self.0[*e as usize].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_has_its_own_count_and_label() {
        let e = Events::default();
        e.count(Event::ReuseDetected);
        e.count(Event::Issued);
        e.count(Event::Issued);
        let counts: Vec<(&str, u64)> = e.snapshot().map(|(e, n)| (e.label(), n)).collect();
        assert_eq!(
            counts,
            [
                ("issued", 2),
                ("refreshed", 0),
                ("refresh_refused", 0),
                ("reuse_detected", 1),
                ("revoked", 0),
                ("auth_failed", 0),
                ("throttled", 0),
            ]
        );
    }
}
