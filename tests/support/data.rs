//! Deterministic data: a seeded PRNG, a streaming checksum, and request/response bodies that
//! generate their bytes on the fly (so 64 MiB never sits in memory).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Chunk size of generated bodies. A multiple of 8, so the byte stream of a seed does not
/// depend on how it is cut into chunks.
pub const CHUNK: usize = 64 * 1024;

/// xorshift64*: tiny, fast, deterministic. Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let s = seed ^ 0x9E37_79B9_7F4A_7C15;
        Rng(if s == 0 { 1 } else { s })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fill `buf`; consumes whole 8-byte words, so keep `buf.len()` a multiple of 8 except for
    /// the last call of a stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// FNV-1a 64: a streaming checksum, enough to notice a lost, duplicated or reordered chunk.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The checksum of `len` bytes generated from `seed` in [`CHUNK`]-sized pieces, computed
/// without holding them.
pub fn expected_digest(seed: u64, len: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut fnv = Fnv::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        rng.fill(&mut buf[..n]);
        fnv.update(&buf[..n]);
        left -= n as u64;
    }
    fnv.finish()
}

/// A body of `len` pseudo-random bytes from `seed`, produced chunk by chunk. `sized` decides
/// whether it announces its length (Content-Length) or not (chunked on HTTP/1.1).
#[derive(Debug)]
pub struct GeneratedBody {
    rng: Rng,
    remaining: u64,
    sized: bool,
}

impl GeneratedBody {
    pub fn new(seed: u64, len: u64) -> Self {
        GeneratedBody {
            rng: Rng::new(seed),
            remaining: len,
            sized: true,
        }
    }

    pub fn without_length(seed: u64, len: u64) -> Self {
        GeneratedBody {
            sized: false,
            ..Self::new(seed, len)
        }
    }
}

impl Body for GeneratedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        this.rng.fill(&mut buf);
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sized && self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// A body fed by the test through a channel; ends when the sender is dropped. No length is
/// announced, so HTTP/1.1 sends it chunked.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(buffer: usize) -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(buffer);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// One in-memory chunk that does not announce its length (so HTTP/1.1 sends it chunked).
#[derive(Debug)]
pub struct UnsizedBody(Option<Bytes>);

impl UnsizedBody {
    pub fn new(data: impl Into<Bytes>) -> Self {
        UnsizedBody(Some(data.into()))
    }
}

impl Body for UnsizedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
    }
}
