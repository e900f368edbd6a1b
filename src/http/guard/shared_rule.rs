//! The seam a rule counted by a whole fleet plugs into (the Redis one is
//! [`Rule::shared`](crate::http::Rule::shared)).
//!
//! The guard owns these traits; a fleet implements them. A rule holds its
//! fleet as a [`RuleFleet`] until `build` compiles it; compiling joins the
//! fleet once, with the rule's name, quota and capacity as they ended up
//! (so a rule's methods go in any order), which gives the [`RuleCounter`]
//! the rule then counts in instead of its own limiter.
//!
//! The seam is always built; its one fleet, Redis, only with feature
//! `redis`, so without it no rule has a fleet.

use std::sync::Arc;

use crate::http::Rule;
use crate::{Pending, Quota, SharedStats};

impl Rule {
    /// Counts this rule in `fleet` instead of its own limiter, joined when
    /// `build` compiles the rule: what `shared` (feature `redis`) plugs
    /// Redis in with.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn counted_by(mut self, fleet: impl RuleFleet) -> Self {
        self.fleet = Some(Arc::new(fleet));
        self
    }
}

/// A fleet counting rules together, as a rule holds it until `build`
/// (shared by the rule's clones).
pub(crate) trait RuleFleet: Send + Sync + 'static {
    /// Joins the fleet's count of the rule named `rule`: `quota` per key,
    /// at most `capacity` keys held here. Called by `build`, once per
    /// guard the rule is built into. `Err` carries why the rule cannot be
    /// counted there, and `build` fails with it as
    /// [`ConfigError::SharedStore`](crate::ConfigError::SharedStore) in the
    /// rule's [`ConfigError::InRule`](crate::ConfigError::InRule).
    fn join(
        &self,
        rule: &str,
        quota: Quota,
        capacity: usize,
    ) -> Result<Box<dyn RuleCounter>, String>;
}

/// One rule's count in its fleet: what the rule checks requests against.
///
/// What an implementation must guarantee:
///
/// * [`pending_n`](Self::pending_n) runs on the request path, on any
///   thread: it never waits (for the network or a lock held across a
///   round trip). The check it gives is run by the guard with the
///   request's other checks, charged on all or none, and counts itself
///   in [`stats`](Self::stats) when charged.
/// * The guard reports [`stats`](Self::stats) as the rule's
///   [`RuleStats::shared`](crate::http::RuleStats::shared), and derives
///   the rule's [`LimiterStats`](crate::LimiterStats) from it.
pub(crate) trait RuleCounter: Send + Sync + 'static {
    /// The check of `key` at `cost`, or `None` to leave the request
    /// uncounted by this rule (as for a request without a key).
    fn pending_n(&self, key: &[u8], cost: u64) -> Option<Pending<'_>>;
    /// The counters.
    fn stats(&self) -> SharedStats;
}
