//! Proves client identity pinning end to end: listener and route `pins` (SPKI) and
//! `cert_fingerprints` admit exactly the pinned certificates in every `client_auth` mode
//! (a one-way listener with pins refuses everyone with 403, a self-signed machine certificate
//! is admitted in `pinned` mode only when pinned), a mismatch is a 403 `client_cert_not_pinned`
//! on every request of the connection and is counted in the denial metric, client-sent identity
//! headers (default or renamed) never reach the upstream while a verified certificate's real
//! subject, CN, SPKI pin, fingerprint and serial do, and `portcullis pin` prints the pins the
//! gateway compares against.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use portcullis::denial::Denial;
use portcullis::identity::ClientIdentity;
use rustls::SupportedProtocolVersion;
use support::pki::self_signed_client;
use support::*;

const NOT_PINNED: &str = "client_cert_not_pinned";

/// The default identity header names.
const SUBJECT: &str = "x-client-cert-subject";
const CN: &str = "x-client-cert-cn";
const SPKI: &str = "x-client-cert-spki";
const FINGERPRINT: &str = "x-client-cert-fingerprint";
const SERIAL: &str = "x-client-cert-serial";
const DEFAULT_IDENTITY_HEADERS: [&str; 5] = [SUBJECT, CN, SPKI, FINGERPRINT, SERIAL];

const VERSIONS: [(&str, &SupportedProtocolVersion); 2] = [
    ("TLS 1.3", &rustls::version::TLS13),
    ("TLS 1.2", &rustls::version::TLS12),
];

fn identity_of(id: &Identity) -> ClientIdentity {
    ClientIdentity::from_der(id.cert().as_ref()).expect("the test certificate parses")
}

fn pin_of(id: &Identity) -> String {
    identity_of(id).spki_pin()
}

fn fingerprint_of(id: &Identity) -> String {
    identity_of(id).fingerprint()
}

/// `["a", "b"]` as a TOML array.
fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Listener keys for `client_auth = mode` (with the test CA where the mode needs one).
fn auth(mode: &str) -> String {
    match mode {
        "optional" | "required" => format!("client_auth = \"{mode}\"\nclient_ca = \"ca.pem\""),
        _ => format!("client_auth = \"{mode}\""),
    }
}

/// One listener "public" with `listener_keys`, one route "/" to `up`.
async fn gateway(pki: &Pki, up: &Upstream, listener_keys: &str) -> Gateway {
    let toml = format!(
        "{}{}",
        listener("public", listener_keys),
        route("all", "/", &[&up.url()], "")
    );
    Gateway::start(pki.dir(), &toml).await
}

fn client(pki: &Pki, id: Option<&Identity>) -> TlsClient {
    let c = TlsClient::new(pki);
    match id {
        Some(id) => c.identity(id),
        None => c,
    }
}

/// What became of one attempt.
#[derive(Debug)]
enum Attempt {
    /// The handshake failed or no HTTP response came back.
    NoResponse(String),
    Response(TestResponse),
}

async fn attempt(client: TlsClient, addr: SocketAddr, req: http::Request<BoxBody>) -> Attempt {
    let tls = match client.connect(addr, "localhost").await {
        Ok(t) => t,
        Err(e) => return Attempt::NoResponse(format!("handshake: {e}")),
    };
    let mut h1 = match H1::handshake(tls).await {
        Ok(h) => h,
        Err(e) => return Attempt::NoResponse(e),
    };
    match h1.call(req).await {
        Ok(r) => Attempt::Response(r),
        Err(e) => Attempt::NoResponse(e),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Served,
    /// Handshake succeeds, the request gets 403 client_cert_not_pinned.
    NotPinned,
    /// No HTTP response at all (the TLS layer refuses).
    Refused,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spki_pins_admit_only_the_pinned_key_in_every_client_auth_mode() {
    let pki = Pki::generate();
    let machine = self_signed_client("machine-7");
    let stranger = self_signed_client("stranger");
    let up = Upstream::echo("a").await;
    let pins = |ids: &[&Identity]| {
        let list: Vec<String> = ids.iter().map(|i| pin_of(i)).collect();
        format!("pins = {}", toml_list(&list))
    };

    let cases: Vec<(&str, &str, String, Option<&Identity>, Want)> = vec![
        // client_auth = "none": no certificate is ever requested, so pins refuse everyone.
        (
            "one-way TLS with pins, client without a certificate",
            "none",
            pins(&[&pki.client]),
            None,
            Want::NotPinned,
        ),
        (
            "one-way TLS with pins, client holding the pinned certificate (never asked for it)",
            "none",
            pins(&[&pki.client]),
            Some(&pki.client),
            Want::NotPinned,
        ),
        (
            "optional mode, no certificate",
            "optional",
            pins(&[&pki.client]),
            None,
            Want::NotPinned,
        ),
        (
            "optional mode, pinned certificate",
            "optional",
            pins(&[&pki.client]),
            Some(&pki.client),
            Want::Served,
        ),
        (
            "optional mode, valid certificate with another key",
            "optional",
            pins(&[&stranger]),
            Some(&pki.client),
            Want::NotPinned,
        ),
        (
            "required mode, pinned certificate",
            "required",
            pins(&[&pki.client]),
            Some(&pki.client),
            Want::Served,
        ),
        (
            "required mode, pinned among several",
            "required",
            pins(&[&stranger, &machine, &pki.client]),
            Some(&pki.client),
            Want::Served,
        ),
        (
            "required mode, valid certificate with another key",
            "required",
            pins(&[&stranger]),
            Some(&pki.client),
            Want::NotPinned,
        ),
        (
            "pinned mode, pinned self-signed certificate",
            "pinned",
            pins(&[&machine]),
            Some(&machine),
            Want::Served,
        ),
        (
            "pinned mode, CA-signed certificate that is not pinned",
            "pinned",
            pins(&[&machine]),
            Some(&pki.client),
            Want::NotPinned,
        ),
        (
            "pinned mode, no certificate",
            "pinned",
            pins(&[&machine]),
            None,
            Want::Refused,
        ),
    ];

    let mut served = 0;
    for (what, mode, pin_keys, id, want) in cases {
        let gw = gateway(&pki, &up, &format!("{}\n{pin_keys}", auth(mode))).await;
        for (version, v) in VERSIONS {
            let got = attempt(client(&pki, id).versions(&[v]), gw.addr(), get("/who")).await;
            match (want, got) {
                (Want::Served, Attempt::Response(r)) => {
                    r.echo();
                    served += 1;
                }
                (Want::NotPinned, Attempt::Response(r)) => {
                    r.assert_denied(403, NOT_PINNED);
                }
                (Want::Refused, Attempt::NoResponse(_)) => {}
                (want, got) => panic!("{what} ({version}): want {want:?}, got {got:?}"),
            }
        }
    }
    assert_eq!(
        up.request_count(),
        served,
        "only admitted requests may reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_on_one_keep_alive_connection_are_both_denied_after_a_pin_mismatch() {
    let pki = Pki::generate();
    let stranger = self_signed_client("stranger");
    let up = Upstream::echo("a").await;
    let keys = format!(
        "{}\npins = {}",
        auth("required"),
        toml_list(&[pin_of(&stranger)])
    );
    let gw = gateway(&pki, &up, &keys).await;

    let tls = TlsClient::new(&pki)
        .identity(&pki.client)
        .connect(gw.addr(), "localhost")
        .await
        .expect("the handshake succeeds: the certificate chains to the CA");
    let mut h1 = H1::handshake(tls).await.unwrap();
    let first = h1.call(get("/first")).await.expect("first response");
    let first_id = first.assert_denied(403, NOT_PINNED);
    assert!(
        !h1.is_closed(),
        "a pin denial does not need to close the connection"
    );
    let second = h1
        .call(get("/second"))
        .await
        .expect("a second response on the same connection");
    let second_id = second.assert_denied(403, NOT_PINNED);
    assert_ne!(first_id, second_id, "each denial has its own request id");
    assert_eq!(
        up.request_count(),
        0,
        "a request on a connection with an unpinned certificate reached the upstream"
    );
    assert_eq!(gw.denial_count(Denial::ClientCertNotPinned), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_is_admitted_in_pinned_mode_only_when_its_spki_is_pinned() {
    let pki = Pki::generate();
    let machine = self_signed_client("machine-7");
    let other = self_signed_client("machine-8");
    let up = Upstream::echo("a").await;

    for (what, pinned, want_served) in [
        ("its own key pinned", &machine, true),
        ("another machine's key pinned", &other, false),
    ] {
        let keys = format!(
            "{}\npins = {}",
            auth("pinned"),
            toml_list(&[pin_of(pinned)])
        );
        let gw = gateway(&pki, &up, &keys).await;
        for (version, v) in VERSIONS {
            let tls = TlsClient::new(&pki)
                .versions(&[v])
                .identity(&machine)
                .connect(gw.addr(), "localhost")
                .await
                .unwrap_or_else(|e| {
                    panic!("{what} ({version}): the pinned-mode handshake must succeed: {e}")
                });
            let mut h1 = H1::handshake(tls).await.unwrap();
            let resp = h1
                .call(get("/machine"))
                .await
                .unwrap_or_else(|e| panic!("{what} ({version}): no response: {e}"));
            if want_served {
                let echo = resp.echo();
                assert_eq!(
                    echo.header(SPKI),
                    Some(pin_of(&machine).as_str()),
                    "{what} ({version})"
                );
                assert_eq!(echo.header(CN), Some("machine-7"), "{what} ({version})");
            } else {
                resp.assert_denied(403, NOT_PINNED);
            }
        }
    }
    assert_eq!(up.request_count(), 2, "only the pinned machine is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_fingerprints_pin_like_spki_pins() {
    let pki = Pki::generate();
    let machine = self_signed_client("machine-7");
    let stranger = self_signed_client("stranger");
    let up = Upstream::echo("a").await;
    let client_fp = fingerprint_of(&pki.client);
    assert!(
        client_fp.contains(':'),
        "fingerprints are colon-separated hex: {client_fp}"
    );

    let cases: Vec<(&str, &str, String, &Identity, bool)> = vec![
        (
            "required mode, the certificate's fingerprint as printed",
            "required",
            client_fp.clone(),
            &pki.client,
            true,
        ),
        (
            "required mode, lower-case without colons",
            "required",
            client_fp.replace(':', "").to_lowercase(),
            &pki.client,
            true,
        ),
        (
            "required mode, another certificate's fingerprint",
            "required",
            fingerprint_of(&stranger),
            &pki.client,
            false,
        ),
        (
            "pinned mode, the self-signed certificate's fingerprint",
            "pinned",
            fingerprint_of(&machine),
            &machine,
            true,
        ),
        (
            "pinned mode, another certificate's fingerprint",
            "pinned",
            fingerprint_of(&stranger),
            &machine,
            false,
        ),
    ];
    let mut served = 0;
    for (what, mode, fp, id, want_served) in cases {
        let keys = format!(
            "{}\ncert_fingerprints = {}",
            auth(mode),
            toml_list(std::slice::from_ref(&fp))
        );
        let gw = gateway(&pki, &up, &keys).await;
        match attempt(client(&pki, Some(id)), gw.addr(), get("/fp")).await {
            Attempt::Response(r) if want_served => {
                let echo = r.echo();
                assert_eq!(
                    echo.header(FINGERPRINT),
                    Some(fingerprint_of(id).as_str()),
                    "{what}"
                );
                served += 1;
            }
            Attempt::Response(r) => {
                r.assert_denied(403, NOT_PINNED);
            }
            Attempt::NoResponse(e) => panic!("{what} (pin {fp}): no response: {e}"),
        }
    }
    assert_eq!(up.request_count(), served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_pins_deny_one_route_while_another_route_on_the_same_connection_is_served() {
    let pki = Pki::generate();
    let stranger = self_signed_client("stranger");
    let open = Upstream::echo("open").await;
    let secure = Upstream::echo("secure").await;
    let mine = Upstream::echo("mine").await;
    let toml = format!(
        "{}{}{}{}",
        listener("public", &auth("required")),
        route(
            "secure",
            "/secure",
            &[&secure.url()],
            &format!("pins = {}", toml_list(&[pin_of(&stranger)]))
        ),
        route(
            "mine",
            "/mine",
            &[&mine.url()],
            &format!(
                "cert_fingerprints = {}",
                toml_list(&[fingerprint_of(&pki.client)])
            )
        ),
        route("open", "/", &[&open.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    let mut h1 = H1::handshake(
        TlsClient::new(&pki)
            .identity(&pki.client)
            .connect(gw.addr(), "localhost")
            .await
            .expect("handshake"),
    )
    .await
    .unwrap();
    for (path, want) in [
        ("/secure/data", None),
        ("/anything", Some("open")),
        ("/mine/data", Some("mine")),
        ("/secure", None),
        ("/", Some("open")),
    ] {
        let resp = h1
            .call(get(path))
            .await
            .unwrap_or_else(|e| panic!("{path}: no response on the shared connection: {e}"));
        match want {
            Some(upstream) => assert_eq!(resp.echo().upstream, upstream, "{path}"),
            None => {
                resp.assert_denied(403, NOT_PINNED);
            }
        }
    }
    assert_eq!(
        secure.request_count(),
        0,
        "the pinned route's upstream was reached"
    );
    assert_eq!(open.request_count(), 2);
    assert_eq!(mine.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pin_denial_is_counted_in_the_denial_metric() {
    let pki = Pki::generate();
    let stranger = self_signed_client("stranger");
    let open = Upstream::echo("open").await;
    let pinned = Upstream::echo("pinned").await;
    let toml = format!(
        "{}{}{}",
        listener("public", &auth("optional")),
        route(
            "pinned",
            "/pinned",
            &[&pinned.url()],
            &format!("pins = {}", toml_list(&[pin_of(&stranger)]))
        ),
        route("open", "/", &[&open.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    assert_eq!(gw.denial_count(Denial::ClientCertNotPinned), 0);

    // Three on one connection with a certificate, one on a connection without; two served.
    let mut with_cert = H1::handshake(
        TlsClient::new(&pki)
            .identity(&pki.client)
            .connect(gw.addr(), "localhost")
            .await
            .expect("handshake"),
    )
    .await
    .unwrap();
    for (path, denied_so_far) in [
        ("/pinned/a", 1),
        ("/open", 1),
        ("/pinned/b", 2),
        ("/pinned/c", 3),
    ] {
        let resp = with_cert.call(get(path)).await.unwrap();
        if path.starts_with("/pinned") {
            resp.assert_denied(403, NOT_PINNED);
        } else {
            resp.echo();
        }
        assert_eq!(
            gw.denial_count(Denial::ClientCertNotPinned),
            denied_so_far,
            "after {path}"
        );
    }
    send_one(&pki, gw.addr(), get("/pinned/x"))
        .await
        .assert_denied(403, NOT_PINNED);
    send_one(&pki, gw.addr(), get("/x")).await.echo();

    assert_eq!(gw.denial_count(Denial::ClientCertNotPinned), 4);
    assert_eq!(
        gw.denial_count(Denial::IpNotAllowed),
        0,
        "counted under the wrong reason"
    );
    let rendered = gw.shared().metrics.render();
    assert!(
        rendered
            .lines()
            .any(|l| l == "portcullis_denials_total{reason=\"client_cert_not_pinned\"} 4"),
        "the exposition does not show 4 pin denials:\n{rendered}"
    );
    assert_eq!(pinned.request_count(), 0);
    assert_eq!(open.request_count(), 2);
}

/// A request carrying forged copies of every default identity header, each twice and in
/// mixed case.
fn spoofed(path: &str) -> http::Request<BoxBody> {
    let mut b = request("GET", path);
    for (name, value) in [
        ("X-Client-Cert-Subject", "CN=admin,O=Portcullis"),
        ("x-client-cert-subject", "CN=root"),
        ("X-Client-Cert-CN", "admin"),
        ("X-CLIENT-CERT-CN", "root"),
        (
            "X-Client-Cert-Spki",
            "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        ("x-client-cert-spki", "sha256/forged"),
        ("X-Client-Cert-Fingerprint", "00:11:22:33"),
        ("x-client-cert-fingerprint", "forged"),
        ("X-Client-Cert-Serial", "01"),
        ("x-client-cert-serial", "02"),
    ] {
        b = b.header(name, value);
    }
    b.body(empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_upstream_from_a_client_without_a_certificate() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;

    for mode in ["none", "optional"] {
        let gw = gateway(&pki, &up, &auth(mode)).await;
        let echo = send_one(&pki, gw.addr(), spoofed("/spoof")).await.echo();
        for h in DEFAULT_IDENTITY_HEADERS {
            assert!(
                !echo.has_header(h),
                "client_auth = {mode}: a forged {h} reached the upstream: {:?}",
                echo.header_all(h)
            );
        }

        // HTTP/2 too: the headers arrive lower-cased in HPACK, not through the HTTP/1 parser.
        let tls = TlsClient::new(&pki)
            .h2()
            .connect(gw.addr(), "localhost")
            .await
            .expect("h2 handshake");
        let mut h2 = H2::handshake(tls).await.unwrap();
        let mut req = h2_request("GET", "localhost", "/spoof/h2");
        for h in DEFAULT_IDENTITY_HEADERS {
            req = req.header(h, "CN=admin");
        }
        let echo = h2.call(req.body(empty()).unwrap()).await.unwrap().echo();
        for h in DEFAULT_IDENTITY_HEADERS {
            assert!(
                !echo.has_header(h),
                "client_auth = {mode}, HTTP/2: a forged {h} reached the upstream: {:?}",
                echo.header_all(h)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_upstream_gets_the_real_identity_instead_of_the_spoofed_one() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let machine = self_signed_client("machine-7");
    let pinned_keys = format!(
        "{}\npins = {}",
        auth("pinned"),
        toml_list(&[pin_of(&machine)])
    );

    for (what, keys, id) in [
        ("optional mode, CA-signed", auth("optional"), &pki.client),
        ("required mode, CA-signed", auth("required"), &pki.client),
        ("pinned mode, self-signed", pinned_keys, &machine),
    ] {
        let gw = gateway(&pki, &up, &keys).await;
        let want = identity_of(id);
        assert!(want.subject.contains("CN="), "{}", want.subject);
        let mut h1 = H1::handshake(
            TlsClient::new(&pki)
                .identity(id)
                .connect(gw.addr(), "localhost")
                .await
                .expect("handshake"),
        )
        .await
        .unwrap();
        // Twice on the connection: the values are per connection, not consumed by a request.
        for _ in 0..2 {
            let echo = h1.call(spoofed("/who")).await.unwrap().echo();
            assert_eq!(
                echo.header(SUBJECT),
                Some(want.subject.as_str()),
                "{what}: subject"
            );
            assert_eq!(
                echo.header(CN),
                want.common_name.as_deref(),
                "{what}: common name"
            );
            assert_eq!(
                echo.header(SPKI),
                Some(want.spki_pin().as_str()),
                "{what}: spki"
            );
            assert_eq!(
                echo.header(FINGERPRINT),
                Some(want.fingerprint().as_str()),
                "{what}: fingerprint"
            );
            assert_eq!(
                echo.header(SERIAL),
                Some(want.serial.as_str()),
                "{what}: serial"
            );
        }
    }
    assert_eq!(
        identity_of(&pki.client).common_name.as_deref(),
        Some("good client")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_identity_headers_are_stripped_from_clients_and_set_from_the_certificate() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "[identity_headers]\nsubject = \"X-Mtls-Subject\"\ncommon_name = \"X-Mtls-Name\"\n\
         spki = \"X-Mtls-Key\"\nfingerprint = \"\"\n\n{}{}",
        listener("public", &auth("optional")),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let forged = || {
        request("GET", "/renamed")
            .header("X-Mtls-Subject", "CN=admin")
            .header("x-mtls-name", "admin")
            .header("X-MTLS-KEY", "sha256/forged")
            .header("X-Client-Cert-Serial", "01")
            .body(empty())
            .unwrap()
    };
    let managed = ["x-mtls-subject", "x-mtls-name", "x-mtls-key", SERIAL];

    // Without a certificate: every managed name is stripped, nothing is set.
    let echo = send_one(&pki, gw.addr(), forged()).await.echo();
    for h in managed {
        assert!(
            !echo.has_header(h),
            "a forged {h} reached the upstream: {:?}",
            echo.header_all(h)
        );
    }

    // With a certificate: the renamed headers carry the real values, exactly once.
    let want = identity_of(&pki.client);
    let resp = attempt(
        TlsClient::new(&pki).identity(&pki.client),
        gw.addr(),
        forged(),
    )
    .await;
    let Attempt::Response(resp) = resp else {
        panic!("no response with a certificate: {resp:?}");
    };
    let echo = resp.echo();
    assert_eq!(echo.header("x-mtls-subject"), Some(want.subject.as_str()));
    assert_eq!(echo.header("x-mtls-name"), want.common_name.as_deref());
    assert_eq!(echo.header("x-mtls-key"), Some(want.spki_pin().as_str()));
    assert_eq!(
        echo.header(SERIAL),
        Some(want.serial.as_str()),
        "a key left out keeps its default name"
    );
    for h in [SUBJECT, CN, SPKI, FINGERPRINT] {
        assert!(
            !echo.has_header(h),
            "{h} was set although it was renamed or turned off: {:?}",
            echo.header_all(h)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_header_renamed_onto_another_fields_default_name_is_refused_or_carries_its_field()
 {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    // The subject takes the name the common name has by default (common_name left out).
    let toml = format!(
        "[identity_headers]\nsubject = \"X-Client-Cert-CN\"\n\n{}{}",
        listener("public", &auth("optional")),
        route("all", "/", &[&up.url()], "")
    );
    let config = write_config(pki.dir(), &toml);
    let running = match portcullis::server::start(&config).await {
        Err(e) => {
            assert!(
                e.to_string().contains("identity_headers"),
                "refused, but the error does not name identity_headers: {e}"
            );
            return;
        }
        Ok(r) => r,
    };
    let addr = running.local_addr("public").expect("listener public");
    let resp = attempt(TlsClient::new(&pki).identity(&pki.client), addr, get("/")).await;
    running.shutdown_handle().trigger();
    let Attempt::Response(resp) = resp else {
        panic!("no response: {resp:?}");
    };
    let want = identity_of(&pki.client);
    assert_eq!(
        resp.echo().header_all(CN),
        [want.subject.as_str()],
        "the config was accepted, so X-Client-Cert-CN must carry the subject it was assigned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_tls_session_keeps_its_client_identity_for_pins_and_headers() {
    use rustls::pki_types::ServerName;
    use tokio_rustls::TlsConnector;

    let pki = Pki::generate();
    let stranger = self_signed_client("stranger");
    let mine = Upstream::echo("mine").await;
    let theirs = Upstream::echo("theirs").await;
    let toml = format!(
        "{}{}{}",
        listener(
            "public",
            &format!(
                "{}\npins = {}",
                auth("required"),
                toml_list(&[pin_of(&pki.client)])
            )
        ),
        route(
            "theirs",
            "/theirs",
            &[&theirs.url()],
            &format!("pins = {}", toml_list(&[pin_of(&stranger)]))
        ),
        route("mine", "/", &[&mine.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    let want = identity_of(&pki.client);

    for (version, v) in VERSIONS {
        // One client config, so its session cache is shared by the connections.
        let connector = TlsConnector::from(
            TlsClient::new(&pki)
                .versions(&[v])
                .identity(&pki.client)
                .config(),
        );
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
            let tls = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap_or_else(|e| panic!("{version}: handshake: {e}"));
            kinds.push(tls.get_ref().1.handshake_kind());
            let mut h1 = H1::handshake(tls).await.unwrap();
            let echo = h1.call(get("/mine")).await.unwrap().echo();
            assert_eq!(
                echo.header(SPKI),
                Some(want.spki_pin().as_str()),
                "{version}: {:?} connection",
                kinds.last()
            );
            assert_eq!(echo.header(SUBJECT), Some(want.subject.as_str()));
            h1.call(get("/theirs"))
                .await
                .unwrap()
                .assert_denied(403, NOT_PINNED);
        }
        assert!(
            kinds.contains(&Some(rustls::HandshakeKind::Resumed)),
            "{version}: no connection was resumed ({kinds:?}), so resumption was not tested"
        );
    }
    assert_eq!(theirs.request_count(), 0);
    assert_eq!(mine.request_count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_a_listener_trusting_another_ca_cannot_be_resumed_to_skip_verification() {
    use rustls::pki_types::ServerName;
    use tokio_rustls::TlsConnector;

    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    // "partner" verifies client certificates against the unrelated CA, "public" against ours.
    let toml = format!(
        "{}{}{}",
        listener("public", &auth("required")),
        listener(
            "partner",
            "client_auth = \"required\"\nclient_ca = \"other-ca.pem\""
        ),
        route("all", "/", &[&up.url()], ""),
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    for (version, v) in VERSIONS {
        let connector = TlsConnector::from(
            TlsClient::new(&pki)
                .versions(&[v])
                .identity(&pki.foreign_client)
                .config(),
        );
        let name = ServerName::try_from("localhost").unwrap();
        // Served on the partner listener (twice, so a ticket surely arrived).
        for _ in 0..2 {
            let tcp = tokio::net::TcpStream::connect(gw.addr_of("partner"))
                .await
                .unwrap();
            let tls = connector.connect(name.clone(), tcp).await.unwrap();
            let mut h1 = H1::handshake(tls).await.unwrap();
            h1.call(get("/partner")).await.unwrap().echo();
        }
        // The same client, same SNI, same session cache, on the public listener.
        let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let outcome = match connector.connect(name.clone(), tcp).await {
            Err(e) => Err(format!("handshake: {e}")),
            Ok(tls) => {
                let kind = tls.get_ref().1.handshake_kind();
                match H1::handshake(tls).await {
                    Err(e) => Err(e),
                    Ok(mut h1) => match h1.call(get("/public")).await {
                        Err(e) => Err(e),
                        Ok(r) => Ok((kind, r.status)),
                    },
                }
            }
        };
        assert!(
            outcome.is_err(),
            "{version}: a certificate from the other CA got an HTTP response on the public \
             listener: {outcome:?}"
        );
    }
    assert_eq!(
        up.request_count(),
        4,
        "only the partner requests are served"
    );
}

fn pin_command(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("pin")
        .arg(file)
        .output()
        .expect("run portcullis pin")
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Values of the `label:` lines of `portcullis pin` output, in order.
fn field(stdout: &str, label: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn the_pin_command_prints_the_same_pin_and_fingerprint_as_client_identity() {
    let pki = Pki::generate();
    let machine = self_signed_client("machine-7");
    let single = pki.write("machine.pem", &machine.cert_pem());
    let bundle = pki.write(
        "bundle.pem",
        &format!("{}{}", machine.cert_pem(), pki.client.cert_pem()),
    );

    for (file, ids) in [
        (&single, vec![&machine]),
        (&bundle, vec![&machine, &pki.client]),
    ] {
        let out = pin_command(file);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let want: Vec<ClientIdentity> = ids.iter().map(|i| identity_of(i)).collect();
        assert_eq!(
            field(&stdout, "spki pin:"),
            want.iter().map(|w| w.spki_pin()).collect::<Vec<_>>(),
            "{}",
            show(&out)
        );
        assert_eq!(
            field(&stdout, "fingerprint:"),
            want.iter().map(|w| w.fingerprint()).collect::<Vec<_>>(),
            "{}",
            show(&out)
        );
        assert_eq!(
            field(&stdout, "subject:"),
            want.iter().map(|w| w.subject.clone()).collect::<Vec<_>>(),
            "{}",
            show(&out)
        );
    }
}

#[test]
fn the_pin_command_exits_1_naming_a_file_that_holds_no_certificate() {
    let pki = Pki::generate();
    let text = pki.write("notes.txt", "this is not a certificate\n");
    let key_only = pki.path("server.key");
    let missing = pki.path("missing.pem");

    for (what, file) in [
        ("plain text", &text),
        ("a PEM private key", &key_only),
        ("a file that does not exist", &missing),
    ] {
        let out = pin_command(file);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&file.display().to_string()),
            "{what}: stderr does not name {}: {}",
            file.display(),
            show(&out)
        );
        assert!(
            field(&String::from_utf8_lossy(&out.stdout), "spki pin:").is_empty(),
            "{what}: a pin was printed: {}",
            show(&out)
        );
    }
}
