//! A plain-HTTP client for the admin listener (`[admin] bind = "127.0.0.1:0"`): one fresh
//! HTTP/1.1 connection per call, closed afterwards, so no admin connection outlives a test
//! step (a shutdown does not wait on it).

use std::net::SocketAddr;

use http::Request;
use tokio::net::TcpStream;

use super::client::{H1, TestResponse};
use super::{BoxBody, empty, full};

/// The admin API of one gateway.
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    pub addr: SocketAddr,
}

impl Admin {
    pub fn new(addr: SocketAddr) -> Self {
        Admin { addr }
    }

    /// Send `method path` with `body` on a new connection; panics if no response comes back.
    pub async fn call(&self, method: &str, path: &str, body: BoxBody) -> TestResponse {
        let tcp = TcpStream::connect(self.addr)
            .await
            .unwrap_or_else(|e| panic!("connect to the admin listener at {}: {e}", self.addr));
        let mut h1 = H1::handshake(tcp).await.expect("admin HTTP/1.1 handshake");
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .body(body)
            .expect("admin request");
        h1.call(req)
            .await
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"))
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.call("GET", path, empty()).await
    }

    pub async fn post(&self, path: &str, body: impl Into<bytes::Bytes>) -> TestResponse {
        self.call("POST", path, full(body)).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.call("DELETE", path, empty()).await
    }

    /// `GET /metrics`, checked to be 200 and valid Prometheus text, parsed.
    pub async fn metrics(&self) -> super::prometheus::Exposition {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        let ct = r.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("text/plain"),
            "metrics content-type is {ct:?}"
        );
        super::prometheus::parse(&r.text())
            .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{}", r.text()))
    }
}
