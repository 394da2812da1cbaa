//! A byte-level watch on HTTP/1 request framing, below hyper.
//!
//! hyper resolves `Content-Length` + `Transfer-Encoding` itself (it drops the length and
//! reads chunked), so by the time a request reaches the pipeline the evidence is gone.
//! This scanner sees the bytes first: it finds each request head, notes whether it carries
//! both headers, and follows the body (by length or by chunks) to the next head. It is
//! lenient where hyper is strict: any input hyper accepts is framed here exactly as hyper
//! frames it, and on anything hyper would refuse the connection dies anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The HTTP/2 connection preface: a prior-knowledge HTTP/2 client, nothing to scan.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

#[derive(Debug)]
enum State {
    /// Accumulating a request head.
    Head,
    /// `n` body bytes left.
    Body(u64),
    Chunked(Chunk),
    /// Stopped watching: the connection is HTTP/2, flagged, or already broken for hyper.
    Off,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading the hex size; `ext` once past digits (extensions, whitespace).
    Size {
        n: u64,
        digits: u8,
        ext: bool,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// Start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerEndLf,
}

/// What a scanner reports to its connection.
#[derive(Debug)]
pub struct FramingSignals {
    /// Set (and stays set) once a head with ambiguous framing is seen.
    pub ambiguous: AtomicBool,
    /// Every byte read so far belongs to complete messages: none of the next has arrived.
    /// Never true for a connection the scanner does not watch (HTTP/2, given up).
    pub between_messages: AtomicBool,
    /// Set by the connection while it releases an idle HTTP connection: hyper's closing
    /// `shutdown` then leaves the stream open, since the client has not gone.
    pub hold_open: AtomicBool,
}

impl Default for FramingSignals {
    fn default() -> Self {
        FramingSignals {
            ambiguous: AtomicBool::new(false),
            between_messages: AtomicBool::new(true),
            hold_open: AtomicBool::new(false),
        }
    }
}

/// Watches one connection's inbound bytes.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The start of a head that a read ended in the middle of (empty otherwise: a head
    /// read whole is framed where it lies, without a copy).
    head: Vec<u8>,
    /// Blank-line bytes before the next request line (skipped, as hyper skips them; not
    /// kept, only counted against `max_head`).
    leading: usize,
    max_head: usize,
    signals: Arc<FramingSignals>,
}

impl Scanner {
    pub fn new(max_head: usize, signals: Arc<FramingSignals>) -> Self {
        Scanner {
            state: State::Head,
            head: Vec::new(),
            leading: 0,
            max_head,
            signals,
        }
    }

    /// A scanner that watches nothing (HTTP/2 by ALPN).
    pub fn off(signals: Arc<FramingSignals>) -> Self {
        signals.between_messages.store(false, Ordering::Relaxed);
        Scanner {
            state: State::Off,
            head: Vec::new(),
            leading: 0,
            max_head: 0,
            signals,
        }
    }

    /// Free what the scanner keeps between messages (its head buffer's capacity), for a
    /// connection that is going to idle.
    pub fn shrink(&mut self) {
        if self.head.is_empty() {
            self.head = Vec::new();
        }
    }

    /// Whether the connection is releasing its idle HTTP state: hyper's closing `shutdown`
    /// must then leave the stream open.
    pub fn holds_open(&self) -> bool {
        self.signals.hold_open.load(Ordering::Relaxed)
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.feed_bytes(data);
        let between =
            matches!(self.state, State::Head) && self.head.is_empty() && self.leading == 0;
        self.signals
            .between_messages
            .store(between, Ordering::Relaxed);
    }

    fn feed_bytes(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Head => {
                    if self.head.is_empty() {
                        let blank = data.iter().take_while(|&&b| matches!(b, b'\r' | b'\n'));
                        let blank = blank.count();
                        self.leading += blank;
                        data = &data[blank..];
                        if self.leading > self.max_head {
                            self.state = State::Off;
                            return;
                        }
                        if data.is_empty() {
                            return;
                        }
                        // The usual case: the whole head arrived in this read.
                        if let Some(end) = head_end(data, 0) {
                            self.enter(framing_of(&data[..end]));
                            data = &data[end..];
                            continue;
                        }
                    }
                    let before = self.head.len();
                    self.head.extend_from_slice(data);
                    match head_end(&self.head, before) {
                        Some(end) => {
                            data = &data[end - before..];
                            let framing = framing_of(&self.head[..end]);
                            self.head.clear();
                            self.enter(framing);
                        }
                        None => {
                            if self.head.len() + self.leading > self.max_head {
                                // hyper answers 431 and closes; nothing more to watch.
                                self.state = State::Off;
                            }
                            return;
                        }
                    }
                }
                State::Body(n) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    self.state = if n == take {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                }
                State::Chunked(c) => {
                    let (next, used) = step_chunk(c, data);
                    data = &data[used..];
                    self.state = next;
                }
            }
        }
    }

    /// A head has ended: follow its body, or wait for the next head.
    fn enter(&mut self, framing: Framing) {
        self.leading = 0;
        self.state = match framing {
            Framing::Ambiguous => {
                self.signals.ambiguous.store(true, Ordering::Relaxed);
                State::Off
            }
            Framing::Chunked => State::Chunked(Chunk::Size {
                n: 0,
                digits: 0,
                ext: false,
            }),
            Framing::Length(0) | Framing::None => State::Head,
            Framing::Length(n) => State::Body(n),
            Framing::Broken => State::Off,
        };
    }
}

/// The framing a complete head announces.
fn framing_of(head: &[u8]) -> Framing {
    if head.starts_with(H2_PREFACE) {
        Framing::Broken
    } else {
        read_framing(head)
    }
}

/// Index just past the blank line that ends a head, searching from `from` (minus the
/// three bytes a terminator could straddle). `buf` starts with the request line (leading
/// blank lines were skipped), so the first empty line is the end.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    memchr::memchr_iter(b'\n', &buf[start..])
        .map(|off| start + off)
        // A line is empty if the LF follows another LF, or CR LF.
        .find(|&lf| {
            lf > 0
                && (buf[lf - 1] == b'\n'
                    || (buf[lf - 1] == b'\r' && lf > 1 && buf[lf - 2] == b'\n'))
        })
        .map(|lf| lf + 1)
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Content-Length together with Transfer-Encoding.
    Ambiguous,
    /// Nothing more to follow: something hyper refuses (it closes the connection), or the
    /// HTTP/2 preface.
    Broken,
}

fn read_framing(head: &[u8]) -> Framing {
    let (mut length, mut te, mut bad_length) = (None, false, false);
    let mut start = 0;
    // Every line after the request line; a line is the bytes after one LF up to the next.
    for lf in memchr::memchr_iter(b'\n', head) {
        let line = &head[start..lf];
        let first = start;
        start = lf + 1;
        // Only Transfer-Encoding and Content-Length matter: skip the other lines (and the
        // request line) on their first byte.
        if first == 0 || !matches!(line.first(), Some(b't' | b'T' | b'c' | b'C')) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                // hyper refuses it, unless a Transfer-Encoding came first: then hyper skips
                // it unread, and the head still carries both.
                bad_length = true;
                continue;
            };
            length = Some(n);
        }
    }
    if bad_length {
        return if te {
            Framing::Ambiguous
        } else {
            Framing::Broken
        };
    }
    match (te, length) {
        (true, Some(_)) => Framing::Ambiguous,
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::None,
    }
}

fn step_chunk(c: Chunk, data: &[u8]) -> (State, usize) {
    let chunked = |c| State::Chunked(c);
    match c {
        Chunk::Data(n) => {
            let take = (data.len() as u64).min(n);
            let next = if take == n {
                Chunk::DataCr
            } else {
                Chunk::Data(n - take)
            };
            (chunked(next), take as usize)
        }
        Chunk::Size { n, digits, ext } => {
            let b = data[0];
            let next = match b {
                b'\n' if digits == 0 => return (State::Off, 1),
                b'\n' if n == 0 => Chunk::TrailerStart,
                b'\n' => Chunk::Data(n),
                _ if ext => Chunk::Size { n, digits, ext },
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 16 {
                        return (State::Off, 1);
                    }
                    let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                    Chunk::Size {
                        n: n * 16 + v,
                        digits: digits + 1,
                        ext,
                    }
                }
                _ => Chunk::Size {
                    n,
                    digits,
                    ext: true,
                },
            };
            (chunked(next), 1)
        }
        Chunk::DataCr => match data[0] {
            b'\r' => (chunked(Chunk::DataLf), 1),
            b'\n' => (
                chunked(Chunk::Size {
                    n: 0,
                    digits: 0,
                    ext: false,
                }),
                1,
            ),
            _ => (State::Off, 1),
        },
        Chunk::DataLf => match data[0] {
            b'\n' => (
                chunked(Chunk::Size {
                    n: 0,
                    digits: 0,
                    ext: false,
                }),
                1,
            ),
            _ => (State::Off, 1),
        },
        Chunk::TrailerStart => match data[0] {
            b'\r' => (chunked(Chunk::TrailerEndLf), 1),
            b'\n' => (State::Head, 1),
            _ => (chunked(Chunk::TrailerLine), 1),
        },
        Chunk::TrailerEndLf => match data[0] {
            b'\n' => (State::Head, 1),
            _ => (chunked(Chunk::TrailerLine), 1),
        },
        Chunk::TrailerLine => match data.iter().position(|&b| b == b'\n') {
            Some(i) => (chunked(Chunk::TrailerStart), i + 1),
            None => (chunked(Chunk::TrailerLine), data.len()),
        },
    }
}

#[cfg(test)]
#[path = "scanner_tests.rs"]
mod tests;
