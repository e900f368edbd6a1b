//! Internals the cargo-fuzz targets in `fuzz/` drive directly: how replies
//! and messages from Redis are read, and the near-cache's state word.
//! Not part of the API: hidden from the docs, and may change at any time.

// Hidden drivers for the fuzz targets, not API: no Debug to keep up.
#![allow(missing_debug_implementations)]

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use redis::Value;

use crate::algo::Op;
use crate::{ConfigError, Decision, IpPrefix, Timestamp};

use super::near_cache;
use super::script;

/// A limiter script's reply: `[allowed, remaining, reset_after_us,
/// retry_after_us]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptReply {
    /// The cost was admitted.
    pub allowed: bool,
    /// Units left.
    pub remaining: u64,
    /// Microseconds until the key's state is empty again.
    pub reset_after_us: u64,
    /// Microseconds until the cost fits; `None`: it never does.
    pub retry_after_us: Option<u64>,
}

impl From<script::Reply> for ScriptReply {
    fn from(r: script::Reply) -> Self {
        ScriptReply {
            allowed: r.allowed,
            remaining: r.remaining,
            reset_after_us: r.reset_after_us,
            retry_after_us: r.retry_after_us,
        }
    }
}

impl From<ScriptReply> for script::Reply {
    fn from(r: ScriptReply) -> Self {
        script::Reply {
            allowed: r.allowed,
            remaining: r.remaining,
            reset_after_us: r.reset_after_us,
            retry_after_us: r.retry_after_us,
        }
    }
}

impl ScriptReply {
    /// Reads a script's reply as the shared limiter does; `None` where it
    /// would report a malformed reply.
    pub fn parse(value: Value) -> Option<Self> {
        script::parse_reply(value).ok().map(Self::from)
    }

    /// The reply as the decision the shared limiter returns for a limit of
    /// `limit`.
    pub fn decision(self, limit: u64) -> Decision {
        script::Reply::from(self).decision(limit)
    }
}

/// A change carried by a shared-ban message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanChange {
    /// `prefix` is banned for `ttl_ms`.
    Ban {
        /// The banned network.
        prefix: IpPrefix,
        /// Milliseconds from now.
        ttl_ms: u64,
    },
    /// The ban on exactly `prefix` is lifted.
    Lift {
        /// The network.
        prefix: IpPrefix,
    },
    /// Fingerprint class `class` is flagged for `ttl_ms`.
    Class {
        /// The class.
        class: u64,
        /// Milliseconds from now.
        ttl_ms: u64,
    },
}

#[cfg(feature = "tower")]
impl From<BanChange> for super::bans::Change {
    fn from(c: BanChange) -> Self {
        use super::bans::Change;
        match c {
            BanChange::Ban { prefix, ttl_ms } => Change::Ban { prefix, ttl_ms },
            BanChange::Lift { prefix } => Change::Lift { prefix },
            BanChange::Class { class, ttl_ms } => Change::Class { class, ttl_ms },
        }
    }
}

#[cfg(feature = "tower")]
impl From<super::bans::Change> for BanChange {
    fn from(c: super::bans::Change) -> Self {
        use super::bans::Change;
        match c {
            Change::Ban { prefix, ttl_ms } => BanChange::Ban { prefix, ttl_ms },
            Change::Lift { prefix } => BanChange::Lift { prefix },
            Change::Class { class, ttl_ms } => BanChange::Class { class, ttl_ms },
        }
    }
}

/// A shared-ban message's text: version, kind, sender, fields.
#[cfg(feature = "tower")]
pub fn encode_ban(sender: u64, change: BanChange) -> String {
    super::bans::encode(sender, &change.into())
}

/// `message` signed under `key`, as a guard with a store secret publishes it.
#[cfg(feature = "tower")]
pub fn sign_ban(key: (u64, u64), message: String) -> String {
    super::bans::sign(key, message)
}

/// The message of a payload whose signature under `key` is right.
#[cfg(feature = "tower")]
pub fn verify_ban(key: (u64, u64), payload: &[u8]) -> Option<&[u8]> {
    super::bans::verify(key, payload)
}

/// A message's sender and change, if it parses.
#[cfg(feature = "tower")]
pub fn decode_ban(message: &[u8]) -> Option<(u64, BanChange)> {
    super::bans::decode(message).map(|(s, c)| (s, c.into()))
}

/// A ban-set page reply's entries (member, milliseconds left) and where
/// the next page starts; `None` for a malformed reply, `None` entries for
/// bad pairs.
#[cfg(feature = "tower")]
pub fn decode_ban_page(reply: &Value) -> Option<BanPage<'_>> {
    super::bans::decode_page(reply).map(|p| (p.entries, p.next))
}

/// A decoded ban-set page: its entries, and the (score, member) after
/// which the next page starts, when another may follow.
#[cfg(feature = "tower")]
pub type BanPage<'a> = (Vec<Option<(&'a str, u64)>>, Option<(i64, &'a [u8])>);

impl From<NearEntry> for near_cache::Entry {
    fn from(e: NearEntry) -> Self {
        near_cache::Entry {
            budget: e.budget,
            pending: e.pending,
            dirty: e.dirty,
            in_flight: e.in_flight,
            blocked: e.blocked,
            until_ms: e.until_ms,
        }
    }
}

impl From<near_cache::Entry> for NearEntry {
    fn from(e: near_cache::Entry) -> Self {
        NearEntry {
            budget: e.budget,
            pending: e.pending,
            dirty: e.dirty,
            in_flight: e.in_flight,
            blocked: e.blocked,
            until_ms: e.until_ms,
        }
    }
}

/// A near-cache's word for one key, unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NearEntry {
    /// Units this instance may admit before the next sync.
    pub budget: u64,
    /// Units admitted and not pushed yet.
    pub pending: i64,
    /// Listed for the next push.
    pub dirty: bool,
    /// Pushed, answer not back yet.
    pub in_flight: bool,
    /// Refused until `until_ms`.
    pub blocked: bool,
    /// Milliseconds on the store's clock, modulo 2^36.
    pub until_ms: u64,
}

impl NearEntry {
    /// The packed word.
    pub fn pack(self) -> u64 {
        near_cache::Entry::from(self).pack()
    }

    /// The fields of a word.
    pub fn unpack(word: u64) -> Self {
        near_cache::Entry::unpack(word).into()
    }
}

/// A near-cached limiter's local state, without Redis: checks, the batch
/// a sync would push, and Redis's answers given by hand.
pub struct NearCache {
    inner: near_cache::NearCache,
    instances: AtomicU64,
}

impl NearCache {
    /// A near-cache for a limit of `limit`, as [`SharedBuilder`] makes it.
    ///
    /// [`SharedBuilder`]: super::SharedBuilder
    pub fn new(
        limit: u64,
        span: Duration,
        capacity: usize,
        sync_after: u64,
        sync_every: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(NearCache {
            inner: near_cache::NearCache::new(limit, span, capacity, sync_after, sync_every)?,
            instances: AtomicU64::new(1),
        })
    }

    /// Decides `op` for `key` with `instances` live instances; also says
    /// whether it asked for a sync now.
    pub fn apply(&self, key: u64, now: Timestamp, op: Op, instances: u64) -> (Decision, bool) {
        self.instances
            .store(instances, std::sync::atomic::Ordering::Relaxed);
        let mut nudged = false;
        let d = self
            .inner
            .apply(key, || key, now, op, &self.instances, || nudged = true);
        (d, nudged)
    }

    /// What a sync would push: `(key, key for Redis, units)`.
    pub fn take_listed(&self, now: Timestamp) -> Vec<(u64, u64, i64)> {
        self.inner.take_listed(now)
    }

    /// Redis answered a push of `batch` with `replies`.
    pub fn settle(
        &self,
        batch: &[(u64, u64, i64)],
        replies: &[ScriptReply],
        now: Timestamp,
        instances: u64,
    ) {
        let replies: Vec<script::Reply> = replies.iter().map(|&r| r.into()).collect();
        self.inner.settle(batch, &replies, now, instances);
    }

    /// A push of `batch` failed.
    pub fn restore(&self, batch: &[(u64, u64, i64)], now: Timestamp) {
        self.inner.restore(batch, now);
    }

    /// Live keys dropped to make room.
    pub fn evictions(&self) -> u64 {
        self.inner.evictions()
    }
}
