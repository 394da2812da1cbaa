//! `portcullis enroll agent`: a reference EST client for the demo and tests. It makes a key
//! (ECDSA P-256) and a CSR on the machine, enrolls with a one-time token
//! (`/.well-known/est/simpleenroll`), and writes into `--out`: `machine.key` (mode 0600),
//! `machine.pem`, `machine.license`. Then it keeps running and re-enrolls over mutual TLS
//! with the certificate it holds (`simplereenroll`) when two thirds of the certificate's
//! lifetime have passed, retrying failures with a bounded, jittered backoff. `--once` does
//! one enrollment or renewal and exits. The private key never leaves the machine.

mod files;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use files::{CERT, KEY, LICENSE};
use schedule::Step;

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
    /// One step, then exit: enroll when --out holds no certificate (or an expired one),
    /// else re-enroll with it now.
    #[arg(long)]
    pub once: bool,
    /// Re-enroll now with the certificate and key in --out (never spends a token), then exit.
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
    #[error(
        "the certificate in {dir} expired at {at}: it cannot re-enroll; make a new token (portcullis enroll token) and run the agent with it"
    )]
    Expired { dir: PathBuf, at: String },
    #[error(
        "the certificate in {dir} expired at {at} and the token was refused (spent, expired or revoked): make a new token (portcullis enroll token) and run the agent with it"
    )]
    ExpiredAndTokenRefused { dir: PathBuf, at: String },
}

impl AgentError {
    /// A failure worth retrying: the gateway unreachable or busy, not a refusal.
    fn is_transient(&self) -> bool {
        match self {
            AgentError::Connect { .. } => true,
            AgentError::Refused { status, .. } => {
                status.is_server_error() || *status == http::StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// The longest single sleep: a certificate replaced by hand or a clock that jumped is seen
/// within this.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Run the agent: one step with `--once`/`--renew` (the text to print), else for as long as
/// it can (it returns only an error).
pub fn run(args: AgentArgs) -> Result<String, AgentError> {
    let roots = roots(&args.ca)?;
    let token = args
        .token
        .as_deref()
        .map(|t| zeroize::Zeroizing::new(t.trim().to_owned()));
    if args.renew {
        return step(&args, &roots, None);
    }
    if args.once {
        let now = crate::license::dates::unix(SystemTime::now());
        return match schedule::next(now, files::held(&args.out)?) {
            Step::Renew | Step::Wait(_) => step(&args, &roots, None),
            Step::Enroll | Step::Expired(_) => {
                enroll(&args, &roots, token.as_deref().map(String::as_str), now)
            }
        };
    }
    let mut token = token;
    let mut failures = 0u32;
    loop {
        let now = crate::license::dates::unix(SystemTime::now());
        let result = match schedule::next(now, files::held(&args.out)?) {
            Step::Wait(d) => {
                std::thread::sleep(d.min(MAX_SLEEP));
                continue;
            }
            Step::Renew => step(&args, &roots, None),
            Step::Enroll | Step::Expired(_) => {
                enroll(&args, &roots, token.as_deref().map(String::as_str), now)
            }
        };
        match result {
            Ok(done) => {
                // The token is spent: a later enrollment needs a new one.
                token = None;
                failures = 0;
                let next = files::held(&args.out)?.map(|v| v.renew_at()).unwrap_or(now);
                print!("{}", done.trim_end());
                println!("; renews at {}", crate::license::dates::rfc3339(next));
            }
            Err(e) if e.is_transient() => {
                failures = failures.saturating_add(1);
                let wait = schedule::backoff(failures, jitter());
                eprintln!("warning: {e}; retrying in {}s", wait.as_secs());
                std::thread::sleep(wait);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Enroll with `token`; when the certificate held has expired and the token is refused (a
/// restart with the token already spent), say that a new token is needed.
fn enroll(
    args: &AgentArgs,
    roots: &rustls::RootCertStore,
    token: Option<&str>,
    now: u64,
) -> Result<String, AgentError> {
    let token = needed(args, token, now)?;
    step(args, roots, Some(token)).map_err(|e| {
        let expired = match files::held(&args.out) {
            Ok(held) => match schedule::next(now, held) {
                Step::Expired(at) => Some(at),
                _ => None,
            },
            Err(_) => None,
        };
        match (e, expired) {
            (AgentError::Refused { status, .. }, Some(at))
                if status == http::StatusCode::UNAUTHORIZED =>
            {
                AgentError::ExpiredAndTokenRefused {
                    dir: args.out.clone(),
                    at: crate::license::dates::rfc3339(at),
                }
            }
            (e, _) => e,
        }
    })
}

/// The token an enrollment spends, or why there is none: no certificate yet, or an expired
/// one (which cannot re-enroll).
fn needed<'a>(args: &AgentArgs, token: Option<&'a str>, now: u64) -> Result<&'a str, AgentError> {
    if let Some(t) = token {
        return Ok(t);
    }
    match schedule::next(now, files::held(&args.out)?) {
        Step::Expired(at) => Err(AgentError::Expired {
            dir: args.out.clone(),
            at: crate::license::dates::rfc3339(at),
        }),
        _ => Err(AgentError::Usage(
            "no certificate in --out yet: --token (or PORTCULLIS_ENROLL_TOKEN) is needed to enroll"
                .into(),
        )),
    }
}

/// A uniform number in [0, 1) from the system's random generator (0.5 if it fails: the
/// backoff is still bounded).
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match aws_lc_rs::rand::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, AgentError> {
    let ca_pem = std::fs::read(ca).map_err(|source| AgentError::File {
        path: ca.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| AgentError::Usage(format!("--ca: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| AgentError::Usage(format!("--ca: {e}")))?;
    }
    Ok(roots)
}

/// Enroll with `token`, or re-enroll with the pair in --out without one; the new pair and
/// license are put in place only once the gateway has answered with a certificate.
fn step(
    args: &AgentArgs,
    roots: &rustls::RootCertStore,
    token: Option<&str>,
) -> Result<String, AgentError> {
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentError::Usage(e.to_string()))?
        .with_root_certificates(roots.clone());
    let file = |path: PathBuf| move |source| AgentError::File { path, source };
    let (tls, path, auth) = match token {
        None => {
            let (cert, key) = (args.out.join(CERT), args.out.join(KEY));
            let chain = std::fs::read(&cert).map_err(file(cert.clone()))?;
            let key = std::fs::read(&key).map_err(file(key.clone()))?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
                .collect::<Result<_, _>>()
                .map_err(|e| AgentError::Usage(format!("{CERT}: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| AgentError::Usage(format!("{KEY}: {e}")))?;
            let tls = tls
                .with_client_auth_cert(chain, key)
                .map_err(|e| AgentError::Usage(e.to_string()))?;
            (tls, crate::enrollment::SIMPLEREENROLL, None)
        }
        Some(token) => (
            tls.with_no_client_auth(),
            crate::enrollment::SIMPLEENROLL,
            Some(zeroize::Zeroizing::new(format!("Bearer {token}"))),
        ),
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
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    files::install(
        &args.out,
        key_pem.as_bytes(),
        pem(cert).as_bytes(),
        format!("{license}\n").as_bytes(),
    )?;
    Ok(format!(
        "{} into {}: {KEY}, {CERT}, {LICENSE}\n",
        if token.is_some() {
            "enrolled"
        } else {
            "re-enrolled"
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

fn pem(der: &[u8]) -> String {
    format!(
        "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----\n",
        crate::enrollment::pkcs7::base64_lines(der)
    )
}
