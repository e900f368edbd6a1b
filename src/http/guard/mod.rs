//! The guard: the shared state (rules, lists, bans, counters), the
//! pipeline that decides one request, and the builder.
//!
//! `guard` holds the state and the ban operations, `pipeline` decides one
//! request, `decision` is what it decided, `builder` configures it,
//! `rules` are its limits, `live` what a reload swaps, `reload` how, `ban_list` its bans, `stats` its counters,
//! `fleet` the seam a fleet sharing bans plugs into, `shared_rule` the
//! seam a fleet counting a rule plugs into.

pub(crate) mod ban_list;
pub(crate) mod builder;
pub(crate) mod decision;
pub(crate) mod fleet;
pub(crate) mod forgotten_proxy;
#[allow(clippy::module_inception)]
pub(crate) mod guard;
pub(crate) mod live;
pub(crate) mod notice;
pub(crate) mod pipeline;
pub(crate) mod refusal_hook;
pub(crate) mod reload;
pub(crate) mod rules;
pub(crate) mod shared_rule;
pub(crate) mod stats;

pub use builder::{DEFAULT_MAX_BANS, GuardBuilder, MissingPeer};
pub use decision::{GuardDecision, Refusal, RefusalKind};
pub use fleet::SharedBanStats;
pub use guard::Guard;
pub use refusal_hook::{RefusalInfo, RefusalResponse};
pub use reload::ReloadError;
pub use rules::{Rule, RuleStats};
pub use stats::{GuardStats, Snapshot};
