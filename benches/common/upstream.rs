//! The benches' upstream: HTTP/1.1 in clear, or TLS that serves whichever of HTTP/2 and
//! HTTP/1.1 the gateway picks in ALPN. Used by the load bench and by
//! `examples/bench_upstream.rs` (the HTTPS upstream of `benches/shared-bench.sh`).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// GET answers `body`; POST and PUT echo the request body back, streamed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    body: &'static [u8],
) {
    while let Ok((s, _)) = listener.accept().await {
        let _ = s.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| async move {
                let echo = matches!(*req.method(), hyper::Method::POST | hyper::Method::PUT);
                let b: Either<Full<Bytes>, Incoming> = if echo {
                    Either::Right(req.into_body())
                } else {
                    Either::Left(Full::new(Bytes::from_static(body)))
                };
                Ok::<_, Infallible>(hyper::Response::new(b))
            });
            match tls {
                None => {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                }
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(s).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }
            }
        });
    }
}

/// A TLS acceptor for `chain` + `key` (PEM); `h2` offers HTTP/2 before HTTP/1.1 in ALPN.
pub fn acceptor(chain: &Path, key: &Path, h2: bool) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .expect("chain")
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}
