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
