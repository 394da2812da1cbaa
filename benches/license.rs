//! The license check with 100,000 active licenses (a third each bound by pin, by address and
//! by both): a hit by pin, a hit by address, and a miss. Also prints what one activation
//! costs with that many licenses (publishing a new index).
//!
//! `cargo bench --bench license -- --warm-up-time 1 --measurement-time 3`

// Bench set-up may panic: it is measurement code, never run on input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::identity::{ClientIdentity, format_spki_pin, sha256};
use portcullis::license::{LicenseBook, Match, Payload, SigningKey, TrustedKeys, Verified};

const LICENSES: u32 = 100_000;
const NOW: u64 = 1_800_000_000;

fn spki(i: u32) -> [u8; 32] {
    sha256(&i.to_be_bytes())
}

fn addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | i)
}

/// License `i`: pin, address (every tenth a /24 of its own), or both, by `i % 3`.
fn payload(i: u32) -> Payload {
    let (binding, pins, ips) = match i % 3 {
        0 => (Match::Pin, vec![format_spki_pin(&spki(i))], vec![]),
        1 if i % 10 == 1 => (
            Match::Ip,
            vec![],
            vec![format!("11.{}.{}.0/24", i >> 8 & 255, i & 255)],
        ),
        1 => (Match::Ip, vec![], vec![format!("{}/32", addr(i))]),
        _ => (
            Match::PinAndIp,
            vec![format_spki_pin(&spki(i))],
            vec![format!("{}/32", addr(i))],
        ),
    };
    Payload {
        id: format!("lic-{i}"),
        kid: String::new(),
        customer: "Acme".into(),
        machine_id: format!("machine-{i}"),
        binding,
        pins,
        ips,
        routes: vec![],
        scopes: vec![],
        issued_at: NOW - 86_400,
        not_before: NOW - 86_400,
        expires_at: NOW + 86_400 * 365,
        quota: None,
    }
}

fn licenses(key: &SigningKey, keys: &TrustedKeys, range: std::ops::Range<u32>) -> Vec<Verified> {
    range
        .map(|i| {
            let text = key.issue(&payload(i)).expect("issue");
            keys.verify(&text).expect("verify")
        })
        .collect()
}

fn identity(i: u32) -> ClientIdentity {
    ClientIdentity {
        spki_sha256: spki(i),
        cert_sha256: [0; 32],
        subject: String::new(),
        common_name: None,
        organization: None,
        sans: vec![],
        serial: String::new(),
        not_before: SystemTime::UNIX_EPOCH,
        not_after: SystemTime::UNIX_EPOCH,
    }
}

fn bench(c: &mut Criterion) {
    let key = SigningKey::generate().expect("key");
    let keys = TrustedKeys::new([key.public_key().clone()]);
    let started = Instant::now();
    let all = licenses(&key, &keys, 0..LICENSES);
    eprintln!(
        "signed and verified {LICENSES} licenses in {:?}",
        started.elapsed()
    );
    let book = LicenseBook::new(Duration::ZERO);
    let started = Instant::now();
    book.replace_with(&all);
    eprintln!("built the index in {:?}", started.elapsed());

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    let by_pin = identity(30_000);
    let stranger = identity(LICENSES + 1);
    let elsewhere = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert!(book.check(Some(&by_pin), elsewhere, "orders", now).is_ok());
    assert!(
        book.check(Some(&stranger), IpAddr::V4(addr(30_004)), "orders", now)
            .is_ok()
    );
    assert!(
        book.check(Some(&stranger), elsewhere, "orders", now)
            .is_err()
    );

    let mut g = c.benchmark_group("license_check_100k");
    g.bench_function("hit_by_pin", |b| {
        b.iter(|| {
            book.check(
                black_box(Some(&by_pin)),
                black_box(elsewhere),
                "orders",
                now,
            )
        })
    });
    g.bench_function("hit_by_ip", |b| {
        let ip = IpAddr::V4(addr(30_004));
        b.iter(|| book.check(black_box(Some(&stranger)), black_box(ip), "orders", now))
    });
    g.bench_function("hit_by_pin_and_ip", |b| {
        let both = identity(30_002);
        let ip = IpAddr::V4(addr(30_002));
        b.iter(|| book.check(black_box(Some(&both)), black_box(ip), "orders", now))
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            book.check(
                black_box(Some(&stranger)),
                black_box(elsewhere),
                "orders",
                now,
            )
        })
    });
    g.finish();

    // One activation at a time on top of 100,000 (what POST /licenses does after the store
    // write): the mean, and the worst case (a merge of the recent layer into the base).
    let extra = licenses(&key, &keys, LICENSES..LICENSES + 2_000);
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    for v in &extra {
        let t = Instant::now();
        book.insert(v).expect("insert");
        worst = worst.max(t.elapsed());
    }
    eprintln!(
        "activation into the book with {LICENSES}+ licenses: mean {:?}, worst {:?} (over {})",
        started.elapsed() / extra.len() as u32,
        worst,
        extra.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
