//! `GET /ui`: the operator console, one HTML page, one script and one stylesheet compiled
//! into the binary (no CDN, nothing fetched from elsewhere, nothing read from disk at run
//! time). The page reads the same JSON endpoints scripts use; it holds no data of its own.
//!
//! The policy allows only this origin's script and style files and `fetch` to this origin:
//! no inline script or style, no frames around it, no forms posting elsewhere, so an injected
//! string in a license's customer or a client's id could not run even if it were not already
//! written as text.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::AdminResponse;
use crate::request_id::{RequestId, X_REQUEST_ID};

/// The Content-Security-Policy of every console response.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Whether `path` is the console's.
pub(super) fn is_console(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The asset at `path` (a path under `/ui`), or 404.
pub(super) fn serve(id: &RequestId, path: &str) -> AdminResponse {
    let (body, content_type) = match path {
        "/ui" | "/ui/" => (PAGE, "text/html; charset=utf-8"),
        "/ui/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/ui/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return super::error(id, StatusCode::NOT_FOUND, "not_found"),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(X_REQUEST_ID, id.header_value());
    secure(h);
    resp
}

/// The headers every console response carries: its policy, no sniffing, no referrer, not
/// framed, and not kept in a cache (the page is behind authentication, and it is served
/// from memory, so fetching it again costs nothing).
pub(super) fn secure(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_script_and_style_and_nothing_inline() {
        assert!(PAGE.contains("src=\"/ui/console.js\""));
        assert!(PAGE.contains("href=\"/ui/console.css\""));
        assert!(!PAGE.contains("<script>"), "an inline script");
        assert!(!PAGE.contains("style="), "an inline style");
        assert!(!PAGE.contains("<style"), "an inline stylesheet");
        for external in ["http://", "https://", "//cdn"] {
            assert!(!PAGE.contains(external), "{external} in the page");
            assert!(!SCRIPT.contains(external), "{external} in the script");
        }
        assert!(!SCRIPT.contains("innerHTML"), "markup built from strings");
    }

    #[test]
    fn every_asset_carries_the_policy_and_an_unknown_one_is_404() {
        let id = RequestId::next();
        for p in ["/ui", "/ui/", "/ui/console.js", "/ui/console.css"] {
            let r = serve(&id, p);
            assert_eq!(r.status(), StatusCode::OK, "{p}");
            assert_eq!(
                r.headers()
                    .get(header::CONTENT_SECURITY_POLICY)
                    .and_then(|v| v.to_str().ok()),
                Some(CSP)
            );
        }
        assert_eq!(serve(&id, "/ui/other.js").status(), StatusCode::NOT_FOUND);
    }
}
