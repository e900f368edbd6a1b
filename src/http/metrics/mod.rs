//! Prometheus text exposition (format 0.0.4) of a guard's and a gate's
//! counters, and under feature `axum` a ready `/metrics` handler; with
//! `serde` too, a JSON view of the same (`json`).
//!
//! Everything here reads the public API ([`Guard::snapshot`],
//! [`Gate::stats`]) at scrape time; the request path is untouched.
//!
//! `sink` is the one description of the families' shape; `guard`,
//! `gate`, `scoring` and `overload` say their families to a sink;
//! `text` writes the format from them and `handler` serves it under
//! feature `axum`; `bridge` publishes them through the `metrics` facade
//! under feature `metrics`.

#[cfg(feature = "metrics")]
mod bridge;
mod gate;
mod guard;
#[cfg(feature = "axum")]
mod handler;
#[cfg(all(feature = "axum", feature = "serde"))]
mod json;
#[cfg(all(test, feature = "serde"))]
mod json_tests;
mod overload;
mod scoring;
mod sink;
#[cfg(test)]
mod tests;
mod text;

#[cfg(feature = "metrics")]
pub use bridge::{MetricsBridge, PublishTask};
#[cfg(feature = "axum")]
pub use handler::{metrics_handler, metrics_handler_with_gate};
#[cfg(all(feature = "axum", feature = "serde"))]
pub use json::{json_handler, json_handler_with_gate};
pub use text::PROMETHEUS_CONTENT_TYPE;
