//! The audit trail: one JSON line per change to who may do what, appended to
//! `[admin] audit_log` and written to the log (target `portcullis::audit`). Admin requests that
//! change something (or try to), EST enrollments and re-enrollments (and refusals of a known
//! token or certificate), and the command line's offline `enroll token` / `enroll revoke`. An
//! entry names who, did what to which target, and how it ended; never a body, a token, a CSR,
//! a key or a secret.
//!
//! The file is opened for each entry (append only, created 0600): changes are rare, and a
//! rotated or removed file is recreated at the next entry instead of being written past.
//! Lives on the request path's floor so that the EST endpoints, the admin API and the command
//! line share one writer.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

/// Who made the change through which door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An admin API request.
    Admin,
    /// An EST request on the enrollment listener.
    Est,
    /// The command line working on the stores itself (no admin API answered).
    Cli,
}

impl Source {
    /// The log line's message (`admin change` is what operators already search for).
    fn message(self) -> &'static str {
        match self {
            Source::Admin => "admin change",
            Source::Est => "enrollment change",
            Source::Cli => "offline change",
        }
    }
}

/// One audit line.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub source: Source,
    pub identity: Option<&'a str>,
    pub role: Option<&'static str>,
    pub action: &'static str,
    pub target: Option<&'a str>,
    /// "ok", or the refusal's reason (`forbidden_for_role`, `token_spent`, ...).
    pub result: &'a str,
    /// The HTTP status answered; absent for the command line's offline changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub request_id: &'a str,
    pub peer: String,
    /// A certificate issued by the change: its serial (hex, as `openssl x509 -serial`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<&'a str>,
    /// ... and the short pin of its key (`sha256/` and 16 characters, as the access log has).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<&'a str>,
}

impl Entry<'_> {
    pub fn time(now: SystemTime) -> String {
        crate::license::dates::rfc3339(crate::license::dates::unix(now))
    }
}

/// A path segment or name the audit trail shows as a target: ids are short and printable;
/// anything else is cut so a crafted value cannot fill the trail.
pub fn bounded(target: &str) -> &str {
    let mut end = target.len().min(128);
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    &target[..end]
}

/// Append `entry` to `file` (when set) and the log, the file on a blocking thread. `Err` when
/// the file could not be written; the log line is written either way.
pub async fn record(file: Option<&Path>, entry: &Entry<'_>) -> Result<(), std::io::Error> {
    log(entry);
    let Some(file) = file else {
        return Ok(());
    };
    let line = line(entry)?;
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || append(&file, &line))
        .await
        .map_err(std::io::Error::other)?
}

/// [`record`] for callers with no runtime (the command line).
pub fn record_blocking(file: Option<&Path>, entry: &Entry<'_>) -> Result<(), std::io::Error> {
    log(entry);
    match file {
        Some(file) => append(file, &line(entry)?),
        None => Ok(()),
    }
}

fn log(entry: &Entry<'_>) {
    tracing::info!(
        target: "portcullis::audit",
        source = ?entry.source,
        identity = entry.identity.unwrap_or("-"),
        role = entry.role.unwrap_or("-"),
        action = entry.action,
        target = entry.target.unwrap_or("-"),
        result = entry.result,
        status = entry.status.unwrap_or(0),
        request_id = entry.request_id,
        peer = %entry.peer,
        serial = entry.serial.unwrap_or("-"),
        "{}",
        entry.source.message()
    );
}

fn line(entry: &Entry<'_>) -> Result<Vec<u8>, std::io::Error> {
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

fn append(path: &Path, line: &[u8]) -> Result<(), std::io::Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    // One write of the whole line: with O_APPEND, concurrent entries do not interleave.
    f.write_all(line)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_appended_one_json_line_each_and_the_file_is_private() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.log");
        for (action, result) in [("reload", "ok"), ("license.revoke", "license_not_found")] {
            let e = Entry {
                time: Entry::time(std::time::UNIX_EPOCH),
                source: Source::Admin,
                identity: Some("ops"),
                role: Some("operator"),
                action,
                target: Some("L-1"),
                result,
                status: Some(200),
                request_id: "r1",
                peer: "127.0.0.1:5".into(),
                serial: None,
                pin: None,
            };
            record(Some(&path), &e).await.expect("written");
        }
        // The command line's: no status, a certificate's serial and pin.
        let cli = Entry {
            time: Entry::time(std::time::UNIX_EPOCH),
            source: Source::Cli,
            identity: Some("cli:ops"),
            role: None,
            action: "enrollment.revoke",
            target: Some("m1"),
            result: "ok",
            status: None,
            request_id: "r2",
            peer: "local".into(),
            serial: Some("0A"),
            pin: Some("sha256/AAAA"),
        };
        record_blocking(Some(&path), &cli).expect("written");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["action"], "reload");
        assert_eq!(lines[0]["source"], "admin");
        assert_eq!(lines[0]["status"], 200);
        assert!(lines[0].get("serial").is_none() && lines[0].get("pin").is_none());
        assert_eq!(lines[2]["source"], "cli");
        assert!(lines[2].get("status").is_none());
        assert_eq!(lines[2]["serial"], "0A");
        assert_eq!(lines[1]["result"], "license_not_found");
        assert_eq!(lines[0]["time"], "1970-01-01T00:00:00Z");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_long_target_is_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = bounded(&long);
        assert!(cut.len() <= 128 && long.starts_with(cut));
    }
}
