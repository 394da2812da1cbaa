//! A route's token requirement: `auth`, `scopes`, `any_scopes`, `issuers`.

use std::sync::Arc;

use super::{Findings, TokenIssuerSection, base};
use crate::report::Report;
use crate::token::{RouteAuth, is_scope_token};

/// A route's token keys as written (`[[routes]]` `auth`, `scopes`, `any_scopes`, `issuers`).
#[derive(Debug, Clone, Copy)]
pub struct RouteAuthKeys<'a> {
    pub auth: &'a Option<String>,
    pub scopes: &'a Option<Vec<String>>,
    pub any_scopes: &'a Option<Vec<String>>,
    pub issuers: &'a Option<Vec<String>>,
}

/// Validate one route's `auth`, `scopes`, `any_scopes` and `issuers` (see the route rule in
/// the module doc). `issuers` are the `[[token_issuers]]` as written, so a route is checked
/// even when an issuer has errors of its own.
pub fn validate_route_auth(
    route_key: &str,
    route: RouteAuthKeys<'_>,
    issuers: &[TokenIssuerSection],
    r: &mut Report,
) -> Option<RouteAuth> {
    let mut f = Findings::new(&base(r));
    let out = route_auth(&mut f, route_key, route, issuers);
    f.report(r);
    out
}

pub(crate) fn route_auth(
    f: &mut Findings,
    key: &str,
    route: RouteAuthKeys<'_>,
    issuers: &[TokenIssuerSection],
) -> Option<RouteAuth> {
    let before = f.errors.len();
    let names_token =
        route.scopes.is_some() || route.any_scopes.is_some() || route.issuers.is_some();
    let bearer = match (route.auth.as_deref(), issuers.is_empty()) {
        (Some("none"), _) => {
            if names_token {
                let field = if route.scopes.is_some() {
                    "scopes"
                } else if route.any_scopes.is_some() {
                    "any_scopes"
                } else {
                    "issuers"
                };
                f.error(
                    format!("{key}.{field}"),
                    "auth = \"none\" reads no token, so it cannot require scopes or issuers: \
                     use auth = \"bearer\"",
                );
            }
            false
        }
        (Some("bearer"), false) => true,
        (Some("bearer"), true) => {
            f.error(
                format!("{key}.auth"),
                "\"bearer\" needs at least one [[token_issuers]] to verify tokens",
            );
            true
        }
        (Some(other), _) => {
            f.error(
                format!("{key}.auth"),
                format!("\"{other}\" is not an auth mode: use \"bearer\" or \"none\""),
            );
            false
        }
        (None, false) => {
            f.error(
                format!("{key}.auth"),
                "missing: with [[token_issuers]] configured, every route must say \
                 auth = \"bearer\" or auth = \"none\"",
            );
            false
        }
        (None, true) => {
            if names_token {
                f.error(
                    format!("{key}.auth"),
                    "the route names scopes or issuers, but no [[token_issuers]] is configured",
                );
            }
            false
        }
    };
    let all_of = scope_list(f, &format!("{key}.scopes"), route.scopes);
    let any_of = scope_list(f, &format!("{key}.any_scopes"), route.any_scopes);
    let allowed = route.issuers.as_ref().map(|list| {
        if list.is_empty() {
            f.error(
                format!("{key}.issuers"),
                "empty: leave the key out to accept every configured issuer",
            );
        }
        for (j, n) in list.iter().enumerate() {
            if !issuers
                .iter()
                .any(|i| i.name.as_deref() == Some(n.as_str()))
            {
                f.error(
                    format!("{key}.issuers[{j}]"),
                    format!("no [[token_issuers]] is named \"{n}\""),
                );
            }
        }
        list.iter().map(|n| Arc::<str>::from(n.as_str())).collect()
    });
    if f.errors.len() != before {
        return None;
    }
    Some(if bearer {
        RouteAuth::Bearer {
            issuers: allowed,
            all_of,
            any_of,
        }
    } else {
        RouteAuth::None
    })
}

fn scope_list(f: &mut Findings, key: &str, v: &Option<Vec<String>>) -> Vec<String> {
    let Some(list) = v else {
        return Vec::new();
    };
    if list.is_empty() {
        f.error(key, "empty: leave the key out to require no scope");
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (j, s) in list.iter().enumerate() {
        if !is_scope_token(s) {
            f.error(
                format!("{key}[{j}]"),
                format!("{s:?} is not a scope (printable ASCII without space, '\"' or '\\')"),
            );
        } else if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}
