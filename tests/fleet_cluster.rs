//! A fleet on a real three-node Redis Cluster (`cluster = true`, the URL one seed node): two
//! gateways share rate limits whose keys spread over the nodes (the fleet admits each limit
//! once), the issuer's transactions and the licenses run on the node owning the control slot
//! (a client added on A gets a token on B; a revocation on A is refused on B within a second),
//! and the control-plane keys all sit on one node under the `{iss}` hash tag.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::oauth::*;
use support::redis::RedisCluster;
use support::*;

fn config(up: &Upstream, cluster: &RedisCluster) -> String {
    format!(
        "{}{}\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n\
         {}\
         [state]\nbackend = \"redis\"\nurl = \"{}\"\ncluster = true\ncommand_timeout = \"1s\"\n",
        server("watch_config = false"),
        issuer_config(&up.url(), ""),
        route(
            "limited",
            "/limited",
            &[&up.url()],
            "auth = \"none\"\nlimits = [{ key = \"header:x-tenant\", rate = \"5/h\", burst = 5 }]",
        ),
        cluster.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_redis_cluster_shares_limits_clients_and_revocations() {
    let cluster = RedisCluster::start(3);
    let pki = Pki::generate();
    for out in vault_with(pki.dir(), &[]) {
        assert!(out.status.success(), "{out:?}");
    }
    let up = Upstream::echo("api").await;
    let toml = config(&up, &cluster);
    let a = Gateway::start(pki.dir(), &toml).await;
    let b = Gateway::start(pki.dir(), &toml).await;

    // Twenty tenants, five requests each per instance: each tenant admitted five times in
    // all, whichever node holds its key.
    let mut ca = connect_h1(&pki, a.addr()).await;
    let mut cb = connect_h1(&pki, b.addr()).await;
    for ip in 0..20 {
        let mut passed = 0;
        for i in 0..10 {
            let c = if i % 2 == 0 { &mut ca } else { &mut cb };
            let r = c
                .call(
                    request("GET", "/limited")
                        .header("x-tenant", format!("tenant-{ip}"))
                        .body(empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            if r.status == 200 {
                passed += 1;
            }
        }
        assert_eq!(passed, 5, "tenant {ip}: one limit for the fleet");
    }
    let holders = cluster
        .nodes
        .iter()
        .filter(|n| n.command(&["KEYS", "portcullis:rl:*"]).lines().count() > 1)
        .count();
    assert!(holders >= 2, "the limits' keys spread over the nodes");

    // The issuer on the control node.
    let r = Admin::new(a.admin_addr())
        .post("/clients", r#"{"id": "erp-1", "scopes": ["orders:read"]}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["client_secret"].as_str().unwrap().to_owned();
    let t = client_credentials(&pki, b.addr(), "erp-1", &secret).await;
    let ok = send_one(&pki, b.addr(), get_with_token("/api/x", &t.access)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let r = revoke(&pki, a.addr(), "erp-1", &secret, &t.access).await;
    assert_eq!(r.status, 200);
    let start = Instant::now();
    while send_one(&pki, b.addr(), get_with_token("/api/x", &t.access))
        .await
        .status
        != 401
    {
        assert!(start.elapsed() < Duration::from_secs(1), "B still accepts");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every control-plane key on one node.
    let control: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.command(&["KEYS", "portcullis:{iss}*"])
                .matches("{iss}")
                .count()
        })
        .collect();
    assert_eq!(
        control.iter().filter(|n| **n > 0).count(),
        1,
        "control keys per node: {control:?}"
    );
}
