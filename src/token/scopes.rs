//! Scopes: what a token grants (`scope` / `scp`) and what a route requires.

use std::sync::Arc;

/// What a route requires of the caller's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAuth {
    /// No token is read; the route says so explicitly (`auth = "none"`).
    None,
    /// A valid bearer token, from one of `issuers` (names; `None`: any configured issuer),
    /// carrying every scope in `all_of` and, when `any_of` is not empty, one of `any_of`.
    Bearer {
        issuers: Option<Vec<Arc<str>>>,
        all_of: Vec<String>,
        any_of: Vec<String>,
    },
}

impl RouteAuth {
    /// Any valid token of any configured issuer.
    pub fn any_token() -> RouteAuth {
        RouteAuth::Bearer {
            issuers: None,
            all_of: Vec::new(),
            any_of: Vec::new(),
        }
    }
}

/// Whether a token of the issuer named `issuer` may be used on a route limited to `allowed`.
pub(crate) fn issuer_allowed(allowed: &Option<Vec<Arc<str>>>, issuer: &str) -> bool {
    allowed
        .as_ref()
        .is_none_or(|names| names.iter().any(|n| **n == *issuer))
}

/// Whether `granted` covers the route's `all_of` and `any_of`.
pub(crate) fn scopes_satisfied(granted: &ScopeSet, all_of: &[String], any_of: &[String]) -> bool {
    all_of.iter().all(|s| granted.contains(s))
        && (any_of.is_empty() || any_of.iter().any(|s| granted.contains(s)))
}

/// The scopes a token grants: sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(Box<[Box<str>]>);

impl ScopeSet {
    /// From scope tokens; `None` when one is not a valid scope-token (RFC 6749 section 3.3).
    /// A scope with a space or quote in it could pass for two scopes or break a header, so
    /// such a token is refused rather than its scopes guessed at.
    pub fn new<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Option<ScopeSet> {
        let mut v: Vec<Box<str>> = Vec::new();
        for s in scopes {
            if !is_scope_token(s) {
                return None;
            }
            v.push(s.into());
        }
        v.sort_unstable();
        v.dedup();
        Some(ScopeSet(v.into_boxed_slice()))
    }

    /// Binary search: a handful of comparisons, no allocation.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.binary_search_by(|s| (**s).cmp(scope)).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| &**s)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Space-separated, as the `scope` claim and the `scope` auth-param write them.
    pub fn joined(&self) -> String {
        self.0.join(" ")
    }
}

/// RFC 6749 section 3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &[&str]) -> ScopeSet {
        ScopeSet::new(s.iter().copied()).expect("valid scopes")
    }

    #[test]
    fn scope_set_is_sorted_deduplicated_and_searchable() {
        let s = set(&["orders:write", "orders:read", "orders:read"]);
        assert_eq!(s.len(), 2);
        assert!(s.contains("orders:read") && s.contains("orders:write"));
        assert!(!s.contains("orders"));
        assert_eq!(s.joined(), "orders:read orders:write");
    }

    #[test]
    fn scopes_with_spaces_quotes_or_backslashes_are_not_scope_tokens() {
        for bad in ["", "a b", "a\"b", "a\\b", "a\tb", "é"] {
            assert!(ScopeSet::new([bad]).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn all_of_needs_every_scope_and_any_of_needs_one() {
        let granted = set(&["a", "b"]);
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], &[&str], bool)] = &[
            (&[], &[], true),
            (&["a"], &[], true),
            (&["a", "b"], &[], true),
            (&["a", "c"], &[], false),
            (&[], &["c", "b"], true),
            (&[], &["c", "d"], false),
            (&["a"], &["c", "b"], true),
            (&["c"], &["a"], false),
        ];
        for (all, any, want) in cases {
            assert_eq!(
                scopes_satisfied(&granted, &v(all), &v(any)),
                *want,
                "all_of {all:?} any_of {any:?}"
            );
        }
    }

    #[test]
    fn a_route_limited_to_issuers_allows_only_those() {
        let only_a = Some(vec![Arc::<str>::from("a")]);
        assert!(issuer_allowed(&only_a, "a"));
        assert!(!issuer_allowed(&only_a, "b"));
        assert!(issuer_allowed(&None, "b"));
    }
}
