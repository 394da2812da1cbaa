//! The request-path check: bindings, dates, grace, revocation, ranking, the index.

use super::*;
use crate::license::{LicenseBook, LicenseCounts, LicenseDenial as D, LicenseState};

fn book_with(licenses: &[Payload]) -> LicenseBook {
    let k = key();
    let book = LicenseBook::new(Duration::ZERO);
    for p in licenses {
        book.insert(&verified(&k, p)).expect("insert");
    }
    book
}

fn by_ip(id: &str, nets: &[&str]) -> Payload {
    Payload {
        binding: Match::Ip,
        pins: Vec::new(),
        ips: nets.iter().map(|s| s.to_string()).collect(),
        ..payload(id)
    }
}

fn both(id: &str, machine: u8, net: &str) -> Payload {
    Payload {
        binding: Match::PinAndIp,
        pins: vec![pin(machine)],
        ips: vec![net.into()],
        ..payload(id)
    }
}

#[test]
fn a_pinned_license_grants_its_certificate_only() {
    let book = book_with(&[payload("lic-1")]);
    let g = book
        .check(Some(&identity(1)), ip("192.0.2.1"), "orders", at(NOW))
        .expect("grant");
    assert_eq!(
        (&*g.license_id, &*g.machine_id, g.in_grace),
        ("lic-1", "machine-1", false)
    );
    assert_eq!(g.expires_at, at(EXPIRES));
    let denied = |id: Option<&ClientIdentity>| book.check(id, ip("192.0.2.1"), "orders", at(NOW));
    assert_eq!(denied(Some(&identity(2))), Err(D::Missing));
    assert_eq!(denied(None), Err(D::Missing));
}

#[test]
fn an_address_license_grants_its_networks_including_ipv4_mapped_ipv6() {
    let book = book_with(&[by_ip(
        "lic-1",
        &["10.1.0.0/16", "2001:db8:1::/48", "::ffff:172.16.0.0/108"],
    )]);
    let check = |a: &str| {
        book.check(None, ip(a), "orders", at(NOW))
            .map(|g| g.license_id)
    };
    for inside in [
        "10.1.2.3",
        "::ffff:10.1.200.1",
        "2001:db8:1::7",
        "172.16.9.9",
    ] {
        assert!(check(inside).is_ok(), "{inside}");
    }
    for outside in ["10.2.0.1", "2001:db8:2::1", "::ffff:10.2.0.1", "172.32.0.1"] {
        assert_eq!(check(outside), Err(D::Missing), "{outside}");
    }
}

#[test]
fn pin_and_ip_needs_both_on_the_same_license() {
    let book = book_with(&[
        both("lic-1", 1, "10.1.0.0/16"),
        both("lic-2", 2, "10.2.0.0/16"),
    ]);
    let check = |m: Option<u8>, a: &str| book.check(m.map(identity).as_ref(), ip(a), "r", at(NOW));
    assert_eq!(
        check(Some(1), "10.1.0.9").map(|g| g.license_id),
        Ok("lic-1".into())
    );
    assert_eq!(
        check(Some(2), "10.2.0.9").map(|g| g.license_id),
        Ok("lic-2".into())
    );
    // Machine 1's key from machine 2's network: each half matches a different license.
    assert_eq!(check(Some(1), "10.2.0.9"), Err(D::BindingMismatch));
    assert_eq!(check(Some(1), "192.0.2.1"), Err(D::BindingMismatch));
    assert_eq!(check(None, "10.1.0.9"), Err(D::BindingMismatch));
    assert_eq!(check(Some(3), "192.0.2.1"), Err(D::Missing));
}

#[test]
fn a_license_restricted_to_routes_covers_only_those() {
    let book = book_with(&[Payload {
        routes: vec!["orders".into(), "stock".into()],
        scopes: vec!["read".into()],
        ..payload("lic-1")
    }]);
    let check = |r: &str| book.check(Some(&identity(1)), ip("192.0.2.1"), r, at(NOW));
    assert!(check("orders").is_ok());
    assert_eq!(
        &*check("stock").expect("grant").scopes,
        &[Box::<str>::from("read")]
    );
    assert_eq!(check("billing"), Err(D::BindingMismatch));
}

#[test]
fn validity_is_inclusive_at_both_ends_and_judged_at_the_given_time() {
    let book = book_with(&[payload("lic-1")]);
    let check = |t: u64| book.check(Some(&identity(1)), ip("192.0.2.1"), "r", at(t));
    assert_eq!(check(NOT_BEFORE - 1), Err(D::NotYetValid));
    assert!(check(NOT_BEFORE).is_ok());
    assert!(check(EXPIRES).is_ok());
    // Sub-second precision does not matter: the last second is valid as a whole.
    let late = at(EXPIRES) + Duration::from_millis(999);
    assert!(
        book.check(Some(&identity(1)), ip("192.0.2.1"), "r", late)
            .is_ok()
    );
    assert_eq!(check(EXPIRES + 1), Err(D::Expired));
}

#[test]
fn expired_license_is_denied() {
    let book = book_with(&[payload("lic-1")]);
    assert_eq!(
        book.check(
            Some(&identity(1)),
            ip("192.0.2.1"),
            "r",
            at(EXPIRES + 86_400)
        ),
        Err(D::Expired)
    );
}

#[test]
fn within_the_grace_period_an_expired_license_grants_with_a_warning() {
    let book = book_with(&[payload("lic-1")]);
    book.set_grace(Duration::from_secs(72 * 3600));
    let check = |t: u64| book.check(Some(&identity(1)), ip("192.0.2.1"), "r", at(t));
    assert_eq!(check(EXPIRES).map(|g| g.in_grace), Ok(false));
    assert_eq!(check(EXPIRES + 1).map(|g| g.in_grace), Ok(true));
    assert_eq!(check(EXPIRES + 72 * 3600).map(|g| g.in_grace), Ok(true));
    assert_eq!(check(EXPIRES + 72 * 3600 + 1), Err(D::Expired));
    assert_eq!(book.list(at(EXPIRES + 10))[0].state, LicenseState::InGrace);
}

#[test]
fn revocation_is_seen_by_the_next_check() {
    let book = book_with(&[payload("lic-1")]);
    let check = || book.check(Some(&identity(1)), ip("192.0.2.1"), "r", at(NOW));
    assert!(check().is_ok());
    assert!(book.revoke("lic-1"));
    assert_eq!(check(), Err(D::Revoked));
    assert!(!book.revoke("nope"));
    assert_eq!(book.list(at(NOW))[0].state, LicenseState::Revoked);
}

#[test]
fn a_valid_license_wins_and_otherwise_the_most_telling_denial() {
    let expired = |id: &str| Payload {
        expires_at: NOW - 10,
        not_before: NOW - 100,
        ..payload(id)
    };
    let future = |id: &str| Payload {
        not_before: NOW + 10,
        ..payload(id)
    };
    // (licenses, revoked ids, expected)
    type Case = (
        Vec<Payload>,
        &'static [&'static str],
        Result<&'static str, D>,
    );
    let cases: Vec<Case> = vec![
        (
            vec![expired("a"), payload("b"), future("c")],
            &["a"],
            Ok("b"),
        ),
        (vec![expired("a"), future("b")], &[], Err(D::Expired)),
        (vec![expired("a"), future("b")], &["a"], Err(D::Revoked)),
        (
            vec![
                future("a"),
                Payload {
                    routes: vec!["x".into()],
                    ..payload("b")
                },
            ],
            &[],
            Err(D::NotYetValid),
        ),
        (
            vec![Payload {
                routes: vec!["x".into()],
                ..payload("a")
            }],
            &[],
            Err(D::BindingMismatch),
        ),
    ];
    for (licenses, revoked, expected) in cases {
        let book = book_with(&licenses);
        for id in revoked {
            book.revoke(id);
        }
        let got = book.check(Some(&identity(1)), ip("192.0.2.1"), "r", at(NOW));
        assert_eq!(
            got.map(|g| g.license_id.to_string()),
            expected.map(str::to_owned),
            "{licenses:?}"
        );
    }
}

#[test]
fn a_full_grant_is_preferred_over_one_in_grace() {
    let book = book_with(&[
        Payload {
            expires_at: NOW - 10,
            ..payload("old")
        },
        payload("new"),
    ]);
    book.set_grace(Duration::from_secs(3600));
    let g = book
        .check(Some(&identity(1)), ip("192.0.2.1"), "r", at(NOW))
        .expect("grant");
    assert_eq!((&*g.license_id, g.in_grace), ("new", false));
}

#[test]
fn counts_report_active_expiring_soon_and_in_grace() {
    let book = book_with(&[
        payload("far"),
        Payload {
            expires_at: NOW + 3 * 86_400,
            ..payload("soon")
        },
        Payload {
            expires_at: NOW - 60,
            ..payload("grace")
        },
        Payload {
            expires_at: NOW - 86_400,
            ..payload("gone")
        },
        Payload {
            not_before: NOW + 60,
            ..payload("later")
        },
        payload("revoked"),
    ]);
    book.revoke("revoked");
    book.set_grace(Duration::from_secs(3600));
    assert_eq!(
        book.counts(at(NOW)),
        LicenseCounts {
            active: 2,
            expiring_within_7_days: 1,
            in_grace: 1
        }
    );
    assert_eq!(book.len(), 6);
}

#[test]
fn a_duplicate_id_is_refused_by_the_book() {
    let k = key();
    let book = LicenseBook::new(Duration::ZERO);
    book.insert(&verified(&k, &payload("lic-1")))
        .expect("first");
    assert!(book.insert(&verified(&k, &payload("lic-1"))).is_err());
}

fn numbered(i: u16) -> [u8; 32] {
    let mut h = [7u8; 32];
    h[..2].copy_from_slice(&i.to_be_bytes());
    h
}

#[test]
fn thousands_of_licenses_inserted_one_by_one_are_all_found() {
    // Enough inserts to merge the recent layer into the base several times.
    let k = key();
    let book = LicenseBook::new(Duration::ZERO);
    let n: u16 = 3000;
    for i in 0..n {
        let [hi, lo] = i.to_be_bytes();
        let p = match i % 3 {
            0 => Payload {
                pins: vec![format_spki_pin(&numbered(i))],
                ..payload(&format!("l{i}"))
            },
            1 => by_ip(&format!("l{i}"), &[&format!("10.{hi}.{lo}.0/24")]),
            _ => by_ip(&format!("l{i}"), &[&format!("2001:db8:{i:x}::/48")]),
        };
        book.insert(&verified(&k, &p)).expect("insert");
    }
    for i in 0..n {
        let [hi, lo] = i.to_be_bytes();
        let mut id = identity(0);
        id.spki_sha256 = numbered(i);
        let (who, addr) = match i % 3 {
            0 => (Some(&id), ip("192.0.2.1")),
            1 => (None, ip(&format!("10.{hi}.{lo}.9"))),
            _ => (None, ip(&format!("2001:db8:{i:x}::9"))),
        };
        let g = book.check(who, addr, "r", at(NOW)).expect("grant");
        assert_eq!(&*g.license_id, format!("l{i}"));
    }
    assert_eq!(
        book.check(None, ip("10.255.255.1"), "r", at(NOW)),
        Err(D::Missing)
    );
}
