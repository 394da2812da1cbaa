//! Remote JWKS: fetched over HTTPS by a background task, at start, on an interval and (rate
//! limited) when a token names a kid we do not know. The request path only reads the last good
//! key set and, for an unknown kid, pokes a `Notify`; it never waits for the network.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::alg::AlgSet;
use super::keys::KeyError;
use super::keyset::KeySet;

/// Largest JWKS body read: real sets are a few KiB; this bounds what a hostile server can make
/// us buffer.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// How one issuer's JWKS is fetched.
#[derive(Debug, Clone)]
pub struct RemoteJwksSettings {
    /// `https://host[:port]/path`.
    pub url: Uri,
    /// The CAs the JWKS server's certificate must chain to.
    pub roots: Arc<RootCertStore>,
    /// Algorithms the issuer's keys may be used with.
    pub algorithms: AlgSet,
    /// Time between regular fetches.
    pub refresh: Duration,
    /// Least time between two fetches when unknown kids ask for one (and the first retry
    /// after a failure).
    pub min_refetch: Duration,
    /// Limit on one whole fetch: connect, TLS, request and body.
    pub timeout: Duration,
}

/// Why a fetch failed. The last good key set stays in use.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL has no host (validation prevents this).
    #[error("the URL has no host")]
    NoHost,
    /// TCP connect failed (DNS, refused, unreachable).
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// TLS handshake failed: untrusted certificate, wrong name, protocol error.
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// The HTTP exchange broke.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The server answered with something other than 200.
    #[error("HTTP status {0}")]
    Status(StatusCode),
    /// The body is over [`MAX_JWKS_BYTES`].
    #[error("the body is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The body could not be read.
    #[error("reading the body: {0}")]
    Body(String),
    /// The whole fetch took longer than the timeout.
    #[error("timed out")]
    Timeout,
    /// The document has no usable key.
    #[error("{0}")]
    Keys(#[from] KeyError),
}

/// One issuer's remote key set and the state of its fetch task.
pub struct RemoteJwks {
    issuer: Arc<str>,
    settings: RemoteJwksSettings,
    tls: tokio_rustls::TlsConnector,
    pub(crate) keys: ArcSwap<KeySet>,
    refetch: Notify,
    /// Fetches finished (success or not): lets start-up wait for the first one.
    attempts: watch::Sender<u64>,
}

impl RemoteJwks {
    /// Nothing is fetched until [`run`](Self::run) starts; until then the key set is empty.
    pub fn new(issuer: Arc<str>, settings: RemoteJwksSettings) -> Result<Self, rustls::Error> {
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(settings.roots.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(RemoteJwks {
            issuer,
            settings,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            keys: ArcSwap::from_pointee(KeySet::default()),
            refetch: Notify::new(),
            attempts: watch::channel(0).0,
        })
    }

    pub fn url(&self) -> &Uri {
        &self.settings.url
    }

    /// The last good key set.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Take over another instance's keys (same issuer after a reload), so a reload does not
    /// start with an empty set.
    pub fn adopt(&self, previous: &RemoteJwks) {
        let keys = previous.keys.load_full();
        if !keys.is_empty() && self.keys.load().is_empty() {
            self.keys.store(keys);
        }
    }

    /// Ask for a refetch. Cheap and non-blocking: one stored permit however often it is called.
    pub(crate) fn request_refetch(&self) {
        self.refetch.notify_one();
    }

    /// Fetches attempted so far, as a channel to wait on.
    pub fn attempts(&self) -> watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    /// Fetch now and, on success, swap the new key set in. Returns the number of keys.
    pub async fn fetch_once(&self) -> Result<usize, FetchError> {
        let result = tokio::time::timeout(self.settings.timeout, self.fetch())
            .await
            .unwrap_or(Err(FetchError::Timeout));
        let out = result.map(|(set, skipped)| {
            for why in &skipped {
                tracing::warn!(issuer = %self.issuer, key = %why, "JWKS key skipped");
            }
            let n = set.len();
            let previous = self.keys.load();
            self.keys.store(Arc::new(set.reuse_unchanged(&previous)));
            n
        });
        // Counted after the swap, so whoever waits on a count sees its keys.
        self.attempts.send_modify(|n| *n += 1);
        out
    }

    /// The fetch loop: at start, every `refresh`, after a failure with backoff, and on request
    /// no sooner than `min_refetch` after the previous fetch. Ends when `shutdown` turns true
    /// or its sender is dropped.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let s = &self.settings;
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let started = Instant::now();
            let wait = match self.fetch_once().await {
                Ok(n) => {
                    failures = 0;
                    tracing::debug!(issuer = %self.issuer, keys = n, "JWKS fetched");
                    s.refresh
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        issuer = %self.issuer, url = %s.url, error = %e,
                        "JWKS fetch failed; keeping the last good key set"
                    );
                    // Retry soon after a failure, backing off up to the regular interval.
                    s.min_refetch
                        .saturating_mul(1 << failures.min(10).saturating_sub(1))
                        .min(s.refresh)
                }
            };
            let refetch = tokio::select! {
                _ = tokio::time::sleep_until(started + wait) => false,
                _ = self.refetch.notified() => true,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            if refetch {
                // Rate limit: a stream of unknown kids costs one fetch per min_refetch.
                tokio::select! {
                    _ = tokio::time::sleep_until(started + s.min_refetch) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Vec<String>), FetchError> {
        let url = &self.settings.url;
        let host = url.host().ok_or(FetchError::NoHost)?;
        // IPv6 literals come bracketed in a URI, but not in a socket address or a TLS name.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((bare, port))
            .await
            .map_err(FetchError::Connect)?;
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|e| FetchError::Tls(std::io::Error::other(e)))?;
        let tls = self.tls.connect(name, tcp).await.map_err(FetchError::Tls)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let authority = url.authority().map_or(host, |a| a.as_str());
        let req = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(header::USER_AGENT, "portcullis")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Body(e.to_string()))?;
        let exchange = async move {
            let resp = sender.send_request(req).await?;
            // Dropping the sender lets the connection close once the body is read.
            drop(sender);
            if resp.status() != StatusCode::OK {
                return Err(FetchError::Status(resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge
                    } else {
                        FetchError::Body(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(KeySet::from_jwks(&body, self.settings.algorithms)?)
        };
        // The connection is driven alongside the exchange; its errors surface there too.
        let (_, result) = tokio::join!(conn, exchange);
        result
    }
}
