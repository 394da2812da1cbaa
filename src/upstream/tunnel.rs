//! WebSocket (HTTP/1.1 `Upgrade`) pass-through: once the upstream answered 101, the client's
//! connection and the upstream's are spliced, bytes copied both ways until either side
//! closes or neither sends for the idle timeout.

use std::time::Duration;

use http::{HeaderMap, Request, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Whether `req` asks to become a WebSocket: `Upgrade: websocket` with `Connection:
/// upgrade` on an HTTP/1.1 GET (RFC 6455 section 4.1).
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::GET
        && req.version() == http::Version::HTTP_11
        && has_token(req.headers(), header::UPGRADE, "websocket")
        && has_token(req.headers(), header::CONNECTION, "upgrade")
}

fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Put back the two hop-by-hop headers an upgrade needs on the next hop.
pub fn mark_upgrade(h: &mut HeaderMap) {
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
}

/// Splice the client's and the upstream's upgraded connections in a task of their own.
pub fn spawn(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, route: std::sync::Arc<str>) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(route = &*route, error = %e, "websocket upgrade did not complete");
                return;
            }
        };
        let (up, down) = splice(TokioIo::new(client), TokioIo::new(upstream), idle).await;
        tracing::debug!(
            route = &*route,
            bytes_up = up,
            bytes_down = down,
            "websocket closed"
        );
    });
}

/// Copy `a` to `b` and `b` to `a` until both directions ended or nothing moved for `idle`.
/// Returns the bytes copied each way.
async fn splice<A, B>(a: A, b: B, idle: Duration) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (mut to_b, mut to_a) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut a_open, mut b_open) = (true, true);
    let (mut up, mut down) = (0u64, 0u64);
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut to_b), if a_open => match r {
                Ok(0) | Err(_) => {
                    a_open = false;
                    let _ = bw.shutdown().await;
                }
                Ok(n) => {
                    if bw.write_all(&to_b[..n]).await.is_err() {
                        break;
                    }
                    up += n as u64;
                }
            },
            r = br.read(&mut to_a), if b_open => match r {
                Ok(0) | Err(_) => {
                    b_open = false;
                    let _ = aw.shutdown().await;
                }
                Ok(n) => {
                    if aw.write_all(&to_a[..n]).await.is_err() {
                        break;
                    }
                    down += n as u64;
                }
            },
            () = tokio::time::sleep(idle) => break,
        }
    }
    (up, down)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_with_both_headers_is_a_websocket_upgrade() {
        let req = |method: &str, upgrade: &str, connection: &str| {
            Request::builder()
                .method(method)
                .header("upgrade", upgrade)
                .header("connection", connection)
                .body(())
                .unwrap()
        };
        assert!(is_websocket_upgrade(&req("GET", "websocket", "Upgrade")));
        assert!(is_websocket_upgrade(&req(
            "GET",
            "WebSocket",
            "keep-alive, upgrade"
        )));
        assert!(!is_websocket_upgrade(&req("POST", "websocket", "upgrade")));
        assert!(!is_websocket_upgrade(&req("GET", "h2c", "upgrade")));
        assert!(!is_websocket_upgrade(&req(
            "GET",
            "websocket",
            "keep-alive"
        )));
    }

    #[tokio::test]
    async fn splice_copies_both_ways_until_both_close() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let task = tokio::spawn(splice(client, upstream, Duration::from_secs(5)));
        client_peer.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        upstream_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        upstream_peer.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        drop(client_peer);
        drop(upstream_peer);
        assert_eq!(task.await.unwrap(), (4, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        // Paused time: the sleep completes as soon as nothing else can run.
        assert_eq!(
            splice(client, upstream, Duration::from_secs(60)).await,
            (0, 0)
        );
    }
}
