//! PROXY protocol v1 (text) and v2 (binary), as sent by HAProxy and cloud L4 balancers.
//!
//! Read before TLS, only from trusted proxies. Reads exactly the header and not one byte
//! more, so what follows (the TLS ClientHello) stays in the socket for rustls: 8 bytes tell
//! v1 from v2; v2 then says its own length; v1 is read to its CRLF (at most 107 bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;
/// v2 address blocks are small; refuse absurd lengths rather than read them.
const V2_MAX_LEN: usize = 1024;

/// Why a PROXY header was refused. The connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("connection closed before a complete PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PROXY protocol header (the listener requires one)")]
    Missing,
    #[error("malformed PROXY v1 header")]
    BadV1,
    #[error("malformed PROXY v2 header")]
    BadV2,
}

/// Read a PROXY header. `Ok(Some(addr))`: the client's address as the proxy saw it;
/// `Ok(None)`: the proxy speaks for itself (v1 `UNKNOWN`, v2 `LOCAL`, or a non-IP family),
/// so the TCP peer is the origin.
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut start = [0u8; 8];
    r.read_exact(&mut start).await?;
    if start == V2_SIGNATURE[..8] {
        let mut rest = [0u8; 8];
        r.read_exact(&mut rest).await?;
        if rest[..4] != V2_SIGNATURE[8..] {
            return Err(ProxyHeaderError::BadV2);
        }
        let (ver_cmd, family) = (rest[4], rest[5]);
        let len = u16::from_be_bytes([rest[6], rest[7]]) as usize;
        if ver_cmd >> 4 != 2 || len > V2_MAX_LEN {
            return Err(ProxyHeaderError::BadV2);
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        return parse_v2(ver_cmd & 0x0f, family, &body);
    }
    if &start[..6] != b"PROXY " {
        return Err(ProxyHeaderError::Missing);
    }
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyHeaderError::BadV1);
        }
        line.push(r.read_u8().await?);
    }
    parse_v1(&line)
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::BadV1)?;
    let text = text.strip_suffix("\r\n").ok_or(ProxyHeaderError::BadV1)?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyHeaderError::BadV1);
    }
    let family = parts.next().ok_or(ProxyHeaderError::BadV1)?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, _dst, sport, _dport] = fields[..] else {
        return Err(ProxyHeaderError::BadV1);
    };
    let ip: IpAddr = match family {
        "TCP4" => src.parse::<Ipv4Addr>().map(IpAddr::V4),
        "TCP6" => src.parse::<Ipv6Addr>().map(IpAddr::V6),
        _ => return Err(ProxyHeaderError::BadV1),
    }
    .map_err(|_| ProxyHeaderError::BadV1)?;
    // Ports are decimal without leading zeros in the spec; u16 parse is the useful check.
    let port: u16 = sport.parse().map_err(|_| ProxyHeaderError::BadV1)?;
    Ok(Some(SocketAddr::new(ip, port)))
}

fn parse_v2(command: u8, family: u8, body: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    match command {
        0x0 => return Ok(None), // LOCAL: a health check from the proxy itself
        0x1 => {}
        _ => return Err(ProxyHeaderError::BadV2),
    }
    match family {
        // TCP or UDP over IPv4: src(4) dst(4) sport(2) dport(2)
        0x11 | 0x12 => {
            let b: &[u8; 12] = body
                .get(..12)
                .and_then(|s| s.try_into().ok())
                .ok_or(ProxyHeaderError::BadV2)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        // over IPv6: src(16) dst(16) sport(2) dport(2)
        0x21 | 0x22 => {
            let b: &[u8; 36] = body
                .get(..36)
                .and_then(|s| s.try_into().ok())
                .ok_or(ProxyHeaderError::BadV2)?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&b[..16]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(src)),
                u16::from_be_bytes([b[32], b[33]]),
            )))
        }
        // UNSPEC or unix sockets: no IP to speak of.
        _ => Ok(None),
    }
}

/// Encode a v1 header (tests and tools).
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// Encode a v2 PROXY header (tests and tools).
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    let mut body = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x21);
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            body.extend_from_slice(&v6(s).octets());
            body.extend_from_slice(&v6(d).octets());
        }
    }
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        let r = read_header(&mut cursor).await;
        let pos = cursor.position() as usize;
        (r, bytes[pos..].to_vec())
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[tokio::test]
    async fn v1_and_v2_headers_give_the_source_and_leave_the_rest_unread() {
        for header in [
            encode_v1(sa("198.51.100.7:4711"), sa("10.0.0.1:443")),
            encode_v2(sa("198.51.100.7:4711"), sa("10.0.0.1:443")),
        ] {
            let mut bytes = header.clone();
            bytes.extend_from_slice(b"\x16\x03\x01rest");
            let (r, rest) = read(&bytes).await;
            assert_eq!(r.expect("parsed"), Some(sa("198.51.100.7:4711")));
            assert_eq!(rest, b"\x16\x03\x01rest");
        }
        for header in [
            encode_v1(sa("[2001:db8::7]:4711"), sa("[2001:db8::1]:443")),
            encode_v2(sa("[2001:db8::7]:4711"), sa("[2001:db8::1]:443")),
        ] {
            assert_eq!(
                read(&header).await.0.expect("parsed"),
                Some(sa("[2001:db8::7]:4711"))
            );
        }
    }

    #[tokio::test]
    async fn unknown_and_local_mean_the_proxy_itself() {
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0.expect("ok"), None);
        let mut local = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
        local[12] = 0x20;
        assert_eq!(read(&local).await.0.expect("ok"), None);
    }

    #[tokio::test]
    async fn malformed_headers_are_refused() {
        let too_long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        let cases: Vec<Vec<u8>> = vec![
            b"\x16\x03\x01\x02\x00\x01\x00\x01".to_vec(), // a ClientHello: no header
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n".to_vec(),
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2".to_vec(), // no CRLF, then EOF
            too_long.into_bytes(),
            {
                let mut v = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
                v[12] = 0x31; // version 3
                v
            },
            {
                let mut v = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
                v.truncate(20); // body shorter than declared
                v
            },
            {
                let mut v = V2_SIGNATURE.to_vec();
                v.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]); // absurd length
                v
            },
        ];
        for bytes in cases {
            assert!(
                read(&bytes).await.0.is_err(),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}
