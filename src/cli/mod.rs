//! Floor 6: the command line's subcommands beyond serving: machine licenses and the token
//! issuer's clients and keys.

pub mod issuer;
pub mod license;
mod provision;

#[cfg(test)]
mod license_tests;
