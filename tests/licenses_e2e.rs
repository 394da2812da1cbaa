//! Proves machine licenses end to end, through the TLS listener and the admin API: licenses
//! issued with a key from `license keygen` and activated with `POST /licenses` admit exactly
//! the machines they bind (client certificate pin, address, or both) on `license = "required"`
//! routes, and everyone else gets a 403 with the telling reason (`license_missing`,
//! `license_binding_mismatch`, `license_revoked`, `license_expired`, `license_not_yet_valid`);
//! a revocation applies to the next request of an open keep-alive connection; expiry and the
//! grace period follow the gateway's clock (a `Warning` header and a metric during grace);
//! activations and revocations survive a restart; licenses of every trusted key grant and a
//! key removed by a reload stops granting; refused activations say why, with the right
//! status, and change nothing; `/metrics` counts the active licenses and is valid Prometheus
//! text; a quota a license carries is enforced across routes (429 `quota_exhausted`), shown
//! on `GET /licenses/{id}`, kept across a restart and renewed when the window turns.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::denial::Denial;
use portcullis::identity::ClientIdentity;
use portcullis::license::keys::keygen;
use portcullis::license::{LicenseDenial, Match, Payload, SigningKey};
use serde_json::{Value, json};
use support::*;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// The address every test client uses by default, and a second one on the same loopback.
const HERE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const ELSEWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// One listener asking for (optional) client certificates from the test CA.
const MTLS: &str = "client_auth = \"optional\"\nclient_ca = \"ca.pem\"";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn pin_of(id: &Identity) -> String {
    ClientIdentity::from_der(id.cert().as_ref())
        .expect("the test certificate parses")
        .spki_pin()
}

/// A licensing key pair written by `keygen` (what `portcullis license keygen` runs) as
/// `<name>.key` / `<name>.pub` in the PKI folder, loaded back from its file.
fn signing_key(pki: &Pki, name: &str) -> SigningKey {
    let files = keygen(pki.dir(), name).expect("keygen");
    let key = SigningKey::load(&files.private).expect("load the private key");
    assert_eq!(key.public_key().kid(), files.kid);
    key
}

/// License `id`, valid from an hour ago for 30 days, on every licensed route.
fn license(id: &str, binding: Match, pins: &[String], ips: &[&str]) -> Payload {
    let now = unix_now();
    Payload {
        id: id.to_owned(),
        kid: String::new(),
        customer: "Acme".to_owned(),
        machine_id: format!("machine-{id}"),
        binding,
        pins: pins.to_vec(),
        ips: ips.iter().map(|s| s.to_string()).collect(),
        routes: Vec::new(),
        scopes: Vec::new(),
        issued_at: now - HOUR,
        not_before: now - HOUR,
        expires_at: now + 30 * DAY,
        quota: None,
    }
}

fn pin_license(id: &str, machine: &Identity) -> Payload {
    license(id, Match::Pin, &[pin_of(machine)], &[])
}

fn issue(key: &SigningKey, p: &Payload) -> String {
    key.issue(p).expect("issue")
}

/// Admin, licenses with the given trusted keys and 72 h of grace, and three routes: `orders`
/// and `stock` need a license, `open` does not.
fn config(up: &Upstream, trusted: &[String]) -> String {
    let keys: Vec<String> = trusted.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [licenses]\ntrusted_keys = [{}]\nstore = \"licenses.redb\"\ngrace = \"72h\"\n\n{}{}{}{}",
        server("watch_config = false"),
        keys.join(", "),
        listener("public", MTLS),
        route("orders", "/orders", &[&up.url()], "license = \"required\""),
        route("stock", "/stock", &[&up.url()], "license = \"required\""),
        route("open", "/", &[&up.url()], ""),
    )
}

/// A gateway with licenses, its upstream, and the licensing keys it trusts at start.
struct Lab {
    pki: Pki,
    up: Upstream,
    /// `k1`, the first key.
    key: SigningKey,
    /// `k2`, ... when started with more than one key.
    more_keys: Vec<SigningKey>,
    trusted: Vec<String>,
    gw: Gateway,
    admin: Admin,
}

impl Lab {
    /// Trusting one key, `k1`.
    async fn start() -> Lab {
        Lab::start_with_keys(&["k1"]).await
    }

    /// Makes the keys `names` (files `<name>.key`, `<name>.pub`) and trusts them all.
    async fn start_with_keys(names: &[&str]) -> Lab {
        let pki = Pki::generate();
        let mut keys: Vec<SigningKey> = names.iter().map(|n| signing_key(&pki, n)).collect();
        let key = keys.remove(0);
        let trusted: Vec<String> = names.iter().map(|n| format!("{n}.pub")).collect();
        let up = Upstream::echo("licensed").await;
        let gw = Gateway::start(pki.dir(), &config(&up, &trusted)).await;
        let admin = Admin::new(gw.admin_addr());
        Lab {
            pki,
            up,
            key,
            more_keys: keys,
            trusted,
            gw,
            admin,
        }
    }

    /// Rewrite the config to trust `trusted` and reload it.
    async fn trust(&mut self, trusted: &[&str]) {
        self.trusted = trusted.iter().map(|t| t.to_string()).collect();
        write_config(self.pki.dir(), &config(&self.up, &self.trusted));
        let summary = self.gw.reload().await.expect("reload");
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    }

    /// Shut the gateway down, wait until it stopped, and start it again on the same config
    /// and license store.
    async fn restart(self) -> Lab {
        let Lab {
            pki,
            up,
            key,
            more_keys,
            trusted,
            gw,
            admin: _,
        } = self;
        let handle = gw.shutdown_handle();
        let running = gw.into_running();
        handle.trigger();
        tokio::time::timeout(Duration::from_secs(30), running.wait())
            .await
            .expect("the gateway did not stop within 30 s");
        let gw = Gateway::start(pki.dir(), &config(&up, &trusted)).await;
        let admin = Admin::new(gw.admin_addr());
        Lab {
            pki,
            up,
            key,
            more_keys,
            trusted,
            gw,
            admin,
        }
    }

    /// Move the gateway's clock forward.
    fn advance(&self, by: u64) {
        self.gw.shared().clock.advance(Duration::from_secs(by));
    }

    /// `POST /licenses` with the license text; asserts 201 and returns the summary.
    async fn activate(&self, text: &str) -> Value {
        let r = self.admin.post("/licenses", text.to_owned()).await;
        assert_eq!(r.status, 201, "activation refused: {}", r.text());
        r.json()
    }

    /// `GET /licenses`.
    async fn list(&self) -> Value {
        let r = self.admin.get("/licenses").await;
        assert_eq!(r.status, 200, "GET /licenses: {}", r.text());
        r.json()
    }

    /// The state `GET /licenses` lists for `id`.
    async fn state_of(&self, id: &str) -> String {
        let list = self.list().await;
        list["licenses"]
            .as_array()
            .expect("licenses array")
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed: {list}"))["state"]
            .as_str()
            .expect("state")
            .to_owned()
    }

    /// The ids `GET /licenses` lists, in order.
    async fn ids(&self) -> Vec<String> {
        self.list().await["licenses"]
            .as_array()
            .expect("licenses array")
            .iter()
            .map(|l| l["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// A TLS client presenting `who` (or no certificate).
    fn client(&self, who: Option<&Identity>) -> TlsClient {
        let c = TlsClient::new(&self.pki);
        match who {
            Some(id) => c.identity(id),
            None => c,
        }
    }

    /// A keep-alive connection from `from` presenting `who`.
    async fn connect(&self, who: Option<&Identity>, from: IpAddr) -> H1 {
        let tls = self
            .client(who)
            .connect_from(from, self.gw.addr(), "localhost")
            .await
            .unwrap_or_else(|e| panic!("TLS connect from {from}: {e}"));
        H1::handshake(tls).await.expect("HTTP/1.1 handshake")
    }

    /// `GET path` on a new connection from `from` presenting `who`.
    async fn get(&self, who: Option<&Identity>, from: IpAddr, path: &str) -> TestResponse {
        self.connect(who, from)
            .await
            .call(get(path))
            .await
            .unwrap_or_else(|e| panic!("GET {path} from {from}: {e}"))
    }

    async fn metrics(&self) -> support::prometheus::Exposition {
        self.admin.metrics().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licensed_route_admits_licensed_machines_and_refuses_others_with_license_missing() {
    let lab = Lab::start().await;
    let machine = &lab.pki.client;
    let stranger = lab.pki.new_client("stranger");
    let missing = Denial::License(LicenseDenial::Missing);

    // Nothing activated yet: the licensed route refuses even the future licensee, the
    // open route serves anyone.
    lab.get(Some(machine), HERE, "/orders/1")
        .await
        .assert_denied(403, "license_missing");
    lab.get(None, ELSEWHERE, "/catalog").await.echo();

    // A pin-bound license as the raw text body, an address-bound one as JSON.
    let pin_text = issue(&lab.key, &pin_license("pin-1", machine));
    let summary = lab.activate(&pin_text).await;
    assert_eq!(summary["id"], "pin-1");
    assert_eq!(summary["customer"], "Acme");
    assert_eq!(summary["machine_id"], "machine-pin-1");
    assert_eq!(summary["key_id"], lab.key.public_key().kid());
    assert_eq!(summary["state"], "active");
    let ip_text = issue(
        &lab.key,
        &license("ip-1", Match::Ip, &[], &["127.0.0.1/32"]),
    );
    let r = lab
        .admin
        .post("/licenses", json!({ "license": ip_text }).to_string())
        .await;
    assert_eq!(r.status, 201, "JSON activation: {}", r.text());
    assert_eq!(r.json()["state"], "active");
    assert_eq!(lab.ids().await, ["ip-1", "pin-1"]);

    // Admitted: the pinned certificate from any address, anyone from the licensed address.
    for (who, from, path) in [
        (Some(machine), HERE, "/orders/1"),
        (Some(machine), ELSEWHERE, "/orders/2"),
        (Some(machine), ELSEWHERE, "/stock"),
        (None, HERE, "/orders/3"),
        (Some(&stranger), HERE, "/stock/4"),
    ] {
        let echo = lab.get(who, from, path).await.echo();
        assert_eq!(echo.uri, path, "{path} from {from}");
    }

    // Refused: another certificate, or none, from an unlicensed address; never forwarded.
    let before = (lab.up.request_count(), lab.gw.denial_count(missing));
    for (who, path) in [(Some(&stranger), "/orders/5"), (None, "/stock/6")] {
        lab.get(who, ELSEWHERE, path)
            .await
            .assert_denied(403, "license_missing");
    }
    assert_eq!(
        lab.up.request_count(),
        before.0,
        "a refused request reached the upstream"
    );
    assert_eq!(lab.gw.denial_count(missing), before.1 + 2);
    // The same strangers are served where no license is required.
    lab.get(Some(&stranger), ELSEWHERE, "/catalog").await.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_that_names_the_machine_but_not_this_request_is_a_binding_mismatch() {
    let lab = Lab::start().await;
    let machine = &lab.pki.client;
    let machine2 = lab.pki.new_client("machine-2");
    let stranger = lab.pki.new_client("stranger");

    // pin_and_ip: this certificate, from this address only.
    lab.activate(&issue(
        &lab.key,
        &license(
            "both-1",
            Match::PinAndIp,
            &[pin_of(machine)],
            &["127.0.0.1/32"],
        ),
    ))
    .await;
    // Only the "stock" route.
    let mut stock_only = pin_license("stock-only", &machine2);
    stock_only.routes = vec!["stock".to_owned()];
    lab.activate(&issue(&lab.key, &stock_only)).await;

    lab.get(Some(machine), HERE, "/orders").await.echo();
    for (what, who, from, path) in [
        (
            "right pin, other address",
            Some(machine),
            ELSEWHERE,
            "/orders",
        ),
        ("right address, other pin", Some(&stranger), HERE, "/orders"),
        ("right address, no certificate", None, HERE, "/orders"),
        (
            "a route the license does not list",
            Some(&machine2),
            ELSEWHERE,
            "/orders",
        ),
    ] {
        let r = lab.get(who, from, path).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        r.assert_denied(403, "license_binding_mismatch");
    }
    lab.get(Some(&machine2), ELSEWHERE, "/stock/1").await.echo();
    // Named by no license at all: missing, not mismatch.
    lab.get(Some(&stranger), ELSEWHERE, "/orders")
        .await
        .assert_denied(403, "license_missing");
    assert_eq!(
        lab.gw
            .denial_count(Denial::License(LicenseDenial::BindingMismatch)),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_refuses_the_next_request_on_the_same_keep_alive_connection() {
    let lab = Lab::start().await;
    let machine = &lab.pki.client;
    lab.activate(&issue(&lab.key, &pin_license("rev-1", machine)))
        .await;

    let mut conn = lab.connect(Some(machine), HERE).await;
    let first = conn.call(get("/orders/1")).await.expect("request 1");
    assert_eq!(first.echo().uri, "/orders/1");

    let r = lab.admin.delete("/licenses/rev-1").await;
    assert_eq!(r.status, 200, "DELETE: {}", r.text());
    assert_eq!(r.json()["state"], "revoked");

    assert!(!conn.is_closed(), "the connection closed after request 1");
    let second = conn.call(get("/orders/2")).await.expect("request 2");
    second.assert_denied(403, "license_revoked");
    // The connection itself stays usable: a route without a license still serves it.
    let third = conn.call(get("/catalog")).await.expect("request 3");
    third.echo();
    assert_eq!(
        lab.up
            .requests()
            .iter()
            .filter(|r| r.uri.starts_with("/orders"))
            .count(),
        1,
        "the request after the revocation reached the upstream"
    );

    // Revoking again changes nothing; an unknown id is a 404.
    let again = lab.admin.delete("/licenses/rev-1").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["state"], "revoked");
    let unknown = lab.admin.delete("/licenses/nope").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(unknown.json()["error"], "license_not_found");
    assert_eq!(lab.state_of("rev-1").await, "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_license_grants_with_a_warning_during_grace_and_is_refused_after() {
    let lab = Lab::start().await;
    let machine = &lab.pki.client;
    let mut p = pin_license("short-1", machine);
    p.expires_at = unix_now() + HOUR;
    lab.activate(&issue(&lab.key, &p)).await;

    let valid = lab.get(Some(machine), HERE, "/orders").await;
    valid.echo();
    assert_eq!(valid.header("warning"), None, "a valid license warns");
    let m = lab.metrics().await;
    assert_eq!(m.scalar("portcullis_licenses_active"), 1.0);
    assert_eq!(m.scalar("portcullis_licenses_expiring_7d"), 1.0);
    assert_eq!(m.scalar("portcullis_licenses_in_grace"), 0.0);
    assert_eq!(m.scalar("portcullis_license_grace_requests_total"), 0.0);

    // An hour past expires_at: within the 72 h grace.
    lab.advance(2 * HOUR);
    let graced = lab.get(Some(machine), HERE, "/orders").await;
    graced.echo();
    let warning = graced
        .header("warning")
        .expect("a Warning header during grace");
    assert!(warning.starts_with("299 "), "{warning}");
    assert!(warning.contains("grace"), "{warning}");
    assert_eq!(lab.state_of("short-1").await, "in_grace");
    let m = lab.metrics().await;
    assert_eq!(m.scalar("portcullis_license_grace_requests_total"), 1.0);
    assert_eq!(m.scalar("portcullis_licenses_in_grace"), 1.0);
    assert_eq!(m.scalar("portcullis_licenses_active"), 0.0);

    // 73 h past expires_at: the grace is over.
    lab.advance(72 * HOUR);
    let expired = lab.get(Some(machine), HERE, "/orders").await;
    expired.assert_denied(403, "license_expired");
    assert_eq!(expired.header("warning"), None);
    assert_eq!(lab.state_of("short-1").await, "expired");
    let m = lab.metrics().await;
    assert_eq!(m.scalar("portcullis_license_grace_requests_total"), 1.0);
    assert_eq!(m.scalar("portcullis_licenses_in_grace"), 0.0);
    assert_eq!(m.scalar("portcullis_licenses_active"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_that_starts_later_is_not_yet_valid_until_it_starts() {
    let lab = Lab::start().await;
    let machine = &lab.pki.client;
    let mut p = pin_license("later-1", machine);
    p.not_before = unix_now() + DAY;
    let summary = lab.activate(&issue(&lab.key, &p)).await;
    assert_eq!(summary["state"], "not_yet_valid");

    lab.get(Some(machine), HERE, "/orders")
        .await
        .assert_denied(403, "license_not_yet_valid");
    assert_eq!(
        lab.metrics().await.scalar("portcullis_licenses_active"),
        0.0
    );

    lab.advance(DAY + 60);
    lab.get(Some(machine), HERE, "/orders").await.echo();
    assert_eq!(lab.state_of("later-1").await, "active");
    assert_eq!(
        lab.metrics().await.scalar("portcullis_licenses_active"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_and_revocations_survive_a_restart() {
    let lab = Lab::start().await;
    let machine = lab.pki.client.clone();
    let machine2 = lab.pki.new_client("machine-2");
    lab.activate(&issue(&lab.key, &pin_license("keep-1", &machine)))
        .await;
    let revoked_text = issue(&lab.key, &pin_license("gone-1", &machine2));
    lab.activate(&revoked_text).await;
    assert_eq!(lab.admin.delete("/licenses/gone-1").await.status, 200);
    lab.get(Some(&machine), HERE, "/orders").await.echo();
    lab.get(Some(&machine2), HERE, "/orders")
        .await
        .assert_denied(403, "license_revoked");
    let listed = lab.list().await;

    let lab = lab.restart().await;

    assert_eq!(
        lab.list().await,
        listed,
        "the listing changed across the restart"
    );
    lab.get(Some(&machine), HERE, "/orders").await.echo();
    lab.get(Some(&machine2), HERE, "/orders")
        .await
        .assert_denied(403, "license_revoked");
    // A revoked id cannot be activated again, not even after a restart.
    let r = lab.admin.post("/licenses", revoked_text).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"], "license_duplicate");
    assert_eq!(lab.state_of("gone-1").await, "revoked");
}

/// `Running::wait` says it returns once "the listeners closed and the in-flight requests
/// finished": a supervisor restarting the gateway in-process must then be able to bind and
/// open the license store (redb, one opener per file) again. Ten quick cycles, because the
/// gateway's tasks race `wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_wait_returns_the_listeners_are_closed_and_the_license_store_is_released() {
    for cycle in 1..=10 {
        let lab = Lab::start().await;
        lab.get(Some(&lab.pki.client), HERE, "/orders")
            .await
            .assert_denied(403, "license_missing");
        lab.list().await;
        let Lab { pki, gw, .. } = lab;
        let addrs = [("public", gw.addr()), ("admin", gw.admin_addr())];
        let handle = gw.shutdown_handle();
        let running = gw.into_running();
        handle.trigger();
        tokio::time::timeout(Duration::from_secs(30), running.wait())
            .await
            .expect("the gateway did not stop within 30 s");

        let mut still_open = Vec::new();
        for (name, addr) in addrs {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                still_open.push(name);
            }
        }
        let store = portcullis::state::licenses::EmbeddedLicenses::open(&pki.path("licenses.redb"));
        assert!(
            still_open.is_empty() && store.is_ok(),
            "cycle {cycle}: wait() returned, but listeners still accepting: {still_open:?}; \
             reopening the license store: {:?}",
            store.err().map(|e| e.to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_of_every_trusted_key_grant_and_a_key_removed_by_reload_stops_granting() {
    let mut lab = Lab::start_with_keys(&["k1", "k2"]).await;
    let key2 = lab.more_keys.remove(0);
    let k1_kid = lab.key.public_key().kid().to_owned();
    let k2_kid = key2.public_key().kid().to_owned();
    assert_ne!(k1_kid, k2_kid);
    let machine = lab.pki.client.clone();
    let machine2 = lab.pki.new_client("machine-2");

    let s1 = lab
        .activate(&issue(&lab.key, &pin_license("by-k1", &machine)))
        .await;
    let s2 = lab
        .activate(&issue(&key2, &pin_license("by-k2", &machine2)))
        .await;
    assert_eq!(s1["key_id"], k1_kid);
    assert_eq!(s2["key_id"], k2_kid);

    // One keep-alive connection of machine across both reloads.
    let mut conn = lab.connect(Some(&machine), HERE).await;
    conn.call(get("/orders/1")).await.expect("request").echo();
    lab.get(Some(&machine2), HERE, "/orders").await.echo();
    assert_eq!(
        lab.metrics().await.scalar("portcullis_licenses_active"),
        2.0
    );

    // k1 retired: its license stays stored (listed as untrusted) but no longer grants.
    lab.trust(&["k2.pub"]).await;
    conn.call(get("/orders/2"))
        .await
        .expect("request after the reload")
        .assert_denied(403, "license_missing");
    lab.get(Some(&machine2), HERE, "/orders").await.echo();
    assert_eq!(lab.state_of("by-k1").await, "untrusted");
    assert_eq!(lab.state_of("by-k2").await, "active");
    assert_eq!(
        lab.metrics().await.scalar("portcullis_licenses_active"),
        1.0
    );
    let r = lab
        .admin
        .post(
            "/licenses",
            issue(&lab.key, &pin_license("new-by-k1", &machine)),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "license_refused");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains(&k1_kid) && message.contains("not one of the trusted issuer keys"),
        "{message}"
    );

    // Trusting k1 again brings its stored license back.
    lab.trust(&["k1.pub", "k2.pub"]).await;
    conn.call(get("/orders/3")).await.expect("request").echo();
    assert_eq!(lab.state_of("by-k1").await, "active");
}

/// `text` with the character at `at` replaced by another base64url character.
fn flip(text: &str, at: usize) -> String {
    let mut b = text.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).expect("ASCII")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_activations_say_why_with_the_right_status_and_change_nothing() {
    let lab = Lab::start().await;
    let machine2 = lab.pki.new_client("machine-2");
    let good = issue(&lab.key, &pin_license("good-1", &lab.pki.client));
    lab.activate(&good).await;
    let baseline = lab.list().await;

    // Every refused license below would grant machine 2.
    let valid = issue(&lab.key, &pin_license("m2-1", &machine2));
    let parts: Vec<&str> = valid.split('.').collect();
    assert_eq!(parts.len(), 3, "{valid}");
    let signature_at = parts[0].len() + 1 + parts[1].len() + 1;
    let tampered_payload = {
        let json = URL_SAFE_NO_PAD.decode(parts[1]).expect("payload");
        let mut p: Payload = serde_json::from_slice(&json).expect("payload JSON");
        p.customer = "Acme Evil".to_owned();
        let json = serde_json::to_vec(&p).expect("json");
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(json), parts[2])
    };
    let stranger_key = SigningKey::generate().expect("key");
    let mut expired = pin_license("m2-old", &machine2);
    expired.issued_at = unix_now() - 10 * DAY;
    expired.not_before = expired.issued_at;
    expired.expires_at = unix_now() - HOUR;

    let cases: Vec<(&str, String, u16, &str, String)> = vec![
        (
            "a flipped signature character",
            flip(&valid, signature_at + 40),
            400,
            "license_refused",
            "signature does not match".into(),
        ),
        (
            "a payload changed after signing",
            tampered_payload,
            400,
            "license_refused",
            "altered".into(),
        ),
        (
            "the end cut off",
            valid[..valid.len() - 10].to_owned(),
            400,
            "license_refused",
            "truncated".into(),
        ),
        (
            "the signature cut off",
            format!("{}.{}", parts[0], parts[1]),
            400,
            "license_refused",
            "the signature is missing".into(),
        ),
        (
            "signed by an untrusted key",
            issue(&stranger_key, &pin_license("m2-2", &machine2)),
            400,
            "license_refused",
            format!(
                "signed by key {}, which is not one of the trusted issuer keys",
                stranger_key.public_key().kid()
            ),
        ),
        (
            "format version PCL2",
            valid.replacen("PCL1.", "PCL2.", 1),
            400,
            "license_refused",
            "format version \"PCL2\"".into(),
        ),
        (
            "already expired",
            issue(&lab.key, &expired),
            400,
            "license_refused",
            "already expired".into(),
        ),
        (
            "the same license again",
            good.clone(),
            409,
            "license_duplicate",
            "\"good-1\" is already activated".into(),
        ),
        (
            "another license under a taken id",
            issue(&lab.key, &pin_license("good-1", &machine2)),
            409,
            "license_duplicate",
            "\"good-1\" is already activated".into(),
        ),
    ];
    for (what, text, status, reason, needle) in cases {
        assert_ne!(
            text, valid,
            "{what}: the case must differ from the valid license"
        );
        let r = lab.admin.post("/licenses", text).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text());
        let body = r.json();
        assert_eq!(body["error"], reason, "{what}: {body}");
        assert_eq!(
            body["request_id"].as_str(),
            r.header("x-request-id").as_deref(),
            "{what}: request id"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&needle),
            "{what}: {message:?} lacks {needle:?}"
        );
        assert_eq!(lab.list().await, baseline, "{what}: the listing changed");
    }
    lab.get(Some(&machine2), HERE, "/orders")
        .await
        .assert_denied(403, "license_missing");
    assert_eq!(
        lab.metrics().await.scalar("portcullis_licenses_active"),
        1.0
    );
    // The untampered license still activates: the refusals were about the changes.
    lab.activate(&valid).await;
    lab.get(Some(&machine2), HERE, "/orders").await.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_active_licenses_and_parse_as_prometheus_text() {
    let lab = Lab::start().await;
    let m = lab.metrics().await;
    assert_eq!(m.types["portcullis_licenses_active"], "gauge");
    assert_eq!(
        m.types["portcullis_license_grace_requests_total"],
        "counter"
    );
    assert_eq!(m.scalar("portcullis_licenses_active"), 0.0);

    let machine2 = lab.pki.new_client("machine-2");
    let machine3 = lab.pki.new_client("machine-3");
    let now = unix_now();
    lab.activate(&issue(&lab.key, &pin_license("a-1", &lab.pki.client)))
        .await;
    let mut soon = license("a-2", Match::Ip, &[], &["127.0.0.1/32"]);
    soon.expires_at = now + 3 * DAY;
    lab.activate(&issue(&lab.key, &soon)).await;
    let mut later = pin_license("n-1", &machine2);
    later.not_before = now + DAY;
    lab.activate(&issue(&lab.key, &later)).await;
    lab.activate(&issue(&lab.key, &pin_license("r-1", &machine3)))
        .await;
    assert_eq!(lab.admin.delete("/licenses/r-1").await.status, 200);
    lab.get(Some(&machine3), ELSEWHERE, "/orders")
        .await
        .assert_denied(403, "license_revoked");

    let m = lab.metrics().await;
    assert_eq!(m.scalar("portcullis_licenses_active"), 2.0, "a-1 and a-2");
    assert_eq!(m.scalar("portcullis_licenses_expiring_7d"), 1.0, "a-2");
    assert_eq!(m.scalar("portcullis_licenses_in_grace"), 0.0);
    for d in Denial::all() {
        let v = m.value("portcullis_denials_total", &[("reason", d.reason())]);
        assert_eq!(
            v,
            Some(lab.gw.denial_count(d) as f64),
            "portcullis_denials_total{{reason=\"{}\"}}",
            d.reason()
        );
    }
    assert_eq!(
        m.value("portcullis_denials_total", &[("reason", "license_revoked")]),
        Some(1.0)
    );
}

#[test]
fn the_prometheus_reader_refuses_text_that_is_not_the_exposition_format() {
    use support::prometheus::parse;
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total{reason=\"x\\\"y\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n\
                # TYPE g gauge\ng -1.5e3 1700000000000\ng{a=\"1\",b=\"2\",} NaN\n";
    let parsed = parse(good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.value("a_total", &[("reason", "x\"y")]), Some(3.0));
    assert_eq!(parsed.value("h_count", &[]), Some(2.0));
    assert_eq!(parsed.scalar("g"), -1500.0);
    let bad = [
        ("no TYPE", "a 1\n"),
        (
            "TYPE after samples",
            "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n",
        ),
        ("unknown type", "# TYPE a meter\na 1\n"),
        ("not a float", "# TYPE a gauge\na one\n"),
        ("infinity spelt out", "# TYPE a gauge\na infinity\n"),
        ("no value", "# TYPE a gauge\na\n"),
        ("bad metric name", "# TYPE 1a gauge\n1a 1\n"),
        ("unquoted label", "# TYPE a gauge\na{x=1} 1\n"),
        ("unclosed label", "# TYPE a gauge\na{x=\"1} 1\n"),
        ("bad escape", "# TYPE a gauge\na{x=\"\\t\"} 1\n"),
        ("label twice", "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n"),
        (
            "series twice",
            "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",
        ),
        (
            "bucket of a gauge",
            "# TYPE a gauge\na_bucket{le=\"1\"} 1\n",
        ),
        ("junk after timestamp", "# TYPE a gauge\na 1 2 3\n"),
        ("float timestamp", "# TYPE a gauge\na 1 2.5\n"),
    ];
    for (what, text) in bad {
        assert!(parse(text).is_err(), "{what} was accepted: {text:?}");
    }
}

/// `GET /licenses/{id}`'s `quota` object.
async fn quota_of(lab: &Lab, id: &str) -> Value {
    let r = lab.admin.get(&format!("/licenses/{id}")).await;
    assert_eq!(r.status, 200, "GET /licenses/{id}: {}", r.text());
    r.json()["quota"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_quota_is_used_up_across_routes_survives_a_restart_and_returns_when_the_day_turns()
 {
    let lab = Lab::start().await;
    // Noon tomorrow (UTC), so no test run straddles a midnight by accident; a restart starts a
    // new clock, which is moved by the same amount again.
    let to_noon = DAY + DAY / 2 - unix_now() % DAY;
    lab.advance(to_noon);
    let machine = lab.pki.client.clone();
    let other = lab.pki.new_client("machine-2");
    let mut plan = pin_license("plan-1", &machine);
    plan.quota = Some("3/day".into());
    let listed = lab.activate(&issue(&lab.key, &plan)).await;
    assert_eq!(listed["quota"], "3/day");
    let mut plan2 = pin_license("plan-2", &other);
    plan2.quota = Some("3/day".into());
    lab.activate(&issue(&lab.key, &plan2)).await;

    // One count per license, whatever the route; the unlicensed route does not count.
    lab.get(Some(&machine), HERE, "/orders").await.echo();
    lab.get(Some(&machine), HERE, "/stock").await.echo();
    lab.get(Some(&machine), HERE, "/").await.echo();
    let q = quota_of(&lab, "plan-1").await;
    let midnight = unix_now() + to_noon + DAY / 2 - (unix_now() + to_noon) % (DAY / 2);
    assert_eq!(q["limit"], 3);
    assert_eq!(q["window"], "day");
    assert_eq!(q["used"], 2, "{q}");
    assert_eq!(q["remaining"], 1, "{q}");
    assert_eq!(
        q["resets_at"],
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(midnight)).to_string()
    );
    let unquoted = lab.admin.get("/licenses/nope").await;
    assert_eq!(unquoted.status, 404);
    assert_eq!(unquoted.json()["error"], "license_not_found");

    let lab = lab.restart().await;
    lab.advance(to_noon);
    assert_eq!(
        quota_of(&lab, "plan-1").await["used"],
        2,
        "the count was lost"
    );
    lab.get(Some(&machine), HERE, "/orders").await.echo();
    let r = lab.get(Some(&machine), HERE, "/stock").await;
    r.assert_denied(429, "quota_exhausted");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        (DAY / 2 - 120..=DAY / 2).contains(&retry),
        "Retry-After {retry} is not the time to midnight"
    );
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"license_quota\";q=3;w=86400")
    );
    assert_eq!(q_used(&lab, "plan-1").await, 3, "a refusal was counted");
    // Another machine's plan is its own; the unlicensed route still serves the first one.
    lab.get(Some(&other), HERE, "/orders").await.echo();
    lab.get(Some(&machine), HERE, "/").await.echo();
    let m = lab.metrics().await;
    assert_eq!(
        m.value(
            "portcullis_limited_total",
            &[
                ("route", "stock"),
                ("key", "license"),
                ("reason", "quota_exhausted")
            ]
        ),
        Some(1.0)
    );

    // The day turns: the plan is whole again.
    lab.advance(DAY / 2);
    lab.get(Some(&machine), HERE, "/orders").await.echo();
    let q = quota_of(&lab, "plan-1").await;
    assert_eq!(
        (q["used"].as_u64(), q["remaining"].as_u64()),
        (Some(1), Some(2))
    );
}

async fn q_used(lab: &Lab, id: &str) -> u64 {
    quota_of(lab, id).await["used"].as_u64().expect("used")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_keyed_by_license_or_certificate_separate_two_machines() {
    let lab = Lab::start().await;
    let machine = lab.pki.client.clone();
    let other = lab.pki.new_client("machine-2");
    lab.activate(&issue(&lab.key, &pin_license("lic-a", &machine)))
        .await;
    lab.activate(&issue(&lab.key, &pin_license("lic-b", &other)))
        .await;
    let keys: Vec<String> = lab.trusted.iter().map(|k| format!("\"{k}\"")).collect();
    let limited = format!(
        "{}[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [licenses]\ntrusted_keys = [{}]\nstore = \"licenses.redb\"\n\n{}{}{}",
        server("watch_config = false"),
        keys.join(", "),
        listener("public", MTLS),
        route(
            "orders",
            "/orders",
            &[&lab.up.url()],
            "license = \"required\"\nlimits = [{ key = \"license\", rate = \"1/min\", burst = 1 }]"
        ),
        route(
            "stock",
            "/stock",
            &[&lab.up.url()],
            "limits = [{ key = \"cert\", rate = \"1/min\", burst = 1 }]"
        ),
    );
    write_config(lab.pki.dir(), &limited);
    let summary = lab.gw.reload().await.expect("reload");
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    lab.gw.shared().clock.freeze_monotonic();

    for path in ["/orders", "/stock"] {
        lab.get(Some(&machine), HERE, path).await.echo();
        let r = lab.get(Some(&machine), ELSEWHERE, path).await;
        r.assert_denied(429, "rate_limited");
        // The key is the machine, not its address: the second machine is still served.
        lab.get(Some(&other), HERE, path).await.echo();
    }
    let m = lab.metrics().await;
    for (route, key) in [("orders", "license"), ("stock", "cert")] {
        assert_eq!(
            m.value(
                "portcullis_limited_total",
                &[("route", route), ("key", key), ("reason", "rate_limited")]
            ),
            Some(1.0),
            "{route} by {key}"
        );
    }
}
