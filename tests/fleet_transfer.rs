//! Moving to a fleet and back with the real binary: a single gateway on its embedded files
//! registers clients, issues tokens and a refresh token, revokes one token and activates and
//! revokes licenses; `portcullis state import` copies it all into Redis, and two gateways on
//! Redis then serve every client, verify the tokens signed before the move (same keys),
//! rotate the refresh token, still refuse the revoked token and the revoked license, and admit
//! the licensed machine. `state export` copies Redis back into new files that a single
//! gateway serves again; importing into a Redis that already holds state is refused.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use portcullis::license::SigningKey;
use portcullis::license::keys::keygen;
use support::license::pin_license;
use support::oauth::*;
use support::redis::RedisServer;
use support::*;

/// The issuer, a licensed route "/orders", an admin listener, and `[state]` if given.
fn config(up: &Upstream, store_suffix: &str, state: &str) -> String {
    format!(
        "{}\n[admin]\nbind = \"127.0.0.1:0\"\n\n[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n[licenses]\ntrusted_keys = [\"k1.pub\"]\nstore = \"licenses{store_suffix}.redb\"\n\n{}{state}",
        issuer_config(&up.url(), "").replace("issuer.redb", &format!("issuer{store_suffix}.redb")),
        route(
            "orders",
            "/orders",
            &[&up.url()],
            "license = \"required\"\nauth = \"none\"",
        ),
    )
}

fn portcullis(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn licensed_status(pki: &Pki, machine: &Identity, gw: &Gateway) -> u16 {
    let tls = TlsClient::new(pki)
        .identity(machine)
        .connect(gw.addr(), "localhost")
        .await
        .unwrap();
    let mut h1 = H1::handshake(tls).await.unwrap();
    h1.call(get("/orders/1")).await.unwrap().status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_moves_into_redis_serves_a_fleet_and_moves_back() {
    let redis = RedisServer::start();
    let pki = Pki::generate();
    for out in vault_with(pki.dir(), &[]) {
        assert!(out.status.success(), "{out:?}");
    }
    let up = Upstream::echo("api").await;
    let key = SigningKey::load(&keygen(pki.dir(), "k1").unwrap().private).unwrap();
    let (machine, revoked_machine) = (pki.new_client("m-1"), pki.new_client("m-2"));

    // One machine, embedded files.
    let single = config(&up, "", "");
    let gw = Gateway::start(pki.dir(), &single).await;
    let admin = Admin::new(gw.admin_addr());
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let kept = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let revoked = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let r = revoke(&pki, gw.addr(), "erp-1", &secret, &revoked.access).await;
    assert_eq!(r.status, 200);
    for (id, m) in [("lic-1", &machine), ("lic-2", &revoked_machine)] {
        let text = key.issue(&pin_license(id, m)).unwrap();
        assert_eq!(admin.post("/licenses", text).await.status, 201);
    }
    assert_eq!(admin.delete("/licenses/lic-2").await.status, 200);
    stop(gw).await;

    // Into Redis.
    let fleet_state = format!(
        "\n[state]\nbackend = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    );
    let fleet = config(&up, "", &fleet_state);
    let cfg = write_config(pki.dir(), &fleet);
    let cfg = cfg.to_str().unwrap();
    let mut imported = None;
    for _ in 0..250 {
        let (ok, out) = portcullis(&["state", "import", "--config", cfg]);
        if ok {
            imported = Some(out);
            break;
        }
        // The stopped gateway releases its files a moment after it stopped.
        assert!(out.contains("already open"), "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let imported = imported.expect("the files were never free");
    assert!(
        imported.contains("1 clients") && imported.contains("2 licenses"),
        "{imported}"
    );
    let (ok, again) = portcullis(&["state", "import", "--config", cfg]);
    assert!(!ok && again.contains("already holds"), "{again}");

    let a = Gateway::start(pki.dir(), &fleet).await;
    let b = Gateway::start(pki.dir(), &fleet).await;
    for gw in [&a, &b] {
        // Tokens signed before the move verify (the keys moved); the revoked one stays refused.
        let ok = send_one(&pki, gw.addr(), get_with_token("/api/x", &kept.access)).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        send_one(&pki, gw.addr(), get_with_token("/api/x", &revoked.access))
            .await
            .assert_denied(401, "token_invalid");
        assert_eq!(licensed_status(&pki, &machine, gw).await, 200);
        assert_eq!(licensed_status(&pki, &revoked_machine, gw).await, 403);
    }
    client_credentials(&pki, b.addr(), "erp-1", &secret).await;
    // The refresh token issued before the move rotates on the fleet.
    let next = Tokens::from(&refresh(&pki, a.addr(), "erp-1", &secret, &kept.refresh).await);
    drop((a, b));

    // And back, into new files.
    let back = config(&up, "-back", &fleet_state);
    let cfg = write_config(pki.dir(), &back);
    let (ok, out) = portcullis(&["state", "export", "--config", cfg.to_str().unwrap()]);
    assert!(ok && out.contains("1 clients"), "{out}");
    let single_again = config(&up, "-back", "");
    let gw = Gateway::start(pki.dir(), &single_again).await;
    client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    Tokens::from(&refresh(&pki, gw.addr(), "erp-1", &secret, &next.refresh).await);
    assert_eq!(licensed_status(&pki, &machine, &gw).await, 200);
    assert_eq!(licensed_status(&pki, &revoked_machine, &gw).await, 403);
}
