//! The guard's seam: [`GuardBuilder::share_bans`] hands the builder a
//! [`Setup`] ([`BanFleet`]); joining gives the guard a [`BanSink`]
//! ([`FleetLink`]) to queue its changes on, and a [`Starter`] that spawns
//! the tasks once the guard exists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::format::shareable;
use super::task::{Core, Outgoing, bump, publish_loop, subscribe_loop};
use crate::http::{BanFleet, FleetLink, GuardBuilder, GuardHandle, Joined, SharedBanStats};
use crate::redis::store::{RedisStore, StoreInner};
use crate::{Clock, IpPrefix};

/// Changes waiting for the publisher; more are dropped (and counted).
const QUEUE: usize = 4096;

/// Guards made in this process: each gets its own sender id, so that two
/// guards on one store still hear each other.
static GUARDS: AtomicU64 = AtomicU64::new(0);

/// A fleet sharing bans through a store, as [`GuardBuilder::share_bans`]
/// gives it to the builder: joined by `build`, once per guard.
#[derive(Clone)]
pub(super) struct Setup {
    store: Arc<StoreInner>,
    runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("namespace", &self.store.namespace)
            .finish_non_exhaustive()
    }
}

impl<C: Clock + Clone> GuardBuilder<C> {
    /// Shares this guard's bans with every instance of the fleet through
    /// `store` (features `tower` and `redis`): each ban it records (by
    /// [`Guard::ban`](crate::http::Guard::ban) or by scoring) and each
    /// [`Guard::unban`](crate::http::Guard::unban) is published, and every
    /// guard sharing bans on a store of the same namespace applies it,
    /// within a round trip to Redis. Fingerprint classes that attack
    /// detection flags are shared too, for the ladder's first ban length
    /// (60 s without scoring), so the other instances score their requests
    /// as surging.
    ///
    /// Nothing waits for Redis: changes are published by a background task,
    /// and a second task listens on a pub/sub connection of its own. On each
    /// connection it first loads the bans in force, so a guard started
    /// later, or cut off from Redis for a while, catches up. While Redis is
    /// unreachable each guard keeps its own bans and retries about every
    /// second. Both tasks stop when the guard is dropped. The key and
    /// message layout is in [`redis`](crate::redis#shared-bans); the
    /// counters are in [`GuardStats::shared_bans`](crate::http::GuardStats::shared_bans).
    ///
    /// It goes anywhere in the builder's chain (before or after
    /// [`clock`](Self::clock) and [`max_bans`](Self::max_bans)): `build`
    /// joins the fleet with the guard as built, and must run inside a Tokio
    /// runtime.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use floodguard::http::Guard;
    /// use floodguard::redis::RedisStore;
    ///
    /// let store = RedisStore::builder("redis://127.0.0.1:6379/").namespace("shop").build()?;
    /// let guard = Guard::builder().default_rules().share_bans(&store).build()?;
    /// // Refused by every instance of "shop" within a second or so.
    /// guard.ban("198.51.100.7".parse()?, Duration::from_secs(600));
    /// # Ok(()) }
    /// ```
    pub fn share_bans(self, store: &RedisStore) -> Self {
        self.ban_fleet(Setup::new(store))
    }
}

impl BanFleet for Setup {
    fn join(self: Box<Self>, max_bans: usize) -> Result<Joined, String> {
        let Some((sink, starter)) = self.open(max_bans) else {
            return Err("`share_bans` needs the guard built inside a Tokio runtime".into());
        };
        Ok(Joined {
            link: Arc::new(sink),
            start: Box::new(move |guard, class_ttl| starter.start(guard, class_ttl)),
        })
    }
}

impl Setup {
    pub(super) fn new(store: &RedisStore) -> Self {
        Setup {
            store: Arc::clone(&store.inner),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The queue and the tasks' state for a guard holding at most
    /// `max_bans`; `None` outside a Tokio runtime.
    pub(super) fn open(self, max_bans: usize) -> Option<(BanSink, Starter)> {
        let runtime = self
            .runtime
            .or_else(|| tokio::runtime::Handle::try_current().ok())?;
        let n = GUARDS.fetch_add(1, Ordering::Relaxed);
        let sender = self.store.instance ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let core = Arc::new(Core::new(self.store, sender, max_bans));
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = BanSink {
            tx,
            core: Arc::clone(&core),
        };
        Some((sink, Starter { core, rx, runtime }))
    }
}

/// Starts a guard's tasks once the guard exists.
pub(super) struct Starter {
    core: Arc<Core>,
    rx: mpsc::Receiver<Outgoing>,
    runtime: tokio::runtime::Handle,
}

impl Starter {
    /// Spawns the publisher (flagged classes last `class_ttl` elsewhere) and
    /// the subscriber, which applies changes to `target` while it lives.
    pub(super) fn start(self, target: GuardHandle, class_ttl: Duration) {
        let Starter { core, rx, runtime } = self;
        runtime.spawn(publish_loop(Arc::clone(&core), rx, class_ttl));
        runtime.spawn(subscribe_loop(core, target));
    }

    /// What the guard's tasks will share, for tests to hook into.
    #[cfg(test)]
    pub(super) fn core(&self) -> &Core {
        &self.core
    }
}

/// The guard's end of the queue to the publisher.
pub(super) struct BanSink {
    tx: mpsc::Sender<Outgoing>,
    core: Arc<Core>,
}

impl FleetLink for BanSink {
    /// From now on, reconciling never lifts `prefix` (the guard's ban of it
    /// may not be published yet).
    fn claim(&self, prefix: &IpPrefix) {
        self.core.tracked.lock().forget(prefix);
    }

    /// Until the publisher has written it, a reload does not lift it; once
    /// written, a reload that no longer finds it in the set does.
    fn banned(&self, prefix: IpPrefix, ttl: Duration) {
        {
            let mut tracked = self.core.tracked.lock();
            // Again: a message may have taught it since `claim`.
            tracked.forget(&prefix);
            if !shareable(&prefix) {
                tracing::warn!(%prefix, "floodguard: ban not shared, prefix too short to share");
                return;
            }
            tracked.queued(prefix);
        }
        let at = self.core.store.now();
        if !offer(&self.tx, &self.core, Outgoing::Ban { prefix, ttl, at }) {
            let (now, max) = (self.core.store.now(), self.core.max_bans);
            self.core.tracked.lock().settled(prefix, None, now, max);
        }
    }

    fn lifted(&self, prefix: IpPrefix) {
        self.claim(&prefix);
        if shareable(&prefix) {
            offer(&self.tx, &self.core, Outgoing::Lift { prefix });
        }
    }

    fn class_flagged(&self, class: u64) {
        let at = self.core.store.now();
        offer(&self.tx, &self.core, Outgoing::Class { class, at });
    }

    fn stats(&self) -> SharedBanStats {
        let c = &self.core.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SharedBanStats {
            published: n(&c.published),
            received: n(&c.received),
            loaded: n(&c.loaded),
            load_pages: n(&c.load_pages),
            reconciled_lifts: n(&c.reconciled_lifts),
            dropped: n(&c.dropped),
            errors: n(&c.errors),
            rejected: n(&c.rejected),
            subscribed: c.subscribed.load(Ordering::Relaxed),
        }
    }
}

/// Queues `out` for the publisher without waiting; false (counted) if the
/// queue is full and it was dropped.
fn offer(tx: &mpsc::Sender<Outgoing>, core: &Core, out: Outgoing) -> bool {
    let Err(e) = tx.try_send(out) else {
        return true;
    };
    let n = bump(&core.counters.dropped);
    if n.is_power_of_two() {
        tracing::warn!(
            dropped = n,
            "floodguard: shared-ban queue full, change not published: {e}"
        );
    }
    false
}
