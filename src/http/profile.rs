//! What each client asked for: which routes, how many requests, when it
//! was last seen; in one word per client, in a bounded table. Scoring reads
//! it for a client's route mix (a browser asks for pages and their assets;
//! a bot aimed at one expensive route asks for nothing else) and detection
//! for which clients are new.

use std::time::Duration;

use crate::table::{AtomicTable, Transition};
use crate::{ConfigError, Timestamp};

/// Nanoseconds per stored tick (100 ms).
const TICK_NANOS: u64 = 100_000_000;

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
    /// The busy period the client first came in (the detector's
    /// `busy_stamp` then; 0: the service was at ease).
    pub(crate) joined: u8,
}

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
}

/// A route hash's bit in [`Profile::routes`].
pub(crate) fn route_bit(route_hash: u64) -> u16 {
    1 << (route_hash >> 60)
}

/// Client profiles, one 64-bit word each: routes (16 bits), requests (8),
/// the busy period joined (8), last seen (32 bits of 100 ms ticks).
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
    /// `route_hash`, in the busy period `busy_stamp` (see
    /// [`Profile::joined`]); returns its profile before and after (`None`
    /// before: the client is new, or was forgotten).
    pub(crate) fn visit(
        &self,
        key: u64,
        route_hash: u64,
        busy_stamp: u8,
        now: Timestamp,
    ) -> (Option<Profile>, Profile) {
        let step = Visit {
            bit: route_bit(route_hash),
            tick: tick_of(now),
            busy_stamp,
        };
        self.table.run(key, now.as_nanos(), step)
    }
}

fn tick_of(now: Timestamp) -> u32 {
    (now.as_nanos() / TICK_NANOS) as u32
}

fn unpack(w: u64) -> (Profile, u32) {
    (
        Profile {
            routes: w as u16,
            requests: (w >> 16) as u8,
            joined: (w >> 24) as u8,
        },
        (w >> 32) as u32,
    )
}

fn pack(p: Profile, tick: u32) -> u64 {
    let w = u64::from(p.routes)
        | u64::from(p.requests) << 16
        | u64::from(tick) << 32
        | u64::from(p.joined) << 24;
    // Never all ones, the table's reserved word (every route, 255
    // requests, busy period 255 and the one tick in 13 years that is all
    // ones): one request fewer.
    if w == u64::MAX { w - (1 << 16) } else { w }
}

#[derive(Clone, Copy)]
struct Visit {
    bit: u16,
    tick: u32,
    busy_stamp: u8,
}

impl Transition for Visit {
    type Output = (Option<Profile>, Profile);

    fn step(&self, state: Option<u64>, _now: u64) -> (Self::Output, Option<u64>) {
        let stale = (STALE.as_nanos() / u128::from(TICK_NANOS)) as u32;
        let before = state
            .map(unpack)
            .filter(|(_, seen)| self.tick.wrapping_sub(*seen) < stale)
            .map(|(p, _)| p);
        let old = before.unwrap_or(Profile {
            joined: self.busy_stamp,
            ..Profile::default()
        });
        let after = Profile {
            routes: old.routes | self.bit,
            requests: old.requests.saturating_add(1),
            joined: old.joined,
        };
        ((before, after), Some(pack(after, self.tick)))
    }

    fn inserts(&self) -> bool {
        true
    }

    fn heat(&self, state: u64, now: u64) -> u64 {
        let (p, seen) = unpack(state);
        let age = ((now / TICK_NANOS) as u32).wrapping_sub(seen);
        let stale = (STALE.as_nanos() / u128::from(TICK_NANOS)) as u32;
        if age >= stale {
            0
        } else {
            u64::from(stale - age) + 64 * u64::from(p.requests)
        }
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
        let (before, after) = t.visit(7, search, 0, at(0));
        assert_eq!(before, None);
        assert_eq!(
            (after.routes, after.single_route()),
            (route_bit(search), Some(1))
        );
        let (before, after) = t.visit(7, search, 0, at(100));
        assert_eq!(before.unwrap().requests, 1);
        assert_eq!(after.single_route(), Some(2));
        let (_, after) = t.visit(7, home, 0, at(200));
        assert_eq!((after.single_route(), after.route_count()), (None, 2));
        // Other clients are apart.
        assert_eq!(t.visit(8, home, 0, at(200)).0, None);
    }

    #[test]
    fn a_client_gone_for_ten_minutes_is_new_again() {
        let t = ProfileTable::new(64).unwrap();
        t.visit(7, 1, 0, at(0));
        assert!(t.visit(7, 1, 0, at(599_000)).0.is_some());
        let (before, after) = t.visit(7, 1, 0, at(599_000 + 600_000));
        assert_eq!(before, None);
        assert_eq!(after.requests, 1);
    }

    #[test]
    fn a_client_keeps_the_busy_period_it_came_in() {
        let t = ProfileTable::new(64).unwrap();
        // Came at ease: before any busy period.
        let (_, p) = t.visit(7, 1, 0, at(0));
        assert!(p.came_before(3));
        // Came in busy period 3: not before it, but before any other.
        let (_, p) = t.visit(8, 1, 3, at(0));
        let (_, p2) = t.visit(8, 2, 3, at(100));
        assert_eq!((p.joined, p2.joined), (3, 3));
        assert!(!p2.came_before(3) && p2.came_before(4) && p2.came_before(0));
        // Later visits in another period do not change when it came.
        assert_eq!(t.visit(8, 1, 4, at(200)).1.joined, 3);
        // Gone for ten minutes: it comes anew.
        assert_eq!(t.visit(8, 1, 4, at(200 + 600_000)).1.joined, 4);
    }

    /// The last-seen tick is 32 bits of 100 ms (13.6 years) and ages
    /// wrap: a profile is kept, and forgotten when stale, at any process
    /// age, across the tick's wrap too.
    #[test]
    fn staleness_is_right_at_any_process_age() {
        let wrap_ms = (1u64 << 32) * 100;
        for start in [1 << 32, 1 << 40, wrap_ms - 300_000] {
            let t = ProfileTable::new(64).unwrap();
            t.visit(7, 1, 0, at(start));
            assert!(
                t.visit(7, 1, 0, at(start + 599_000)).0.is_some(),
                "at {start}"
            );
            let (before, after) = t.visit(7, 1, 0, at(start + 599_000 + 600_000));
            assert_eq!((before, after.requests), (None, 1), "at {start}");
        }
    }

    #[test]
    fn requests_saturate() {
        let t = ProfileTable::new(64).unwrap();
        for i in 0..300 {
            t.visit(7, 1, 0, at(i));
        }
        assert_eq!(t.visit(7, 1, 0, at(300)).1.requests, 255);
    }
}
