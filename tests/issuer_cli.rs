//! `portcullis client ...` and `portcullis keys rotate`, run as an operator would: the real
//! binary, the config file, exit codes and streams; then the gateway honouring what the
//! commands stored (a client added, a secret rotated, a client disabled, a key rotated).

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::oauth::*;
use support::*;

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("PORTCULLIS_LOG", "trace")
        .output()
        .expect("run portcullis")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The `client_secret:` value printed by `client add` or `rotate-secret`.
fn secret_in(out: &Output) -> String {
    stdout(out)
        .lines()
        .find_map(|l| l.strip_prefix("client_secret:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no secret printed: {}", stdout(out)))
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

#[tokio::test]
async fn clients_managed_with_the_cli_are_what_the_gateway_accepts() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let toml = issuer_config(&up.url(), "");
    let config = write_config(pki.dir(), &toml);
    let cfg = path(&config);

    let add = portcullis(&[
        "client",
        "add",
        "--config",
        cfg,
        "--id",
        "erp-1",
        "--scopes",
        "orders:read,stock",
    ]);
    ok(&add);
    let secret = secret_in(&add);
    assert_eq!(secret.len(), 43);
    assert!(stdout(&add).contains("shown this once"), "{}", stdout(&add));
    assert!(
        !stderr(&add).contains(&secret),
        "the secret is printed once, to stdout only"
    );
    ok(&portcullis(&[
        "client",
        "add",
        "--config",
        cfg,
        "--id",
        "old",
        "--scopes",
        "orders:read",
    ]));
    let old_secret = {
        let rotated = portcullis(&["client", "rotate-secret", "--config", cfg, "old"]);
        ok(&rotated);
        secret_in(&rotated)
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(pki.path("issuer.redb"))
            .expect("store")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "store mode {mode:o}");
    }
    let list = portcullis(&["client", "list", "--config", cfg]);
    ok(&list);
    let text = stdout(&list);
    assert!(
        text.contains("erp-1") && text.contains("orders:read stock"),
        "{text}"
    );
    assert!(
        !text.contains(&secret) && !text.contains("argon2"),
        "{text}"
    );

    let gw = Gateway::start(pki.dir(), &toml).await;
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_eq!(t.scope, "orders:read stock");
    client_credentials(&pki, gw.addr(), "old", &old_secret).await;

    // The running gateway holds the store: the CLI says so and changes nothing.
    let busy = portcullis(&["client", "disable", "--config", cfg, "old"]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(stderr(&busy).contains("already open"), "{}", stderr(&busy));
    stop(gw).await;

    ok(&portcullis(&["client", "disable", "--config", cfg, "old"]));
    let rotated = portcullis(&["client", "rotate-secret", "--config", cfg, "erp-1"]);
    ok(&rotated);
    let new_secret = secret_in(&rotated);
    let list = stdout(&portcullis(&[
        "client",
        "list",
        "--store",
        path(&pki.path("issuer.redb")),
    ]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("old") && l.contains("disabled")),
        "{list}"
    );

    let gw = start_when_store_free(pki.dir(), &toml).await;
    let grant = [("grant_type", "client_credentials")];
    for (id, s) in [("erp-1", secret.as_str()), ("old", old_secret.as_str())] {
        let resp = send_one(
            &pki,
            gw.addr(),
            post_form("/oauth2/token", &grant, Some(&basic(id, s))),
        )
        .await;
        assert_oauth_error(&resp, 401, "invalid_client");
    }
    client_credentials(&pki, gw.addr(), "erp-1", &new_secret).await;
    // A refresh token outlives a secret rotation: the client authenticates with the new one.
    let resp = refresh(&pki, gw.addr(), "erp-1", &new_secret, &t.refresh).await;
    Tokens::from(&resp);
}

#[tokio::test]
async fn keys_rotate_makes_a_new_kid_and_keeps_the_old_key_in_the_jwks() {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    let toml = issuer_config(&up.url(), "");
    let gw = Gateway::start(pki.dir(), &toml).await;
    let secret = add_client(&gw, "erp-1", &["orders:read"]);
    let old = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let old_kid = header_of(&old.access)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    stop(gw).await;

    let cfg = pki.path("portcullis.toml");
    let out = portcullis(&["keys", "rotate", "--config", path(&cfg)]);
    ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains("new signing key") && text.contains("(ES256)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("previous key {old_kid} stays in the JWKS until")),
        "{text}"
    );

    let gw = start_when_store_free(pki.dir(), &toml).await;
    let jwks = send_one(&pki, gw.addr(), get("/.well-known/jwks.json"))
        .await
        .json();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2), "{jwks}");
    let new = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_ne!(header_of(&new.access)["kid"], old_kid.as_str());
    for t in [&old, &new] {
        send_one(&pki, gw.addr(), get_with_token("/api/x", &t.access))
            .await
            .echo();
    }
}

#[test]
fn bad_arguments_fail_and_store_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("s.redb");
    let s = path(&store);
    let cases: [(&[&str], i32, &str); 7] = [
        (
            &["client", "add", "--store", s, "--id", "has space"],
            1,
            "must be 1-64",
        ),
        (
            &[
                "client",
                "add",
                "--store",
                s,
                "--id",
                "a",
                "--cert-pin",
                "nope",
            ],
            1,
            "--cert-pin",
        ),
        (
            &[
                "client",
                "add",
                "--store",
                s,
                "--id",
                "a",
                "--access-ttl",
                "2d",
            ],
            1,
            "--access-ttl",
        ),
        (
            &["client", "add", "--store", s, "--id", "a", "--cert-only"],
            2,
            "--cert-pin",
        ),
        (
            &["client", "list", "--store", s, "--config", s],
            2,
            "cannot be used with",
        ),
        (
            &["client", "disable", "--store", s, "nobody"],
            1,
            "no client with id \"nobody\"",
        ),
        (
            &["keys", "rotate", "--store", s, "--algorithm", "RS256"],
            1,
            "ES256 or EdDSA",
        ),
    ];
    for (args, code, needle) in cases {
        let out = portcullis(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let list = portcullis(&["client", "list", "--store", s]);
    ok(&list);
    assert_eq!(stdout(&list), "no clients\n");

    let no_section = dir.path().join("plain.toml");
    std::fs::write(&no_section, "").expect("write");
    let out = portcullis(&["client", "list", "--config", path(&no_section)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no [issuer] section"),
        "{}",
        stderr(&out)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_listener_the_cli_changes_the_running_gateway_and_opens_the_store_when_it_is_stopped()
 {
    let pki = Pki::generate();
    let up = Upstream::echo("api").await;
    pki.write("admin.token", &"t".repeat(40));
    let toml = format!(
        "{}\n[admin]\nbind = \"127.0.0.1:{}\"\ntoken_file = \"admin.token\"\n",
        issuer_config(&up.url(), ""),
        free_port()
    );
    let config = write_config(pki.dir(), &toml);
    let cfg = path(&config);
    let gw = Gateway::start(pki.dir(), &toml).await;

    // Running: through the admin API, with the token from token_file.
    let add = portcullis(&[
        "client",
        "add",
        "--config",
        cfg,
        "--id",
        "erp-1",
        "--scopes",
        "orders:read",
    ]);
    ok(&add);
    let secret = secret_in(&add);
    client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    let list = portcullis(&["client", "list", "--config", cfg]);
    ok(&list);
    assert!(stdout(&list).contains("erp-1"), "{}", stdout(&list));
    let dup = portcullis(&["client", "add", "--config", cfg, "--id", "erp-1"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let rotated = portcullis(&["keys", "rotate", "--config", cfg]);
    ok(&rotated);
    let kid = stdout(&rotated)
        .lines()
        .find_map(|l| l.strip_prefix("new signing key: "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .unwrap();
    let t = client_credentials(&pki, gw.addr(), "erp-1", &secret).await;
    assert_eq!(
        header_of(&t.access)["kid"],
        kid.as_str(),
        "the running gateway signs with it"
    );
    ok(&portcullis(&[
        "client", "disable", "--config", cfg, "erp-1",
    ]));
    let resp = grant(&pki, gw.addr(), "erp-1", &secret).await;
    assert_oauth_error(&resp, 401, "invalid_client");

    // Stopped: nothing listens on the admin port, so the store is opened directly.
    stop(gw).await;
    let mut added = None;
    for _ in 0..250 {
        let out = portcullis(&["client", "add", "--config", cfg, "--id", "erp-2"]);
        if out.status.success() {
            added = Some(out);
            break;
        }
        // The stopped gateway's last tasks release the file a moment after it stopped.
        assert!(stderr(&out).contains("already open"), "{}", stderr(&out));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let secret2 = secret_in(&added.expect("the store was never free"));
    let gw = start_when_store_free(pki.dir(), &toml).await;
    client_credentials(&pki, gw.addr(), "erp-2", &secret2).await;
}
