//! The guard: the shared state (rules, lists, bans, counters), the
//! pipeline that decides one request, and the builder.

pub(crate) mod ban_list;
#[allow(clippy::module_inception)]
pub(crate) mod guard;
pub(crate) mod rules;

pub use guard::{
    DEFAULT_MAX_BANS, Guard, GuardBuilder, GuardDecision, GuardStats, MissingPeer, Refusal,
    ScoringStats, Snapshot,
};
pub use rules::{Rule, RuleStats};
