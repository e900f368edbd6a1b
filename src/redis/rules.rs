//! Shared rules (features `tower` and `redis`): a guard's [`Rule`] counted
//! in Redis by every instance of a fleet, through a near-cached
//! [`SharedLimiter`] of the rule's name.
//!
//! This is a fleet the rule's seam takes ([`RuleFleet`], [`RuleCounter`];
//! the guard owns them): [`Rule::shared`] gives the rule its store, which
//! the guard's `build` joins with the rule's name, quota and capacity.

use super::limiter::SharedLimiter;
use super::store::RedisStore;
use crate::http::{Rule, RuleCounter, RuleFleet};
use crate::{Pending, Quota, SharedStats};

impl Rule {
    /// Counts this rule across a fleet: every instance whose guard has a
    /// rule of this name shared through the same store namespace counts in
    /// one place in Redis. Checks never wait for Redis: the rule uses the
    /// near-cache ([`Mode::NearCache`](crate::redis::Mode::NearCache)), with
    /// the accuracy bound given in [`crate::redis`]; while Redis is
    /// unreachable the store's [`OnFailure`](crate::redis::OnFailure)
    /// policy decides. The guard must be built inside a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use floodguard::http::{Guard, Rule};
    /// use floodguard::redis::RedisStore;
    ///
    /// let store = RedisStore::builder("redis://127.0.0.1:6379/").namespace("shop").build()?;
    /// let guard = Guard::builder()
    ///     .rule(Rule::per_ip("per-ip").sliding_window(600, Duration::from_secs(60)).shared(&store))
    ///     .build()?;
    /// # let _ = guard; Ok(()) }
    /// ```
    pub fn shared(self, store: &RedisStore) -> Self {
        self.counted_by(store.clone())
    }
}

/// A store counts a rule in the near-cached limiter of the rule's name.
impl RuleFleet for RedisStore {
    fn join(
        &self,
        rule: &str,
        quota: Quota,
        capacity: usize,
    ) -> Result<Box<dyn RuleCounter>, String> {
        let limiter = SharedLimiter::<[u8]>::builder(rule)
            .quota(quota)
            .capacity(capacity)
            .build(self)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(limiter))
    }
}

impl RuleCounter for SharedLimiter<[u8]> {
    #[inline]
    fn pending_n(&self, key: &[u8], cost: u64) -> Option<Pending<'_>> {
        SharedLimiter::pending_n(self, key, cost)
    }

    fn stats(&self) -> SharedStats {
        SharedLimiter::stats(self)
    }
}
