//! Admin identities and roles, and the audit trail: each named identity (a token file, or a
//! client certificate by pin or subject) reaches the endpoints of its role and gets 403 JSON
//! past them; every request that changes something, allowed or not, leaves one JSON line in
//! `audit_log` and in the log, naming who, which role, what, the result and the request id,
//! and never a token.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use support::*;

const VIEWER: &str = "viewer-token-0123456789abcdef0123456789";
const OPERATOR: &str = "operator-token-0123456789abcdef012345678";
const ADMIN: &str = "admin-token-0123456789abcdef0123456789ab";

fn token_identities(pki: &Pki) -> String {
    pki.write("viewer.token", &format!("{VIEWER}\n"));
    pki.write("operator.token", &format!("{OPERATOR}\n"));
    pki.write("admin.token", &format!("{ADMIN}\n"));
    "audit_log = \"audit.log\"\n\
     [[admin.identities]]\nname = \"prometheus\"\nrole = \"viewer\"\ntoken_file = \"viewer.token\"\n\
     [[admin.identities]]\nname = \"ops\"\nrole = \"operator\"\ntoken_file = \"operator.token\"\n\
     [[admin.identities]]\nname = \"root\"\nrole = \"admin\"\ntoken_file = \"admin.token\"\n"
        .to_owned()
}

async fn call(gw: &Gateway, token: &str, method: &str, path: &str) -> TestResponse {
    call_at(gw.admin_addr(), token, method, path).await
}

async fn call_at(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
) -> TestResponse {
    let auth = format!("Bearer {token}");
    ops::admin_call(addr, method, path, &[("authorization", &auth)], empty()).await
}

fn audit_lines(pki: &Pki) -> Vec<serde_json::Value> {
    std::fs::read_to_string(pki.path("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_identity_reaches_its_roles_endpoints_and_gets_403_past_them() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}{}[admin]\nbind = \"127.0.0.1:0\"\n{}",
        server("watch_config = false"),
        listener("public", ""),
        route("all", "/", &[&up.url()], ""),
        token_identities(&pki)
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    // Every identity reads.
    for t in [VIEWER, OPERATOR, ADMIN] {
        for path in ["/healthz", "/metrics", "/config", "/upstreams"] {
            assert_eq!(call(&gw, t, "GET", path).await.status, 200, "GET {path}");
        }
    }
    // A viewer changes nothing: 403 in the gateway's JSON shape, and no reload happened.
    let refused = call(&gw, VIEWER, "POST", "/reload").await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let body = refused.json();
    assert_eq!(body["error"], "forbidden_for_role");
    assert_eq!(
        body["request_id"].as_str(),
        refused.header("x-request-id").as_deref()
    );
    assert_eq!(gw.shared().metrics.reload_count(true), 0);
    assert_eq!(
        call(&gw, VIEWER, "DELETE", "/licenses/L-1").await.status,
        403
    );

    // An operator reloads and manages licenses (none configured here: 404 says it got past
    // the role), but not issuer clients or keys.
    let reloaded = call(&gw, OPERATOR, "POST", "/reload").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    let lic = call(&gw, OPERATOR, "DELETE", "/licenses/L-1").await;
    assert_eq!(lic.json()["error"], "licenses_not_configured");
    for path in ["/clients", "/keys/rotate", "/clients/sync/disable"] {
        let r = call(&gw, OPERATOR, "POST", path).await;
        assert_eq!(r.status, 403, "operator POST {path}: {}", r.text());
    }
    // An admin gets past every role check (no issuer here: 404 from the endpoint itself).
    let keys = call(&gw, ADMIN, "POST", "/keys/rotate").await;
    assert_eq!(keys.json()["error"], "issuer_not_configured");
    // A token of no identity is 401, as before.
    assert_eq!(
        call(&gw, &"x".repeat(40), "GET", "/healthz").await.status,
        401
    );

    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_admin_requests_total",
            &[("role", "viewer"), ("result", "forbidden")]
        ),
        Some(2.0)
    );
    assert_eq!(
        m.value(
            "portcullis_admin_requests_total",
            &[("role", "none"), ("result", "unauthorized")]
        ),
        Some(1.0)
    );

    // The audit trail: the 2 refused viewer changes, the operator's 5 attempts and the
    // admin's 1; no read, and no token anywhere.
    let lines = audit_lines(&pki);
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let first = &lines[0];
    assert_eq!(first["identity"], "prometheus");
    assert_eq!(first["role"], "viewer");
    assert_eq!(first["action"], "reload");
    assert_eq!(first["result"], "forbidden_for_role");
    assert_eq!(first["status"], 403);
    assert_eq!(
        first["request_id"].as_str(),
        refused.header("x-request-id").as_deref()
    );
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let reload = &lines[2];
    assert_eq!(
        (&reload["identity"], &reload["action"], &reload["result"]),
        (&"ops".into(), &"reload".into(), &"ok".into())
    );
    assert_eq!(lines[1]["target"], "L-1");
    assert_eq!(lines[1]["action"], "license.revoke");
    assert_eq!(lines[6]["action"], "client.disable");
    assert_eq!(lines[6]["target"], "sync");
    let text = std::fs::read_to_string(pki.path("audit.log")).unwrap();
    for t in [VIEWER, OPERATOR, ADMIN] {
        assert!(!text.contains(t), "a token in the audit trail");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(pki.path("audit.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the audit trail is private to the gateway's user"
    );
}

async fn tls_call(
    pki: &Pki,
    gw: &Gateway,
    who: &Identity,
    method: &str,
    path: &str,
) -> Result<TestResponse, String> {
    let tls = TlsClient::new(pki)
        .identity(who)
        .connect(gw.admin_addr(), "localhost")
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut h1 = H1::handshake(tls).await?;
    h1.call(
        request(method, path)
            .header("host", "localhost")
            .body(empty())
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_identities_by_pin_or_subject_over_mutual_tls() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let laptop = pki.new_client("ops-laptop");
    let ci = pki.new_client("ci-runner");
    let stranger = pki.new_client("stranger");
    let pin = portcullis::identity::ClientIdentity::from_der(laptop.cert())
        .unwrap()
        .spki_pin();
    let toml = format!(
        "{}{}{}[admin]\nbind = \"127.0.0.1:0\"\nclient_ca = \"ca.pem\"\naudit_log = \"audit.log\"\n\
         [[admin.certificates]]\nchain = \"server.pem\"\nkey = \"server.key\"\n\
         [[admin.identities]]\nname = \"laptop\"\nrole = \"admin\"\npins = [\"{pin}\"]\n\
         [[admin.identities]]\nname = \"ci\"\nrole = \"viewer\"\nsubject = \"cn=ci-runner\"\n",
        server("watch_config = false"),
        listener("public", ""),
        route("all", "/", &[&up.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let ci_reads = tls_call(&pki, &gw, &ci, "GET", "/metrics").await.unwrap();
    assert_eq!(ci_reads.status, 200);
    let ci_reload = tls_call(&pki, &gw, &ci, "POST", "/reload").await.unwrap();
    assert_eq!(ci_reload.status, 403, "{}", ci_reload.text());
    assert_eq!(ci_reload.json()["error"], "forbidden_for_role");
    let laptop_reload = tls_call(&pki, &gw, &laptop, "POST", "/reload")
        .await
        .unwrap();
    assert_eq!(laptop_reload.status, 200, "{}", laptop_reload.text());
    // A client of the CA that no identity names is not an admin.
    let s = tls_call(&pki, &gw, &stranger, "GET", "/healthz")
        .await
        .unwrap();
    assert_eq!(s.status, 401);
    // A client of another CA does not get past the handshake.
    assert!(
        tls_call(&pki, &gw, &pki.foreign_client, "GET", "/healthz")
            .await
            .is_err()
    );

    let lines = audit_lines(&pki);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(
        (&lines[0]["identity"], &lines[0]["result"]),
        (&"ci".into(), &"forbidden_for_role".into())
    );
    assert_eq!(
        (
            &lines[1]["identity"],
            &lines[1]["role"],
            &lines[1]["result"]
        ),
        (&"laptop".into(), &"admin".into(), &"ok".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_reach_the_log_without_a_token() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}{}[admin]\nbind = \"127.0.0.1:0\"\n{}",
        server("watch_config = false"),
        listener_at("public", "127.0.0.1:0", "", &[("server.pem", "server.key")]),
        route("all", "/", &[&up.url()], ""),
        token_identities(&pki)
    );
    let config = write_config(pki.dir(), &toml);
    let mut proc = ops::Proc::spawn(&config, "json");
    let admin = proc.admin_addr().await;
    let r = call_at(admin, OPERATOR, "POST", "/reload").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let line = proc
        .wait_for_line("the audit line", |l| l.message == "admin change")
        .await;
    assert_eq!(line.str("identity"), Some("ops"));
    assert_eq!(line.str("role"), Some("operator"));
    assert_eq!(line.str("action"), Some("reload"));
    assert_eq!(line.str("result"), Some("ok"));
    assert_eq!(line.str("request_id"), r.header("x-request-id").as_deref());
    let logs = proc.logs();
    for t in [VIEWER, OPERATOR, ADMIN] {
        assert!(!logs.contains(t), "a token in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_identity_in_contrib_prometheus_yml_scrapes_and_changes_nothing() {
    let yml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/prometheus.yml"
    ))
    .unwrap();
    // The identity the file tells operators to add, uncommented.
    let identity: String = yml
        .lines()
        .skip_while(|l| !l.contains("[[admin.identities]]"))
        .take_while(|l| l.starts_with("#   "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    assert!(identity.contains("role = \"viewer\""), "{identity}");
    let pki = Pki::generate();
    pki.write("prometheus.token", &format!("{VIEWER}\n"));
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}{}[admin]\nbind = \"127.0.0.1:0\"\n{identity}",
        server("watch_config = false"),
        listener("public", ""),
        route("all", "/", &[&up.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let scrape = call(&gw, VIEWER, "GET", "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.text().contains("portcullis_admin_requests_total"));
    assert_eq!(call(&gw, VIEWER, "POST", "/reload").await.status, 403);
    // Without the token, nothing: the identity replaced the open loopback default.
    let anon = ops::admin_call(gw.admin_addr(), "GET", "/metrics", &[], empty()).await;
    assert_eq!(anon.status, 401);
}
