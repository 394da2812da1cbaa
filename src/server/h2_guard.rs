//! Below hyper's HTTP/2 connection, the two abuses h2 does not bound itself: a flood of
//! the frames every one of which the server must answer (SETTINGS and PING: h2 acks each,
//! with no limit), and a client that stops taking its responses (asked to end by the
//! connection task, `send_timeout`). Either ends the connection with a GOAWAY
//! (ENHANCE_YOUR_CALM) of our own, written between two of h2's frames, then the stream is
//! shut down and hyper reads its end. h2 already ends rapid resets, CONTINUATION floods,
//! header lists past the limit and floods of tiny DATA frames with its own GOAWAY.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Answered frames (SETTINGS, PING) a client may send at once; the allowance refills at
/// [`ANSWERED_PER_SECOND`]. Real clients send a handful of each; a flood sends thousands a
/// second, and each costs the server a write.
const ANSWERED_BURST: u64 = 1000;
const ANSWERED_PER_SECOND: u64 = 1000;

/// The client's connection preface (RFC 9113 3.4), before its first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEAD: usize = 9;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Why the gateway ended an HTTP/2 connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// SETTINGS or PING frames faster than the allowance.
    ControlFlood = 1,
    /// Responses waited for the client longer than `send_timeout`.
    SendTimeout = 2,
}

impl Why {
    fn from_u8(v: u8) -> Option<Why> {
        match v {
            1 => Some(Why::ControlFlood),
            2 => Some(Why::SendTimeout),
            _ => None,
        }
    }

    /// The GOAWAY's debug data: what a client's log shows.
    fn debug_data(self) -> &'static [u8] {
        match self {
            Why::ControlFlood => b"control_frame_flood",
            Why::SendTimeout => b"send_timeout",
        }
    }
}

/// Shared by the guard and the connection task.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// Asked by the connection task: end the connection (a `Why`, 0: no).
    stop: AtomicU8,
    /// The GOAWAY the guard decided on (a `Why`, 0: none).
    ended: AtomicU8,
    /// `clock::mono_at` since the writes have been blocked (the client reads nothing), 0:
    /// they are not.
    blocked_since_ns: AtomicU64,
}

impl Watch {
    /// Ask the guard to end the connection at its next read or write.
    pub(crate) fn stop(&self, why: Why) {
        let _ = self.stop.compare_exchange(0, why as u8, Relaxed, Relaxed);
    }

    /// Why the guard ended the connection, if it did.
    pub(crate) fn ended(&self) -> Option<Why> {
        Why::from_u8(self.ended.load(Relaxed))
    }

    /// How long the client has taken none of the bytes waiting for it, at `now`.
    pub(crate) fn blocked_for(&self, now: Instant) -> Option<Duration> {
        match self.blocked_since_ns.load(Relaxed) {
            0 => None,
            since => Some(Duration::from_nanos(
                crate::clock::mono_at(now).saturating_sub(since),
            )),
        }
    }
}

/// Walks frame heads in a byte stream that arrives in pieces.
#[derive(Default)]
struct Frames {
    /// Preface bytes still to pass (inbound only).
    preface: usize,
    head: [u8; FRAME_HEAD],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload: usize,
}

impl Frames {
    /// Pass `bytes`, calling `on_head` with each complete frame head.
    fn feed(&mut self, mut bytes: &[u8], mut on_head: impl FnMut(&[u8; FRAME_HEAD])) {
        while !bytes.is_empty() {
            let skip = if self.preface > 0 {
                &mut self.preface
            } else {
                &mut self.payload
            };
            if *skip > 0 {
                let n = (*skip).min(bytes.len());
                *skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEAD - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEAD {
                self.have = 0;
                let h = &self.head;
                self.payload = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                on_head(&self.head);
            }
        }
    }

    /// Between two frames: a frame of our own would not cut into one of h2's.
    fn at_boundary(&self) -> bool {
        self.preface == 0 && self.have == 0 && self.payload == 0
    }
}

/// The allowance of answered frames: a token bucket.
struct Allowance {
    tokens: u64,
    refilled: Instant,
}

impl Allowance {
    /// Take one; `false` when the allowance is spent.
    fn take(&mut self, now: Instant) -> bool {
        let ms = u64::try_from(now.saturating_duration_since(self.refilled).as_millis())
            .unwrap_or(u64::MAX);
        let earned = ms.saturating_mul(ANSWERED_PER_SECOND) / 1000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(ANSWERED_BURST);
            self.refilled = now;
        }
        match self.tokens.checked_sub(1) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }
}

enum Closing {
    Open,
    /// Our GOAWAY, and how much of it is written.
    Goaway(Vec<u8>, usize),
    Flush,
    Shutdown,
    Closed,
}

/// The client's stream as hyper's HTTP/2 connection sees it.
pub(crate) struct H2Guard<S> {
    inner: S,
    watch: Arc<Watch>,
    inbound: Frames,
    outbound: Frames,
    allowance: Allowance,
    /// The highest stream the client opened: our GOAWAY's last stream.
    last_stream: u32,
    blocked: bool,
    closing: Closing,
}

impl<S: AsyncRead + AsyncWrite + Unpin> H2Guard<S> {
    pub(crate) fn new(inner: S, watch: Arc<Watch>) -> Self {
        H2Guard {
            inner,
            watch,
            inbound: Frames {
                preface: PREFACE_LEN,
                ..Frames::default()
            },
            outbound: Frames::default(),
            allowance: Allowance {
                tokens: ANSWERED_BURST,
                refilled: Instant::now(),
            },
            last_stream: 0,
            blocked: false,
            closing: Closing::Open,
        }
    }

    /// Start ending the connection: our GOAWAY if it fits between h2's frames (when it
    /// does not, the client is not reading them anyway), then shutdown.
    fn begin_close(&mut self, why: Why) {
        let _ = self
            .watch
            .ended
            .compare_exchange(0, why as u8, Relaxed, Relaxed);
        self.closing = if self.outbound.at_boundary() {
            Closing::Goaway(goaway(self.last_stream, why.debug_data()), 0)
        } else {
            Closing::Shutdown
        };
    }

    /// Ready once the connection is closed (or already open: nothing to do).
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let (Closing::Open, Some(why)) =
            (&self.closing, Why::from_u8(self.watch.stop.load(Relaxed)))
        {
            self.begin_close(why);
        }
        loop {
            let inner = Pin::new(&mut self.inner);
            let next = match &mut self.closing {
                Closing::Open | Closing::Closed => return Poll::Ready(()),
                Closing::Goaway(frame, at) => match ready!(inner.poll_write(cx, &frame[*at..])) {
                    Ok(n) if n > 0 && *at + n < frame.len() => {
                        *at += n;
                        continue;
                    }
                    Ok(n) if n > 0 => Closing::Flush,
                    _ => Closing::Closed,
                },
                Closing::Flush => match ready!(inner.poll_flush(cx)) {
                    Ok(()) => Closing::Shutdown,
                    Err(_) => Closing::Closed,
                },
                Closing::Shutdown => {
                    let _ = ready!(inner.poll_shutdown(cx));
                    Closing::Closed
                }
            };
            self.closing = next;
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.closing, Closing::Open)
    }

    /// Record whether the client takes our bytes (for `Watch::blocked_for`).
    fn note_blocked<T>(&mut self, res: &Poll<T>) {
        let blocked = res.is_pending();
        if blocked != self.blocked {
            self.blocked = blocked;
            let since = if blocked {
                crate::clock::mono_at(Instant::now()).max(1)
            } else {
                0
            };
            self.watch.blocked_since_ns.store(since, Relaxed);
        }
    }
}

/// A GOAWAY frame (RFC 9113 6.8) with ENHANCE_YOUR_CALM.
fn goaway(last_stream: u32, debug: &[u8]) -> Vec<u8> {
    let len = 8 + debug.len();
    let mut f = Vec::with_capacity(FRAME_HEAD + len);
    f.extend_from_slice(&u32::try_from(len).unwrap_or(8).to_be_bytes()[1..]);
    f.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    f.extend_from_slice(debug);
    f
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_closing(cx));
        if !this.is_open() {
            // Closed: hyper reads the end.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let (mut flood, mut last_stream) = (false, this.last_stream);
        let mut now = None;
        let allowance = &mut this.allowance;
        this.inbound.feed(&buf.filled()[before..], |h| {
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if kind == HEADERS && stream % 2 == 1 {
                last_stream = last_stream.max(stream);
            }
            if (kind == SETTINGS || kind == PING) && flags & ACK == 0 {
                let now = *now.get_or_insert_with(Instant::now);
                flood |= !allowance.take(now);
            }
        });
        this.last_stream = last_stream;
        if flood {
            // None of this read reaches h2: the connection ends here.
            buf.set_filled(before);
            this.begin_close(Why::ControlFlood);
            ready!(this.poll_closing(cx));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for H2Guard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_closing(cx));
        if !this.is_open() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note_blocked(&res);
        if let Poll::Ready(Ok(n)) = res {
            this.outbound.feed(&buf[..n], |_| {});
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_closing(cx));
        if !this.is_open() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note_blocked(&res);
        if let Poll::Ready(Ok(mut n)) = res {
            for b in bufs {
                let take = n.min(b.len());
                this.outbound.feed(&b[..take], |_| {});
                n -= take;
                if n == 0 {
                    break;
                }
            }
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_closing(cx));
        if !this.is_open() {
            return Poll::Ready(Ok(()));
        }
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        this.note_blocked(&res);
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_closing(cx));
        if !this.is_open() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_heads_are_found_across_reads_after_the_preface() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // SETTINGS with one 6-byte parameter, then PING (8 bytes), then a SETTINGS ACK.
        bytes.extend_from_slice(&[0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        bytes.extend_from_slice(&[0, 0, 8, PING, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend_from_slice(&[0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0]);
        for piece in [1, 2, 5, 9, 100] {
            let mut f = Frames {
                preface: PREFACE_LEN,
                ..Frames::default()
            };
            let mut seen = Vec::new();
            for chunk in bytes.chunks(piece) {
                f.feed(chunk, |h| seen.push((h[3], h[4])));
            }
            assert_eq!(seen, [(SETTINGS, 0), (PING, 0), (SETTINGS, ACK)], "{piece}");
            assert!(f.at_boundary());
        }
    }

    #[test]
    fn the_allowance_is_a_burst_then_a_rate() {
        let start = Instant::now();
        let mut a = Allowance {
            tokens: ANSWERED_BURST,
            refilled: start,
        };
        for _ in 0..ANSWERED_BURST {
            assert!(a.take(start));
        }
        assert!(!a.take(start));
        // 10 ms later, 10 more.
        let later = start + Duration::from_millis(10);
        for _ in 0..10 {
            assert!(a.take(later));
        }
        assert!(!a.take(later));
    }

    #[test]
    fn our_goaway_is_a_well_formed_frame() {
        let f = goaway(7, b"send_timeout");
        assert_eq!(&f[..9], &[0, 0, 20, GOAWAY, 0, 0, 0, 0, 0]);
        assert_eq!(&f[9..13], &7u32.to_be_bytes());
        assert_eq!(&f[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
        assert_eq!(&f[17..], b"send_timeout");
    }
}
