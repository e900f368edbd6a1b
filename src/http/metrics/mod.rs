//! Prometheus text exposition (format 0.0.4) of a guard's and a gate's
//! counters, and under feature `axum` a ready `/metrics` handler.
//!
//! Everything here reads the public API ([`Guard::snapshot`],
//! [`Gate::stats`]) at scrape time; the request path is untouched.
//!
//! `text` writes the format; `guard`, `gate`, `scoring` and `overload`
//! write their families; `handler` serves them under feature `axum`.

mod gate;
mod guard;
#[cfg(feature = "axum")]
mod handler;
mod overload;
mod scoring;
#[cfg(test)]
mod tests;
mod text;

#[cfg(feature = "axum")]
pub use handler::{metrics_handler, metrics_handler_with_gate};
pub use text::PROMETHEUS_CONTENT_TYPE;
