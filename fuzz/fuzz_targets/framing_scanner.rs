//! The HTTP/1 framing scanner (src/framing/scanner.rs), the byte-level watch below hyper.
//! Beyond "no panic":
//! - however the bytes arrive (whole, cut in two where the first byte says, one at a time),
//!   the scanner reports the same and hands hyper the same bytes, a prefix of the input;
//! - a head httparse or hyper's rules refuse is refused by the scanner (hyper never sees
//!   it), and one they accept is not;
//! - on a head that httparse parses and hyper's framing rules accept, the scanner flags it
//!   exactly when it has both Content-Length and Transfer-Encoding, and it frames a
//!   Content-Length body (or none) as hyper does: between messages right after it.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use portcullis::framing::scanner::{FramingSignals, Scanner};

/// Larger than any input libFuzzer makes here, so the head limit never decides.
const MAX_HEAD: usize = 1 << 20;

/// What feeding `pieces` in order ends with.
#[derive(Debug, PartialEq)]
struct Seen {
    ambiguous: bool,
    between: bool,
    refusal: Option<portcullis::denial::Denial>,
    /// The bytes hyper would have read, in order (held heads released whole).
    to_hyper: Vec<u8>,
}

fn scan(pieces: &[&[u8]]) -> Seen {
    let signals = Arc::new(FramingSignals::default());
    let mut s = Scanner::new(MAX_HEAD, 100, signals.clone());
    let mut to_hyper = Vec::new();
    for p in pieces {
        let fed = s.feed(p);
        assert!(fed.pass <= p.len(), "passes more than it was given");
        if let Some(held) = fed.released {
            to_hyper.extend_from_slice(&held);
        }
        to_hyper.extend_from_slice(&p[..fed.pass]);
    }
    Seen {
        ambiguous: signals.ambiguous.load(Ordering::Relaxed),
        between: signals.between_messages.load(Ordering::Relaxed),
        refusal: signals.refusal.get().copied(),
        to_hyper,
    }
}

/// (ambiguous, between messages) after feeding `pieces` in order.
fn run(pieces: &[&[u8]]) -> (bool, bool) {
    let seen = scan(pieces);
    (seen.ambiguous, seen.between)
}

#[path = "../../tests/support/hyper_framing.rs"]
mod hyper_framing;
use hyper_framing::{Body, hyper_framing};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let whole = scan(&[input]);
    // hyper sees a prefix of the input, never a byte the scanner did not pass.
    assert!(
        input.starts_with(&whole.to_hyper),
        "hyper would see other bytes"
    );
    let cut = usize::from(cut) * input.len() / 255;
    assert_eq!(scan(&[&input[..cut], &input[cut..]]), whole, "cut at {cut}");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(scan(&bytes), whole, "one byte at a time");

    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return,
        Err(_) => {
            // hyper would refuse this head: the scanner refuses it first.
            assert!(
                whole.refusal.is_some(),
                "httparse refuses, the scanner passed it"
            );
            assert!(whole.to_hyper.is_empty());
            return;
        }
    };
    let Some((body, both)) = hyper_framing(&req) else {
        let head = scan(&[&input[..head_len]]);
        assert!(
            head.refusal.is_some(),
            "hyper refuses, the scanner passed it"
        );
        return;
    };
    assert_eq!(
        scan(&[&input[..head_len]]).refusal,
        None,
        "hyper accepts, the scanner refused"
    );
    let (ambiguous, between) = run(&[&input[..head_len]]);
    assert_eq!(
        ambiguous,
        both,
        "CL+TE flag on {:?}",
        String::from_utf8_lossy(&input[..head_len])
    );
    if both {
        return;
    }
    match body {
        Body::None => assert!(between, "no body, yet not between messages"),
        Body::Length(n) => {
            assert!(!between, "a body of {n} is still to come");
            if let Some(end) = usize::try_from(n)
                .ok()
                .and_then(|n| head_len.checked_add(n))
                && end <= input.len()
            {
                assert_eq!(run(&[&input[..end]]), (false, true), "after the body");
            }
        }
        Body::Chunked => assert!(!between, "a chunked body is still to come"),
    }
});
