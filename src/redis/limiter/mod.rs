//! `SharedLimiter`: one limit for a whole fleet, counted in Redis.
//!
//! Its builder, which checks the settings and starts the sync task, is in
//! `builder.rs`.

mod builder;

pub use builder::SharedBuilder;

use super::near_cache::NearCache;
use super::script::ScriptOp;
use super::store::{OnFailure, RedisStore, StoreInner};
use crate::algo::{Algorithm, Op};
use crate::decision::Decision;
use crate::stats::Striped;
use crate::{KeyedLimiter, SharedStats, Timestamp};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Default time between two near-cache syncs.
pub const DEFAULT_SYNC_EVERY: Duration = Duration::from_millis(10);
/// Default largest share of a key an instance spends between two syncs.
pub const DEFAULT_SYNC_AFTER: u64 = 16;
/// Default number of keys a shared limiter keeps locally (near-cache and
/// fallback limiter each).
pub const DEFAULT_LOCAL_CAPACITY: usize = 100_000;
/// Largest number of keys pushed in one round trip.
const MAX_BATCH: usize = 1024;

/// How a [`SharedLimiter`] talks to Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Every check is one round trip running the algorithm in Redis: exact
    /// across the fleet, at the cost of a network wait per check.
    Strict,
    /// Checks are decided locally from each key's share of what Redis last
    /// reported; what was admitted is pushed every `sync_every`, or at once
    /// when a key's share is spent. No check waits for the network; the
    /// fleet may overshoot a key's limit by the bound in the
    /// [module docs](super#near-cache-accuracy).
    NearCache {
        /// Time between two syncs.
        sync_every: Duration,
        /// Largest share of a key an instance spends between two syncs; the
        /// fleet overshoots a limit by at most `(instances − 1) ×
        /// sync_after`.
        sync_after: u64,
    },
}

impl Mode {
    /// [`Mode::NearCache`] with the default sync interval and batch.
    pub const fn near_cache() -> Self {
        Mode::NearCache {
            sync_every: DEFAULT_SYNC_EVERY,
            sync_after: DEFAULT_SYNC_AFTER,
        }
    }
}

/// A rate limit shared by every instance that builds one with the same
/// name on the same [`RedisStore`] namespace.
///
/// ```no_run
/// # async fn f() -> Result<(), floodguard::redis::StoreError> {
/// use std::net::IpAddr;
/// use std::time::Duration;
/// use floodguard::redis::{Mode, RedisStore, SharedLimiter};
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379/").namespace("shop").build()?;
/// let limiter = SharedLimiter::<IpAddr>::builder("login")
///     .sliding_window(10, Duration::from_secs(60))
///     .mode(Mode::Strict)
///     .build(&store)?;
/// let ip: IpAddr = "192.0.2.7".parse().unwrap();
/// if limiter.check(&ip).await.is_allowed() { /* serve */ }
/// # Ok(()) }
/// ```
///
/// # Dropping a near-cached limiter
///
/// In [`Mode::NearCache`], when the last clone of a limiter is dropped, the
/// counts admitted since the last sync are pushed by a task spawned on the
/// runtime the limiter was built on: dropping never blocks, and works
/// outside that runtime's context too. That push is best-effort: call
/// [`flush`](Self::flush)`.await` when you must know the counts arrived,
/// for instance before the runtime shuts down, which cancels the task. What
/// a dropped limiter could not push is counted in
/// [`StoreStats::dropped_unflushed`](super::StoreStats::dropped_unflushed)
/// and logged.
pub struct SharedLimiter<K: ?Sized> {
    inner: Arc<Shared>,
    /// Near-cache mode only. One for all clones, so that its drop is the
    /// last handle's (`inner` cannot tell: the sync task upgrades a weak
    /// reference to it for each round). After `inner`, so dropped after it:
    /// the sync task it wakes finds the limiter gone.
    flush_on_drop: Option<Arc<FlushOnDrop>>,
    _key: PhantomData<fn(&K)>,
}

impl<K: ?Sized> Clone for SharedLimiter<K> {
    fn clone(&self) -> Self {
        SharedLimiter {
            inner: Arc::clone(&self.inner),
            flush_on_drop: self.flush_on_drop.clone(),
            _key: PhantomData,
        }
    }
}

/// Pushes a near-cache's pending counts when the last [`SharedLimiter`]
/// handle goes.
struct FlushOnDrop {
    /// `Some` until dropped.
    shared: Option<Arc<Shared>>,
    /// The runtime the limiter was built on: the drop may happen outside it.
    runtime: tokio::runtime::Handle,
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let wake = Arc::clone(&shared.wake);
        if shared.near.as_ref().is_some_and(NearCache::has_listed) {
            // If the runtime is shutting down (or gone) the task is dropped
            // unrun, and with it the last `Arc`: `Shared`'s drop counts
            // the loss.
            self.runtime.spawn(async move {
                shared.sync_round().await;
                drop(shared);
                // The sync task finds the limiter gone now, not after a
                // whole `sync_every`.
                wake.notify_one();
            });
        } else {
            drop(shared);
            wake.notify_one();
        }
    }
}

impl<K: ?Sized> std::fmt::Debug for SharedLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("name", &self.inner.name)
            .field("algorithm", &self.inner.algorithm)
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    name: String,
    store: Arc<StoreInner>,
    algorithm: Algorithm,
    mode: Mode,
    /// `<namespace>:{<name>:`; the key's hash and `}` complete it, so one
    /// key's state sits in one cluster slot.
    prefix: String,
    /// Decides while Redis is unreachable and the policy is to fail open.
    local: KeyedLimiter<u64>,
    /// Hashes keys for the local tables: fast, and keyed per process.
    local_hasher: ahash::RandomState,
    near: Option<NearCache>,
    wake: Arc<Notify>,
    /// Per-thread stripes: a shared atomic add would cost as much as the
    /// near-cache check itself.
    pub(super) counters: Striped<3>,
}

/// Which counter of `Shared::counters`.
#[derive(Clone, Copy)]
enum Counter {
    Checked = 0,
    Denied = 1,
    Fallback = 2,
}

impl From<Counter> for usize {
    fn from(c: Counter) -> usize {
        c as usize
    }
}

impl<K: Hash + ?Sized> SharedLimiter<K> {
    /// Starts a builder. `name` identifies the limit across the fleet: every
    /// instance that builds a limiter of this name on the same namespace
    /// shares its counts, so give each limit its own name.
    pub fn builder(name: impl Into<String>) -> SharedBuilder<K> {
        SharedBuilder::new(name.into())
    }

    /// Decides one request of cost 1 for `key`.
    pub async fn check(&self, key: &K) -> Decision {
        self.check_n(key, 1).await
    }

    /// Decides one request of cost `cost`. In [`Mode::Strict`] this waits
    /// for Redis (never longer than the store's timeout); in
    /// [`Mode::NearCache`] it does not wait at all.
    pub async fn check_n(&self, key: &K, cost: u64) -> Decision {
        let s = &*self.inner;
        if let Some(near) = &s.near {
            // Near-cache: decided at once, nothing to wait for.
            return self.near_check(near, key, cost);
        }
        let d = s.strict(s.store.hash(key), cost).await;
        s.record(d.is_allowed());
        d
    }

    /// Decides at once in [`Mode::NearCache`]; `None` in [`Mode::Strict`],
    /// whose checks must wait for Redis.
    #[inline]
    pub fn check_now(&self, key: &K, cost: u64) -> Option<Decision> {
        let near = self.inner.near.as_ref()?;
        Some(self.near_check(near, key, cost))
    }

    /// A near-cache check, counted.
    #[inline]
    fn near_check(&self, near: &NearCache, key: &K, cost: u64) -> Decision {
        let s = &*self.inner;
        let d = s.near(
            near,
            s.local_hasher.hash_one(key),
            || s.store.hash(key),
            s.store.now(),
            Op::Check(cost),
        );
        s.record(d.is_allowed());
        d
    }

    /// A check for `key` to run with [`check_all`](crate::check_all),
    /// charged with other limiters' on all or none. Near-cache mode only
    /// (`None` in strict mode).
    pub fn pending_n(&self, key: &K, cost: u64) -> Option<crate::Pending<'_>> {
        let s = &*self.inner;
        (s.mode != Mode::Strict).then(|| {
            let local = s.local_hasher.hash_one(key);
            crate::Pending::with_aux(
                s as &dyn crate::compose::Charge,
                local,
                s.store.hash(key),
                cost,
            )
        })
    }
}

impl<K: ?Sized> SharedLimiter<K> {
    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The algorithm and quota.
    pub fn algorithm(&self) -> &Algorithm {
        &self.inner.algorithm
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The store this limiter counts in.
    pub fn store(&self) -> RedisStore {
        RedisStore {
            inner: Arc::clone(&self.inner.store),
        }
    }

    /// The limiter's counters.
    pub fn stats(&self) -> SharedStats {
        let s = &*self.inner;
        let mut stats = SharedStats {
            checked: s.counters.sum(Counter::Checked),
            denied: s.counters.sum(Counter::Denied),
            fallback: s.counters.sum(Counter::Fallback),
            instances: s.store.instances(),
            redis_available: s.store.is_closed(),
            ..SharedStats::default()
        };
        if let Some(n) = &s.near {
            let c = &n.counters;
            stats.budget_refusals = c.budget_refusals.sum(0usize);
            stats.evictions = n.evictions();
            stats.sync_rounds = c.rounds.load(Ordering::Relaxed);
            stats.pushed_keys = c.pushed_keys.load(Ordering::Relaxed);
            stats.failed_rounds = c.failed_rounds.load(Ordering::Relaxed);
            stats.cached_keys = n.len();
            stats.capacity = n.capacity();
        }
        stats
    }

    /// Pushes what the near-cache holds now and waits for the answer
    /// (at most the store's timeout). Dropping the last handle pushes too,
    /// in the background; call this before shutting down (before the
    /// runtime stops) to know the fleet has this instance's last counts. A
    /// no-op in strict mode.
    pub async fn flush(&self) {
        self.inner.sync_round().await;
    }
}

impl Shared {
    fn limit(&self) -> u64 {
        self.algorithm.limit()
    }

    #[inline]
    fn record(&self, allowed: bool) {
        self.counters.add(Counter::Checked, 1);
        if !allowed {
            self.counters.add(Counter::Denied, 1);
        }
    }

    fn redis_key(&self, hash: u64) -> String {
        format!("{}{hash:016x}}}", self.prefix)
    }

    async fn strict(&self, hash: u64, cost: u64) -> Decision {
        let cmd = self.store.scripts.cmd(
            &self.algorithm,
            &self.redis_key(hash),
            ScriptOp::Check(cost),
            None,
        );
        match self.store.run(std::slice::from_ref(&cmd)).await {
            Ok(replies) => match replies.first() {
                Some(r) => r.decision(self.limit()),
                None => self.fallback(hash, self.store.now(), Op::Check(cost)),
            },
            Err(_) => self.fallback(hash, self.store.now(), Op::Check(cost)),
        }
    }

    /// A near-cache decision for the key hashed `local` here (`redis_key`
    /// gives its hash for Redis, computed only when needed); the failure
    /// policy while Redis is away.
    #[inline]
    fn near(
        &self,
        near: &NearCache,
        local: u64,
        redis_key: impl FnOnce() -> u64,
        now: Timestamp,
        op: Op,
    ) -> Decision {
        if !self.store.is_closed() {
            return self.fallback(local, now, op);
        }
        let instances = self.store.instances_cell();
        near.apply(local, redis_key, now, op, instances, || {
            self.wake.notify_one()
        })
    }

    /// Out of line: only taken while Redis is away.
    #[cold]
    #[inline(never)]
    fn fallback(&self, hash: u64, now: Timestamp, op: Op) -> Decision {
        if matches!(op, Op::Check(_)) {
            self.counters.add(Counter::Fallback, 1);
        }
        match self.store.on_failure {
            OnFailure::Local => self.local_decision(hash, now, op),
            OnFailure::Refuse => {
                let retry = self.store.retry_in().max(Duration::from_millis(1));
                Decision::deny(self.limit(), (0, 1), 0, crate::clock::duration_nanos(retry))
            }
        }
    }

    fn local_decision(&self, hash: u64, now: Timestamp, op: Op) -> Decision {
        match op {
            Op::Check(cost) => self.local.check_n_at(&hash, cost, now),
            _ => self.local.apply_op(&hash, now, op),
        }
    }

    /// Pushes every dirty key's count and settles their budgets.
    async fn sync_round(&self) {
        let Some(near) = &self.near else { return };
        let batch = near.take_listed(self.store.now());
        // A round dropped midway (a cancelled `flush`, a runtime shutting
        // down) puts back what it had not settled: pushed again, or counted
        // as lost if the limiter is gone. Redis may have had it already;
        // counting twice errs on the side of the limit.
        let mut unsettled = Unsettled {
            near,
            store: &self.store,
            rest: &batch,
        };
        for chunk in batch.chunks(MAX_BATCH) {
            let cmds: Vec<redis::Cmd> = chunk
                .iter()
                .map(|&(_, hash, units)| {
                    self.store.scripts.cmd(
                        &self.algorithm,
                        &self.redis_key(hash),
                        ScriptOp::Push(units),
                        None,
                    )
                })
                .collect();
            match self.store.run(&cmds).await {
                Ok(replies) if replies.len() == chunk.len() => {
                    near.counters.rounds.fetch_add(1, Ordering::Relaxed);
                    near.settle(chunk, &replies, self.store.now(), self.store.instances());
                }
                _ => near.restore(chunk, self.store.now()),
            }
            unsettled.rest = &unsettled.rest[chunk.len()..];
        }
    }
}

/// The part of a sync round's batch not settled or restored yet.
struct Unsettled<'a> {
    near: &'a NearCache,
    store: &'a StoreInner,
    rest: &'a [(u64, u64, i64)],
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if !self.rest.is_empty() {
            self.near.restore(self.rest, self.store.now());
        }
    }
}

impl Drop for Shared {
    /// Whatever is still pending now will never be pushed: count it, so
    /// the fleet's under-count shows.
    fn drop(&mut self) {
        let Some(near) = &self.near else { return };
        let units: u64 = near
            .take_listed(self.store.now())
            .iter()
            .map(|&(_, _, units)| units.max(0).unsigned_abs())
            .sum();
        if units > 0 {
            self.store.lost_on_drop(&self.name, units);
        }
    }
}

impl crate::compose::Charge for Shared {
    fn apply_hashed(&self, key: u64, redis_key: u64, _: Timestamp, op: Op) -> Decision {
        // The store's clock, not the caller's: blocks were set on it.
        let now = self.store.now();
        match &self.near {
            Some(near) => self.near(near, key, || redis_key, now, op),
            // Not built in strict mode (`pending_n` gives none there).
            None => self.fallback(key, now, op),
        }
    }

    fn record(&self, allowed: bool) {
        Shared::record(self, allowed);
    }
}

/// Syncs a near-cache every `every`, or sooner when woken, until the
/// limiter is dropped; refreshes the fleet's instance count on the way.
async fn sync_loop(shared: Weak<Shared>, wake: Arc<Notify>, every: Duration) {
    loop {
        // Woken early or not, the round runs.
        let _ = tokio::time::timeout(every, wake.notified()).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.store.heartbeat_if_due().await;
        shared.sync_round().await;
    }
}
