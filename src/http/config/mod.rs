//! Configuration as data: [`GuardConfig`], every setting of a guard and
//! its gate in one value, which builds a guard, reloads a running one and
//! (with feature `serde`) reads from and writes to files.

#[cfg(feature = "toml")]
mod file;
#[cfg(feature = "serde")]
mod forms;
pub(crate) mod gate;
pub(crate) mod guard;
#[cfg(feature = "serde")]
mod rule_form;

#[cfg(feature = "toml")]
pub use file::ConfigFileError;
pub use gate::{ConnectionRate, GateConfig, PrefixCap, PrefixRate};
pub use guard::GuardConfig;
