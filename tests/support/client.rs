//! TLS clients (rustls, aws-lc-rs) and HTTP/1.1 / HTTP/2 request helpers over them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::BoxBody;
use super::pki::{Identity, Pki};
use super::upstream::Echo;

/// A TLS client stream.
pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Upper bound for one request/response exchange in the helpers; a hang fails the test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds rustls client configs: trusts the test CA; TLS 1.2 + 1.3; ALPN http/1.1 unless told.
#[derive(Clone, Debug)]
pub struct TlsClient {
    roots: Vec<CertificateDer<'static>>,
    versions: Vec<&'static SupportedProtocolVersion>,
    alpn: Vec<Vec<u8>>,
    identity: Option<Identity>,
    /// Cipher suites offered, most preferred first; None: the provider's defaults.
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
    /// Key-exchange groups offered, most preferred first; None: the provider's defaults.
    kx: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
    /// Verify the server's chain but not its names (see [`TlsClient::any_server_name`]).
    any_server_name: bool,
}

impl TlsClient {
    pub fn new(pki: &Pki) -> Self {
        TlsClient {
            roots: vec![pki.ca.clone()],
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: vec![b"http/1.1".to_vec()],
            identity: None,
            suites: None,
            kx: None,
            any_server_name: false,
        }
    }

    /// Verify the server's chain to the test CA but accept a certificate that does not
    /// name the server: what an agent that pins the gateway's certificate does, and the
    /// only way to reach a listener whose certificate carries no names.
    pub fn any_server_name(mut self) -> Self {
        self.any_server_name = true;
        self
    }

    /// Offer exactly these key-exchange groups, in this order.
    pub fn kx(mut self, groups: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> Self {
        self.kx = Some(groups.to_vec());
        self
    }

    pub fn versions(mut self, v: &[&'static SupportedProtocolVersion]) -> Self {
        self.versions = v.to_vec();
        self
    }

    pub fn tls12_only(self) -> Self {
        self.versions(&[&rustls::version::TLS12])
    }

    pub fn tls13_only(self) -> Self {
        self.versions(&[&rustls::version::TLS13])
    }

    /// ALPN protocols offered, most preferred first.
    pub fn alpn(mut self, protos: &[&str]) -> Self {
        self.alpn = protos.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// Offer only h2.
    pub fn h2(self) -> Self {
        self.alpn(&["h2"])
    }

    /// Offer exactly these cipher suites, in this order.
    pub fn suites(mut self, suites: &[rustls::SupportedCipherSuite]) -> Self {
        self.suites = Some(suites.to_vec());
        self
    }

    pub fn identity(mut self, id: &Identity) -> Self {
        self.identity = Some(id.clone());
        self
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if let Some(suites) = &self.suites {
            provider.cipher_suites = suites.clone();
        }
        if let Some(kx) = &self.kx {
            provider.kx_groups = kx.clone();
        }
        let provider = Arc::new(provider);
        let mut roots = RootCertStore::empty();
        for r in &self.roots {
            roots.add(r.clone()).expect("add root");
        }
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .expect("protocol versions");
        let builder = if self.any_server_name {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("server verifier");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut cfg = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key())
                .expect("client identity"),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = self.alpn.clone();
        Arc::new(cfg)
    }

    /// TCP connect + TLS handshake (at most 20 s) with SNI `sni`.
    pub async fn connect(&self, addr: SocketAddr, sni: &str) -> io::Result<Tls> {
        let name = ServerName::try_from(sni.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let connector = TlsConnector::from(self.config());
        let fut = async move {
            let tcp = TcpStream::connect(addr).await?;
            connector.connect(name, tcp).await
        };
        tokio::time::timeout(Duration::from_secs(20), fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }

    /// TCP connect from the local address `source` (e.g. 127.0.0.2: any 127/8 address works
    /// on Linux loopback) + TLS handshake (at most 20 s) with SNI `sni`, so the gateway sees
    /// another client address.
    pub async fn connect_from(
        &self,
        source: std::net::IpAddr,
        addr: SocketAddr,
        sni: &str,
    ) -> io::Result<Tls> {
        let socket = match source {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let tcp = tokio::time::timeout(Duration::from_secs(20), socket.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
        self.connect_over(tcp, sni).await
    }

    /// TLS handshake (at most 20 s) with SNI `sni` over an already connected `tcp`, e.g.
    /// after a PROXY protocol header was written to it.
    pub async fn connect_over(&self, tcp: TcpStream, sni: &str) -> io::Result<Tls> {
        let name = ServerName::try_from(sni.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let connector = TlsConnector::from(self.config());
        tokio::time::timeout(Duration::from_secs(20), connector.connect(name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

/// A server certificate verifier that checks the chain (and signatures) but not the name.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// An HTTP/1.1 client connection.
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<BoxBody>,
}

impl H1 {
    pub async fn handshake<S>(io: S) -> Result<H1, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H1 { sender })
    }

    /// Send one request; the response head (at most [`REQUEST_TIMEOUT`]).
    pub async fn send(&mut self, req: Request<BoxBody>) -> Result<Response<Incoming>, String> {
        self.send_within(req, REQUEST_TIMEOUT).await
    }

    /// Send one request; the response head (at most `limit`).
    pub async fn send_within(
        &mut self,
        req: Request<BoxBody>,
        limit: Duration,
    ) -> Result<Response<Incoming>, String> {
        let sender = &mut self.sender;
        let fut = async move {
            sender.ready().await?;
            sender.send_request(req).await
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r.map_err(|e| format!("request failed: {e:?}")),
            Err(_) => Err(format!("no response within {limit:?}")),
        }
    }

    /// Send one request and read the whole response.
    pub async fn call(&mut self, req: Request<BoxBody>) -> Result<TestResponse, String> {
        let resp = self.send(req).await?;
        TestResponse::read(resp).await
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// An HTTP/2 client connection (requests need an absolute URI: see [`h2_request`]).
#[derive(Clone)]
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<BoxBody>,
}

impl H2 {
    pub async fn handshake<S>(io: S) -> Result<H2, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2 { sender })
    }

    pub async fn send(&mut self, req: Request<BoxBody>) -> Result<Response<Incoming>, String> {
        let sender = &mut self.sender;
        let fut = async move {
            sender.ready().await?;
            sender.send_request(req).await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|e| format!("request failed: {e:?}")),
            Err(_) => Err(format!("no response within {REQUEST_TIMEOUT:?}")),
        }
    }

    pub async fn call(&mut self, req: Request<BoxBody>) -> Result<TestResponse, String> {
        let resp = self.send(req).await?;
        TestResponse::read(resp).await
    }
}

/// A request builder with origin-form `path` and `Host: localhost` (HTTP/1.1).
pub fn request(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
}

/// `GET path` with `Host: localhost` and no body.
pub fn get(path: &str) -> Request<BoxBody> {
    request("GET", path).body(super::empty()).unwrap()
}

/// A request builder for HTTP/2: absolute URI `https://{authority}{path}`.
pub fn h2_request(method: &str, authority: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .version(Version::HTTP_2)
        .uri(format!("https://{authority}{path}"))
}

/// TLS (default client, SNI localhost) + HTTP/1.1 handshake; panics on failure.
pub async fn connect_h1(pki: &Pki, addr: SocketAddr) -> H1 {
    H1::handshake(tls_as(&TlsClient::new(pki), addr, "localhost").await)
        .await
        .unwrap()
}

/// TLS (default client, ALPN h2, SNI localhost) + HTTP/2 handshake; panics on failure.
pub async fn connect_h2(pki: &Pki, addr: SocketAddr) -> H2 {
    H2::handshake(tls_as(&TlsClient::new(pki).h2(), addr, "localhost").await)
        .await
        .unwrap()
}

/// TLS dialled by address (127.0.0.1: no SNI, the certificate's IP SAN is verified) +
/// HTTP/1.1, as a client reaching the gateway by address does: no SNI ties the connection
/// to a name, so any name the listener serves may be sent as Host.
pub async fn connect_h1_by_address(pki: &Pki, addr: SocketAddr) -> H1 {
    let ip = addr.ip().to_string();
    H1::handshake(tls_as(&TlsClient::new(pki), addr, &ip).await)
        .await
        .unwrap()
}

/// [`connect_h1_by_address`] with ALPN h2 and HTTP/2.
pub async fn connect_h2_by_address(pki: &Pki, addr: SocketAddr) -> H2 {
    let ip = addr.ip().to_string();
    H2::handshake(tls_as(&TlsClient::new(pki).h2(), addr, &ip).await)
        .await
        .unwrap()
}

/// `client`'s TLS to `addr` asking for `server_name` (an IP address: no SNI); panics on
/// failure.
pub async fn tls_as(client: &TlsClient, addr: SocketAddr, server_name: &str) -> Tls {
    client
        .connect(addr, server_name)
        .await
        .unwrap_or_else(|e| panic!("TLS connect to {addr} as {server_name}: {e}"))
}

/// One request on a fresh HTTP/1.1 connection; panics if no response comes back.
pub async fn send_one(pki: &Pki, addr: SocketAddr, req: Request<BoxBody>) -> TestResponse {
    connect_h1(pki, addr)
        .await
        .call(req)
        .await
        .unwrap_or_else(|e| panic!("request to the gateway at {addr}: {e}"))
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub async fn read(resp: Response<Incoming>) -> Result<TestResponse, String> {
        let (parts, body) = resp.into_parts();
        let body = match tokio::time::timeout(REQUEST_TIMEOUT, body.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => return Err(format!("reading the response body: {e:?}")),
            Err(_) => {
                return Err(format!(
                    "response body not complete within {REQUEST_TIMEOUT:?}"
                ));
            }
        };
        Ok(TestResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    /// The only value of header `name`; panics if it appears more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all: Vec<_> = self.headers.get_all(name).iter().collect();
        assert!(all.len() <= 1, "response has {name} {} times", all.len());
        all.first()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// The upstream's [`Echo`]; panics unless the status is 200 and the body an echo.
    pub fn echo(&self) -> Echo {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected 200 from the echo upstream, body: {}",
            self.text()
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not an upstream echo ({e}): {:?}", self.text()))
    }

    /// Asserts the gateway's denial format: `status`, `content-type: application/json`, body
    /// exactly `{"error": reason, "request_id": id}` with `id` equal to `x-request-id`, and no
    /// upstream address (127.0.0.1) in the body. Returns the request id.
    pub fn assert_denied(&self, status: u16, reason: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status} {reason}, got {} with body {:?}",
            self.status,
            self.text()
        );
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "denial content-type is {ct:?}, want application/json"
        );
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("denial body is not a JSON object: {v}"));
        let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["error", "request_id"],
            "denial body must have exactly error and request_id: {v}"
        );
        assert_eq!(obj["error"], reason, "denial reason in {v}");
        let id = obj["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("request_id is not a string in {v}"))
            .to_string();
        assert!(!id.is_empty(), "empty request_id in {v}");
        assert_eq!(
            self.header("x-request-id").as_deref(),
            Some(id.as_str()),
            "x-request-id header must equal the body's request_id"
        );
        assert!(
            !self.text().contains("127.0.0.1"),
            "denial body leaks an address: {}",
            self.text()
        );
        id
    }
}
