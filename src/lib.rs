//! # floodguard
//!
//! In-process flood and bot defence for Rust services. The core every other
//! part stands on: keyed rate limiters that answer "may key K make one more
//! request now?" for millions of keys at once, with no lock held across a
//! decision and in memory fixed at build time. On top of it (feature
//! `tower`, module [`http`]): a Tower layer for axum and tonic, a connection
//! gate, client scoring and attack detection, and overload protection.
//!
//! ```
//! use std::net::IpAddr;
//! use std::time::Duration;
//! use floodguard::KeyedLimiter;
//!
//! let limiter = KeyedLimiter::<IpAddr>::builder()
//!     .gcra(5, Duration::from_secs(60)) // 5 a minute on average
//!     .burst(3)                         // 3 at once
//!     .capacity(1_000_000)              // 16 MB, never more
//!     .build()?;
//! let ip: IpAddr = "192.0.2.10".parse().unwrap();
//! let d = limiter.check(&ip);
//! assert!(d.is_allowed());
//! assert_eq!(d.remaining(), 2);
//! # Ok::<(), floodguard::ConfigError>(())
//! ```
//!
//! ## Pieces
//!
//! * [`algo`]: the sliding-window counter and GCRA as pure state machines
//!   over one `u64`.
//! * [`AtomicTable`]: the bounded, set-associative table of atomic slots
//!   that holds per-key state (16 bytes per key); any [`Store`] can replace it.
//! * [`KeyedLimiter`]: algorithm + store + [`Clock`], keyed by any `Hash` type,
//!   built with a builder that names the bad field on error.
//! * [`Quota`]: a limit as a value (sliding window or GCRA), the one every
//!   builder takes.
//! * [`check_all`]: several limiters for one request, charged on all or none.
//! * [`ip`]: canonical client addresses, prefixes ([`IpPrefix`]) and compact
//!   encodings.
//! * [`ScoreTable`]: per-client scores from 0 to 100 that decay with a
//!   half-life, in the same bounded table.
//! * [`TopK`]: the heaviest keys of a stream (prefixes, fingerprint classes)
//!   in `k` entries, with error bounds: the Space-Saving sketch.
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `serde` | `Serialize`/`Deserialize` for configuration types; with `tower`, the whole [`config::GuardConfig`]; `Serialize` for counters, snapshots and events; with `axum`, a JSON view |
//! | `toml` | `serde` + [`config::GuardConfig`] read from and written to TOML files, errors with the field's path |
//! | `tower` | [`http`]: the Tower layer, connection gate, fingerprints, client scoring, attack detection, overload protection, Prometheus output |
//! | `axum` | `tower` + the gate as an axum listener, axum's connect info, a metrics handler |
//! | `tonic` | `tower` + the gate's streams for tonic, tonic's connect info |
//! | `metrics` | `tower` + `MetricsBridge`: the Prometheus output's values published through the [`metrics`](https://docs.rs/metrics) facade |
//! | `redis` | [`redis`]: limits shared by a fleet through Redis (strict or near-cached), with a failure policy; with `tower`, shared guard rules and shared bans |
//!
//! The core needs none of them.
// `unsafe` is allowed in one module only: the table's bucket allocation
// (`table::buckets`), which needs an alignment and a kernel hint that safe
// allocation cannot ask for.
#![deny(unsafe_code)]
#![warn(
    missing_debug_implementations,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod algo;
mod clock;
mod compose;
#[cfg(feature = "tower")]
pub mod config;
mod decision;
mod error;
#[cfg(all(feature = "axum", feature = "tonic"))]
pub mod guide;
#[cfg(all(feature = "serde", any(feature = "tower", feature = "redis")))]
mod hex16;
#[cfg(feature = "tower")]
pub mod http;
pub mod ip;
mod limiter;
mod prefix_map;
mod quota;
#[cfg(feature = "serde")]
mod quota_form;
#[cfg(feature = "redis")]
pub mod redis;
mod score;
#[cfg(feature = "serde")]
mod serde_duration;
#[cfg(feature = "serde")]
mod serialize;
mod stats;
mod store;
mod table;
mod topk;

pub use clock::{
    COARSE_TICK, Clock, CoarseClock, ManualClock, MonotonicClock, StdClock, Timestamp,
};
pub use compose::{CompositeDecision, Pending, check_all};
pub use decision::Decision;
pub use error::ConfigError;
pub use ip::IpPrefix;
pub use limiter::{Builder, DEFAULT_CAPACITY, KeyedLimiter, LimiterStats, SharedStats};
pub use prefix_map::{PrefixMap, PrefixSet};
pub use quota::Quota;
pub use score::{ScoreChange, ScoreRecord, ScoreTable};
pub use store::Store;
pub use table::{AtomicTable, MAX_CAPACITY};
pub use topk::{HeavyHitter, TopK};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
