//! The `license` commands as functions: dates, issue, inspect.

use std::path::PathBuf;

use crate::cli::license::{self as cli, CliError, IssueArgs};
use crate::license::dates::parse_date;
use crate::license::keys::{self, PublicKey};
use crate::license::tests::*;

#[test]
fn dates_are_whole_utc_days_or_rfc3339() {
    let cases: &[(&str, bool, u64)] = &[
        ("2027-12-31", true, 1_830_297_599),
        ("2027-12-31", false, 1_830_211_200),
        ("2027-12-31T23:59:59Z", true, 1_830_297_599),
        ("2027-12-31T23:59:59.999z", false, 1_830_297_599),
        ("2027-12-31 23:00:00+01:00", false, 1_830_294_000 - 3600),
        ("2028-01-01T00:30:00-00:30", false, 1_830_297_600 + 3600),
        ("1970-01-01", false, 0),
    ];
    for (s, end, want) in cases {
        assert_eq!(parse_date(s, *end), Ok(*want), "{s}");
    }
    for bad in [
        "",
        "2027",
        "2027-13-01",
        "2027-02-30",
        "27-12-31",
        "2027/12/31",
        "2027-12-31T24:00:00Z",
        "2027-12-31T23:59:59",
        "2027-12-31T23:59:59+0100",
        "1969-12-31",
        "2027-12-31Z",
        "２０２７-12-31",
        "2027-12-31T23:59:59Zjunk",
        "2027-1é-31",
    ] {
        assert!(parse_date(bad, true).is_err(), "{bad}");
    }
}

struct Keys {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public: PathBuf,
}

fn keypair() -> Keys {
    let dir = tempfile::tempdir().expect("dir");
    let files = keys::keygen(dir.path(), "license").expect("keygen");
    Keys {
        private: files.private,
        public: files.public,
        _dir: dir,
    }
}

fn args(key: &Keys) -> IssueArgs {
    IssueArgs {
        key: key.private.clone(),
        customer: "Acme".into(),
        machine_id: "m-1".into(),
        pins: vec![pin(1)],
        ips: vec!["10.1.2.3".into(), "10.9.0.0/16".into()],
        binding: None,
        routes: vec!["orders".into(), " stock ".into()],
        scopes: Vec::new(),
        not_before: None,
        expires: "2027-12-31".into(),
        id: Some("lic-7".into()),
        quota: None,
    }
}

#[test]
fn an_issued_license_inspects_with_every_field_and_verifies() {
    let k = keypair();
    let text = cli::issue(&args(&k), at(NOW)).expect("issue");
    assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
    let pubkey = PublicKey::load(&k.public).expect("pub");
    let out = cli::inspect(&text, &[(k.public.clone(), pubkey.clone())], at(NOW)).expect("inspect");
    assert_eq!(out.failure, None, "{}", out.stdout);
    for needle in [
        "id:          lic-7",
        "customer:    Acme",
        "machine id:  m-1",
        &format!("key id:      {}", pubkey.kid()),
        "match:       pin_and_ip",
        &format!("pins:        {}", pin(1)),
        "ips:         10.1.2.3/32, 10.9.0.0/16",
        "routes:      orders, stock",
        "quota:       (none)",
        "expires at:  2027-12-31T23:59:59Z",
        "signature:   valid",
        "valid now:   yes",
    ] {
        assert!(
            out.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            out.stdout
        );
    }
    // Without a key it decodes but says the signature was not checked.
    let out = cli::inspect(&text, &[], at(NOW)).expect("inspect");
    assert!(out.stdout.contains("not checked"), "{}", out.stdout);
    // Later, it says why it is not valid.
    let out = cli::inspect(&text, &[], at(1_830_297_600 + 7200)).expect("inspect");
    assert!(
        out.stdout
            .contains("valid now:   no: expired at 2027-12-31T23:59:59Z (2h ago)"),
        "{}",
        out.stdout
    );
    assert!(out.failure.is_some());
}

#[test]
fn inspect_shows_a_bad_signature_and_refuses_an_undecodable_license() {
    let k = keypair();
    let other = keypair();
    let text = cli::issue(&args(&k), at(NOW)).expect("issue");
    let wrong = PublicKey::load(&other.public).expect("pub");
    let out = cli::inspect(&text, &[(other.public.clone(), wrong)], at(NOW)).expect("inspect");
    assert!(
        out.stdout
            .contains("signature:   NOT VALID: the license was signed by key"),
        "{}",
        out.stdout
    );
    assert!(out.failure.is_some());
    assert!(matches!(
        cli::inspect(&text[..20], &[], at(NOW)),
        Err(CliError::License(_))
    ));
}

#[test]
fn issue_refuses_arguments_that_would_make_a_useless_license() {
    let k = keypair();
    type Edit = fn(&mut IssueArgs);
    let cases: Vec<(&str, Edit)> = vec![
        ("--pin/--ip", |a| {
            a.pins.clear();
            a.ips.clear();
        }),
        ("--match", |a| a.binding = Some(Match::Pin)),
        ("--match", |a| {
            a.ips.clear();
            a.binding = Some(Match::PinAndIp);
        }),
        ("--pin", |a| a.pins = vec!["sha256/short".into()]),
        ("--ip", |a| a.ips = vec!["10.1.2.3/24".into()]),
        ("--ip", |a| a.ips = vec!["example.com".into()]),
        ("--expires", |a| a.expires = "2020-01-01".into()),
        ("--expires", |a| a.expires = "tomorrow".into()),
        ("--not-before", |a| a.not_before = Some("2028-01-01".into())),
        ("--id", |a| a.id = Some("has space".into())),
        ("--quota", |a| a.quota = Some("100/week".into())),
        ("--quota", |a| a.quota = Some("0/day".into())),
    ];
    for (flag, edit) in cases {
        let mut a = args(&k);
        edit(&mut a);
        match cli::issue(&a, at(NOW)) {
            Err(CliError::Arg { flag: f, .. }) => assert_eq!(f, flag),
            other => panic!("{flag}: {other:?}"),
        }
    }
    let mut a = args(&k);
    a.key = k.public.clone();
    assert!(matches!(cli::issue(&a, at(NOW)), Err(CliError::Key(_))));
}

#[test]
fn issue_infers_the_match_and_makes_a_random_id() {
    let k = keypair();
    let keys = TrustedKeys::new([PublicKey::load(&k.public).expect("pub")]);
    let mut a = args(&k);
    a.ips.clear();
    a.id = None;
    let one = keys
        .verify(&cli::issue(&a, at(NOW)).expect("issue"))
        .expect("verify");
    let two = keys
        .verify(&cli::issue(&a, at(NOW)).expect("issue"))
        .expect("verify");
    assert_eq!(one.payload().binding, Match::Pin);
    assert_ne!(one.payload().id, two.payload().id);
    assert!(one.payload().id.starts_with("lic-"));
    a.pins.clear();
    a.ips = vec!["::ffff:10.0.0.1".into()];
    let three = keys
        .verify(&cli::issue(&a, at(NOW)).expect("issue"))
        .expect("verify");
    assert_eq!(
        (three.payload().binding, three.payload().ips.clone()),
        (Match::Ip, vec!["10.0.0.1/32".to_owned()])
    );
}

#[test]
fn a_quota_flag_is_signed_into_the_license_in_its_canonical_spelling() {
    let k = keypair();
    let mut a = args(&k);
    a.quota = Some(" 2000000/month ".into());
    let text = cli::issue(&a, at(NOW)).expect("issue");
    let pubkey = PublicKey::load(&k.public).expect("pub");
    let out = cli::inspect(&text, &[(k.public.clone(), pubkey)], at(NOW)).expect("inspect");
    assert_eq!(out.failure, None, "{}", out.stdout);
    assert!(
        out.stdout.contains("quota:       2000000/month"),
        "{}",
        out.stdout
    );
    a.quota = Some("5/d".into());
    let text = cli::issue(&a, at(NOW)).expect("issue");
    let out = cli::inspect(&text, &[], at(NOW)).expect("inspect");
    assert!(out.stdout.contains("quota:       5/day"), "{}", out.stdout);
}
