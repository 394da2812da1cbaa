//! Shared harness for the integration tests: a throw-away PKI, config files, upstream test
//! servers, TLS clients, raw-wire helpers and the in-process gateway.
//!
//! Each test binary includes it with `mod support;` and uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod client;
pub mod data;
pub mod faulty;
pub mod gateway;
pub mod jwt;
pub mod license;
pub mod oauth;
pub mod pki;
pub mod prometheus;
pub mod raw;
pub mod redis;
pub mod upstream;
pub mod vault;
pub mod webdriver;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::BodyExt;

pub use admin::Admin;
pub use client::{
    H1, H2, TestResponse, Tls, TlsClient, connect_h1, connect_h1_by_address, connect_h2,
    connect_h2_by_address, get, h2_request, request, send_one, tls_as,
};
pub use faulty::{Faulty, Mode};
pub use gateway::{
    Gateway, closed_port_url, listener, listener_at, listener_with_certs, route, server, simple,
    write_config,
};
pub use pki::{Identity, Pki};
pub use upstream::{Echo, Gate, Upstream};
pub use vault::{vault_cli, vault_cli_env, vault_with};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request the tests send and every upstream response.
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

pub fn boxed<B>(body: B) -> BoxBody
where
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    body.map_err(|e| match e {}).boxed()
}

pub fn empty() -> BoxBody {
    boxed(http_body_util::Empty::new())
}

pub fn full(data: impl Into<Bytes>) -> BoxBody {
    boxed(http_body_util::Full::new(data.into()))
}
