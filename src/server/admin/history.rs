//! The last reloads and admin changes, kept in memory for `GET /status`: a bounded ring each,
//! so a busy admin API or a flapping config file cannot grow the gateway's memory. The audit
//! file stays the full record; this is what an operator glances at.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// How many of each are kept.
pub(crate) const KEPT: usize = 20;

/// One reload attempt (from `POST /reload`, SIGHUP or the file watcher).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReloadRecord {
    pub time: String,
    /// `ok` or `failed`.
    pub result: &'static str,
    /// Listeners and routes in force after a reload that took; 0 for a failed one.
    pub listeners: usize,
    pub routes: usize,
    /// How many problems refused a failed reload (their text is in the log and in the
    /// answer to `POST /reload`, not here: it names files and paths).
    pub errors: usize,
}

/// One audited admin change, as the audit trail has it, without the caller's address.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuditRecord {
    pub time: String,
    pub identity: Box<str>,
    pub role: &'static str,
    pub action: &'static str,
    pub target: Option<Box<str>>,
    pub result: Box<str>,
    pub status: u16,
    pub request_id: Box<str>,
}

/// The rings; newest last.
#[derive(Debug, Default)]
pub(crate) struct History {
    reloads: Mutex<VecDeque<ReloadRecord>>,
    audit: Mutex<VecDeque<AuditRecord>>,
}

fn push<T>(ring: &Mutex<VecDeque<T>>, item: T) {
    // A poisoned lock only means another thread panicked mid-push: the ring is still a ring.
    let mut ring = ring.lock().unwrap_or_else(|p| p.into_inner());
    if ring.len() == KEPT {
        ring.pop_front();
    }
    ring.push_back(item);
}

fn newest_first<T: Clone>(ring: &Mutex<VecDeque<T>>) -> Vec<T> {
    let ring = ring.lock().unwrap_or_else(|p| p.into_inner());
    ring.iter().rev().cloned().collect()
}

impl History {
    pub(crate) fn reload(&self, r: ReloadRecord) {
        push(&self.reloads, r);
    }

    pub(crate) fn audit(&self, a: AuditRecord) {
        push(&self.audit, a);
    }

    pub(crate) fn reloads(&self) -> Vec<ReloadRecord> {
        newest_first(&self.reloads)
    }

    pub(crate) fn audits(&self) -> Vec<AuditRecord> {
        newest_first(&self.audit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reload(n: usize) -> ReloadRecord {
        ReloadRecord {
            time: n.to_string(),
            result: "ok",
            listeners: 1,
            routes: n,
            errors: 0,
        }
    }

    #[test]
    fn the_rings_keep_the_newest_entries_newest_first_and_no_more() {
        let h = History::default();
        for n in 0..KEPT + 5 {
            h.reload(reload(n));
        }
        let kept = h.reloads();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].routes, KEPT + 4);
        assert_eq!(kept[KEPT - 1].routes, 5);
    }
}
