//! Proves what the issuer's store keeps: a restart keeps clients, refresh tokens (and which
//! are retired), revocations and signing keys; the store file is private (0600, narrowed if
//! it was not); a key rotation keeps tokens of the old key valid until they expire, and the
//! old public key leaves the JWKS then; a changed `algorithm` rotates the key at start.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use portcullis::issuer::clients;
use support::oauth::*;
use support::*;

fn jwks_kids(resp: &TestResponse) -> Vec<String> {
    resp.json()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[tokio::test]
async fn a_restart_keeps_clients_refresh_tokens_revocations_and_keys() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let config = issuer_config(&up.url(), "");
    let gw = Gateway::start(pki.dir(), &config).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let revoked = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let family = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let resp = revoke(&pki, gw.addr(), "erp-1", &secret, &revoked.access).await;
    assert_eq!(resp.status, 200);
    let current = Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &family.refresh).await);
    let kids_before = jwks_kids(&send_one(&pki, gw.addr(), get("/.well-known/jwks.json")).await);
    stop(gw).await;

    let gw = start_when_store_free(pki.dir(), &config).await;
    assert_eq!(
        jwks_kids(&send_one(&pki, gw.addr(), get("/.well-known/jwks.json")).await),
        kids_before,
        "the signing key survived"
    );
    // The client and its secret, and tokens signed before the restart.
    client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    send_one(&pki, gw.addr(), get_with_token("/api/x", &current.access))
        .await
        .echo();
    // The revocation.
    let resp = send_one(&pki, gw.addr(), get_with_token("/api/x", &revoked.access)).await;
    resp.assert_denied(401, "token_invalid");
    // The refresh family: the current token works, the retired one is still known as
    // retired, and presenting it revokes the family.
    let next = Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &current.refresh).await);
    let replay = refresh(&pki, gw.addr(), "erp-1", &secret, &family.refresh).await;
    assert_oauth_error(&replay, 400, "invalid_grant");
    let after = refresh(&pki, gw.addr(), "erp-1", &secret, &next.refresh).await;
    assert_oauth_error(&after, 400, "invalid_grant");
}

#[tokio::test]
async fn the_store_file_is_private_and_a_readable_one_is_narrowed() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("store").permissions().mode() & 0o777;
        let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
        assert_eq!(mode(&pki.path("issuer.redb")), 0o600);
        stop(gw).await;

        let loose = pki.path("loose.redb");
        std::fs::copy(pki.path("issuer.redb"), &loose).expect("copy");
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let config = issuer_config(&up.url(), "").replace("issuer.redb", "loose.redb");
        let _gw = start_when_store_free(pki.dir(), &config).await;
        assert_eq!(mode(&loose), 0o600);
    }
}

#[tokio::test]
async fn a_key_rotation_keeps_old_tokens_valid_until_they_expire() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let old = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let old_kid = header_of(&old.access)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();

    let issuer = gw.issuer();
    let rotated = issuer.rotate_key(gw.shared().clock.now()).expect("rotate");
    assert_ne!(rotated.kid, old_kid);
    assert_eq!(
        rotated.retired.as_ref().map(|r| r.0.as_str()),
        Some(old_kid.as_str())
    );

    let new = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_eq!(header_of(&new.access)["kid"], rotated.kid.as_str());
    let kids = jwks_kids(&send_one(&pki, gw.addr(), get("/.well-known/jwks.json")).await);
    assert!(
        kids.contains(&old_kid) && kids.contains(&rotated.kid),
        "{kids:?}"
    );
    for t in [&old, &new] {
        send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access))
            .await
            .echo();
    }

    // Once every token of the old key has expired, it is refused as expired and its public
    // key leaves the JWKS.
    advance(&gw, Duration::from_secs(600 + 6));
    let resp = send_one(&pki, gw.addr(), get_with_token("/api/x", &old.access)).await;
    resp.assert_denied(401, "token_expired");
    let kids = jwks_kids(&send_one(&pki, gw.addr(), get("/.well-known/jwks.json")).await);
    assert_eq!(kids, vec![rotated.kid.clone()]);
    let fresh = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    send_one(&pki, gw.addr(), get_with_token("/api/x", &fresh.access))
        .await
        .echo();
}

#[tokio::test]
async fn a_changed_algorithm_rotates_the_key_at_the_next_start() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), "")).await;
    let issuer = gw.issuer();
    let (_, secret) = clients::add(
        issuer.store(),
        &clients::NewClient {
            id: "erp-1".into(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        },
        0,
    )
    .expect("client");
    let secret = secret.expect("secret").expose().to_owned();
    drop(issuer);
    let es = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    stop(gw).await;

    let gw = start_when_store_free(
        pki.dir(),
        &issuer_config(&up.url(), "algorithm = \"EdDSA\""),
    )
    .await;
    let ed = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_eq!(header_of(&es.access)["alg"], "ES256");
    assert_eq!(header_of(&ed.access)["alg"], "EdDSA");
    for t in [&es, &ed] {
        send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access))
            .await
            .echo();
    }
}

#[tokio::test]
async fn records_that_can_no_longer_matter_are_pruned_as_time_passes() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let keys = "refresh_token_ttl = \"1h\"\nrefresh_idle_ttl = \"1h\"";
    let gw = Gateway::start(pki.dir(), &issuer_config(&up.url(), keys)).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let revoke = post_form(
        "/oauth2/revoke",
        &[("token", &t.access)],
        Some(&basic("erp-1", &secret)),
    );
    assert_eq!(send_one(&pki, gw.addr(), revoke).await.status, 200);
    let issuer = gw.issuer();
    let old_kid = issuer
        .rotate_key(gw.shared().clock.now())
        .expect("rotate")
        .retired
        .expect("old")
        .0;
    let hash = portcullis::identity::sha256(t.refresh.as_bytes());
    let stored = |issuer: &portcullis::issuer::Issuer| {
        issuer
            .store()
            .read(|rx| {
                Ok((
                    rx.revoked()?.len(),
                    rx.family_of(&hash)?.is_some(),
                    rx.keys()?.len(),
                ))
            })
            .expect("read")
    };
    assert_eq!(stored(&issuer), (1, true, 2));

    // Past the family's life, the revoked token's expiry and the old key's retention, and
    // past the pruning interval: the next grant prunes.
    advance(&gw, Duration::from_secs(2 * 3600));
    client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_eq!(stored(&issuer), (0, false, 1));
    let kids = jwks_kids(&send_one(&pki, gw.addr(), get("/.well-known/jwks.json")).await);
    assert!(!kids.contains(&old_kid));
}

/// The private keys as base64, read from the running gateway's store (a store in clear).
fn clear_keys(gw: &Gateway) -> Vec<String> {
    let keys = gw.issuer().store().read(|rx| rx.keys()).expect("keys");
    keys.into_iter()
        .map(|k| match k.private {
            portcullis::issuer::PrivateKey::Plain(b64) => b64,
            other => panic!("a key sealed without a vault: {other:?}"),
        })
        .collect()
}

/// `portcullis ARGS`, run in `dir`.
fn portcullis_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run portcullis")
}

#[tokio::test]
async fn with_a_vault_the_signing_keys_are_sealed_at_rest_and_a_store_in_clear_is_sealed_at_start()
{
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let plain = issuer_config(&up.url(), "");
    let gw = Gateway::start(pki.dir(), &plain).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let before = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let kids = jwks_kids(&send_one(&pki, gw.addr(), get("/.well-known/jwks.json")).await);
    let clear = clear_keys(&gw);
    assert_eq!(clear.len(), 1);
    stop(gw).await;

    // A vault is added: the next start seals the key it already had.
    vault_with(pki.dir(), &[]);
    let sealed =
        format!("{plain}\n[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n");
    let gw = start_when_store_free(pki.dir(), &sealed).await;
    assert_eq!(
        jwks_kids(&send_one(&pki, gw.addr(), get("/.well-known/jwks.json")).await),
        kids,
        "the same key, now sealed"
    );
    send_one(&pki, gw.addr(), get_with_token("/api/x", &before.access))
        .await
        .echo();
    let fresh = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let records = gw.issuer().store().read(|rx| rx.keys()).expect("keys");
    assert!(
        records.iter().all(|k| k.sealed_with().is_some()),
        "{records:?}"
    );
    stop(gw).await;
    let file = std::fs::read(pki.dir().join("issuer.redb")).expect("store");
    for b64 in &clear {
        let tail = &b64.as_bytes()[b64.len() - 32..];
        assert!(
            !file.windows(tail.len()).any(|w| w == tail),
            "the key is still in the store file in clear"
        );
    }

    // The CLI rotates with the config's vault, and refuses to add a key in clear.
    let cfg = pki.dir().join("portcullis.toml");
    let cfg = cfg.to_str().expect("utf-8");
    let rotate = portcullis_in(pki.dir(), &["keys", "rotate", "--config", cfg]);
    assert!(
        rotate.status.success(),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    let refused = portcullis_in(pki.dir(), &["keys", "rotate", "--store", "issuer.redb"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("sealed under vault data key"), "{err}");

    // Without the vault, the gateway does not start on keys it cannot open, and says why.
    let config = write_config(pki.dir(), &plain);
    let e = portcullis::server::start(&config)
        .await
        .err()
        .expect("refused without the vault")
        .to_string();
    assert!(
        e.contains("sealed under vault data key") && e.contains("[vault]"),
        "{e}"
    );

    // With it, tokens signed before the CLI's rotation still verify.
    let gw = start_when_store_free(pki.dir(), &sealed).await;
    assert_eq!(
        jwks_kids(&send_one(&pki, gw.addr(), get("/.well-known/jwks.json")).await).len(),
        2
    );
    send_one(&pki, gw.addr(), get_with_token("/api/x", &fresh.access))
        .await
        .echo();
}
