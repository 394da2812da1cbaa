//! `portcullis demo`: the gateway on an embedded default, ready to call with curl.
//!
//! Generates a throwaway PKI at every start (never committed, never reused), starts a
//! built-in echo upstream on loopback, writes the config it uses next to the certificates
//! (so an operator can read a working example), and serves one-way TLS and mutual TLS, and
//! machine enrollment (EST) with its own throwaway CA and license key.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;

/// Where and how to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Folder for the generated certificates and config.
    pub dir: PathBuf,
    pub bind_ip: std::net::IpAddr,
    pub port: u16,
    pub mtls_port: u16,
    /// Admin listener port, always on loopback.
    pub admin_port: u16,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot generate the demo certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the echo upstream: {0}")]
    Upstream(std::io::Error),
    #[error("cannot make the demo's license key: {0}")]
    LicenseKey(#[from] crate::license::keys::KeyError),
    #[error(transparent)]
    Start(#[from] crate::server::StartError),
}

/// The files of the generated PKI.
pub struct DemoPki {
    pub ca: PathBuf,
    pub server_chain: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Where the enrollment agent of the printed commands writes its key and certificate.
    pub agent: PathBuf,
}

/// Generate a CA, a server certificate for localhost and a client certificate, valid for
/// 30 days from now, and write them to `dir` (keys with mode 0600).
pub fn generate_pki(dir: &Path) -> Result<DemoPki, DemoError> {
    let now = time::OffsetDateTime::now_utc();
    let validity = |p: &mut CertificateParams| {
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(30);
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = ca_params("Portcullis demo CA (throwaway)")?;
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut server);
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, "demo-agent");
    client
        .distinguished_name
        .push(DnType::OrganizationName, "Portcullis demo");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut client);
    let client_cert = client.signed_by(&client_key, &issuer)?;

    std::fs::create_dir_all(dir).map_err(|source| DemoError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let pki = DemoPki {
        ca: dir.join("ca.pem"),
        server_chain: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        agent: dir.join("agent"),
    };
    write_file(&pki.ca, ca_cert.pem().as_bytes(), false)?;
    write_file(
        &pki.server_chain,
        format!("{}{}", server_cert.pem(), ca_cert.pem()).as_bytes(),
        false,
    )?;
    write_file(&pki.server_key, server_key.serialize_pem().as_bytes(), true)?;
    write_file(&pki.client_cert, client_cert.pem().as_bytes(), false)?;
    write_file(&pki.client_key, client_key.serialize_pem().as_bytes(), true)?;
    Ok(pki)
}

/// The enrollment side of the demo in `dir`: its own CA (an enrollment key signs machine
/// certificates only, never a server's), a license key, and `client-cas.pem` (the demo CA
/// and the enrollment CA: the mutual-TLS listener admits both kinds of client). The stores
/// and the agent folder of an earlier run are removed: they name keys that are gone.
fn generate_enrollment(dir: &Path, pki: &DemoPki) -> Result<(), DemoError> {
    for old in ["license.key", "license.pub", "licenses.redb", "enroll.redb"] {
        let _ = std::fs::remove_file(dir.join(old));
    }
    let _ = std::fs::remove_dir_all(&pki.agent);
    crate::license::keys::keygen(dir, "license")?;
    let key = KeyPair::generate()?;
    let mut ca = ca_params("Portcullis demo enrollment CA (throwaway)")?;
    ca.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    ca.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let cert = ca.self_signed(&key)?;
    write_file(&dir.join("enroll-ca.pem"), cert.pem().as_bytes(), false)?;
    write_file(
        &dir.join("enroll-ca.key"),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    let demo_ca = std::fs::read_to_string(&pki.ca).map_err(|source| DemoError::Write {
        path: pki.ca.clone(),
        source,
    })?;
    let both = format!("{demo_ca}{}", cert.pem());
    write_file(&dir.join("client-cas.pem"), both.as_bytes(), false)
}

/// A CA named `name` that signs certificates and CRLs.
fn ca_params(name: &str) -> Result<CertificateParams, DemoError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca)
}

/// Write a file; private keys are created with mode 0600 so no other user can read them.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), DemoError> {
    let err = |source| DemoError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)
}

/// The demo's config: the same format an operator writes.
pub fn demo_config(opts: &DemoOptions, upstream: SocketAddr) -> String {
    let public = SocketAddr::new(opts.bind_ip, opts.port);
    let mtls = SocketAddr::new(opts.bind_ip, opts.mtls_port);
    let admin_port = opts.admin_port;
    format!(
        r#"# Written by `portcullis demo` at every start. Certificates here are throwaway.

[server]
shutdown_timeout = "5s"

# Metrics, health, reload and the effective config, on loopback only.
[admin]
bind = "127.0.0.1:{admin_port}"

[[listeners]]
name = "public"
bind = "{public}"
min_tls = "1.2"
# Optional: enrolled machines re-enroll here with their certificate; nobody else needs one.
client_auth = "optional"
client_ca = "enroll-ca.pem"
[[listeners.certificates]]
chain = "server.pem"
key = "server.key"

[[listeners]]
name = "mtls"
bind = "{mtls}"
min_tls = "1.2"
client_auth = "required"
client_ca = "client-cas.pem"
[[listeners.certificates]]
chain = "server.pem"
key = "server.key"

# Everything goes to the built-in echo upstream, which answers with what it received.
[[routes]]
name = "echo"
path_prefix = "/"
upstream = ["http://{upstream}"]

# A narrower route: longest prefix wins, only GET and POST, bodies up to 1 MiB.
[[routes]]
name = "orders"
path_prefix = "/orders"
methods = ["GET", "POST"]
max_body_bytes = 1048576
upstream = ["http://{upstream}"]
response_timeout = "10s"

# Machine licenses: required on this route, so only an enrolled machine gets through.
[[routes]]
name = "licensed"
path_prefix = "/licensed"
listeners = ["mtls"]
license = "required"
upstream = ["http://{upstream}"]

[licenses]
trusted_keys = ["license.pub"]
store = "licenses.redb"

# Machine enrollment (EST, RFC 7030) on the public listener: a one-time token buys a
# certificate from the enrollment CA and a license made from a template.
[enrollment]
listener = "public"
ca_cert = "enroll-ca.pem"
ca_key = "enroll-ca.key"
cert_lifetime = "7d"
tokens = "enroll.redb"
license_key = "license.key"

[[enrollment.templates]]
name = "agent"
routes = ["licensed"]
license_lifetime = "30d"
"#
    )
}

/// Start the demo and print how to call it. Returns the running gateway.
pub async fn start(opts: &DemoOptions) -> Result<crate::server::Running, DemoError> {
    let pki = generate_pki(&opts.dir)?;
    generate_enrollment(&opts.dir, &pki)?;
    let upstream = start_echo_upstream().await.map_err(DemoError::Upstream)?;
    let config = opts.dir.join("portcullis.toml");
    write_file(&config, demo_config(opts, upstream).as_bytes(), false)?;
    let running = crate::server::start(&config).await?;

    let d = opts.dir.display();
    let public = running.local_addr("public").map_or(opts.port, |a| a.port());
    let mtls = running
        .local_addr("mtls")
        .map_or(opts.mtls_port, |a| a.port());
    let admin = running.admin_addr().map_or(opts.admin_port, |a| a.port());
    let host = if opts.bind_ip.is_loopback() || opts.bind_ip.is_unspecified() {
        "localhost".to_owned()
    } else {
        opts.bind_ip.to_string()
    };
    println!(
        r#"Portcullis demo is running. Throwaway certificates and the config are in {d}/ (made anew at every start).

  one-way TLS   https://{host}:{public}
  mutual TLS    https://{host}:{mtls}   (client certificate required)
  upstream      a built-in echo server that answers with the request it received
  admin         http://127.0.0.1:{admin}  (metrics, health, reload; loopback only)
  console       http://127.0.0.1:{admin}/ui  (open it in a browser: routes, upstreams, licenses, live)

Try (from this folder):
  curl --cacert {ca} https://{host}:{public}/hello
  curl --cacert {ca} --cert {cc} --key {ck} https://{host}:{mtls}/hello
  curl --cacert {ca} -d '{{"order":42}}' https://{host}:{public}/orders
  curl --cacert {ca} https://{host}:{mtls}/hello                     # refused: no client certificate
  curl --cacert {ca} -X DELETE https://{host}:{public}/orders/42     # 405 method_not_allowed
  curl --cacert {ca} --path-as-is https://{host}:{public}/orders/../x # 400 invalid_path

Operate it:
  curl http://127.0.0.1:{admin}/metrics
  curl http://127.0.0.1:{admin}/status              # what the console shows, as JSON
  curl -X POST http://127.0.0.1:{admin}/reload      # or edit {d}/portcullis.toml: it reloads by itself

Enroll a machine (a one-time token; the agent makes its key, gets a certificate and a license):
  export PORTCULLIS_ENROLL_TOKEN=$({exe} enroll token --config {d}/portcullis.toml --machine agent-1 --license-template agent | head -n 1)
  {exe} enroll agent --url https://{host}:{public} --ca {ca} --out {agent} --once   # without --once it stays and renews at 2/3 of the lifetime
  curl --cert {agent}/machine.pem --key {agent}/machine.key --cacert {ca} https://{host}:{mtls}/licensed/hello

Check the config: {exe} check --config {d}/portcullis.toml
Stop with Ctrl-C."#,
        agent = pki.agent.display(),
        exe = this_binary(),
        ca = pki.ca.display(),
        cc = pki.client_cert.display(),
        ck = pki.client_key.display(),
    );
    Ok(running)
}

/// How to run this binary from the current folder, as printed: `./target/release/portcullis`
/// under `cargo run`, its path otherwise, `portcullis` (from PATH) when it cannot tell.
fn this_binary() -> String {
    let (Ok(exe), Ok(here)) = (std::env::current_exe(), std::env::current_dir()) else {
        return "portcullis".to_owned();
    };
    match exe.strip_prefix(&here) {
        Ok(rel) => format!("./{}", rel.display()),
        Err(_) => exe.display().to_string(),
    }
}

/// A plain HTTP/1.1 server on 127.0.0.1: GET answers with a JSON description of the
/// request; a request with a body gets that body streamed back.
pub async fn start_echo_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(echo))
                    .await;
            });
        }
    });
    Ok(addr)
}

type EchoBody = Either<Full<Bytes>, Incoming>;

async fn echo(req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let has_body = req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if has_body && !req.body().is_end_stream() {
        let ct = req.headers().get(header::CONTENT_TYPE).cloned();
        let mut resp = Response::new(Either::Right(req.into_body()));
        if let Some(ct) = ct {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return Ok(resp);
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let body = serde_json::json!({
        "echo": "portcullis demo upstream",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
    });
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(text))));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
