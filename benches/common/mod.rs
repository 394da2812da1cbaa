//! Setup shared by the benches that run a whole gateway: a PKI made at run time (rcgen),
//! the config for `full` (every policy on) or `bare` (one route), the licenses provisioned
//! through the CLI, and an HS256 bearer token.
#![allow(dead_code)] // each bench uses its own part

pub mod upstream;

use std::path::Path;
use std::process::Command;

#[path = "../../tests/support/vault.rs"]
pub mod vault;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

pub struct Pki {
    pub dir: tempfile::TempDir,
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "load bench CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, &ca_key);
    let leaf = |names: Vec<String>, cn: &str, eku| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        (p.signed_by(&key, &issuer).expect("cert"), key)
    };
    let (server, server_key) = leaf(
        vec!["localhost".into()],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = leaf(vec![], "bench-client", ExtendedKeyUsagePurpose::ClientAuth);
    let d = dir.path();
    write(d, "ca.pem", &ca_cert.pem());
    write(d, "server.pem", &server.pem());
    write(d, "server.key", &server_key.serialize_pem());
    write(d, "client.pem", &client.pem());
    write(d, "client.key", &client_key.serialize_pem());
    Pki { dir }
}

pub fn portcullis(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run portcullis");
    assert!(
        out.status.success(),
        "portcullis {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub const SECRET: &str = "load-bench-hs256-secret-0123456789abcdef";

pub fn config(dir: &Path, mode: &str, upstream: &str) -> String {
    let mut c = String::from(
        "[server]\nwatch_config = false\n\n[[listeners]]\nname = \"mtls\"\nbind = \"127.0.0.1:0\"\nclient_auth = \"required\"\nclient_ca = \"ca.pem\"\ntls_resumption = false\n",
    );
    // "full_limits": the full policy plus two rate limits that never refuse (their cost).
    let full = mode.starts_with("full");
    if full {
        let pin = portcullis(&["pin", "client.pem"], dir)
            .lines()
            .find_map(|l| l.strip_prefix("spki pin:").map(|p| p.trim().to_owned()))
            .expect("pin");
        c.push_str(&format!("pins = [\"{pin}\"]\nallow = [\"127.0.0.0/8\"]\n"));
    }
    c.push_str("[[listeners.certificates]]\nchain = \"server.pem\"\nkey = \"server.key\"\n\n");
    c.push_str("[[routes]]\nname = \"all\"\npath_prefix = \"/\"\n");
    // The TLS upstream modes: verified against the bench CA, by name (the certificate's).
    match mode {
        "tls_up" | "h2_up" => {
            let proto = if mode == "h2_up" { "h2" } else { "http1" };
            c.push_str(&format!(
                "upstream = [\"https://{upstream}\"]\nupstream_protocol = \"{proto}\"\nupstream_tls = {{ ca = \"ca.pem\", server_name = \"localhost\" }}\n"
            ));
        }
        // Four targets in a named upstream, spread by round robin or least request.
        "full_rr4" | "full_lr4" => c.push_str("upstream = \"app\"\n"),
        _ => c.push_str(&format!("upstream = [\"http://{upstream}\"]\n")),
    }
    // "full_cred": the full policy plus an API key from the vault injected upstream.
    if mode == "full_cred" {
        c.push_str("credentials = \"api\"\ninject = { header = \"X-Api-Key\" }\n");
    }
    if mode == "full_limits" {
        c.push_str("limits = [\n  { key = \"client_ip\", rate = \"1000000000/s\", burst = 1000000000 },\n  { key = \"token_sub\", rate = \"1000000000/s\", burst = 1000000000 },\n]\n");
    }
    let mut named = String::new();
    if let Some(balance) = match mode {
        "full_rr4" => Some("round_robin"),
        "full_lr4" => Some("least_request"),
        _ => None,
    } {
        let host = upstream.rsplit_once(':').map_or(upstream, |(h, _)| h);
        let port: u16 = upstream
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(9);
        let targets: Vec<String> = (0..4)
            .map(|i| format!("\"http://{host}:{}\"", port + i))
            .collect();
        named = format!(
            "\n[[upstreams]]\nname = \"app\"\nbalance = \"{balance}\"\ntargets = [{}]\n",
            targets.join(", ")
        );
    }
    if full {
        c.push_str("license = \"required\"\nauth = \"bearer\"\nscopes = [\"bench\"]\n\n");
        c.push_str("[licenses]\ntrusted_keys = [\"license.pub\"]\nstore = \"licenses.redb\"\n\n");
        c.push_str("[[token_issuers]]\nname = \"bench\"\nissuer = \"https://bench.test\"\naudiences = [\"bench\"]\nhs256_secret_file = \"hs256.secret\"\n");
        write(dir, "hs256.secret", SECRET);
    }
    c.push_str(&named);
    // "full_traced": the full policy with [tracing] on at 1% (HTTP/protobuf export to the
    // bench upstream, which answers POST /v1/traces like any POST).
    if mode == "full_traced" {
        c.push_str(&format!(
            "\n[tracing]\notlp_endpoint = \"http://{upstream}\"\nprotocol = \"http\"\nsampling_ratio = 0.01\n"
        ));
    }
    if mode == "full_cred" {
        c.push_str("\n[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n");
        vault::vault_with(dir, &[("api", "api_key", "bench-api-key-0123456789abcdef")]);
    }
    c
}

/// `portcullis vault ARGS` in `dir` with `stdin` piped in.
pub fn provision(dir: &Path) {
    portcullis(
        &["license", "keygen", "--out", ".", "--name", "license"],
        dir,
    );
    let pin = portcullis(&["pin", "client.pem"], dir)
        .lines()
        .find_map(|l| l.strip_prefix("spki pin:").map(|p| p.trim().to_owned()))
        .expect("pin");
    let license = portcullis(
        &[
            "license",
            "issue",
            "--key",
            "license.key",
            "--customer",
            "bench",
            "--machine-id",
            "client",
            "--pin",
            &pin,
            "--ip",
            "127.0.0.0/8",
            "--match",
            "pin_and_ip",
            "--expires",
            "2099-12-31",
        ],
        dir,
    );
    portcullis(
        &[
            "license",
            "activate",
            "--config",
            "portcullis.toml",
            &license,
        ],
        dir,
    );
}

pub fn token() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = serde_json::json!({"iss": "https://bench.test", "aud": "bench", "sub": "client", "scope": "bench", "exp": now + 3600, "iat": now});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

/// A TLS client config trusting the bench CA and presenting the bench client certificate.
pub fn client_config(dir: &Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("ca") {
        roots.add(c.expect("cert")).expect("add");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("client.pem"))
        .expect("client")
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).expect("key");
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(cfg)
}

/// Whether to run short: `cargo bench` passes `--bench`; `cargo test --benches` does not.
pub fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// The environment variable `k` as a number, else `default`.
pub fn env_u64(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
