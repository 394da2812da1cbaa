//! The license text: round trip, and every way of damaging it is refused with its category.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use proptest::prelude::*;

use super::*;
use crate::license::format::{self, LicenseError};

#[test]
fn a_signed_license_verifies_and_round_trips() {
    let k = key();
    let mut p = payload("lic-1");
    p.binding = Match::PinAndIp;
    p.ips = vec!["10.1.2.0/24".into(), "2001:db8::/32".into()];
    p.routes = vec!["orders".into()];
    p.scopes = vec!["read".into()];
    let text = issue(&k, &p);
    assert!(text.starts_with("PCL1.") && !text.contains(char::is_whitespace));
    let v = trust(&[&k]).verify(&text).expect("verify");
    p.kid = k.public_key().kid().to_owned();
    assert_eq!(v.payload(), &p);
    assert_eq!(v.text(), text);
    assert_eq!(v.license().pins, vec![spki(1)]);
    // Re-encoding what was decoded gives the same text: one text per license.
    let env = format::open_envelope(&text).expect("envelope");
    assert_eq!(format::join(env.signed, &env.signature), text);
    // A pasted newline or surrounding spaces are fine.
    assert!(trust(&[&k]).verify(&format!("  {text}\n")).is_ok());
}

/// Replace the payload part of `text` with `json`, keeping the signature.
fn with_payload(text: &str, json: &[u8]) -> String {
    let sig = text.rsplit('.').next().unwrap_or_default();
    format!("PCL1.{}.{sig}", URL_SAFE_NO_PAD.encode(json))
}

/// Sign `json` as the payload with `k`, whatever it says.
fn signed_raw(k: &SigningKey, json: &[u8]) -> String {
    let signed = format!("PCL1.{}", URL_SAFE_NO_PAD.encode(json));
    format::join(&signed, &k.sign(signed.as_bytes()))
}

fn decoded(text: &str) -> Payload {
    let env = format::open_envelope(text).expect("envelope");
    format::parse_payload(&env.payload).expect("payload")
}

#[test]
fn every_kind_of_damage_is_refused_with_its_category() {
    use LicenseError as E;
    // The "standard alphabet" case below only differs from the original if the URL-safe
    // text has a '-' or '_'; about 1 signature in 15 has neither, so pick a key whose
    // license does (bounded: 200 keys all without one would be a 1-in-10^236 event).
    let (k, text) = (0..200)
        .map(|_| {
            let k = key();
            let t = issue(&k, &payload("lic-1"));
            (k, t)
        })
        .find(|(_, t)| t.contains(['-', '_']))
        .expect("a license text with '-' or '_'");
    let other = key();
    let second = issue(&k, &payload("lic-2"));
    let (head, sig) = text.rsplit_once('.').expect("dot");
    let payload_b64 = &head[5..];
    let original = decoded(&text);
    let json = |p: &Payload| serde_json::to_vec(p).expect("json");
    let changed = |f: &dyn Fn(&mut Payload)| {
        let mut p = original.clone();
        f(&mut p);
        with_payload(&text, &json(&p))
    };
    let mut last = sig.as_bytes().to_vec();
    let tail = last.pop().expect("char");
    let stray = match tail {
        b'A' => 'B',
        b'Q' => 'R',
        b'g' => 'h',
        _ => 'x',
    };
    let mut flipped_sig = sig.as_bytes().to_vec();
    flipped_sig[10] = if flipped_sig[10] == b'A' { b'B' } else { b'A' };
    let no_pins = signed_raw(
        &k,
        &json(&Payload {
            pins: Vec::new(),
            ..original.clone()
        }),
    );
    let mut unknown_field = json(&original);
    unknown_field.pop();
    unknown_field.extend_from_slice(b",\"extra\":1}");
    let pretty = serde_json::to_vec_pretty(&original).expect("json");
    let forged_kid = {
        let mut p = payload("lic-9");
        p.kid = k.public_key().kid().to_owned();
        let signed = format::signed_part(&p).expect("signed");
        format::join(&signed, &other.sign(signed.as_bytes()))
    };

    type Case = (&'static str, String, fn(&LicenseError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "customer changed",
            changed(&|p| p.customer = "Evil".into()),
            |e| *e == E::Tampered,
        ),
        (
            "expiry extended",
            changed(&|p| p.expires_at = EXPIRES + 1),
            |e| *e == E::Tampered,
        ),
        ("pin swapped", changed(&|p| p.pins = vec![pin(2)]), |e| {
            *e == E::Tampered
        }),
        (
            "payload of another license",
            format!("{}.{sig}", second.rsplit_once('.').expect("dot").0),
            |e| *e == E::Tampered,
        ),
        (
            "signature byte changed",
            format!("{head}.{}", String::from_utf8_lossy(&flipped_sig)),
            |e| *e == E::Tampered,
        ),
        (
            "payload is not JSON",
            with_payload(&text, b"not json"),
            |e| *e == E::Tampered,
        ),
        (
            "signed by a key not trusted",
            issue(&other, &payload("lic-3")),
            |e| matches!(e, E::UnknownKey { .. }),
        ),
        ("trusted key id, other signer", forged_kid, |e| {
            *e == E::Tampered
        }),
        ("empty", String::new(), |e| matches!(e, E::Truncated(_))),
        ("prefix only", "PCL1.".into(), |e| {
            matches!(e, E::Truncated(_))
        }),
        ("cut in the payload", text[..30].to_owned(), |e| {
            matches!(e, E::Truncated(_))
        }),
        ("signature missing", format!("{head}."), |e| {
            matches!(e, E::Truncated(_))
        }),
        (
            "cut in the signature",
            text[..text.len() - 20].to_owned(),
            |e| matches!(e, E::Truncated(_)),
        ),
        (
            "last character dropped",
            text[..text.len() - 1].to_owned(),
            |e| matches!(e, E::Truncated(_)),
        ),
        ("padding added to the signature", format!("{text}=="), |e| {
            matches!(e, E::ReEncoded(_))
        }),
        (
            "padding added to the payload",
            format!("PCL1.{payload_b64}==.{sig}"),
            |e| matches!(e, E::ReEncoded(_)),
        ),
        (
            "standard alphabet",
            format!(
                "PCL1.{}.{}",
                STANDARD_NO_PAD.encode(URL_SAFE_NO_PAD.decode(payload_b64).expect("b64")),
                STANDARD_NO_PAD.encode(URL_SAFE_NO_PAD.decode(sig).expect("b64"))
            ),
            |e| matches!(e, E::ReEncoded(_)),
        ),
        (
            "stray bits in the last character",
            format!("{head}.{}{stray}", String::from_utf8_lossy(&last)),
            |e| matches!(e, E::ReEncoded(_)),
        ),
        (
            "pretty-printed JSON, validly signed",
            signed_raw(&k, &pretty),
            |e| matches!(e, E::ReEncoded(_)),
        ),
        (
            "pretty-printed JSON, old signature",
            with_payload(&text, &pretty),
            |e| matches!(e, E::ReEncoded(_)),
        ),
        (
            "unknown field, validly signed",
            signed_raw(&k, &unknown_field),
            |e| matches!(e, E::Malformed(_)),
        ),
        (
            "version 2",
            text.replacen("PCL1", "PCL2", 1),
            |e| matches!(e, E::UnsupportedVersion { found } if found == "PCL2"),
        ),
        ("version 0", text.replacen("PCL1", "PCL0", 1), |e| {
            matches!(e, E::UnsupportedVersion { .. })
        }),
        ("lower-case prefix", text.replacen("PCL1", "pcl1", 1), |e| {
            matches!(e, E::Malformed(_))
        }),
        ("a JWT", "eyJhbGciOiJIUzI1NiJ9.e30.abc".into(), |e| {
            matches!(e, E::Malformed(_))
        }),
        (
            "space inside",
            format!("{} {}", &text[..40], &text[40..]),
            |e| matches!(e, E::Malformed(_)),
        ),
        ("data after the signature", format!("{text}.AAAA"), |e| {
            matches!(e, E::Malformed(_))
        }),
        ("signature too long", format!("{text}AAAA"), |e| {
            matches!(e, E::Malformed(_))
        }),
        ("signed, no pins for match = pin", no_pins, |e| {
            matches!(e, E::Invalid(_))
        }),
        (
            "too long",
            format!("PCL1.{}.{sig}", "A".repeat(20_000)),
            |e| matches!(e, E::Malformed(_)),
        ),
    ];
    assert!(
        payload_b64.contains(['-', '_']) || sig.contains(['-', '_']),
        "test needs a base64url-only character"
    );
    let keys = trust(&[&k]);
    for (name, bad, expected) in cases {
        match keys.verify(&bad) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert!(expected(&e), "{name}: wrong category: {e:?}"),
        }
    }
}

#[test]
fn every_refusal_reads_as_an_operator_sentence() {
    let k = key();
    let e = trust(&[])
        .verify(&issue(&k, &payload("x")))
        .expect_err("untrusted");
    assert_eq!(
        e.to_string(),
        format!(
            "the license was signed by key {}, which is not one of the trusted issuer keys ([licenses] trusted_keys)",
            k.public_key().kid()
        )
    );
    assert!(LicenseError::Tampered.to_string().contains("altered"));
}

#[test]
fn a_flip_of_any_bit_of_any_byte_is_refused() {
    let k = key();
    let keys = trust(&[&k]);
    let text = issue(&k, &payload("lic-1"));
    for i in 0..text.len() {
        for bit in 0..8 {
            let mut b = text.clone().into_bytes();
            b[i] ^= 1 << bit;
            let s = String::from_utf8_lossy(&b);
            assert!(keys.verify(&s).is_err(), "byte {i} bit {bit} accepted: {s}");
        }
    }
}

#[test]
fn ipv4_mapped_networks_are_read_as_ipv4() {
    let net: ipnet::IpNet = "::ffff:10.0.0.0/104".parse().expect("net");
    assert_eq!(format::normalize_net(net).to_string(), "10.0.0.0/8");
    assert_eq!(format::normalize_ip(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    assert_eq!(format::normalize_ip(ip("2001:db8::1")), ip("2001:db8::1"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_byte_replaced_anywhere_is_refused_without_panic(pos in any::<prop::sample::Index>(), with in any::<u8>()) {
        let k = key();
        let text = issue(&k, &payload("lic-p"));
        let mut b = text.clone().into_bytes();
        let i = pos.index(b.len());
        prop_assume!(b[i] != with);
        b[i] = with;
        prop_assert!(trust(&[&k]).verify(&String::from_utf8_lossy(&b)).is_err());
    }

    #[test]
    fn garbage_is_refused_without_panic(s in ".{0,300}", tail in "[A-Za-z0-9_.=+/-]{0,200}") {
        let keys = trust(&[&key()]);
        let with_prefix = format!("PCL1.{tail}");
        let three_parts = format!("PCL1.{s}.{tail}");
        prop_assert!(keys.verify(&s).is_err());
        prop_assert!(keys.verify(&with_prefix).is_err());
        prop_assert!(keys.verify(&three_parts).is_err());
    }
}

#[test]
fn a_quota_is_signed_with_the_rest_and_licenses_without_one_still_verify() {
    let k = key();
    // A license issued before quotas existed: no "quota" key in its JSON at all.
    let old = issue(&k, &payload("lic-old"));
    assert!(
        !String::from_utf8_lossy(&format::open_envelope(&old).unwrap().payload).contains("quota")
    );
    let v = trust(&[&k]).verify(&old).expect("an old license verifies");
    assert_eq!(v.license().quota, None);

    let mut p = payload("lic-q");
    p.quota = Some("100000/day".into());
    let text = issue(&k, &p);
    let v = trust(&[&k]).verify(&text).expect("verify");
    assert_eq!(
        v.license().quota,
        Some(crate::limits::Quota {
            count: 100_000,
            window: crate::limits::Window::Day
        })
    );
    // The quota is signed: raising it breaks the signature.
    let mut raised = decoded(&text);
    raised.quota = Some("900000/day".into());
    let forged = with_payload(&text, &serde_json::to_vec(&raised).unwrap());
    assert_eq!(
        trust(&[&k]).verify(&forged).err(),
        Some(LicenseError::Tampered)
    );

    // Signed but unusable quotas are refused, naming the canonical spelling.
    for (q, says) in [
        ("100000/d", "must be written \"100000/day\""),
        ("0/day", "count outside"),
        ("5/week", "unknown window"),
    ] {
        let mut p = payload("lic-bad");
        p.quota = Some(q.into());
        let json = serde_json::to_vec(&Payload {
            kid: k.public_key().kid().to_owned(),
            ..p
        })
        .unwrap();
        match trust(&[&k]).verify(&signed_raw(&k, &json)) {
            Err(LicenseError::Invalid(m)) => assert!(m.contains(says), "{q}: {m}"),
            other => panic!("{q}: {other:?}"),
        }
    }
}
