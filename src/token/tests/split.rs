//! Property: the compact split agrees with jsonwebtoken's on tokens jsonwebtoken makes, and
//! on those tokens damaged. Ours is stricter by design (exactly three non-empty base64url
//! segments); where it accepts, the segments are jsonwebtoken's.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::b64;
use crate::token::keys::b64url_decode;
use crate::token::verify::{parse, split};

/// jsonwebtoken's split (`decoding.rs`): the last '.' ends the signing input, the '.' before
/// it ends the header; any further dots stay in the header.
fn theirs(token: &str) -> Option<(&str, &str, &str)> {
    let (message, signature) = token.rsplit_once('.')?;
    let (header, payload) = message.rsplit_once('.')?;
    Some((header, payload, signature))
}

/// What ours accepts: three non-empty segments of the base64url alphabet.
fn well_shaped(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn claims() -> impl Strategy<Value = Value> {
    (
        "[ -~]{0,24}",
        prop::option::of("[a-z:]{1,8}( [a-z:]{1,8}){0,3}"),
        0u64..4_000_000_000,
        prop::collection::vec("[a-z]{1,6}", 1..3),
    )
        .prop_map(|(sub, scope, exp, aud)| {
            let mut c =
                json!({"sub": sub, "exp": exp, "aud": aud, "iss": "https://id.example.com/"});
            if let Some(s) = scope {
                c["scope"] = json!(s);
            }
            c
        })
}

/// One edit of a token: a character replaced, inserted or removed.
fn damage(token: &str, at: usize, edit: u8, c: char) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let at = at % (chars.len() + 1);
    match edit % 3 {
        0 if at < chars.len() => chars[at] = c,
        1 => chars.insert(at, c),
        _ if at < chars.len() => {
            chars.remove(at);
        }
        _ => chars.push(c),
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn split_agrees_with_jsonwebtoken_on_the_tokens_it_makes(
        claims in claims(),
        kid in prop::option::of("[A-Za-z0-9_-]{1,16}"),
        secret in prop::collection::vec(any::<u8>(), 32..48),
    ) {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.clone();
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret))
            .expect("token");
        let seg = split(token.as_bytes()).expect("a token jsonwebtoken made splits");
        prop_assert_eq!(Some((seg.header, seg.payload, seg.signature)), theirs(&token));
        prop_assert_eq!(seg.signing_input, format!("{}.{}", seg.header, seg.payload));
        // The header and claims read the same both ways.
        let mut buf = (Vec::new(), Vec::new());
        let parsed = parse(&seg, &mut buf).expect("parsed");
        let their_header = jsonwebtoken::decode_header(&token).expect("their header");
        prop_assert_eq!(parsed.alg.jwt(), their_header.alg);
        prop_assert_eq!(parsed.kid.as_deref(), their_header.kid.as_deref());
        prop_assert_eq!(parsed.kid.as_deref(), kid.as_deref());
        let their_claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)
            .expect("their claims")
            .claims;
        let ours: Value = serde_json::from_slice(&b64url_decode(seg.payload).expect("b64"))
            .expect("json");
        prop_assert_eq!(&ours, &their_claims);
        prop_assert_eq!(ours, claims);
    }

    #[test]
    fn on_damaged_tokens_split_accepts_only_what_jsonwebtoken_reads_the_same(
        claims in claims(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), prop::sample::select(
            vec!['.', 'A', '-', '_', '=', '+', '/', ' ', '\u{e9}', '0'],
        )), 1..4),
    ) {
        let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = b64(&serde_json::to_vec(&claims).expect("json"));
        let mut token = format!("{header}.{payload}.{}", b64(&[7; 32]));
        for (at, edit, c) in edits {
            token = damage(&token, at, edit, c);
        }
        match split(token.as_bytes()) {
            Ok(seg) => {
                prop_assert!(well_shaped(&token), "{token}");
                prop_assert_eq!(Some((seg.header, seg.payload, seg.signature)), theirs(&token));
            }
            Err(_) => prop_assert!(!well_shaped(&token), "{token}"),
        }
    }
}
