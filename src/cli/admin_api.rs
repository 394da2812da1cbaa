//! The CLI as a client of a running gateway's admin API: `client ...` and `keys rotate` with
//! `--config FILE` call it when the config has a plain-HTTP `[admin]` listener that answers,
//! so a running gateway (or a fleet) is changed without a stop; when nothing answers there,
//! the gateway is stopped and the command opens the store itself.
//!
//! A hyper HTTP/1.1 client on a one-off current-thread runtime: the request and its answer
//! are one exchange, on loopback or the admin network.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Where the admin API is and how to authenticate, from the config file.
#[derive(Debug)]
pub struct AdminTarget {
    pub addr: SocketAddr,
    token: Option<zeroize::Zeroizing<String>>,
}

/// Why the admin API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminCallError {
    /// The `[admin]` section says something the CLI cannot use (a TLS listener, no bind).
    #[error("{0}")]
    Unusable(String),
    /// It answered, but not as an admin API does.
    #[error("the admin API at {addr} answered {status}: {body}")]
    Refused {
        addr: SocketAddr,
        status: http::StatusCode,
        body: String,
    },
    #[error("the admin API at {addr}: {message}")]
    Failed { addr: SocketAddr, message: String },
}

/// The admin listener `config` describes, if it has one the CLI can call.
pub fn target(config: &Path) -> Result<Option<AdminTarget>, AdminCallError> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Ok(None);
    };
    let Ok(file) = crate::config::parse_file_config(config, &text) else {
        return Ok(None);
    };
    let Some(admin) = file.admin.as_ref() else {
        return Ok(None);
    };
    if !admin.certificates.is_empty() {
        return Err(AdminCallError::Unusable(format!(
            "{}: the admin listener serves TLS, which this command does not speak: call its API (POST /clients, POST /keys/rotate) with curl and the admin client certificate",
            config.display()
        )));
    }
    let Some(bind) = admin.bind.as_deref() else {
        return Ok(None);
    };
    let mut addr: SocketAddr = bind
        .parse()
        .map_err(|_| AdminCallError::Unusable(format!("admin.bind: \"{bind}\" is not IP:port")))?;
    // Port 0: the gateway picks one at start, which the config does not say.
    if addr.port() == 0 {
        return Ok(None);
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    // The legacy token is an admin; else the first admin identity with a token file (the
    // CLI changes issuer clients and keys, which need the admin role).
    let token_file = admin.token_file.as_deref().or_else(|| {
        admin
            .identities
            .iter()
            .find(|i| i.role.as_deref() == Some("admin") && i.token_file.is_some())
            .and_then(|i| i.token_file.as_deref())
    });
    let token = match token_file {
        None => None,
        Some(f) => {
            let path = config.parent().unwrap_or_else(|| Path::new(".")).join(f);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                AdminCallError::Unusable(format!(
                    "admin.token_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            Some(zeroize::Zeroizing::new(
                text.lines().next().unwrap_or("").trim().to_owned(),
            ))
        }
    };
    Ok(Some(AdminTarget { addr, token }))
}

impl AdminTarget {
    /// `method path` with a JSON `body`: `Ok(None)` when nothing listens there (the gateway
    /// is stopped), else the status and JSON answer.
    pub fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<(http::StatusCode, serde_json::Value)>, AdminCallError> {
        let failed = |message: String| AdminCallError::Failed {
            addr: self.addr,
            message,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start the async runtime: {e}")))?;
        rt.block_on(async {
            let connect = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(self.addr),
            )
            .await;
            let tcp = match connect {
                Ok(Ok(tcp)) => tcp,
                // Nothing listens: the gateway is stopped.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Ok(None);
                }
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Err(_) => return Err(failed("no answer within 5 s".into())),
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            tokio::spawn(conn);
            let payload = body.map(|b| b.to_string()).unwrap_or_default();
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, self.addr.to_string())
                .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(t) = &self.token {
                req = req.header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", t.as_str()),
                );
            }
            let req = req
                .body(Full::new(Bytes::from(payload)))
                .map_err(|e| failed(e.to_string()))?;
            let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
                .await
                .map_err(|_| failed("no answer within 30 s".into()))?
                .map_err(|e| failed(e.to_string()))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_bytes();
            match serde_json::from_slice(&bytes) {
                Ok(v) => Ok(Some((status, v))),
                Err(_) => Err(AdminCallError::Refused {
                    addr: self.addr,
                    status,
                    body: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                }),
            }
        })
    }
}
