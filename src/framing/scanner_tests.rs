//! Unit tests of `scanner.rs`.

use super::*;

/// Feed `pieces` as reads; what hyper would see (held heads released whole), and the
/// signals.
fn run_pieces(pieces: &[&[u8]], max_head: usize) -> (Vec<u8>, Arc<FramingSignals>) {
    let flag = Arc::new(FramingSignals::default());
    let mut s = Scanner::new(max_head, 100, flag.clone());
    let mut seen = Vec::new();
    for p in pieces {
        let fed = s.feed(p);
        if let Some(held) = fed.released {
            seen.extend_from_slice(&held);
        }
        seen.extend_from_slice(&p[..fed.pass]);
    }
    (seen, flag)
}

/// Feed `input` in every split position (two pieces) and one byte at a time; the flag
/// must come out the same every way.
fn flagged(input: &[u8]) -> bool {
    let run = |pieces: &[&[u8]]| {
        let (_, flag) = run_pieces(pieces, 16 * 1024);
        flag.ambiguous.load(Ordering::Relaxed)
    };
    let whole = run(&[input]);
    for cut in 0..input.len() {
        assert_eq!(
            run(&[&input[..cut], &input[cut..]]),
            whole,
            "split at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte at a time");
    whole
}

#[test]
fn content_length_with_transfer_encoding_is_flagged_in_either_order_and_any_case() {
    assert!(flagged(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
    assert!(flagged(b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n"));
    assert!(flagged(
        b"POST / HTTP/1.1\r\nTRANSFER-ENCODING:   chunked\r\nCONTENT-LENGTH:5\r\n\r\n"
    ));
    assert!(flagged(
        b"POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked\n\n"
    ));
}

#[test]
fn a_smuggled_head_behind_clean_requests_is_found() {
    let mut input = Vec::new();
    input.extend_from_slice(b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n");
    input.extend_from_slice(
        b"POST /b HTTP/1.1\r\nContent-Length: 27\r\n\r\nTransfer-Encoding: chunked\r\n",
    );
    input.extend_from_slice(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n");
    // Clean so far: the TE line inside /b's body is body, not a header.
    assert!(!flagged(&input));
    input.extend_from_slice(
        b"POST /d HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(flagged(&input));
}

#[test]
fn between_messages_is_true_only_when_no_byte_of_the_next_message_has_arrived() {
    let flag = Arc::new(FramingSignals::default());
    let mut s = Scanner::new(16 * 1024, 100, flag.clone());
    let between = || flag.between_messages.load(Ordering::Relaxed);
    assert!(between(), "a new connection");
    for (bytes, want) in [
        (&b"GET / HTTP/1.1\r\nHo"[..], false),
        (b"st: a\r\n\r\n", true),
        (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", false),
        (b"cd", true),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
            false,
        ),
        (b"0\r\n\r\n", true),
        (b"\r\n", false),
    ] {
        s.feed(bytes);
        assert_eq!(
            between(),
            want,
            "after {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let off = Arc::new(FramingSignals::default());
    let _h2 = Scanner::off(off.clone());
    assert!(
        !off.between_messages.load(Ordering::Relaxed),
        "HTTP/2 is never released"
    );
}

#[test]
fn ordinary_requests_are_not_flagged() {
    assert!(!flagged(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
    ));
    assert!(!flagged(
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    ));
    assert!(!flagged(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n"
    ));
}

#[test]
fn blank_lines_before_a_request_line_are_skipped_and_the_head_still_read() {
    assert!(flagged(
        b"\r\n\r\n\nPOST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    ));
    assert!(!flagged(
        b"\r\nGET / HTTP/1.1\r\n\r\n\r\n\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
    ));
}

#[test]
fn a_flood_of_blank_lines_is_held_and_refused_at_max_head() {
    let flag = Arc::new(FramingSignals::default());
    let mut s = Scanner::new(1024, 100, flag.clone());
    assert_eq!(
        s.feed(&[b'\n'; 1000]).pass,
        0,
        "held, as the start of a head"
    );
    assert!(
        !flag.between_messages.load(Ordering::Relaxed),
        "bytes of the next message have arrived"
    );
    assert!(flag.refusal.get().is_none());
    assert_eq!(s.feed(&[b'\r'; 30]).pass, 0);
    assert_eq!(
        flag.refusal.get(),
        Some(&Denial::Head(HeadRefusal::TooLarge)),
        "past max_head, as hyper refuses it"
    );
    assert!(s.head.capacity() == 0, "the held bytes are freed");
}

#[test]
fn a_header_named_like_a_framing_header_is_not_one() {
    assert!(!flagged(
        b"POST / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encodings: chunked\r\nX-Transfer-Encoding: chunked\r\n\r\n"
    ));
    // The request line is not a header, whatever it contains.
    assert!(!flagged(
        b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"
    ));
}

#[test]
fn an_http2_preface_on_an_http1_connection_is_malformed() {
    let (seen, flag) = run_pieces(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"], 16 * 1024);
    assert!(seen.is_empty());
    assert_eq!(
        flag.refusal.get(),
        Some(&Denial::Head(HeadRefusal::Malformed))
    );
}

#[test]
fn a_head_split_across_reads_reaches_hyper_whole_and_in_order() {
    let input: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz\r\nGET /c HTTP/1.1\r\n\r\n";
    for cut in 0..input.len() {
        let (seen, flag) = run_pieces(&[&input[..cut], &input[cut..]], 16 * 1024);
        assert_eq!(seen, input, "split at {cut}");
        assert!(flag.refusal.get().is_none());
        assert_eq!(flag.heads.load(Ordering::Relaxed), 3);
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_pieces(&bytes, 16 * 1024).0, input, "byte at a time");
}

#[test]
fn hyper_never_sees_a_byte_of_a_refused_head_or_what_follows_it() {
    let good: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    let bad: &[u8] = b"GET /b HTTP/1.1\r\nX-A: a\0b\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
    let input = [good, bad].concat();
    for cut in 0..input.len() {
        let (seen, flag) = run_pieces(&[&input[..cut], &input[cut..]], 16 * 1024);
        assert_eq!(seen, good, "split at {cut}");
        assert_eq!(
            flag.refusal.get(),
            Some(&Denial::Head(HeadRefusal::Malformed)),
            "split at {cut}"
        );
        assert_eq!(flag.heads.load(Ordering::Relaxed), 1);
    }
}

#[test]
fn a_head_that_does_not_end_within_max_head_is_refused_as_too_large() {
    let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    head.extend_from_slice(&[b'a'; 2000]);
    let (seen, flag) = run_pieces(&[&head[..500], &head[500..]], 1024);
    assert!(seen.is_empty());
    assert_eq!(
        flag.refusal.get(),
        Some(&Denial::Head(HeadRefusal::TooLarge))
    );
    // A complete head over the limit in one read is refused too, as hyper would.
    head.extend_from_slice(b"\r\n\r\n");
    let (seen, flag) = run_pieces(&[&head], 1024);
    assert!(seen.is_empty());
    assert_eq!(
        flag.refusal.get(),
        Some(&Denial::Head(HeadRefusal::TooLarge))
    );
}

#[test]
fn after_an_upgrade_offer_bytes_wait_for_the_answer_then_pass_raw_or_are_scanned() {
    let offer: &[u8] = b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    // WebSocket frames that look nothing like HTTP (and contain a NUL).
    let frames: &[u8] = b"\x81\x05hello\x00\r\n\r\n";

    // Upgraded: the held bytes go to the tunnel as they are, and nothing more is watched.
    let flag = Arc::new(FramingSignals::default());
    let mut s = Scanner::new(16 * 1024, 100, flag.clone());
    assert_eq!(s.feed(offer).pass, offer.len());
    assert_eq!(s.feed(frames).pass, 0, "held until the answer");
    assert_eq!(s.upgrade_decided(), None, "no answer yet");
    flag.upgraded.store(true, Ordering::Release);
    assert_eq!(s.upgrade_decided().as_deref(), Some(frames));
    assert_eq!(s.feed(frames).pass, frames.len());
    assert!(flag.refusal.get().is_none());

    // Not upgraded (the response was done without a 101): what was held is the next
    // message, judged like any other.
    let flag = Arc::new(FramingSignals::default());
    let mut s = Scanner::new(16 * 1024, 100, flag.clone());
    s.feed(offer);
    assert_eq!(s.feed(b"GET /next HTTP/1.1\r\nX-A: a\0b\r\n\r\n").pass, 0);
    assert_eq!(s.upgrade_decided(), None);
    flag.answered.store(1, Ordering::Release);
    assert_eq!(s.upgrade_decided().as_deref(), Some(&b""[..]));
    assert_eq!(
        flag.refusal.get(),
        Some(&Denial::Head(HeadRefusal::Malformed))
    );

    let flag = Arc::new(FramingSignals::default());
    let mut s = Scanner::new(16 * 1024, 100, flag.clone());
    s.feed(offer);
    let next: &[u8] = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    s.feed(next);
    flag.answered.store(1, Ordering::Release);
    assert_eq!(s.upgrade_decided().as_deref(), Some(next));
    assert_eq!(flag.heads.load(Ordering::Relaxed), 2);
}

/// Found by fuzzing: hyper reads a Content-Length that follows Transfer-Encoding no further
/// (it neither checks nor keeps it), so a malformed one there does not end the connection.
#[test]
fn a_malformed_content_length_after_transfer_encoding_is_still_flagged() {
    assert!(flagged(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 6]]]\r\n\r\n0\r\n\r\n"
    ));
    assert!(flagged(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: -1\r\n\r\n0\r\n\r\n"
    ));
    // Alone, a malformed length is refused by hyper: nothing to flag, nothing to follow.
    assert!(!flagged(b"POST / HTTP/1.1\r\nContent-Length: 6]]]\r\n\r\n"));
}

#[test]
fn the_start_of_a_head_hyper_would_already_refuse_is_refused_without_waiting_for_its_end() {
    for start in [&b"\r\0"[..], b"GET /a\0", b"GET / HTTP/1.1\r\nX-A: a\0"] {
        let (seen, flag) = run_pieces(&[start], 16 * 1024);
        assert!(seen.is_empty());
        assert_eq!(
            flag.refusal.get(),
            Some(&Denial::Head(HeadRefusal::Malformed)),
            "{start:?}"
        );
    }
    // A clean start is only held.
    let (seen, flag) = run_pieces(&[b"GET / HTTP/1.1\r\nX-A: a"], 16 * 1024);
    assert!(seen.is_empty() && flag.refusal.get().is_none());
}
