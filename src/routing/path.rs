//! The canonical request path: decided once, used for routing, forwarded byte for byte.
//!
//! Upstreams normalise paths before they route (nginx decodes escapes and merges slashes,
//! servlet containers drop `;` parameters, some servers ignore case). If the gateway routed on
//! the raw path, `/%61dmin` or `//admin` would miss the `/admin` route, fall to an open one,
//! and be served as `/admin` behind it. So the gateway normalises first, routes on the result,
//! and sends the upstream exactly that, or refuses what it cannot make unambiguous.
//!
//! The rules, stricter than Envoy's `normalize_path` + `merge_slashes`:
//! - escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (RFC 3986
//!   section 6.2.2.2); every other escape is kept with upper-case hex (6.2.2.1);
//! - repeated slashes are merged (a trailing slash is kept);
//! - refused: dot segments (`.`, `..`, also encoded or before a `;`), encoded `/` and `\`,
//!   a literal `\`, NUL and control characters (literal or encoded), a malformed escape.
//!
//! `;` path parameters (also spelt `%3B`) are kept here and reported: routing matches with
//! them removed (the servlet reading) and refuses them unless the matched route allows them.

use std::borrow::Cow;

/// Why a path was refused (the request gets 400 `invalid_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("a '%' is not followed by two hex digits")]
    BadEscape,
    #[error("an encoded '/' or '\\', or a literal '\\'")]
    Separator,
    #[error("a NUL or control character")]
    Control,
    #[error("a '.' or '..' segment")]
    DotSegment,
}

/// A request path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    /// Borrowed when the request's path was already canonical (the common case).
    pub path: Cow<'a, str>,
    /// The path has `;` parameters in some segment.
    pub has_params: bool,
    /// The path has upper-case letters (routing then checks what case-folding would match).
    pub has_upper: bool,
}

impl CanonicalPath<'_> {
    /// The path routing matches on: `;` parameters removed from every segment (the way a
    /// servlet container reads `/admin;x` as `/admin`).
    pub fn match_key(&self) -> Cow<'_, str> {
        if !self.has_params {
            return Cow::Borrowed(&self.path);
        }
        let mut out = String::with_capacity(self.path.len());
        for (i, seg) in self.path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&seg[..param_start(seg.as_bytes())]);
        }
        Cow::Owned(out)
    }
}

const PERCENT: u8 = 1;
const BACKSLASH: u8 = 2;
const SEMICOLON: u8 = 4;
const UPPER: u8 = 8;
const CONTROL: u8 = 16;
const DOUBLE_SLASH: u8 = 32;
const SLASH_DOT: u8 = 64;

/// What a byte means right after a '/'.
static AFTER_SLASH: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'/' as usize] = DOUBLE_SLASH;
    t[b'.' as usize] = SLASH_DOT;
    t
};

/// What each byte is, for the one pass over a path.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b'%' => PERCENT,
            b'\\' => BACKSLASH,
            b';' => SEMICOLON,
            b'A'..=b'Z' => UPPER,
            0..=0x1f | 0x7f => CONTROL,
            _ => 0,
        };
        i += 1;
    }
    t
};

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Where a segment's `;` parameters start: at a `;`, or at an encoded one (`%3B`), which
/// some servers decode before they split parameters off.
fn param_start(seg: &[u8]) -> usize {
    (0..seg.len())
        .find(|&i| {
            seg[i] == b';'
                || (seg[i] == b'%'
                    && seg.get(i + 1) == Some(&b'3')
                    && matches!(seg.get(i + 2), Some(b'b' | b'B')))
        })
        .unwrap_or(seg.len())
}

/// Whether a decoded segment is a dot segment, also with `;` parameters after the dots
/// (`..;` is `..` to Tomcat).
fn is_dot_segment(seg: &[u8]) -> bool {
    let name = &seg[..param_start(seg)];
    name == b"." || name == b".."
}

/// The canonical form of `path` (the request path without its query), or why it is refused.
/// `*` (the asterisk form of `OPTIONS *`) is its own canonical form.
pub fn canonical(path: &str) -> Result<CanonicalPath<'_>, PathError> {
    if path == "*" {
        return Ok(CanonicalPath {
            path: Cow::Borrowed(path),
            has_params: false,
            has_upper: false,
        });
    }
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // One pass over byte-class tables says what the path holds; most paths hold nothing to
    // change and leave borrowed. A byte after a '/' also looks up what it means there ("//"
    // merges, "/." may start a dot segment), without a branch.
    let (mut found, mut after_slash) = (0u8, 0u8);
    for &c in b {
        found |= CLASS[usize::from(c)] | (AFTER_SLASH[usize::from(c)] & after_slash);
        after_slash = if c == b'/' { 0xff } else { 0 };
    }
    if found & BACKSLASH != 0 {
        return Err(PathError::Separator);
    }
    if found & CONTROL != 0 {
        return Err(PathError::Control);
    }
    let rewrite = found & (PERCENT | DOUBLE_SLASH) != 0;
    let dot = found & SLASH_DOT != 0;
    let mut has_params = found & SEMICOLON != 0;
    let has_upper = found & UPPER != 0;
    if !rewrite {
        if dot && b.split(|&c| c == b'/').any(is_dot_segment) {
            return Err(PathError::DotSegment);
        }
        return Ok(CanonicalPath {
            path: Cow::Borrowed(path),
            has_params,
            has_upper,
        });
    }

    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut segments = b[1..].split(|&c| c == b'/').peekable();
    let mut seg_buf: Vec<u8> = Vec::new();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        seg_buf.clear();
        let mut i = 0;
        while i < seg.len() {
            let c = seg[i];
            if c != b'%' {
                seg_buf.push(c);
                i += 1;
                continue;
            }
            let (Some(hi), Some(lo)) = (
                seg.get(i + 1).copied().and_then(hex),
                seg.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let v = hi << 4 | lo;
            if v == b'/' || v == b'\\' {
                return Err(PathError::Separator);
            }
            if is_control(v) {
                return Err(PathError::Control);
            }
            if is_unreserved(v) {
                seg_buf.push(v);
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                seg_buf.extend_from_slice(&[b'%', HEX[usize::from(hi)], HEX[usize::from(lo)]]);
            }
            i += 3;
        }
        if seg_buf.is_empty() {
            // `//` merges; a trailing slash stays (`/a/` and `/a` may differ upstream).
            if last {
                out.push(b'/');
            }
            continue;
        }
        if is_dot_segment(&seg_buf) {
            return Err(PathError::DotSegment);
        }
        if param_start(&seg_buf) < seg_buf.len() {
            has_params = true;
        }
        out.push(b'/');
        out.extend_from_slice(&seg_buf);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    // Only ASCII was decoded (unreserved characters); every other byte came from `path`
    // whole, so the result is still UTF-8.
    let out = String::from_utf8(out).map_err(|_| PathError::BadEscape)?;
    Ok(CanonicalPath {
        has_upper: out.bytes().any(|b| b.is_ascii_uppercase()),
        path: if out == path {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(out)
        },
        has_params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> Result<String, PathError> {
        canonical(p).map(|c| c.path.into_owned())
    }

    #[test]
    fn disguised_spellings_become_the_plain_path() {
        for (raw, want) in [
            ("/%61dmin", "/admin"),
            ("//admin", "/admin"),
            ("/adm%69n/users", "/admin/users"),
            ("/%41DMIN", "/ADMIN"),
            ("///a////b//", "/a/b/"),
            ("/a%2db%5fc%7e", "/a-b_c~"),
            ("/a%3ab", "/a%3Ab"),
            ("/a%3bb", "/a%3Bb"),
            ("/a%20b", "/a%20b"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/", "/"),
            ("//", "/"),
            ("/a/", "/a/"),
            ("/v1.2/x", "/v1.2/x"),
            ("/a/...", "/a/..."),
            ("/.well-known/x", "/.well-known/x"),
            ("*", "*"),
        ] {
            assert_eq!(canon(raw), Ok(want.to_owned()), "{raw}");
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (raw, why) in [
            ("/a/../b", PathError::DotSegment),
            ("/..", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/%2e%2e/b", PathError::DotSegment),
            ("/a/%2E./b", PathError::DotSegment),
            ("/a/.%2e", PathError::DotSegment),
            ("/x/..;/admin", PathError::DotSegment),
            ("/x/%2e%2e;a=b/admin", PathError::DotSegment),
            ("//..//admin", PathError::DotSegment),
            ("/a%2fb", PathError::Separator),
            ("/a%2Fb", PathError::Separator),
            ("/a%5Cb", PathError::Separator),
            ("/a\\b", PathError::Separator),
            ("/a%00b", PathError::Control),
            ("/a%0d%0ab", PathError::Control),
            ("/a%7fb", PathError::Control),
            ("/a%", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("relative", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ] {
            assert_eq!(canon(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn canonical_paths_stay_borrowed() {
        for p in ["/", "/api/v1/orders", "/a/b.json", "/a;b", "/.hidden"] {
            assert!(
                matches!(canonical(p).map(|c| c.path), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn path_parameters_are_reported_and_removed_for_matching() {
        let c = canonical("/admin;jsessionid=1/users;x").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.has_params);
        assert_eq!(c.match_key(), "/admin/users");
        // Some servers decode before they split parameters: an encoded ';' counts as one.
        let c = canonical("/admin%3bx/users").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.has_params);
        assert_eq!(c.match_key(), "/admin/users");
        assert_eq!(canonical("/x/..%3B/admin"), Err(PathError::DotSegment));
    }

    proptest::proptest! {
        /// Canonical form is a fixed point, and never holds anything the rules refuse.
        #[test]
        fn canonical_form_is_idempotent_and_clean(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", "//", "a", "A", "admin", ".", "..", "%2e", "%2E", "%61", "%41",
                    "%2f", "%5c", "%3b", ";", ";x=1", "%25", "%7e", "~", "%00", "%zz", "%",
                    "%c3%a9", "-", "_", "%5f",
                ]),
                0..12,
            )
        ) {
            let raw = format!("/{}", parts.concat());
            if let Ok(c) = canonical(&raw) {
                let again = canonical(&c.path);
                proptest::prop_assert_eq!(again.as_ref().map(|a| a.path.as_ref()), Ok(c.path.as_ref()));
                let p = c.path.as_bytes();
                proptest::prop_assert!(!c.path.contains("//"));
                proptest::prop_assert!(!p.split(|&b| b == b'/').any(is_dot_segment));
                for w in p.windows(3).filter(|w| w[0] == b'%') {
                    let v = hex(w[1]).zip(hex(w[2])).map(|(h, l)| h << 4 | l);
                    proptest::prop_assert!(v.is_some_and(|v| !is_unreserved(v) && v != b'/' && v != b'\\' && !is_control(v)));
                    proptest::prop_assert!(!w[1].is_ascii_lowercase() && !w[2].is_ascii_lowercase());
                }
            }
        }
    }
}
