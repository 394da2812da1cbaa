//! The operator console at `/ui`, in a real headless Chromium driven through chromedriver:
//! it is served from the binary with a strict Content-Security-Policy and the viewer role
//! like every admin path (401 without credentials, the browser's own sign-in for a token);
//! it shows the routes, marks an upstream target down once its health checks fail, drops a
//! license revoked through the admin API from the active ones, and keeps updating, all from
//! the admin JSON endpoints; it shows each license's usage from `/usage` (and "—" for a
//! license with no traffic, or a gateway without the endpoint); a viewer sees it and its reload or revoke gets the API's 403; the page logs no
//! error and breaks no policy. Screenshots go to `target/console-screenshots/`.
//!
//! Measured, printed with `--nocapture`, never asserted (shared machines make timed asserts
//! flake): the page's load from a cold gateway and browser (Navigation Timing), and the
//! gateway's CPU with the console polling (`console_polling_cpu`, ignored: it runs 2 min).

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use portcullis::license::keys::keygen;
use portcullis::license::{Payload, SigningKey};
use serde_json::Value;
use support::webdriver::{Driver, Session, browser_or_skip};
use support::*;

const VIEWER: &str = "viewer-token-0123456789abcdef0123456789";
const OPERATOR: &str = "operator-token-0123456789abcdef012345678";
const ADMIN: &str = "admin-token-0123456789abcdef0123456789ab";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Installed before the page's own scripts: every policy violation is kept for the test.
const CSP_LISTENER: &str = "window.__violations = [];\
     document.addEventListener('securitypolicyviolation', e => \
       window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));";

/// Admin identities of each role (token files), an audit log, licenses with a trusted key,
/// listener "public", upstream "app" over `targets` checked every 200 ms, and two routes.
fn config(pki: &Pki, targets: &[String]) -> String {
    keygen(pki.dir(), "k1").unwrap();
    pki.write("viewer.token", &format!("{VIEWER}\n"));
    pki.write("operator.token", &format!("{OPERATOR}\n"));
    pki.write("admin.token", &format!("{ADMIN}\n"));
    let targets: Vec<String> = targets.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\naudit_log = \"audit.log\"\n\
         [[admin.identities]]\nname = \"grafana\"\nrole = \"viewer\"\ntoken_file = \"viewer.token\"\n\
         [[admin.identities]]\nname = \"ops\"\nrole = \"operator\"\ntoken_file = \"operator.token\"\n\
         [[admin.identities]]\nname = \"root\"\nrole = \"admin\"\ntoken_file = \"admin.token\"\n\n\
         [licenses]\ntrusted_keys = [\"k1.pub\"]\nstore = \"licenses.redb\"\ngrace = \"72h\"\n\n{}\
         [[upstreams]]\nname = \"app\"\ntargets = [{}]\n\
         health_check = {{ path = \"/healthz\", interval = \"200ms\", timeout = \"1s\", \
         healthy_threshold = 2, unhealthy_threshold = 2, expect_status = [200] }}\n\n\
         [[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\nupstream = \"app\"\n\n\
         [[routes]]\nname = \"licensed\"\npath_prefix = \"/licensed\"\nupstream = \"app\"\nlicense = \"required\"\n\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        server("watch_config = false"),
        listener(
            "public",
            "client_auth = \"optional\"\nclient_ca = \"ca.pem\""
        ),
        targets.join(", "),
    )
}

/// License `id` for a machine of `pki` (returned with it), valid for `days` more days.
fn license(pki: &Pki, id: &str, days: u64) -> (Payload, support::pki::Identity) {
    let machine = pki.new_client(&format!("machine-{id}"));
    let mut p = support::license::pin_license(id, &machine);
    p.customer = format!("Customer {id}");
    p.expires_at = p.not_before + 3600 + days * 86400;
    (p, machine)
}

async fn call(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: BoxBody,
) -> TestResponse {
    let auth = format!("Bearer {token}");
    ops::admin_call(addr, method, path, &[("authorization", &auth)], body).await
}

/// The gateway binary with three licenses activated (one expiring in 3 days) and a few
/// requests served on both routes.
struct Lab {
    /// Holds the gateway's folder (certificates, config, stores) until the test ends.
    _pki: Pki,
    proc: ops::Proc,
    admin: SocketAddr,
    up_a: Faulty,
    up_b: Faulty,
}

impl Lab {
    async fn start() -> Lab {
        let pki = Pki::generate();
        let up_a = Faulty::start("a").await;
        let up_b = Faulty::start("b").await;
        let path = write_config(pki.dir(), &config(&pki, &[up_a.url(), up_b.url()]));
        let key = SigningKey::load(&pki.path("k1.key")).unwrap();
        let mut proc = ops::Proc::spawn(&path, "json");
        let admin = proc.admin_addr().await;
        let public = proc.listener_addr("public").await;
        let mut machines = Vec::new();
        for (id, days) in [("L-1", 30), ("L-2", 30), ("L-3", 3)] {
            let (payload, machine) = license(&pki, id, days);
            let text = key.issue(&payload).unwrap();
            let r = call(admin, OPERATOR, "POST", "/licenses", full(text)).await;
            assert_eq!(r.status, 201, "activate {id}: {}", r.text());
            machines.push(machine);
        }
        // L-1's machine calls its licensed route three times: its usage, from /usage.
        let tls = tls_as(
            &TlsClient::new(&pki).identity(&machines[0]),
            public,
            "localhost",
        )
        .await;
        let mut l1 = H1::handshake(tls).await.unwrap();
        for i in 0..3 {
            let r = l1.call(get(&format!("/licensed/{i}"))).await.unwrap();
            assert_eq!(r.status, 200, "GET /licensed/{i} as L-1: {}", r.text());
        }
        drop(l1);
        for path in ["/orders/1", "/orders/2", "/", "/x"] {
            let r = send_one(&pki, public, get(path)).await;
            assert_eq!(r.status, 200, "GET {path}");
        }
        // A name the listener's certificate does not carry: one refusal to show.
        let elsewhere = http::Request::builder()
            .uri("/")
            .header("host", "elsewhere.example")
            .body(empty())
            .unwrap();
        assert_eq!(send_one(&pki, public, elsewhere).await.status, 421);
        Lab {
            _pki: pki,
            proc,
            admin,
            up_a,
            up_b,
        }
    }

    /// The console's URL with `token` as the Basic password the browser would prompt for.
    fn console_url(&self, token: &str) -> String {
        format!("http://console:{token}@{}/ui", self.admin)
    }
}

/// A browser session with the violation listener installed, on the console of `lab` as
/// the identity of `token`, after its first update.
async fn open_console(
    driver: &Driver,
    browser: &std::path::Path,
    lab: &Lab,
    token: &str,
) -> Session {
    let s = driver.session(browser).await;
    s.before_each_page(CSP_LISTENER).await;
    s.goto(&lab.console_url(token)).await;
    s.wait_for(
        "its first update",
        "return Number(document.body.dataset.polls || 0) >= 1",
    )
    .await;
    s
}

/// Every log entry that is an error, but the network errors `expected` names (an endpoint
/// the console asks for that answers 404 or 403 by design), and every policy violation.
async fn problems(s: &Session, expected: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = s
        .log()
        .await
        .into_iter()
        .filter(|(level, _, _)| level == "SEVERE" || level == "WARNING")
        .filter(|(_, source, msg)| {
            !(source == "network" && expected.iter().any(|e| msg.contains(e)))
        })
        .map(|(level, source, msg)| format!("{level} {source}: {msg}"))
        .collect();
    let violations = s.eval("return window.__violations || []").await;
    for v in violations.as_array().into_iter().flatten() {
        out.push(format!("CSP violation: {v}"));
    }
    out
}

/// `"<name> <ms>"` of a Navigation Timing field, relative to the navigation's start.
fn timing(nav: &Value, field: &str) -> String {
    format!("{field} {:.1} ms", nav[field].as_f64().unwrap_or(f64::NAN))
}

/// Print the page's Navigation Timing, its two assets' and when the first figures showed.
async fn print_load_timing(s: &Session, what: &str) {
    let v = s
        .eval(
            "const n = performance.getEntriesByType('navigation')[0]; \
             const m = performance.getEntriesByName('portcullis:first-data')[0]; \
             return {nav: n.toJSON(), first: m ? m.startTime : null, \
               assets: performance.getEntriesByType('resource') \
                 .map(e => e.name.split('/').pop() + ' ' + e.startTime.toFixed(1) + '-' + e.responseEnd.toFixed(1) + ' ms')}",
        )
        .await;
    println!(
        "console load, {what}, loopback: {}, {}, {}, {}; assets {}; first figures shown at {:.1} ms",
        timing(&v["nav"], "responseStart"),
        timing(&v["nav"], "responseEnd"),
        timing(&v["nav"], "domContentLoadedEventEnd"),
        timing(&v["nav"], "loadEventEnd"),
        v["assets"],
        v["first"].as_f64().unwrap_or(f64::NAN),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_the_binary_with_its_policy_and_needs_an_identity() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let gw = Gateway::start(pki.dir(), &config(&pki, &[up.url()])).await;
    let admin = gw.admin_addr();

    // No credentials: 401, and a Basic challenge so a browser shows its sign-in prompt.
    let anonymous = ops::admin_call(admin, "GET", "/ui", &[], empty()).await;
    assert_eq!(anonymous.status, 401);
    let challenges: Vec<_> = anonymous
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic ")),
        "{challenges:?}"
    );
    assert_eq!(
        ops::admin_call(admin, "GET", "/ui/console.js", &[], empty())
            .await
            .status,
        401
    );
    // A wrong token as the Basic password is 401 too.
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode("console:not-a-token-of-anyone-here-at-all")
    );
    assert_eq!(
        ops::admin_call(admin, "GET", "/ui", &[("authorization", &wrong)], empty())
            .await
            .status,
        401
    );

    // A viewer's token, as Bearer or as the Basic password, gets each asset byte for byte
    // as compiled in, with its policy and headers.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{VIEWER}"))
    );
    let assets = [
        (
            "/ui",
            include_str!("../src/server/admin/console/index.html"),
            "text/html",
        ),
        (
            "/ui/console.js",
            include_str!("../src/server/admin/console/console.js"),
            "text/javascript",
        ),
        (
            "/ui/console.css",
            include_str!("../src/server/admin/console/console.css"),
            "text/css",
        ),
    ];
    for (path, source, content_type) in assets {
        let r = ops::admin_call(admin, "GET", path, &[("authorization", &basic)], empty()).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        assert_eq!(r.text(), source, "{path} is the compiled-in asset");
        assert_eq!(r.header("content-security-policy").as_deref(), Some(CSP));
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
        assert!(r.header("content-type").unwrap().starts_with(content_type));
    }
    let bearer = call(admin, VIEWER, "GET", "/ui", empty()).await;
    assert_eq!(bearer.status, 200);
    assert_eq!(
        call(admin, VIEWER, "GET", "/ui/nothing.js", empty())
            .await
            .status,
        404
    );
    assert_eq!(call(admin, ADMIN, "POST", "/ui", empty()).await.status, 405);

    // /status: what the console shows, for scripts too; it names the caller, never a token.
    let status = call(admin, VIEWER, "GET", "/status", empty()).await;
    assert_eq!(status.status, 200);
    let s = status.json();
    assert_eq!(s["caller"]["name"], "grafana");
    assert_eq!(s["caller"]["role"], "viewer");
    assert_eq!(s["listeners"][0]["name"], "public");
    assert!(s["listeners"][0]["certificate_days_left"].as_i64().unwrap() > 0);
    let mut routes: Vec<&str> = s["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    routes.sort_unstable();
    assert_eq!(routes, ["api", "licensed", "orders"]);
    assert!(!status.text().contains(VIEWER));

    // A reload the file refuses is among the last reloads with its count of errors (their
    // text names files: it stays in the log and in the answer to POST /reload).
    std::fs::write(&gw.config, "[server\n").unwrap();
    let refused = call(admin, OPERATOR, "POST", "/reload", empty()).await;
    assert_eq!(refused.status, 400);
    let s = call(admin, VIEWER, "GET", "/status", empty()).await.json();
    assert_eq!(s["reloads"][0]["result"], "failed");
    assert!(s["reloads"][0]["errors"].as_u64().unwrap() >= 1);
    assert_eq!(s["audit"][0]["action"], "reload");
    assert_eq!(s["audit"][0]["result"], "reload_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_routes_a_target_going_down_and_a_revoked_license_leaving_the_active_ones()
 {
    let Some((driver_bin, browser)) = browser_or_skip("console: live console") else {
        return;
    };
    let mut lab = Lab::start().await;
    let driver = Driver::start(&driver_bin).await;
    let s = open_console(&driver, &browser, &lab, ADMIN).await;

    print_load_timing(&s, "cold (fresh gateway and browser)").await;
    // The same page again in the same browser: what an operator sees on a reload.
    s.goto(&lab.console_url(ADMIN)).await;
    s.wait_for(
        "its first update after a reload",
        "return Number(document.body.dataset.polls || 0) >= 1",
    )
    .await;
    print_load_timing(&s, "warm (same browser, page reloaded)").await;

    // The routes, with what they served.
    s.wait_for(
        "route orders with its 2 requests",
        "const r = document.querySelector('#routes tr[data-route=\"orders\"]'); \
         return !!r && r.children[2].textContent === '2'",
    )
    .await;
    s.wait_for(
        "both targets up",
        "return document.querySelectorAll('#upstreams tr[data-health=\"up\"]').length === 2",
    )
    .await;
    s.wait_for(
        "three active licenses, one expiring",
        "return document.getElementById('license-counts').textContent.startsWith('active 3 · expiring within 7 days 1')",
    )
    .await;
    s.screenshot("console-overview").await;

    // Stop target b: after two failed checks the console marks it down, a stays up.
    lab.up_b.stop().await;
    let b_addr = lab.up_b.addr().to_string();
    s.wait_for(
        "target b down",
        &format!(
            "const r = document.querySelector('#upstreams tr[data-target=\"{b_addr}\"]'); \
             return !!r && r.dataset.health === 'down'"
        ),
    )
    .await;
    let a_addr = lab.up_a.addr().to_string();
    let a_health = s
        .eval(&format!(
            "return document.querySelector('#upstreams tr[data-target=\"{a_addr}\"]').dataset.health"
        ))
        .await;
    assert_eq!(a_health, "up");
    s.screenshot("console-target-down").await;

    // Revoke L-2 through the admin API (not the console): it leaves the active ones.
    let r = call(lab.admin, OPERATOR, "DELETE", "/licenses/L-2", empty()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    s.wait_for(
        "L-2 revoked and two licenses active",
        "const r = document.querySelector('#licenses tr[data-license=\"L-2\"]'); \
         return !!r && r.dataset.state === 'revoked' && \
           document.getElementById('license-counts').textContent.startsWith('active 2 ')",
    )
    .await;
    // The revocation is in the console's admin changes, from /status.
    s.wait_for(
        "the revocation among the admin changes",
        "return [...document.querySelectorAll('#audit tr')].some(r => r.textContent.includes('license.revokeL-2'))",
    )
    .await;
    // A reload through the API shows among the last reloads.
    let r = call(lab.admin, OPERATOR, "POST", "/reload", empty()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    s.wait_for(
        "the reload",
        "return !!document.querySelector('#reloads tbody td.ok')",
    )
    .await;
    // A license with no traffic has no usage figures: "—", not zeros.
    let usage = s
        .eval("return document.querySelector('#licenses tr[data-license=\"L-2\"]').children[5].textContent")
        .await;
    assert_eq!(usage, "—");
    let shot = s.screenshot("console").await;
    println!("screenshots: {}", shot.parent().unwrap().display());

    let found = problems(&s, &["/usage?by=license", "/clients"]).await;
    assert!(found.is_empty(), "the console logged problems: {found:#?}");
    s.close().await;
    assert!(lab.proc.try_wait().is_none(), "{}", lab.proc.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_the_console_and_its_reload_and_revoke_get_the_apis_403() {
    let Some((driver_bin, browser)) = browser_or_skip("console: viewer") else {
        return;
    };
    let lab = Lab::start().await;
    let driver = Driver::start(&driver_bin).await;
    let s = open_console(&driver, &browser, &lab, VIEWER).await;
    s.wait_for(
        "the viewer's name and role",
        "return document.getElementById('who').textContent === 'signed in as grafana (viewer)'",
    )
    .await;

    s.eval("document.getElementById('reload').click(); return true")
        .await;
    s.wait_for(
        "the reload's 403",
        "return document.getElementById('action').textContent.startsWith('reload: 403 forbidden_for_role')",
    )
    .await;
    // Revoke takes two clicks.
    let revoke = "document.querySelector('button[data-revoke=\"L-1\"]').click(); return true";
    s.eval(revoke).await;
    s.eval(revoke).await;
    s.wait_for(
        "the revocation's 403",
        "return document.getElementById('action').textContent.startsWith('revoke L-1: 403 forbidden_for_role')",
    )
    .await;
    s.screenshot("console-viewer-403").await;

    // Nothing changed; both refusals are in the audit trail under the viewer's name.
    let l1 = call(lab.admin, VIEWER, "GET", "/licenses/L-1", empty()).await;
    assert_eq!(l1.json()["state"], "active");
    let status = call(lab.admin, VIEWER, "GET", "/status", empty())
        .await
        .json();
    let refused: Vec<(&str, &str, &str)> = status["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["identity"] == "grafana")
        .map(|a| {
            (
                a["action"].as_str().unwrap(),
                a["result"].as_str().unwrap(),
                a["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("license.revoke", "forbidden_for_role", "viewer"),
            ("reload", "forbidden_for_role", "viewer")
        ]
    );
    assert!(
        status["reloads"].as_array().unwrap().is_empty(),
        "no reload happened"
    );

    let found = problems(
        &s,
        &["/usage?by=license", "/clients", "/reload", "/licenses/L-1"],
    )
    .await;
    assert!(found.is_empty(), "the console logged problems: {found:#?}");
    s.close().await;
    drop(lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_each_licenses_usage_from_the_gateways_usage_endpoint() {
    let Some((driver_bin, browser)) = browser_or_skip("console: usage") else {
        return;
    };
    let lab = Lab::start().await;
    let driver = Driver::start(&driver_bin).await;
    let s = driver.session(&browser).await;
    s.goto(&lab.console_url(VIEWER)).await;
    // The three requests L-1's machine made when the lab started, from the gateway's own
    // GET /usage?by=license.
    s.wait_for(
        "L-1's requests per minute, hour and day, and its refusals of the day",
        "const r = document.querySelector('#licenses tr[data-license=\"L-1\"]'); \
         return !!r && r.children[5].textContent === '3 / 3 / 3' && r.children[6].textContent === '0'",
    )
    .await;
    // A license the answer does not list has no figures, not zeros.
    let l2 = s
        .eval("return document.querySelector('#licenses tr[data-license=\"L-2\"]').children[5].textContent")
        .await;
    assert_eq!(l2, "—");
    s.close().await;
}

/// The gateway's CPU time so far, in nanoseconds: the sum of its threads' time on a CPU
/// from `/proc/<pid>/task/*/schedstat` (`/proc/<pid>/stat` counts in 10 ms ticks, too coarse
/// for a console's few requests).
fn cpu_time(pid: u32) -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            ns += text
                .split(' ')
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// Run with `cargo test --test console -- --ignored --nocapture console_polling_cpu`
/// (`CONSOLE_CPU_SECS` sets each phase's length, 60 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 2-minute measurement; prints the gateway's CPU with and without the console"]
async fn console_polling_cpu() {
    let Some((driver_bin, browser)) = browser_or_skip("console: polling cpu") else {
        return;
    };
    let secs: u64 = std::env::var("CONSOLE_CPU_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let phase = Duration::from_secs(secs);
    let lab = Lab::start().await;
    let pid = lab.proc.pid();

    let before = cpu_time(pid);
    tokio::time::sleep(phase).await;
    let idle = cpu_time(pid) - before;

    let driver = Driver::start(&driver_bin).await;
    let s = open_console(&driver, &browser, &lab, ADMIN).await;
    let polls_before = s.eval("return Number(document.body.dataset.polls)").await;
    let before = cpu_time(pid);
    tokio::time::sleep(phase).await;
    let polling = cpu_time(pid) - before;
    let polls_after = s.eval("return Number(document.body.dataset.polls)").await;
    let polls = polls_after.as_f64().unwrap_or(0.0) - polls_before.as_f64().unwrap_or(0.0);
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / phase.as_secs_f64();
    let cost = polling.saturating_sub(idle);
    println!(
        "gateway CPU over {secs} s: without the console {:.1} ms ({:.3} %), with the console polling \
         ({polls} updates of 5 requests each) {:.1} ms ({:.3} %); the console's cost {:.3} % of one core, \
         {:.2} ms per update",
        idle.as_secs_f64() * 1000.0,
        pct(idle),
        polling.as_secs_f64() * 1000.0,
        pct(polling),
        pct(cost),
        cost.as_secs_f64() * 1000.0 / polls.max(1.0),
    );
    s.close().await;
    drop(lab);
}
