//! Proves `portcullis check --config FILE`: exit 0 and a one-line summary for a valid file
//! (relative paths resolved from the file's folder, not the working directory), exit 1 and every
//! problem as "<file>: <key path>: <message>" on stderr (one line each, optionally behind a
//! severity prefix) for an invalid one.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .current_dir("/")
        .output()
        .expect("run portcullis check")
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_accepts_a_valid_file_and_prints_a_one_line_summary() {
    let pki = Pki::generate();
    let toml = format!(
        "{}{}{}",
        listener(
            "public",
            "client_auth = \"optional\"\nclient_ca = \"ca.pem\""
        ),
        route("a", "/a", &["http://127.0.0.1:9000"], ""),
        route(
            "b",
            "/b",
            &["http://127.0.0.1:9001", "http://127.0.0.1:9002"],
            ""
        ),
    );
    let config = write_config(pki.dir(), &toml);
    let out = check(&config);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want a one-line summary: {}", show(&out));
}

#[test]
fn check_rejects_an_invalid_upstream_url_naming_the_file_and_key() {
    let pki = Pki::generate();
    let toml = format!(
        "{}{}",
        listener("public", ""),
        route("bad", "/", &["htp://x"], "")
    );
    let config = write_config(pki.dir(), &toml);
    let out = check(&config);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("routes[0].upstream[0]"))
        .unwrap_or_else(|| panic!("no line names routes[0].upstream[0]: {}", show(&out)));
    // The CLI may put a severity such as "error: " in front of the problem.
    assert!(
        line.contains(&format!("{}: routes[0].upstream[0]: ", config.display())),
        "want \"<file>: <key>: <message>\", got {line:?}"
    );
    assert!(
        line.contains("\"htp://x\""),
        "the bad value is not quoted: {line:?}"
    );
}

#[test]
fn check_reports_every_problem_not_just_the_first() {
    let pki = Pki::generate();
    let toml = format!(
        "{}{}{}",
        listener("public", "min_tls = \"1.1\""),
        route("bad", "/", &["htp://x"], ""),
        route(
            "lower",
            "/l",
            &["http://127.0.0.1:9000"],
            "methods = [\"get\"]"
        ),
    );
    let config = write_config(pki.dir(), &toml);
    let out = check(&config);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("{}: ", config.display());
    for key in [
        "listeners[0].min_tls",
        "routes[0].upstream[0]",
        "routes[1].methods[0]",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("{prefix}{key}: "))),
            "{key} not reported: {}",
            show(&out)
        );
    }
}

#[test]
fn dev_pki_makes_the_example_config_pass_check_on_a_fresh_clone() {
    // A fresh clone's layout: the example config in config/, nothing else.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("config")).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.example.toml"),
        root.path().join("config/portcullis.example.toml"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .current_dir(root.path())
            .output()
            .unwrap()
    };
    let check = ["check", "--config", "config/portcullis.example.toml"];
    assert!(!run(&check).status.success(), "fails before dev-pki");
    let made = run(&["dev-pki"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = run(&check);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A second run overwrites nothing and says so.
    let again = run(&["dev-pki"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
}
