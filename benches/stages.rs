//! Per-stage costs on realistic sizes: the IP lookup with 10,000 CIDRs, the pin check,
//! route selection among 1,000 routes, and rendering a denial. Run with
//! `cargo bench --bench stages`.

// Bench set-up may panic: it is measurement code, never run on input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use ipnet::IpNet;
use portcullis::denial::Denial;
use portcullis::identity::{ClientIdentity, PinSet};
use portcullis::ip_filter::{IpPolicy, IpSet};
use portcullis::request_id::RequestId;
use portcullis::routing::{Route, RouteTable};

/// A deterministic spread of 10,000 networks: 8,000 IPv4 /24../32 and 2,000 IPv6 /48../64.
fn ten_thousand_cidrs() -> Vec<IpNet> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut nets = Vec::with_capacity(10_000);
    for _ in 0..8_000 {
        let r = next();
        let ip = Ipv4Addr::from(r as u32);
        let len = 24 + (r >> 40) as u8 % 9;
        nets.push(
            IpNet::new(IpAddr::V4(ip), len)
                .map(|n| n.trunc())
                .unwrap_or_default(),
        );
    }
    for _ in 0..2_000 {
        let (a, b) = (next(), next());
        let ip = Ipv6Addr::from(((a as u128) << 64) | b as u128);
        let len = 48 + (b >> 50) as u8 % 17;
        nets.push(
            IpNet::new(IpAddr::V6(ip), len)
                .map(|n| n.trunc())
                .unwrap_or_default(),
        );
    }
    nets
}

fn ip_lookup(c: &mut Criterion) {
    let nets = ten_thousand_cidrs();
    let inside = match nets[4_321] {
        IpNet::V4(n) => IpAddr::V4(n.network()),
        IpNet::V6(n) => IpAddr::V6(n.network()),
    };
    let policy = IpPolicy {
        allow: IpSet::new(nets.iter().copied()),
        deny: IpSet::new(nets.iter().step_by(10).copied()),
    };
    let mut g = c.benchmark_group("ip_filter/10k_cidrs");
    g.bench_function("v4_hit", |b| {
        b.iter(|| black_box(&policy).admits(black_box(inside)))
    });
    let miss: IpAddr = "203.0.113.77".parse().unwrap_or(inside);
    g.bench_function("v4_miss", |b| {
        b.iter(|| black_box(&policy).admits(black_box(miss)))
    });
    let v6: IpAddr = "2001:db8::1".parse().unwrap_or(inside);
    g.bench_function("v6_miss", |b| {
        b.iter(|| black_box(&policy).admits(black_box(v6)))
    });
    g.finish();
}

fn pin_check(c: &mut Criterion) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["agent".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let id = ClientIdentity::from_der(cert.der()).expect("identity");
    // 1,000 pinned keys, the client's among them.
    let mut spki: Vec<[u8; 32]> = (0..999u32)
        .map(|i| portcullis::identity::sha256(&i.to_le_bytes()))
        .collect();
    spki.push(id.spki_sha256);
    let pins = PinSet::new(spki, []);
    c.bench_function("identity/pin_check_1000_pins", |b| {
        b.iter(|| black_box(&pins).admits(black_box(Some(&id))))
    });
}

fn route_selection(c: &mut Criterion) {
    let routes: Vec<Arc<Route>> = (0..1_000)
        .map(|i| {
            Arc::new(Route {
                id: i,
                name: format!("r{i}").into(),
                host: (i % 4 == 0).then(|| format!("tenant{}.example.com", i % 50).into()),
                path_prefix: format!("/api/v{}/service{}/items", i % 3, i).into(),
                methods: (i % 2 == 0).then(|| vec![Method::GET, Method::POST]),
                path_params: false,
                case_insensitive: false,
                max_body_bytes: None,
                pins: PinSet::default(),
                ip: IpPolicy::default(),
                license: portcullis::license::RouteLicense::NotRequired,
                auth: portcullis::token::RouteAuth::None,
                limits: Arc::from([]),
                rewrite: None,
                websocket: false,
                retry_non_idempotent: false,
                credential: None,
            })
        })
        .collect();
    let table = RouteTable::new(routes);
    c.bench_function("routing/select_among_1000", |b| {
        b.iter(|| {
            let path = "/api/v1/service457/items/12345/lines";
            let canonical = portcullis::routing::path::canonical(black_box(path)).ok()?;
            table
                .select(
                    black_box(Some("api.example.com")),
                    &canonical,
                    black_box(&Method::GET),
                )
                .ok()
                .map(|r| r.name.len())
        })
    });
}

fn denial_rendering(c: &mut Criterion) {
    let id = RequestId::next();
    c.bench_function("denial/render_403", |b| {
        b.iter(|| {
            let r: http::Response<bytes::Bytes> =
                black_box(Denial::IpNotAllowed).response(black_box(&id));
            r
        })
    });
}

criterion_group!(
    benches,
    ip_lookup,
    pin_check,
    route_selection,
    denial_rendering
);
criterion_main!(benches);
