//! A byte-level watch on HTTP/1 request framing, below hyper.
//!
//! hyper resolves `Content-Length` + `Transfer-Encoding` itself (it drops the length and
//! reads chunked), so by the time a request reaches the pipeline the evidence is gone.
//! This scanner sees the bytes first: it finds each request head, holds it back from hyper
//! until it is complete, judges it as hyper will ([`head::judge`]), notes whether it carries
//! both headers, and follows the body (by length or by chunks) to the next head. A head
//! hyper would refuse never reaches hyper: the connection answers it in the gateway's own
//! shape (JSON body, request id, access line, denial metric) instead of hyper's bare 400.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;

use super::head::{self, Framing, Judged};
use crate::denial::{Denial, HeadRefusal};

#[derive(Debug)]
enum State {
    /// Accumulating a request head.
    Head,
    /// `n` body bytes left.
    Body(u64),
    Chunked(Chunk),
    /// After a request that offers an upgrade: what follows is held until its response
    /// says whether it was upgraded (not HTTP from then on) or not (the next head).
    AwaitUpgrade,
    /// Stopped watching: the connection is HTTP/2, flagged, a head was refused, or the
    /// body is broken for hyper (which then fails the request itself).
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
    /// A head that hyper would refuse, and why: the gateway answers it itself once the
    /// requests before it are answered (hyper never sees it).
    pub refusal: OnceLock<Denial>,
    /// Request heads handed to hyper.
    pub heads: AtomicU64,
    /// Requests whose response is done (counted by the connection's in-flight guard).
    pub answered: AtomicU64,
    /// Set by the connection when a response is `101 Switching Protocols`.
    pub upgraded: AtomicBool,
    /// A read is waiting for a response to be done (a refusal or an upgrade to decide).
    parked: AtomicBool,
    waiting: Mutex<Option<Waker>>,
}

impl Default for FramingSignals {
    fn default() -> Self {
        FramingSignals {
            ambiguous: AtomicBool::new(false),
            between_messages: AtomicBool::new(true),
            hold_open: AtomicBool::new(false),
            refusal: OnceLock::new(),
            heads: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            waiting: Mutex::new(None),
        }
    }
}

impl FramingSignals {
    /// Every head handed to hyper has its response done: nothing of hyper's is pending.
    pub fn all_answered(&self) -> bool {
        self.heads.load(Ordering::Acquire) == self.answered.load(Ordering::Acquire)
    }

    /// One more response done; wakes a read waiting on it (hyper may not read again on
    /// its own once it has written a response, and the client may have nothing to send).
    pub fn answered_one(&self) {
        self.answered.fetch_add(1, Ordering::AcqRel);
        if self.parked.swap(false, Ordering::AcqRel)
            && let Ok(mut w) = self.waiting.lock()
            && let Some(w) = w.take()
        {
            w.wake();
        }
    }

    /// Wake `waker` when the next response is done.
    pub fn wait_for_answers(&self, waker: &Waker) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = Some(waker.clone());
        }
        self.parked.store(true, Ordering::Release);
    }
}

/// What one read's bytes may do.
#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    /// Bytes from earlier reads that hyper must see before this read's: a head that was
    /// split across reads, now complete and accepted.
    pub released: Option<Vec<u8>>,
    /// How many of this read's bytes hyper may see (after `released`). The rest are either
    /// the start of a head the scanner now holds, or a refused head (see
    /// [`FramingSignals::refusal`]), never to be seen by hyper.
    pub pass: usize,
}

/// Watches one connection's inbound bytes.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// A head (with the blank lines before it) that has not ended yet: held back from
    /// hyper until it is complete and judged. After an upgrade offer: what is held until
    /// its answer.
    head: Vec<u8>,
    max_head: usize,
    max_headers: usize,
    /// The head being followed offered an upgrade: once its body is read, hold what follows.
    upgrade_after_body: bool,
    signals: Arc<FramingSignals>,
}

impl Scanner {
    pub fn new(max_head: usize, max_headers: usize, signals: Arc<FramingSignals>) -> Self {
        Scanner {
            state: State::Head,
            head: Vec::new(),
            max_head,
            max_headers,
            upgrade_after_body: false,
            signals,
        }
    }

    /// A scanner that watches nothing (HTTP/2 by ALPN).
    pub fn off(signals: Arc<FramingSignals>) -> Self {
        signals.between_messages.store(false, Ordering::Relaxed);
        Scanner {
            state: State::Off,
            head: Vec::new(),
            max_head: 0,
            max_headers: 0,
            upgrade_after_body: false,
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

    pub fn signals(&self) -> &FramingSignals {
        &self.signals
    }

    /// Whether hyper's closing `shutdown` must leave the stream open: the connection is
    /// releasing its idle HTTP state, or is about to answer a refused head itself.
    pub fn holds_open(&self) -> bool {
        self.signals.hold_open.load(Ordering::Relaxed) || self.signals.refusal.get().is_some()
    }

    /// Scan one read's bytes: which of them hyper may see now.
    pub fn feed(&mut self, data: &[u8]) -> Fed {
        let fed = self.feed_bytes(data);
        let between =
            matches!(self.state, State::Head | State::AwaitUpgrade) && self.head.is_empty();
        self.signals
            .between_messages
            .store(between, Ordering::Relaxed);
        fed
    }

    fn feed_bytes(&mut self, mut data: &[u8]) -> Fed {
        if self.signals.refusal.get().is_some() {
            // Nothing after a refused head is for hyper.
            return Fed {
                released: None,
                pass: 0,
            };
        }
        let total = data.len();
        let mut released = None;
        while !data.is_empty() {
            match self.state {
                State::Off => break,
                State::AwaitUpgrade => {
                    if self.head.len() + data.len() >= self.max_head {
                        // A client talking far ahead of an upgrade's answer.
                        let too_large = Denial::Head(HeadRefusal::TooLarge);
                        return self.refuse(too_large, released, total - data.len());
                    }
                    self.head.extend_from_slice(data);
                    return Fed {
                        released,
                        pass: total - data.len(),
                    };
                }
                State::Head if self.head.is_empty() => {
                    let blank = blank_prefix(data);
                    match head_end(&data[blank..], 0) {
                        // The usual case: the whole head arrived in this read, judged
                        // where it lies, without a copy.
                        Some(end) => {
                            if let Err(d) = self.judge(&data[..blank + end]) {
                                return self.refuse(d, released, total - data.len());
                            }
                            data = &data[blank + end..];
                        }
                        None => {
                            if let Err(d) = self.judge_start(data) {
                                return self.refuse(d, released, total - data.len());
                            }
                            self.head.extend_from_slice(data);
                            return Fed {
                                released,
                                pass: total - data.len(),
                            };
                        }
                    }
                }
                State::Head => {
                    let before = self.head.len();
                    self.head.extend_from_slice(data);
                    let blank = blank_prefix(&self.head);
                    match head_end(&self.head[blank..], before.saturating_sub(blank)) {
                        Some(end) => {
                            let unit = blank + end;
                            let head = std::mem::take(&mut self.head);
                            if let Err(d) = self.judge(&head[..unit]) {
                                return self.refuse(d, None, 0);
                            }
                            // hyper sees the held part, then this read from where it was.
                            let mut held = head;
                            held.truncate(before);
                            released = Some(held);
                            data = &data[unit - before..];
                        }
                        None => {
                            if let Err(d) = self.judge_start(&self.head) {
                                return self.refuse(d, None, 0);
                            }
                            return Fed { released, pass: 0 };
                        }
                    }
                }
                State::Body(n) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    self.state = if n == take {
                        self.next_message()
                    } else {
                        State::Body(n - take)
                    };
                }
                State::Chunked(c) => {
                    let (next, used) = step_chunk(c, data);
                    data = &data[used..];
                    self.state = match next {
                        State::Head => self.next_message(),
                        other => other,
                    };
                }
            }
        }
        Fed {
            released,
            pass: total,
        }
    }

    /// Judge a complete head with the blank lines before it (hyper skips those itself, so
    /// they are judged with it), and follow its body.
    fn judge(&mut self, unit: &[u8]) -> Result<(), Denial> {
        if unit.len() >= self.max_head {
            return Err(Denial::Head(HeadRefusal::TooLarge));
        }
        let judged = head::judge(unit, self.max_headers)?;
        self.signals.heads.fetch_add(1, Ordering::Release);
        self.enter(judged);
        Ok(())
    }

    /// The start of a head held back: refused if it is already too large, or if hyper
    /// would already refuse what there is of it.
    fn judge_start(&self, start: &[u8]) -> Result<(), Denial> {
        if start.len() >= self.max_head {
            return Err(Denial::Head(HeadRefusal::TooLarge));
        }
        head::judge_start(start, self.max_headers)
    }

    /// Refuse the head at `pass` (the connection answers it; nothing more is watched or
    /// held). What the read may still pass: the bytes before that head.
    fn refuse(&mut self, d: Denial, released: Option<Vec<u8>>, pass: usize) -> Fed {
        let _ = self.signals.refusal.set(d);
        self.state = State::Off;
        self.head = Vec::new();
        Fed { released, pass }
    }

    /// A message's body has ended: the next head, or the wait for an upgrade's answer.
    fn next_message(&mut self) -> State {
        if std::mem::take(&mut self.upgrade_after_body) {
            self.signals.upgraded.store(false, Ordering::Release);
            State::AwaitUpgrade
        } else {
            State::Head
        }
    }

    /// Whether bytes are held until an upgrade's answer.
    pub fn awaiting_upgrade(&self) -> bool {
        matches!(self.state, State::AwaitUpgrade)
    }

    /// Once the upgrade's answer is known (its response is done, or was a `101`): the held
    /// bytes for hyper, or the tunnel, to read now. `None`: not known yet.
    pub fn upgrade_decided(&mut self) -> Option<Vec<u8>> {
        if !self.awaiting_upgrade() {
            return None;
        }
        let held = std::mem::take(&mut self.head);
        if self.signals.upgraded.load(Ordering::Acquire) {
            // Not HTTP any more: nothing to watch.
            self.state = State::Off;
            return Some(held);
        }
        if !self.signals.all_answered() {
            self.head = held;
            return None;
        }
        // Not upgraded: what was held is the next message, scanned like a new read.
        self.state = State::Head;
        let fed = self.feed(&held);
        let mut out = fed.released.unwrap_or_default();
        out.extend_from_slice(&held[..fed.pass]);
        Some(out)
    }

    /// A head was accepted: follow its body, or wait for the next head.
    fn enter(&mut self, judged: Judged) {
        self.upgrade_after_body = judged.upgrade;
        self.state = match judged.framing {
            Framing::Ambiguous => {
                self.signals.ambiguous.store(true, Ordering::Relaxed);
                State::Off
            }
            Framing::Chunked => State::Chunked(Chunk::Size {
                n: 0,
                digits: 0,
                ext: false,
            }),
            Framing::None => self.next_message(),
            Framing::Length(n) => State::Body(n),
        };
    }
}

/// How many CR and LF bytes `data` starts with (the blank lines hyper skips before a
/// request line).
fn blank_prefix(data: &[u8]) -> usize {
    data.iter()
        .take_while(|&&b| matches!(b, b'\r' | b'\n'))
        .count()
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
