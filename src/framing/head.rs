//! A complete HTTP/1 request head, judged the way hyper will judge it, before hyper sees it.
//!
//! hyper refuses a head it cannot parse with a bare 400/431 of its own (no body, no request
//! id, no access line) and closes. The gateway wants every refusal in one shape, so the
//! scanner holds each head until it is complete and asks this module first: it parses with
//! the same parser hyper uses (`httparse`, default settings, the same header limit), then
//! applies hyper's own rules for the target, Content-Length and Transfer-Encoding
//! (`hyper::proto::h1::role::Server::parse`). What passes here hyper accepts; what fails
//! here is answered by the gateway.

use std::mem::MaybeUninit;

use crate::denial::{Denial, HeadRefusal};

/// hyper's limit on a request target (`MAX_URI_LEN`).
const MAX_TARGET: usize = u16::MAX as usize - 1;
/// Header slots on the stack; a larger `max_headers` takes a heap array per head.
const STACK_HEADERS: usize = 128;

/// What an accepted head says about what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    pub framing: Framing,
    /// hyper will offer the connection for an upgrade (CONNECT, or an `Upgrade` header on
    /// HTTP/1.1): after a `101` the bytes that follow are not HTTP.
    pub upgrade: bool,
}

/// How the body of an accepted head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Content-Length together with Transfer-Encoding: hyper reads chunked and drops the
    /// length, which is what request smuggling through a chain of proxies relies on. The
    /// pipeline refuses every request on the connection from then on.
    Ambiguous,
}

/// Judge `head` (a request line, header lines and the blank line that ends them; leading
/// blank lines already skipped) with at most `max_headers` header lines.
pub fn judge(head: &[u8], max_headers: usize) -> Result<Judged, Denial> {
    with_slots(max_headers, |slots| judge_with(head, slots))
}

/// Judge the start of a head that has not ended yet: `Err` if hyper would already refuse
/// it (httparse fails before the end: a bad byte in the request line, a NUL, too many
/// headers), so the client is answered now instead of at its head deadline.
pub fn judge_start(start: &[u8], max_headers: usize) -> Result<(), Denial> {
    with_slots(max_headers, |slots| {
        parse(&mut httparse::Request::new(&mut []), start, slots).map(|_| ())
    })
}

/// Run `f` with `max_headers` header slots: on the stack up to the usual limits, on the
/// heap past them.
fn with_slots<'b, R>(
    max_headers: usize,
    f: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max_headers <= STACK_HEADERS {
        let mut slots = [MaybeUninit::<httparse::Header<'b>>::uninit(); STACK_HEADERS];
        f(&mut slots[..max_headers])
    } else {
        f(&mut vec![
            MaybeUninit::<httparse::Header<'b>>::uninit();
            max_headers
        ])
    }
}

/// httparse as hyper runs it (default settings), its errors as the refusals hyper answers.
fn parse<'h, 'b>(
    req: &mut httparse::Request<'h, 'b>,
    bytes: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<httparse::Status<usize>, Denial> {
    httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(req, bytes, slots)
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => Denial::Head(HeadRefusal::TooManyHeaders),
            _ => Denial::Head(HeadRefusal::Malformed),
        })
}

fn judge_with<'b>(
    head: &'b [u8],
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Judged, Denial> {
    let malformed = Denial::Head(HeadRefusal::Malformed);
    let mut req = httparse::Request::new(&mut []);
    if parse(&mut req, head, slots)?.is_partial() {
        return Err(malformed);
    }
    let (Some(target), Some(version)) = (req.path, req.version) else {
        return Err(malformed);
    };
    if target.len() > MAX_TARGET {
        return Err(Denial::Head(HeadRefusal::UriTooLong));
    }
    if !target_parses(target.as_bytes()) {
        return Err(malformed);
    }
    let http11 = version == 1;
    let mut upgrade = req.method == Some("CONNECT");

    // hyper's rules, in its order: a Transfer-Encoding makes any Content-Length void (we
    // call that ambiguous); Content-Length values must be plain digits and all equal; the
    // last Transfer-Encoding line must end in `chunked`.
    let (mut length, mut te, mut te_chunked, mut cl) = (None, false, false, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err(Denial::Head(HeadRefusal::UnsupportedTransferCoding));
            }
            te = true;
            te_chunked = ends_in_chunked(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = http11;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            cl = true;
            if te {
                continue;
            }
            let n = digits(h.value).ok_or(Denial::AmbiguousFraming)?;
            match length {
                Some(prev) if prev != n => return Err(Denial::AmbiguousFraming),
                _ => length = Some(n),
            }
        }
    }
    if te && !te_chunked {
        return Err(Denial::Head(HeadRefusal::UnsupportedTransferCoding));
    }
    let framing = match (te, cl, length) {
        (true, true, _) => Framing::Ambiguous,
        (true, false, _) => Framing::Chunked,
        (false, _, Some(0) | None) => Framing::None,
        (false, _, Some(n)) => Framing::Length(n),
    };
    Ok(Judged { framing, upgrade })
}

/// Whether `http::Uri` (which hyper builds from the target) accepts it. The usual
/// origin-form target is checked byte by byte against the characters `http` accepts in
/// both a path and a query; anything else is parsed by `http` itself.
fn target_parses(t: &[u8]) -> bool {
    // The bytes `http` accepts in a path and in a query alike, plus `?`.
    fn plain(b: u8) -> bool {
        matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x5F | 0x61..=0x7A | 0x7C | 0x7E)
    }
    if t.first() == Some(&b'/') && t.iter().all(|&b| plain(b)) {
        return true;
    }
    http::Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(t)).is_ok()
}

/// A Content-Length value as hyper reads it: one run of digits (no sign, no list), no
/// larger than hyper's largest length (`u64::MAX - 2`; the two above mean chunked and
/// close-delimited).
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n = 0u64;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= u64::MAX - 2).then_some(n)
}

/// Whether the last coding of a Transfer-Encoding value is `chunked` (visible ASCII only,
/// as hyper requires).
fn ends_in_chunked(v: &[u8]) -> bool {
    if !v.iter().all(|&b| b == b'\t' || (0x20..0x7F).contains(&b)) {
        return false;
    }
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
