//! Unit tests of the issuer's parts that are larger than their modules' own tests.

mod config;
mod request;
