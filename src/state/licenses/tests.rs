//! Activation, revocation and persistence through `LicenseService` on a real redb file.

use std::path::{Path, PathBuf};

use super::{ActivationError, LicenseService, RevokeError};
use crate::license::format::LicenseError;
use crate::license::tests::*;
use crate::license::{LicenseDenial, LicenseState};

struct Fixture {
    _dir: tempfile::TempDir,
    store: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("licenses.redb");
    Fixture { _dir: dir, store }
}

fn open(store: &Path, keys: &[&SigningKey]) -> LicenseService {
    let (service, report) = LicenseService::open(store, trust(keys), Duration::ZERO).expect("open");
    assert!(report.unreadable.is_empty(), "{:?}", report.unreadable);
    service
}

fn grants(s: &LicenseService, machine: u8) -> Result<String, LicenseDenial> {
    s.book()
        .check(Some(&identity(machine)), ip("192.0.2.1"), "r", at(NOW))
        .map(|g| g.license_id.to_string())
}

fn states(s: &LicenseService) -> Vec<(String, LicenseState)> {
    s.list(at(NOW))
        .into_iter()
        .map(|l| (l.id, l.state))
        .collect()
}

#[test]
fn an_activated_license_grants_on_the_next_check_and_is_listed() {
    let f = fixture();
    let k = key();
    let s = open(&f.store, &[&k]);
    assert_eq!(grants(&s, 1), Err(LicenseDenial::Missing));
    let summary = s
        .activate(&issue(&k, &payload("lic-1")), at(NOW))
        .expect("activate");
    assert_eq!(
        (summary.id.as_str(), summary.customer.as_str()),
        ("lic-1", "Acme")
    );
    assert_eq!(
        (summary.machine_id.as_str(), summary.state),
        ("machine-1", LicenseState::Active)
    );
    assert_eq!(summary.key_id, k.public_key().kid());
    assert_eq!(grants(&s, 1), Ok("lic-1".into()));
    let json = summary.to_json();
    assert_eq!(json["expires_at"], "2027-02-14T08:00:00Z");
    assert_eq!(json["state"], "active");
}

#[test]
fn a_refused_activation_says_why_and_changes_nothing() {
    let f = fixture();
    let k = key();
    let stranger = key();
    let s = open(&f.store, &[&k]);
    s.activate(&issue(&k, &payload("taken")), at(NOW))
        .expect("activate");
    let good = issue(&k, &payload("lic-1"));
    type Case = (&'static str, String, fn(&ActivationError) -> bool);
    let cases: Vec<Case> = vec![
        ("tampered", good.replacen("PCL1.ey", "PCL1.ez", 1), |e| {
            matches!(e, ActivationError::Refused(LicenseError::Tampered))
        }),
        ("truncated", good[..good.len() - 10].to_owned(), |e| {
            matches!(e, ActivationError::Refused(LicenseError::Truncated(_)))
        }),
        ("re-encoded", format!("{good}=="), |e| {
            matches!(e, ActivationError::Refused(LicenseError::ReEncoded(_)))
        }),
        ("unknown key", issue(&stranger, &payload("lic-2")), |e| {
            matches!(e, ActivationError::Refused(LicenseError::UnknownKey { .. }))
        }),
        ("wrong version", good.replacen("PCL1", "PCL2", 1), |e| {
            matches!(
                e,
                ActivationError::Refused(LicenseError::UnsupportedVersion { .. })
            )
        }),
        (
            "already expired",
            issue(
                &k,
                &Payload {
                    expires_at: NOW - 1,
                    ..payload("lic-3")
                },
            ),
            |e| matches!(e, ActivationError::AlreadyExpired { .. }),
        ),
        (
            "duplicate id",
            issue(
                &k,
                &Payload {
                    customer: "Other".into(),
                    ..payload("taken")
                },
            ),
            |e| matches!(e, ActivationError::Duplicate { .. }),
        ),
    ];
    for (name, text, expected) in cases {
        let e = s.activate(&text, at(NOW)).expect_err(name);
        assert!(expected(&e), "{name}: {e:?}");
        assert_eq!(
            states(&s),
            vec![("taken".into(), LicenseState::Active)],
            "{name}"
        );
    }
    drop(s);
    let s = open(&f.store, &[&k]);
    assert_eq!(states(&s), vec![("taken".into(), LicenseState::Active)]);
    let e = s.activate(
        &issue(
            &k,
            &Payload {
                expires_at: NOW - 1,
                ..payload("x")
            },
        ),
        at(NOW),
    );
    assert_eq!(
        e.expect_err("expired").to_string(),
        "license \"x\" already expired at 2027-01-15T07:59:59Z"
    );
}

#[test]
fn revocation_is_persisted_and_denies_the_next_check() {
    let f = fixture();
    let k = key();
    let s = open(&f.store, &[&k]);
    s.activate(&issue(&k, &payload("lic-1")), at(NOW))
        .expect("activate");
    assert_eq!(grants(&s, 1), Ok("lic-1".into()));
    let summary = s.revoke("lic-1", at(NOW)).expect("revoke");
    assert_eq!(summary.state, LicenseState::Revoked);
    assert_eq!(grants(&s, 1), Err(LicenseDenial::Revoked));
    // Idempotent; an unknown id is an error.
    assert!(s.revoke("lic-1", at(NOW + 5)).is_ok());
    assert!(matches!(
        s.revoke("nope", at(NOW)),
        Err(RevokeError::NotFound { .. })
    ));
    // A revoked id cannot be activated again.
    assert!(matches!(
        s.activate(&issue(&k, &payload("lic-1")), at(NOW)),
        Err(ActivationError::Duplicate { .. })
    ));
    drop(s);
    let s = open(&f.store, &[&k]);
    assert_eq!(grants(&s, 1), Err(LicenseDenial::Revoked));
    assert_eq!(states(&s), vec![("lic-1".into(), LicenseState::Revoked)]);
}

#[test]
fn reopening_the_store_keeps_every_activation() {
    let f = fixture();
    let k = key();
    let s = open(&f.store, &[&k]);
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let p = Payload {
            pins: vec![pin(i as u8 + 1)],
            ..payload(id)
        };
        s.activate(&issue(&k, &p), at(NOW)).expect("activate");
    }
    drop(s);
    let (s, report) = LicenseService::open(&f.store, trust(&[&k]), Duration::ZERO).expect("open");
    assert_eq!(report.loaded, 3);
    assert!(report.warnings().is_empty());
    for (m, id) in [(1, "a"), (2, "b"), (3, "c")] {
        assert_eq!(grants(&s, m), Ok(id.to_owned()));
    }
}

#[test]
fn licenses_from_either_of_two_trusted_keys_grant_and_a_removed_key_stops_granting() {
    let f = fixture();
    let (old, new) = (key(), key());
    let s = open(&f.store, &[&old, &new]);
    s.activate(&issue(&old, &payload("by-old")), at(NOW))
        .expect("old");
    let p = Payload {
        pins: vec![pin(2)],
        ..payload("by-new")
    };
    s.activate(&issue(&new, &p), at(NOW)).expect("new");
    assert_eq!(grants(&s, 1), Ok("by-old".into()));
    assert_eq!(grants(&s, 2), Ok("by-new".into()));
    drop(s);

    // The old key leaves the config: its license is kept, listed untrusted, never granted.
    let (s, report) = LicenseService::open(&f.store, trust(&[&new]), Duration::ZERO).expect("open");
    assert_eq!(
        report.untrusted,
        vec![("by-old".to_owned(), old.public_key().kid().to_owned())]
    );
    assert_eq!(report.warnings().len(), 1);
    assert_eq!(grants(&s, 1), Err(LicenseDenial::Missing));
    assert_eq!(grants(&s, 2), Ok("by-new".into()));
    assert_eq!(
        states(&s),
        vec![
            ("by-new".into(), LicenseState::Active),
            ("by-old".into(), LicenseState::Untrusted)
        ]
    );
    assert!(matches!(
        s.activate(&issue(&old, &payload("later")), at(NOW)),
        Err(ActivationError::Refused(LicenseError::UnknownKey { .. }))
    ));

    // Trusting it again at run time (a config reload) brings the license back.
    let report = s
        .reconfigure(trust(&[&old, &new]), Duration::ZERO)
        .expect("reconfigure");
    assert!(report.untrusted.is_empty());
    assert_eq!(grants(&s, 1), Ok("by-old".into()));
}

#[test]
fn the_store_file_is_private_and_opened_once() {
    let f = fixture();
    let k = key();
    let s = open(&f.store, &[&k]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&f.store)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // redb locks the file: a second opener (another gateway) is refused, not corrupted.
    assert!(LicenseService::open(&f.store, trust(&[&k]), Duration::ZERO).is_err());
    drop(s);
}

#[test]
fn a_store_in_a_missing_folder_is_an_error_that_names_it() {
    let f = fixture();
    let path = f.store.with_file_name("missing").join("l.redb");
    let e = LicenseService::open(&path, trust(&[&key()]), Duration::ZERO).expect_err("missing");
    assert!(e.to_string().contains("missing/l.redb"), "{e}");
}
