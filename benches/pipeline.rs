//! The whole policy pipeline on an in-memory request: `cargo bench --bench pipeline`.
//!
//! A gateway is started from the load bench's full-policy config, and
//! [`portcullis::pipeline::admit`] runs on a request head, with a connection context that
//! carries the pinned client certificate, as the server calls it for every request:
//! framing, the listener's pin and IP allowlist, route selection, the route's pin and IP
//! lists, the machine license (pin and address), the bearer token (HS256; verified once,
//! then a cache hit). Beside it: a forged token (refused after a signature check), the full
//! policy with two rate limits, the full policy and the choice of one of four targets
//! (round robin, least request), and the bare config (one route, no policy). Forwarding is not included: it is I/O, measured by
//! the load bench.

// Bench set-up may panic: it is measurement code, never run on input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use portcullis::context::ConnContext;
use portcullis::context::Exchange;
use portcullis::framing::scanner::FramingSignals;
use portcullis::identity::{ClientIdentity, IdentityValues};
use portcullis::pipeline::{Admitted, admit};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

mod common;
use common::{config, pki, provision, token, write};

struct Setup {
    _pki: common::Pki,
    running: portcullis::server::Running,
    _rt: tokio::runtime::Runtime,
    conn: ConnContext,
}

fn setup(mode: &str) -> Setup {
    let pki = pki();
    let dir = pki.dir.path().to_path_buf();
    // Never connected to: admission stops before forwarding.
    write(&dir, "portcullis.toml", &config(&dir, mode, "127.0.0.1:9"));
    if mode.starts_with("full") {
        provision(&dir);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let running = rt
        .block_on(portcullis::server::start(&dir.join("portcullis.toml")))
        .expect("gateway starts");
    let local = running.local_addr("mtls").expect("listener");
    let cert = CertificateDer::from_pem_file(dir.join("client.pem")).expect("client.pem");
    let identity = ClientIdentity::from_der(cert.as_ref()).expect("client certificate");
    let peer: SocketAddr = "127.0.0.1:50000".parse().expect("address");
    let conn = ConnContext {
        listener: "mtls".into(),
        peer,
        origin: peer,
        origin_value: ConnContext::origin_value(peer),
        local,
        accepted_at: Instant::now(),
        tls_version: Some(rustls::ProtocolVersion::TLSv1_3),
        alpn: Some(b"http/1.1".to_vec().into()),
        proxy_spoke_for_itself: false,
        sni: Some("localhost".into()),
        identity_values: Some(IdentityValues::new(&identity)),
        identity: Some(identity),
        framing: Arc::new(FramingSignals::default()),
        in_flight: AtomicU32::new(0),
        sending: Default::default(),
    };
    Setup {
        _pki: pki,
        running,
        _rt: rt,
        conn,
    }
}

fn request(authorization: Option<&str>) -> Request<()> {
    let mut b = Request::builder()
        .method("GET")
        .uri("/orders/2024/invoices?page=2")
        .header("host", "localhost")
        .header("user-agent", "erp-agent/7.2")
        .header("accept", "application/json");
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    b.body(()).expect("request")
}

/// Admit `req` as the server does per request (generation, clock, a new exchange, then the
/// stages), then `then` with whether it was admitted to a route and the exchange.
fn admit_then<R>(s: &Setup, req: &Request<()>, then: impl FnOnce(bool, &Exchange<'_>) -> R) -> R {
    let shared = s.running.shared();
    let generation = shared.generation.load();
    let now = shared.clock.now();
    let mut x = Exchange::new(
        &s.conn,
        req.method().clone(),
        req.uri().path_and_query().cloned(),
    );
    let routed = matches!(
        ready(admit(&generation, &s.conn, req, now, &mut x)),
        Some(Ok(Admitted::Route))
    );
    then(routed, &x)
}

/// The output of a future that is ready at its first poll (`admit` waits on nothing unless
/// the fleet shares rate state, which no bench setup does); `None` if it would wait.
fn ready<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Whether `req` was admitted to a route.
fn admitted(s: &Setup, req: &Request<()>) -> bool {
    admit_then(s, req, |routed, _| routed)
}

/// Admit `req`, then choose the target the upstream stage would send it to.
fn picked(s: &Setup, req: &Request<()>) -> Option<usize> {
    admit_then(s, req, |routed, x| {
        let (_, parts) = x.route.filter(|_| routed)?;
        parts.upstream.choose(None, 0, 0)
    })
}

fn bench(c: &mut Criterion) {
    let full = setup("full");
    let bearer = format!("Bearer {}", token());
    let good = request(Some(&bearer));
    // The same claims under a signature of the wrong key.
    let (head, _) = bearer.rsplit_once('.').expect("jwt");
    let forged = request(Some(&format!(
        "{head}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    )));
    assert!(admitted(&full, &good), "the bench request is admitted");
    assert!(!admitted(&full, &forged), "the forged token is refused");
    c.bench_function("pipeline/admit/full_policy_token_cached", |b| {
        b.iter(|| black_box(admitted(&full, black_box(&good))))
    });
    c.bench_function("pipeline/admit/full_policy_forged_token", |b| {
        b.iter(|| black_box(admitted(&full, black_box(&forged))))
    });
    drop(full);

    // The same with two rate limits (client_ip before the token, token_sub after it).
    let limited = setup("full_limits");
    assert!(admitted(&limited, &good), "the limits never refuse");
    c.bench_function("pipeline/admit/full_policy_two_limits", |b| {
        b.iter(|| black_box(admitted(&limited, black_box(&good))))
    });
    drop(limited);

    // Admission and the choice of one of four targets: least request against round robin.
    for (mode, name) in [
        (
            "full_rr4",
            "pipeline/admit_and_pick/four_targets_round_robin",
        ),
        (
            "full_lr4",
            "pipeline/admit_and_pick/four_targets_least_request",
        ),
    ] {
        let four = setup(mode);
        assert!(
            picked(&four, &good).is_some(),
            "{mode}: admitted and a target picked"
        );
        c.bench_function(name, |b| {
            b.iter(|| black_box(picked(&four, black_box(&good))))
        });
    }

    let bare = setup("bare");
    let plain = request(None);
    assert!(admitted(&bare, &plain));
    c.bench_function("pipeline/admit/bare", |b| {
        b.iter(|| black_box(admitted(&bare, black_box(&plain))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
