//! A byte-level watch on HTTP/1 request framing, below hyper.
//!
//! hyper resolves `Content-Length` + `Transfer-Encoding` itself (it drops the length and
//! reads chunked), so by the time a request reaches the pipeline the evidence is gone.
//! This scanner sees the bytes first: it finds each request head, notes whether it carries
//! both headers, and follows the body (by length or by chunks) to the next head. It is
//! lenient where hyper is strict: any input hyper accepts is framed here exactly as hyper
//! frames it, and on anything hyper would refuse the connection dies anyway.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
    let (mut length, mut te) = (None, false);
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
                return Framing::Broken;
            };
            length = Some(n);
        }
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

// === ScannedStream ===

/// A stream whose inbound bytes pass through a [`Scanner`] on their way to hyper.
pub struct ScannedStream<S> {
    inner: S,
    scanner: Scanner,
    /// Bytes already read (and scanned) that a new HTTP connection must see first: what
    /// hyper had read ahead when the previous one was released.
    replay: bytes::Bytes,
}

impl<S> ScannedStream<S> {
    pub fn new(inner: S, scanner: Scanner) -> Self {
        ScannedStream {
            inner,
            scanner,
            replay: bytes::Bytes::new(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Free what the scanner keeps between messages (its head buffer's capacity), for a
    /// connection that is going to idle.
    pub fn shrink(&mut self) {
        if self.scanner.head.is_empty() {
            self.scanner.head = Vec::new();
        }
    }

    /// Serve `bytes` to the next reads before anything from the stream.
    pub fn replay(&mut self, bytes: bytes::Bytes) {
        self.replay = bytes;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ScannedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            this.scanner.feed(&buf.filled()[before..]);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ScannedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.scanner.signals.hold_open.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in every split position (two pieces) and one byte at a time; the flag
    /// must come out the same every way.
    fn flagged(input: &[u8]) -> bool {
        let run = |pieces: &[&[u8]]| {
            let flag = Arc::new(FramingSignals::default());
            let mut s = Scanner::new(16 * 1024, flag.clone());
            for p in pieces {
                s.feed(p);
            }
            flag.ambiguous.load(Ordering::Relaxed)
        };
        let whole = run(&[input]);
        for cut in 0..input.len() {
            assert_eq!(
                run(&[&input[..cut], &input[cut..]]),
                whole,
                "split at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte at a time");
        whole
    }

    #[test]
    fn content_length_with_transfer_encoding_is_flagged_in_either_order_and_any_case() {
        assert!(flagged(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
        assert!(flagged(b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n"));
        assert!(flagged(
            b"POST / HTTP/1.1\r\nTRANSFER-ENCODING:   chunked\r\nCONTENT-LENGTH:5\r\n\r\n"
        ));
        assert!(flagged(
            b"POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked\n\n"
        ));
    }

    #[test]
    fn a_smuggled_head_behind_clean_requests_is_found() {
        let mut input = Vec::new();
        input.extend_from_slice(b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        input.extend_from_slice(
            b"POST /b HTTP/1.1\r\nContent-Length: 27\r\n\r\nTransfer-Encoding: chunked\r\n",
        );
        input.extend_from_slice(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n");
        // Clean so far: the TE line inside /b's body is body, not a header.
        assert!(!flagged(&input));
        input.extend_from_slice(
            b"POST /d HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(flagged(&input));
    }

    #[test]
    fn between_messages_is_true_only_when_no_byte_of_the_next_message_has_arrived() {
        let flag = Arc::new(FramingSignals::default());
        let mut s = Scanner::new(16 * 1024, flag.clone());
        let between = || flag.between_messages.load(Ordering::Relaxed);
        assert!(between(), "a new connection");
        for (bytes, want) in [
            (&b"GET / HTTP/1.1\r\nHo"[..], false),
            (b"st: a\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", false),
            (b"cd", true),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
                false,
            ),
            (b"0\r\n\r\n", true),
            (b"\r\n", false),
        ] {
            s.feed(bytes);
            assert_eq!(
                between(),
                want,
                "after {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let off = Arc::new(FramingSignals::default());
        let _h2 = Scanner::off(off.clone());
        assert!(
            !off.between_messages.load(Ordering::Relaxed),
            "HTTP/2 is never released"
        );
    }

    #[test]
    fn ordinary_requests_are_not_flagged() {
        assert!(!flagged(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
        ));
        assert!(!flagged(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
        assert!(!flagged(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n"
        ));
    }

    #[test]
    fn blank_lines_before_a_request_line_are_skipped_and_the_head_still_read() {
        assert!(flagged(
            b"\r\n\r\n\nPOST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!flagged(
            b"\r\nGET / HTTP/1.1\r\n\r\n\r\n\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
        ));
    }

    #[test]
    fn a_flood_of_blank_lines_is_counted_not_kept_and_ends_the_watch_past_max_head() {
        let flag = Arc::new(FramingSignals::default());
        let mut s = Scanner::new(1024, flag.clone());
        s.feed(&[b'\n'; 1000]);
        assert!(s.head.is_empty(), "blank lines are not copied");
        assert!(
            !flag.between_messages.load(Ordering::Relaxed),
            "bytes of the next message have arrived"
        );
        assert!(matches!(s.state, State::Head));
        s.feed(b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n");
        assert!(
            matches!(s.state, State::Off),
            "past max_head, as hyper refuses it"
        );
    }

    #[test]
    fn a_header_named_like_a_framing_header_is_not_one() {
        assert!(!flagged(
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encodings: chunked\r\nX-Transfer-Encoding: chunked\r\n\r\n"
        ));
        // The request line is not a header, whatever it contains.
        assert!(!flagged(
            b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn an_http2_preface_turns_the_scanner_off() {
        assert!(!flagged(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"));
    }
}
