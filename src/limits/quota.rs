//! Quotas: a count per calendar window (hour, day or month, UTC), the way integration plans
//! are sold ("100000/day"). Unlike a rate limit, a quota is not smoothed: the whole count may
//! be used in the window's first minute, and it comes back in full when the window turns.
//!
//! Counts are kept by key in a store passed in (floor 2 keeps them and persists them, so a
//! restart is no way around a quota). Keys are 16-byte digests of the limit's scope and the
//! caller's value, so what is persisted names no address, token subject or header value.

use time::{Month, OffsetDateTime};

/// How long a quota's window is. Windows are calendar-aligned in UTC: an hour starts at
/// minute 0, a day at 00:00, a month on its first day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Hour,
    Day,
    Month,
}

impl Window {
    pub fn label(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// The window holding Unix second `now`: its first second and the first second after it.
    pub fn bounds(self, now: u64) -> (u64, u64) {
        match self {
            Window::Hour => {
                let start = now - now % 3600;
                (start, start + 3600)
            }
            Window::Day => {
                let start = now - now % 86_400;
                (start, start + 86_400)
            }
            Window::Month => month_bounds(now),
        }
    }
}

/// The month holding `now` (UTC). Out-of-range times (past year 9999) fall back to a 31-day
/// window from `now`, which no real clock reaches.
fn month_bounds(now: u64) -> (u64, u64) {
    let fallback = (now, now.saturating_add(31 * 86_400));
    let Ok(t) = OffsetDateTime::from_unix_timestamp(i64::try_from(now).unwrap_or(i64::MAX)) else {
        return fallback;
    };
    let (year, month) = (t.year(), t.month());
    let (next_year, next_month) = match month {
        Month::December => (year + 1, Month::January),
        m => (year, m.next()),
    };
    let first = |y: i32, m: Month| {
        time::Date::from_calendar_date(y, m, 1)
            .ok()
            .map(|d| d.midnight().assume_utc().unix_timestamp())
            .and_then(|s| u64::try_from(s).ok())
    };
    match (first(year, month), first(next_year, next_month)) {
        (Some(start), Some(end)) => (start, end),
        _ => fallback,
    }
}

/// A quota such as `100000/day`: `count` requests per calendar `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub count: u64,
    pub window: Window,
}

impl Quota {
    /// `"<count>/<window>"`, window one of `h`, `hour`, `d`, `day`, `month` (count 1 to
    /// 1,000,000,000,000). The error completes "\"<s>\" ...".
    pub fn parse(s: &str) -> Result<Quota, &'static str> {
        let Some((count, unit)) = s.split_once('/') else {
            return Err(
                "is not a quota: write <count>/<window>, such as \"100000/day\" or \"2000000/month\"",
            );
        };
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| "has a count that is not a whole number")?;
        if count == 0 || count > 1_000_000_000_000 {
            return Err("has a count outside 1 to 1000000000000");
        }
        let window = match unit.trim() {
            "h" | "hour" => Window::Hour,
            "d" | "day" => Window::Day,
            "month" => Window::Month,
            _ => return Err("has an unknown window: use hour, day or month"),
        };
        Ok(Quota { count, window })
    }

    /// The canonical spelling, `100000/day`.
    pub fn to_text(self) -> String {
        format!("{}/{}", self.count, self.window.label())
    }
}

/// The outcome of one request against one quota key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaVerdict {
    /// Counted; `remaining` are left in this window.
    Taken { remaining: u64 },
    /// Used up until `resets_at` (Unix seconds): the request is refused and not counted.
    Exhausted { resets_at: u64 },
}

/// One key's use of its quota in the window holding a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUse {
    pub used: u64,
    /// The first second of the next window.
    pub resets_at: u64,
}

/// A store of quota counts, persisted across restarts (floor 2 implements it).
pub trait QuotaState: Send + Sync + std::fmt::Debug {
    /// Count one request of `key` against `quota` at `now` (Unix seconds) unless the window's
    /// count is used up. Atomic per key.
    fn take(&self, key: &QuotaKey, quota: Quota, now: u64) -> QuotaVerdict;
    /// What `key` has used of `quota` in the window holding `now` (nothing is counted).
    fn usage(&self, key: &QuotaKey, quota: Quota, now: u64) -> QuotaUse;
}

/// A quota key: a digest of the limit's scope and the caller's value (SHA-256, first 16
/// bytes: collisions among a billion keys are about 1 in 10^20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaKey(pub [u8; 16]);

impl QuotaKey {
    /// The key of `value` under the configured limit `scope` (`<route>#<index>`).
    pub fn of(scope: &str, value: &[u8]) -> QuotaKey {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"limit\0");
        ctx.update(scope.as_bytes());
        ctx.update(b"\0");
        ctx.update(value);
        QuotaKey::from_digest(ctx.finish().as_ref())
    }

    /// The key of the quota a machine license carries: one count per license, whatever the
    /// route.
    pub fn license(id: &str) -> QuotaKey {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"license\0");
        ctx.update(id.as_bytes());
        QuotaKey::from_digest(ctx.finish().as_ref())
    }

    fn from_digest(d: &[u8]) -> QuotaKey {
        let mut k = [0u8; 16];
        for (dst, src) in k.iter_mut().zip(d) {
            *dst = *src;
        }
        QuotaKey(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_the_documented_windows_and_refuses_the_rest() {
        assert_eq!(
            Quota::parse("100000/day"),
            Ok(Quota {
                count: 100_000,
                window: Window::Day
            })
        );
        assert_eq!(
            Quota::parse("2000000/month").map(|q| q.window),
            Ok(Window::Month)
        );
        assert_eq!(Quota::parse(" 5 / h ").map(|q| q.window), Ok(Window::Hour));
        assert_eq!(Quota::parse("5/d").map(Quota::to_text), Ok("5/day".into()));
        for bad in ["", "100", "0/day", "x/day", "5/week", "5/s", "-1/day", "1/"] {
            assert!(Quota::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn day_and_hour_windows_are_aligned_to_utc() {
        // 2027-03-14T15:09:26Z
        let t = 1_805_036_966;
        assert_eq!(Window::Day.bounds(t), (1_804_982_400, 1_805_068_800));
        assert_eq!(Window::Hour.bounds(t), (1_805_036_400, 1_805_040_000));
        let (start, end) = Window::Day.bounds(t);
        assert_eq!(Window::Day.bounds(end - 1), (start, end));
        assert_eq!(Window::Day.bounds(end).0, end);
    }

    #[test]
    fn month_windows_follow_the_calendar() {
        // 2028-02-15T00:00:00Z, a leap year: February has 29 days.
        let (start, end) = Window::Month.bounds(1_834_185_600);
        assert_eq!(start, 1_832_976_000, "2028-02-01T00:00:00Z");
        assert_eq!(end - start, 29 * 86_400);
        // December rolls into January of the next year.
        let (start, end) = Window::Month.bounds(1_829_347_200); // 2027-12-20
        assert_eq!(start, 1_827_619_200, "2027-12-01T00:00:00Z");
        assert_eq!(end, 1_830_297_600, "2028-01-01T00:00:00Z");
        assert_eq!(Window::Month.bounds(end).0, end);
    }

    #[test]
    fn keys_separate_scopes_values_and_licenses() {
        let a = QuotaKey::of("orders#0", b"10.0.0.1");
        assert_eq!(a, QuotaKey::of("orders#0", b"10.0.0.1"));
        assert_ne!(a, QuotaKey::of("orders#1", b"10.0.0.1"));
        assert_ne!(a, QuotaKey::of("orders#0", b"10.0.0.2"));
        // The separator keeps "ab"+"c" apart from "a"+"bc".
        assert_ne!(QuotaKey::of("ab", b"c"), QuotaKey::of("a", b"bc"));
        assert_ne!(QuotaKey::license("orders#0"), QuotaKey::of("orders#0", b""));
    }
}
