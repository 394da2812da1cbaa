//! The reference agent left running: with a certificate past two thirds of its lifetime it
//! renews at once and keeps the new pair; with an expired one it says a new token is needed.
//! Time is not waited for: the test writes certificates of the age it needs.

use super::*;

/// A certificate for `machine`'s key in the agent's folder, issued by the enrollment CA,
/// valid from `from` to `to` (seconds from now), written over machine.pem.
fn reissue(lab: &Lab, machine: &str, from: i64, to: i64) -> String {
    let dir = lab.pki.path("agent");
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(lab.pki.path("enroll-ca.key")).unwrap())
            .unwrap();
    let ca_pem = std::fs::read_to_string(lab.pki.path("enroll-ca.pem")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key =
        KeyPair::from_pem(&std::fs::read_to_string(dir.join("machine.key")).unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, machine);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::seconds(from);
    params.not_after = now + time::Duration::seconds(to);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let pem = params.signed_by(&key, &issuer).unwrap().pem();
    std::fs::write(dir.join("machine.pem"), &pem).unwrap();
    pem
}

#[tokio::test]
async fn the_running_agent_renews_a_certificate_past_two_thirds_at_once_and_keeps_running() {
    let (lab, _) = with_enrolled_agent().await;
    // Eight days into a nine-day life: past two thirds.
    let old = reissue(&lab, "m1", -8 * 86_400, 86_400);
    let aged = agent_identity(&lab);
    assert_eq!(
        orders_as(&lab, &aged).await.status,
        200,
        "the aged certificate still works"
    );

    let mut child = agent_command(&lab, None)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the agent");
    // What it says, read as it says it: the certificate file changes before the agent
    // reports it, so the test waits for both rather than racing the report.
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let said = std::sync::Arc::clone(&said);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut s = said.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        })
    };
    let pem = lab.pki.path("agent").join("machine.pem");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let renewed = loop {
        let now = std::fs::read_to_string(&pem).unwrap_or_default();
        let reported = {
            let s = said.lock().unwrap();
            s.contains("re-enrolled") && s.contains("renews at")
        };
        if now != old && now.contains("END CERTIFICATE") && reported {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not renew and say so within 60s: {}",
            said.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Still running: it waits for the new certificate's two thirds.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let new = agent_identity(&lab);
    assert_ne!(new.cert(), aged.cert());
    assert!(renewed.contains("BEGIN CERTIFICATE"));
    assert_eq!(orders_as(&lab, &new).await.status, 200);
}

#[tokio::test]
async fn an_expired_certificate_needs_a_new_token_and_the_agent_says_so() {
    let (lab, token) = with_enrolled_agent().await;
    reissue(&lab, "m1", -2 * 86_400, -60);
    let before = std::fs::read(lab.pki.path("agent").join("machine.key")).unwrap();
    let out = agent(&lab, None, &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expired") && err.contains("new token"),
        "{err}"
    );
    // Restarted with the token it already spent: refused, and it says why.
    let out = agent(&lab, Some(&token), &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expired") && err.contains("token was refused") && err.contains("new token"),
        "{err}"
    );
    // Nothing was overwritten.
    assert_eq!(
        std::fs::read(lab.pki.path("agent").join("machine.key")).unwrap(),
        before
    );
    // A new token enrolls it again.
    let fresh = lab.token("m1", "24h").await;
    let out = agent(&lab, Some(&fresh), &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(orders_as(&lab, &agent_identity(&lab)).await.status, 200);
}
