//! Shared bans (features `tower` and `redis`): a [`Guard`](crate::http::Guard)'s
//! bans and flagged fingerprint classes, published through Redis so that
//! every instance of a fleet refuses a banned client.
//!
//! The key and message layout is in the [module docs](super#shared-bans).
//!
//! This is a fleet the guard's seam takes ([`BanFleet`], [`FleetLink`];
//! the guard owns them): [`GuardBuilder::share_bans`] gives the builder a
//! [`Setup`], which `build` joins with the guard's final clock and
//! `max_bans`. What other instances publish is applied through the
//! [`GuardHandle`] the guard hands over once it exists.
//!
//! # Tasks
//!
//! Recording a ban never waits for Redis: it puts the change in a bounded
//! queue (and counts it as dropped when the queue is full). A publisher task
//! sends the queue to Redis, through the store's breaker and timeout,
//! retrying a change until it is published or has expired. A subscriber task
//! holds its own pub/sub connection; on each (re)connection it subscribes,
//! then loads the bans and classes in force from the sets (so an instance
//! started late, or cut off for a while, catches up), then applies every
//! message from another guard. Bans load in pages of 1,000, those ending
//! last first, each applied as it comes: no reply is unbounded, however
//! many bans the fleet holds and however many instances reconnect at once.
//! A page resumes after the last entry of the one before (its score and
//! member), not at an offset, so a ban added or lifted between pages moves
//! no other past the reader; the change itself arrives as a message. A reload also lifts the bans this guard holds
//! only because Redis told it (a message or an earlier load) that are no
//! longer in the set: they were lifted while it was cut off. While Redis is
//! unreachable it retries every second at most. Both tasks end once the
//! guard is dropped.
//!
//! Everything read from Redis is parsed strictly: a message or set member
//! that does not parse, bans less than an IPv4 /8 or an IPv6 /16, or lasts
//! more than a year and a day is counted in [`SharedBanStats::rejected`] and
//! ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::Value;
use tokio::sync::mpsc;

use super::store::{Failure, RedisStore, StoreInner};
use crate::http::{
    BanFleet, BanTarget, FleetLink, GuardBuilder, GuardHandle, Joined, SharedBanStats,
};
use crate::{Clock, IpPrefix, Timestamp};

/// Changes waiting for the publisher; more are dropped (and counted).
const QUEUE: usize = 4096;
/// First wait before retrying Redis; doubles up to [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_millis(250);
/// Longest wait before retrying Redis.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// `delay` spread evenly over ½× to 1½×: a fleet that lost Redis at once
/// does not come back at once, every instance reloading the ban set in
/// the same instant.
fn jittered(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` is keyed afresh: random enough for a retry.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
    delay.mul_f64(0.5 + unit)
}
/// Time to connect (and subscribe) before giving up on an attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for each page of the bans in force (and for the classes).
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A silent pub/sub connection is pinged this often, to notice one that is
/// gone without a word (a network partition).
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long the subscriber waits for a message before checking that its
/// guard still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Flags held at once: the detector's `MAX_FLAGGED`.
const MAX_CLASSES: usize = 16;
/// Longest ban or flag accepted from Redis: a year and a day.
const MAX_TTL_MS: u64 = 366 * 24 * 3600 * 1000;
/// Longest message accepted.
const MAX_MESSAGE: usize = 128;
/// Shortest prefixes shared: a message cannot ban an address family.
const MIN_V4_LEN: u8 = 8;
const MIN_V6_LEN: u8 = 16;
/// The message format's version.
const VERSION: &str = "1";

/// Writes a ban or flag to the sorted set `KEYS[1]` (member `ARGV[1]`,
/// ending `ARGV[2]` ms from now on the server's clock), drops expired ones,
/// keeps at most `ARGV[3]` (the soonest to end go first), lets the key expire
/// with its last member, and publishes `ARGV[5]` on channel `ARGV[4]`.
const RECORD_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if not redis.call('ZSCORE', key, ARGV[1]) then
  local over = redis.call('ZCARD', key) - tonumber(ARGV[3]) + 1
  if over > 0 then
    redis.call('ZPOPMIN', key, over)
  end
end
redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', key, last[2])
return redis.call('PUBLISH', ARGV[4], ARGV[5])
";

/// Removes member `ARGV[1]` of `KEYS[1]` and publishes `ARGV[3]` on channel
/// `ARGV[2]`.
const LIFT_SCRIPT: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('PUBLISH', ARGV[2], ARGV[3])
";

/// One page of the members of `KEYS[1]` in force, those that end last
/// first (and, ending together, by member descending, as `ZREVRANGE`
/// orders them): at most `ARGV[1]` members, each followed by the
/// milliseconds it has left on the server's clock. `ARGV[2]` and `ARGV[3]`
/// are the cursor, the score and member of the last entry of the page
/// before (both empty for the first page): the page holds the members that
/// come after that entry in this order, wherever they are now, so members
/// added or removed between pages shift no one past the cursor. When the
/// cursor's member is gone (lifted, or ending anew), its place is found
/// among the members ending with it by binary search, comparing bytes as
/// Redis does.
///
/// The reply is `{more, score, member, m1, ms1, m2, ms2, ...}`: `more` is 1
/// when the page is full and another may follow from the cursor `score`
/// and `member` (the page's last entry), else 0. A page stops at the first
/// ended member: all after it have ended too.
const LOAD_PAGE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, count = KEYS[1], tonumber(ARGV[1])
local function below(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local start = 0
if ARGV[2] ~= '' then
  local score, member = tonumber(ARGV[2]), ARGV[3]
  local s = redis.call('ZSCORE', key, member)
  if s and tonumber(s) == score then
    start = redis.call('ZREVRANK', key, member) + 1
  else
    local lo = redis.call('ZCOUNT', key, '(' .. ARGV[2], '+inf')
    local hi = lo + redis.call('ZCOUNT', key, ARGV[2], ARGV[2])
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if below(redis.call('ZREVRANGE', key, mid, mid)[1], member) then
        hi = mid
      else
        lo = mid + 1
      end
    end
    start = lo
  end
end
local r = redis.call('ZREVRANGE', key, start, start + count - 1, 'WITHSCORES')
local out = {#r == 2 * count and 1 or 0, 0, ''}
for i = 1, #r, 2 do
  local left = tonumber(r[i + 1]) - now
  if left <= 0 then
    out[1] = 0
    break
  end
  out[#out + 1] = r[i]
  out[#out + 1] = left
  out[2], out[3] = tonumber(r[i + 1]), r[i]
end
return out
";

/// Bans read per round trip when loading the set: a reply stays small (a
/// few tens of kilobytes) however many bans the fleet holds, so that a
/// fleet reconnecting at once does not make Redis build one huge reply per
/// instance.
const LOAD_PAGE: usize = 1_000;

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    loaded: AtomicU64,
    load_pages: AtomicU64,
    reconciled_lifts: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    subscribed: AtomicBool,
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

/// A change for the publisher. `at` is when it was made, on the store's
/// clock: a change published late has that much less time left.
#[derive(Debug)]
enum Outgoing {
    Ban {
        prefix: IpPrefix,
        ttl: Duration,
        at: Timestamp,
    },
    Lift {
        prefix: IpPrefix,
    },
    Class {
        class: u64,
        at: Timestamp,
    },
}

/// A change as carried by a message or a stored entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Ban { prefix: IpPrefix, ttl_ms: u64 },
    Lift { prefix: IpPrefix },
    Class { class: u64, ttl_ms: u64 },
}

/// What one guard's tasks share with it.
struct Core {
    store: Arc<StoreInner>,
    /// This guard's id in messages.
    sender: u64,
    /// `<ns>:{bans}`: the sorted set of bans and their channel.
    bans_key: String,
    /// `<ns>:{classes}`: the same for flagged classes.
    classes_key: String,
    max_bans: usize,
    record: redis::Script,
    lift: redis::Script,
    load_page: redis::Script,
    /// Called with the number of pages read so far after each page of a
    /// load is applied, for tests to change the set between pages.
    #[cfg(test)]
    after_page: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    counters: Counters,
    /// Which bans a reload may lift.
    tracked: Mutex<Tracked>,
}

/// A hash map keyed by exact prefix (unlike [`crate::PrefixMap`], which
/// finds an address's longest matching prefix).
type PrefixHashMap<V> = std::collections::HashMap<IpPrefix, V, ahash::RandomState>;

/// The bans a reload may lift, and this guard's own bans it must not.
#[derive(Default)]
struct Tracked {
    /// Prefixes banned here that Redis's set holds: bans learned from
    /// Redis, and this guard's own once written there. Each with when the
    /// ban ends on the store's clock (to prune ended ones). A reload lifts
    /// those no longer in the set: another instance lifted them. At most
    /// `max_bans`.
    in_set: PrefixHashMap<InSet>,
    /// This guard's bans queued or being written, per prefix: absent from
    /// the set through no one's lift, so never lifted by a reload.
    unpublished: PrefixHashMap<u32>,
    /// Counts changes to `in_set`: a reload lifts only entries it had
    /// before asking for the set, as a later one may be newer than the
    /// reply.
    changes: u64,
}

/// A ban in Redis's set: when it ends, and the change that last
/// recorded it.
struct InSet {
    end: Timestamp,
    change: u64,
}

impl Tracked {
    /// Records that the set holds a ban of `prefix` until `until`, unless
    /// one of this guard's own bans of it waits to be written (the set
    /// may lack it until then). A full map drops ended entries first; a
    /// ban that still finds no room ends on its own, without reconciling.
    fn in_set_until(&mut self, prefix: IpPrefix, until: Timestamp, now: Timestamp, max: usize) {
        if self.unpublished.contains_key(&prefix) {
            return;
        }
        if self.in_set.len() >= max && !self.in_set.contains_key(&prefix) {
            self.in_set.retain(|_, e| e.end > now);
            if self.in_set.len() >= max {
                return;
            }
        }
        self.changes += 1;
        let change = self.changes;
        let e = self
            .in_set
            .entry(prefix)
            .or_insert(InSet { end: until, change });
        e.end = e.end.max(until);
        e.change = change;
    }

    /// Hands `lift` each ban recorded as in the set up to change `asked`
    /// that a whole reply of the set, asked for then, lacks, and forgets
    /// it.
    fn missing(
        &mut self,
        reply: &ahash::HashSet<IpPrefix>,
        asked: u64,
        mut lift: impl FnMut(&IpPrefix),
    ) {
        self.in_set.retain(|prefix, e| {
            if reply.contains(prefix) || e.change > asked {
                return true;
            }
            lift(prefix);
            false
        });
    }

    /// One more of this guard's bans of `prefix` is on its way to the
    /// queue: until it is [`settled`](Self::settled), a reload does not
    /// lift the prefix.
    fn queued(&mut self, prefix: IpPrefix) {
        *self.unpublished.entry(prefix).or_insert(0) += 1;
    }

    /// One of this guard's bans of `prefix` is off the queue: written
    /// (`Some(end)`, when it ends there) or not.
    fn settled(
        &mut self,
        prefix: IpPrefix,
        written: Option<Timestamp>,
        now: Timestamp,
        max: usize,
    ) {
        if let Some(n) = self.unpublished.get_mut(&prefix) {
            *n -= 1;
            if *n == 0 {
                self.unpublished.remove(&prefix);
            }
        }
        if let Some(end) = written {
            self.in_set_until(prefix, end, now, max);
        }
    }
}

/// Guards made in this process: each gets its own sender id, so that two
/// guards on one store still hear each other.
static GUARDS: AtomicU64 = AtomicU64::new(0);

/// A fleet sharing bans through a store, as [`GuardBuilder::share_bans`]
/// gives it to the builder: joined by `build`, once per guard.
#[derive(Clone)]
pub(crate) struct Setup {
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
    pub(crate) fn new(store: &RedisStore) -> Self {
        Setup {
            store: Arc::clone(&store.inner),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The queue and the tasks' state for a guard holding at most
    /// `max_bans`; `None` outside a Tokio runtime.
    pub(crate) fn open(self, max_bans: usize) -> Option<(BanSink, Starter)> {
        let runtime = self
            .runtime
            .or_else(|| tokio::runtime::Handle::try_current().ok())?;
        let n = GUARDS.fetch_add(1, Ordering::Relaxed);
        let ns = &self.store.namespace;
        let core = Arc::new(Core {
            sender: self.store.instance ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            bans_key: format!("{ns}:{{bans}}"),
            classes_key: format!("{ns}:{{classes}}"),
            store: self.store,
            max_bans,
            record: redis::Script::new(RECORD_SCRIPT),
            lift: redis::Script::new(LIFT_SCRIPT),
            load_page: redis::Script::new(LOAD_PAGE_SCRIPT),
            #[cfg(test)]
            after_page: std::sync::OnceLock::new(),
            counters: Counters::default(),
            tracked: Mutex::new(Tracked::default()),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = BanSink {
            tx,
            core: Arc::clone(&core),
        };
        Some((sink, Starter { core, rx, runtime }))
    }
}

/// Starts a guard's tasks once the guard exists.
pub(crate) struct Starter {
    core: Arc<Core>,
    rx: mpsc::Receiver<Outgoing>,
    runtime: tokio::runtime::Handle,
}

impl Starter {
    /// Spawns the publisher (flagged classes last `class_ttl` elsewhere) and
    /// the subscriber, which applies changes to `target` while it lives.
    pub(crate) fn start(self, target: GuardHandle, class_ttl: Duration) {
        let Starter { core, rx, runtime } = self;
        runtime.spawn(publish_loop(Arc::clone(&core), rx, class_ttl));
        runtime.spawn(subscribe_loop(core, target));
    }
}

/// The guard's end of the queue to the publisher.
pub(crate) struct BanSink {
    tx: mpsc::Sender<Outgoing>,
    core: Arc<Core>,
}

impl FleetLink for BanSink {
    /// From now on, reconciling never lifts `prefix` (the guard's ban of it
    /// may not be published yet).
    fn claim(&self, prefix: &IpPrefix) {
        self.core.tracked.lock().in_set.remove(prefix);
    }

    /// Until the publisher has written it, a reload does not lift it; once
    /// written, a reload that no longer finds it in the set does.
    fn banned(&self, prefix: IpPrefix, ttl: Duration) {
        {
            let mut tracked = self.core.tracked.lock();
            // Again: a message may have taught it since `claim`.
            tracked.in_set.remove(&prefix);
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

/// Whether a prefix is long enough to be shared.
fn shareable(p: &IpPrefix) -> bool {
    p.len() >= if p.is_ipv4() { MIN_V4_LEN } else { MIN_V6_LEN }
}

/// Milliseconds in `d`, rounded up.
fn millis_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// `message` followed by its signature under `key`: a space and the
/// SipHash-2-4 128-bit MAC of the message, in 32 lowercase hex digits.
pub(super) fn sign(key: (u64, u64), message: String) -> String {
    format!("{message} {:032x}", mac(key, message.as_bytes()))
}

fn mac((k0, k1): (u64, u64), message: &[u8]) -> u128 {
    use siphasher::sip128::{Hasher128, SipHasher24};
    use std::hash::Hasher;
    let mut h = SipHasher24::new_with_keys(k0, k1);
    h.write(message);
    h.finish128().as_u128()
}

/// The message of a payload signed under `key`, if the signature is
/// right. Compared without an early exit on the first differing byte.
pub(super) fn verify(key: (u64, u64), payload: &[u8]) -> Option<&[u8]> {
    if payload.len() > MAX_MESSAGE + 33 {
        return None;
    }
    let at = payload.len().checked_sub(33)?;
    let (message, tail) = payload.split_at(at);
    let hex = tail.strip_prefix(b" ")?;
    let want = format!("{:032x}", mac(key, message));
    let diff = hex
        .iter()
        .zip(want.as_bytes())
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    (diff == 0).then_some(message)
}

pub(super) fn encode(sender: u64, change: &Change) -> String {
    match change {
        Change::Ban { prefix, ttl_ms } => format!("{VERSION} ban {sender:016x} {prefix} {ttl_ms}"),
        Change::Lift { prefix } => format!("{VERSION} lift {sender:016x} {prefix}"),
        Change::Class { class, ttl_ms } => {
            format!("{VERSION} class {sender:016x} {class:016x} {ttl_ms}")
        }
    }
}

/// Exactly 16 lowercase hex digits.
fn parse_hex16(s: &str) -> Option<u64> {
    let ok = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| u64::from_str_radix(s, 16).ok()).flatten()
}

/// A prefix in its canonical text, long enough to share.
fn parse_prefix(s: &str) -> Option<IpPrefix> {
    let p: IpPrefix = s.parse().ok()?;
    (shareable(&p) && p.to_string() == s).then_some(p)
}

/// Decimal milliseconds, 1 to [`MAX_TTL_MS`].
fn parse_ttl(s: &str) -> Option<u64> {
    let ok = (1..=12).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| s.parse().ok())
        .flatten()
        .filter(|ms| (1..=MAX_TTL_MS).contains(ms))
}

/// Parses a message: its sender and change.
pub(super) fn decode(payload: &[u8]) -> Option<(u64, Change)> {
    if payload.len() > MAX_MESSAGE {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    let mut fields = text.split(' ');
    let mut next = || fields.next();
    if next()? != VERSION {
        return None;
    }
    let (kind, sender) = (next()?, parse_hex16(next()?)?);
    let change = match kind {
        "ban" => Change::Ban {
            prefix: parse_prefix(next()?)?,
            ttl_ms: parse_ttl(next()?)?,
        },
        "lift" => Change::Lift {
            prefix: parse_prefix(next()?)?,
        },
        "class" => Change::Class {
            class: parse_hex16(next()?)?,
            ttl_ms: parse_ttl(next()?)?,
        },
        _ => return None,
    };
    next().is_none().then_some((sender, change))
}

/// A page of a set, as `LOAD_PAGE_SCRIPT` answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Page<'a> {
    /// Members and the milliseconds each has left; bad pairs are `None`.
    pub(super) entries: Vec<Option<(&'a str, u64)>>,
    /// Where the next page starts (the score and member of this one's last
    /// entry), when another may follow.
    pub(super) next: Option<(i64, &'a [u8])>,
}

/// Parses a `LOAD_PAGE_SCRIPT` reply; `None` when it is malformed.
pub(super) fn decode_page(reply: &Value) -> Option<Page<'_>> {
    let Value::Array(items) = reply else {
        return None;
    };
    let [more, score, member, entries @ ..] = &items[..] else {
        return None;
    };
    let next = match (more, score, member) {
        (Value::Int(0), Value::Int(_), Value::BulkString(_)) => None,
        (Value::Int(1), Value::Int(score), Value::BulkString(member)) => {
            Some((*score, member.as_slice()))
        }
        _ => return None,
    };
    if entries.len() % 2 != 0 {
        return None;
    }
    let entries = entries.chunks_exact(2).map(|pair| match pair {
        [Value::BulkString(member), Value::Int(ms)] => {
            let member = std::str::from_utf8(member).ok()?;
            let ms = u64::try_from(*ms)
                .ok()
                .filter(|ms| (1..=MAX_TTL_MS).contains(ms))?;
            (member.len() <= MAX_MESSAGE).then_some((member, ms))
        }
        _ => None,
    });
    Some(Page {
        entries: entries.collect(),
        next,
    })
}

/// Asks for the page of `key` after `cursor` (from the start without one),
/// of at most `count` members.
async fn read_page(
    script: &redis::Script,
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    count: usize,
    cursor: Option<(i64, &[u8])>,
) -> Result<Value, String> {
    let mut call = script.key(key);
    call.arg(count);
    match cursor {
        Some((score, member)) => call.arg(score).arg(member),
        None => call.arg("").arg(""),
    };
    call.invoke_async(con).await.map_err(|e| e.to_string())
}

async fn publish_loop(core: Arc<Core>, mut rx: mpsc::Receiver<Outgoing>, class_ttl: Duration) {
    let mut failing = false;
    while let Some(out) = rx.recv().await {
        let mut delay = MIN_RETRY;
        loop {
            match core.publish(&out, class_ttl).await {
                Ok(written) => {
                    if let Outgoing::Ban { prefix, ttl, at } = out {
                        let end = written.then(|| at.saturating_add(ttl));
                        let now = core.store.now();
                        core.tracked.lock().settled(prefix, end, now, core.max_bans);
                    }
                    if failing {
                        failing = false;
                        tracing::info!(
                            namespace = %core.store.namespace,
                            "floodguard: shared bans are published again"
                        );
                    }
                    break;
                }
                Err(failure) => {
                    bump(&core.counters.errors);
                    if !failing {
                        failing = true;
                        tracing::warn!(
                            namespace = %core.store.namespace,
                            ?failure,
                            "floodguard: cannot publish shared bans, retrying"
                        );
                    }
                    // The guard is gone: nobody waits for this change.
                    if rx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(jittered(delay)).await;
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        }
    }
}

impl Core {
    /// Writes and publishes one change; a ban or flag that has expired
    /// meanwhile is dropped (`Ok(false)`).
    async fn publish(&self, out: &Outgoing, class_ttl: Duration) -> Result<bool, Failure> {
        let left = |ttl: Duration, at: Timestamp| {
            let waited = self.store.now().saturating_duration_since(at);
            ttl.checked_sub(waited)
                .map(millis_ceil)
                .filter(|&ms| ms > 0)
        };
        let (script, key, member, change) = match *out {
            Outgoing::Ban { prefix, ttl, at } => {
                let Some(ttl_ms) = left(ttl, at) else {
                    return Ok(false);
                };
                let ttl_ms = ttl_ms.min(MAX_TTL_MS);
                let change = Change::Ban { prefix, ttl_ms };
                (&self.record, &self.bans_key, prefix.to_string(), change)
            }
            Outgoing::Lift { prefix } => {
                let change = Change::Lift { prefix };
                (&self.lift, &self.bans_key, prefix.to_string(), change)
            }
            Outgoing::Class { class, at } => {
                let Some(ttl_ms) = left(class_ttl, at) else {
                    return Ok(false);
                };
                let ttl_ms = ttl_ms.min(MAX_TTL_MS);
                let change = Change::Class { class, ttl_ms };
                (
                    &self.record,
                    &self.classes_key,
                    format!("{class:016x}"),
                    change,
                )
            }
        };
        let message = match self.store.message_key {
            Some(key) => sign(key, encode(self.sender, &change)),
            None => encode(self.sender, &change),
        };
        let mut call = script.key(key);
        call.arg(&member);
        match change {
            Change::Ban { ttl_ms, .. } => {
                call.arg(ttl_ms).arg(self.max_bans).arg(key).arg(&message);
            }
            Change::Class { ttl_ms, .. } => {
                call.arg(ttl_ms).arg(MAX_CLASSES).arg(key).arg(&message);
            }
            Change::Lift { .. } => {
                call.arg(key).arg(&message);
            }
        }
        let call = &call;
        self.store
            .guarded(|| {
                let mut con = self.store.connection();
                async move { call.invoke_async::<i64>(&mut con).await }
            })
            .await?;
        bump(&self.counters.published);
        Ok(true)
    }

    /// Counts and logs a message or entry that did not parse.
    fn reject(&self, what: &str, raw: &[u8]) {
        let n = bump(&self.counters.rejected);
        let raw = String::from_utf8_lossy(&raw[..raw.len().min(MAX_MESSAGE)]);
        if n.is_power_of_two() {
            tracing::warn!(
                rejected = n,
                "floodguard: ignored a bad shared-ban {what}: {raw:?}"
            );
        } else {
            tracing::debug!("floodguard: ignored a bad shared-ban {what}: {raw:?}");
        }
    }

    /// Applies one message from the channel `channel`.
    fn on_message(&self, target: &dyn BanTarget, channel: &str, payload: &[u8]) {
        let on_bans = channel == self.bans_key;
        let fits = |c: &Change| match c {
            Change::Ban { .. } | Change::Lift { .. } => on_bans,
            Change::Class { .. } => channel == self.classes_key,
        };
        // With a store secret, only messages signed with it count.
        let message = match self.store.message_key {
            Some(key) => verify(key, payload),
            None => Some(payload),
        };
        let Some((sender, change)) = message.and_then(decode).filter(|(_, c)| fits(c)) else {
            self.reject("message", payload);
            return;
        };
        if sender == self.sender {
            return;
        }
        // Counted first: whoever sees the change applied sees it counted.
        bump(&self.counters.received);
        match change {
            Change::Ban { prefix, ttl_ms } => {
                self.learn(prefix, ttl_ms, || {
                    target.apply_ban(prefix, Duration::from_millis(ttl_ms), false)
                });
                tracing::debug!(%prefix, ttl_ms, "floodguard: shared ban received");
            }
            Change::Lift { prefix } => {
                self.tracked.lock().in_set.remove(&prefix);
                target.apply_lift(&prefix);
                tracing::debug!(%prefix, "floodguard: shared ban lifted");
            }
            Change::Class { class, ttl_ms } => {
                target.apply_class(class, Duration::from_millis(ttl_ms));
                tracing::debug!(class = %format_args!("{class:016x}"), ttl_ms, "floodguard: shared class flag received");
            }
        }
    }

    /// Applies a ban from Redis with `apply` and, if applied, records it as
    /// in the set (ending `ttl_ms` from now). Under the lock, so that a
    /// [`claim`](FleetLink::claim) comes wholly before or after.
    fn learn(&self, prefix: IpPrefix, ttl_ms: u64, apply: impl FnOnce() -> bool) {
        let mut tracked = self.tracked.lock();
        if !apply() {
            return;
        }
        let now = self.store.now();
        let until = now.saturating_add(Duration::from_millis(ttl_ms));
        tracked.in_set_until(prefix, until, now, self.max_bans);
    }

    /// A page's entries; a malformed reply is rejected.
    fn page<'a>(&self, reply: &'a Value) -> Option<Page<'a>> {
        let page = decode_page(reply);
        if page.is_none() {
            self.reject("set", format!("{reply:?}").as_bytes());
        }
        page
    }

    /// Applies a page of bans to `target`, adding those it holds to
    /// `in_set`; false if an entry did not parse.
    fn apply_bans(
        &self,
        target: &dyn BanTarget,
        entries: &[Option<(&str, u64)>],
        in_set: &mut ahash::HashSet<IpPrefix>,
    ) -> bool {
        let mut clean = true;
        for entry in entries {
            match *entry {
                Some((member, ms)) => match parse_prefix(member) {
                    Some(prefix) => {
                        in_set.insert(prefix);
                        self.learn(prefix, ms, || {
                            target.apply_ban(prefix, Duration::from_millis(ms), true)
                        });
                        bump(&self.counters.loaded);
                    }
                    None => {
                        clean = false;
                        self.reject("set member", member.as_bytes());
                    }
                },
                None => {
                    clean = false;
                    self.reject("set member", b"(not a member and a time)");
                }
            }
        }
        clean
    }

    /// Loads the bans in force into `target` in pages of [`LOAD_PAGE`],
    /// those that end last first and at most `max_bans` of them, applying
    /// each page as it comes. Then lifts the bans recorded as in the set
    /// before the first page was asked for that no page held, unless the
    /// pages may have left some out.
    ///
    /// A change made while the pages are read reaches the guard whatever
    /// page it falls in: the subscriber listens already, and applies the
    /// change's message once the load is done. A ban lifted, or added
    /// again with a new end, between pages may be missing from them: it
    /// is lifted here (when recorded before), then its message is applied.
    async fn load_bans(
        &self,
        con: &mut redis::aio::MultiplexedConnection,
        target: &GuardHandle,
    ) -> Result<(), String> {
        let asked = self.tracked.lock().changes;
        let mut in_set: ahash::HashSet<IpPrefix> = Default::default();
        // Every entry parsed, and the pages held the whole set.
        let (mut clean, mut whole) = (true, true);
        let (mut read, mut cursor) = (0usize, None::<(i64, Vec<u8>)>);
        loop {
            let count = LOAD_PAGE.min(self.max_bans - read);
            let at = cursor.as_ref().map(|(s, m)| (*s, m.as_slice()));
            let reply = read_page(&self.load_page, con, &self.bans_key, count, at).await?;
            bump(&self.counters.load_pages);
            let Some(page) = self.page(&reply) else {
                return Ok(());
            };
            let Some(target) = target.upgrade() else {
                return Ok(());
            };
            clean &= self.apply_bans(&*target, &page.entries, &mut in_set);
            drop(target);
            #[cfg(test)]
            if let Some(hook) = self.after_page.get() {
                hook(self.counters.load_pages.load(Ordering::Relaxed));
            }
            // A full page always holds `count` entries: `read` grows.
            read += page.entries.len();
            match page.next {
                None => break,
                // Cut at `max_bans`: the rest end sooner.
                Some(_) if read >= self.max_bans => {
                    whole = false;
                    break;
                }
                Some((score, member)) => cursor = Some((score, member.to_vec())),
            }
        }
        // A load cut at `max_bans` leaves bans out, and an entry that did
        // not parse may be any of them: absence proves a lift only in a
        // whole, clean set.
        if !(clean && whole) {
            return Ok(());
        }
        let Some(target) = target.upgrade() else {
            return Ok(());
        };
        self.tracked.lock().missing(&in_set, asked, |prefix| {
            // Lifting a ban that has ended here too is harmless, not counted.
            if target.apply_lift(prefix) {
                bump(&self.counters.reconciled_lifts);
                tracing::debug!(%prefix, "floodguard: shared ban lifted on reconnecting");
            }
        });
        Ok(())
    }

    /// Loads the bans and classes in force into `target`.
    async fn load(&self, target: &GuardHandle) -> Result<(), String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(LOAD_TIMEOUT));
        let mut con = self
            .store
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        self.load_bans(&mut con, target).await?;
        let reply = read_page(
            &self.load_page,
            &mut con,
            &self.classes_key,
            MAX_CLASSES,
            None,
        )
        .await?;
        let Some(target) = target.upgrade() else {
            return Ok(());
        };
        let entries = self.page(&reply).map(|p| p.entries);
        for entry in entries.into_iter().flatten() {
            match entry {
                Some((member, ms)) => match parse_hex16(member) {
                    Some(class) => {
                        target.apply_class(class, Duration::from_millis(ms));
                        bump(&self.counters.loaded);
                    }
                    None => self.reject("set member", member.as_bytes()),
                },
                None => self.reject("set member", b"(not a member and a time)"),
            }
        }
        Ok(())
    }
}

/// Why listening stopped.
enum Ended {
    /// The guard is gone.
    GuardDropped,
    /// The connection failed or went silent.
    Lost(String),
}

async fn subscribe_loop(core: Arc<Core>, target: GuardHandle) {
    let mut delay = MIN_RETRY;
    // Whether Redis was last reachable, so each change is logged once.
    let mut up: Option<bool> = None;
    let ns = core.store.namespace.clone();
    loop {
        if target.is_dropped() {
            return;
        }
        let error = match connect(&core, &target).await {
            Ok(pubsub) => {
                core.counters.subscribed.store(true, Ordering::Relaxed);
                if up != Some(true) {
                    tracing::info!(namespace = %ns, "floodguard: subscribed to shared bans");
                }
                up = Some(true);
                delay = MIN_RETRY;
                let ended = listen(&core, &target, pubsub).await;
                core.counters.subscribed.store(false, Ordering::Relaxed);
                match ended {
                    Ended::GuardDropped => return,
                    Ended::Lost(e) => e,
                }
            }
            Err(e) => e,
        };
        bump(&core.counters.errors);
        if up != Some(false) {
            tracing::warn!(
                namespace = %ns,
                error = %error,
                "floodguard: shared bans unreachable, retrying every second or so"
            );
        }
        up = Some(false);
        tokio::time::sleep(jittered(delay)).await;
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// Subscribes to both channels, then loads what is in force: a change made
/// in between arrives as a message, so none is missed.
async fn connect(core: &Core, target: &GuardHandle) -> Result<redis::aio::PubSub, String> {
    let subscribe = async {
        let mut pubsub = core.store.client.get_async_pubsub().await?;
        pubsub
            .subscribe(&[&core.bans_key, &core.classes_key])
            .await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, subscribe)
        .await
        .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    core.load(target).await?;
    Ok(pubsub)
}

/// Applies messages until the connection ends or the guard is dropped.
async fn listen(core: &Core, target: &GuardHandle, pubsub: redis::aio::PubSub) -> Ended {
    use futures_core::Stream;
    use std::pin::Pin;
    let (mut sink, mut stream) = pubsub.split();
    let mut quiet = Duration::ZERO;
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx));
        match tokio::time::timeout(IDLE_CHECK, next).await {
            Ok(Some(msg)) => {
                quiet = Duration::ZERO;
                let Some(target) = target.upgrade() else {
                    return Ended::GuardDropped;
                };
                core.on_message(&*target, msg.get_channel_name(), msg.get_payload_bytes());
            }
            Ok(None) => return Ended::Lost("connection closed".into()),
            Err(_) => {
                if target.is_dropped() {
                    return Ended::GuardDropped;
                }
                quiet += IDLE_CHECK;
                if quiet >= PING_EVERY {
                    quiet = Duration::ZERO;
                    match tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ended::Lost(e.to_string()),
                        Err(_) => return Ended::Lost("no answer to a ping".into()),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_message_verifies_only_unchanged_and_under_its_key() {
        let key = (1, 2);
        let change = Change::Ban {
            prefix: prefix("198.51.100.7/32"),
            ttl_ms: 60_000,
        };
        let text = sign(key, encode(7, &change));
        assert!(text.len() <= MAX_MESSAGE + 33, "{text}");
        let message = verify(key, text.as_bytes()).unwrap();
        assert_eq!(decode(message), Some((7, change)));
        assert_eq!(verify((1, 3), text.as_bytes()), None, "another key");
        let tampered = text.replace("198.51.100.7/32", "198.51.100.8/32");
        assert_eq!(verify(key, tampered.as_bytes()), None);
        assert_eq!(verify(key, encode(7, &change).as_bytes()), None, "unsigned");
        for bad in [&b""[..], b" ", &[0xff; 40], &[b'a'; 400]] {
            assert_eq!(verify(key, bad), None);
        }
    }

    #[test]
    fn retries_are_spread_over_half_to_one_and_a_half_times() {
        let d = Duration::from_millis(400);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(d)).collect();
        assert!(
            waits.iter().all(|w| *w >= d / 2 && *w < d * 3 / 2),
            "{waits:?}"
        );
        let early = waits.iter().filter(|w| **w < d).count();
        // Both halves are used: no lockstep.
        assert!((40..160).contains(&early), "{early} of 200 below the delay");
    }

    fn prefix(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn a_reload_lifts_only_written_bans_it_had_before_asking() {
        let (now, max) = (Timestamp::from_nanos(1), 8);
        let end = now.saturating_add(Duration::from_secs(60));
        let mut t = Tracked::default();
        // Learned from Redis, and one of this guard's own, written.
        t.in_set_until(prefix("192.0.2.1/32"), end, now, max);
        t.queued(prefix("192.0.2.2/32"));
        t.settled(prefix("192.0.2.2/32"), Some(end), now, max);
        // Two of its own bans of one prefix queued, one written so far.
        t.queued(prefix("192.0.2.3/32"));
        t.queued(prefix("192.0.2.3/32"));
        t.settled(prefix("192.0.2.3/32"), Some(end), now, max);
        // Its own, dropped from a full queue: never written.
        t.queued(prefix("192.0.2.4/32"));
        t.settled(prefix("192.0.2.4/32"), None, now, max);
        let asked = t.changes;
        // Recorded while the reply was on its way.
        t.in_set_until(prefix("192.0.2.5/32"), end, now, max);

        let mut lifted = Vec::new();
        let empty = ahash::HashSet::default();
        t.missing(&empty, asked, |p| lifted.push(*p));
        lifted.sort_by_key(ToString::to_string);
        assert_eq!(lifted, [prefix("192.0.2.1/32"), prefix("192.0.2.2/32")]);
        assert!(t.in_set.contains_key(&prefix("192.0.2.5/32")));
        // The second write of .3 settles it: a later reload may lift it.
        t.settled(prefix("192.0.2.3/32"), Some(end), now, max);
        assert!(t.unpublished.is_empty());
        let mut lifted = Vec::new();
        t.missing(&empty, t.changes, |p| lifted.push(*p));
        lifted.sort_by_key(ToString::to_string);
        assert_eq!(lifted, [prefix("192.0.2.3/32"), prefix("192.0.2.5/32")]);
    }

    #[test]
    fn messages_round_trip() {
        let sender = 0x0123_4567_89ab_cdef;
        for change in [
            Change::Ban {
                prefix: prefix("192.0.2.7/32"),
                ttl_ms: 60_000,
            },
            Change::Ban {
                prefix: prefix("2001:db8:1:2::/64"),
                ttl_ms: 1,
            },
            Change::Lift {
                prefix: prefix("198.51.100.0/24"),
            },
            Change::Class {
                class: u64::MAX,
                ttl_ms: MAX_TTL_MS,
            },
        ] {
            let text = encode(sender, &change);
            assert!(text.len() <= MAX_MESSAGE, "{text}");
            assert_eq!(decode(text.as_bytes()), Some((sender, change)), "{text}");
        }
        assert_eq!(
            encode(
                sender,
                &Change::Lift {
                    prefix: prefix("192.0.2.7")
                }
            ),
            "1 lift 0123456789abcdef 192.0.2.7/32"
        );
    }

    #[test]
    fn bad_messages_are_refused() {
        let s = "0123456789abcdef";
        for bad in [
            String::new(),
            "1".into(),
            format!("2 ban {s} 192.0.2.7/32 1000"),
            format!("1 ban {s} 192.0.2.7/32"),
            format!("1 ban {s} 192.0.2.7/32 1000 extra"),
            format!("1 ban {s} 192.0.2.7/32  1000"),
            format!("1 ban {s} 192.0.2.7/32 1000 "),
            format!("1 ban {s} 192.0.2.7 1000"),
            format!("1 ban {s} 192.0.2.7/24 1000"),
            format!("1 ban {s} 0.0.0.0/0 1000"),
            format!("1 ban {s} 10.0.0.0/7 1000"),
            format!("1 ban {s} ::/0 1000"),
            format!("1 ban {s} ::ffff:192.0.2.7/128 1000"),
            format!("1 ban {s} 192.0.2.7/33 1000"),
            format!("1 ban {s} 192.0.2.7/32 0"),
            format!("1 ban {s} 192.0.2.7/32 -5"),
            format!("1 ban {s} 192.0.2.7/32 +5"),
            format!("1 ban {s} 192.0.2.7/32 1e3"),
            format!("1 ban {s} 192.0.2.7/32 {}", MAX_TTL_MS + 1),
            format!("1 ban {s} 192.0.2.7/32 99999999999999999999999"),
            "1 ban 0123456789ABCDEF 192.0.2.7/32 1000".into(),
            "1 ban 123456789abcdef 192.0.2.7/32 1000".into(),
            "1 ban +123456789abcdef 192.0.2.7/32 1000".into(),
            format!("1 unban {s} 192.0.2.7/32"),
            format!("1 lift {s} 192.0.2.7/32 1000"),
            format!("1 class {s} 12 1000"),
            format!("1 class {s} {s}"),
            format!("1 BAN {s} 192.0.2.7/32 1000"),
            format!("1\tban {s} 192.0.2.7/32 1000"),
            format!("1 ban {s} 192.0.2.7/32 1000{}", " ".repeat(MAX_MESSAGE)),
        ] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(decode(&[0xff, 0xfe, b' ']), None);
    }

    #[test]
    fn stored_entries_are_parsed_strictly() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let page = |head: [Value; 3], entries: &[Value]| {
            let mut items = head.to_vec();
            items.extend_from_slice(entries);
            Value::Array(items)
        };
        let last = [Value::Int(0), Value::Int(0), bulk("")];
        let entries = [
            bulk("192.0.2.7/32"),
            Value::Int(1_500),
            bulk("192.0.2.8/32"),
            Value::Int(0),
            Value::Int(5),
            bulk("x"),
            bulk("192.0.2.9/32"),
            Value::Int(i64::MAX),
        ];
        let reply = page(last.clone(), &entries);
        let p = decode_page(&reply).unwrap();
        assert_eq!(p.entries, [Some(("192.0.2.7/32", 1_500)), None, None, None]);
        assert_eq!(p.next, None);
        let more = [Value::Int(1), Value::Int(1_700_000_000_000), bulk("x")];
        let reply = page(more, &entries[..2]);
        let p = decode_page(&reply).unwrap();
        assert_eq!(p.next, Some((1_700_000_000_000, &b"x"[..])));
        assert_eq!(p.entries, [Some(("192.0.2.7/32", 1_500))]);
        for bad in [
            page(last.clone(), &[bulk("a")]),
            page([Value::Int(2), Value::Int(0), bulk("")], &[]),
            page([Value::Int(1), bulk("1"), bulk("")], &[]),
            page([Value::Int(1), Value::Int(1), Value::Int(1)], &[]),
            Value::Array(vec![Value::Int(0), Value::Int(0)]),
            Value::Int(3),
        ] {
            assert!(decode_page(&bad).is_none(), "{bad:?}");
        }
        let empty = page(last, &[]);
        let p = decode_page(&empty).unwrap();
        assert_eq!((p.entries.len(), p.next), (0, None));
    }

    /// Against a real redis-server: the paged load.
    mod paged {
        use super::*;
        use crate::redis::RedisStore;
        use crate::redis::redis_server::RedisServer;
        use std::collections::HashMap;
        use std::sync::Weak;

        /// A guard's bans, as the subscriber sees them.
        #[derive(Default)]
        struct Bans(Mutex<HashMap<IpPrefix, Duration>>);

        impl BanTarget for Bans {
            fn apply_ban(&self, prefix: IpPrefix, remaining: Duration, extend_only: bool) -> bool {
                let mut bans = self.0.lock();
                let ban = bans.entry(prefix).or_insert(remaining);
                if !extend_only || remaining > *ban {
                    *ban = remaining;
                }
                true
            }

            fn apply_lift(&self, prefix: &IpPrefix) -> bool {
                self.0.lock().remove(prefix).is_some()
            }

            fn apply_class(&self, _: u64, _: Duration) -> bool {
                false
            }
        }

        const KEY: &str = "shop:{bans}";
        /// Another guard's id in messages.
        const OTHER: u64 = 0xaa;

        /// The `i`th of the test's bans.
        fn member(i: u32) -> String {
            let [_, a, b, c] = i.to_be_bytes();
            format!("10.{a}.{b}.{c}/32")
        }

        /// The server's clock in ms.
        fn server_now(con: &mut redis::Connection) -> u64 {
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
            secs * 1_000 + micros / 1_000
        }

        /// Adds `(score, member)` pairs to the set as they are.
        fn zadd(con: &mut redis::Connection, entries: &[(u64, String)]) {
            for chunk in entries.chunks(500) {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(KEY);
                for (score, member) in chunk {
                    cmd.arg(*score).arg(member);
                }
                let _: i64 = cmd.query(con).unwrap();
            }
        }

        /// The member at `rank` (those ending last first).
        fn at_rank(con: &mut redis::Connection, rank: usize) -> String {
            let r: Vec<String> = redis::cmd("ZREVRANGE")
                .arg(KEY)
                .arg(rank)
                .arg(rank)
                .query(con)
                .unwrap();
            r[0].clone()
        }

        /// What another guard does: writes (or lifts) and publishes.
        fn record(con: &mut redis::Connection, change: Change) {
            let message = encode(OTHER, &change);
            let _: i64 = match change {
                Change::Ban { prefix, ttl_ms } => redis::Script::new(RECORD_SCRIPT)
                    .key(KEY)
                    .arg(prefix.to_string())
                    .arg(ttl_ms)
                    .arg(100_000)
                    .arg(KEY)
                    .arg(message)
                    .invoke(con)
                    .unwrap(),
                Change::Lift { prefix } => redis::Script::new(LIFT_SCRIPT)
                    .key(KEY)
                    .arg(prefix.to_string())
                    .arg(KEY)
                    .arg(message)
                    .invoke(con)
                    .unwrap(),
                Change::Class { .. } => unreachable!(),
            };
        }

        /// 2,500 bans, ending in groups of five together, load in three
        /// pages; between the first two, another guard lifts the first
        /// page's last ban (the cursor), bans one address for longer than
        /// all (behind the cursor) and one for less (ahead of it), and
        /// bans ahead of the cursor end or are removed. Nothing is lost,
        /// and nothing ended is applied.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_load_in_pages_misses_no_change_made_between_pages() {
            let server = RedisServer::start();
            let client = redis::Client::open(server.url()).unwrap();
            let mut con = client.get_connection().unwrap();
            let now = server_now(&mut con);
            let bans: Vec<(u64, String)> = (0..2_500u32)
                .map(|i| (now + 600_000 - u64::from(i / 5) * 10, member(i)))
                .collect();
            zadd(&mut con, &bans);

            let store = RedisStore::builder(server.url())
                .namespace("shop")
                .build()
                .unwrap();
            let (sink, starter) = Setup::new(&store).open(100_000).unwrap();
            let cursor = prefix(&at_rank(&mut con, LOAD_PAGE - 1));
            let removed = prefix(&at_rank(&mut con, 2_200));
            let url = server.url();
            let hook = move |pages: u64| {
                if pages != 1 {
                    return;
                }
                let mut con = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                record(&mut con, Change::Lift { prefix: cursor });
                for (net, ttl_ms) in [("192.0.2.1/32", 3_600_000), ("192.0.2.2/32", 30_000)] {
                    let prefix = prefix(net);
                    record(&mut con, Change::Ban { prefix, ttl_ms });
                }
                let _: i64 = redis::cmd("ZREM")
                    .arg(KEY)
                    .arg(removed.to_string())
                    .query(&mut con)
                    .unwrap();
                // Ended ones, after the recording dropped those it found.
                let now = server_now(&mut con);
                let ended: Vec<(u64, String)> = (0..20)
                    .map(|i| (now - 1_000 - i, format!("10.99.0.{i}/32")))
                    .collect();
                zadd(&mut con, &ended);
            };
            assert!(starter.core.after_page.set(Box::new(hook)).is_ok());
            let target: Arc<Bans> = Arc::default();
            let weak: Weak<dyn BanTarget> = Arc::downgrade(&target) as Weak<dyn BanTarget>;
            starter.start(GuardHandle::new(weak), Duration::from_secs(60));

            let start = std::time::Instant::now();
            while sink.stats().received < 3 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{:?}",
                    sink.stats()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let s = sink.stats();
            assert_eq!(
                (s.load_pages, s.loaded, s.received, s.rejected),
                (3, 2_500, 3, 0),
                "{s:?}"
            );
            assert_eq!(s.reconciled_lifts, 0);
            let held = target.0.lock().clone();
            let mut want: Vec<IpPrefix> = bans.iter().map(|(_, m)| prefix(m)).collect();
            want.retain(|p| *p != cursor && *p != removed);
            want.extend([prefix("192.0.2.1/32"), prefix("192.0.2.2/32")]);
            let mut got: Vec<IpPrefix> = held.keys().copied().collect();
            got.sort_by_key(ToString::to_string);
            want.sort_by_key(ToString::to_string);
            assert_eq!(got.len(), 2_500);
            assert_eq!(got, want);
            assert!(held[&prefix("192.0.2.1/32")] > Duration::from_secs(3_500));
        }

        /// The pages of a set whose members mostly end together, read 3 at
        /// a time while each page's last member is removed or ends anew
        /// before the next is asked for: together they are the whole set,
        /// in order, each member once.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn pages_resume_after_their_cursor_even_when_it_is_gone() {
            let server = RedisServer::start();
            let client = redis::Client::open(server.url()).unwrap();
            let mut sync = client.get_connection().unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let now = server_now(&mut sync);
            // Four groups of ten ending together, and names that sort
            // differently as bytes and as numbers (10.0.0.10 < 10.0.0.9).
            let entries: Vec<(u64, String)> = (0..40u32)
                .map(|i| (now + 60_000 + u64::from(i % 4) * 1_000, member(i)))
                .collect();
            zadd(&mut sync, &entries);
            let order: Vec<String> = redis::cmd("ZREVRANGE")
                .arg(KEY)
                .arg(0)
                .arg(-1)
                .query(&mut sync)
                .unwrap();
            let script = redis::Script::new(LOAD_PAGE_SCRIPT);
            let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<(i64, Vec<u8>)>, 0);
            loop {
                let at = cursor.as_ref().map(|(s, m)| (*s, m.as_slice()));
                let reply = read_page(&script, &mut con, KEY, 3, at).await.unwrap();
                let page = decode_page(&reply).unwrap();
                pages += 1;
                seen.extend(page.entries.iter().map(|e| e.unwrap().0.to_owned()));
                let Some((score, member)) = page.next else {
                    break;
                };
                assert_eq!(member, seen.last().unwrap().as_bytes());
                // Gone, or ending later (behind the cursor), in turn.
                let mut cmd = if pages % 2 == 0 {
                    redis::cmd("ZREM")
                } else {
                    let mut c = redis::cmd("ZADD");
                    c.arg(KEY).arg(now + 120_000);
                    c
                };
                if pages % 2 == 0 {
                    cmd.arg(KEY);
                }
                let _: i64 = cmd.arg(member).query(&mut sync).unwrap();
                cursor = Some((score, member.to_vec()));
                assert!(pages < 20);
            }
            assert_eq!(seen, order);
            assert_eq!(pages, 14);
        }
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(7)), 7);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX);
    }
}
