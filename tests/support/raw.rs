//! Raw bytes on the wire: HTTP/1.1 written by hand over a TLS stream (so malformed framing gets
//! through unchanged), handcrafted TLS ClientHellos over plain TCP, and TLS record parsing.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client::{Tls, TlsClient};
use super::pki::Pki;

/// An HTTP/1.x response parsed from raw bytes.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// How reading a response ended.
#[derive(Debug)]
pub enum Outcome {
    Response(RawResponse),
    /// EOF or a reset before a whole response; carries the bytes received.
    Closed(Vec<u8>),
    /// Nothing conclusive within the time limit; carries the bytes received.
    TimedOut(Vec<u8>),
}

impl Outcome {
    /// The response; panics on anything else.
    pub fn response(self) -> RawResponse {
        match self {
            Outcome::Response(r) => r,
            other => panic!("expected an HTTP response, got {other:?}"),
        }
    }
}

/// A connection that speaks HTTP/1.1 by hand.
pub struct RawConn<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    pub fn new(stream: S) -> Self {
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Read one response (at most `within`).
    pub async fn response(&mut self, within: Duration) -> Outcome {
        let deadline = Instant::now() + within;
        let mut tmp = vec![0u8; 16 * 1024];
        loop {
            if let Some((resp, used)) = parse_response(&self.buf, false) {
                self.buf.drain(..used);
                return Outcome::Response(resp);
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
                Err(_) => return Outcome::TimedOut(std::mem::take(&mut self.buf)),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    if let Some((resp, used)) = parse_response(&self.buf, true) {
                        self.buf.drain(..used);
                        return Outcome::Response(resp);
                    }
                    return Outcome::Closed(std::mem::take(&mut self.buf));
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// Everything else the peer sends until it closes (at most `within`). Returns the bytes
    /// and whether the connection was closed (false: still open when time ran out).
    pub async fn rest(&mut self, within: Duration) -> (Vec<u8>, bool) {
        let mut out = std::mem::take(&mut self.buf);
        let closed = read_to_end_within(&mut self.stream, &mut out, within).await;
        (out, closed)
    }
}

/// Read until EOF/error (true) or until `within` passes (false).
pub async fn read_to_end_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut tmp)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => out.extend_from_slice(&tmp[..n]),
        }
    }
}

/// A TLS connection (TLS 1.2/1.3, ALPN http/1.1, SNI localhost) for raw HTTP/1.1.
pub async fn raw_tls(pki: &Pki, addr: SocketAddr) -> RawConn<Tls> {
    raw_tls_as(pki, addr, "localhost").await
}

/// A raw connection whose TLS asked for `server_name` (an IP address: no SNI at all).
pub async fn raw_tls_as(pki: &Pki, addr: SocketAddr, server_name: &str) -> RawConn<Tls> {
    RawConn::new(super::client::tls_as(&TlsClient::new(pki), addr, server_name).await)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse one response from the start of `b`: `Some((response, bytes used))` when complete.
fn parse_response(b: &[u8], eof: bool) -> Option<(RawResponse, usize)> {
    let head_end = find(b, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&b[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let rest = &b[head_end..];
    let (body, used) = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        decode_chunked(rest)?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        (rest[..len].to_vec(), len)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        (Vec::new(), 0)
    } else if eof {
        (rest.to_vec(), rest.len())
    } else {
        return None;
    };
    Some((
        RawResponse {
            status,
            head,
            headers,
            body,
        },
        head_end + used,
    ))
}

fn decode_chunked(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let line_end = pos + find(&b[pos..], b"\r\n")?;
        let size_str = std::str::from_utf8(&b[pos..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            loop {
                let e = pos + find(&b[pos..], b"\r\n")?;
                let empty = e == pos;
                pos = e + 2;
                if empty {
                    return Some((out, pos));
                }
            }
        }
        if b.len() < pos + size + 2 {
            return None;
        }
        out.extend_from_slice(&b[pos..pos + size]);
        pos += size + 2;
    }
}

// === TLS records ===

/// One TLS record as sent by the server.
#[derive(Debug, Clone)]
pub struct Record {
    pub content_type: u8,
    pub version: u16,
    pub payload: Vec<u8>,
}

pub const CONTENT_ALERT: u8 = 21;
pub const CONTENT_HANDSHAKE: u8 = 22;

/// The complete records at the start of `bytes` (a trailing partial record is ignored).
pub fn parse_records(bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut pos = 0;
    while bytes.len() >= pos + 5 {
        let len = usize::from(u16::from_be_bytes([bytes[pos + 3], bytes[pos + 4]]));
        if bytes.len() < pos + 5 + len {
            break;
        }
        out.push(Record {
            content_type: bytes[pos],
            version: u16::from_be_bytes([bytes[pos + 1], bytes[pos + 2]]),
            payload: bytes[pos + 5..pos + 5 + len].to_vec(),
        });
        pos += 5 + len;
    }
    out
}

/// Whether the server answered with a ServerHello (handshake record, message type 2).
pub fn has_server_hello(bytes: &[u8]) -> bool {
    parse_records(bytes)
        .iter()
        .any(|r| r.content_type == CONTENT_HANDSHAKE && r.payload.first() == Some(&2))
}

/// Asserts that the server's answer to a hello it must refuse is nothing (EOF) or an alert,
/// never a handshake record.
pub fn assert_alert_or_nothing(what: &str, reply: &[u8]) {
    assert!(
        !has_server_hello(reply),
        "{what}: the server answered with a ServerHello: {:02x?}",
        &reply[..reply.len().min(64)]
    );
    if let Some(&first) = reply.first() {
        assert_eq!(
            first,
            CONTENT_ALERT,
            "{what}: the server answered with something other than an alert: {:02x?}",
            &reply[..reply.len().min(64)]
        );
    }
}

/// A ClientHello without the supported_versions extension, so `client_version` is the highest
/// version offered. Cipher suites and extensions are the same whatever the version (legacy CBC
/// suites and TLS 1.2 GCM/ChaCha suites, SNI localhost, x25519/P-256/P-384, point formats,
/// signature algorithms, EMS, renegotiation_info), so the only difference between a refused
/// legacy hello and the accepted TLS 1.2 control is the version.
pub fn client_hello(record_version: u16, client_version: u16) -> Vec<u8> {
    client_hello_for(record_version, client_version, b"localhost")
}

/// [`client_hello`] naming `host` in its SNI (an IP literal there is against RFC 6066).
pub fn client_hello_for(record_version: u16, client_version: u16, host: &[u8]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    fn u16s(values: &[u16]) -> Vec<u8> {
        let mut v = ((values.len() * 2) as u16).to_be_bytes().to_vec();
        for x in values {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v
    }

    let mut exts = Vec::new();
    let mut sni = Vec::new();
    sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    ext(&mut exts, 0x0000, &sni);
    ext(&mut exts, 0x000a, &u16s(&[0x001d, 0x0017, 0x0018]));
    ext(&mut exts, 0x000b, &[1, 0]);
    ext(
        &mut exts,
        0x000d,
        &u16s(&[
            0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501, 0x0201, 0x0203,
        ]),
    );
    ext(&mut exts, 0x0017, &[]);
    ext(&mut exts, 0xff01, &[0]);

    let mut body = Vec::new();
    body.extend_from_slice(&client_version.to_be_bytes());
    body.extend_from_slice(&super::data::Rng::new(7).bytes(32));
    body.push(0); // session id
    body.extend_from_slice(&u16s(&[
        0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc009, 0xc013, 0xc00a, 0xc014, 0x002f,
        0x0035,
    ]));
    body.extend_from_slice(&[1, 0]); // compression: null
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);

    let mut hs = vec![1u8]; // client_hello
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);

    let mut rec = vec![CONTENT_HANDSHAKE];
    rec.extend_from_slice(&record_version.to_be_bytes());
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Send `hello` over plain TCP and return the server's first complete TLS record(s), or what
/// it sent before closing. Panics if it neither answers nor closes within 10 s.
pub async fn hello_reply(addr: SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let _ = tcp.write_all(hello).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        if !parse_records(&out).is_empty() {
            return out;
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut tmp)).await {
            Err(_) => panic!(
                "the server neither answered nor closed within 10 s after a ClientHello (got {:02x?})",
                out
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&tmp[..n]),
        }
    }
}

/// Open plain TCP to `addr`, send `bytes` (a write error is ignored: the server may already
/// have closed), then read until the server closes or `within` passes. Returns everything
/// the server sent and whether it closed (EOF or reset).
pub async fn send_and_read_until_close(
    addr: SocketAddr,
    bytes: &[u8],
    within: Duration,
) -> (Vec<u8>, bool) {
    let mut tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let _ = tcp.write_all(bytes).await;
    let _ = tcp.flush().await;
    let mut out = Vec::new();
    let closed = read_to_end_within(&mut tcp, &mut out, within).await;
    (out, closed)
}

/// Asserts the server closed the connection without sending a single byte (no ServerHello,
/// no alert): what a connection refused before TLS looks like.
pub fn assert_closed_without_a_byte(what: &str, (reply, closed): (Vec<u8>, bool)) {
    assert!(
        closed,
        "{what}: the connection was still open after the time limit (got {} bytes)",
        reply.len()
    );
    assert!(
        reply.is_empty(),
        "{what}: the server sent {} bytes before closing (ServerHello: {}): {:02x?}",
        reply.len(),
        has_server_hello(&reply),
        &reply[..reply.len().min(64)]
    );
}
