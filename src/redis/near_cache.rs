//! The near-cache: decide locally from what Redis said at the last sync,
//! push what was admitted in batches.
//!
//! Each key holds a *budget*: this instance's share of the room Redis
//! reported for it at the last sync, `⌈room / instances⌉` capped at
//! `sync_after`. A check spends it without a round trip; what was spent is
//! pushed every `sync_every`, or at once when the budget runs out, and the
//! answer sets the next budget. A key Redis reported over its limit is
//! refused locally until its retry-after has passed. The accuracy bound
//! this gives is in the [module docs](super#near-cache-accuracy).
//!
//! A key's local state is one word in the same lock-free [`AtomicTable`]
//! the local limiters use, so a check costs about what a local check does.
//! Only the list of keys to push takes a lock, once per key per sync.

use crate::algo::Op;
use crate::decision::Decision;
use crate::table::Transition;
use crate::{AtomicTable, Store, Timestamp};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::script::Reply;

/// Largest `sync_after` of [`Mode::NearCache`](super::Mode::NearCache): a
/// key's share is kept in 16 bits.
pub const MAX_SYNC_AFTER: u64 = u16::MAX as u64;

/// The word: `[budget: 16][unused: 16][pending + 2^23: 24][unused: 5][flags: 3]`;
/// while blocked, the top 32 bits and 4 of the 5 below the pending field
/// hold until when instead of the budget (the low and high bits of a 36-bit
/// ms time on the store's clock; the fifth stays clear, so no word is the
/// table's reserved all-ones word), so a key over its limit is refused
/// without a lock or a second lookup.
const DIRTY: u64 = 1;
const IN_FLIGHT: u64 = 2;
const BLOCKED: u64 = 4;
const PENDING_SHIFT: u32 = 8;
const PENDING_BIAS: i64 = 1 << 23;
const PENDING_MAX: i64 = PENDING_BIAS - 1;
/// The pending field's mask (and largest value).
const PENDING_FIELD: u64 = (1 << 24) - 1;
const BUDGET_SHIFT: u32 = 48;
const UNTIL_SHIFT: u32 = 32;
/// Where bits 32 to 35 of the hold's end go while blocked.
const UNTIL_HIGH_SHIFT: u32 = 3;
/// A hold's end is kept modulo 2^36 ms (2.18 years).
const UNTIL_MASK: u64 = (1 << 36) - 1;
const NANOS_PER_MS: u64 = 1_000_000;

/// One key's local view, unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Entry {
    /// Units this instance may still admit before hearing from Redis.
    pub(super) budget: u64,
    /// Admitted (minus given back) here and not pushed yet.
    pub(super) pending: i64,
    /// Listed for the next push.
    pub(super) dirty: bool,
    /// Pushed, answer not back yet.
    pub(super) in_flight: bool,
    /// Redis said the key is over its limit...
    pub(super) blocked: bool,
    /// ...until then: ms on the store's clock, modulo 2^36 (a hold is cut
    /// at [`MAX_HOLD_MS`], so the wrapping difference from now tells which
    /// side of it now is, at any process age, for a key checked within
    /// 2^36 − 2^31 ms, 2.11 years, of its hold's end; one left untouched
    /// longer may be refused again, for at most [`MAX_HOLD_MS`]). The
    /// budget is 0 meanwhile.
    pub(super) until_ms: u64,
}

/// Longest hold a key over its limit is refused for locally before asking
/// Redis again: 2^31 − 1 ms (24.8 days).
const MAX_HOLD_MS: u64 = (1 << 31) - 1;

/// Milliseconds from `now` (ns) until the hold ending at `until_ms` (mod
/// 2^36) is over; 0 once it is.
#[inline(always)]
fn hold_left_ms(until_ms: u64, now: u64) -> u32 {
    let left = until_ms.wrapping_sub(now / NANOS_PER_MS) & UNTIL_MASK;
    if left <= MAX_HOLD_MS { left as u32 } else { 0 }
}

/// The hold's end (mod 2^36 ms) of a blocked word.
#[inline(always)]
fn until_of(word: u64) -> u64 {
    (word >> UNTIL_SHIFT) | ((word >> UNTIL_HIGH_SHIFT) & 15) << 32
}

impl Entry {
    pub(super) fn pack(self) -> u64 {
        let pending = (self.pending.clamp(-PENDING_BIAS, PENDING_MAX) + PENDING_BIAS) as u64;
        let flag = |on: bool, bit: u64| if on { bit } else { 0 };
        let top = if self.blocked {
            let until = self.until_ms & UNTIL_MASK;
            (until << UNTIL_SHIFT) | (until >> 32) << UNTIL_HIGH_SHIFT
        } else {
            self.budget.min(MAX_SYNC_AFTER) << BUDGET_SHIFT
        };
        top | (pending << PENDING_SHIFT)
            | flag(self.dirty, DIRTY)
            | flag(self.in_flight, IN_FLIGHT)
            | flag(self.blocked, BLOCKED)
    }

    pub(super) fn unpack(word: u64) -> Self {
        let blocked = word & BLOCKED != 0;
        Entry {
            budget: if blocked { 0 } else { word >> BUDGET_SHIFT },
            pending: ((word >> PENDING_SHIFT) & PENDING_FIELD) as i64 - PENDING_BIAS,
            dirty: word & DIRTY != 0,
            in_flight: word & IN_FLIGHT != 0,
            blocked,
            until_ms: if blocked { until_of(word) } else { 0 },
        }
    }

    fn add_pending(&mut self, units: i64) {
        self.pending = self
            .pending
            .saturating_add(units)
            .clamp(-PENDING_BIAS, PENDING_MAX);
    }
}

/// What a step did, for the caller to finish outside the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allowed {
        budget: u64,
    },
    /// Out of this instance's share.
    Spent {
        budget: u64,
    },
    /// Over the limit in Redis for this many more milliseconds, counted
    /// from the whole millisecond `now` falls in.
    Blocked {
        left_ms: u32,
    },
    /// The cost exceeds the limit.
    Never {
        budget: u64,
    },
}

/// A [`Verdict`] and whether the key was just listed for the next push,
/// packed in one word: `[value: 32][unused: 29][listed: 1][kind: 2]`
/// (budgets fit in 16 bits and the word keeps times in 32, so no value is
/// cut). One word comes back from the
/// table's out-of-line path in a register, where a struct went through
/// memory on every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Out(u64);

impl Out {
    const LISTED: u64 = 4;

    #[inline(always)]
    fn new(verdict: Verdict, listed: bool) -> Self {
        let (kind, value) = match verdict {
            Verdict::Allowed { budget } => (0, budget),
            Verdict::Spent { budget } => (1, budget),
            Verdict::Blocked { left_ms } => (2, u64::from(left_ms)),
            Verdict::Never { budget } => (3, budget),
        };
        debug_assert!(value <= u64::from(u32::MAX), "{verdict:?}");
        Out(value << 32 | if listed { Self::LISTED } else { 0 } | kind)
    }

    #[inline(always)]
    fn verdict(self) -> Verdict {
        let value = self.0 >> 32;
        match self.0 & 3 {
            0 => Verdict::Allowed { budget: value },
            1 => Verdict::Spent { budget: value },
            2 => Verdict::Blocked {
                left_ms: value as u32,
            },
            _ => Verdict::Never { budget: value },
        }
    }

    /// The key just became dirty: list it for the next push.
    #[inline(always)]
    fn listed(self) -> bool {
        self.0 & Self::LISTED != 0
    }
}

/// Decides one operation on a key's word.
#[derive(Clone, Copy)]
struct CheckStep<'a> {
    op: Op,
    /// The limit and `sync_after`, read only off the fast path: a key
    /// without an entry gets its assumed share of the whole limit (worked
    /// out only then: it costs a division and a load).
    cache: &'a NearCache,
    instances: &'a AtomicU64,
}

impl Transition for CheckStep<'_> {
    type Output = Out;

    #[inline(always)]
    fn step(&self, state: Option<u64>, now: u64) -> (Out, Option<u64>) {
        // The common cases on the word itself: a key Redis said is over its
        // limit (a flood's every request; nothing changes, whatever the
        // operation), and an admission within budget.
        if let Some(word) = state {
            if word & BLOCKED != 0 {
                let left_ms = hold_left_ms(until_of(word), now);
                if left_ms > 0 {
                    return (Out::new(Verdict::Blocked { left_ms }, false), None);
                }
            }
        }
        if let (Some(word), Op::Check(cost)) = (state, self.op) {
            let budget = word >> BUDGET_SHIFT;
            let pending = (word >> PENDING_SHIFT) & PENDING_FIELD;
            if word & BLOCKED == 0 && cost <= budget && pending + cost <= PENDING_FIELD {
                let new = (word - (cost << BUDGET_SHIFT) + (cost << PENDING_SHIFT)) | DIRTY;
                let out = Out::new(
                    Verdict::Allowed {
                        budget: budget - cost,
                    },
                    word & DIRTY == 0,
                );
                return (out, Some(new));
            }
        }
        let mut e = state.map_or_else(
            || Entry {
                budget: share(
                    self.cache.limit,
                    self.instances.load(Ordering::Relaxed),
                    self.cache.sync_after,
                ),
                ..Entry::default()
            },
            Entry::unpack,
        );
        let was_dirty = e.dirty;
        let out = |verdict, e: &Entry| Out::new(verdict, e.dirty && !was_dirty);
        let mut changed = false;
        if e.blocked {
            // Its hold is over (checked above). Redis's retry-after promised
            // room for one unit by now: take it, and ask for the real figure.
            e.blocked = false;
            e.until_ms = 0;
            e.budget = 1;
            e.dirty = true;
            changed = true;
        }
        match self.op {
            Op::Check(cost) | Op::Peek(cost) if cost > self.cache.limit => (
                out(Verdict::Never { budget: e.budget }, &e),
                changed.then(|| e.pack()),
            ),
            Op::Check(cost) if cost <= e.budget => {
                e.budget -= cost;
                e.add_pending(i64::try_from(cost).unwrap_or(i64::MAX));
                e.dirty = true;
                (
                    out(Verdict::Allowed { budget: e.budget }, &e),
                    Some(e.pack()),
                )
            }
            Op::Check(_) => {
                // Listed so that the next push refreshes the budget; a key
                // already listed is left alone (refusals write nothing).
                let write = changed || !e.dirty;
                e.dirty = true;
                let out = out(Verdict::Spent { budget: e.budget }, &e);
                (out, write.then(|| e.pack()))
            }
            Op::Peek(cost) if cost <= e.budget => (
                out(Verdict::Allowed { budget: e.budget }, &e),
                changed.then(|| e.pack()),
            ),
            Op::Peek(_) => (
                out(Verdict::Spent { budget: e.budget }, &e),
                changed.then(|| e.pack()),
            ),
            Op::Refund(cost) => {
                // Never past the limit: the fast path admits any cost
                // within the budget without looking at the limit.
                e.budget = e
                    .budget
                    .saturating_add(cost)
                    .min(MAX_SYNC_AFTER)
                    .min(self.cache.limit);
                e.add_pending(-i64::try_from(cost).unwrap_or(i64::MAX));
                e.dirty = true;
                let v = Verdict::Allowed { budget: e.budget };
                (out(v, &e), state.map(|_| e.pack()))
            }
        }
    }

    fn inserts(&self) -> bool {
        matches!(self.op, Op::Check(_))
    }

    fn heat(&self, state: u64, _: u64) -> u64 {
        heat(state)
    }
}

/// This instance's share of `room`: a fair part of it, and never more than
/// `sync_after`, so that what other instances spend unseen between two
/// syncs stays small.
fn share(room: u64, instances: u64, sync_after: u64) -> u64 {
    room.div_ceil(instances.max(1)).min(sync_after)
}

/// Entries with counts to push are kept over all others; then blocked ones
/// (they save round trips); a clean entry only saves a fresh budget.
fn heat(state: u64) -> u64 {
    let e = Entry::unpack(state);
    if e.dirty || e.in_flight || e.pending != 0 {
        u64::MAX / 2
    } else if e.blocked {
        u64::MAX / 4
    } else {
        1
    }
}

/// Any other change to an existing entry.
#[derive(Clone, Copy)]
struct Update<F>(F);

impl<F: Fn(Entry) -> (Entry, i64) + Copy> Transition for Update<F> {
    /// `None` when the key has no entry; else whether it was just listed,
    /// and what the update returned.
    type Output = Option<(bool, i64)>;

    fn step(&self, state: Option<u64>, _: u64) -> (Self::Output, Option<u64>) {
        let Some(word) = state else {
            return (None, None);
        };
        let before = Entry::unpack(word);
        let (after, value) = (self.0)(before);
        (
            Some((after.dirty && !before.dirty, value)),
            Some(after.pack()),
        )
    }

    fn inserts(&self) -> bool {
        false
    }

    fn heat(&self, state: u64, _: u64) -> u64 {
        heat(state)
    }
}

/// Counters of a near-cache.
#[derive(Default)]
pub(crate) struct NearCounters {
    pub(crate) budget_refusals: crate::stats::Striped<1>,
    pub(crate) rounds: AtomicU64,
    pub(crate) pushed_keys: AtomicU64,
    pub(crate) failed_rounds: AtomicU64,
}

/// The local state of a near-cached limiter.
pub(crate) struct NearCache {
    table: AtomicTable,
    /// Keys to push: `(table key, Redis key hash)`.
    listed: Mutex<Vec<(u64, u64)>>,
    limit: u64,
    sync_after: u64,
    sync_every: Duration,
    /// What an admission reports as its reset time: one full window (or
    /// GCRA's time to refill the burst), an upper bound.
    span: u64,
    pub(crate) counters: NearCounters,
}

impl NearCache {
    pub(crate) fn new(
        limit: u64,
        span: Duration,
        capacity: usize,
        sync_after: u64,
        sync_every: Duration,
    ) -> Result<Self, crate::ConfigError> {
        Ok(NearCache {
            table: AtomicTable::with_capacity(capacity)?,
            listed: Mutex::new(Vec::new()),
            limit,
            sync_after: sync_after.clamp(1, MAX_SYNC_AFTER),
            sync_every,
            span: crate::clock::duration_nanos(span),
            counters: NearCounters::default(),
        })
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.table.occupancy()
    }

    /// Keys it can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Live keys dropped to make room.
    pub(crate) fn evictions(&self) -> u64 {
        self.table.evictions()
    }

    /// Whether any key waits for a push.
    pub(crate) fn has_listed(&self) -> bool {
        !self.listed.lock().is_empty()
    }

    fn list(&self, key: u64, redis_key: impl FnOnce() -> u64) {
        self.listed.lock().push((key, redis_key()));
    }

    /// Decides `op` for `key` locally. `redis_key` gives the key's hash for
    /// Redis, computed only when the key is listed for a push; `nudge` asks
    /// for a sync now (a key ran out of budget). A callback, not a returned
    /// flag: a `(Decision, flag)` pair was copied twice on every check.
    #[inline(always)]
    pub(crate) fn apply(
        &self,
        key: u64,
        redis_key: impl FnOnce() -> u64,
        now: Timestamp,
        op: Op,
        instances: &AtomicU64,
        nudge: impl FnOnce(),
    ) -> Decision {
        let now = now.as_nanos();
        let step = CheckStep {
            op,
            cache: self,
            instances,
        };
        let out = self.table.run(key, now, step);
        if out.listed() {
            self.list(key, redis_key);
        }
        if let Verdict::Allowed { budget } = out.verdict() {
            if budget == 0 {
                nudge();
            }
            return Decision::allow(self.limit, budget, 1, self.span);
        }
        let (d, hurry) = self.refusal(out, op, now);
        if hurry {
            nudge();
        }
        d
    }

    /// A refusal's decision, and whether to sync now: out of line,
    /// admissions are the hot path.
    #[cold]
    #[inline(never)]
    fn refusal(&self, out: Out, op: Op, now: u64) -> (Decision, bool) {
        match out.verdict() {
            Verdict::Allowed { budget } => {
                (Decision::allow(self.limit, budget, 1, self.span), false)
            }
            Verdict::Spent { budget } => {
                if matches!(op, Op::Check(_)) {
                    self.counters.budget_refusals.add(0usize, 1);
                }
                let retry = crate::clock::duration_nanos(self.sync_every);
                let d = Decision::deny(self.limit, (budget, 1), self.span, retry);
                // One nudge when the key runs dry, not one per refusal.
                (d, out.listed())
            }
            Verdict::Never { budget } => {
                (Decision::never(self.limit, (budget, 1), self.span), false)
            }
            Verdict::Blocked { left_ms } => {
                // Saturating: at the end of time the hold ends there.
                let until = (now / NANOS_PER_MS + u64::from(left_ms)).saturating_mul(NANOS_PER_MS);
                let wait = until - now;
                (Decision::deny(self.limit, (0, 1), self.span, wait), false)
            }
        }
    }

    /// Takes what every listed key has to push: `(table key, Redis key,
    /// units)`.
    pub(crate) fn take_listed(&self, now: Timestamp) -> Vec<(u64, u64, i64)> {
        let listed = std::mem::take(&mut *self.listed.lock());
        let take = Update(|mut e: Entry| {
            let units = e.pending;
            e.pending = 0;
            e.dirty = false;
            e.in_flight = true;
            (e, units)
        });
        listed
            .into_iter()
            .filter_map(|(key, redis_key)| {
                let (_, units) = self.table.run(key, now.as_nanos(), take)?;
                Some((key, redis_key, units))
            })
            .collect()
    }

    /// Sets each pushed key's budget from Redis's answer.
    pub(crate) fn settle(
        &self,
        batch: &[(u64, u64, i64)],
        replies: &[Reply],
        now: Timestamp,
        instances: u64,
    ) {
        let now = now.as_nanos();
        for (&(key, _, _), r) in batch.iter().zip(replies) {
            // A push answers as a peek of one unit does: `remaining` is the
            // room left after that unit, which fits if `allowed`.
            // Never past the limit, whatever Redis says (see `Op::Refund`).
            let room = (r.remaining + u64::from(r.allowed)).min(self.limit);
            let share = share(room, instances, self.sync_after);
            let until_ms = (!r.allowed).then(|| {
                let retry = r.retry_after_us.unwrap_or(r.reset_after_us).max(1);
                let until = now
                    .saturating_add(retry.saturating_mul(1_000))
                    .div_ceil(NANOS_PER_MS);
                // Kept modulo 2^36: see `Entry::until_ms`.
                until.min(now / NANOS_PER_MS + MAX_HOLD_MS) & UNTIL_MASK
            });
            let settle = Update(move |mut e: Entry| {
                e.in_flight = false;
                // What was admitted since the push came out of the old
                // budget but is not in Redis's figure yet.
                e.budget = share.saturating_sub(e.pending.max(0).unsigned_abs());
                e.blocked = until_ms.is_some();
                e.until_ms = until_ms.unwrap_or(0);
                (e, 0)
            });
            self.table.run(key, now, settle);
        }
        self.counters
            .pushed_keys
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }

    /// Puts back what a failed push carried, to go with the next one.
    pub(crate) fn restore(&self, batch: &[(u64, u64, i64)], now: Timestamp) {
        for &(key, redis_key, units) in batch {
            let restore = Update(move |mut e: Entry| {
                e.in_flight = false;
                e.add_pending(units);
                e.dirty = true;
                (e, 0)
            });
            if let Some((true, _)) = self.table.run(key, now.as_nanos(), restore) {
                self.list(key, || redis_key);
            }
        }
        self.counters.failed_rounds.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    fn reply(allowed: bool, remaining: u64, retry_ms: u64) -> Reply {
        Reply {
            allowed,
            remaining,
            reset_after_us: 60_000_000,
            retry_after_us: (!allowed).then_some(retry_ms * 1_000),
        }
    }

    fn cache(limit: u64, sync_after: u64) -> NearCache {
        NearCache::new(
            limit,
            Duration::from_secs(60),
            100,
            sync_after,
            Duration::from_millis(10),
        )
        .unwrap()
    }

    fn check(nc: &NearCache, key: u64, ms: u64, cost: u64, instances: u64) -> Decision {
        nc.apply(
            key,
            || key + 1000,
            at(ms),
            Op::Check(cost),
            &AtomicU64::new(instances),
            || {},
        )
    }

    #[test]
    fn a_verdict_round_trips_through_its_word() {
        for listed in [false, true] {
            for v in [
                Verdict::Allowed { budget: 0 },
                Verdict::Allowed {
                    budget: MAX_SYNC_AFTER,
                },
                Verdict::Spent { budget: 7 },
                Verdict::Blocked { left_ms: u32::MAX },
                Verdict::Never { budget: 1 },
            ] {
                let out = Out::new(v, listed);
                assert_eq!((out.verdict(), out.listed()), (v, listed));
            }
        }
    }

    #[test]
    fn the_word_round_trips() {
        for e in [
            Entry::default(),
            Entry {
                budget: 0,
                pending: 3,
                dirty: false,
                in_flight: false,
                blocked: true,
                until_ms: 123_456_789,
            },
            Entry {
                budget: MAX_SYNC_AFTER,
                pending: PENDING_MAX,
                dirty: true,
                in_flight: true,
                blocked: false,
                until_ms: 0,
            },
            // Blocked: the top half holds the time, the budget is 0.
            Entry {
                budget: 0,
                pending: -1,
                dirty: true,
                in_flight: true,
                blocked: true,
                until_ms: UNTIL_MASK,
            },
            // Every field full: still not the table's all-ones word.
            Entry {
                budget: 0,
                pending: PENDING_MAX,
                dirty: true,
                in_flight: true,
                blocked: true,
                until_ms: UNTIL_MASK,
            },
            Entry {
                budget: 7,
                pending: -PENDING_BIAS,
                dirty: false,
                in_flight: true,
                blocked: false,
                until_ms: 0,
            },
        ] {
            assert_eq!(Entry::unpack(e.pack()), e);
            assert_ne!(e.pack(), u64::MAX, "never the table's marker");
        }
    }

    #[test]
    fn a_fresh_key_gets_its_share_then_waits_for_a_sync() {
        let nc = cache(10, 4);
        // Three instances: a share of ⌈10/3⌉ = 4.
        for i in 0..3 {
            assert!(check(&nc, 7, 0, 1, 3).is_allowed(), "check {i}");
        }
        // The last unit of the share hurries the sync along, once.
        let nudges = std::cell::Cell::new(0);
        let d = nc.apply(
            7,
            || unreachable!(),
            at(0),
            Op::Check(1),
            &AtomicU64::new(3),
            || nudges.set(nudges.get() + 1),
        );
        assert!(d.is_allowed());
        assert_eq!(nudges.get(), 1);
        let d = nc.apply(
            7,
            || unreachable!(),
            at(1),
            Op::Check(1),
            &AtomicU64::new(3),
            || nudges.set(nudges.get() + 1),
        );
        assert!(d.is_denied());
        assert_eq!(nudges.get(), 1);
        assert_eq!(d.retry_after(), Some(Duration::from_millis(10)));
        assert_eq!(nc.counters.budget_refusals.sum(0usize), 1);
        // Listed once, with its Redis key; the push carries the 4.
        let batch = nc.take_listed(at(1));
        assert_eq!(batch, vec![(7, 1007, 4)]);
        assert!(nc.take_listed(at(1)).is_empty());
        // Redis says 6 left overall (5 after one more): a share of 2.
        nc.settle(&batch, &[reply(true, 5, 0)], at(2), 3);
        assert!(check(&nc, 7, 3, 2, 3).is_allowed());
        assert!(check(&nc, 7, 3, 1, 3).is_denied());
    }

    #[test]
    fn a_key_over_its_limit_is_refused_locally_until_its_retry_after() {
        let nc = cache(5, 100);
        check(&nc, 1, 0, 1, 1);
        let batch = nc.take_listed(at(0));
        nc.settle(&batch, &[reply(false, 0, 500)], at(1), 1);
        let d = check(&nc, 1, 100, 1, 1);
        assert!(d.is_denied());
        assert_eq!(d.retry_after(), Some(Duration::from_millis(401)));
        // After the retry-after one unit goes through, and a refresh is due.
        assert!(check(&nc, 1, 502, 1, 1).is_allowed());
        assert_eq!(nc.take_listed(at(502)), vec![(1, 1001, 1)]);
    }

    /// A hold is kept modulo 2^32 ms: it holds at any process age, past
    /// 2^32 ms (49.7 days, where it used to be cut to nothing and a key
    /// over its limit got a unit per sync round) and 2^40 ms.
    #[test]
    fn a_key_over_its_limit_stays_refused_at_any_process_age() {
        for start in [
            0,
            (1 << 32) - 300,
            1 << 32,
            (1 << 32) + 7,
            1 << 40,
            (1 << 40) + 12_345,
        ] {
            let nc = cache(5, 100);
            check(&nc, 1, start, 1, 1);
            let batch = nc.take_listed(at(start));
            nc.settle(&batch, &[reply(false, 0, 1_000)], at(start + 1), 1);
            let admitted = (0..1_000)
                .filter(|i| check(&nc, 1, start + 1 + i, 1, 1).is_allowed())
                .count();
            assert_eq!(admitted, 0, "at {start} ms");
            let d = check(&nc, 1, start + 500, 1, 1);
            assert_eq!(
                d.retry_after(),
                Some(Duration::from_millis(501)),
                "at {start} ms"
            );
            assert!(
                check(&nc, 1, start + 1_002, 1, 1).is_allowed(),
                "at {start} ms"
            );
        }
        // A hold past 2^31 ms is cut there, still a hold.
        let nc = cache(5, 100);
        check(&nc, 1, 0, 1, 1);
        let batch = nc.take_listed(at(0));
        nc.settle(&batch, &[reply(false, 0, u64::MAX / 1_000)], at(1), 1);
        assert!(check(&nc, 1, MAX_HOLD_MS, 1, 1).is_denied());
        assert!(check(&nc, 1, MAX_HOLD_MS + 2, 1, 1).is_allowed());
    }

    #[test]
    fn units_admitted_during_a_push_come_out_of_the_next_budget() {
        let nc = cache(100, 1000);
        check(&nc, 9, 0, 10, 1);
        let batch = nc.take_listed(at(0));
        // While the push is out, 5 more are admitted here.
        check(&nc, 9, 1, 5, 1);
        nc.settle(&batch, &[reply(true, 89, 0)], at(2), 1);
        let d = nc.apply(9, || 0, at(3), Op::Peek(1), &AtomicU64::new(1), || {});
        assert_eq!(d.remaining(), 85);
    }

    #[test]
    fn the_last_unit_a_push_reports_can_be_spent() {
        let nc = cache(5, 100);
        check(&nc, 4, 0, 4, 1);
        let batch = nc.take_listed(at(0));
        // One more fits (`allowed`), none after it (`remaining` 0).
        nc.settle(&batch, &[reply(true, 0, 0)], at(1), 1);
        assert!(check(&nc, 4, 2, 1, 1).is_allowed());
        assert!(check(&nc, 4, 2, 1, 1).is_denied());
    }

    #[test]
    fn a_failed_push_is_put_back_and_refunds_are_pushed_too() {
        let nc = cache(100, 1000);
        check(&nc, 3, 0, 7, 1);
        let batch = nc.take_listed(at(0));
        nc.restore(&batch, at(0));
        nc.apply(3, || 0, at(1), Op::Refund(2), &AtomicU64::new(1), || {});
        assert_eq!(nc.take_listed(at(1)), vec![(3, 1003, 5)]);
    }

    #[test]
    fn peeks_and_refunds_of_unknown_keys_create_nothing() {
        let nc = cache(10, 100);
        let d = nc.apply(77, || 0, at(4), Op::Peek(1), &AtomicU64::new(1), || {});
        assert!(d.is_allowed());
        nc.apply(78, || 0, at(4), Op::Refund(1), &AtomicU64::new(1), || {});
        assert_eq!(nc.len(), 0);
        assert!(nc.take_listed(at(4)).is_empty());
        // A cost above the limit is never admitted.
        assert!(check(&nc, 79, 5, 11, 1).exceeds_limit());
    }

    /// Found writing the model of `fuzz/fuzz_targets/near_cache.rs`: a
    /// hold's end was kept modulo 2^32 ms, so a key left untouched for
    /// 2^31 ms (24.9 days) or more past it read as held again, for up to
    /// another 24.9 days, without asking Redis.
    #[test]
    fn a_key_idle_long_past_its_hold_is_not_refused_again() {
        for idle in [
            (1 << 31) + 1,
            (1 << 31) + 5_000,
            3 << 30,
            (1 << 32) - 1,
            (1 << 32) + 1,
            1 << 34,
        ] {
            let nc = cache(5, 100);
            check(&nc, 1, 0, 1, 1);
            let batch = nc.take_listed(at(0));
            nc.settle(&batch, &[reply(false, 0, 1_000)], at(1), 1);
            assert!(check(&nc, 1, 500, 1, 1).is_denied());
            let d = check(&nc, 1, 1_001 + idle, 1, 1);
            assert!(d.is_allowed(), "{idle} ms past the hold: {d:?}");
        }
    }

    /// The near_cache fuzz target's finding: a held key checked within a
    /// hold of the end of time (a `Timestamp` near `u64::MAX` ns)
    /// overflowed working out the wait.
    #[test]
    fn a_hold_at_the_end_of_time_saturates() {
        let nc = cache(5, 100);
        let end = u64::MAX / 1_000_000 - 10;
        check(&nc, 1, end, 1, 1);
        let batch = nc.take_listed(at(end));
        nc.settle(&batch, &[reply(false, 0, 60_000)], at(end), 1);
        let d = check(&nc, 1, end + 1, 1, 1);
        assert!(d.is_denied());
        assert!(d.retry_after().is_some_and(|w| !w.is_zero()));
    }

    /// The near_cache fuzz target's finding: a refund after a sync, or a
    /// reply reporting more room than the limit, lifted the budget past the
    /// limit, and the fast path then admitted a cost above the limit.
    #[test]
    fn the_budget_never_passes_the_limit() {
        let refund = |nc: &NearCache, cost| {
            nc.apply(1, || 1, at(2), Op::Refund(cost), &AtomicU64::new(1), || {})
        };
        let nc = cache(5, 16);
        assert!(check(&nc, 1, 0, 5, 1).is_allowed());
        let batch = nc.take_listed(at(1));
        // Redis counted the 5 and has room for 5 more (a new window).
        nc.settle(&batch, &[reply(true, 4, 0)], at(1), 1);
        // A later limiter refused the request: the 5 come back.
        assert!(refund(&nc, 5).remaining() <= 5);
        assert!(check(&nc, 1, 2, 7, 1).exceeds_limit());
        // A reply with more room than the limit.
        let nc = cache(5, 16);
        check(&nc, 2, 0, 1, 1);
        let batch = nc.take_listed(at(1));
        nc.settle(&batch, &[reply(true, 100, 0)], at(1), 1);
        assert!(check(&nc, 2, 2, 7, 1).exceeds_limit());
        assert!(check(&nc, 2, 2, 5, 1).is_allowed());
    }
}
