//! Configuration as data: [`GuardConfig`], every setting of a
//! [`Guard`](crate::http::Guard) and its [`Gate`](crate::http::Gate) (and,
//! with feature `redis`, of the Redis store they share through) in one
//! value, which builds a guard, reloads a running one
//! ([`Guard::reload`](crate::http::Guard::reload)) and, with feature
//! `toml`, reads from and writes to files.
//!
//! This room sits on top: it gathers the settings of every other one and
//! none imports it.

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
