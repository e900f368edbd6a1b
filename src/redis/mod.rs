//! Limits shared by a fleet through Redis (feature `redis`).
//!
//! Several instances of a service behind a load balancer need one limit
//! across all of them: with local counters, N instances admit N times the
//! limit. A [`RedisStore`] is one Redis connection with a timeout, a circuit
//! breaker and a failure policy; a [`SharedLimiter`] built on it runs the
//! sliding-window counter or GCRA in Redis, in Lua scripts that read and
//! update a key's state in one atomic step.
//!
//! # Modes
//!
//! * [`Mode::Strict`]: every check is one round trip to Redis. The fleet
//!   admits exactly what one limiter would; each check waits for the
//!   network (a fraction of a millisecond on a LAN).
//! * [`Mode::NearCache`] (the default): checks are decided locally and never
//!   wait; what was admitted is pushed every `sync_every` (10 ms), or as soon
//!   as a key has spent its local share (at most `sync_after`, 16), in one
//!   pipelined round trip per limiter. A key Redis reports over its limit is refused
//!   locally until its retry-after, without a round trip.
//!
//! # Near-cache accuracy
//!
//! At each sync an instance gets its share of the room Redis reports for a
//! key: `⌈room / I⌉` for `I` live instances (each instance renews itself in
//! a registry in Redis every second), and never more than `sync_after`. A
//! key that was never synced gets the same share of its whole allowance.
//! Instances sync at different moments, so a share may include room that
//! another instance has spent but not pushed yet; that unseen spending is
//! at most `sync_after` per instance. Hence:
//!
//! * a key's count across the fleet exceeds its limit by at most
//!   `(I − 1) × sync_after` units (with the defaults and 3 instances, 32),
//!   and a single instance is exact;
//! * plus `sync_after` for a key the near-cache dropped to make room
//!   (see [`SharedBuilder::capacity`]) while it was at its limit.
//!
//! Measured (`tests/redis.rs`, three instances, one key at four times its
//! limit of 300): 307 to 310 admitted. The cost is on the other side: a
//! client whose requests all reach one instance may be refused for up to
//! one round trip once it has spent that instance's share, although the
//! fleet has room ([`SharedStats::budget_refusals`] counts these).
//!
//! # When Redis is gone
//!
//! Every call has a timeout ([`RedisStoreBuilder::timeout`]). After
//! [`trip_after`](RedisStoreBuilder::trip_after) failures in a row the
//! breaker opens: calls are no longer made and the [`OnFailure`] policy
//! decides: fail open to a local limiter of the same quota, or fail closed.
//! Every [`retry_every`](RedisStoreBuilder::retry_every) one call probes
//! Redis; when it answers, shared limits apply again. Each transition is
//! logged once, and counted in [`StoreStats`].
//!
//! # Shared bans
//!
//! With feature `tower` too,
//! [`GuardBuilder::share_bans`](crate::http::GuardBuilder::share_bans)
//! publishes a guard's bans, lifts and flagged fingerprint classes so that
//! every instance of the fleet applies them, usually within milliseconds.
//! With `<ns>` the store's namespace, Redis holds:
//!
//! * `<ns>:{bans}`: a sorted set of the bans in force, each member a prefix
//!   in its canonical text (`192.0.2.7/32`, `2001:db8::/64`) scored by when
//!   it ends, in milliseconds on the Redis server's clock (so instances need
//!   no synchronised clocks). Expired members are dropped on each write, the
//!   set is capped at the publishing guard's `max_bans` (the ban ending
//!   soonest makes room), and the key expires with its last member.
//! * `<ns>:{classes}`: the same for flagged classes
//!   ([`Fingerprint::class`](crate::http::Fingerprint::class) in 16
//!   lowercase hex digits), at most 16.
//! * Channels of the same names, with one message per change, its fields
//!   separated by single spaces:
//!
//!   | message | meaning |
//!   |---|---|
//!   | `1 ban <sender> <prefix> <ms>` | `<prefix>` is banned for `<ms>` milliseconds from now |
//!   | `1 lift <sender> <prefix>` | the ban on exactly `<prefix>` is lifted |
//!   | `1 class <sender> <class> <ms>` | class `<class>` is flagged for `<ms>` milliseconds |
//!
//!   `1` is the format's version and `<sender>` the publishing guard's id
//!   (16 lowercase hex digits); a guard ignores its own messages.
//!
//! One Lua script writes a change to its set and publishes it, atomically.
//! A guard's subscriber subscribes first, then loads the sets, so no change
//! made in between is missed. The bans load in pages of 1,000 (those
//! ending last first, each page resuming after the last entry of the one
//! before), so no reply is unbounded; [`SharedBanStats::load_pages`] counts
//! them. On reconnecting, it also lifts the bans in
//! force here that the set held and no longer does (lifted elsewhere while
//! it was cut off), counted in [`SharedBanStats::reconciled_lifts`]: bans it
//! learned from Redis, and its own once written there; not its own while
//! they wait to be written, not those recorded after it asked for the set,
//! and nothing when the load was cut at the guard's `max_bans`. What comes
//! from Redis is parsed strictly: a message or member that does not parse,
//! a prefix shorter than an IPv4 /8 or an IPv6 /16, or a time over a year
//! is counted in [`SharedBanStats::rejected`] and ignored.
//!
//! [`SharedBanStats::load_pages`]: crate::http::SharedBanStats::load_pages
//! [`SharedBanStats::reconciled_lifts`]: crate::http::SharedBanStats::reconciled_lifts
//! [`SharedBanStats::rejected`]: crate::http::SharedBanStats::rejected
//! [`SharedStats::budget_refusals`]: crate::SharedStats::budget_refusals

#[cfg(feature = "tower")]
pub(crate) mod bans;
mod breaker;
#[doc(hidden)]
pub mod fuzzing;
mod limiter;
mod near_cache;
#[cfg(feature = "tower")]
mod rules;
mod script;
mod store;
#[cfg(feature = "serde")]
mod store_form;

pub use breaker::BreakerState;
pub use limiter::{
    DEFAULT_LOCAL_CAPACITY, DEFAULT_SYNC_AFTER, DEFAULT_SYNC_EVERY, Mode, SharedBuilder,
    SharedLimiter,
};
pub use near_cache::MAX_SYNC_AFTER;
pub use store::{
    DEFAULT_RETRY_EVERY, DEFAULT_TIMEOUT, DEFAULT_TRIP_AFTER, OnFailure, RedisStore,
    RedisStoreBuilder, StoreError, StoreStats,
};

/// The test server the integration tests use too.
#[cfg(test)]
#[allow(unreachable_pub)]
#[path = "../../tests/common/redis_server.rs"]
mod redis_server;
