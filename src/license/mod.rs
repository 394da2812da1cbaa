//! Machine licenses: only licensed machines may call licensed routes.
//!
//! A license is a statement signed with the operator's licensing key (Ed25519): "machine M,
//! known by these certificate pins and/or these addresses, may use these routes from
//! `not_before` until `expires_at`". It travels as one line of text,
//! `PCL1.<payload>.<signature>` ([`format`]), is issued and inspected with
//! `portcullis license ...` ([`cli`]), and is activated or revoked at run time through the
//! admin listener ([`LicenseService`]), which persists it ([`store`]) and publishes it to the
//! in-memory [`LicenseBook`] the request path reads.
//!
//! # The check, per request to a route with `license = "required"`
//!
//! After identity and ip_filter, [`LicenseBook::check`]:
//! 1. finds candidates by the client certificate's SPKI hash and by the client address
//!    (hash lookups, never a scan);
//! 2. keeps those whose binding holds (`pin`, `ip`, or `pin_and_ip` on the same license)
//!    and whose route list, if any, names the route;
//! 3. grants if one is not revoked and within its validity, or within the grace period after
//!    expiry (`in_grace`: the response carries a warning);
//! 4. otherwise denies with the most telling reason: revoked, expired, not yet valid, binding
//!    mismatch, missing.
//!
//! # Activation refuses, saying which
//!
//! Tampered (bad signature), truncated, malformed, re-encoded, unknown signing key, wrong
//! format version ([`LicenseError`]), already expired, or a duplicate id
//! ([`ActivationError`]). A refused activation changes nothing.

pub mod dates;
pub mod format;
pub mod keys;

#[cfg(test)]
mod tests;

pub use format::{License, LicenseError, Match, Payload};
pub use keys::{KeyError, PublicKey, SigningKey, TrustedKeys, Verified};
