//! The access line's own writer: the line is formatted here, into a buffer each thread
//! reuses, and written to stderr in one call, in the format the rest of the log uses
//! (`--log-format text|json|logfmt`).
//!
//! Why not a `tracing` event like every other line: the subscriber's formatter visits and
//! formats each field through `fmt::Debug` and dynamic dispatch, about 1,100 instructions a
//! field (callgrind). With 26 fields that made the line cost 35,500 instructions a request,
//! half the cost of the whole request with every policy on. Written here it costs a tenth
//! of that. `PORTCULLIS_LOG` still decides whether the line is written (the caller asks
//! `tracing::enabled!` for `portcullis::access`), and the line looks as the subscriber's
//! would: the same timestamp, level and target, the same quoting.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::OnceLock;

/// The log's format, as `--log-format` set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `<time>  INFO portcullis::access: key=value key="text"`.
    Text,
    /// One JSON object, fields flattened beside `timestamp`, `level` and `target`.
    Json,
    /// `ts=<time> level=info target=portcullis::access key=value`.
    Logfmt,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Set once at start, with the subscriber; text until then.
pub fn set_format(f: Format) {
    let _ = FORMAT.set(f);
}

fn format() -> Format {
    FORMAT.get().copied().unwrap_or(Format::Text)
}

thread_local! {
    /// A line's buffer, kept by each thread: no allocation per line once it has grown.
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Format one line with `fill` and write it to stderr in one call.
pub fn emit(target: &str, fill: impl FnOnce(&mut Line<'_>)) {
    BUF.with(|buf| {
        // A line being written while another is (a panic inside `fill`, say) is dropped
        // rather than mixed into it.
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return;
        };
        buf.clear();
        let format = format();
        let mut line = Line {
            out: &mut buf,
            format,
            first: true,
        };
        line.begin(target);
        fill(&mut line);
        line.end();
        let _ = std::io::stderr().lock().write_all(&buf);
    });
}

/// A line being written.
pub struct Line<'a> {
    out: &'a mut Vec<u8>,
    format: Format,
    first: bool,
}

impl Line<'_> {
    fn begin(&mut self, target: &str) {
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        match self.format {
            Format::Text => {
                let _ = write!(self.out, "{now}  INFO {target}: ");
            }
            Format::Json => {
                let _ = write!(
                    self.out,
                    "{{\"timestamp\":\"{now}\",\"level\":\"INFO\",\"target\":\"{target}\""
                );
                self.first = false;
            }
            Format::Logfmt => {
                let _ = write!(self.out, "ts={now} level=info target={target}");
                self.first = false;
            }
        }
    }

    fn end(&mut self) {
        if self.format == Format::Json {
            self.out.push(b'}');
        }
        self.out.push(b'\n');
    }

    fn key(&mut self, key: &str) {
        match (self.format, self.first) {
            (Format::Json, _) => {
                self.out.extend_from_slice(b",\"");
                self.out.extend_from_slice(key.as_bytes());
                self.out.extend_from_slice(b"\":");
            }
            (_, first) => {
                if !first {
                    self.out.push(b' ');
                }
                self.out.extend_from_slice(key.as_bytes());
                self.out.push(b'=');
            }
        }
        self.first = false;
    }

    /// A text field: quoted and escaped as the format needs.
    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        let quote = match self.format {
            // The subscriber's text format quotes every text value (it writes them with
            // `Debug`); logfmt only those that need it.
            Format::Text | Format::Json => true,
            Format::Logfmt => {
                value.is_empty()
                    || value
                        .bytes()
                        .any(|b| b <= b' ' || b == b'"' || b == b'=' || b == b'\\' || b == 0x7f)
            }
        };
        if !quote {
            self.out.extend_from_slice(value.as_bytes());
            return;
        }
        self.out.push(b'"');
        escape(self.out, value, self.format == Format::Json);
        self.out.push(b'"');
    }

    /// A number.
    pub fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        let mut b = itoa::Buffer::new();
        self.out.extend_from_slice(b.format(value).as_bytes());
    }

    /// A value whose `Display` needs no escaping (an address, a hex id, a label of ours):
    /// bare in text and logfmt, a JSON string.
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        let json = self.format == Format::Json;
        if json {
            self.out.push(b'"');
        }
        let _ = write!(self.out, "{value}");
        if json {
            self.out.push(b'"');
        }
    }
}

/// `value` with `"`, `\` and control characters escaped (`\u00XX` in JSON, `\n`-style or
/// `\u{XX}` otherwise, as `Debug` writes them), so no value can end the line or the field.
fn escape(out: &mut Vec<u8>, value: &str, json: bool) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ if json => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => {
                let _ = write!(out, "\\u{{{b:x}}}");
            }
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: Format, fill: impl FnOnce(&mut Line<'_>)) -> String {
        let mut out = Vec::new();
        let mut l = Line {
            out: &mut out,
            format,
            first: true,
        };
        l.begin("portcullis::access");
        fill(&mut l);
        l.end();
        String::from_utf8(out).unwrap_or_default()
    }

    fn fields(l: &mut Line<'_>) {
        l.str("cn", "agent \"7\"\nx=1");
        l.num("status", 200);
        l.display("client_ip", std::net::Ipv4Addr::LOCALHOST);
        l.str("route", "orders");
    }

    #[test]
    fn a_json_line_is_one_object_with_typed_fields_and_escaped_text() {
        let text = line(Format::Json, fields);
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["cn"], "agent \"7\"\nx=1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["client_ip"], "127.0.0.1");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "portcullis::access");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn logfmt_quotes_only_what_needs_it_and_no_value_ends_the_line() {
        let text = line(Format::Logfmt, fields);
        assert!(text.starts_with("ts="), "{text}");
        assert!(text.contains(" level=info target=portcullis::access "));
        assert!(
            text.contains(r#" cn="agent \"7\"\nx=1" status=200 client_ip=127.0.0.1 route=orders"#),
            "{text}"
        );
        assert_eq!(text.matches('\n').count(), 1);
    }

    #[test]
    fn text_quotes_text_as_the_subscriber_does() {
        let text = line(Format::Text, fields);
        assert!(text.contains("  INFO portcullis::access: cn="), "{text}");
        assert!(
            text.contains(r#"cn="agent \"7\"\nx=1" status=200 client_ip=127.0.0.1 route="orders""#),
            "{text}"
        );
    }

    #[test]
    fn control_characters_are_escaped_in_every_format() {
        for f in [Format::Text, Format::Json, Format::Logfmt] {
            let text = line(f, |l| l.str("v", "a\u{1b}[31mb\u{7f}"));
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{7f}'),
                "{f:?}: {text}"
            );
        }
    }
}
