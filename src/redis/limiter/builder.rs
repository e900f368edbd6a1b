//! [`SharedBuilder`]: a shared limiter's settings, checked, and the limiter
//! they build (with its near-cache sync task).

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{DEFAULT_LOCAL_CAPACITY, FlushOnDrop, Mode, Shared, SharedLimiter, sync_loop};
use crate::redis::near_cache::{MAX_SYNC_AFTER, NearCache};
use crate::redis::store::{RedisStore, StoreError, check_name};
use crate::stats::Striped;
use crate::{KeyedLimiter, Quota};

/// Builds a [`SharedLimiter`]; see [`SharedLimiter::builder`].
#[must_use = "a builder does nothing until built"]
pub struct SharedBuilder<K: ?Sized> {
    name: String,
    quota: Quota,
    mode: Mode,
    capacity: usize,
    _key: PhantomData<fn(&K)>,
}

impl<K: ?Sized> std::fmt::Debug for SharedBuilder<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuilder")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + ?Sized> SharedBuilder<K> {
    /// The defaults, for [`SharedLimiter::builder`].
    pub(super) fn new(name: String) -> Self {
        SharedBuilder {
            name,
            quota: Quota::UNSET,
            mode: Mode::near_cache(),
            capacity: DEFAULT_LOCAL_CAPACITY,
            _key: PhantomData,
        }
    }

    /// The quota across the fleet, burst included (replacing any set
    /// before).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// At most `limit` requests per `window` across the fleet, counted with
    /// the sliding-window counter: sets [`Quota::sliding_window`].
    pub fn sliding_window(mut self, limit: u64, window: Duration) -> Self {
        self.quota = self.quota.switch_to(Quota::sliding_window(limit, window));
        self
    }

    /// `rate` requests per `period` across the fleet with GCRA; the burst
    /// defaults to `rate`: sets [`Quota::gcra`].
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

    /// [`Mode::NearCache`] (the default) or [`Mode::Strict`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Keys held locally, by the near-cache and by the fallback limiter
    /// each (default [`DEFAULT_LOCAL_CAPACITY`]).
    pub fn capacity(mut self, keys: usize) -> Self {
        self.capacity = keys;
        self
    }

    /// Checks every field and builds the limiter; in near-cache mode starts
    /// its sync task on the current Tokio runtime.
    pub fn build(self, store: &RedisStore) -> Result<SharedLimiter<K>, StoreError> {
        check_name("name", &self.name)?;
        let algorithm = self.quota.algorithm()?;
        let near = match self.mode {
            Mode::Strict => None,
            Mode::NearCache {
                sync_every,
                sync_after,
            } => {
                if sync_every.is_zero() {
                    return Err(crate::ConfigError::ZeroDuration {
                        field: "sync_every",
                    }
                    .into());
                }
                if sync_after == 0 {
                    return Err(crate::ConfigError::Zero {
                        field: "sync_after",
                    }
                    .into());
                }
                if sync_after > MAX_SYNC_AFTER {
                    return Err(crate::ConfigError::TooLarge {
                        field: "sync_after",
                        value: sync_after,
                        max: MAX_SYNC_AFTER,
                    }
                    .into());
                }
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(StoreError::NoRuntime);
                }
                // What an admission reports as its reset: a full window, or
                // the time GCRA takes to refill its burst.
                Some(NearCache::new(
                    self.quota.limit(),
                    self.quota.window(),
                    self.capacity,
                    sync_after,
                    sync_every,
                )?)
            }
        };
        let local = KeyedLimiter::with_store(
            algorithm,
            crate::AtomicTable::with_capacity(self.capacity)?,
            crate::CoarseClock::new(),
        );
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            prefix: format!("{}:{{{}:", store.inner.namespace, self.name),
            name: self.name,
            store: Arc::clone(&store.inner),
            algorithm,
            mode: self.mode,
            local,
            local_hasher: ahash::RandomState::new(),
            near,
            wake: Arc::clone(&wake),
            counters: Striped::default(),
        });
        let flush_on_drop = match self.mode {
            Mode::NearCache { sync_every, .. } => {
                let runtime = tokio::runtime::Handle::current();
                runtime.spawn(sync_loop(Arc::downgrade(&shared), wake, sync_every));
                Some(Arc::new(FlushOnDrop {
                    shared: Some(Arc::clone(&shared)),
                    runtime,
                }))
            }
            Mode::Strict => None,
        };
        Ok(SharedLimiter {
            inner: shared,
            flush_on_drop,
            _key: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_quota_builds_what_its_shorthands_build() {
        // Building connects to nothing: no server needed.
        let store = RedisStore::builder("redis://127.0.0.1:1/").build().unwrap();
        let second = Duration::from_secs(1);
        let build =
            |b: SharedBuilder<str>| *b.mode(Mode::Strict).build(&store).unwrap().algorithm();
        let q = Quota::gcra(10, second).burst(3);
        let by_value = build(SharedLimiter::builder("v").quota(q));
        let by_parts = build(SharedLimiter::builder("p").gcra(10, second).burst(3));
        assert_eq!(by_value, q.algorithm().unwrap());
        assert_eq!(by_parts, by_value);
        let q = Quota::sliding_window(10, second);
        assert_eq!(
            build(SharedLimiter::builder("w").quota(q)),
            q.algorithm().unwrap()
        );
        let err = SharedLimiter::<str>::builder("b")
            .quota(q.burst(2))
            .build(&store)
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Config(crate::ConfigError::BurstWithoutGcra)
            ),
            "{err}"
        );
    }
}
