//! `portcullis license keygen -> issue -> inspect`, run as an operator would: the real binary,
//! files on disk, exit codes and streams.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
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

const PIN: &str = "sha256/AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

#[test]
fn keygen_issue_and_inspect_work_together_and_the_private_key_is_private() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("keys");
    let out = portcullis(&["license", "keygen", "--out", path(&keys)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("key id:"), "{}", stdout(&out));
    let private = keys.join("license.key");
    let public = keys.join("license.pub");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&private)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private key mode {mode:o}");
    }
    assert!(
        std::fs::read_to_string(&public)
            .expect("pub")
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );

    // A second keygen into the same folder refuses and leaves the key alone.
    let before = std::fs::read(&private).expect("key");
    let again = portcullis(&["license", "keygen", "--out", path(&keys)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(&private).expect("key"), before);

    let issued = portcullis(&[
        "license",
        "issue",
        "--key",
        path(&private),
        "--customer",
        "Acme",
        "--machine-id",
        "m-1",
        "--pin",
        PIN,
        "--ip",
        "10.1.0.0/16",
        "--routes",
        "orders,stock",
        "--expires",
        "2099-12-31",
        "--id",
        "lic-cli",
    ]);
    assert!(issued.status.success(), "{}", stderr(&issued));
    let license = stdout(&issued);
    assert!(license.starts_with("PCL1.") && license.trim_end().lines().count() == 1);

    let inspected = portcullis(&[
        "license",
        "inspect",
        license.trim(),
        "--pubkey",
        path(&public),
    ]);
    assert!(
        inspected.status.success(),
        "{}{}",
        stdout(&inspected),
        stderr(&inspected)
    );
    let text = stdout(&inspected);
    for needle in [
        "lic-cli",
        "Acme",
        "m-1",
        "pin_and_ip",
        PIN,
        "10.1.0.0/16",
        "orders, stock",
        "2099-12-31T23:59:59Z",
        "signature:   valid",
        "valid now:   yes",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    // From standard input, as `-`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["license", "inspect", "-", "--pubkey", path(&public)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(license.as_bytes())
        .expect("write");
    let piped = child.wait_with_output().expect("wait");
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(stdout(&piped).contains("lic-cli"));

    // Tampered: exit 1, the reason on stderr.
    let tampered = license.trim().replacen("PCL1.ey", "PCL1.ez", 1);
    let bad = portcullis(&["license", "inspect", &tampered, "--pubkey", path(&public)]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).starts_with("error: the license signature does not match"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn bad_arguments_exit_1_with_the_flag_named() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("k");
    assert!(
        portcullis(&["license", "keygen", "--out", path(&keys)])
            .status
            .success()
    );
    let key = keys.join("license.key");
    let out = portcullis(&[
        "license",
        "issue",
        "--key",
        path(&key),
        "--customer",
        "Acme",
        "--machine-id",
        "m-1",
        "--expires",
        "2099-12-31",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: --pin/--ip: give at least one --pin or --ip"
    );
    let out = portcullis(&["license", "inspect", "PCL2.abc.def"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("format version \"PCL2\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_documents_every_issue_flag() {
    let out = portcullis(&["license", "issue", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in [
        "--key",
        "--customer",
        "--machine-id",
        "--pin",
        "--ip",
        "--match",
        "--routes",
        "--scopes",
        "--not-before",
        "--expires",
        "--id",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
}
