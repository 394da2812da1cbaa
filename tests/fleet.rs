//! A fleet on one real `redis-server`: two gateways share a route's rate limit (the fleet
//! admits the limit once, not once per instance); when Redis is killed, a gateway whose
//! limits fail open serves from its own bounded fallback and one that fails closed answers
//! 503 `state_unavailable` (also under load, every request answered), `/readyz` and
//! `/metrics` say the store is down, and both share
//! again once Redis is back, without a restart; an ACL user's password comes from a file and
//! a wrong one is refused without the password reaching a response, `/readyz` or `/metrics`,
//! and a vault record can hold the user and password;
//! `rediss://` is verified against the configured CA; a quota is counted once for the fleet
//! and fails open or closed as configured; a reload
//! keeps the connections unless `[state]` changed; and `[state]` mistakes are
//! reported at their key (the issuer on Redis without a vault among them).

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant, SystemTime};

use support::redis::RedisServer;
use support::*;

const PREFIX: &str = "fleet-test:";

/// A listener trusting 127.0.0.1 as a proxy, a route "/api" with `limits`, an admin
/// listener, and `[state]` on `redis` with `state_keys`.
fn config(up: &Upstream, limits: &str, state_keys: &str) -> String {
    // No config watching: instances in one folder share the file, and one must not reload
    // into another's config.
    format!(
        "{}{}{}[admin]\nbind = \"127.0.0.1:0\"\n\n[state]\nbackend = \"redis\"\nkey_prefix = \"{PREFIX}\"\n{state_keys}\n",
        server("watch_config = false"),
        listener("public", "trusted_proxies = [\"127.0.0.1\"]"),
        route("api", "/api", &[&up.url()], &format!("limits = [{limits}]")),
    )
}

fn from(ip: &str) -> http::Request<BoxBody> {
    request("GET", "/api")
        .header("x-forwarded-for", ip)
        .body(empty())
        .unwrap()
}

/// Poll `f` until it holds (Redis reconnection is an outside event, not the gateway's time).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}

/// The series `name` with exactly `labels`; panics when `/metrics` lacks it.
fn num(m: &support::prometheus::Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.value(name, labels)
        .unwrap_or_else(|| panic!("no series {name} {labels:?} in /metrics"))
}

/// A Redis whose default user is off and whose user `gw` (password `secret`) has the
/// README's rule: the fleet's keys and channel, no dangerous commands.
fn acl_only_redis(secret: &str) -> RedisServer {
    RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "gw",
        "on",
        &format!(">{secret}"),
        &format!("~{PREFIX}*"),
        &format!("&{PREFIX}*"),
        "+@all",
        "-@dangerous",
    ])
}

async fn readyz_state(gw: &Gateway) -> serde_json::Value {
    Admin::new(gw.admin_addr()).get("/readyz").await.json()["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_admit_a_route_limit_once_for_the_fleet() {
    let redis = RedisServer::start();
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    // 100 per hour with a burst of 100: refill during the test is under one request.
    let limits = "{ key = \"route\", rate = \"100/h\", burst = 100 }";
    let toml = config(&up, limits, &format!("url = \"{}\"", redis.url()));
    let a = Gateway::start(pki.dir(), &toml).await;
    let b = Gateway::start(pki.dir(), &toml).await;
    let mut ca = connect_h1(&pki, a.addr()).await;
    let mut cb = connect_h1(&pki, b.addr()).await;

    let (mut passed_a, mut passed_b, mut refused) = (0, 0, 0);
    for i in 0..150 {
        let (c, passed) = if i % 2 == 0 {
            (&mut ca, &mut passed_a)
        } else {
            (&mut cb, &mut passed_b)
        };
        let r = c.call(from("203.0.113.1")).await.unwrap();
        match r.status.as_u16() {
            200 => *passed += 1,
            429 => {
                r.assert_denied(429, "rate_limited");
                refused += 1;
            }
            s => panic!("request {i}: unexpected status {s}"),
        }
    }
    let total = passed_a + passed_b;
    assert!(
        (100..=101).contains(&total),
        "the fleet admitted {total} (a: {passed_a}, b: {passed_b}), not the limit once"
    );
    assert!(passed_a > 0 && passed_b > 0, "both instances served");
    assert_eq!(refused, 150 - total);

    // The key is in Redis, under the prefix.
    let keys = redis.command(&["KEYS", &format!("{PREFIX}rl:*")]);
    assert!(keys.starts_with("*1\r\n"), "one shared key: {keys:?}");

    let m = Admin::new(a.admin_addr()).metrics().await;
    assert_eq!(num(&m, "portcullis_state_up", &[("backend", "redis")]), 1.0);
    assert!(num(&m, "portcullis_state_calls_total", &[("outcome", "ok")]) >= 75.0);
    assert!(num(&m, "portcullis_state_call_duration_seconds_count", &[]) >= 75.0);
    assert_eq!(
        num(
            &m,
            "portcullis_state_fail_mode",
            &[("concern", "rate_limits"), ("mode", "fail_open")]
        ),
        1.0,
        "fail_open is the default for rate limits"
    );
    let state = readyz_state(&a).await;
    assert_eq!(state["backend"], "redis");
    assert_eq!(state["status"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_open_limits_fall_back_locally_closed_ones_refuse_and_both_recover() {
    let mut redis = RedisServer::start();
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let limits = "{ key = \"client_ip\", rate = \"5/h\", burst = 5 }";
    let url = format!("url = \"{}\"\ncommand_timeout = \"200ms\"", redis.url());
    let open = Gateway::start(
        pki.dir(),
        &config(
            &up,
            limits,
            &format!("{url}\non_unavailable = {{ rate_limits = \"fail_open\" }}"),
        ),
    )
    .await;
    let closed = Gateway::start(
        pki.dir(),
        &config(
            &up,
            limits,
            &format!("{url}\non_unavailable = {{ rate_limits = \"fail_closed\" }}"),
        ),
    )
    .await;
    let mut co = connect_h1(&pki, open.addr()).await;
    let mut cc = connect_h1(&pki, closed.addr()).await;
    assert_eq!(co.call(from("203.0.113.7")).await.unwrap().status, 200);
    assert_eq!(cc.call(from("203.0.113.7")).await.unwrap().status, 200);

    redis.stop();

    // fail_open: this instance limits alone, with the same rule: five pass, the sixth waits.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(co.call(from("203.0.113.8")).await.unwrap().status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    // fail_closed: no wrong answer, a clear refusal with a time to come back.
    let r = cc.call(from("203.0.113.8")).await.unwrap();
    r.assert_denied(503, "state_unavailable");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // Both stay ready: each concern follows its mode, and the fleet is not taken out.
    let state = readyz_state(&closed).await;
    assert_eq!(state["status"], "down");
    assert_eq!(state["on_unavailable"]["rate_limits"], "fail_closed");
    assert_eq!(
        Admin::new(open.admin_addr()).get("/readyz").await.status,
        200
    );
    let m = Admin::new(open.admin_addr()).metrics().await;
    assert_eq!(num(&m, "portcullis_state_up", &[("backend", "redis")]), 0.0);
    assert!(num(&m, "portcullis_state_fallbacks_total", &[]) >= 6.0);
    let failed = num(&m, "portcullis_state_calls_total", &[("outcome", "error")])
        + num(
            &m,
            "portcullis_state_calls_total",
            &[("outcome", "timeout")],
        )
        + num(
            &m,
            "portcullis_state_calls_total",
            &[("outcome", "skipped")],
        );
    assert!(failed >= 1.0, "the failures are counted");

    // Back, on the same port and empty: both share again without a restart.
    redis.restart();
    eventually("the fail_closed gateway serves again", async || {
        cc.call(from("203.0.113.9")).await.unwrap().status == 200
    })
    .await;
    eventually("readyz says up", async || {
        readyz_state(&open).await["status"] == "up"
    })
    .await;
    // Shared again: the two instances draw on one count for one address.
    let mut passed = 0;
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut co } else { &mut cc };
        if c.call(from("203.0.113.10")).await.unwrap().status == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 5, "one limit for the fleet once Redis is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_with_a_password_from_a_file_is_used_and_a_wrong_password_is_refused_unseen() {
    let secret = "s3cret-redis-pass";
    let redis = acl_only_redis(secret);
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let limits = "{ key = \"route\", rate = \"100/h\", burst = 100 }";
    pki.write("redis.pass", &format!("{secret}\n"));
    let good = Gateway::start(
        pki.dir(),
        &config(
            &up,
            limits,
            &format!(
                "url = \"{}\"\nusername = \"gw\"\npassword_file = \"redis.pass\"\non_unavailable = {{ rate_limits = \"fail_closed\" }}",
                redis.url()
            ),
        ),
    )
    .await;
    let mut c = connect_h1(&pki, good.addr()).await;
    assert_eq!(c.call(from("203.0.113.1")).await.unwrap().status, 200);
    let m = Admin::new(good.admin_addr()).metrics().await;
    assert!(num(&m, "portcullis_state_calls_total", &[("outcome", "ok")]) >= 1.0);

    pki.write("wrong.pass", "not-the-password\n");
    let bad = Gateway::start(
        pki.dir(),
        &config(
            &up,
            limits,
            &format!(
                "url = \"{}\"\nusername = \"gw\"\npassword_file = \"wrong.pass\"\non_unavailable = {{ rate_limits = \"fail_closed\" }}",
                redis.url()
            ),
        ),
    )
    .await;
    let mut c = connect_h1(&pki, bad.addr()).await;
    let r = c.call(from("203.0.113.1")).await.unwrap();
    r.assert_denied(503, "state_unavailable");
    let admin = Admin::new(bad.admin_addr());
    for path in ["/readyz", "/metrics", "/config"] {
        let body = admin.get(path).await.text();
        for needle in ["not-the-password", secret] {
            assert!(!body.contains(needle), "{path} shows a password");
        }
    }
    assert!(!r.text().contains("not-the-password"));
}

#[test]
fn state_mistakes_are_reported_at_their_key() {
    let pki = Pki::generate();
    let path = pki.dir().join("portcullis.toml");
    let base = "[[listeners]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n\
                [[listeners.certificates]]\nchain = \"server.pem\"\nkey = \"server.key\"\n\n";
    let cases: &[(&str, &str, &str)] = &[
        ("backend = \"redis\"", "state.url", "missing"),
        (
            "backend = \"redis\"\nurl = \"redis://gw:pw@127.0.0.1:6379\"",
            "state.url",
            "credentials",
        ),
        (
            "backend = \"redis\"\nurl = \"http://127.0.0.1:6379\"",
            "state.url",
            "redis://",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\non_unavailable = { rate_limits = \"maybe\" }",
            "state.on_unavailable.rate_limits",
            "fail_open",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\npassword_file = \"absent.pass\"",
            "state.password_file",
            "absent.pass",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nusername = \"gw\"",
            "state.username",
            "password",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\npool_size = 0",
            "state.pool_size",
            "1",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nca = \"ca.pem\"",
            "state.ca",
            "rediss://",
        ),
        (
            "url = \"redis://127.0.0.1:6379\"",
            "state.url",
            "backend = \"redis\"",
        ),
        ("backend = \"etcd\"", "state.backend", "etcd"),
    ];
    for (keys, key, needle) in cases {
        let text = format!("{base}[state]\n{keys}\n");
        let err = match portcullis::config::load_str(&path, &text, SystemTime::now()) {
            Ok(_) => panic!("[state] {keys:?} loaded"),
            Err(e) => e,
        };
        assert!(
            err.0
                .iter()
                .any(|i| i.key == *key && i.message.contains(needle)),
            "[state] {keys:?}: expected {key} to say {needle:?}; got:\n{err}"
        );
    }
    // The issuer on Redis without a vault would put its private keys there in clear.
    let text = format!(
        "{base}[issuer]\nlistener = \"public\"\nissuer = \"https://gw.test\"\nstore = \"issuer.redb\"\n\n\
         [state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n"
    );
    let err = portcullis::config::load_str(&path, &text, SystemTime::now())
        .err()
        .expect("refused");
    assert!(
        err.0
            .iter()
            .any(|i| i.key == "issuer" && i.message.contains("[vault]")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_store_when_state_is_unchanged_and_moves_when_it_changes() {
    let redis = RedisServer::start();
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let limits = "{ key = \"route\", rate = \"100/h\", burst = 100 }";
    let toml = config(&up, limits, &format!("url = \"{}\"", redis.url()));
    let gw = Gateway::start(pki.dir(), &toml).await;
    let store = |gw: &Gateway| {
        gw.shared()
            .generation
            .load()
            .shared_state()
            .cloned()
            .unwrap()
    };
    let first = store(&gw);

    gw.reload().await.unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &store(&gw)),
        "an unchanged [state] keeps its connections"
    );

    write_config(pki.dir(), &toml.replace(PREFIX, "fleet-moved:"));
    gw.reload().await.unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &store(&gw)));
    let mut c = connect_h1(&pki, gw.addr()).await;
    assert_eq!(c.call(from("203.0.113.1")).await.unwrap().status, 200);
    let keys = redis.command(&["KEYS", "fleet-moved:rl:*"]);
    assert!(
        keys.starts_with("*1\r\n"),
        "the new prefix is used: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_never_sees_a_callers_api_key_or_address() {
    let redis = RedisServer::start();
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let limits = "{ key = \"header:x-api-key\", rate = \"100/h\" }, { key = \"client_ip\", rate = \"100/h\" }";
    let gw = Gateway::start(
        pki.dir(),
        &config(&up, limits, &format!("url = \"{}\"", redis.url())),
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    let api_key = "ak_live_7f3c9e1d2b";
    let r = c
        .call(
            request("GET", "/api")
                .header("x-api-key", api_key)
                .header("x-forwarded-for", "203.0.113.77")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let keys = redis.command(&["KEYS", "*"]);
    assert!(keys.starts_with("*2\r\n"), "a key per limit: {keys:?}");
    assert!(!keys.contains(api_key) && !keys.contains("203.0.113.77"));
    assert!(!keys.contains(&String::from_utf8_lossy(&[203, 0, 113, 77]).into_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_is_counted_once_for_the_fleet_and_fails_as_configured_without_redis() {
    let mut redis = RedisServer::start();
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let limits = "{ key = \"client_ip\", quota = \"10/day\" }";
    let url = format!("url = \"{}\"\ncommand_timeout = \"200ms\"", redis.url());
    let open = Gateway::start(pki.dir(), &config(&up, limits, &url)).await;
    let closed = Gateway::start(
        pki.dir(),
        &config(
            &up,
            limits,
            &format!("{url}\non_unavailable = {{ quotas = \"fail_closed\" }}"),
        ),
    )
    .await;
    let mut co = connect_h1(&pki, open.addr()).await;
    let mut cc = connect_h1(&pki, closed.addr()).await;
    let mut passed = 0;
    for i in 0..16 {
        let c = if i % 2 == 0 { &mut co } else { &mut cc };
        let r = c.call(from("203.0.113.5")).await.unwrap();
        match r.status.as_u16() {
            200 => passed += 1,
            _ => {
                r.assert_denied(429, "quota_exhausted");
            }
        }
    }
    assert_eq!(passed, 10, "one day's quota for the fleet");

    redis.stop();
    // fail_open (the default): admitted uncounted; fail_closed: 503.
    assert_eq!(co.call(from("203.0.113.6")).await.unwrap().status, 200);
    cc.call(from("203.0.113.6"))
        .await
        .unwrap()
        .assert_denied(503, "state_unavailable");
    let m = Admin::new(open.admin_addr()).metrics().await;
    assert!(num(&m, "portcullis_state_fallbacks_total", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_is_verified_against_the_configured_ca_and_a_foreign_ca_is_refused() {
    let pki = Pki::generate();
    let redis = RedisServer::start_tls(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        &pki.path("ca.pem"),
    );
    let up = Upstream::echo("api").await;
    let limits = "{ key = \"route\", rate = \"100/h\", burst = 100 }";
    let keys = |ca: &str| {
        format!(
            // The first call may meet the TLS connection still being made on a loaded
            // machine: a generous command timeout, so only a refused CA fails closed.
            "url = \"{}\"\nca = \"{ca}\"\ncommand_timeout = \"2s\"\non_unavailable = {{ rate_limits = \"fail_closed\" }}",
            redis.tls_url()
        )
    };
    let good = Gateway::start(pki.dir(), &config(&up, limits, &keys("ca.pem"))).await;
    let mut c = connect_h1(&pki, good.addr()).await;
    assert_eq!(c.call(from("203.0.113.1")).await.unwrap().status, 200);
    let m = Admin::new(good.admin_addr()).metrics().await;
    assert!(num(&m, "portcullis_state_calls_total", &[("outcome", "ok")]) >= 1.0);

    // A CA that did not sign the server's certificate: no connection, so fail closed.
    let other = Pki::generate();
    pki.write(
        "other-ca.pem",
        &std::fs::read_to_string(other.path("ca.pem")).unwrap(),
    );
    let bad = Gateway::start(pki.dir(), &config(&up, limits, &keys("other-ca.pem"))).await;
    let mut c = connect_h1(&pki, bad.addr()).await;
    c.call(from("203.0.113.1"))
        .await
        .unwrap()
        .assert_denied(503, "state_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_answers_every_request_as_configured() {
    let mut redis = RedisServer::start();
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let limits = "{ key = \"client_ip\", rate = \"1000000/s\", burst = 1000000 }";
    let url = format!("url = \"{}\"\ncommand_timeout = \"200ms\"", redis.url());
    let open = Gateway::start(pki.dir(), &config(&up, limits, &url)).await;
    let closed = Gateway::start(
        pki.dir(),
        &config(
            &up,
            limits,
            &format!("{url}\non_unavailable = {{ rate_limits = \"fail_closed\" }}"),
        ),
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for i in 0..8 {
        let addr = if i % 2 == 0 {
            open.addr()
        } else {
            closed.addr()
        };
        let mut c = connect_h1(&pki, addr).await;
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Every request gets an answer: a transport error fails the test here.
                let r = c.call(from(&format!("203.0.113.{i}"))).await.unwrap();
                *statuses.entry(r.status.as_u16()).or_default() += 1;
            }
            (i % 2 == 0, statuses)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut open_seen, mut closed_seen) = (
        std::collections::BTreeMap::<u16, usize>::new(),
        std::collections::BTreeMap::<u16, usize>::new(),
    );
    for l in loops {
        let (is_open, statuses) = l.await.unwrap();
        let into = if is_open {
            &mut open_seen
        } else {
            &mut closed_seen
        };
        for (s, n) in statuses {
            *into.entry(s).or_default() += n;
        }
    }
    assert_eq!(
        open_seen.keys().copied().collect::<Vec<_>>(),
        [200],
        "fail_open serves throughout: {open_seen:?}"
    );
    assert!(
        closed_seen.keys().all(|s| [200, 503].contains(s)) && closed_seen.contains_key(&503),
        "fail_closed refuses with 503 while Redis is away: {closed_seen:?}"
    );
    // Both serve fresh connections, sharing again.
    let mut c = connect_h1(&pki, closed.addr()).await;
    eventually("the fail_closed gateway serves again", async || {
        c.call(from("203.0.113.99")).await.unwrap().status == 200
    })
    .await;
    println!(
        "under load across a Redis restart: fail_open {open_seen:?}, fail_closed {closed_seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_user_and_password_can_come_from_a_vault_record() {
    let secret = "vault-held-redis-pass";
    let redis = acl_only_redis(secret);
    let pki = Pki::generate();
    for out in vault_with(pki.dir(), &[("redis", "basic", &format!("gw:{secret}"))]) {
        assert!(out.status.success(), "{out:?}");
    }
    let up = Upstream::echo("api").await;
    let gw = Gateway::start(
        pki.dir(),
        &format!(
            "[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n{}",
            config(
                &up,
                "{ key = \"route\", rate = \"100/h\", burst = 100 }",
                &format!(
                    "url = \"{}\"\npassword_credential = \"redis\"\non_unavailable = {{ rate_limits = \"fail_closed\" }}",
                    redis.url()
                ),
            )
        ),
    )
    .await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    assert_eq!(c.call(from("203.0.113.1")).await.unwrap().status, 200);
    let shown = Admin::new(gw.admin_addr()).get("/config").await.text();
    assert!(!shown.contains(secret), "/config shows the password");
}
