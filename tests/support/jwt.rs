//! Bearer-token material made at test time: signing keys (ES256, RS256, EdDSA) generated with
//! rcgen, their public halves as PEM files or JWKs, compact JWS tokens signed with
//! jsonwebtoken, and a local HTTPS server that serves a JWKS document.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::pki::Pki;

/// A token signing key and its public half.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub enc: EncodingKey,
    /// `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo).
    pub public_pem: String,
    /// The raw public key (for Ed25519 the 32 bytes a JWK carries).
    pub public_raw: Vec<u8>,
}

impl TestKey {
    /// A new key for `alg` (ES256, RS256 or EdDSA). EC and Ed25519 keys are handed to
    /// jsonwebtoken as PKCS#8 DER; RSA as PKCS#8 PEM (its DER constructor wants PKCS#1).
    pub fn generate(kid: &str, alg: Algorithm) -> TestKey {
        let sig = match alg {
            Algorithm::ES256 => &PKCS_ECDSA_P256_SHA256,
            Algorithm::EdDSA => &PKCS_ED25519,
            Algorithm::RS256 => &PKCS_RSA_SHA256,
            other => panic!("no test keys for {other:?}"),
        };
        let kp = KeyPair::generate_for(sig).expect("key generation");
        let enc = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_der(&kp.serialize_der()),
            Algorithm::EdDSA => EncodingKey::from_ed_der(&kp.serialize_der()),
            _ => EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).expect("RSA PKCS#8 PEM"),
        };
        TestKey {
            alg,
            kid: kid.to_owned(),
            enc,
            public_pem: kp.public_key_pem(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    /// The algorithm's JOSE name.
    pub fn alg_name(&self) -> &'static str {
        match self.alg {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            Algorithm::EdDSA => "EdDSA",
            _ => "unsupported",
        }
    }

    /// A token with header `{alg, kid, typ}` and `claims`.
    pub fn token(&self, claims: &Value) -> String {
        let header = json!({ "alg": self.alg_name(), "kid": self.kid, "typ": "JWT" });
        self.sign(&header, claims)
    }

    /// A compact JWS with exactly this header and these claims, signed with this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let h = b64(&serde_json::to_vec(header).expect("json"));
        let p = b64(&serde_json::to_vec(claims).expect("json"));
        let msg = format!("{h}.{p}");
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &self.enc, self.alg).expect("sign");
        format!("{msg}.{sig}")
    }

    /// The public key as a JWK with this kid and alg.
    pub fn jwk(&self) -> Value {
        if self.alg == Algorithm::EdDSA {
            // jsonwebtoken cannot derive a JWK from an Ed25519 PKCS#8 key: write it directly.
            return json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64(&self.public_raw),
                "alg": "EdDSA", "kid": self.kid, "use": "sig",
            });
        }
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.enc, self.alg).expect("jwk");
        let mut v = serde_json::to_value(jwk).expect("json");
        v["kid"] = json!(self.kid);
        v
    }
}

/// `{"keys": [...]}` of `keys`.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An HTTPS server on 127.0.0.1:0 answering every request with the current JSON body. Its
/// certificate is the PKI's `server.pem` (SANs localhost and 127.0.0.1, signed by `ca.pem`),
/// so an issuer's `jwks_ca = "ca.pem"` trusts it.
pub struct JwksServer {
    pub addr: SocketAddr,
    body: Arc<Mutex<Vec<u8>>>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    pub async fn start(pki: &Pki, document: &Value) -> JwksServer {
        let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).expect("server.key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![pki.server.clone()], key)
            .expect("JWKS server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS server");
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(Mutex::new(document.to_string().into_bytes()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, b, h) = (acceptor.clone(), b.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = b.lock().map(|g| g.clone()).unwrap_or_default();
                        let resp = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .expect("response");
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            body,
            hits,
            task,
        }
    }

    /// `https://127.0.0.1:<port>/.well-known/jwks.json`
    pub fn url(&self) -> String {
        format!("https://{}/.well-known/jwks.json", self.addr)
    }

    /// Serve `document` from now on.
    pub fn serve(&self, document: &Value) {
        *self.body.lock().expect("lock") = document.to_string().into_bytes();
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
