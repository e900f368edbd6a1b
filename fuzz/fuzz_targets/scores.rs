//! Fuzzes the two per-client words scoring keeps: `ScoreTable`'s record
//! (score, 10 ms tick, good exchanges, offences, tag) and the client
//! profile (routes, requests, session-cookie state, busy period, 100 ms
//! tick), over arbitrary sequences of updates, reads and visits at any
//! process age and across idle spans past each word's clock (2^32 and 2^24
//! ticks; up to 2^45 ms in one step).
//!
//! The target panics at the first broken guarantee:
//!
//! * scores: a record reads back as written (counts, tag, score to the
//!   hundredth); a score stays within 0 to 100, and without news it never
//!   grows, it halves each half-life; any `points` (NaN, infinite) are
//!   taken; counts saturate; reads and no-op changes insert nothing;
//! * profiles: a profile reads back as the last visit left it (each word
//!   round-trips), a client unseen for 10 minutes is new again, requests
//!   saturate, routes only accumulate, the session's misses never pass 3
//!   and a valid cookie clears them.
//!
//! Both words keep time modulo their clock's width, as their docs state:
//! an entry left untouched for a whole wrap or more (497 days for scores,
//! 19.4 days for profiles) may be read as recent. Checks that depend on
//! the idle span are skipped for such an entry, not the others.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use floodguard::http::fuzzing::{Profile, ProfileTable};
use floodguard::{ScoreChange, ScoreRecord, ScoreTable, Timestamp};
use libfuzzer_sys::fuzz_target;

const MAX_STEPS: usize = 256;
/// Few enough keys that the tables (4-way buckets, two choices) never
/// evict.
const KEYS: u64 = 6;
const SCORE_TICK: u64 = 10_000_000;
const PROFILE_TICK: u64 = 100_000_000;
/// A profile unseen this many ticks (10 minutes) is new again.
const STALE_TICKS: u64 = 6_000;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Half-life in 10 ms ticks (0 is refused), spread over magnitudes.
    half_life: u32,
    half_life_scale: u8,
    start: u64,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Update {
        key: u8,
        points: Points,
        good: bool,
        offence: bool,
        tag: u8,
    },
    Get {
        key: u8,
    },
    Visit {
        key: u8,
        route: u64,
        session: Option<Option<bool>>,
        busy: u8,
    },
    Issued {
        key: u8,
    },
    Time(Tick),
}

#[derive(Arbitrary, Debug)]
enum Points {
    Hundredths(i16),
    Any(f32),
}

#[derive(Arbitrary, Debug)]
enum Tick {
    Nanos(u32),
    Millis(u16),
    /// 2^k ms.
    Idle(u8),
}

/// A score record as last written, and when (in 10 ms ticks, unwrapped).
#[derive(Clone, Copy, Debug)]
struct Score {
    record: ScoreRecord,
    tick: u64,
    /// The score the last read (or the write) returned, and when.
    last_read: (f32, u64),
}

/// A profile as last left, and when last seen (100 ms ticks, unwrapped).
#[derive(Clone, Copy, Debug)]
struct Seen {
    profile: Profile,
    tick: u64,
}

fuzz_target!(|input: Input| {
    let ticks = u64::from(input.half_life) >> (input.half_life_scale % 33);
    let half_life = Duration::from_nanos(ticks.saturating_mul(SCORE_TICK));
    let Ok(scores) = ScoreTable::new(64, half_life) else {
        assert_eq!(ticks, 0);
        return;
    };
    let profiles = ProfileTable::new(64).expect("a valid capacity");
    let mut held: HashMap<u64, Score> = HashMap::new();
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    let mut now = input.start;
    for (i, step) in input.steps.iter().take(MAX_STEPS).enumerate() {
        let t = Timestamp::from_nanos(now);
        let tick = now / SCORE_TICK;
        match *step {
            Step::Time(ref tick) => {
                let d = match *tick {
                    Tick::Nanos(n) => u64::from(n),
                    Tick::Millis(m) => u64::from(m) * 1_000_000,
                    Tick::Idle(k) => (1u64 << (k % 46)).saturating_mul(1_000_000),
                };
                now = now.saturating_add(d);
            }
            Step::Update {
                key,
                ref points,
                good,
                offence,
                tag,
            } => {
                let key = spread(u64::from(key) % KEYS);
                let points = match *points {
                    Points::Hundredths(h) => f32::from(h) / 100.0,
                    Points::Any(p) => p,
                };
                let change = ScoreChange {
                    points,
                    good,
                    offence,
                    tag,
                };
                let before = scores.get_hashed(key, t);
                let r = scores.update_hashed(key, t, change);
                let ctx = || format!("step {i}: {change:?} on {before:?} -> {r:?}");
                check_range(&r);
                let old = held.get(&key).copied();
                let inserts = points > 0.0 || good || offence;
                match (old, before) {
                    (Some(_), None) => panic!("a record vanished; {}", ctx()),
                    (None, Some(_)) => panic!("a record appeared; {}", ctx()),
                    _ => {}
                }
                let base = before.unwrap_or_default();
                assert_eq!(
                    r.good,
                    base.good.saturating_add(u8::from(good)),
                    "{}",
                    ctx()
                );
                assert_eq!(
                    r.offences,
                    base.offences.saturating_add(u8::from(offence)),
                    "{}",
                    ctx()
                );
                let want_tag = if points > 0.0 && tag != 0 {
                    tag.min(ScoreChange::MAX_TAG)
                } else {
                    base.tag
                };
                assert_eq!(r.tag, want_tag, "{}", ctx());
                // The new score: the decayed one plus the points, clamped,
                // to the hundredth (NaN points count as nothing added).
                let want = (base.score + points).clamp(0.0, 100.0);
                if want.is_finite() && points.is_finite() {
                    assert!((r.score - want).abs() <= 0.0051, "want {want}; {}", ctx());
                }
                if old.is_some() || inserts {
                    held.insert(
                        key,
                        Score {
                            record: r,
                            tick,
                            last_read: (r.score, tick),
                        },
                    );
                }
                // Read back at once: as written.
                let back = scores.get_hashed(key, t);
                if old.is_some() || inserts {
                    assert_eq!(back, Some(r), "read back; {}", ctx());
                } else {
                    assert_eq!(back, None, "a no-op inserted; {}", ctx());
                }
            }
            Step::Get { key } => {
                let key = spread(u64::from(key) % KEYS);
                let got = scores.get_hashed(key, t);
                let Some(m) = held.get_mut(&key) else {
                    assert_eq!(got, None, "step {i}: a record appeared");
                    continue;
                };
                let r = got.expect("a record vanished");
                check_range(&r);
                let ctx = || format!("step {i}: {m:?} at tick {tick} -> {r:?}");
                assert_eq!(
                    (r.good, r.offences, r.tag),
                    (m.record.good, m.record.offences, m.record.tag),
                    "{}",
                    ctx()
                );
                if tick - m.tick >= 1 << 32 {
                    // Past the clock's wrap: a documented limit.
                    m.last_read = (r.score, tick);
                    continue;
                }
                assert!(r.score <= m.last_read.0, "decay raised a score; {}", ctx());
                let halvings = (tick - m.tick) as f64 / ticks as f64;
                let want = f64::from(m.record.score) * (-halvings).exp2();
                assert!(
                    (f64::from(r.score) - want).abs() <= 0.01 + want * 1e-4,
                    "want {want}; {}",
                    ctx()
                );
                m.last_read = (r.score, tick);
            }
            Step::Visit {
                key,
                route,
                session,
                busy,
            } => {
                let key = spread(u64::from(key) % KEYS);
                let ptick = now / PROFILE_TICK;
                let (before, after) = profiles.visit(key, route, session, busy, t);
                let m = seen.get(&key).copied();
                let ctx = || format!("step {i}: visit {m:?} at {ptick} -> {before:?}, {after:?}");
                let idle = m.map(|m| ptick - m.tick);
                let wrapped = idle.is_some_and(|d| d >= (1 << 24) - STALE_TICKS);
                if !wrapped {
                    let fresh = m.filter(|_| idle.unwrap() < STALE_TICKS);
                    let mut want = fresh.map(|m| m.profile);
                    // The one word that would be all ones, the table's
                    // reserved word, is stored with a request fewer.
                    if let (Some(w), Some(b)) = (want.as_mut(), before)
                        && w.requests == 255
                        && b.requests == 254
                        && w.routes == u16::MAX
                        && w.joined == u8::MAX
                    {
                        w.requests = 254;
                    }
                    assert_eq!(before, want, "{}", ctx());
                }
                let base = before.unwrap_or(Profile {
                    routes: 0,
                    requests: 0,
                    issued: false,
                    session_misses: 0,
                    joined: busy,
                });
                assert_eq!(
                    after.routes,
                    base.routes | ProfileTable::route_bit(route),
                    "{}",
                    ctx()
                );
                assert_eq!(after.requests, base.requests.saturating_add(1), "{}", ctx());
                assert_eq!(after.joined, base.joined, "{}", ctx());
                assert!(after.session_misses <= 3, "{}", ctx());
                match session {
                    Some(Some(true)) => {
                        assert!(!after.issued && after.session_misses == 0, "{}", ctx());
                    }
                    Some(None) if base.issued => {
                        assert!(after.issued, "{}", ctx());
                        assert!(
                            after.session_misses == base.session_misses
                                || after.session_misses == base.session_misses + 1,
                            "{}",
                            ctx()
                        );
                    }
                    _ => {
                        assert_eq!(
                            (after.issued, after.session_misses),
                            (base.issued, base.session_misses),
                            "{}",
                            ctx()
                        );
                    }
                }
                seen.insert(
                    key,
                    Seen {
                        profile: after,
                        tick: ptick,
                    },
                );
            }
            Step::Issued { key } => {
                let key = spread(u64::from(key) % KEYS);
                let ptick = now / PROFILE_TICK;
                profiles.session_issued(key, t);
                if let Some(m) = seen.get_mut(&key)
                    && ptick - m.tick < STALE_TICKS
                    && !m.profile.issued
                {
                    // Marked sent; last seen stays as it was.
                    m.profile.issued = true;
                    m.profile.session_misses = 0;
                }
            }
        }
    }
});

fn check_range(r: &ScoreRecord) {
    assert!(
        (0.0..=100.0).contains(&r.score),
        "score {} out of range",
        r.score
    );
}

/// The table key of key number `k`: tables take hashes, whose bits are
/// all used (small numbers would share a tag).
fn spread(k: u64) -> u64 {
    (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}
