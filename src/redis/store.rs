//! `RedisStore`: one Redis connection for a fleet's shared limits, with a
//! per-call timeout, a circuit breaker and a failure policy.

use super::breaker::{Breaker, BreakerState, Permission, Transition};
use super::script::{Reply, Scripts};
use crate::{Clock, CoarseClock, Timestamp};
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Default time a call to Redis may take before the failure policy decides.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// Default time an open breaker waits before probing Redis again.
pub const DEFAULT_RETRY_EVERY: Duration = Duration::from_secs(1);
/// Default number of failures in a row that open the breaker.
pub const DEFAULT_TRIP_AFTER: u32 = 2;

/// How often a near-caching instance writes itself into the fleet's
/// registry, and how long an entry lives there without being renewed.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_TTL_MS: u64 = 3_000;

/// Writes this instance into the registry (a sorted set scored by the
/// server's time in ms), drops instances not seen for `ARGV[2]` ms and
/// returns how many are left.
const REGISTRY_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
";

/// What a shared limiter decides while Redis cannot be reached (an error,
/// a timeout, or the breaker open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum OnFailure {
    /// Fail open: decide with a local limiter of the same quota, so each
    /// instance enforces the limit on its own (the fleet admits up to
    /// instances × limit) until Redis is back.
    #[default]
    Local,
    /// Fail closed: refuse every request, with a retry-after of the time
    /// until the next probe of Redis.
    Refuse,
}

/// An error building a [`RedisStore`] or a
/// [`SharedLimiter`](super::SharedLimiter).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The Redis URL could not be parsed.
    #[error("bad Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// The connection manager could not be set up.
    #[error("cannot set up the Redis connection: {0}")]
    Connection(#[source] redis::RedisError),
    /// Built outside a Tokio runtime: the store and the near-cache run
    /// background tasks on it.
    #[error("a Redis store must be built inside a Tokio runtime")]
    NoRuntime,
    /// A namespace or limiter name that would break key names.
    #[error(
        "`{field}` is {input:?}: use 1 to 64 printable ASCII characters other than `{{`, `}}` and `:`"
    )]
    BadName {
        /// The builder field.
        field: &'static str,
        /// The value given.
        input: String,
    },
    /// A bad quota or size.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
}

/// Checks a name that becomes part of Redis keys: `{` and `}` would move the
/// cluster hash tag, `:` the key's structure.
pub(crate) fn check_name(field: &'static str, input: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&input.len())
        && input
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b':'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName {
            field,
            input: input.to_owned(),
        })
    }
}

/// SipHash-1-3 of `key`: stable across builds and platforms, unlike the
/// process-keyed hashes the local tables use, and keyed so that collisions
/// cannot be aimed without the keys.
fn sip<K: std::hash::Hash + ?Sized>((k0, k1): (u64, u64), key: &K) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
    key.hash(&mut h);
    h.finish()
}

/// Why a call to Redis gave no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The breaker is open: Redis was not called.
    Skipped,
    /// Redis answered with an error, or the connection failed.
    Error,
    /// No answer within the timeout.
    Timeout,
}

/// A shared Redis connection for a fleet's limits.
///
/// Every instance of a service builds one with the same URL and
/// [`namespace`](RedisStoreBuilder::namespace); limiters built on it with
/// the same name share their counts. Cloning is cheap and shares the
/// connection, the breaker and the counters.
///
/// ```no_run
/// # async fn f() -> Result<(), floodguard::redis::StoreError> {
/// use std::time::Duration;
/// use floodguard::redis::{OnFailure, RedisStore};
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .namespace("shop")
///     .timeout(Duration::from_millis(20))
///     .on_failure(OnFailure::Local)
///     .build()?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) client: redis::Client,
    con: ConnectionManager,
    pub(crate) namespace: String,
    pub(crate) timeout: Duration,
    pub(crate) on_failure: OnFailure,
    breaker: Breaker,
    pub(crate) scripts: Scripts,
    pub(crate) clock: CoarseClock,
    /// Tells this instance's messages from other instances'.
    pub(crate) instance: u64,
    /// SipHash keys: the same on every instance, so a key lands on the same
    /// Redis key everywhere.
    pub(crate) sip_keys: (u64, u64),
    /// With a [secret](RedisStoreBuilder::secret): the key that signs
    /// shared-ban messages (derived from it, apart from `sip_keys`).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) message_key: Option<(u64, u64)>,
    /// Live instances of the fleet, from the registry (at least 1).
    instances: AtomicU64,
    /// When this instance last wrote itself into the registry (ns; 0 never).
    heartbeat_at: AtomicU64,
    registry: redis::Script,
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    skipped: AtomicU64,
    /// Here, not on the limiter: it counts what a limiter had when it went.
    dropped_unflushed: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.inner.timeout)
            .field("on_failure", &self.inner.on_failure)
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Counters of a [`RedisStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Round trips to Redis (a near-cache sync round is one).
    pub calls: u64,
    /// Calls that failed with an error.
    pub errors: u64,
    /// Calls that got no answer within the timeout.
    pub timeouts: u64,
    /// Calls not made because the breaker was open.
    pub skipped: u64,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// The breaker now.
    pub breaker: BreakerState,
    /// Units admitted by near-cached [`SharedLimiter`](super::SharedLimiter)s
    /// of this store that never reached Redis because the limiter was
    /// dropped with them pending and its final push could not be made: no
    /// runtime left to run it, or Redis unreachable. Units of a push cut
    /// short by a runtime shutting down count too, although Redis may have
    /// received them. 0 as long as limiters are flushed or dropped inside a
    /// running runtime with Redis up.
    pub dropped_unflushed: u64,
}

impl RedisStore {
    /// Starts a builder for the Redis server at `url`
    /// (`redis://host:port/db`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            namespace: "floodguard".into(),
            secret: None,
            timeout: DEFAULT_TIMEOUT,
            on_failure: OnFailure::default(),
            retry_every: DEFAULT_RETRY_EVERY,
            trip_after: DEFAULT_TRIP_AFTER,
        }
    }

    /// The store's counters.
    pub fn stats(&self) -> StoreStats {
        let s = &*self.inner;
        StoreStats {
            calls: s.calls.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            skipped: s.skipped.load(Ordering::Relaxed),
            breaker_opened: s.breaker.opened(),
            breaker: s.breaker.state(),
            dropped_unflushed: s.dropped_unflushed.load(Ordering::Relaxed),
        }
    }

    /// Whether Redis is considered reachable (the breaker is closed).
    pub fn is_available(&self) -> bool {
        self.inner.breaker.state() == BreakerState::Closed
    }

    /// The namespace every key of this store starts with.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }
}

impl StoreInner {
    #[inline]
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Time until the breaker lets a probe through.
    pub(crate) fn retry_in(&self) -> Duration {
        self.breaker.retry_in(self.now())
    }

    /// Whether calls go to Redis now (near-cache checks read this and never
    /// wait for Redis themselves).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.breaker.state() == BreakerState::Closed
    }

    /// A stable keyed hash of `key`, the same on every instance.
    pub(crate) fn hash<K: std::hash::Hash + ?Sized>(&self, key: &K) -> u64 {
        sip(self.sip_keys, key)
    }

    /// Live instances of the fleet as last read from the registry.
    pub(crate) fn instances(&self) -> u64 {
        self.instances.load(Ordering::Relaxed).max(1)
    }

    /// The same, for a reader that loads it only when it needs it (never
    /// 0: the registry's answer is stored at least 1).
    #[inline]
    pub(crate) fn instances_cell(&self) -> &AtomicU64 {
        &self.instances
    }

    /// Renews this instance in the fleet's registry and rereads the fleet's
    /// size, at most once per [`HEARTBEAT_EVERY`] whatever the number of
    /// limiters calling.
    pub(crate) async fn heartbeat_if_due(&self) {
        let now = self.now().as_nanos();
        let last = self.heartbeat_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < crate::clock::duration_nanos(HEARTBEAT_EVERY) {
            return;
        }
        if self
            .heartbeat_at
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let key = format!("{}:{{instances}}", self.namespace);
        let mut call = self.registry.key(key);
        call.arg(self.instance).arg(HEARTBEAT_TTL_MS);
        let call = &call;
        let renew = || {
            let mut con = self.con.clone();
            async move { call.invoke_async::<u64>(&mut con).await }
        };
        if let Ok(n) = self.guarded(renew).await {
            self.instances.store(n.max(1), Ordering::Relaxed);
        }
    }

    /// Counts `units` a dropped limiter could not push, and says so once
    /// per limiter: the fleet under-counts them.
    pub(crate) fn lost_on_drop(&self, limiter: &str, units: u64) {
        self.dropped_unflushed.fetch_add(units, Ordering::Relaxed);
        tracing::warn!(
            namespace = %self.namespace,
            limiter,
            units,
            "floodguard: shared limiter dropped with counts Redis never received"
        );
    }

    /// A connection handle (cheap: the manager multiplexes one connection).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// Runs `cmds` (script calls) in one round trip, through the breaker
    /// and within the timeout.
    pub(crate) async fn run(&self, cmds: &[redis::Cmd]) -> Result<Vec<Reply>, Failure> {
        self.guarded(|| {
            let mut con = self.con.clone();
            async move { self.scripts.run(&mut con, cmds).await }
        })
        .await
    }

    /// Runs `call` through the breaker and within the timeout, counting and
    /// logging what happens.
    ///
    /// A probe (the first call after the breaker's interval) that fails on
    /// a dropped connection is tried once more at once: the connection
    /// manager reconnects on such a failure, and without the second try a
    /// Redis that is back would wait another interval to be used.
    pub(crate) async fn guarded<T, F>(&self, mut call: impl FnMut() -> F) -> Result<T, Failure>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let permission = self.breaker.permission(self.now());
        if permission == Permission::Skip {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(Failure::Skipped);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let attempt = async {
            match call().await {
                Err(e) if permission == Permission::Probe && e.is_connection_dropped() => {
                    call().await
                }
                other => other,
            }
        };
        let (failure, detail) = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => {
                if self.breaker.success() == Some(Transition::Closed) {
                    tracing::info!(
                        namespace = %self.namespace,
                        "floodguard: Redis is back, shared limits apply again"
                    );
                }
                return Ok(value);
            }
            Ok(Err(e)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                (Failure::Error, e.to_string())
            }
            Err(_) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                (
                    Failure::Timeout,
                    format!("no answer within {:?}", self.timeout),
                )
            }
        };
        if self.breaker.failure(self.now()) == Some(Transition::Opened) {
            tracing::warn!(
                namespace = %self.namespace,
                error = %detail,
                policy = ?self.on_failure,
                "floodguard: Redis unreachable, applying the failure policy until it answers"
            );
        }
        Err(failure)
    }
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[derive(Clone)]
#[must_use = "a builder does nothing until built"]
pub struct RedisStoreBuilder {
    pub(super) url: String,
    pub(super) namespace: String,
    pub(super) secret: Option<[u8; 16]>,
    pub(super) timeout: Duration,
    pub(super) on_failure: OnFailure,
    pub(super) retry_every: Duration,
    pub(super) trip_after: u32,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("RedisStoreBuilder")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .field("secret", &self.secret.map(|_| "…"))
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .field("retry_every", &self.retry_every)
            .field("trip_after", &self.trip_after)
            .finish()
    }
}

impl RedisStoreBuilder {
    /// The secret, if one was set (for comparing configurations).
    #[cfg(feature = "tower")]
    pub(crate) fn secret_key(&self) -> Option<[u8; 16]> {
        self.secret
    }

    /// The prefix of every key (default `floodguard`); instances that share
    /// limits use the same one.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The key of the hash that turns request keys into Redis keys. Every
    /// instance of a fleet must use the same one. By default it is derived
    /// from the namespace; set a secret one so that nobody can aim two
    /// clients at one counter. With a secret, shared-ban messages are also
    /// signed with a key derived from it, and unsigned or badly signed ones
    /// are rejected (counted in `SharedBanStats::rejected`): whoever can
    /// publish on the Redis channel can no longer ban anyone fleet-wide
    /// without the secret.
    pub fn secret(mut self, secret: [u8; 16]) -> Self {
        self.secret = Some(secret);
        self
    }

    /// How long a call to Redis may take (default 100 ms). A check never
    /// waits longer: on a timeout the failure policy decides it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to decide while Redis cannot be reached (default
    /// [`OnFailure::Local`]).
    pub fn on_failure(mut self, policy: OnFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// How long the breaker stays open before one call probes Redis again
    /// (default 1 s).
    pub fn retry_every(mut self, interval: Duration) -> Self {
        self.retry_every = interval;
        self
    }

    /// How many failures in a row open the breaker (default 2).
    pub fn trip_after(mut self, failures: u32) -> Self {
        self.trip_after = failures;
        self
    }

    /// Builds the store. Connects lazily: Redis need not be up yet. Must run
    /// inside a Tokio runtime.
    pub fn build(self) -> Result<RedisStore, StoreError> {
        check_name("namespace", &self.namespace)?;
        if self.timeout.is_zero() {
            return Err(crate::ConfigError::ZeroDuration { field: "timeout" }.into());
        }
        if self.retry_every.is_zero() {
            return Err(crate::ConfigError::ZeroDuration {
                field: "retry_every",
            }
            .into());
        }
        if self.trip_after == 0 {
            return Err(crate::ConfigError::Zero {
                field: "trip_after",
            }
            .into());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::NoRuntime);
        }
        let client = redis::Client::open(self.url.as_str()).map_err(StoreError::Url)?;
        // No response timeout of the manager's own: `guarded` times every
        // call, and a second clock would turn one slow answer into errors.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(self.retry_every);
        let con = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(StoreError::Connection)?;
        // Its own key, so that a signature says nothing of the keys that
        // place request keys.
        let message_key = self.secret.map(|secret| {
            let k = u128::from_le_bytes(secret);
            let base = (k as u64, (k >> 64) as u64);
            (
                sip(base, "floodguard shared-ban messages"),
                sip(base, &("floodguard shared-ban messages", 1u8)),
            )
        });
        let sip_keys = match self.secret {
            Some(secret) => {
                let k = u128::from_le_bytes(secret);
                (k as u64, (k >> 64) as u64)
            }
            None => {
                let fixed = (0x666c_6f6f_6467_7561, 0x7264);
                (
                    sip(fixed, &self.namespace),
                    sip(fixed, &(&self.namespace, 1u8)),
                )
            }
        };
        Ok(RedisStore {
            inner: Arc::new(StoreInner {
                client,
                con,
                namespace: self.namespace,
                timeout: self.timeout,
                on_failure: self.on_failure,
                breaker: Breaker::new(self.trip_after, self.retry_every),
                scripts: Scripts::new(),
                clock: CoarseClock::new(),
                instance: ahash::RandomState::new().hash_one(std::process::id()),
                sip_keys,
                message_key,
                instances: AtomicU64::new(1),
                heartbeat_at: AtomicU64::new(0),
                registry: redis::Script::new(REGISTRY_SCRIPT),
                calls: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                dropped_unflushed: AtomicU64::new(0),
            }),
        })
    }
}
