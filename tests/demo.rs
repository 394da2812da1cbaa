//! Proves that `portcullis demo` starts from nothing, prints curl commands, and that those
//! commands, run as printed by a real curl from the same folder, get the answers their
//! comments promise; that its printed enrollment commands (a token, the agent, a call on the
//! licensed mutual-TLS route with the issued certificate) work as printed, run in one shell;
//! and that the demo stops cleanly on SIGTERM.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_demo_prints_curl_commands_that_work_as_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A fixed admin port: `enroll token --config` finds the running gateway by the config's
    // [admin] bind, which port 0 would not tell.
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "demo",
            "--port",
            "0",
            "--mtls-port",
            "0",
            "--admin-port",
            &admin_port,
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in lines.by_ref() {
        let line = line.expect("line");
        let done = line.starts_with("Stop with Ctrl-C");
        printed.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    let text = printed.join("\n");
    assert!(text.contains("Portcullis demo is running"), "{text}");
    // The printed check command runs as printed, from this folder.
    let check = printed
        .iter()
        .find_map(|l| l.strip_prefix("Check the config: "))
        .unwrap_or_else(|| panic!("no check command: {text}"));
    assert!(
        check.ends_with("check --config demo/portcullis.toml"),
        "{check}"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(check)
        .current_dir(dir.path())
        .output()
        .expect("run the printed check");
    assert!(
        out.status.success(),
        "{check}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let commands: Vec<&str> = printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl --cacert"))
        .collect();
    assert_eq!(commands.len(), 6, "{text}");
    // The admin commands work too.
    let admin: Vec<&str> = printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl http") || l.starts_with("curl -X POST http"))
        .collect();
    assert_eq!(admin.len(), 3, "{text}");
    for cmd in &admin {
        let cmd = cmd.split(" #").next().unwrap_or(cmd).trim();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} -s -o admin.txt -w '%{{http_code}}'"))
            .current_dir(dir.path())
            .output()
            .expect("run curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{cmd}");
    }
    // What each printed command must get, in order (from the comments the demo prints).
    let expected = ["200", "200", "200", "refused", "405", "400"];
    for (cmd, want) in commands.iter().zip(expected) {
        let cmd = cmd.split(" #").next().unwrap_or(cmd).trim();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} -s -o body.txt -w '%{{http_code}}'"))
            .current_dir(dir.path())
            .output()
            .expect("run curl (the demo's commands need curl installed)");
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        if want == "refused" {
            // No client certificate on the mutual-TLS port: the handshake fails.
            assert!(!out.status.success() && code == "000", "{cmd}: got {code}");
        } else {
            assert_eq!(code, want, "{cmd}");
        }
    }
    // The last one was refused with the JSON denial.
    let body = std::fs::read_to_string(dir.path().join("body.txt")).expect("body");
    assert!(body.contains("\"error\":\"invalid_path\""), "{body}");

    // The enrollment walk-through, as printed, in one shell (the token is exported).
    let walk: Vec<&str> = printed
        .iter()
        .skip_while(|l| !l.starts_with("Enroll a machine"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim())
        .collect();
    assert_eq!(walk.len(), 3, "{text}");
    assert!(walk[0].contains(" enroll token --config demo/portcullis.toml"));
    assert!(walk[1].contains(" enroll agent --url https://localhost:"));
    assert!(walk[2].starts_with("curl --cert demo/agent/machine.pem"));
    let script = format!(
        "set -e\n{}\n{}\n{} -s -o licensed.txt -w '%{{http_code}}'\n",
        walk[0], walk[1], walk[2]
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .expect("run the enrollment commands");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).ends_with("200"),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a license (the demo's own client certificate) the route refuses.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -s -o /dev/null -w '%{{http_code}}'",
            walk[2].replace("demo/agent/machine", "demo/client")
        ))
        .current_dir(dir.path())
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "demo exited with {status}");
    // The generated private keys are readable by their owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [
            "demo/server.key",
            "demo/client.key",
            "demo/enroll-ca.key",
            "demo/license.key",
            "demo/agent/machine.key",
        ] {
            let mode = std::fs::metadata(dir.path().join(key))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
}
