//! The audit trail of enrollment (`[admin] audit_log`): each EST enrollment, re-enrollment
//! and refusal of a known token or certificate, and the command line's offline changes,
//! leave one JSON line; never a token, a CSR or a PEM.

use super::*;

/// The audit file's lines, parsed.
fn entries(lab: &Lab) -> Vec<serde_json::Value> {
    lab.audit()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect()
}

/// The entries of `action`.
fn of(lab: &Lab, action: &str) -> Vec<serde_json::Value> {
    entries(lab)
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

#[tokio::test]
async fn enrollments_re_enrollments_and_refusals_of_a_known_token_are_audited_without_secrets() {
    use base64::Engine as _;
    let lab = Lab::start().await;
    let token = lab.token("m1", "24h").await;
    let (old, _) = enroll(&lab, &token).await;

    let enrolled = of(&lab, "enrollment.enroll");
    assert_eq!(enrolled.len(), 1, "{}", lab.audit());
    let e = &enrolled[0];
    assert_eq!(e["source"], "est");
    assert_eq!((&e["identity"], &e["target"]), (&"m1".into(), &"m1".into()));
    assert_eq!((&e["result"], &e["status"]), (&"ok".into(), &200.into()));
    assert!(e["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(
        e["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    let serial = serial_of(&lab, &old, "old.pem");
    assert_eq!(e["serial"].as_str(), Some(serial.as_str()), "{e}");
    let pin = portcullis::identity::ClientIdentity::from_der(old.cert().as_ref())
        .unwrap()
        .spki_pin();
    let short = e["pin"].as_str().expect("the short pin");
    assert!(short.len() == 23 && pin.starts_with(short), "{short} {pin}");

    // The same token again: refused, audited with the precise reason.
    let (_, csr) = key_and_csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let r = simpleenroll(&lab, &format!("Bearer {token}"), &csr).await;
    assert_eq!(r.status, 401);
    let enrolled = of(&lab, "enrollment.enroll");
    assert_eq!(enrolled.len(), 2, "{}", lab.audit());
    assert_eq!(enrolled[1]["result"], "token_spent");
    assert_eq!(enrolled[1]["status"], 401);
    assert_eq!(enrolled[1]["target"], "m1");
    assert!(enrolled[1].get("serial").is_none());
    // An unknown token names no machine: counted and logged, not audited.
    let r = simpleenroll(&lab, "Bearer pce_not-a-token", &csr).await;
    assert_eq!(r.status, 401);
    assert_eq!(of(&lab, "enrollment.enroll").len(), 2);

    // Re-enrollment with the current certificate, then with the old one.
    let (key, new_csr) = key_and_csr(&rcgen::PKCS_ED25519);
    let r = simplereenroll(&lab, Some(&old), &new_csr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new = Identity::from_parts(
        openssl_certs(lab.pki.dir(), &r.body)[0].clone(),
        key.serialize_der(),
    );
    let r = simplereenroll(&lab, Some(&old), &csr).await;
    assert_eq!(r.status, 401);
    let renewed = of(&lab, "enrollment.reenroll");
    assert_eq!(renewed.len(), 2, "{}", lab.audit());
    assert_eq!(
        (&renewed[0]["result"], &renewed[0]["identity"]),
        (&"ok".into(), &"m1".into())
    );
    let serial = serial_of(&lab, &new, "new.pem");
    assert_eq!(renewed[0]["serial"].as_str(), Some(serial.as_str()));
    assert_eq!(renewed[1]["result"], "certificate_not_current");
    assert_eq!(renewed[1]["status"], 401);

    let text = lab.audit();
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    assert!(!text.contains(&token), "no token in the audit trail");
    assert!(!text.contains("pce_"), "no token in the audit trail");
    assert!(!text.contains("-----BEGIN"), "no PEM in the audit trail");
    for der in [&csr, &new_csr] {
        assert!(!text.contains(&b64(der)[..40]), "no CSR in the audit trail");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(lab.pki.path("audit.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn the_command_lines_offline_token_and_revoke_are_audited() {
    let lab = Lab::start().await;
    let (machine, _) = enroll(&lab, &lab.token("m1", "24h").await).await;
    drop(machine);
    let Lab { pki, gw, .. } = lab;
    // Stopped: the command line opens the stores itself (its config names port 0, so no
    // admin API is asked).
    support::oauth::stop(gw).await;
    let cli = async |args: &[&str]| {
        // The stopped gateway's last tasks release the store a moment after it stops.
        for _ in 0..250 {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .arg("enroll")
                .args(args)
                .arg("--config")
                .arg(pki.path("portcullis.toml"))
                .env("USER", "ops")
                .output()
                .expect("run portcullis enroll");
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr),
            );
            if stderr.contains("Cannot acquire lock") {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            assert!(out.status.success(), "{stdout}{stderr}");
            return stdout;
        }
        panic!("the token store stayed locked");
    };
    let printed = cli(&["token", "--machine", "m2", "--license-template", "agent"]).await;
    let token = printed.lines().next().unwrap().to_owned();
    assert!(!printed.contains("warning"), "{printed}");
    cli(&["revoke", "m1"]).await;

    let text = std::fs::read_to_string(pki.path("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cli_lines: Vec<_> = lines.iter().filter(|e| e["source"] == "cli").collect();
    assert_eq!(cli_lines.len(), 2, "{text}");
    let (t, r) = (cli_lines[0], cli_lines[1]);
    assert_eq!(
        (&t["action"], &t["target"]),
        (&"enrollment.token".into(), &"m2".into())
    );
    assert_eq!(
        (&r["action"], &r["target"]),
        (&"enrollment.revoke".into(), &"m1".into())
    );
    for e in [t, r] {
        assert_eq!(e["result"], "ok");
        assert_eq!(e["identity"], "cli:ops");
        assert!(e.get("status").is_none(), "{e}");
    }
    assert!(!text.contains(&token), "no token in the audit trail");
}

#[tokio::test]
async fn an_enrollment_the_audit_file_does_not_take_still_answers_and_is_counted() {
    let lab = Lab::start_with(|_, text| {
        text.replace(
            "audit_log = \"audit.log\"",
            "audit_log = \"missing/audit.log\"",
        )
    })
    .await;
    let failures = async || {
        let m = lab.admin.metrics().await;
        m.value("portcullis_audit_write_failures_total", &[])
    };
    // The admin API's token creation is the first entry the file does not take.
    let token = lab.token("m1", "24h").await;
    assert_eq!(failures().await, Some(1.0));
    enroll(&lab, &token).await;
    assert_eq!(failures().await, Some(2.0));
}
