//! What each client asked for: which routes, how many requests, when it
//! was last seen, whether it returns the session cookie, which busy period
//! it came in; in one word per client, in a bounded table. Scoring reads it for a client's route mix
//! (a browser asks for pages and their assets; a bot aimed at one
//! expensive route asks for nothing else), detection for which clients
//! are new.

use std::time::Duration;

use crate::http::identify::session::Presented;
use crate::table::{AtomicTable, Transition};
use crate::{ConfigError, Timestamp};

/// Nanoseconds per stored tick (100 ms).
const TICK_NANOS: u64 = 100_000_000;
/// Ticks are kept in 24 bits (19.4 days) and compared by wrapping
/// difference: far more than a profile lives ([`STALE`]). A profile left
/// in the table untouched for a multiple of 19.4 days, give or take
/// [`STALE`], reads as recent.
const TICK_MASK: u32 = (1 << 24) - 1;

/// A profile untouched this long says nothing any more, and goes first.
const STALE: Duration = Duration::from_secs(600);

/// One client's profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    /// One bit per route seen (a route's bit is [`route_bit`] of its
    /// hash): 16 buckets, so two routes share a bit now and then.
    pub(crate) routes: u16,
    /// Requests seen, saturating at 255.
    pub(crate) requests: u8,
    /// The session cookie's state: [`ISSUED`], the misses (requests
    /// without the cookie since it was issued, from a second after, up to
    /// [`MISSES_MAX`]) and the second it was first issued, modulo 32.
    pub(crate) session: u8,
    /// The busy period the client first came in (the detector's
    /// `busy_stamp` then; 0: the service was at ease).
    pub(crate) joined: u8,
}

/// The session cookie was sent to the client.
const ISSUED: u8 = 0x80;
const MISSES_SHIFT: u8 = 5;
const MISSES_MAX: u8 = 3;
const SECOND_MASK: u8 = 0x1f;
/// Ticks per second.
const TICKS_PER_SECOND: u32 = 10;

impl Profile {
    /// How many requests, when all went to one route.
    pub(crate) fn single_route(&self) -> Option<u8> {
        (self.routes.count_ones() == 1).then_some(self.requests)
    }

    /// Distinct routes seen (buckets).
    pub(crate) fn route_count(&self) -> u32 {
        self.routes.count_ones()
    }

    /// Whether the client came before the busy period `busy_stamp` names
    /// (or the service is at ease, stamp 0).
    pub(crate) fn came_before(&self, busy_stamp: u8) -> bool {
        busy_stamp == 0 || self.joined != busy_stamp
    }

    /// Requests that came without the session cookie since it was sent
    /// (those within a second of sending it not counted), up to 3.
    pub(crate) fn session_misses(&self) -> u8 {
        (self.session >> MISSES_SHIFT) & MISSES_MAX
    }
}

/// The session state after a request that showed `presented`, at `tick`,
/// the client last seen at `seen`.
fn session_after(state: u8, presented: Option<Presented>, tick: u32, seen: u32) -> u8 {
    match presented {
        // It came back: whatever was counted is void.
        Some(Presented::Valid) => 0,
        Some(Presented::Absent) if state & ISSUED != 0 => {
            let misses = (state >> MISSES_SHIFT) & MISSES_MAX;
            // Requests already in flight when the cookie was sent do not
            // carry it: only a second after does a miss count. After a
            // first miss, every later request is later still; after a
            // gap of 32 s the second's wrap cannot hide one.
            let elapsed = (second_of(tick).wrapping_sub(state & SECOND_MASK)) & SECOND_MASK;
            let late =
                misses > 0 || elapsed >= 1 || ticks_between(seen, tick) >= 32 * TICKS_PER_SECOND;
            if late && misses < MISSES_MAX {
                (state & !(MISSES_MAX << MISSES_SHIFT)) | (misses + 1) << MISSES_SHIFT
            } else {
                state
            }
        }
        // An invalid cookie has evidence of its own; no session, nothing.
        _ => state,
    }
}

fn second_of(tick: u32) -> u8 {
    (tick / TICKS_PER_SECOND) as u8 & SECOND_MASK
}

/// A route hash's bit in [`Profile::routes`].
pub(crate) fn route_bit(route_hash: u64) -> u16 {
    1 << (route_hash >> 60)
}

/// Client profiles, one 64-bit word each: routes (16 bits), requests (8),
/// session state (8), the busy period joined (8), last seen (24 bits of
/// 100 ms ticks).
pub(crate) struct ProfileTable {
    table: AtomicTable,
}

impl ProfileTable {
    pub(crate) fn new(capacity: usize) -> Result<Self, ConfigError> {
        Ok(ProfileTable {
            table: AtomicTable::with_capacity(capacity)?,
        })
    }

    /// Records a request of the client hashed `key` to the route hashed
    /// `route_hash`, showing `session` of the session cookie (`None`:
    /// sessions are off, or not for this request), in the busy period
    /// `busy_stamp` (see [`Profile::joined`]); returns its profile before
    /// and after (`None` before: the client is new, or was forgotten).
    pub(crate) fn visit(
        &self,
        key: u64,
        route_hash: u64,
        session: Option<Presented>,
        busy_stamp: u8,
        now: Timestamp,
    ) -> (Option<Profile>, Profile) {
        let step = Visit {
            bit: route_bit(route_hash),
            tick: tick_of(now),
            session,
            busy_stamp,
        };
        self.table.run(key, now.as_nanos(), step)
    }

    /// The session cookie was sent to the client hashed `key`: from now
    /// on, coming back without it counts. Only the first sending is
    /// recorded, so a client that never returns it cannot put its misses
    /// off by being sent it again.
    pub(crate) fn session_issued(&self, key: u64, now: Timestamp) {
        let tick = tick_of(now);
        self.table.run(key, now.as_nanos(), Issued { tick });
    }
}

fn tick_of(now: Timestamp) -> u32 {
    tick_at(now.as_nanos())
}

fn tick_at(nanos: u64) -> u32 {
    (nanos / TICK_NANOS) as u32 & TICK_MASK
}

/// Ticks from `earlier` to `later`, across the 24-bit wrap.
fn ticks_between(earlier: u32, later: u32) -> u32 {
    later.wrapping_sub(earlier) & TICK_MASK
}

fn unpack(w: u64) -> (Profile, u32) {
    (
        Profile {
            routes: w as u16,
            requests: (w >> 16) as u8,
            session: (w >> 24) as u8,
            joined: (w >> 32) as u8,
        },
        (w >> 40) as u32,
    )
}

fn pack(p: Profile, tick: u32) -> u64 {
    let w = u64::from(p.routes)
        | u64::from(p.requests) << 16
        | u64::from(p.session) << 24
        | u64::from(p.joined) << 32
        | u64::from(tick & TICK_MASK) << 40;
    // Never all ones, the table's reserved word (every route, 255
    // requests, every session bit, busy period 255 and the one tick in
    // 19 days that is all ones): one request fewer.
    if w == u64::MAX { w - (1 << 16) } else { w }
}

#[derive(Clone, Copy)]
struct Visit {
    bit: u16,
    tick: u32,
    session: Option<Presented>,
    busy_stamp: u8,
}

fn stale_ticks() -> u32 {
    (STALE.as_nanos() / u128::from(TICK_NANOS)) as u32
}

/// How much a stored profile still matters (see [`Transition::heat`]).
fn heat(state: u64, now: u64) -> u64 {
    let (p, seen) = unpack(state);
    let age = ticks_between(seen, tick_at(now));
    let stale = stale_ticks();
    if age >= stale {
        0
    } else {
        u64::from(stale - age) + 64 * u64::from(p.requests)
    }
}

impl Transition for Visit {
    type Output = (Option<Profile>, Profile);

    fn step(&self, state: Option<u64>, _now: u64) -> (Self::Output, Option<u64>) {
        let (before, seen) = match state.map(unpack) {
            Some((p, seen)) if ticks_between(seen, self.tick) < stale_ticks() => (Some(p), seen),
            _ => (None, self.tick),
        };
        let old = before.unwrap_or(Profile {
            joined: self.busy_stamp,
            ..Profile::default()
        });
        let after = Profile {
            routes: old.routes | self.bit,
            requests: old.requests.saturating_add(1),
            session: session_after(old.session, self.session, self.tick, seen),
            joined: old.joined,
        };
        ((before, after), Some(pack(after, self.tick)))
    }

    fn inserts(&self) -> bool {
        true
    }

    fn heat(&self, state: u64, now: u64) -> u64 {
        heat(state, now)
    }
}

/// Marks the session cookie sent, once, on a profile that is there (the
/// request's visit made it).
#[derive(Clone, Copy)]
struct Issued {
    tick: u32,
}

impl Transition for Issued {
    type Output = ();

    fn step(&self, state: Option<u64>, _now: u64) -> ((), Option<u64>) {
        let Some((mut p, seen)) = state.map(unpack) else {
            return ((), None);
        };
        if p.session & ISSUED != 0 || ticks_between(seen, self.tick) >= stale_ticks() {
            return ((), None);
        }
        p.session = ISSUED | second_of(self.tick);
        ((), Some(pack(p, seen)))
    }

    fn inserts(&self) -> bool {
        false
    }

    fn heat(&self, state: u64, now: u64) -> u64 {
        heat(state, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn visits_add_routes_and_count_requests() {
        let t = ProfileTable::new(64).unwrap();
        let (search, home) = (0x1000_0000_0000_0000u64, 0x2000_0000_0000_0000u64);
        let (before, after) = t.visit(7, search, None, 0, at(0));
        assert_eq!(before, None);
        assert_eq!(
            (after.routes, after.single_route()),
            (route_bit(search), Some(1))
        );
        let (before, after) = t.visit(7, search, None, 0, at(100));
        assert_eq!(before.unwrap().requests, 1);
        assert_eq!(after.single_route(), Some(2));
        let (_, after) = t.visit(7, home, None, 0, at(200));
        assert_eq!((after.single_route(), after.route_count()), (None, 2));
        // Other clients are apart.
        assert_eq!(t.visit(8, home, None, 0, at(200)).0, None);
    }

    #[test]
    fn a_client_gone_for_ten_minutes_is_new_again() {
        let t = ProfileTable::new(64).unwrap();
        t.visit(7, 1, None, 0, at(0));
        assert!(t.visit(7, 1, None, 0, at(599_000)).0.is_some());
        let (before, after) = t.visit(7, 1, None, 0, at(599_000 + 600_000));
        assert_eq!(before, None);
        assert_eq!(after.requests, 1);
    }

    #[test]
    fn a_client_keeps_the_busy_period_it_came_in() {
        let t = ProfileTable::new(64).unwrap();
        // Came at ease: before any busy period.
        let (_, p) = t.visit(7, 1, None, 0, at(0));
        assert!(p.came_before(3));
        // Came in busy period 3: not before it, but before any other.
        let (_, p) = t.visit(8, 1, None, 3, at(0));
        let (_, p2) = t.visit(8, 2, None, 3, at(100));
        assert_eq!((p.joined, p2.joined), (3, 3));
        assert!(!p2.came_before(3) && p2.came_before(4) && p2.came_before(0));
        // Later visits in another period do not change when it came.
        assert_eq!(t.visit(8, 1, None, 4, at(200)).1.joined, 3);
        // Gone for ten minutes: it comes anew.
        assert_eq!(t.visit(8, 1, None, 4, at(200 + 600_000)).1.joined, 4);
    }

    /// The last-seen tick is 24 bits of 100 ms (19.4 days) and ages wrap:
    /// a profile is kept, and forgotten when stale, at any process age,
    /// across the tick's wrap too.
    #[test]
    fn staleness_is_right_at_any_process_age() {
        let wrap_ms = (1u64 << 24) * 100;
        for start in [1 << 32, 1 << 40, wrap_ms - 300_000, 5 * wrap_ms - 1] {
            let t = ProfileTable::new(64).unwrap();
            t.visit(7, 1, None, 0, at(start));
            assert!(
                t.visit(7, 1, None, 0, at(start + 599_000)).0.is_some(),
                "at {start}"
            );
            let (before, after) = t.visit(7, 1, None, 0, at(start + 599_000 + 600_000));
            assert_eq!((before, after.requests), (None, 1), "at {start}");
        }
    }

    #[test]
    fn requests_saturate() {
        let t = ProfileTable::new(64).unwrap();
        for i in 0..300 {
            t.visit(7, 1, None, 0, at(i));
        }
        assert_eq!(t.visit(7, 1, None, 0, at(300)).1.requests, 255);
    }

    #[test]
    fn misses_count_from_a_second_after_the_cookie_was_sent() {
        let t = ProfileTable::new(64).unwrap();
        let absent = Some(Presented::Absent);
        // Nothing is counted before the cookie is sent.
        t.visit(7, 1, absent, 0, at(0));
        assert_eq!(t.visit(7, 1, absent, 0, at(2_000)).1.session_misses(), 0);
        t.session_issued(7, at(2_000));
        // In flight when it was sent: not a miss.
        assert_eq!(t.visit(7, 1, absent, 0, at(2_500)).1.session_misses(), 0);
        // Sent again: the first sending holds.
        t.session_issued(7, at(2_900));
        let misses: Vec<u8> = (0..4)
            .map(|i| {
                t.visit(7, 1, absent, 0, at(3_000 + i * 100))
                    .1
                    .session_misses()
            })
            .collect();
        assert_eq!(misses, [1, 2, 3, 3]);
        // An invalid cookie changes nothing; a valid one clears it all.
        let p = t.visit(7, 1, Some(Presented::Invalid), 0, at(4_000)).1;
        assert_eq!(p.session_misses(), 3);
        let p = t.visit(7, 1, Some(Presented::Valid), 0, at(4_100)).1;
        assert_eq!((p.session, p.requests), (0, 9));
        assert_eq!(t.visit(7, 1, absent, 0, at(9_000)).1.session_misses(), 0);
    }

    #[test]
    fn a_wrapped_second_does_not_hide_a_miss_after_a_long_gap() {
        let t = ProfileTable::new(64).unwrap();
        t.visit(7, 1, None, 0, at(1_000));
        t.session_issued(7, at(1_000));
        // 32 s later the second modulo 32 is the same again.
        let p = t.visit(7, 1, Some(Presented::Absent), 0, at(33_000)).1;
        assert_eq!(p.session_misses(), 1);
        // Sessions off: the state is left alone.
        let p = t.visit(7, 1, None, 0, at(34_000)).1;
        assert_eq!(p.session_misses(), 1);
        // No profile, no mark: only a visit makes one.
        t.session_issued(9, at(0));
        assert_eq!(t.visit(9, 1, None, 0, at(0)).0, None);
    }
}
