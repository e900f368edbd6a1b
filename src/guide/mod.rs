//! Guides: how to put floodguard in front of a service, and how to tune it.
//!
//! * [`getting_started`]: the `Cargo.toml` line, a protected axum app in
//!   one call, then tonic, then a service behind a proxy.
//! * [`tuning`]: from shadow mode to enforcement, reading the snapshot and
//!   the metrics, choosing limits, changing settings without a restart.
//!
//! The README, the crate's front page on crates.io, has the figures and
//! the flood demo.

#[doc = include_str!("getting_started.md")]
pub mod getting_started {}

#[doc = include_str!("tuning.md")]
pub mod tuning {}
