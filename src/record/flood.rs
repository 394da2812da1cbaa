//! Log lines a client can cause in a dependency (rustls warns of every IP-literal SNI and
//! every warning alert; h2 and hyper of protocol errors): at most one line per dependency
//! each [`flood::EVERY_MS`], the rest counted (`portcullis_log_lines_suppressed_total`), so a
//! scanner cannot fill the log. Connection refusals (our own lines, one per refused connection)
//! are limited too, to [`CONNECTION_LINES_PER_S`]: a flood of refused connections is what the
//! accept-time refusals exist for, and must not become a flood of log lines.

use std::sync::atomic::{AtomicU64, Ordering};

/// The dependencies whose lines are limited, by the first part of their log target.
pub const SOURCES: [&str; 3] = ["rustls", "h2", "hyper"];
/// At most one line per source per minute.
pub const EVERY_MS: u64 = 60_000;

static LAST_MS: [AtomicU64; SOURCES.len()] = [const { AtomicU64::new(0) }; SOURCES.len()];
static SUPPRESSED: [AtomicU64; SOURCES.len()] = [const { AtomicU64::new(0) }; SOURCES.len()];

/// Whether a line from `target` may be written at `now_ms` (milliseconds on any clock
/// that does not go back; 0 is never "now"). Lines from other targets always may.
pub fn admit(target: &str, now_ms: u64) -> bool {
    let root = target.split("::").next().unwrap_or(target);
    let Some(i) = SOURCES.iter().position(|s| *s == root) else {
        return true;
    };
    let last = LAST_MS[i].load(Ordering::Relaxed);
    if (last == 0 || now_ms.saturating_sub(last) >= EVERY_MS)
        && LAST_MS[i]
            .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        return true;
    }
    SUPPRESSED[i].fetch_add(1, Ordering::Relaxed);
    false
}

/// Lines suppressed so far, per source.
pub fn suppressed() -> impl Iterator<Item = (&'static str, u64)> {
    SOURCES
        .iter()
        .zip(SUPPRESSED.iter())
        .map(|(s, n)| (*s, n.load(Ordering::Relaxed)))
        .chain(std::iter::once((
            "connection",
            CONNECTION_SUPPRESSED.load(Ordering::Relaxed),
        )))
}

/// Connection-refusal lines written per second at most; the rest are counted.
pub const CONNECTION_LINES_PER_S: u64 = 100;

/// The second (high 32 bits) and the lines written in it (low 32 bits).
static CONNECTION_WINDOW: AtomicU64 = AtomicU64::new(0);
static CONNECTION_SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Whether a connection-refusal line may be written at `now_ms` (milliseconds on a clock
/// that does not go back).
pub fn admit_connection_line(now_ms: u64) -> bool {
    let second = (now_ms / 1000) & 0xffff_ffff;
    let mut current = CONNECTION_WINDOW.load(Ordering::Relaxed);
    loop {
        let (s, n) = (current >> 32, current & 0xffff_ffff);
        let next = if s == second {
            if n >= CONNECTION_LINES_PER_S {
                CONNECTION_SUPPRESSED.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            current + 1
        } else {
            (second << 32) | 1
        };
        match CONNECTION_WINDOW.compare_exchange_weak(
            current,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(seen) => current = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_interval_and_the_rest_counted() {
        let before: u64 = suppressed().find(|(s, _)| *s == "h2").map_or(0, |(_, n)| n);
        let t = 1_000_000;
        assert!(admit("h2::proto::connection", t));
        assert!(!admit("h2::codec", t + 1));
        assert!(!admit("h2", t + EVERY_MS - 1));
        assert!(
            admit("h2::codec", t + EVERY_MS),
            "the next interval writes one again"
        );
        assert!(
            admit("portcullis::access", t + 2),
            "our own lines are never limited"
        );
        let after: u64 = suppressed().find(|(s, _)| *s == "h2").map_or(0, |(_, n)| n);
        assert_eq!(after - before, 2);
    }

    #[test]
    fn connection_lines_are_limited_per_second_and_the_rest_counted() {
        let count = || {
            suppressed()
                .find(|(s, _)| *s == "connection")
                .map_or(0, |(_, n)| n)
        };
        let before = count();
        // A second no other test uses.
        let t = 7_000_000_000;
        for i in 0..CONNECTION_LINES_PER_S {
            assert!(admit_connection_line(t + i), "line {i} of the second");
        }
        assert!(!admit_connection_line(t + 999));
        assert!(
            admit_connection_line(t + 1000),
            "the next second writes again"
        );
        assert_eq!(count() - before, 1);
    }
}
