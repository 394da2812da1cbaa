//! `portcullis enroll agent`: a reference EST client for the demo and tests. It makes a key
//! (ECDSA P-256) and a CSR on the machine, enrolls with a one-time token
//! (`/.well-known/est/simpleenroll`) or, with `--renew`, re-enrolls over mutual TLS with the
//! certificate it holds (`simplereenroll`), and writes into `--out`: `machine.key` (mode
//! 0600), `machine.pem`, `machine.license`. The private key never leaves the machine.
//!
//! One run, one enrollment: run it from a timer (e.g. when two thirds of the certificate's
//! lifetime have passed) to renew; a long-running renewal loop is not built.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// `portcullis enroll agent ...`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The gateway's enrollment listener: `https://host[:port]`.
    #[arg(long)]
    pub url: String,
    /// The one-time enrollment token (from `portcullis enroll token`); the environment keeps
    /// it out of the process list.
    #[arg(long, env = "PORTCULLIS_ENROLL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA bundle that verifies the gateway's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// Folder for machine.key, machine.pem, machine.license.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Re-enroll with the certificate and key in --out instead of a token.
    #[arg(long)]
    pub renew: bool,
}

/// Why the agent did not enroll.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the key or the CSR: {0}")]
    Key(String),
    #[error("{url}: {message}")]
    Connect { url: String, message: String },
    #[error("the gateway refused: {status} {body}")]
    Refused {
        status: http::StatusCode,
        body: String,
    },
    #[error("the gateway's answer is not a PKCS#7 certificate: {0}")]
    Answer(&'static str),
}

const KEY: &str = "machine.key";
const CERT: &str = "machine.pem";
const LICENSE: &str = "machine.license";

/// Enroll (or re-enroll) once; the text to print.
pub fn run(args: AgentArgs) -> Result<String, AgentError> {
    let file = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AgentError::File { path, source }
    };
    let ca_pem = std::fs::read(&args.ca).map_err(file(&args.ca))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| AgentError::Usage(format!("--ca: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| AgentError::Usage(format!("--ca: {e}")))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentError::Usage(e.to_string()))?
        .with_root_certificates(roots);
    let (tls, path, auth) = if args.renew {
        let chain = std::fs::read(args.out.join(CERT)).map_err(file(&args.out.join(CERT)))?;
        let key = std::fs::read(args.out.join(KEY)).map_err(file(&args.out.join(KEY)))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<_, _>>()
            .map_err(|e| AgentError::Usage(format!("{CERT}: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| AgentError::Usage(format!("{KEY}: {e}")))?;
        let tls = tls
            .with_client_auth_cert(chain, key)
            .map_err(|e| AgentError::Usage(e.to_string()))?;
        (tls, crate::enrollment::SIMPLEREENROLL, None)
    } else {
        let Some(token) = args.token.as_deref() else {
            return Err(AgentError::Usage(
                "--token (or PORTCULLIS_ENROLL_TOKEN) is needed to enroll; --renew re-enrolls"
                    .into(),
            ));
        };
        let auth = zeroize::Zeroizing::new(format!("Bearer {}", token.trim()));
        (
            tls.with_no_client_auth(),
            crate::enrollment::SIMPLEENROLL,
            Some(auth),
        )
    };

    let key = rcgen::KeyPair::generate().map_err(|e| AgentError::Key(e.to_string()))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| AgentError::Key(e.to_string()))?;
    let body = base64::engine::general_purpose::STANDARD.encode(csr.der());
    let auth = auth.as_ref().map(|a| a.as_str());
    let (status, headers, answer) = post(&args.url, tls, path, auth, body)?;
    if status != http::StatusCode::OK {
        let body = String::from_utf8_lossy(&answer).chars().take(300).collect();
        return Err(AgentError::Refused { status, body });
    }
    let der =
        crate::enrollment::pkcs7::decode_base64(&answer).ok_or(AgentError::Answer("not base64"))?;
    let certs =
        crate::enrollment::pkcs7::certificates(&der).ok_or(AgentError::Answer("no SignedData"))?;
    let Some(cert) = certs.first() else {
        return Err(AgentError::Answer("no certificate"));
    };
    let license = headers
        .get(crate::enrollment::LICENSE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();

    std::fs::create_dir_all(&args.out).map_err(file(&args.out))?;
    write(&args.out.join(KEY), key.serialize_pem().as_bytes(), true)?;
    write(&args.out.join(CERT), pem(cert).as_bytes(), false)?;
    write(
        &args.out.join(LICENSE),
        format!("{license}\n").as_bytes(),
        false,
    )?;
    Ok(format!(
        "{} into {}: {KEY}, {CERT}, {LICENSE}\n",
        if args.renew {
            "re-enrolled"
        } else {
            "enrolled"
        },
        args.out.display()
    ))
}

/// POST `body` to `url`'s `path` over TLS: the status, headers and body.
fn post(
    url: &str,
    tls: rustls::ClientConfig,
    path: &str,
    auth: Option<&str>,
    body: String,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), AgentError> {
    let failed = |message: String| AgentError::Connect {
        url: url.to_owned(),
        message,
    };
    let uri: http::Uri = url.parse().map_err(|e| failed(format!("not a URL: {e}")))?;
    let host = uri.host().ok_or_else(|| failed("no host".into()))?;
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let name = ServerName::try_from(bare.clone()).map_err(|e| failed(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(e.to_string()))?;
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| failed(format!("TLS: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| failed(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = http::Request::post(path)
            .header(
                http::header::HOST,
                uri.authority().map_or(host, |a| a.as_str()),
            )
            .header(http::header::CONTENT_TYPE, "application/pkcs10");
        if let Some(a) = auth {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let bytes = http_body_util::Limited::new(body, 1024 * 1024)
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    })
}

/// Write `path` through a sibling file and a rename, so a reader never sees half of it; a
/// private key is created mode 0600.
fn write(path: &Path, contents: &[u8], private: bool) -> Result<(), AgentError> {
    let tmp = path.with_extension("partial");
    let failed = |source| AgentError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(failed)?;
    std::io::Write::write_all(&mut f, contents).map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}

fn pem(der: &[u8]) -> String {
    format!(
        "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----\n",
        crate::enrollment::pkcs7::base64_lines(der)
    )
}
