//! The near-cache: decide locally from what Redis said at the last sync,
//! push what was admitted in batches.
//!
//! Each key holds a *budget*: this instance's share of the room Redis
//! reported for it at the last sync, `⌈room / instances⌉` capped at
//! `sync_after`. A check spends it without a round trip; what was spent is
//! pushed every `sync_every`, or at once when the budget runs out, and the
//! answer sets the next budget. A key Redis reported over its limit is
//! refused locally until its retry-after has passed. The accuracy bound
//! this gives is in the [module docs](super#near-cache-accuracy).

use crate::Timestamp;
use crate::algo::Op;
use crate::decision::Decision;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::script::Reply;

const SHARDS: usize = 32;
/// Entries looked at to find one to drop when a shard is full.
const EVICTION_SCAN: usize = 16;

/// One key's local view.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Units this instance may still admit before hearing from Redis.
    budget: u64,
    /// Admitted (minus given back) here and not pushed yet.
    pending: i64,
    /// Pushed, answer not back yet: the entry must not be dropped.
    in_flight: bool,
    /// In its shard's dirty list.
    dirty: bool,
    /// Redis said the key is over its limit until then (ns; 0: not blocked).
    blocked_until: u64,
    /// When the key's state in Redis will have fully decayed (ns).
    reset_at: u64,
    last_seen: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<u64, Entry, ahash::RandomState>,
    /// Keys with something to push or a budget to refresh.
    dirty: Vec<u64>,
}

impl Shard {
    fn mark(&mut self, key: u64) {
        if let Some(e) = self.entries.get_mut(&key) {
            if !e.dirty {
                e.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Drops the least recently seen of a few entries with nothing to push;
    /// false if none of them can go.
    fn make_room(&mut self) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| !e.dirty && !e.in_flight && e.pending == 0)
            .take(EVICTION_SCAN)
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(k, _)| *k);
        victim.is_some_and(|k| self.entries.remove(&k).is_some())
    }
}

/// What a check asks the sync loop to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nudge {
    /// Nothing urgent: the next periodic sync will do.
    None,
    /// Sync now: a key spent `sync_after`, or ran out of budget.
    Now,
}

/// Counters of a near-cache.
#[derive(Default)]
pub(crate) struct NearCounters {
    pub(crate) budget_refusals: AtomicU64,
    pub(crate) overflow: AtomicU64,
    pub(crate) rounds: AtomicU64,
    pub(crate) pushed_keys: AtomicU64,
    pub(crate) failed_rounds: AtomicU64,
}

/// The local state of a near-cached limiter.
pub(crate) struct NearCache {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    limit: u64,
    sync_after: u64,
    sync_every: Duration,
    pub(crate) counters: NearCounters,
}

impl NearCache {
    pub(crate) fn new(limit: u64, capacity: usize, sync_after: u64, sync_every: Duration) -> Self {
        NearCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            limit,
            sync_after: sync_after.max(1),
            sync_every,
            counters: NearCounters::default(),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        // The key is already a keyed hash; its top bits pick the shard.
        &self.shards[(key >> 59) as usize % SHARDS]
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }

    /// This instance's share of `room`: a fair part of it, and never more
    /// than `sync_after`, so that what other instances spend unseen between
    /// two syncs stays small.
    fn share(&self, room: u64, instances: u64) -> u64 {
        room.div_ceil(instances.max(1)).min(self.sync_after)
    }

    /// The allowance assumed for a key Redis has not told us about.
    fn fresh_budget(&self, instances: u64) -> u64 {
        self.share(self.limit, instances)
    }

    fn allow(&self, e: &Entry, now: u64) -> Decision {
        Decision::allow(self.limit, e.budget, 1, e.reset_at.saturating_sub(now))
    }

    fn deny(&self, e: &Entry, now: u64, retry: u64) -> Decision {
        Decision::deny(
            self.limit,
            (e.budget, 1),
            e.reset_at.saturating_sub(now),
            retry,
        )
    }

    /// Decides `op` for `key` locally. `None` when the key has no entry and
    /// none can be made (the cache is full of keys with counts not yet
    /// pushed): the caller decides with its local fallback instead.
    pub(crate) fn apply(
        &self,
        key: u64,
        now: Timestamp,
        op: Op,
        instances: u64,
    ) -> Option<(Decision, Nudge)> {
        let now = now.as_nanos();
        let mut guard = self.shard(key).lock();
        let Shard { entries, dirty } = &mut *guard;
        if let Some(e) = entries.get_mut(&key) {
            return Some(self.decide(key, e, dirty, now, op));
        }
        if let Op::Peek(cost) | Op::Refund(cost) = op {
            // Never creates an entry: decide on the assumed allowance.
            let e = Entry {
                budget: self.fresh_budget(instances),
                ..Entry::default()
            };
            let d = if cost <= e.budget {
                self.allow(&e, now)
            } else {
                self.deny(&e, now, duration_nanos(self.sync_every))
            };
            return Some((d, Nudge::None));
        }
        if entries.len() >= self.shard_capacity && !guard.make_room() {
            self.counters.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        guard.entries.insert(
            key,
            Entry {
                budget: self.fresh_budget(instances),
                ..Entry::default()
            },
        );
        let Shard { entries, dirty } = &mut *guard;
        let e = entries.get_mut(&key)?;
        Some(self.decide(key, e, dirty, now, op))
    }

    /// Decides `op` on `key`'s entry `e`, adding it to `dirty` if it has
    /// something to push or a budget to refresh.
    fn decide(
        &self,
        key: u64,
        e: &mut Entry,
        dirty: &mut Vec<u64>,
        now: u64,
        op: Op,
    ) -> (Decision, Nudge) {
        let mut mark = |e: &mut Entry| {
            if !e.dirty {
                e.dirty = true;
                dirty.push(key);
            }
        };
        e.last_seen = now;
        if e.blocked_until != 0 {
            if now < e.blocked_until {
                return (self.deny(e, now, e.blocked_until - now), Nudge::None);
            }
            // Redis's retry-after promised room for one unit by now; take it
            // and ask for the real figure.
            e.blocked_until = 0;
            e.budget = e.budget.max(1);
            mark(e);
        }
        match op {
            Op::Check(cost) if cost > self.limit => {
                let reset = e.reset_at.saturating_sub(now);
                (
                    Decision::never(self.limit, (e.budget, 1), reset),
                    Nudge::None,
                )
            }
            Op::Check(cost) if cost <= e.budget => {
                e.budget -= cost;
                e.pending = e
                    .pending
                    .saturating_add(i64::try_from(cost).unwrap_or(i64::MAX));
                mark(e);
                let nudge = if e.pending.unsigned_abs() >= self.sync_after {
                    Nudge::Now
                } else {
                    Nudge::None
                };
                (self.allow(e, now), nudge)
            }
            Op::Check(_) => {
                // Out of this instance's share; the fleet may still have
                // room, which the next sync (hurried along) will tell.
                self.counters
                    .budget_refusals
                    .fetch_add(1, Ordering::Relaxed);
                mark(e);
                (
                    self.deny(e, now, duration_nanos(self.sync_every)),
                    Nudge::Now,
                )
            }
            Op::Peek(cost) if cost <= e.budget => (self.allow(e, now), Nudge::None),
            Op::Peek(_) => (
                self.deny(e, now, duration_nanos(self.sync_every)),
                Nudge::None,
            ),
            Op::Refund(cost) => {
                e.budget = e.budget.saturating_add(cost);
                e.pending = e
                    .pending
                    .saturating_sub(i64::try_from(cost).unwrap_or(i64::MAX));
                mark(e);
                (self.allow(e, now), Nudge::None)
            }
        }
    }

    /// Takes what every dirty key has to push: `(key, units)`.
    pub(crate) fn take_dirty(&self) -> Vec<(u64, i64)> {
        let mut batch = Vec::new();
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            let dirty = std::mem::take(&mut s.dirty);
            for key in dirty {
                if let Some(e) = s.entries.get_mut(&key) {
                    e.dirty = false;
                    e.in_flight = true;
                    batch.push((key, e.pending));
                    e.pending = 0;
                }
            }
        }
        batch
    }

    /// Sets each pushed key's budget from Redis's answer.
    pub(crate) fn settle(
        &self,
        batch: &[(u64, i64)],
        replies: &[Reply],
        now: Timestamp,
        instances: u64,
    ) {
        let now = now.as_nanos();
        for (&(key, _), r) in batch.iter().zip(replies) {
            let mut shard = self.shard(key).lock();
            let Some(e) = shard.entries.get_mut(&key) else {
                continue;
            };
            e.in_flight = false;
            let share = self.share(r.remaining, instances);
            // What was admitted since the push came out of the old budget
            // but is not in Redis's figure yet.
            e.budget = share.saturating_sub(e.pending.max(0).unsigned_abs());
            e.reset_at = now.saturating_add(r.reset_after_us.saturating_mul(1_000));
            e.blocked_until = if r.allowed {
                0
            } else {
                e.budget = 0;
                let retry = r.retry_after_us.unwrap_or(r.reset_after_us).max(1);
                now.saturating_add(retry.saturating_mul(1_000))
            };
        }
        self.counters
            .pushed_keys
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }

    /// Puts back what a failed push carried, to go with the next one.
    pub(crate) fn restore(&self, batch: &[(u64, i64)]) {
        for &(key, units) in batch {
            let mut shard = self.shard(key).lock();
            if let Some(e) = shard.entries.get_mut(&key) {
                e.in_flight = false;
                e.pending = e.pending.saturating_add(units);
                shard.mark(key);
            }
        }
        self.counters.failed_rounds.fetch_add(1, Ordering::Relaxed);
    }
}

fn duration_nanos(d: Duration) -> u64 {
    crate::clock::duration_nanos(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    fn reply(allowed: bool, remaining: u64, retry_ms: u64) -> Reply {
        Reply {
            allowed,
            remaining,
            reset_after_us: 60_000_000,
            retry_after_us: (!allowed).then_some(retry_ms * 1_000),
        }
    }

    #[test]
    fn a_fresh_key_gets_its_share_then_waits_for_a_sync() {
        let nc = NearCache::new(10, 100, 4, Duration::from_millis(10));
        // Three instances: a share of ⌈10/3⌉ = 4.
        for i in 0..4 {
            let (d, _) = nc.apply(7, at(0), Op::Check(1), 3).unwrap();
            assert!(d.is_allowed(), "check {i}");
        }
        let (d, nudge) = nc.apply(7, at(1), Op::Check(1), 3).unwrap();
        assert!(d.is_denied());
        assert_eq!(nudge, Nudge::Now);
        assert_eq!(d.retry_after(), Some(Duration::from_millis(10)));
        assert_eq!(nc.counters.budget_refusals.load(Ordering::Relaxed), 1);
        // The push carries the 4; Redis says 6 left overall: a share of 2.
        let batch = nc.take_dirty();
        assert_eq!(batch, vec![(7, 4)]);
        assert!(nc.take_dirty().is_empty());
        nc.settle(&batch, &[reply(true, 6, 0)], at(2), 3);
        assert!(nc.apply(7, at(3), Op::Check(2), 3).unwrap().0.is_allowed());
        assert!(nc.apply(7, at(3), Op::Check(1), 3).unwrap().0.is_denied());
    }

    #[test]
    fn a_key_over_its_limit_is_refused_locally_until_its_retry_after() {
        let nc = NearCache::new(5, 100, 100, Duration::from_millis(10));
        nc.apply(1, at(0), Op::Check(1), 1).unwrap();
        let batch = nc.take_dirty();
        nc.settle(&batch, &[reply(false, 0, 500)], at(1), 1);
        let (d, _) = nc.apply(1, at(100), Op::Check(1), 1).unwrap();
        assert!(d.is_denied());
        assert_eq!(d.retry_after(), Some(Duration::from_millis(401)));
        // After the retry-after one unit goes through, and a refresh is due.
        assert!(
            nc.apply(1, at(502), Op::Check(1), 1)
                .unwrap()
                .0
                .is_allowed()
        );
        assert_eq!(nc.take_dirty(), vec![(1, 1)]);
    }

    #[test]
    fn units_admitted_during_a_push_come_out_of_the_next_budget() {
        let nc = NearCache::new(100, 100, 1000, Duration::from_millis(10));
        nc.apply(9, at(0), Op::Check(10), 1).unwrap();
        let batch = nc.take_dirty();
        // While the push is out, 5 more are admitted here.
        nc.apply(9, at(1), Op::Check(5), 1).unwrap();
        nc.settle(&batch, &[reply(true, 90, 0)], at(2), 1);
        let (d, _) = nc.apply(9, at(3), Op::Peek(1), 1).unwrap();
        assert_eq!(d.remaining(), 85);
    }

    #[test]
    fn a_failed_push_is_put_back_and_refunds_are_pushed_too() {
        let nc = NearCache::new(100, 100, 1000, Duration::from_millis(10));
        nc.apply(3, at(0), Op::Check(7), 1).unwrap();
        let batch = nc.take_dirty();
        nc.restore(&batch);
        nc.apply(3, at(1), Op::Refund(2), 1).unwrap();
        assert_eq!(nc.take_dirty(), vec![(3, 5)]);
    }

    #[test]
    fn a_full_cache_drops_clean_keys_never_unpushed_counts() {
        // One entry per shard.
        let nc = NearCache::new(10, 1, 1000, Duration::from_millis(10));
        let a = 5u64; // shard 0
        let b = 6u64; // shard 0 too
        assert!(nc.apply(a, at(0), Op::Check(1), 1).is_some());
        // `a` has a count to push: `b` cannot take its place.
        assert!(nc.apply(b, at(1), Op::Check(1), 1).is_none());
        assert_eq!(nc.counters.overflow.load(Ordering::Relaxed), 1);
        let batch = nc.take_dirty();
        nc.settle(&batch, &[reply(true, 9, 0)], at(2), 1);
        // Pushed and settled: now it may go.
        assert!(nc.apply(b, at(3), Op::Check(1), 1).is_some());
        assert_eq!(nc.len(), 1);
        // Peeks and refunds of unknown keys never create entries.
        assert!(nc.apply(77, at(4), Op::Peek(1), 1).unwrap().0.is_allowed());
        assert_eq!(nc.len(), 1);
    }
}
