//! The client's byte stream as hyper reads it: every inbound byte passes the framing
//! [`Scanner`] first, and the idle release can hand a new HTTP connection the bytes the
//! previous one had read ahead, and keep the socket open when hyper shuts its side down.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::framing::scanner::Scanner;

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
        self.scanner.shrink();
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
        loop {
            if !this.replay.is_empty() {
                let n = this.replay.len().min(buf.remaining());
                buf.put_slice(&this.replay.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.scanner.awaiting_upgrade() {
                match this.scanner.upgrade_decided() {
                    Some(held) if !held.is_empty() => {
                        this.replay = bytes::Bytes::from(held);
                        continue;
                    }
                    Some(_) => {}
                    // Undecided: read on (the scanner holds what comes), and be woken when
                    // the response is done, whether or not the client sends more.
                    None => this.scanner.signals().wait_for_answers(cx.waker()),
                }
            }
            let signals = this.scanner.signals();
            if signals.refusal.get().is_some() {
                // The refused head never reaches hyper. Once every request before it is
                // answered, hyper reads the end of the stream and finishes (the stream
                // stays open: the connection writes the refusal); until then it waits.
                if signals.all_answered() {
                    return Poll::Ready(Ok(()));
                }
                signals.wait_for_answers(cx.waker());
                if signals.all_answered() {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let read = buf.filled().len() - before;
            if read == 0 {
                return Poll::Ready(Ok(()));
            }
            let fed = this.scanner.feed(&buf.filled()[before..]);
            match fed.released {
                // The usual case: every byte read goes to hyper as it lies.
                None if fed.pass == read => return Poll::Ready(Ok(())),
                None => {
                    buf.set_filled(before + fed.pass);
                    if fed.pass > 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // Everything read is held (a head not complete yet) or refused: read
                    // on, or end as above. Returning no bytes would tell hyper "closed".
                }
                Some(mut held) => {
                    // A head split across reads is complete: hyper sees it whole, then
                    // the rest of this read.
                    held.extend_from_slice(&buf.filled()[before..before + fed.pass]);
                    buf.set_filled(before);
                    this.replay = bytes::Bytes::from(held);
                }
            }
        }
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
        if this.scanner.holds_open() {
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
