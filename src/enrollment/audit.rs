//! The audit entry of an EST enrollment or re-enrollment (`crate::record::audit`), appended
//! to `[admin] audit_log`: the machine, the result (`ok` or the refusal's precise reason), the
//! new certificate's serial and short pin. Never the token, the CSR or a key.
//!
//! Written only once the machine is known (a token this gateway made, or a client
//! certificate): anonymous refusals (no token, an unknown one) are counted and logged but not
//! audited, so that anyone reaching the listener cannot fill the trail.

use super::endpoints::{Est, Resp};
use crate::record::audit::{Entry, Source, bounded, record};

/// What a handler learns as it goes, for the entry.
#[derive(Debug, Default)]
pub(super) struct Note {
    /// The machine the token or the certificate names; no entry without it.
    pub machine: Option<String>,
    /// A more precise reason than the client is told (`token_spent` where it sees
    /// `enrollment_token_refused`).
    pub reason: Option<&'static str>,
    /// The certificate issued, as the serial (hex) and short pin.
    pub serial: Option<String>,
    pub pin: Option<String>,
}

impl Note {
    /// Note the certificate issued (before the steps after it, which may still fail).
    pub(super) fn issued(&mut self, serial: &[u8], pin: &str) {
        self.serial = Some(serial.iter().map(|b| format!("{b:02X}")).collect());
        // `sha256/` and 16 base64 characters: the access log's short pin, a prefix of the pin.
        self.pin = Some(pin.get(..23).unwrap_or(pin).to_owned());
    }
}

/// Marks an answer whose audit entry the file did not take (counted by the caller, which
/// holds the metrics).
#[derive(Debug, Clone, Copy)]
pub struct AuditFailed;

/// Write the entry of `action` answered by `resp` (`result`: "ok" or the answer's reason).
pub(super) async fn write(
    est: &Est<'_>,
    action: &'static str,
    note: &Note,
    result: &str,
    mut resp: Resp,
) -> Resp {
    let Some(machine) = note.machine.as_deref().map(bounded) else {
        return resp;
    };
    let entry = Entry {
        time: Entry::time(est.now),
        source: Source::Est,
        identity: Some(machine),
        role: None,
        action,
        target: Some(machine),
        result: note.reason.unwrap_or(result),
        status: Some(resp.status().as_u16()),
        request_id: est.request_id,
        peer: est.peer.to_string(),
        serial: note.serial.as_deref(),
        pin: note.pin.as_deref(),
    };
    let file = est.enrollment.settings.audit_log.as_deref();
    if let Err(e) = record(file, &entry).await {
        tracing::error!(error = %e, request_id = est.request_id, "the audit_log file did not take an entry");
        resp.extensions_mut().insert(AuditFailed);
    }
    resp
}

/// The audit trail's reason for a refused token.
pub(super) fn token_reason(why: super::TokenRefusal) -> &'static str {
    match why {
        super::TokenRefusal::Unknown => "token_unknown",
        super::TokenRefusal::Spent => "token_spent",
        super::TokenRefusal::Revoked => "token_revoked",
        super::TokenRefusal::Expired => "token_expired",
    }
}
