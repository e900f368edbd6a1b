//! `KeyedLimiter`: an algorithm, a store and a clock, keyed by any `Hash` type.

use crate::algo::{Algorithm, Op};
use crate::clock::{Clock, CoarseClock, Timestamp, duration_nanos};
use crate::compose::{Charge, Pending};
use crate::decision::Decision;
use crate::error::ConfigError;
use crate::quota::Quota;
use crate::stats::{Count, Striped};
use crate::store::Store;
use crate::table::AtomicTable;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

/// Keys a default table holds when `.capacity(..)` is not called: 1.6 MB.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A rate limiter for many keys at once, in bounded memory.
///
/// Keys are hashed with a per-limiter random key, so the state of a key
/// costs 16 bytes whatever the key type; the table never grows past its
/// capacity (see [`AtomicTable`] for what is evicted when full).
///
/// ```
/// use std::net::IpAddr;
/// use std::time::Duration;
/// use floodguard::KeyedLimiter;
///
/// let limiter = KeyedLimiter::<IpAddr>::builder()
///     .sliding_window(100, Duration::from_secs(60))
///     .capacity(1_000_000)
///     .build()?;
/// let ip: IpAddr = "203.0.113.7".parse().unwrap();
/// let decision = limiter.check(&ip);
/// assert!(decision.is_allowed());
/// assert_eq!(decision.remaining(), 99);
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
pub struct KeyedLimiter<K: ?Sized, C = CoarseClock, S = AtomicTable> {
    algorithm: Algorithm,
    store: S,
    clock: C,
    hasher: ahash::RandomState,
    counters: Striped,
    _key: PhantomData<fn(&K)>,
}

impl<K: ?Sized, C, S: std::fmt::Debug> std::fmt::Debug for KeyedLimiter<K, C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("algorithm", &self.algorithm)
            .field("store", &self.store)
            .field("counters", &self.counters)
            .finish()
    }
}

/// A snapshot of a limiter's counters.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterStats {
    /// Requests admitted (and charged).
    pub admitted: u64,
    /// Requests refused.
    pub denied: u64,
    /// Live keys dropped to make room for new ones. Steady growth means the
    /// capacity is too small for the traffic.
    pub evictions: u64,
    /// Keys held now.
    pub occupancy: usize,
    /// Keys the store can hold.
    pub capacity: usize,
}

/// Counters of a limit counted by a whole fleet: a Redis
/// [`SharedLimiter`](crate::redis::SharedLimiter)'s (feature `redis`), as
/// [`SharedLimiter::stats`](crate::redis::SharedLimiter::stats) gives them,
/// and a guard rule's shared through one, in
/// [`RuleStats::shared`](crate::http::RuleStats::shared).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedStats {
    /// Checks decided (charges, not peeks or refunds).
    pub checked: u64,
    /// Checks refused.
    pub denied: u64,
    /// Checks decided by the failure policy (Redis unreachable).
    pub fallback: u64,
    /// Near-cache refusals because this instance's share of a key was
    /// spent before the next sync (the fleet may still have had room).
    pub budget_refusals: u64,
    /// Keys the near-cache dropped to make room for new ones. Steady growth
    /// means its capacity is too small for the traffic (and each dropped
    /// key that comes back starts from a fresh share).
    pub evictions: u64,
    /// Near-cache sync rounds that reached Redis, and keys they pushed.
    pub sync_rounds: u64,
    /// Keys pushed by those rounds.
    pub pushed_keys: u64,
    /// Sync rounds that failed; their counts went with the next one.
    pub failed_rounds: u64,
    /// Keys held in the near-cache now.
    pub cached_keys: usize,
    /// Keys the near-cache can hold.
    pub capacity: usize,
    /// Instances of the fleet the near-cache shares each key among.
    pub instances: u64,
    /// Whether Redis is reachable (the store's breaker is closed).
    pub redis_available: bool,
}

impl<K: Hash + ?Sized> KeyedLimiter<K> {
    /// Starts a builder with the default [`CoarseClock`] and an
    /// [`AtomicTable`].
    pub fn builder() -> Builder<K> {
        Builder {
            quota: Quota::UNSET,
            capacity: DEFAULT_CAPACITY,
            clock: CoarseClock::new(),
            _key: PhantomData,
        }
    }
}

impl<K: Hash + ?Sized, C: Clock, S: Store> KeyedLimiter<K, C, S> {
    /// A limiter over any store, for stores other than the default table.
    pub fn with_store(algorithm: impl Into<Algorithm>, store: S, clock: C) -> Self {
        KeyedLimiter {
            algorithm: algorithm.into(),
            store,
            clock,
            hasher: ahash::RandomState::new(),
            counters: Striped::default(),
            _key: PhantomData,
        }
    }

    /// The current time on this limiter's clock. Read it once and pass it to
    /// the `*_at` methods when a request checks several limiters.
    #[inline]
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// May `key` make one request now? Charges it if so.
    #[inline]
    pub fn check(&self, key: &K) -> Decision {
        self.check_n_at(key, 1, self.clock.now())
    }

    /// [`check`](Self::check) at a time already read.
    #[inline]
    pub fn check_at(&self, key: &K, now: Timestamp) -> Decision {
        self.check_n_at(key, 1, now)
    }

    /// May `key` make a request costing `cost` units now? A cost above the
    /// limit is refused with [`Decision::exceeds_limit`] set.
    #[inline]
    pub fn check_n(&self, key: &K, cost: u64) -> Decision {
        self.check_n_at(key, cost, self.clock.now())
    }

    /// [`check_n`](Self::check_n) at a time already read.
    #[inline(always)]
    pub fn check_n_at(&self, key: &K, cost: u64, now: Timestamp) -> Decision {
        let d = self
            .store
            .apply(self.hash(key), now, &self.algorithm, Op::Check(cost));
        self.record(d.is_allowed());
        d
    }

    /// What [`check_n_at`](Self::check_n_at) would decide, without charging.
    pub fn peek_at(&self, key: &K, cost: u64, now: Timestamp) -> Decision {
        self.store
            .apply(self.hash(key), now, &self.algorithm, Op::Peek(cost))
    }

    /// Runs any [`Op`] on `key` (peeks and refunds for callers that build
    /// their own composition).
    #[cfg(feature = "redis")]
    pub(crate) fn apply_op(&self, key: &K, now: Timestamp, op: Op) -> Decision {
        self.store.apply(self.hash(key), now, &self.algorithm, op)
    }

    /// A check of `key` (cost 1) to run together with others in
    /// [`check_all`](crate::check_all).
    pub fn pending(&self, key: &K) -> Pending<'_> {
        self.pending_n(key, 1)
    }

    /// A check of `key` with a cost, for [`check_all`](crate::check_all).
    pub fn pending_n(&self, key: &K, cost: u64) -> Pending<'_> {
        Pending::new(self, self.hash(key), cost)
    }

    /// The algorithm and its parameters.
    pub fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    /// The store holding the keys.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Counters since creation.
    pub fn stats(&self) -> LimiterStats {
        // Denials first: every denial is also counted as checked, so reading
        // them before the checks keeps `admitted` from going negative while
        // other threads decide.
        let denied = self.counters.sum(Count::Denied);
        let checked = self.counters.sum(Count::Checked);
        LimiterStats {
            admitted: checked.saturating_sub(denied),
            denied,
            evictions: self.store.evictions(),
            occupancy: self.store.occupancy(),
            capacity: self.store.capacity(),
        }
    }

    #[inline]
    fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }
}

impl<K: Hash + ?Sized, C: Clock, S: Store> Charge for KeyedLimiter<K, C, S> {
    fn apply_hashed(&self, key: u64, _: u64, now: Timestamp, op: Op) -> Decision {
        self.store.apply(key, now, &self.algorithm, op)
    }

    #[inline]
    fn record(&self, allowed: bool) {
        self.counters.add(Count::Checked, 1);
        if !allowed {
            self.counters.add(Count::Denied, 1);
        }
    }
}

/// Refuses quotas finer than the clock: a window shorter than a tick, or a
/// GCRA burst that the clock would cap (one tick admits at most `burst`).
fn check_resolution(algorithm: &Algorithm, resolution: Duration) -> Result<(), ConfigError> {
    let resolution_nanos = duration_nanos(resolution);
    let (field, span_nanos, unit) = match algorithm {
        Algorithm::SlidingWindow(a) => ("window", duration_nanos(a.window()), 0),
        Algorithm::Gcra(a) => {
            let unit = duration_nanos(a.interval());
            ("burst", a.burst().saturating_mul(unit), unit)
        }
    };
    if span_nanos >= resolution_nanos {
        return Ok(());
    }
    Err(ConfigError::BelowClockResolution {
        field,
        span_nanos,
        resolution_nanos,
        needed: if unit == 0 {
            resolution_nanos
        } else {
            resolution_nanos.div_ceil(unit)
        },
    })
}

/// Builds a [`KeyedLimiter`]; see [`KeyedLimiter::builder`].
///
/// `build()` reports the first bad field as a [`ConfigError`]:
///
/// ```
/// use std::time::Duration;
/// use floodguard::{ConfigError, KeyedLimiter};
/// let err = KeyedLimiter::<str>::builder()
///     .gcra(0, Duration::from_secs(1))
///     .build()
///     .unwrap_err();
/// assert_eq!(err, ConfigError::Zero { field: "rate" });
/// assert_eq!(err.to_string(), "`rate` must be at least 1");
/// ```
#[must_use = "a builder does nothing until `.build()`"]
pub struct Builder<K: ?Sized, C = CoarseClock> {
    quota: Quota,
    capacity: usize,
    clock: C,
    _key: PhantomData<fn(&K)>,
}

impl<K: ?Sized, C> fmt::Debug for Builder<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("quota", &self.quota)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + ?Sized, C: Clock> Builder<K, C> {
    /// The quota, burst included (replacing any set before).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// At most `limit` requests per `window`, counted with the two-window
    /// weighted counter ([`SlidingWindow`](crate::algo::SlidingWindow)):
    /// sets [`Quota::sliding_window`].
    pub fn sliding_window(mut self, limit: u64, window: Duration) -> Self {
        self.quota = self.quota.switch_to(Quota::sliding_window(limit, window));
        self
    }

    /// `rate` requests per `period` on average with GCRA
    /// ([`Gcra`](crate::algo::Gcra)); the burst defaults to `rate` (a full
    /// period's worth at once): sets [`Quota::gcra`].
    pub fn gcra(mut self, rate: u64, period: Duration) -> Self {
        self.quota = self.quota.switch_to(Quota::gcra(rate, period));
        self
    }

    /// GCRA only: how many requests may come at once after idling
    /// ([`Quota::burst`]).
    pub fn burst(mut self, burst: u64) -> Self {
        self.quota = self.quota.burst(burst);
        self
    }

    /// Keys tracked at once: memory is 16 bytes each, fixed at build time.
    /// Defaults to [`DEFAULT_CAPACITY`].
    pub fn capacity(mut self, keys: usize) -> Self {
        self.capacity = keys;
        self
    }

    /// Uses another clock, such as a [`ManualClock`](crate::ManualClock) in
    /// tests.
    pub fn clock<C2: Clock>(self, clock: C2) -> Builder<K, C2> {
        Builder {
            quota: self.quota,
            capacity: self.capacity,
            clock,
            _key: PhantomData,
        }
    }

    /// Checks every field and builds the limiter.
    pub fn build(self) -> Result<KeyedLimiter<K, C>, ConfigError> {
        let algorithm = self.quota.algorithm()?;
        check_resolution(&algorithm, self.clock.resolution())?;
        let store = AtomicTable::with_capacity(self.capacity)?;
        Ok(KeyedLimiter::with_store(algorithm, store, self.clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[test]
    fn builder_reports_bad_fields() {
        let d = Duration::from_secs(1);
        let b = || KeyedLimiter::<u32>::builder();
        assert_eq!(b().build().unwrap_err(), ConfigError::MissingAlgorithm);
        assert_eq!(
            b().sliding_window(0, d).build().unwrap_err(),
            ConfigError::Zero { field: "limit" }
        );
        assert_eq!(
            b().sliding_window(1, Duration::ZERO).build().unwrap_err(),
            ConfigError::ZeroDuration { field: "window" }
        );
        assert_eq!(
            b().sliding_window(1, d).capacity(0).build().unwrap_err(),
            ConfigError::Zero { field: "capacity" }
        );
        assert_eq!(
            b().sliding_window(1, d).burst(2).build().unwrap_err(),
            ConfigError::BurstWithoutGcra
        );
        assert!(matches!(
            b().gcra(1, Duration::from_secs(1 << 40))
                .burst(1 << 40)
                .build()
                .unwrap_err(),
            ConfigError::BurstOverflow { .. }
        ));
    }

    #[test]
    fn quotas_finer_than_the_clock_are_refused() {
        use crate::{CoarseClock, MonotonicClock};
        let err = KeyedLimiter::<u32>::builder()
            .gcra(50_000, Duration::from_secs(1))
            .burst(10)
            .clock(CoarseClock::new())
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::BelowClockResolution {
                field: "burst",
                span_nanos: 200_000,
                resolution_nanos: 1_000_000,
                needed: 50
            }
        );
        assert!(err.to_string().contains("raise it to at least 50"));
        let err = KeyedLimiter::<u32>::builder()
            .sliding_window(10, Duration::from_micros(10))
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::BelowClockResolution {
                field: "window",
                ..
            }
        ));
        // The exact clock takes both.
        assert!(
            KeyedLimiter::<u32>::builder()
                .gcra(50_000, Duration::from_secs(1))
                .burst(10)
                .clock(MonotonicClock)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn gcra_burst_defaults_to_rate() {
        let l = KeyedLimiter::<str>::builder()
            .gcra(3, Duration::from_secs(3))
            .clock(ManualClock::new())
            .build()
            .unwrap();
        for _ in 0..3 {
            assert!(l.check("k").is_allowed());
        }
        assert!(l.check("k").is_denied());
        l.clock().advance(Duration::from_secs(1));
        assert!(l.check("k").is_allowed());
        let s = l.stats();
        assert_eq!((s.admitted, s.denied, s.occupancy), (4, 1, 1));
    }

    #[test]
    fn a_quota_builds_what_its_shorthands_build() {
        let d = Duration::from_secs(3);
        let algorithm = |b: Builder<u32>| *b.build().unwrap().algorithm();
        let b = || KeyedLimiter::<u32>::builder();
        let q = Quota::gcra(3, d).burst(2);
        assert_eq!(algorithm(b().quota(q)), q.algorithm().unwrap());
        assert_eq!(algorithm(b().gcra(3, d).burst(2)), q.algorithm().unwrap());
        // The shorthands take the burst before or after the algorithm;
        // `.quota(q)` replaces the whole quota, burst included.
        assert_eq!(algorithm(b().burst(2).gcra(3, d)), q.algorithm().unwrap());
        assert_eq!(
            algorithm(b().burst(2).quota(Quota::gcra(3, d))),
            Quota::gcra(3, d).algorithm().unwrap()
        );
        assert_eq!(
            algorithm(b().quota(q).sliding_window(5, d).quota(q)),
            q.algorithm().unwrap()
        );
        assert_eq!(
            b().quota(q).sliding_window(5, d).build().unwrap_err(),
            ConfigError::BurstWithoutGcra
        );
        assert_eq!(
            algorithm(b().quota(Quota::sliding_window(5, d))),
            Quota::sliding_window(5, d).algorithm().unwrap()
        );
    }

    #[test]
    fn unsized_and_owned_keys_share_nothing_across_limiters() {
        let a = KeyedLimiter::<str>::builder()
            .sliding_window(1, Duration::from_secs(1))
            .clock(ManualClock::new())
            .build()
            .unwrap();
        assert!(a.check("x").is_allowed());
        assert!(a.check("x").is_denied());
        assert!(a.check("y").is_allowed());
    }
}
