//! The reference the framing scanner is held against, by `tests/parser_properties.rs` and
//! the `framing_scanner` fuzz target alike: hyper 1's decision on a request head httparse
//! parsed, written out from its `proto/h1/role.rs` (`Server::parse`).
//!
//! Included with `#[path]` by both (the fuzz crate is a separate package).

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

/// hyper 1's decision on a head httparse parsed (`proto/h1/role.rs`, `Server::parse`): `None`
/// if it refuses the head, else the body's framing and whether the head had both
/// Content-Length and Transfer-Encoding (which hyper serves, as chunked).
pub fn hyper_framing(req: &httparse::Request<'_, '_>) -> Option<(Body, bool)> {
    http::Method::from_bytes(req.method?.as_bytes()).ok()?;
    http::Uri::try_from(req.path?).ok()?;
    let http11 = req.version? == 1;
    let (mut cl, mut te, mut te_chunked, mut len) = (false, false, false, None);
    for h in req.headers.iter() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = http::HeaderValue::from_bytes(h.value).ok()?;
        if name == http::header::TRANSFER_ENCODING {
            if !http11 {
                return None;
            }
            te = true;
            // The last Transfer-Encoding line decides; chunked must be its last coding.
            te_chunked = value
                .to_str()
                .ok()
                .and_then(|s| s.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name == http::header::CONTENT_LENGTH {
            cl = true;
            if te {
                // After Transfer-Encoding, hyper neither reads nor keeps the length.
                continue;
            }
            let v = value.as_bytes();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: u64 = std::str::from_utf8(v).ok()?.parse().ok()?;
            match len {
                Some(prev) if prev != n => return None,
                // hyper refuses lengths past its DecodedLength maximum (431).
                None if n > u64::MAX - 2 => return None,
                _ => len = Some(n),
            }
        }
    }
    if te && !te_chunked {
        return None;
    }
    let body = match (te, len) {
        (true, _) => Body::Chunked,
        (false, Some(n)) if n > 0 => Body::Length(n),
        (false, _) => Body::None,
    };
    Some((body, cl && te))
}
