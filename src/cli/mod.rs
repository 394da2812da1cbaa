//! Floor 6: the command line's subcommands beyond serving: machine licenses and the token
//! issuer's clients and keys, the credential vault, enrollment tokens.

mod admin_api;
pub mod agent;
pub mod dev;
pub mod enroll;
pub mod issuer;
pub mod license;
mod provision;
pub mod state;
pub mod vault;

#[cfg(test)]
mod license_tests;
