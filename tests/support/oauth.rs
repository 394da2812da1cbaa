//! The gateway's own token issuer under test: a config with `[issuer]` and a protected
//! route, clients registered in the running issuer's store, and OAuth requests over HTTPS.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use http::Request;
use serde_json::Value;

use super::client::{TestResponse, request, send_one};
use super::gateway::{Gateway, listener, route};
use super::pki::Pki;
use super::{BoxBody, empty, full};
use portcullis::issuer::clients::{self, NewClient};

/// The `iss` of the issuer under test.
pub const ISS: &str = "https://gw.test";

/// A config: listener "public" (client certificates optional, from the test CA), the issuer
/// on it with `issuer_keys` extra lines, route "api" at /api (bearer, scope `orders:read`)
/// and route "open" at / (no token) to `upstream`.
pub fn issuer_config(upstream: &str, issuer_keys: &str) -> String {
    format!(
        "{}[issuer]\nlistener = \"public\"\nissuer = \"{ISS}\"\nstore = \"issuer.redb\"\n{issuer_keys}\n\n{}{}",
        listener(
            "public",
            "client_auth = \"optional\"\nclient_ca = \"ca.pem\""
        ),
        route(
            "api",
            "/api",
            &[upstream],
            "auth = \"bearer\"\nscopes = [\"orders:read\"]"
        ),
        route("open", "/", &[upstream], "auth = \"none\""),
    )
}

/// Register a client with a secret in the running gateway's issuer; returns the secret.
pub fn add_client(gw: &Gateway, id: &str, scopes: &[&str]) -> String {
    add_client_with(
        gw,
        NewClient {
            id: id.to_owned(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..NewClient::default()
        },
    )
    .expect("a client with a secret")
}

/// Register `new` in the running gateway's issuer; the secret, if one was made.
pub fn add_client_with(gw: &Gateway, new: NewClient) -> Option<String> {
    let issuer = gw.issuer();
    let (_, secret) = clients::add(issuer.store(), &new, 0).expect("register the client");
    secret.map(|s| s.expose().to_owned())
}

/// `Authorization: Basic` for `id` and `secret` (form-encoded first, RFC 6749 2.3.1).
pub fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_encode(s);
    let raw = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// `application/x-www-form-urlencoded` of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A form body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `POST path` with a form body and, if given, an Authorization header.
pub fn post_form(path: &str, pairs: &[(&str, &str)], auth: Option<&str>) -> Request<BoxBody> {
    let mut b = request("POST", path).header("content-type", "application/x-www-form-urlencoded");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(full(form(pairs))).expect("request")
}

/// `POST path` with a JSON body.
pub fn post_json(path: &str, body: &Value, auth: Option<&str>) -> Request<BoxBody> {
    let mut b = request("POST", path).header("content-type", "application/json");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(full(body.to_string())).expect("request")
}

/// `GET path` with a bearer token.
pub fn get_with_token(path: &str, token: &str) -> Request<BoxBody> {
    request("GET", path)
        .header("authorization", format!("Bearer {token}"))
        .body(empty())
        .expect("request")
}

/// A successful token response.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub expires_in: u64,
    pub scope: String,
}

impl Tokens {
    /// Parse a 200 token response; panics with the body otherwise.
    pub fn from(resp: &TestResponse) -> Tokens {
        assert_eq!(resp.status, 200, "token response: {}", resp.text());
        assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
        let v = resp.json();
        assert_eq!(v["token_type"], "Bearer", "{v}");
        Tokens {
            access: v["access_token"].as_str().expect("access_token").to_owned(),
            refresh: v["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
            expires_in: v["expires_in"].as_u64().expect("expires_in"),
            scope: v["scope"].as_str().expect("scope").to_owned(),
        }
    }

    /// The access token's claims (unverified: the gateway verifies).
    pub fn claims(&self) -> Value {
        claims_of(&self.access)
    }
}

/// The claims of a JWT (unverified).
pub fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The protected header of a JWT.
pub fn header_of(jwt: &str) -> Value {
    let h = jwt.split('.').next().expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON header")
}

/// Client credentials with HTTP Basic: the tokens (panics unless 200).
pub async fn client_credentials(pki: &Pki, addr: SocketAddr, id: &str, secret: &str) -> Tokens {
    Tokens::from(&grant(pki, addr, id, secret).await)
}

/// A client-credentials grant with HTTP Basic (the raw response).
pub async fn grant(pki: &Pki, addr: SocketAddr, id: &str, secret: &str) -> TestResponse {
    send_one(
        pki,
        addr,
        post_form(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some(&basic(id, secret)),
        ),
    )
    .await
}

/// RFC 7009 revocation of `token` by client `id` (the raw response).
pub async fn revoke(
    pki: &Pki,
    addr: SocketAddr,
    id: &str,
    secret: &str,
    token: &str,
) -> TestResponse {
    send_one(
        pki,
        addr,
        post_form(
            "/oauth2/revoke",
            &[("token", token)],
            Some(&basic(id, secret)),
        ),
    )
    .await
}

/// A refresh-token grant with HTTP Basic (the raw response).
pub async fn refresh(
    pki: &Pki,
    addr: SocketAddr,
    id: &str,
    secret: &str,
    refresh_token: &str,
) -> TestResponse {
    send_one(
        pki,
        addr,
        post_form(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            Some(&basic(id, secret)),
        ),
    )
    .await
}

/// Asserts an RFC 6749 error response: status, `error`, no-store. Returns the body.
pub fn assert_oauth_error(resp: &TestResponse, status: u16, error: &str) -> Value {
    assert_eq!(
        resp.status.as_u16(),
        status,
        "expected {status} {error}, got {} {}",
        resp.status,
        resp.text()
    );
    let v = resp.json();
    assert_eq!(v["error"], error, "{v}");
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
    v
}

/// Move the gateway's clock forward.
pub fn advance(gw: &Gateway, by: Duration) {
    gw.shared().clock.advance(by);
}

/// Shut `gw` down and wait until it drained.
pub async fn stop(gw: Gateway) {
    let running = gw.into_running();
    running.shutdown_handle().trigger();
    running.wait().await;
}

/// Start the gateway on `toml` in `dir` once the issuer store is free: a stopped gateway's
/// last tasks release it a moment after `wait` returns (redb allows one opener).
pub async fn start_when_store_free(dir: &std::path::Path, toml: &str) -> Gateway {
    let config = super::gateway::write_config(dir, toml);
    for _ in 0..250 {
        match portcullis::server::start(&config).await {
            Ok(running) => return Gateway::from_running(running, config),
            Err(e) if e.to_string().contains("already open") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the gateway did not start: {e}"),
        }
    }
    panic!("the issuer store was not released within 5 s");
}
