//! `[server]`: limits and timeouts.

use std::time::Duration;

use crate::config::ServerSettings;
use crate::config::file::ServerSection;
use crate::report::Report;

pub(super) fn server_settings(r: &mut Report, s: &ServerSection) -> ServerSettings {
    let d = ServerSettings::default();
    ServerSettings {
        max_connections: count(
            r,
            "server.max_connections",
            s.max_connections,
            1,
            10_000_000,
        )
        .unwrap_or(d.max_connections),
        handshake_timeout: duration(r, "server.handshake_timeout", &s.handshake_timeout)
            .unwrap_or(d.handshake_timeout),
        header_read_timeout: duration(r, "server.header_read_timeout", &s.header_read_timeout)
            .unwrap_or(d.header_read_timeout),
        release_idle_after: duration(r, "server.release_idle_after", &s.release_idle_after)
            .unwrap_or(d.release_idle_after),
        // hyper's HTTP/1 reader cannot work with less than 8 KiB.
        max_header_bytes: count(
            r,
            "server.max_header_bytes",
            s.max_header_bytes,
            8192,
            1 << 20,
        )
        .unwrap_or(d.max_header_bytes),
        max_headers: count(r, "server.max_headers", s.max_headers, 1, 10_000)
            .unwrap_or(d.max_headers),
        shutdown_timeout: duration(r, "server.shutdown_timeout", &s.shutdown_timeout)
            .unwrap_or(d.shutdown_timeout),
        send_timeout: duration(r, "server.send_timeout", &s.send_timeout).unwrap_or(d.send_timeout),
        watch_config: s.watch_config.unwrap_or(d.watch_config),
    }
}

/// A count within `[min, max]`; `None` when absent or wrong (the error is reported).
pub(super) fn count(
    r: &mut Report,
    key: &str,
    v: Option<u64>,
    min: u64,
    max: u64,
) -> Option<usize> {
    let v = v?;
    if v < min || v > max {
        r.error(key, format!("{v} is out of range: must be {min} to {max}"));
        return None;
    }
    usize::try_from(v).ok()
}

/// A positive duration such as "10s" or "500ms"; `None` when absent or wrong.
pub fn duration(r: &mut Report, key: &str, v: &Option<String>) -> Option<Duration> {
    let v = v.as_deref()?;
    match humantime::parse_duration(v) {
        Ok(d) if d.is_zero() => {
            r.error(key, format!("\"{v}\" must be longer than zero"));
            None
        }
        Ok(d) if d > Duration::from_secs(86_400) => {
            r.error(key, format!("\"{v}\" is longer than a day"));
            None
        }
        Ok(d) => Some(d),
        Err(_) => {
            r.error(
                key,
                format!("\"{v}\" is not a duration (write e.g. \"10s\", \"500ms\", \"2m\")"),
            );
            None
        }
    }
}
