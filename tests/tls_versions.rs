//! Proves the TLS front door: TLS 1.2 and 1.3 handshakes succeed, TLS 1.0/1.1 ClientHellos are
//! refused without a ServerHello, min_tls = "1.3" refuses a TLS 1.2-only client, an RSA
//! certificate works, SNI picks the matching certificate, ALPN offers h2 and http/1.1, and
//! the post-quantum hybrid X25519MLKEM768 is offered first by default (`key_exchange` changes
//! the list; mistakes are reported at their key).

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rustls::ProtocolVersion;
use support::raw::{assert_alert_or_nothing, client_hello, has_server_hello, hello_reply};
use support::*;

async fn echo_gateway(pki: &Pki, listener_keys: &str) -> (Upstream, Gateway) {
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener("public", listener_keys),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    (up, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_handshake_succeeds_and_negotiates_tls12() {
    let pki = Pki::generate();
    let (_up, gw) = echo_gateway(&pki, "").await;

    let tls = TlsClient::new(&pki)
        .tls12_only()
        .connect(gw.addr(), "localhost")
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    let resp = H1::handshake(tls)
        .await
        .unwrap()
        .call(get("/"))
        .await
        .unwrap();
    resp.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_handshake_succeeds_and_negotiates_tls13() {
    let pki = Pki::generate();
    let (_up, gw) = echo_gateway(&pki, "").await;

    let tls = TlsClient::new(&pki)
        .tls13_only()
        .connect(gw.addr(), "localhost")
        .await
        .expect("TLS 1.3 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    let resp = H1::handshake(tls)
        .await
        .unwrap()
        .call(get("/"))
        .await
        .unwrap();
    resp.echo();

    // A client offering both gets 1.3.
    let tls = TlsClient::new(&pki)
        .connect(gw.addr(), "localhost")
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_prefers_aes128_gcm_over_a_client_that_lists_aes256_first() {
    use rustls::CipherSuite;
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let pki = Pki::generate();
    let (_up, gw) = echo_gateway(&pki, "").await;
    let suite = |tls: &Tls| tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());

    // rustls' default client order puts AES-256 first; the listener's order wins.
    let client = TlsClient::new(&pki);
    assert_eq!(
        client.config().crypto_provider().cipher_suites[0].suite(),
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        "control: the client really prefers AES-256"
    );
    let tls = client
        .clone()
        .tls13_only()
        .connect(gw.addr(), "localhost")
        .await
        .unwrap();
    assert_eq!(suite(&tls), Some(CipherSuite::TLS13_AES_128_GCM_SHA256));
    let tls = client
        .clone()
        .tls12_only()
        .connect(gw.addr(), "localhost")
        .await
        .unwrap();
    assert_eq!(
        suite(&tls),
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );

    // A preference, not a restriction: a client offering only AES-256 or ChaCha20 gets it.
    for (offer, want) in [
        (
            cs::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ] {
        let tls = TlsClient::new(&pki)
            .tls13_only()
            .suites(&[offer])
            .connect(gw.addr(), "localhost")
            .await
            .unwrap();
        assert_eq!(suite(&tls), Some(want));
        H1::handshake(tls)
            .await
            .unwrap()
            .call(get("/"))
            .await
            .unwrap()
            .echo();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handcrafted_tls12_client_hello_gets_a_server_hello() {
    // Control for the legacy-version tests: the same handcrafted hello with version 1.2 is
    // answered, so their refusal is about the version, not a malformed hello.
    let pki = Pki::generate();
    let (_up, gw) = echo_gateway(&pki, "").await;

    let reply = hello_reply(gw.addr(), &client_hello(0x0301, 0x0303)).await;
    assert!(
        has_server_hello(&reply),
        "no ServerHello for a TLS 1.2 ClientHello: {:02x?}",
        &reply[..reply.len().min(64)]
    );
    let records = support::raw::parse_records(&reply);
    let hello = &records[0].payload;
    assert_eq!(
        u16::from_be_bytes([hello[4], hello[5]]),
        0x0303,
        "ServerHello version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls10_client_hello_gets_an_alert_or_eof_never_a_server_hello() {
    let pki = Pki::generate();
    let (_up, gw) = echo_gateway(&pki, "").await;

    let reply = hello_reply(gw.addr(), &client_hello(0x0301, 0x0301)).await;
    assert_alert_or_nothing("TLS 1.0 ClientHello", &reply);
    send_one(&pki, gw.addr(), get("/")).await.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls11_only_client_hello_gets_an_alert_or_eof_never_a_server_hello() {
    let pki = Pki::generate();
    let (_up, gw) = echo_gateway(&pki, "").await;

    for record_version in [0x0301, 0x0302] {
        let reply = hello_reply(gw.addr(), &client_hello(record_version, 0x0302)).await;
        assert_alert_or_nothing("TLS 1.1 ClientHello", &reply);
    }
    send_one(&pki, gw.addr(), get("/")).await.echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_client_is_refused_when_min_tls_is_13() {
    let pki = Pki::generate();
    let (up, gw) = echo_gateway(&pki, "min_tls = \"1.3\"").await;

    let refused = TlsClient::new(&pki)
        .tls12_only()
        .connect(gw.addr(), "localhost")
        .await;
    assert!(
        refused.is_err(),
        "a TLS 1.2-only client completed a handshake with a min_tls = 1.3 listener"
    );
    let reply = hello_reply(gw.addr(), &client_hello(0x0301, 0x0303)).await;
    assert_alert_or_nothing("TLS 1.2 ClientHello to a 1.3-only listener", &reply);
    assert_eq!(up.request_count(), 0);

    // 1.3 still works.
    let tls = TlsClient::new(&pki)
        .connect(gw.addr(), "localhost")
        .await
        .expect("TLS 1.3 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    H1::handshake(tls)
        .await
        .unwrap()
        .call(get("/"))
        .await
        .unwrap()
        .echo();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_with_an_rsa_certificate_serves_tls12_and_tls13() {
    let pki = Pki::generate();
    let rsa_cert = pki.rsa_server();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener_with_certs("public", "", &[("rsa.pem", "rsa.key")]),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    for client in [
        TlsClient::new(&pki).tls12_only(),
        TlsClient::new(&pki).tls13_only(),
    ] {
        let tls = client
            .connect(gw.addr(), "localhost")
            .await
            .expect("handshake with the RSA certificate");
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(presented, rsa_cert, "the RSA certificate was not presented");
        H1::handshake(tls)
            .await
            .unwrap()
            .call(get("/"))
            .await
            .unwrap()
            .echo();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_matching_certificate_of_two() {
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}",
        listener_with_certs(
            "public",
            "",
            &[("server.pem", "server.key"), ("other.pem", "other.key")]
        ),
        route("all", "/", &[&up.url()], "")
    );
    let gw = Gateway::start(pki.dir(), &toml).await;

    for (sni, want) in [
        ("other.test", &pki.other_server),
        ("localhost", &pki.server),
    ] {
        // The client verifies the certificate against `sni`, so a wrong pick fails here.
        let tls = TlsClient::new(&pki)
            .connect(gw.addr(), sni)
            .await
            .unwrap_or_else(|e| panic!("handshake with SNI {sni}: {e}"));
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(&presented, want, "wrong certificate for SNI {sni}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_h2_or_http11_as_the_client_offers() {
    let pki = Pki::generate();
    let (_up, gw) = echo_gateway(&pki, "").await;

    for (offer, want) in [
        (&["h2", "http/1.1"][..], &b"h2"[..]),
        (&["http/1.1"][..], &b"http/1.1"[..]),
        (&["h2"][..], &b"h2"[..]),
    ] {
        let tls = TlsClient::new(&pki)
            .alpn(offer)
            .connect(gw.addr(), "localhost")
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(want),
            "ALPN for offer {offer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_post_quantum_hybrid_is_offered_first_by_default_and_key_exchange_is_configurable() {
    use rustls::crypto::aws_lc_rs::kx_group;
    let pki = Pki::generate();
    let (_up, gw) = echo_gateway(&pki, "").await;
    let group = |tls: &Tls| {
        tls.get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|g| g.name())
    };
    // A client offering only the hybrid gets it; one preferring it too.
    let only_pq = TlsClient::new(&pki)
        .kx(&[kx_group::X25519MLKEM768])
        .connect(gw.addr(), "localhost")
        .await
        .expect("the hybrid group is accepted");
    assert_eq!(group(&only_pq), Some(rustls::NamedGroup::X25519MLKEM768));
    // A client without it still gets a classical group.
    let classical = TlsClient::new(&pki)
        .kx(&[kx_group::SECP256R1])
        .connect(gw.addr(), "localhost")
        .await
        .expect("P-256 is accepted");
    assert_eq!(group(&classical), Some(rustls::NamedGroup::secp256r1));
    drop(gw);

    // A listener limited to X25519 refuses a client offering only the hybrid.
    let (_up, gw) = echo_gateway(&pki, "key_exchange = [\"X25519\"]").await;
    assert!(
        TlsClient::new(&pki)
            .kx(&[kx_group::X25519MLKEM768])
            .connect(gw.addr(), "localhost")
            .await
            .is_err()
    );
    let x25519 = TlsClient::new(&pki)
        .connect(gw.addr(), "localhost")
        .await
        .unwrap();
    assert_eq!(group(&x25519), Some(rustls::NamedGroup::X25519));
}

#[test]
fn key_exchange_mistakes_are_reported_at_their_key() {
    let pki = Pki::generate();
    let path = pki.dir().join("portcullis.toml");
    for (value, key, needle) in [
        ("[]", "listeners[0].key_exchange", "empty"),
        (
            "[\"X448\"]",
            "listeners[0].key_exchange[0]",
            "X25519MLKEM768",
        ),
        (
            "[\"X25519\", \"X25519\"]",
            "listeners[0].key_exchange[1]",
            "twice",
        ),
    ] {
        let text = format!(
            "{}{}",
            listener("public", &format!("key_exchange = {value}")),
            route("all", "/", &["http://127.0.0.1:9"], "")
        );
        let err = portcullis::config::load_str(&path, &text, std::time::SystemTime::now())
            .err()
            .expect("refused");
        assert!(
            err.0
                .iter()
                .any(|i| i.key == key && i.message.contains(needle)),
            "{value}: {err}"
        );
    }
}
