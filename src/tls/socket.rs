//! The TCP socket under a TLS session, on both sides of the gateway.
//!
//! Why a wrapper: rustls hands its sealed records to the socket as a vectored write
//! (`ChunkVecBuffer::write_to`), so every response and every upstream request became a
//! `writev` of one buffer. The kernel's `writev` path (iovec import, the VFS layer) costs
//! more than `send` for the same bytes: ~0.13 us a call on the bench machine (a loopback
//! C loop of 150-byte writes: 0.70 against 0.58 us), two calls a proxied request. A write
//! of one buffer is therefore a `send`; several buffers still go in one `writev`.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream whose single-buffer vectored writes are plain writes (`send`).
#[derive(Debug)]
pub struct Socket(pub TcpStream);

impl Socket {
    pub fn tcp(&self) -> &TcpStream {
        &self.0
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let tcp = &mut self.get_mut().0;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        match (filled.next(), filled.next()) {
            (Some(one), None) => Pin::new(tcp).poll_write(cx, one),
            (None, _) => Poll::Ready(Ok(0)),
            _ => Pin::new(tcp).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Socket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Socket(a.unwrap()), b.unwrap().0)
    }

    #[tokio::test]
    async fn vectored_writes_of_one_or_many_buffers_arrive_whole_and_in_order() {
        let (mut s, mut peer) = pair().await;
        let cases: [&[&[u8]]; 4] = [
            &[b"one buffer"],
            &[b"", b"one among empties", b""],
            &[b"first ", b"second ", b"third"],
            &[b"", b""],
        ];
        let mut want = Vec::new();
        for bufs in cases {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            // Loopback's send buffer takes these few bytes whole in one call.
            assert_eq!(s.write_vectored(&slices).await.unwrap(), total);
            want.extend(bufs.concat());
        }
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (mut s, mut peer) = pair().await;
        peer.write_all(b"from the peer").await.unwrap();
        drop(peer);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"from the peer");
    }
}
