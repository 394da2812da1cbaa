//! The token issuer of a fleet, on one real `redis-server`: a client registered on A gets a
//! token on B, and A and B publish one JWKS and verify each other's tokens; a revocation on A
//! is refused on B within a second (measured); a retired refresh token presented on B
//! revokes the family on both; of 50 refreshes of one token spread over both instances at
//! once, exactly one wins; a key rotated on A signs on B too; wrong secrets spread over both
//! instances meet one throttle; clients and keys are managed through either instance's admin
//! API (and a single gateway's, on its embedded store); and with Redis gone the token
//! endpoint answers 503 `state_unavailable` (no wrong answer) until it is back.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant, SystemTime};

use support::oauth::*;
use support::redis::RedisServer;
use support::*;

const TOKEN: &str = "/oauth2/token";

fn fleet_config(up: &Upstream, redis: &RedisServer) -> String {
    format!(
        "{}\n[admin]\nbind = \"127.0.0.1:0\"\n\n[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n[state]\nbackend = \"redis\"\nurl = \"{}\"\ncommand_timeout = \"500ms\"\n",
        issuer_config(&up.url(), ""),
        redis.url()
    )
}

/// A PKI folder with the vault every instance seals the issuer's keys with.
fn pki_with_vault() -> Pki {
    let pki = Pki::generate();
    for out in vault_with(pki.dir(), &[]) {
        assert!(out.status.success(), "{out:?}");
    }
    pki
}

async fn fleet(redis: &RedisServer) -> (Pki, Upstream, Gateway, Gateway) {
    let pki = pki_with_vault();
    let up = Upstream::echo("api").await;
    let toml = fleet_config(&up, redis);
    let a = Gateway::start(pki.dir(), &toml).await;
    let b = Gateway::start(pki.dir(), &toml).await;
    (pki, up, a, b)
}

async fn status_with(pki: &Pki, gw: &Gateway, token: &str) -> u16 {
    send_one(pki, gw.addr(), get_with_token("/api/x", token))
        .await
        .status
        .as_u16()
}

/// How long until `gw` refuses `token` (polling every 5 ms); panics past `limit`.
async fn refused_within(pki: &Pki, gw: &Gateway, token: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut c = connect_h1(pki, gw.addr()).await;
    loop {
        let r = c.call(get_with_token("/api/x", token)).await.unwrap();
        if r.status == 401 {
            r.assert_denied(401, "token_invalid");
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still accepted after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_added_on_a_gets_a_token_on_b_and_both_publish_one_jwks() {
    let redis = RedisServer::start();
    let (pki, _up, a, b) = fleet(&redis).await;
    let secret = add_client(&a, "erp-1", &["orders:read"]);

    let t = client_credentials(&pki, b.addr(), "erp-1", &secret).await;
    assert_eq!(t.scope, "orders:read");
    // A verifies B's token, and B its own.
    assert_eq!(status_with(&pki, &a, &t.access).await, 200);
    assert_eq!(status_with(&pki, &b, &t.access).await, 200);

    let jwks = |gw: &Gateway| {
        let pki = &pki;
        let addr = gw.addr();
        async move {
            send_one(pki, addr, get("/.well-known/jwks.json"))
                .await
                .json()
        }
    };
    let (ja, jb) = (jwks(&a).await, jwks(&b).await);
    assert_eq!(ja, jb, "one JWKS for the fleet");
    assert_eq!(ja["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        header_of(&t.access)["kid"],
        ja["keys"][0]["kid"],
        "B signs with the fleet's key"
    );

    // Nothing of the issuer was written to the embedded file.
    assert!(!pki.path("issuer.redb").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_revoked_on_a_is_refused_on_b_within_a_second() {
    let redis = RedisServer::start();
    let (pki, _up, a, b) = fleet(&redis).await;
    let secret = add_client(&a, "erp-1", &["orders:read"]);
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = client_credentials(&pki, a.addr(), "erp-1", &secret).await;
        // B has verified (and cached) it before the revocation.
        assert_eq!(status_with(&pki, &b, &t.access).await, 200);
        let revoke = revoke(&pki, a.addr(), "erp-1", &secret, &t.access).await;
        assert_eq!(revoke.status, 200);
        let took = refused_within(&pki, &b, &t.access, Duration::from_secs(1)).await;
        worst = worst.max(took);
    }
    println!("revocation on A refused on B after at most {worst:?} (5 tries)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_refresh_token_presented_on_b_revokes_the_family_on_both() {
    let redis = RedisServer::start();
    let (pki, _up, a, b) = fleet(&redis).await;
    let secret = add_client(&a, "erp-1", &["orders:read"]);
    let first = client_credentials(&pki, a.addr(), "erp-1", &secret).await;
    let second = Tokens::from(&refresh(&pki, a.addr(), "erp-1", &secret, &first.refresh).await);
    assert_eq!(status_with(&pki, &b, &second.access).await, 200);

    let replay = refresh(&pki, b.addr(), "erp-1", &secret, &first.refresh).await;
    assert_oauth_error(&replay, 400, "invalid_grant");

    // The family's current refresh token is dead on A, its access tokens on both.
    let current = refresh(&pki, a.addr(), "erp-1", &secret, &second.refresh).await;
    assert_oauth_error(&current, 400, "invalid_grant");
    for gw in [&a, &b] {
        for t in [&first, &second] {
            refused_within(&pki, gw, &t.access, Duration::from_secs(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_fifty_refreshes_of_one_token_across_both_instances_exactly_one_wins() {
    let redis = RedisServer::start();
    let (pki, _up, a, b) = fleet(&redis).await;
    let secret = add_client(&a, "erp-1", &["orders:read"]);
    let t = client_credentials(&pki, a.addr(), "erp-1", &secret).await;
    let mut conns = Vec::new();
    for i in 0..50 {
        let gw = if i % 2 == 0 { &a } else { &b };
        conns.push(connect_h1(&pki, gw.addr()).await);
    }
    let auth = basic("erp-1", &secret);
    let mut tasks = Vec::new();
    for mut c in conns {
        let req = post_form(
            TOKEN,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &t.refresh),
            ],
            Some(&auth),
        );
        tasks.push(tokio::spawn(async move { c.call(req).await.unwrap() }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let winners = results.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        winners,
        1,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status != 200) {
        assert_oauth_error(r, 400, "invalid_grant");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_on_a_is_published_and_used_by_b() {
    let redis = RedisServer::start();
    let (pki, _up, a, b) = fleet(&redis).await;
    let secret = add_client(&a, "erp-1", &["orders:read"]);
    let before = client_credentials(&pki, b.addr(), "erp-1", &secret).await;

    let rotated = a.issuer().rotate_key(SystemTime::now()).unwrap();
    let start = Instant::now();
    loop {
        let t = client_credentials(&pki, b.addr(), "erp-1", &secret).await;
        if header_of(&t.access)["kid"] == rotated.kid.as_str() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "B still signs with the old key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let jwks = send_one(&pki, b.addr(), get("/.well-known/jwks.json"))
        .await
        .json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&rotated.kid.as_str()),
        "B publishes the new key"
    );
    assert_eq!(kids.len(), 2, "and still the old one");
    // A token signed before the rotation still verifies on both.
    assert_eq!(status_with(&pki, &a, &before.access).await, 200);
    assert_eq!(status_with(&pki, &b, &before.access).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_token_endpoint_refuses_with_503_and_recovers_when_it_is_back() {
    let mut redis = RedisServer::start();
    let (pki, _up, a, _b) = fleet(&redis).await;
    let secret = add_client(&a, "erp-1", &["orders:read"]);
    let t = client_credentials(&pki, a.addr(), "erp-1", &secret).await;

    redis.stop();
    let r = grant(&pki, a.addr(), "erp-1", &secret).await;
    let v = assert_oauth_error(&r, 503, "state_unavailable");
    assert!(
        !v.to_string().contains("127.0.0.1"),
        "no internal address: {v}"
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // A token issued before still verifies: the keys are in memory.
    assert_eq!(status_with(&pki, &a, &t.access).await, 200);

    redis.restart();
    // The restarted server is empty (no persistence in the test): the client is added again.
    let start = Instant::now();
    let secret = loop {
        let issuer = a.issuer();
        let attempt = portcullis::issuer::clients::add(
            issuer.store(),
            &portcullis::issuer::clients::NewClient {
                id: "erp-2".into(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            0,
        );
        match attempt {
            Ok((_, s)) => break s.unwrap().expose().to_owned(),
            Err(_) if start.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("Redis never came back: {e}"),
        }
    };
    // Each pooled connection finds the restart on its next call; within moments the
    // endpoint issues again.
    let start = Instant::now();
    loop {
        let r = grant(&pki, a.addr(), "erp-2", &secret).await;
        if r.status == 200 {
            break;
        }
        assert_oauth_error(&r, 503, "state_unavailable");
        assert!(start.elapsed() < Duration::from_secs(15), "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "token endpoint issuing again {:?} after the client was added",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_spread_over_the_fleet_meet_one_throttle() {
    let redis = RedisServer::start();
    let (pki, _up, a, b) = fleet(&redis).await;
    let secret = add_client(&a, "erp-1", &["orders:read"]);
    // Five wrong secrets, alternating instances: the per-client limit is 5 per minute.
    for i in 0..5 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = grant(&pki, gw.addr(), "erp-1", &format!("wrong-{i}")).await;
        assert_oauth_error(&r, 401, "invalid_client");
    }
    // Now even the right secret waits, on both instances.
    for gw in [&a, &b] {
        let r = grant(&pki, gw.addr(), "erp-1", &secret).await;
        assert_eq!(r.status, 429, "{}", r.text());
        let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&after));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_keys_are_managed_through_either_instances_admin_api() {
    let redis = RedisServer::start();
    let (pki, _up, a, b) = fleet(&redis).await;
    let (admin_a, admin_b) = (Admin::new(a.admin_addr()), Admin::new(b.admin_addr()));

    let r = admin_a
        .post(
            "/clients",
            r#"{"id": "erp-9", "scopes": ["orders:read"], "access_ttl": "5m"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let secret = r.json()["client_secret"].as_str().unwrap().to_owned();
    let t = client_credentials(&pki, b.addr(), "erp-9", &secret).await;
    assert_eq!(t.expires_in, 300);

    let listed = admin_b.get("/clients").await;
    assert_eq!(listed.status, 200);
    let text = listed.text();
    assert!(
        text.contains("\"erp-9\"") && !text.contains("argon2"),
        "{text}"
    );
    assert_eq!(
        admin_b.post("/clients", r#"{"id": "erp-9"}"#).await.status,
        409
    );
    assert_eq!(
        admin_b
            .post("/clients", r#"{"id": "bad id!"}"#)
            .await
            .status,
        400
    );

    // A new secret on B: the old one is refused on A at once.
    let r = admin_b.post("/clients/erp-9/rotate-secret", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = r.json()["client_secret"].as_str().unwrap().to_owned();
    assert_oauth_error(
        &grant(&pki, a.addr(), "erp-9", &secret).await,
        401,
        "invalid_client",
    );
    client_credentials(&pki, a.addr(), "erp-9", &fresh).await;

    // A key rotated through A's admin API signs on B.
    let r = admin_a.post("/keys/rotate", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let kid = r.json()["kid"].as_str().unwrap().to_owned();
    let start = Instant::now();
    while header_of(
        &client_credentials(&pki, b.addr(), "erp-9", &fresh)
            .await
            .access,
    )["kid"]
        != kid.as_str()
    {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "B never signs with {kid}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Disabled on A: refused on B.
    assert_eq!(admin_a.post("/clients/erp-9/disable", "").await.status, 200);
    assert_oauth_error(
        &grant(&pki, b.addr(), "erp-9", &fresh).await,
        401,
        "invalid_client",
    );
    assert_eq!(
        admin_a.post("/clients/nobody/disable", "").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_manages_clients_of_a_single_gateway_on_its_embedded_store() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(
        pki.dir(),
        &format!(
            "{}\n[admin]\nbind = \"127.0.0.1:0\"\n",
            issuer_config(&up.url(), "")
        ),
    )
    .await;
    let admin = Admin::new(gw.admin_addr());
    let r = admin
        .post("/clients", r#"{"id": "erp-1", "scopes": ["orders:read"]}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["client_secret"].as_str().unwrap().to_owned();
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_eq!(status_with(&pki, &gw, &t.access).await, 200);
    let r = admin
        .post("/keys/rotate", r#"{"algorithm": "EdDSA"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["alg"], "EdDSA");
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_eq!(header_of(&t.access)["alg"], "EdDSA");
    assert_eq!(
        admin
            .post("/keys/rotate", r#"{"algorithm": "RS256"}"#)
            .await
            .status,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_fleet_stopped_the_cli_adds_a_client_in_redis_itself() {
    let redis = RedisServer::start();
    let pki = pki_with_vault();
    let up = Upstream::echo("api").await;
    let toml = fleet_config(&up, &redis);
    let config = write_config(pki.dir(), &toml);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "client",
            "add",
            "--config",
            config.to_str().unwrap(),
            "--id",
            "erp-5",
        ])
        .args(["--scopes", "orders:read"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("client_secret:"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(!pki.path("issuer.redb").exists(), "Redis, not the file");
    let gw = Gateway::start(pki.dir(), &toml).await;
    client_credentials(&pki, gw.addr(), "erp-5", &secret).await;
}
