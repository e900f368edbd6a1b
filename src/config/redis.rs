//! The `[redis]` section: the store a fleet shares through, and whether
//! bans are shared. Rules marked `shared = true` count in it.

use std::sync::Arc;

use crate::Clock;
use crate::config::GuardConfig;
use crate::http::GuardBuilder;
use crate::redis::{RedisStore, RedisStoreBuilder, StoreError};

/// The Redis settings of a [`GuardConfig`]: the store, and whether bans
/// are shared through it ([`GuardBuilder::share_bans`]).
///
/// ```toml
/// [redis]
/// share_bans = true
/// [redis.store]
/// url = "redis://127.0.0.1:6379/"
/// namespace = "shop"
/// ```
#[derive(Clone, Debug)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The store's settings; see [`RedisStore::builder`].
    pub store: RedisStoreBuilder,
    /// Share bans through the store: [`GuardBuilder::share_bans`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub share_bans: bool,
}

impl RedisConfig {
    /// A store's settings, bans not shared.
    pub fn new(store: RedisStoreBuilder) -> Self {
        RedisConfig {
            store,
            share_bans: false,
        }
    }
}

impl GuardConfig {
    /// Builds the `[redis]` section's store, if there is one. Must run
    /// inside a Tokio runtime; connects lazily.
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::build`].
    pub fn redis_store(&self) -> Result<Option<RedisStore>, StoreError> {
        self.redis
            .as_ref()
            .map(|r| r.store.clone().build())
            .transpose()
    }
}

impl<C: Clock + Clone> GuardBuilder<C> {
    /// [`config`](Self::config), with `store` (built by
    /// [`GuardConfig::redis_store`]) for the rules marked `shared`, and for
    /// bans when the `[redis]` section says `share_bans = true`. Reloads
    /// keep counting shared rules in it.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use floodguard::config::GuardConfig;
    /// use floodguard::http::Guard;
    ///
    /// let config = GuardConfig::load("floodguard.toml")?;
    /// let store = config.redis_store()?.expect("a [redis] section");
    /// let guard = Guard::builder().config_with_store(config, &store).build()?;
    /// # let _ = guard; Ok(()) }
    /// ```
    pub fn config_with_store(self, config: GuardConfig, store: &RedisStore) -> Self {
        let share_bans = config.redis.as_ref().is_some_and(|r| r.share_bans);
        let mut b = self.config(config);
        b.settings.store = Some(Arc::new(store.clone()));
        if share_bans { b.share_bans(store) } else { b }
    }
}
