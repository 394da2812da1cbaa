//! The audit trail: one JSON line per admin request that changes something (or tries to),
//! appended to `[admin] audit_log` and written to the log. It names who, with which role,
//! did what to which target, and how it ended; never a body, a token or a secret.
//!
//! The file is opened for each entry (append only, created 0600): admin changes are rare, and
//! a rotated or removed file is recreated at the next entry instead of being written past.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

/// One audit line.
#[derive(Debug, Serialize)]
pub(super) struct Entry<'a> {
    pub time: String,
    pub identity: Option<&'a str>,
    pub role: Option<&'static str>,
    pub action: &'static str,
    pub target: Option<&'a str>,
    /// "ok", or the refusal's reason (`forbidden_for_role`, `license_duplicate`, ...).
    pub result: &'a str,
    pub status: u16,
    pub request_id: &'a str,
    pub peer: String,
}

impl Entry<'_> {
    pub fn time(now: SystemTime) -> String {
        crate::license::dates::rfc3339(crate::license::dates::unix(now))
    }
}

/// A path segment the audit trail shows as a target: ids are short and printable; anything
/// else is cut so a crafted path cannot fill the trail.
pub(super) fn bounded(target: &str) -> &str {
    let mut end = target.len().min(128);
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    &target[..end]
}

/// Append `entry` to `file` (when set) and the log. `Err` when the file could not be
/// written; the log line is written either way.
pub(super) async fn record(file: Option<&Path>, entry: &Entry<'_>) -> Result<(), std::io::Error> {
    tracing::info!(
        target: "portcullis::audit",
        identity = entry.identity.unwrap_or("-"),
        role = entry.role.unwrap_or("-"),
        action = entry.action,
        target = entry.target.unwrap_or("-"),
        result = entry.result,
        status = entry.status,
        request_id = entry.request_id,
        peer = %entry.peer,
        "admin change"
    );
    let Some(file) = file else {
        return Ok(());
    };
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || append(&file, &line))
        .await
        .map_err(std::io::Error::other)?
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
                identity: Some("ops"),
                role: Some("operator"),
                action,
                target: Some("L-1"),
                result,
                status: 200,
                request_id: "r1",
                peer: "127.0.0.1:5".into(),
            };
            record(Some(&path), &e).await.expect("written");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["action"], "reload");
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
