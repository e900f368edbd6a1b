//! Configuration as data: [`GuardConfig`], every setting of a
//! [`Guard`](crate::http::Guard) and its [`Gate`](crate::http::Gate) (and,
//! with feature `redis`, of the Redis store they share through) in one
//! value, which builds a guard, reloads a running one
//! ([`Guard::reload`](crate::http::Guard::reload)) and, with feature
//! `toml`, reads from and writes to files.
//!
//! This room sits on top: it gathers the settings of every other one and
//! none imports it.
//!
//! # The file
//!
//! The recommended configuration, [`GuardConfig::recommended`], as the
//! repository's `examples/floodguard.toml` writes it (fields left out
//! keep their defaults; `[live]` marks what [`Guard::reload`](crate::http::Guard::reload)
//! changes while the guard runs):
//!
//! ```toml
#![doc = include_str!("../../examples/floodguard.toml")]
//! ```

#[cfg(feature = "toml")]
mod file;
#[cfg(feature = "serde")]
mod forms;
pub(crate) mod gate;
pub(crate) mod guard;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "serde")]
mod rule_form;

#[cfg(feature = "toml")]
pub use file::ConfigFileError;
pub use gate::{ConnectionRate, GateConfig, PrefixCap, PrefixRate};
pub use guard::GuardConfig;
#[cfg(feature = "redis")]
pub use redis::RedisConfig;
