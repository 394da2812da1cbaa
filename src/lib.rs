//! Portcullis: a TLS-terminating API gateway for integration traffic.
//!
//! # The house
//!
//! The code is layered in floors; each module imports only its own floor and those below
//! (`tests/architecture.rs` checks it on every test run):
//!
//! | floor | modules |
//! |---|---|
//! | 0. vocabulary | [`request_id`], [`clock`], [`report`], [`denial`] |
//! | 1. pure stages | [`tls`], [`identity`], [`ip_filter`], [`routing`], [`license`], [`token`], [`framing`], [`trace_context`] |
//! | 2. stores | [`state`] |
//! | 3. config | [`config`] |
//! | 4. request path | [`generation`], [`context`], [`pipeline`], [`upstream`], [`issuer`], [`record`], [`metrics`], `telemetry` |
//! | 5. the server | [`server`] |
//! | 6. entry points | `main.rs`, [`cli`], [`demo`], `fuzzing` (the fuzz targets' way in) |
//!
//! # The request path
//!
//! ```text
//! accept -> proxy protocol -> tls -> identity -> framing -> ip_filter -> [issuer] -> routing
//!        -> identity, ip_filter (route) -> license -> token -> upstream -> record
//! ```
//!
//! [`server`] accepts, reads a PROXY header, checks the listener's IP lists before the
//! handshake and digests the client certificate once per connection. Per request it loads
//! one [`generation::Generation`] (config snapshot and the running parts built from it,
//! swapped whole by a reload) and calls [`pipeline::handle`], the only place that knows the
//! order of the stages. Every refusal is a [`denial::Denial`].

pub mod cli;
mod clock;
pub mod config;
pub mod context;
pub mod demo;
pub mod denial;
pub mod enrollment;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod generation;
pub mod identity;
pub mod ip_filter;
pub mod issuer;
pub mod license;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod record;
mod report;
pub mod request_id;
pub mod routing;
pub mod server;
pub mod state;
mod telemetry;
mod tls;
pub mod token;
pub mod trace_context;
mod upstream;
pub mod usage;
pub mod vault;
