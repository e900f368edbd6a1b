//! What a guard's two tasks share ([`Core`]), and the tasks: the
//! publisher, which writes the queued changes to Redis, and the
//! subscriber, which (re)connects, reloads the sets and applies the other
//! instances' messages; both retry with backoff while Redis is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::Value;
use tokio::sync::mpsc;

use super::format::{Change, MAX_MESSAGE, MAX_TTL_MS, decode, encode, sign, verify};
use super::scripts::{LIFT_SCRIPT, LOAD_PAGE_SCRIPT, RECORD_SCRIPT};
use super::tracked::Tracked;
use crate::http::{BanTarget, GuardHandle};
use crate::redis::store::{Failure, StoreInner};
use crate::{IpPrefix, Timestamp};

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
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A silent pub/sub connection is pinged this often, to notice one that is
/// gone without a word (a network partition).
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long the subscriber waits for a message before checking that its
/// guard still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Flags held at once: the detector's `MAX_FLAGGED`.
pub(super) const MAX_CLASSES: usize = 16;

/// What [`SharedBanStats`](crate::http::SharedBanStats) reports.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) published: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) loaded: AtomicU64,
    pub(super) load_pages: AtomicU64,
    pub(super) reconciled_lifts: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) subscribed: AtomicBool,
}

/// Adds one to `c`; the new count.
pub(super) fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

/// A change for the publisher. `at` is when it was made, on the store's
/// clock: a change published late has that much less time left.
#[derive(Debug)]
pub(super) enum Outgoing {
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

/// What one guard's tasks share with it.
pub(super) struct Core {
    pub(super) store: Arc<StoreInner>,
    /// This guard's id in messages.
    sender: u64,
    /// `<ns>:{bans}`: the sorted set of bans and their channel.
    pub(super) bans_key: String,
    /// `<ns>:{classes}`: the same for flagged classes.
    pub(super) classes_key: String,
    pub(super) max_bans: usize,
    record: redis::Script,
    lift: redis::Script,
    pub(super) load_page: redis::Script,
    /// Called with the number of pages read so far after each page of a
    /// load is applied, for tests to change the set between pages.
    #[cfg(test)]
    pub(super) after_page: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    pub(super) counters: Counters,
    /// Which bans a reload may lift.
    pub(super) tracked: Mutex<Tracked>,
}

/// Milliseconds in `d`, rounded up.
fn millis_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Publishes the queued changes, each until it is written or has
/// expired, until the guard is dropped.
pub(super) async fn publish_loop(
    core: Arc<Core>,
    mut rx: mpsc::Receiver<Outgoing>,
    class_ttl: Duration,
) {
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
    /// The state of a guard holding at most `max_bans`, which signs its
    /// messages as `sender`.
    pub(super) fn new(store: Arc<StoreInner>, sender: u64, max_bans: usize) -> Self {
        let ns = &store.namespace;
        Core {
            sender,
            bans_key: format!("{ns}:{{bans}}"),
            classes_key: format!("{ns}:{{classes}}"),
            store,
            max_bans,
            record: redis::Script::new(RECORD_SCRIPT),
            lift: redis::Script::new(LIFT_SCRIPT),
            load_page: redis::Script::new(LOAD_PAGE_SCRIPT),
            #[cfg(test)]
            after_page: std::sync::OnceLock::new(),
            counters: Counters::default(),
            tracked: Mutex::new(Tracked::default()),
        }
    }

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
    pub(super) fn reject(&self, what: &str, raw: &[u8]) {
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
                self.tracked.lock().forget(&prefix);
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
    /// [`claim`](crate::http::FleetLink::claim) comes wholly before or after.
    pub(super) fn learn(&self, prefix: IpPrefix, ttl_ms: u64, apply: impl FnOnce() -> bool) {
        let mut tracked = self.tracked.lock();
        if !apply() {
            return;
        }
        let now = self.store.now();
        let until = now.saturating_add(Duration::from_millis(ttl_ms));
        tracked.in_set_until(prefix, until, now, self.max_bans);
    }
}

/// Why listening stopped.
enum Ended {
    /// The guard is gone.
    GuardDropped,
    /// The connection failed or went silent.
    Lost(String),
}

/// Connects, subscribes and reloads, then applies messages; again after
/// each lost connection, until the guard is dropped.
pub(super) async fn subscribe_loop(core: Arc<Core>, target: GuardHandle) {
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

    #[test]
    fn millis_round_up() {
        assert_eq!(millis_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(7)), 7);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX);
    }
}
