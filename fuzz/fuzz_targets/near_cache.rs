//! Fuzzes the shared limiter's near-cache (feature `redis`): its packed
//! per-key word and the local decisions made from it, against a model of
//! the documented behaviour, over arbitrary sequences of checks, peeks,
//! refunds, syncs (with script replies built as Redis would send them, and
//! parsed as they are) and failed syncs, at any process age and across
//! idle spans far past the word's 2^36 ms clock.
//!
//! The target panics at the first broken guarantee:
//!
//! * a word packs and unpacks to the same fields (budget up to
//!   `MAX_SYNC_AFTER`, pending within ±2^23, the hold's end only while
//!   blocked);
//! * every decision is the model's: a key spends its share of the room
//!   Redis reported (`⌈room / instances⌉`, at most `sync_after`) and then
//!   waits for a sync; a cost over the limit is never admitted;
//! * a key Redis reported over its limit is refused until its
//!   retry-after, exactly, with the wait to it, and no longer; after the
//!   hold one unit is admitted. The hold's end is kept modulo 2^36 ms, as
//!   documented: a key first checked again 2^36 − 2^31 ms (2.11 years) or
//!   more past its hold's end may be refused again, and is left alone from
//!   then on;
//! * a sync pushes exactly the units admitted (minus those given back)
//!   since the last one, and a failed sync's units go with the next one;
//! * nothing panics or overflows, whatever the timestamps.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use floodguard::Timestamp;
use floodguard::algo::Op;
use floodguard::redis::MAX_SYNC_AFTER;
use floodguard::redis::fuzzing::{NearCache, NearEntry, ScriptReply};
use libfuzzer_sys::fuzz_target;
use redis::Value;

const MAX_STEPS: usize = 256;
const KEYS: u64 = 6;
const MS: u64 = 1_000_000;
/// Longest hold (`near_cache::MAX_HOLD_MS`).
const MAX_HOLD_MS: u64 = (1 << 31) - 1;
/// A hold's end is kept modulo 2^36 ms.
const UNTIL_MASK: u64 = (1 << 36) - 1;
/// Idle past a hold's end from which it may be misread (a documented
/// limit).
const ALIASED_MS: u64 = (1 << 36) - (1 << 31);
const PENDING_MIN: i64 = -(1 << 23);
const PENDING_MAX: i64 = (1 << 23) - 1;
const SYNC_EVERY: Duration = Duration::from_millis(10);
const SPAN: Duration = Duration::from_secs(60);

#[derive(Arbitrary, Debug)]
struct Input {
    limit: u32,
    limit_scale: u8,
    sync_after: u32,
    /// Clock reading at the start, any process age.
    start: u64,
    words: Vec<(u64, NearEntryIn)>,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
struct NearEntryIn {
    budget: u16,
    pending: i32,
    dirty: bool,
    in_flight: bool,
    blocked: bool,
    until_ms: u64,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Check {
        key: u8,
        cost: Cost,
        instances: u8,
    },
    Peek {
        key: u8,
        cost: Cost,
        instances: u8,
    },
    /// Gives back this share (k/256) of what the key has admitted and not
    /// given back yet, as a caller does (never more).
    Refund {
        key: u8,
        share: u8,
        instances: u8,
    },
    Time(Tick),
    /// A sync: Redis answers each pushed key with the next reply (the last
    /// one repeated), or the push fails.
    Sync {
        replies: Vec<Reply>,
        instances: u8,
        fail: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Cost {
    Units(u8),
    Wide(u64),
}

#[derive(Arbitrary, Debug)]
enum Tick {
    Nanos(u32),
    Millis(u16),
    /// 2^k ms (up to 2^45): past the word's 2^32 ms clock and more.
    Idle(u8),
    /// To the end of a hold, nudged by this many ms.
    HoldEnd(i16),
}

/// Fields of a script reply, as integers in a Redis array.
#[derive(Arbitrary, Debug)]
struct Reply {
    allowed: bool,
    remaining: Int,
    reset: Int,
    retry: Int,
}

#[derive(Arbitrary, Debug)]
enum Int {
    Small(u8),
    Millis(u32),
    Any(i64),
}

impl Int {
    fn get(&self) -> i64 {
        match *self {
            Int::Small(v) => i64::from(v),
            Int::Millis(v) => i64::from(v) * 1000,
            Int::Any(v) => v,
        }
    }
}

/// One key, as the documented behaviour has it.
#[derive(Clone, Copy, Debug, Default)]
struct Key {
    budget: u64,
    pending: i64,
    dirty: bool,
    /// End of the hold, in whole ms (not wrapped).
    blocked_until_ms: Option<u64>,
    /// Admitted and not given back, for `Refund`.
    refundable: u64,
}

fn share(room: u64, instances: u64, sync_after: u64) -> u64 {
    room.div_ceil(instances.max(1)).min(sync_after)
}

fn clamp_pending(p: i64) -> i64 {
    p.clamp(PENDING_MIN, PENDING_MAX)
}

/// The model of a push that failed: its units are pending again.
fn requeue(keys: &mut HashMap<u64, Key>, batch: &[(u64, u64, i64)]) {
    for &(k, _, units) in batch {
        let e = keys.get_mut(&k).expect("pushed keys are known");
        e.pending = clamp_pending(e.pending + units);
        e.dirty = true;
    }
}

fuzz_target!(|input: Input| {
    // Words: whatever fields fit pack and unpack to themselves.
    for (word, e) in input.words.iter().take(16) {
        let _ = NearEntry::unpack(*word);
        let e = NearEntry {
            budget: u64::from(e.budget),
            pending: i64::from(e.pending).clamp(PENDING_MIN, PENDING_MAX),
            dirty: e.dirty,
            in_flight: e.in_flight,
            blocked: e.blocked,
            until_ms: if e.blocked {
                e.until_ms & UNTIL_MASK
            } else {
                0
            },
        };
        let e = NearEntry {
            budget: if e.blocked { 0 } else { e.budget },
            ..e
        };
        assert_eq!(NearEntry::unpack(e.pack()), e);
    }

    let limit = (u64::from(input.limit) >> (input.limit_scale % 33)).max(1);
    let sync_after = u64::from(input.sync_after) % (MAX_SYNC_AFTER + 8);
    let Ok(nc) = NearCache::new(limit, SPAN, 256, sync_after, SYNC_EVERY) else {
        return;
    };
    let sync_after = sync_after.clamp(1, MAX_SYNC_AFTER);
    let mut keys: HashMap<u64, Key> = HashMap::new();
    // Keys whose hold may be misread (see `ALIASED_MS`): left alone.
    let mut aliased: HashMap<u64, bool> = HashMap::new();
    let mut now = input.start;
    // The last hold set, for `Tick::HoldEnd`.
    let mut last_hold: Option<u64> = None;

    for (i, step) in input.steps.iter().take(MAX_STEPS).enumerate() {
        if nc.evictions() > 0 {
            // A dropped key is new again: the model no longer applies.
            return;
        }
        let t = Timestamp::from_nanos(now);
        let now_ms = now / MS;
        match *step {
            Step::Time(ref tick) => {
                let d = match *tick {
                    Tick::Nanos(n) => u64::from(n),
                    Tick::Millis(m) => u64::from(m) * MS,
                    Tick::Idle(k) => (1u64 << (k % 46)).saturating_mul(MS),
                    Tick::HoldEnd(nudge) => last_hold
                        .map(|end| end.saturating_add_signed(i64::from(nudge)))
                        .map_or(0, |end| end.saturating_mul(MS).saturating_sub(now)),
                };
                now = now.saturating_add(d);
            }
            Step::Check {
                key,
                ref cost,
                instances,
            }
            | Step::Peek {
                key,
                ref cost,
                instances,
            } => {
                let check = matches!(step, Step::Check { .. });
                let key = spread(u64::from(key) % KEYS);
                let cost = match *cost {
                    Cost::Units(n) => u64::from(n),
                    Cost::Wide(n) => n,
                };
                let instances = u64::from(instances % 8) + 1;
                let op = if check {
                    Op::Check(cost)
                } else {
                    Op::Peek(cost)
                };
                if touches_alias(&keys, &mut aliased, key, now_ms) {
                    continue;
                }
                let (d, _) = nc.apply(key, t, op, instances);
                let ctx = || format!("step {i}: {op:?} key {key} at {now} -> {d:?}");
                assert!(d.retry_after().is_none_or(|w| !w.is_zero()), "{}", ctx());
                let m = keys.get(&key).copied();
                if let Some(end) = m.and_then(|m| m.blocked_until_ms)
                    && now_ms < end
                {
                    assert!(d.is_denied(), "admitted while held; {}", ctx());
                    assert_eq!(
                        d.retry_after(),
                        Some(Duration::from_nanos((end_of_time(end) - now).max(1))),
                        "wait is not to the hold's end; {}",
                        ctx()
                    );
                    continue;
                }
                let exists = m.is_some();
                let mut e = m.unwrap_or(Key {
                    budget: share(limit, instances, sync_after),
                    ..Key::default()
                });
                let mut changed = false;
                if e.blocked_until_ms.take().is_some() {
                    // The hold is over: one unit, and ask Redis.
                    e.budget = 1;
                    e.dirty = true;
                    changed = true;
                }
                let write;
                if cost > limit {
                    assert!(d.exceeds_limit(), "{}", ctx());
                    write = changed;
                } else if cost <= e.budget {
                    assert!(d.is_allowed(), "refused within budget {e:?}; {}", ctx());
                    if check {
                        e.budget -= cost;
                        e.pending = clamp_pending(e.pending + cost as i64);
                        e.dirty = true;
                        e.refundable += cost;
                        write = true;
                    } else {
                        write = changed;
                    }
                    assert_eq!(d.remaining(), e.budget, "{}", ctx());
                } else {
                    assert!(d.is_denied(), "admitted past budget {e:?}; {}", ctx());
                    assert!(!d.exceeds_limit(), "{}", ctx());
                    assert_eq!(d.retry_after(), Some(SYNC_EVERY), "{}", ctx());
                    assert_eq!(d.remaining(), e.budget, "{}", ctx());
                    write = changed || (check && !e.dirty);
                    if check {
                        e.dirty = true;
                    }
                }
                assert!(d.remaining() <= MAX_SYNC_AFTER.max(limit), "{}", ctx());
                if write || exists {
                    keys.insert(key, e);
                }
            }
            Step::Refund {
                key,
                share: k,
                instances,
            } => {
                let key = spread(u64::from(key) % KEYS);
                if touches_alias(&keys, &mut aliased, key, now_ms) {
                    continue;
                }
                let Some(mut e) = keys.get(&key).copied() else {
                    continue;
                };
                let cost = (u128::from(e.refundable) * u128::from(k) / 255) as u64;
                let instances = u64::from(instances % 8) + 1;
                let (d, _) = nc.apply(key, t, Op::Refund(cost), instances);
                let ctx = || format!("step {i}: refund {cost} key {key} at {now} -> {d:?}");
                if let Some(end) = e.blocked_until_ms
                    && now_ms < end
                {
                    // Refused like any request while held; nothing changes.
                    assert!(d.is_denied(), "{}", ctx());
                    continue;
                }
                if e.blocked_until_ms.take().is_some() {
                    e.budget = 1;
                }
                // Never past the limit: the budget is all a check looks at.
                e.budget = (e.budget + cost).min(MAX_SYNC_AFTER).min(limit);
                e.pending = clamp_pending(e.pending - cost as i64);
                e.dirty = true;
                e.refundable -= cost;
                assert!(d.is_allowed(), "{}", ctx());
                assert_eq!(d.remaining(), e.budget, "{}", ctx());
                keys.insert(key, e);
            }
            Step::Sync {
                ref replies,
                instances,
                fail,
            } => {
                let instances = u64::from(instances % 8) + 1;
                let mut batch = nc.take_listed(t);
                batch.sort_unstable();
                let mut want: Vec<(u64, u64, i64)> = keys
                    .iter()
                    .filter(|(_, e)| e.dirty)
                    .map(|(&k, e)| (k, k, e.pending))
                    .collect();
                want.sort_unstable();
                assert_eq!(batch, want, "step {i}: pushed units differ");
                for e in keys.values_mut() {
                    if e.dirty {
                        e.dirty = false;
                        e.pending = 0;
                    }
                }
                if fail || replies.is_empty() {
                    nc.restore(&batch, t);
                    requeue(&mut keys, &batch);
                    continue;
                }
                let mut parsed = Vec::new();
                for j in 0..batch.len() {
                    let r = &replies[j.min(replies.len() - 1)];
                    let allowed = r.allowed;
                    let fields = [
                        i64::from(allowed),
                        r.remaining.get(),
                        r.reset.get(),
                        if allowed { 0 } else { r.retry.get() },
                    ];
                    let v = Value::Array(fields.into_iter().map(Value::Int).collect());
                    let Some(reply) = ScriptReply::parse(v) else {
                        // A malformed reply fails the whole push.
                        break;
                    };
                    parsed.push(reply);
                }
                if parsed.len() < batch.len() {
                    nc.restore(&batch, t);
                    requeue(&mut keys, &batch);
                    continue;
                }
                nc.settle(&batch, &parsed, t, instances);
                for (&(k, _, _), r) in batch.iter().zip(&parsed) {
                    let e = keys.get_mut(&k).expect("pushed keys are known");
                    // Never past the limit, whatever Redis says.
                    let room = (r.remaining + u64::from(r.allowed)).min(limit);
                    let s = share(room, instances, sync_after);
                    e.budget = s.saturating_sub(e.pending.max(0).unsigned_abs());
                    e.blocked_until_ms = (!r.allowed).then(|| {
                        let retry = r.retry_after_us.unwrap_or(r.reset_after_us).max(1);
                        let until = now.saturating_add(retry.saturating_mul(1000)).div_ceil(MS);
                        until.min(now_ms + MAX_HOLD_MS)
                    });
                    if e.blocked_until_ms.is_some() {
                        e.budget = 0;
                        last_hold = e.blocked_until_ms;
                    }
                }
            }
        }
    }
});

/// Whether `key` is, or now becomes, one whose hold may be misread: held,
/// and touched `ALIASED_MS` or more past the hold's end.
fn touches_alias(
    keys: &HashMap<u64, Key>,
    aliased: &mut HashMap<u64, bool>,
    key: u64,
    now_ms: u64,
) -> bool {
    if let Some(end) = keys.get(&key).and_then(|m| m.blocked_until_ms)
        && now_ms >= end.saturating_add(ALIASED_MS)
    {
        aliased.insert(key, true);
    }
    aliased.get(&key).copied().unwrap_or(false)
}

/// The end of a hold ending at `end` ms, in ns: at the end of time it ends
/// there (and a denial still asks for a wait of at least 1 ns).
fn end_of_time(end: u64) -> u64 {
    end.saturating_mul(MS)
}

/// The table key of key number `k`: tables take hashes, whose bits are
/// all used (small numbers would share a tag).
fn spread(k: u64) -> u64 {
    (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}
