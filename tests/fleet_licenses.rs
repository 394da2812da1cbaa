//! Machine licenses of a fleet, on one real `redis-server`: a license activated through A's
//! admin API admits the machine on B; revoked on A, it is refused on B within a second
//! (measured); an id activated on one instance cannot be activated again on the other; the
//! licenses survive both instances restarting (they live in Redis, not in a file); and with
//! Redis gone an activation answers 503 `state_unavailable` while the licenses already known
//! keep being checked from memory.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use portcullis::license::SigningKey;
use portcullis::license::keys::keygen;
use support::license::pin_license;
use support::redis::RedisServer;
use support::*;

fn config(up: &Upstream, redis: &RedisServer) -> String {
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [licenses]\ntrusted_keys = [\"k1.pub\"]\nstore = \"licenses.redb\"\n\n{}{}\
         [state]\nbackend = \"redis\"\nurl = \"{}\"\ncommand_timeout = \"500ms\"\n",
        server("watch_config = false"),
        listener(
            "public",
            "client_auth = \"optional\"\nclient_ca = \"ca.pem\""
        ),
        route("orders", "/orders", &[&up.url()], "license = \"required\""),
        redis.url(),
    )
}

struct Fleet {
    pki: Pki,
    key: SigningKey,
    machine: Identity,
    a: Gateway,
    b: Gateway,
}

impl Fleet {
    async fn start(redis: &RedisServer, up: &Upstream) -> Fleet {
        let pki = Pki::generate();
        let files = keygen(pki.dir(), "k1").unwrap();
        let key = SigningKey::load(&files.private).unwrap();
        let machine = pki.new_client("machine-1");
        let toml = config(up, redis);
        let a = Gateway::start(pki.dir(), &toml).await;
        let b = Gateway::start(pki.dir(), &toml).await;
        Fleet {
            pki,
            key,
            machine,
            a,
            b,
        }
    }

    async fn status_on(&self, gw: &Gateway) -> u16 {
        let client = TlsClient::new(&self.pki).identity(&self.machine);
        let tls = client.connect(gw.addr(), "localhost").await.unwrap();
        let mut h1 = H1::handshake(tls).await.unwrap();
        h1.call(get("/orders/1")).await.unwrap().status.as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_activated_on_a_admits_on_b_and_revoked_on_a_is_refused_on_b_within_a_second() {
    let redis = RedisServer::start();
    let up = Upstream::echo("orders").await;
    let f = Fleet::start(&redis, &up).await;
    assert_eq!(f.status_on(&f.b).await, 403, "no license yet");

    let text = f.key.issue(&pin_license("lic-1", &f.machine)).unwrap();
    let r = Admin::new(f.a.admin_addr())
        .post("/licenses", text.clone())
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let start = Instant::now();
    while f.status_on(&f.b).await != 200 {
        assert!(start.elapsed() < Duration::from_secs(1), "B never admits");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let admitted_after = start.elapsed();

    // The same id cannot be activated again, on either instance.
    let again = Admin::new(f.b.admin_addr()).post("/licenses", text).await;
    assert_eq!(again.status, 409, "{}", again.text());

    let r = Admin::new(f.a.admin_addr()).delete("/licenses/lic-1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let start = Instant::now();
    loop {
        let status = f.status_on(&f.b).await;
        if status == 403 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "B still admits");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "activation on A admitted on B after {admitted_after:?}; revocation refused on B after {:?}",
        start.elapsed()
    );
    let listed = Admin::new(f.b.admin_addr()).get("/licenses").await.json();
    assert_eq!(listed["licenses"][0]["state"], "revoked", "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_live_in_redis_across_restarts_and_without_redis_an_activation_is_503() {
    let mut redis = RedisServer::start();
    let up = Upstream::echo("orders").await;
    let f = Fleet::start(&redis, &up).await;
    let text = f.key.issue(&pin_license("lic-1", &f.machine)).unwrap();
    let r = Admin::new(f.a.admin_addr()).post("/licenses", text).await;
    assert_eq!(r.status, 201);
    assert!(!f.pki.path("licenses.redb").exists(), "no file is written");

    // Both instances restart: the license comes back from Redis.
    let Fleet {
        pki,
        key,
        machine,
        a,
        b,
    } = f;
    drop((a, b));
    let toml = config(&up, &redis);
    let f = Fleet {
        a: Gateway::start(pki.dir(), &toml).await,
        b: Gateway::start(pki.dir(), &toml).await,
        pki,
        key,
        machine,
    };
    assert_eq!(f.status_on(&f.a).await, 200);
    assert_eq!(f.status_on(&f.b).await, 200);

    redis.stop();
    let other = f.pki.new_client("machine-2");
    let text = f.key.issue(&pin_license("lic-2", &other)).unwrap();
    let r = Admin::new(f.a.admin_addr()).post("/licenses", text).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "state_unavailable");
    assert!(!r.text().contains("127.0.0.1:"), "no internal address");
    // What is known keeps being checked from memory.
    assert_eq!(f.status_on(&f.b).await, 200);
}
