//! Operations helpers for the `operations_*` tests: the `portcullis run` child process with
//! its stderr captured to a file, a reader of its log lines (JSON or text), admin calls
//! with extra headers (a bearer token), and an atomic config-file replace.
//!
//! Included with `#[path = "support/ops.rs"] mod ops;` next to `mod support;`, so it can use
//! `crate::support` without changing `support/mod.rs`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpStream;

use crate::support::client::{H1, TestResponse};
use crate::support::{BoxBody, empty};

/// Replace `path` with `contents` the way editors and config managers do: write a sibling
/// file, then rename it over the old one (the watcher never sees a half-written file).
pub fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("toml.partial");
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} over {}: {e}", tmp.display(), path.display()));
}

/// One admin request on a new plain HTTP/1.1 connection, with `headers` added.
pub async fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: BoxBody,
) -> TestResponse {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to the admin listener at {addr}: {e}"));
    let mut h1 = H1::handshake(tcp).await.expect("admin HTTP/1.1 handshake");
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    h1.call(req.body(body).expect("admin request"))
        .await
        .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"))
}

/// `GET path` on the admin API with `Authorization: Bearer <token>`.
pub async fn admin_get_with_token(addr: SocketAddr, path: &str, token: &str) -> TestResponse {
    let auth = format!("Bearer {token}");
    admin_call(addr, "GET", path, &[("authorization", &auth)], empty()).await
}

// === log lines ===

/// One log line, read from either format.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub raw: String,
    /// Whether the line was a JSON object.
    pub json: bool,
    pub level: String,
    pub target: String,
    /// The event's message ("" when it has none, as access lines).
    pub message: String,
    /// Every other field. In text lines quoted values are strings and bare integers numbers.
    pub fields: BTreeMap<String, Value>,
}

impl LogLine {
    pub fn str(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }

    /// The field as text, whatever its JSON type.
    pub fn text(&self, field: &str) -> Option<String> {
        self.fields.get(field).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    pub fn is_access(&self) -> bool {
        self.target == "portcullis::access"
    }
}

/// Parse one line of `--log-format json` (flattened events), `--log-format logfmt`
/// (`ts=... level=info target=... key=value ...`) or the default text format
/// (`<time> <LEVEL> <target>: <message> key=value ...`); `None` if it is none of them.
pub fn parse_log_line(line: &str) -> Option<LogLine> {
    let trimmed = line.trim();
    if trimmed.starts_with('{') {
        let Value::Object(map) = serde_json::from_str::<Value>(trimmed).ok()? else {
            return None;
        };
        let mut fields: BTreeMap<String, Value> = map.into_iter().collect();
        let take = |fields: &mut BTreeMap<String, Value>, k: &str| match fields.remove(k) {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let level = take(&mut fields, "level");
        let target = take(&mut fields, "target");
        let message = take(&mut fields, "message");
        fields.remove("timestamp");
        return Some(LogLine {
            raw: line.to_owned(),
            json: true,
            level,
            target,
            message,
            fields,
        });
    }
    if trimmed.starts_with("ts=") {
        // `--log-format logfmt`: every part is `key=value`, the level lower-case.
        let (_, mut fields) = parse_text_fields(trimmed);
        let mut take = |k: &str| match fields.remove(k) {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let level = take("level").to_ascii_uppercase();
        let target = take("target");
        let message = take("message");
        take("ts");
        return Some(LogLine {
            raw: line.to_owned(),
            json: false,
            level,
            target,
            message,
            fields,
        });
    }
    let (_time, rest) = trimmed.split_once(' ')?;
    let rest = rest.trim_start();
    let (level, rest) = rest.split_once(' ')?;
    if !["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level) {
        return None;
    }
    let rest = rest.trim_start();
    let (target, body) = match rest.split_once(": ") {
        Some(split) => split,
        None => (rest.strip_suffix(':')?, ""),
    };
    let (message, fields) = parse_text_fields(body);
    Some(LogLine {
        raw: line.to_owned(),
        json: false,
        level: level.to_owned(),
        target: target.to_owned(),
        message,
        fields,
    })
}

/// Split `message key=value key="quoted value" ...` into the message and the fields.
fn parse_text_fields(body: &str) -> (String, BTreeMap<String, Value>) {
    let bytes = body.as_bytes();
    let mut fields = BTreeMap::new();
    let mut message = String::new();
    let mut i = 0;
    while i < bytes.len() {
        // A field starts at a word boundary with `ident=`.
        let at_boundary = i == 0 || bytes[i - 1] == b' ';
        let key_len = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'.')
            .count();
        if at_boundary && key_len > 0 && bytes.get(i + key_len) == Some(&b'=') {
            let key = &body[i..i + key_len];
            let mut j = i + key_len + 1;
            let value = if bytes.get(j) == Some(&b'"') {
                let mut s = String::new();
                j += 1;
                while j < bytes.len() && bytes[j] != b'"' {
                    if bytes[j] == b'\\' && j + 1 < bytes.len() {
                        j += 1;
                    }
                    let ch = body[j..].chars().next().unwrap_or('?');
                    s.push(ch);
                    j += ch.len_utf8();
                }
                j += 1;
                Value::String(s)
            } else {
                let end = body[j..].find(' ').map_or(body.len(), |e| j + e);
                let v = &body[j..end];
                j = end;
                match v.parse::<u64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => Value::String(v.to_owned()),
                }
            };
            fields.insert(key.to_owned(), value);
            i = j;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            continue;
        }
        let ch = body[i..].chars().next().unwrap_or('?');
        message.push(ch);
        i += ch.len_utf8();
    }
    (message.trim().to_owned(), fields)
}

// === the binary ===

/// `portcullis --log-format <fmt> run --config <file>` with `PORTCULLIS_LOG=info`, stdout
/// and stderr written to files beside the config. Killed on drop if still running.
pub struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    pub fn spawn(config: &Path, log_format: &str) -> Proc {
        let dir = config.parent().expect("config folder");
        let stdout = dir.join("portcullis.stdout");
        let stderr = dir.join("portcullis.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("--log-format")
            .arg(log_format)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("PORTCULLIS_LOG", "info")
            .env_remove("PORTCULLIS_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn portcullis");
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// stdout and stderr, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            self.stderr()
        )
    }

    /// Every stderr line that parses as a log line.
    pub fn lines(&self) -> Vec<LogLine> {
        self.stderr().lines().filter_map(parse_log_line).collect()
    }

    /// Poll stderr (at most 20 s) until a line matches `pred`; panics if the process exits
    /// first or time runs out.
    pub async fn wait_for_line(&mut self, what: &str, pred: impl Fn(&LogLine) -> bool) -> LogLine {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "portcullis exited ({status}) before logging {what}\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "portcullis did not log {what} within 20 s\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The address listener `name` is bound to, from its `listening` log line.
    pub async fn listener_addr(&mut self, name: &str) -> SocketAddr {
        let line = self
            .wait_for_line(&format!("listener {name} listening"), |l| {
                l.message == "listening" && l.str("listener") == Some(name)
            })
            .await;
        addr_field(&line)
    }

    /// The admin listener's address, from its `admin listening` log line.
    pub async fn admin_addr(&mut self) -> SocketAddr {
        let line = self
            .wait_for_line("admin listening", |l| l.message == "admin listening")
            .await;
        addr_field(&line)
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Send `signal` (e.g. "HUP", "TERM") with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Wait (at most `limit`) for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "portcullis did not exit within {limit:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn addr_field(line: &LogLine) -> SocketAddr {
    line.text("addr")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no addr in log line {:?}", line.raw))
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
