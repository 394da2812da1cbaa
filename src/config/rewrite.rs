//! A route's `rewrite`, `request_headers` and `response_headers`.

use http::header::{HeaderName, HeaderValue};

use crate::config::file::{HeaderOpsSection, RewriteSection};
use crate::report::Report;
use crate::routing::rewrite::{
    HeaderOps, HostRewrite, REQUEST_PROTECTED, RESPONSE_PROTECTED, Rewrite, is_protected,
};

/// The route's rewrites; `None` when any key is wrong (each problem reported under `key`,
/// the route's path such as `routes[0]`). `Some(None)`: the route rewrites nothing.
pub(super) fn rewrite(
    r: &mut Report,
    key: &str,
    section: Option<&RewriteSection>,
    request: Option<&HeaderOpsSection>,
    response: Option<&HeaderOpsSection>,
) -> Option<Option<Rewrite>> {
    let mut ok = true;
    let mut out = Rewrite::default();
    if let Some(s) = section {
        out.strip_prefix = s.strip_prefix.unwrap_or(false);
        if let Some(p) = &s.add_prefix {
            let at = format!("{key}.rewrite.add_prefix");
            // The same canonical form as a path_prefix: no dot segments, no encoded or
            // doubled separators, so the upstream path stays under it.
            match crate::routing::normalize_prefix(p) {
                Ok(_) if p.contains('%') => {
                    r.error(at, format!("\"{p}\" must not contain '%' escapes"));
                    ok = false;
                }
                Ok(c) if &*c == "/" => {}
                Ok(c) => out.add_prefix = Some(c),
                Err(why) => {
                    r.error(at, format!("\"{p}\" {why}"));
                    ok = false;
                }
            }
        }
        out.host = match s.host.as_deref() {
            None | Some("client") => HostRewrite::Client,
            Some("target") => HostRewrite::Target,
            Some(h) => match h.parse::<http::uri::Authority>() {
                Ok(a) if !a.as_str().contains('@') && !a.host().is_empty() => {
                    match HeaderValue::from_str(a.as_str()) {
                        Ok(v) => HostRewrite::Fixed(v),
                        Err(_) => {
                            ok = false;
                            bad_host(r, key, h);
                            HostRewrite::Client
                        }
                    }
                }
                Ok(_) | Err(_) => {
                    ok = false;
                    bad_host(r, key, h);
                    HostRewrite::Client
                }
            },
        };
    }
    if let Some(ops) = request {
        match header_ops(r, &format!("{key}.request_headers"), ops, REQUEST_PROTECTED) {
            Some(o) => out.request = o,
            None => ok = false,
        }
    }
    if let Some(ops) = response {
        match header_ops(
            r,
            &format!("{key}.response_headers"),
            ops,
            RESPONSE_PROTECTED,
        ) {
            Some(o) => out.response = o,
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    Some((out != Rewrite::default()).then_some(out))
}

fn bad_host(r: &mut Report, key: &str, h: &str) {
    r.error(
        format!("{key}.rewrite.host"),
        format!("\"{h}\" is not \"client\", \"target\" or a host[:port]"),
    );
}

/// A header name a rewrite may name. The error completes nothing: it is the whole message.
fn header_name(n: &str, protected: &[&str]) -> Result<HeaderName, String> {
    match HeaderName::from_bytes(n.as_bytes()) {
        Ok(name) if is_protected(&name, protected) => Err(format!(
            "\"{n}\" frames the message or is written only by the gateway: it cannot be rewritten"
        )),
        Ok(name) => Ok(name),
        Err(_) => Err(format!("\"{n}\" is not a valid header name")),
    }
}

fn header_ops(
    r: &mut Report,
    key: &str,
    s: &HeaderOpsSection,
    protected: &[&str],
) -> Option<HeaderOps> {
    let mut ok = true;
    let mut name_of = |r: &mut Report, at: String, n: &str| match header_name(n, protected) {
        Ok(name) => Some(name),
        Err(why) => {
            r.error(at, why);
            ok = false;
            None
        }
    };
    let mut out = HeaderOps::default();
    for (i, n) in s.remove.iter().flatten().enumerate() {
        if let Some(name) = name_of(r, format!("{key}.remove[{i}]"), n) {
            out.remove.push(name);
        }
    }
    let mut values = Vec::new();
    for (field, map) in [("set", &s.set), ("add", &s.add)] {
        for (n, v) in map.iter().flatten() {
            let at = format!("{key}.{field}.{n}");
            if let Some(name) = name_of(r, at.clone(), n) {
                values.push((field, at, name, v));
            }
        }
    }
    for (field, at, name, v) in values {
        match HeaderValue::from_str(v) {
            Ok(value) if field == "set" => out.set.push((name, value)),
            Ok(value) => out.add.push((name, value)),
            Err(_) => {
                r.error(
                    at,
                    "the value has a character a header cannot carry (a line break, a control character)",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}
