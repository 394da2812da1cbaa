//! Time as licenses carry it: whole Unix seconds, UTC. Validity bounds are inclusive.

use std::time::{Duration, SystemTime};

/// Latest time a license may name (9999-12-31T23:59:59Z): keeps time arithmetic in range.
pub const MAX_UNIX: u64 = 253_402_300_799;

/// Whole Unix seconds of `t`, rounded down (0 before 1970).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `SystemTime` of Unix second `secs` (callers keep `secs` at most [`MAX_UNIX`]).
pub fn system(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.min(MAX_UNIX))
}

/// RFC 3339, UTC, whole seconds: `2027-12-31T23:59:59Z`.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(system(secs)).to_string()
}

/// `YYYY-MM-DD` (start of the day UTC, or its last second if `end_of_day`) or RFC 3339, as
/// Unix seconds. Works on bytes, so no input can split a character.
pub fn parse_date(s: &str, end_of_day: bool) -> Result<u64, String> {
    let bad =
        || format!("\"{s}\" is not a date: write YYYY-MM-DD or RFC 3339 (2027-12-31T23:59:59Z)");
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = b.get(r)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return Err(bad());
    };
    if !sep(4, b"-") || !sep(7, b"-") {
        return Err(bad());
    }
    let month = u8::try_from(m)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let date = time::Date::from_calendar_date(y as i32, month, d as u8).map_err(|_| bad())?;
    let (hms, offset) = if b.len() == 10 {
        let t = if end_of_day { (23, 59, 59) } else { (0, 0, 0) };
        (t, 0i64)
    } else {
        let (Some(h), Some(mi), Some(sec)) = (num(11..13), num(14..16), num(17..19)) else {
            return Err(bad());
        };
        if !sep(10, b"Tt ") || !sep(13, b":") || !sep(16, b":") {
            return Err(bad());
        }
        let mut i = 19;
        if sep(i, b".") {
            i += 1;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        let offset = match b.get(i..) {
            Some(b"Z" | b"z") => 0,
            Some([sign @ (b'+' | b'-'), ..]) if b.len() == i + 6 && sep(i + 3, b":") => {
                let (Some(oh), Some(om)) = (num(i + 1..i + 3), num(i + 4..i + 6)) else {
                    return Err(bad());
                };
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let o = i64::from(oh * 3600 + om * 60);
                if *sign == b'-' { -o } else { o }
            }
            _ => return Err(bad()),
        };
        ((h, mi, sec), offset)
    };
    let time = time::Time::from_hms(hms.0 as u8, hms.1 as u8, hms.2 as u8).map_err(|_| bad())?;
    let local = time::PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp();
    u64::try_from(local - offset)
        .ok()
        .filter(|&t| t <= MAX_UNIX)
        .ok_or_else(|| format!("\"{s}\" is out of range (1970 to 9999)"))
}
