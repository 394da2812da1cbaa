//! Portcullis: a TLS-terminating API gateway for integration traffic.
//!
//! Every request walks one explicit pipeline (see [`pipeline`]):
//!
//! ```text
//! accept -> tls -> framing -> routing -> forward -> record
//! ```
//!
//! Each stage lives in the module named after it and passes one typed context
//! ([`context::ConnContext`] per connection, [`context::RequestContext`] per request). Every
//! refusal is a [`denial::Denial`]. Config is parsed ([`config::file`]), validated whole and
//! compiled into an immutable [`config::Snapshot`], read through one `ArcSwap` per request.

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context;
pub mod demo;
pub mod denial;
pub mod forward;
pub mod framing;
pub mod generation;
pub mod identity;
pub mod ip_filter;
pub mod issuer;
pub mod license;
pub mod listener;
mod memory;
pub mod metrics;
pub mod pipeline;
pub mod record;
pub mod reload;
pub mod report;
pub mod request_id;
pub mod routing;
pub mod state;
pub mod tls;
pub mod token;
