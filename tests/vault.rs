//! The credential vault end to end: made and filled with the CLI (secrets on stdin), opened
//! by the gateway, injected into requests to the upstream; tampering refused by record name
//! and a reload keeping the last good vault; the secret in no file, stderr, response,
//! `/config` or `/metrics`.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;

use support::*;

const API_KEY: &str = "sk_live_Q7f3a9c1e5b2d4f6a8c0e";
const BASIC: &str = "erp-user:pa55-W0rd-9f1c";
const BEARER: &str = "tok_8d7c6b5a4f3e2d1c0b9a";

fn vault(dir: &Path, args: &[&str], stdin: &str) -> Output {
    vault_cli(dir, args, stdin)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vault in `dir` holding the three test secrets, opened with master.key.
fn filled(dir: &Path) -> Vec<Output> {
    vault_with(
        dir,
        &[
            ("shop", "api_key", API_KEY),
            ("erp", "basic", BASIC),
            ("crm", "bearer", BEARER),
        ],
    )
}

fn config(up: &Upstream) -> String {
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n{}{}{}{}{}",
        server("watch_config = false"),
        listener("public", ""),
        route(
            "header",
            "/header",
            &[&up.url()],
            "credentials = \"shop\"\ninject = { header = \"X-Api-Key\" }"
        ),
        route(
            "query",
            "/query",
            &[&up.url()],
            "credentials = \"shop\"\ninject = { query = \"api_key\" }"
        ),
        route("basic", "/basic", &[&up.url()], "credentials = \"erp\""),
        route(
            "bearer",
            "/bearer",
            &[&up.url()],
            "credentials = \"crm\"\ninject = { client_authorization = \"x-client-authorization\" }"
        ),
    )
}

/// `portcullis vault list` of vault.json, opened with the master key file `key`.
fn list(dir: &Path, key: &str) -> Output {
    vault(
        dir,
        &["list", "--vault", "vault.json", "--master-key-file", key],
        "",
    )
}

/// `req` with one more header.
fn with_header(
    mut req: http::Request<BoxBody>,
    name: &'static str,
    value: &'static str,
) -> http::Request<BoxBody> {
    req.headers_mut()
        .insert(name, http::HeaderValue::from_static(value));
    req
}

fn no_secret(what: &str, text: &[u8]) {
    for s in [API_KEY, BASIC, BEARER, "pa55-W0rd", "Q7f3a9c1e5b2"] {
        assert!(
            !text.windows(s.len()).any(|w| w == s.as_bytes()),
            "{what} holds {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_set_with_the_cli_reach_the_upstream_and_nothing_else() {
    let pki = Pki::generate();
    let outs = filled(pki.dir());
    for o in &outs {
        no_secret("the CLI's output", &o.stdout);
        no_secret("the CLI's stderr", &o.stderr);
    }
    no_secret(
        "the vault file",
        &std::fs::read(pki.dir().join("vault.json")).unwrap(),
    );
    let list = ok(&list(pki.dir(), "master.key"));
    assert!(
        list.contains("shop\tapi_key")
            && list.contains("erp\tbasic")
            && list.contains("crm\tbearer"),
        "{list}"
    );
    no_secret("vault list", list.as_bytes());

    let up = Upstream::echo("api").await;
    let gw = Gateway::start(pki.dir(), &config(&up)).await;
    let mut c = connect_h1(&pki, gw.addr()).await;

    let r = c
        .call(with_header(get("/header/x"), "x-api-key", "forged"))
        .await
        .unwrap();
    no_secret(
        "a response's headers",
        format!("{:?}", r.headers).as_bytes(),
    );
    assert_eq!(r.echo().header_all("x-api-key"), vec![API_KEY]);

    let echo = c
        .call(get("/query/x?page=2&api_key=forged"))
        .await
        .unwrap()
        .echo();
    assert!(
        echo.uri
            .ends_with(&format!("/query/x?page=2&api_key={API_KEY}")),
        "{}",
        echo.uri
    );

    let echo = c
        .call(with_header(
            get("/basic"),
            "authorization",
            "Bearer client-token",
        ))
        .await
        .unwrap()
        .echo();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, BASIC)
    );
    assert_eq!(echo.header_all("authorization"), vec![basic.as_str()]);

    let echo = c
        .call(with_header(
            get("/bearer"),
            "authorization",
            "Bearer client-token",
        ))
        .await
        .unwrap()
        .echo();
    assert_eq!(
        echo.header_all("authorization"),
        vec![format!("Bearer {BEARER}").as_str()]
    );
    assert_eq!(
        echo.header("x-client-authorization"),
        Some("Bearer client-token")
    );

    let admin = Admin::new(gw.admin_addr());
    no_secret("/config", admin.get("/config").await.text().as_bytes());
    no_secret("/metrics", admin.get("/metrics").await.text().as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_vault_is_refused_by_record_and_a_reload_keeps_the_last_good_one() {
    let pki = Pki::generate();
    filled(pki.dir());
    let up = Upstream::echo("api").await;
    let toml = config(&up);
    let gw = Gateway::start(pki.dir(), &toml).await;

    // The "erp" record's sealed value moved under "crm".
    let path = pki.dir().join("vault.json");
    let good = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let records = v["records"].as_array_mut().unwrap();
    let erp = records.iter().find(|r| r["name"] == "erp").unwrap()["sealed"].clone();
    for r in records.iter_mut().filter(|r| r["name"] == "crm") {
        r["sealed"] = erp.clone();
    }
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();

    let err = gw
        .reload()
        .await
        .expect_err("a tampered vault must not load");
    let text = err.to_string();
    assert!(text.contains("record \"crm\" does not open"), "{text}");
    no_secret("the reload error", text.as_bytes());
    // The last good vault still serves.
    let mut c = connect_h1(&pki, gw.addr()).await;
    let echo = c.call(get("/bearer")).await.unwrap().echo();
    assert_eq!(
        echo.header_all("authorization"),
        vec![format!("Bearer {BEARER}").as_str()]
    );

    // A wrong master key: refused, naming the key ids, not the key.
    std::fs::write(&path, &good).unwrap();
    let other = pki.dir().join("wrong-master.key");
    ok(&vault(
        pki.dir(),
        &[
            "init",
            "--vault",
            "wrong-vault.json",
            "--new-master-key-file",
            "wrong-master.key",
        ],
        "",
    ));
    let text = std::fs::read_to_string(&other).unwrap();
    std::fs::write(pki.dir().join("master.key"), &text).unwrap();
    let err = gw
        .reload()
        .await
        .expect_err("a wrong master key must not load");
    assert!(err.to_string().contains("the master key is wrong"), "{err}");
    assert!(
        !err.to_string().contains(text.trim()),
        "the key itself in the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_master_key_keeps_the_secrets_and_the_old_key_stops_working() {
    let pki = Pki::generate();
    filled(pki.dir());
    ok(&vault(
        pki.dir(),
        &[
            "rotate-master",
            "--vault",
            "vault.json",
            "--master-key-file",
            "master.key",
            "--new-master-key-file",
            "new.key",
        ],
        "",
    ));
    let old = list(pki.dir(), "master.key");
    assert!(!old.status.success());
    let list = ok(&list(pki.dir(), "new.key"));
    assert!(list.contains("shop\tapi_key"), "{list}");
    let up = Upstream::echo("api").await;
    let toml = config(&up).replace(
        "master_key_file = \"master.key\"",
        "master_key_file = \"new.key\"",
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let mut c = connect_h1(&pki, gw.addr()).await;
    assert_eq!(
        c.call(get("/header"))
            .await
            .unwrap()
            .echo()
            .header_all("x-api-key"),
        vec![API_KEY]
    );
}

#[test]
fn the_cli_takes_secrets_from_stdin_only_and_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    ok(&vault(
        dir.path(),
        &[
            "init",
            "--vault",
            "v.json",
            "--new-master-key-file",
            "m.key",
        ],
        "",
    ));
    let at = ["--vault", "v.json", "--master-key-file", "m.key"];
    let empty = vault(
        dir.path(),
        &[&["set", "x", "--kind", "api_key"][..], &at].concat(),
        "",
    );
    assert!(String::from_utf8_lossy(&empty.stderr).contains("the secret is empty"));
    let basic = vault(
        dir.path(),
        &[&["set", "x", "--kind", "basic"][..], &at].concat(),
        "nocolon",
    );
    assert!(String::from_utf8_lossy(&basic.stderr).contains("user:password"));
    let kind = vault(
        dir.path(),
        &[&["set", "x", "--kind", "oauth"][..], &at].concat(),
        "v",
    );
    assert!(
        String::from_utf8_lossy(&kind.stderr)
            .contains("is not api_key, basic, bearer, oauth2 or private_key")
    );
    // init never overwrites a vault or a key.
    assert!(
        !vault(
            dir.path(),
            &[
                "init",
                "--vault",
                "v.json",
                "--new-master-key-file",
                "n.key"
            ],
            ""
        )
        .status
        .success()
    );
    assert!(
        !vault(
            dir.path(),
            &[
                "init",
                "--vault",
                "w.json",
                "--new-master-key-file",
                "m.key"
            ],
            ""
        )
        .status
        .success()
    );
}

#[test]
fn credentials_without_a_vault_or_with_a_wrong_inject_are_config_errors_at_their_key() {
    let pki = Pki::generate();
    filled(pki.dir());
    let cases = [
        (
            "credentials = \"shop\"",
            false,
            "routes[0].credentials",
            "needs a [vault] section",
        ),
        (
            "credentials = \"nope\"",
            true,
            "routes[0].credentials",
            "no record is named \"nope\"",
        ),
        (
            "credentials = \"shop\"",
            true,
            "routes[0].inject",
            "is an api_key: say where it goes",
        ),
        (
            "credentials = \"erp\"\ninject = { header = \"x-k\" }",
            true,
            "routes[0].inject",
            "goes in Authorization",
        ),
        (
            "inject = { header = \"x-k\" }",
            true,
            "routes[0].inject",
            "applies with credentials",
        ),
        (
            "credentials = \"crm\"\ninject = { client_authorization = \"authorization\" }",
            true,
            "routes[0].inject.client_authorization",
            "other than authorization",
        ),
    ];
    for (keys, with_vault, key, needle) in cases {
        let vault_section = if with_vault {
            "[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\n\n"
        } else {
            ""
        };
        let toml = format!(
            "{vault_section}{}{}",
            listener("public", ""),
            route("r", "/", &["http://127.0.0.1:9"], keys)
        );
        let path = write_config(pki.dir(), &toml);
        let err = portcullis::config::load_str(&path, &toml, std::time::SystemTime::now())
            .err()
            .expect(keys);
        assert!(
            err.0
                .iter()
                .any(|i| i.key == key && i.message.contains(needle)),
            "{keys}: expected {key}: {needle}; got\n{err}"
        );
    }
    let toml = format!(
        "[vault]\nfile = \"vault.json\"\nmaster_key_file = \"master.key\"\nmaster_key_env = \"X\"\n\n{}{}",
        listener("public", ""),
        route("r", "/", &["http://127.0.0.1:9"], "")
    );
    let path = write_config(pki.dir(), &toml);
    let err = portcullis::config::load_str(&path, &toml, std::time::SystemTime::now())
        .err()
        .expect("two master key sources");
    assert!(
        err.to_string().contains("exactly one of master_key_file"),
        "{err}"
    );
}

#[test]
fn a_set_killed_at_any_step_of_its_write_leaves_the_old_or_the_new_vault() {
    use portcullis::vault::{MasterSource, SAVE_STEPS, Vault};
    let set = [
        "set",
        "shop",
        "--kind",
        "api_key",
        "--vault",
        "vault.json",
        "--master-key-file",
        "master.key",
    ];
    for (i, step) in SAVE_STEPS.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        vault_with(dir.path(), &[("shop", "api_key", "old-key-1")]);
        let killed = vault_cli_env(
            dir.path(),
            &set,
            "new-key-2\n",
            &[("PORTCULLIS_VAULT_ABORT_AT", step)],
        );
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(killed.status.signal(), Some(6), "killed after {step}");
        }
        assert!(!killed.status.success(), "killed after {step}");
        // The vault opens whole, every record checked, and holds one of the two values.
        let master = MasterSource::File(dir.path().join("master.key"))
            .load()
            .unwrap();
        let vault = Vault::open(&dir.path().join("vault.json"), &master)
            .unwrap_or_else(|e| panic!("after {step}: {e}"));
        let value = vault.get("shop").unwrap().1;
        let renamed = i >= SAVE_STEPS.iter().position(|s| *s == "renamed").unwrap();
        let expected: &[u8] = if renamed { b"new-key-2" } else { b"old-key-1" };
        assert_eq!(value.expose(), expected, "after {step}");
        ok(&list(dir.path(), "master.key"));
        // What the crash left behind does not stop the next write.
        let again = vault_cli(dir.path(), &set, "third-key-3\n");
        ok(&again);
        let vault = Vault::open(&dir.path().join("vault.json"), &master).unwrap();
        assert_eq!(vault.get("shop").unwrap().1.expose(), b"third-key-3");
    }
}

/// `script` (util-linux, in every Debian) runs the CLI on a pseudo-terminal, as an operator
/// typing at a shell would: what the terminal shows is what `script` writes out.
#[cfg(unix)]
#[test]
fn on_a_terminal_set_asks_for_the_secret_without_showing_it() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    vault_with(dir.path(), &[]);
    let cmd = format!(
        "{} vault set typed --kind api_key --vault vault.json --master-key-file master.key",
        env!("CARGO_BIN_EXE_portcullis")
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut out = child.stdout.take().unwrap();
    let mut screen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&screen).contains("not shown): ") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&screen));
        screen.extend_from_slice(&buf[..n]);
    }
    // The prompt is written just before echo is switched off: give the CLI that moment
    // (a process hand-off, not time passing for the logic under test).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed-Secret-4711\r").unwrap();
    out.read_to_end(&mut screen).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    let screen = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{screen}");
    assert!(screen.contains("secret for typed (api_key"), "{screen}");
    assert!(screen.contains("typed (api_key) stored"), "{screen}");
    assert!(
        !screen.contains("typed-Secret"),
        "the secret was shown: {screen}"
    );
    let master = portcullis::vault::MasterSource::File(dir.path().join("master.key"))
        .load()
        .unwrap();
    let vault = portcullis::vault::Vault::open(&dir.path().join("vault.json"), &master).unwrap();
    assert_eq!(vault.get("typed").unwrap().1.expose(), b"typed-Secret-4711");
}
