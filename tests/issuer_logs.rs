//! Proves that the issuer never logs a secret, a token or a private key: every flow runs
//! with the gateway's log captured at trace level (one test, since the capture is the
//! process-wide subscriber), and the capture is searched for each of them.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use portcullis::identity::ClientIdentity;
use portcullis::issuer::clients::NewClient;
use serde_json::json;
use support::oauth::*;
use support::*;

/// Everything written to the log, shared with the test.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_tokens_and_keys_never_appear_in_the_log() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("portcullis=trace,info"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let other = add_client(&gw, "other", &["orders:read"]);
    let identity = ClientIdentity::from_der(pki.client.cert().as_ref()).expect("identity");
    add_client_with(
        &gw,
        NewClient {
            id: "agent-7".into(),
            scopes: vec!["orders:read".into()],
            cert_pins: vec![identity.spki_sha256],
            cert_only: true,
            ..NewClient::default()
        },
    );
    let mut leaked: Vec<(String, String)> = vec![
        ("secret".into(), secret.clone()),
        ("other secret".into(), other.clone()),
    ];
    let addr = gw.addr();

    // Every grant, by every method.
    let basic_tokens = client_credentials(&pki, addr, "erp-1", &secret).await;
    let post = send_one(
        &pki,
        addr,
        post_form(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "erp-1"),
                ("client_secret", &secret),
            ],
            None,
        ),
    )
    .await;
    let json_body =
        json!({"grant_type": "client_credentials", "client_id": "erp-1", "client_secret": secret});
    let json_tokens =
        Tokens::from(&send_one(&pki, addr, post_json("/oauth2/token", &json_body, None)).await);
    let tls = TlsClient::new(&pki)
        .identity(&pki.client)
        .connect(addr, "localhost")
        .await
        .expect("mTLS");
    let mut mtls = H1::handshake(tls).await.expect("h1");
    let cert_tokens = Tokens::from(
        &mtls
            .call(post_form(
                "/oauth2/token",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", "agent-7"),
                ],
                None,
            ))
            .await
            .expect("response"),
    );
    let refreshed =
        Tokens::from(&refresh(&pki, addr, "erp-1", &secret, &basic_tokens.refresh).await);
    // Reuse detection, revocation, introspection, a protected route.
    refresh(&pki, addr, "erp-1", &secret, &basic_tokens.refresh).await;
    let auth = basic("erp-1", &secret);
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        for token in [&json_tokens.access, &json_tokens.refresh] {
            send_one(
                &pki,
                addr,
                post_form(path, &[("token", token)], Some(&auth)),
            )
            .await;
        }
    }
    send_one(&pki, addr, get_with_token("/api/x", &json_tokens.access)).await;
    send_one(&pki, addr, get_with_token("/api/x", &refreshed.access)).await;
    // Failures: a wrong secret, a secret pasted as the client id, throttling.
    let grant = [("grant_type", "client_credentials")];
    send_one(
        &pki,
        addr,
        post_form("/oauth2/token", &grant, Some(&basic(&other, &secret))),
    )
    .await;
    for _ in 0..6 {
        send_one(
            &pki,
            addr,
            post_form("/oauth2/token", &grant, Some(&basic("other", &secret))),
        )
        .await;
    }
    let issuer = gw.issuer();
    issuer.rotate_key(gw.shared().clock.now()).expect("rotate");
    let keys = issuer.store().read(|rx| rx.keys()).expect("keys");
    for k in keys {
        // This gateway has no vault: the keys are stored in clear.
        let portcullis::issuer::PrivateKey::Plain(b64) = &k.private else {
            panic!("a key sealed without a vault: {k:?}");
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("der");
        // Any 24-character run of the key's base64 would be a leak.
        leaked.push(("private key".into(), b64[..24].to_owned()));
        leaked.push((
            "private key (hex)".into(),
            der.iter().take(16).map(|b| format!("{b:02x}")).collect(),
        ));
    }
    drop(post);
    for (name, t) in [
        ("basic", &basic_tokens),
        ("json", &json_tokens),
        ("certificate", &cert_tokens),
        ("refreshed", &refreshed),
    ] {
        leaked.push((format!("{name} access token"), t.access.clone()));
        // The signature alone would let nobody forge, but a logged token is a stolen token:
        // no part of it may appear.
        let sig = t.access.rsplit('.').next().expect("signature").to_owned();
        leaked.push((format!("{name} access token signature"), sig));
        leaked.push((format!("{name} refresh token"), t.refresh.clone()));
    }
    drop(gw);

    let log = capture.text();
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(
        log.contains("access token issued"),
        "the capture works:\n{log}"
    );
    assert!(log.contains("client authentication failed"));
    assert!(log.contains("token family is revoked"));
    assert!(log.contains("client authentication throttled"));
    for (name, value) in &leaked {
        assert!(
            !log.contains(value.as_str()),
            "the log contains the {name}:\n{log}"
        );
    }
}
