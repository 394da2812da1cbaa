//! Remote JWKS against a local HTTPS server (rustls, rcgen certificates, 127.0.0.1:0): the
//! fetch at start, the refresh, the rate-limited refetch on an unknown kid, and failures that
//! keep the last good set. Waits are on the fetch counter, bounded; sleeps are short.

use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer};
use rustls::RootCertStore;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::*;
use crate::token::{Alg, FetchError, RemoteJwks, RemoteJwksSettings};

struct Server {
    url: http::Uri,
    reply: Arc<Mutex<(u16, Vec<u8>)>>,
    hits: Arc<AtomicUsize>,
    roots: Arc<RootCertStore>,
}

impl Server {
    async fn start(jwks: &Value) -> Server {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("root");

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let reply = Arc::new(Mutex::new((200, jwks.to_string().into_bytes())));
        let hits = Arc::new(AtomicUsize::new(0));
        let (r, h) = (reply.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, r, h) = (acceptor.clone(), r.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = r.lock().map(|g| g.clone()).unwrap_or_default();
                        let resp = http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(body)));
                        async move { Ok::<_, Infallible>(resp.expect("response")) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Server {
            url: format!("https://127.0.0.1:{port}/.well-known/jwks.json")
                .parse()
                .expect("url"),
            reply,
            hits,
            roots: Arc::new(roots),
        }
    }

    fn serve(&self, status: u16, body: impl Into<Vec<u8>>) {
        *self.reply.lock().expect("lock") = (status, body.into());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn remote(&self, refresh: Duration, min_refetch: Duration) -> Arc<RemoteJwks> {
        let settings = RemoteJwksSettings {
            url: self.url.clone(),
            roots: self.roots.clone(),
            algorithms: AlgSet::of(&[Alg::ES256, Alg::EdDSA, Alg::RS256]),
            refresh,
            min_refetch,
            timeout: Duration::from_secs(5),
        };
        Arc::new(RemoteJwks::new("corp".into(), settings).expect("remote"))
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

fn remote_verifier(remote: &Arc<RemoteJwks>) -> TokenVerifier {
    TokenVerifier::new(
        vec![issuer("corp", ISS, KeySource::Remote(remote.clone()))],
        Arc::new(NoRevocations),
    )
}

/// Wait (at most 5 s) until `remote` has finished `n` fetches.
async fn fetched(remote: &RemoteJwks, n: u64) {
    let mut rx = remote.attempts();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|a| *a >= n))
        .await
        .expect("fetch did not happen in time")
        .expect("fetch task alive");
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn remote_jwks_is_fetched_at_start_and_its_keys_verify() {
    let server = Server::start(&jwks(&[&KEYS.es256])).await;
    let remote = server.remote(HOUR, HOUR);
    let v = remote_verifier(&remote);
    let token = KEYS.es256.token(&claims());
    assert_eq!(
        check(&v, &token).err(),
        Some(TokenDenial::Invalid),
        "no keys yet"
    );
    let (_stop, shutdown) = watch::channel(false);
    v.spawn_refresh(shutdown);
    assert!(v.wait_for_first_fetch(Duration::from_secs(5)).await);
    assert!(check(&v, &token).is_ok());
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn remote_jwks_is_refreshed_and_a_rotated_out_key_stops_verifying() {
    let server = Server::start(&jwks(&[&KEYS.es256])).await;
    let remote = server.remote(Duration::from_millis(100), Duration::from_millis(50));
    let v = remote_verifier(&remote);
    let (_stop, shutdown) = watch::channel(false);
    v.spawn_refresh(shutdown);
    fetched(&remote, 1).await;
    let es = KEYS.es256.token(&claims());
    let ed = KEYS.ed.token(&claims());
    assert!(check(&v, &es).is_ok(), "cached now");
    assert_eq!(check(&v, &ed).err(), Some(TokenDenial::Invalid));

    server.serve(200, jwks(&[&KEYS.ed]).to_string());
    let seen = remote.attempts().borrow().to_owned();
    fetched(&remote, seen + 2).await;
    assert!(check(&v, &ed).is_ok());
    assert_eq!(
        check(&v, &es).err(),
        Some(TokenDenial::Invalid),
        "cached, but its key left"
    );
}

#[tokio::test]
async fn an_unknown_kid_triggers_a_rate_limited_refetch() {
    let server = Server::start(&jwks(&[&KEYS.es256])).await;
    let min_refetch = Duration::from_millis(300);
    let remote = server.remote(HOUR, min_refetch);
    let v = remote_verifier(&remote);
    let (_stop, shutdown) = watch::channel(false);
    v.spawn_refresh(shutdown);
    fetched(&remote, 1).await;

    // The issuer rotates in a new key: the first token naming it is refused (the request
    // never waits for a fetch), and the refetch it triggered brings the key in.
    server.serve(200, jwks(&[&KEYS.es256, &KEYS.ed]).to_string());
    let ed = KEYS.ed.token(&claims());
    assert_eq!(check(&v, &ed).err(), Some(TokenDenial::Invalid));
    fetched(&remote, 2).await;
    assert!(check(&v, &ed).is_ok());

    // A flood of unknown kids costs at most one fetch per min_refetch.
    let before = server.hits();
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(900) {
        let header = json!({ "alg": "ES256", "kid": format!("unknown-{n}") });
        let token = sign(
            &header,
            &claims(),
            &KEYS.rogue.enc,
            jsonwebtoken::Algorithm::ES256,
        );
        assert_eq!(check(&v, &token).err(), Some(TokenDenial::Invalid));
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let allowed = (started.elapsed().as_millis() / min_refetch.as_millis()) as usize + 1;
    let fetches = server.hits() - before;
    assert!(n > 50, "only {n} requests");
    assert!(
        fetches >= 1 && fetches <= allowed,
        "{fetches} fetches for {n} unknown kids"
    );
}

#[tokio::test]
async fn a_failing_fetch_keeps_the_last_good_key_set() {
    let server = Server::start(&jwks(&[&KEYS.es256])).await;
    let remote = server.remote(Duration::from_millis(50), Duration::from_millis(20));
    let v = remote_verifier(&remote);
    let (_stop, shutdown) = watch::channel(false);
    v.spawn_refresh(shutdown);
    fetched(&remote, 1).await;
    let failures: [(u16, &str); 4] = [
        (500, "oops"),
        (200, "not json"),
        (200, "{\"keys\": []}"),
        (200, "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}"),
    ];
    for (i, (status, body)) in failures.into_iter().enumerate() {
        server.serve(status, body);
        let seen = remote.attempts().borrow().to_owned();
        fetched(&remote, seen + 2).await;
        assert_eq!(
            remote.keys().kids().collect::<Vec<_>>(),
            ["es256"],
            "{body}"
        );
        // A token never seen before, so it is verified against the kept set, not the cache.
        let token = KEYS
            .es256
            .token(&claims_with(json!({ "jti": format!("fresh-{i}") })));
        assert!(check(&v, &token).is_ok(), "{status} {body}");
    }
}

#[tokio::test]
async fn a_jwks_server_with_an_untrusted_certificate_is_refused() {
    let server = Server::start(&jwks(&[&KEYS.es256])).await;
    let other = Server::start(&jwks(&[&KEYS.es256])).await;
    let settings = RemoteJwksSettings {
        url: server.url.clone(),
        roots: other.roots.clone(),
        algorithms: AlgSet::of(&[Alg::ES256]),
        refresh: HOUR,
        min_refetch: HOUR,
        timeout: Duration::from_secs(5),
    };
    let remote = RemoteJwks::new("corp".into(), settings).expect("remote");
    assert!(matches!(remote.fetch_once().await, Err(FetchError::Tls(_))));
    assert!(remote.keys().is_empty());
}

#[tokio::test]
async fn an_oversized_jwks_body_is_refused() {
    let server = Server::start(&json!({})).await;
    server.serve(200, vec![b' '; crate::token::MAX_JWKS_BYTES + 1]);
    let remote = server.remote(HOUR, HOUR);
    assert!(matches!(
        remote.fetch_once().await,
        Err(FetchError::TooLarge)
    ));
}

#[tokio::test]
async fn shutdown_stops_the_refresh_task_and_a_reload_inherits_the_keys() {
    let server = Server::start(&jwks(&[&KEYS.es256])).await;
    let remote = server.remote(Duration::from_millis(50), Duration::from_millis(20));
    let v = remote_verifier(&remote);
    let (stop, shutdown) = watch::channel(false);
    v.spawn_refresh(shutdown);
    fetched(&remote, 2).await;
    stop.send_replace(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hits = server.hits();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.hits(), hits, "no fetch after shutdown");

    // A reload builds a new verifier: it starts with the keys the old one fetched.
    let reloaded = remote_verifier(&server.remote(HOUR, HOUR));
    reloaded.inherit_keys(&v);
    assert!(check(&reloaded, &KEYS.es256.token(&claims())).is_ok());
}
