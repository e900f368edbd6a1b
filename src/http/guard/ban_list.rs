//! The guard's bans: looked up by address (longest prefix), kept in
//! bounded memory, with every change in O(log n) so that a full list never
//! makes a ban attempt scan it under the write lock.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::{IpPrefix, PrefixMap, Timestamp};

/// Bans by prefix, each until its end, at most `max` of them; ordered by
/// end as well, so that expired bans go first and, when the list is full
/// of unexpired ones, the one that would end soonest makes way.
pub(crate) struct BanList {
    by_prefix: PrefixMap<Timestamp>,
    by_end: BTreeSet<(Timestamp, IpPrefix)>,
    max: usize,
}

/// What [`BanList::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The ban is in the list (new, or replacing one of the same prefix).
    Recorded,
    /// The ban is in the list, and to make room the ban on this prefix,
    /// which would have ended soonest, was lifted early.
    Evicted(IpPrefix),
}

impl BanList {
    pub(crate) fn new(max: usize) -> Self {
        BanList {
            by_prefix: PrefixMap::new(),
            by_end: BTreeSet::new(),
            max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_prefix.len()
    }

    /// The ban covering `ip` (the longest banned prefix), with its end.
    #[inline]
    pub(crate) fn get(&self, ip: IpAddr) -> Option<(&IpPrefix, &Timestamp)> {
        self.by_prefix.get(ip)
    }

    /// Every ban, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&IpPrefix, &Timestamp)> {
        self.by_prefix.iter()
    }

    /// Bans `prefix` until `until`, replacing a ban of the same prefix (or,
    /// with `extend_only`, keeping it if it ends later). Bans ended by
    /// `now` are dropped first; if the list is still full, the ban that
    /// ends soonest is lifted to make room.
    pub(crate) fn insert(
        &mut self,
        prefix: IpPrefix,
        until: Timestamp,
        now: Timestamp,
        extend_only: bool,
    ) -> Inserted {
        self.drop_ended(now);
        let until = match self.by_prefix.remove(&prefix) {
            Some(old) => {
                self.by_end.remove(&(old, prefix));
                if extend_only { old.max(until) } else { until }
            }
            None => until,
        };
        let mut inserted = Inserted::Recorded;
        if self.by_prefix.len() >= self.max {
            if let Some((_, soonest)) = self.by_end.pop_first() {
                self.by_prefix.remove(&soonest);
                inserted = Inserted::Evicted(soonest);
            }
        }
        self.by_prefix.insert(prefix, until);
        self.by_end.insert((until, prefix));
        inserted
    }

    /// Lifts the ban on exactly `prefix`; when it ended, if there was one.
    pub(crate) fn remove(&mut self, prefix: &IpPrefix) -> Option<Timestamp> {
        let until = self.by_prefix.remove(prefix)?;
        self.by_end.remove(&(until, *prefix));
        Some(until)
    }

    /// Drops the bans that ended by `now`: each costs O(log n) once.
    fn drop_ended(&mut self, now: Timestamp) {
        while let Some(&(end, prefix)) = self.by_end.first() {
            if end > now {
                break;
            }
            self.by_end.pop_first();
            self.by_prefix.remove(&prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    fn at(s: u64) -> Timestamp {
        Timestamp::ZERO.saturating_add(Duration::from_secs(s))
    }

    #[test]
    fn a_full_list_lifts_the_soonest_ending_ban_for_a_new_one() {
        let mut b = BanList::new(3);
        b.insert(p("10.0.0.1/32"), at(50), at(0), false);
        b.insert(p("10.0.0.2/32"), at(20), at(0), false);
        b.insert(p("10.0.0.3/32"), at(90), at(0), false);
        let i = b.insert(p("10.0.0.4/32"), at(60), at(1), false);
        assert_eq!(i, Inserted::Evicted(p("10.0.0.2/32")));
        assert_eq!(b.len(), 3);
        assert!(b.get("10.0.0.2".parse().unwrap()).is_none());
        assert_eq!(
            b.get("10.0.0.4".parse().unwrap()).map(|(_, u)| *u),
            Some(at(60))
        );
        // Ended bans make room first, without evicting anyone.
        let i = b.insert(p("10.0.0.5/32"), at(99), at(55), false);
        assert_eq!(i, Inserted::Recorded);
        assert!(b.get("10.0.0.1".parse().unwrap()).is_none());
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn replacing_and_extending_keep_one_entry_per_prefix() {
        let mut b = BanList::new(2);
        b.insert(p("10.0.0.0/24"), at(50), at(0), false);
        b.insert(p("10.0.0.0/24"), at(30), at(0), true);
        assert_eq!(
            b.get("10.0.0.9".parse().unwrap()).map(|(_, u)| *u),
            Some(at(50))
        );
        b.insert(p("10.0.0.0/24"), at(30), at(0), false);
        assert_eq!(
            b.get("10.0.0.9".parse().unwrap()).map(|(_, u)| *u),
            Some(at(30))
        );
        assert_eq!((b.len(), b.by_end.len()), (1, 1));
        // A replacement in a full list evicts nobody.
        b.insert(p("10.0.1.0/24"), at(40), at(0), false);
        assert_eq!(
            b.insert(p("10.0.0.0/24"), at(70), at(0), false),
            Inserted::Recorded
        );
        assert_eq!(b.len(), 2);
        assert_eq!(b.remove(&p("10.0.0.0/24")), Some(at(70)));
        assert_eq!((b.len(), b.by_end.len()), (1, 1));
    }

    proptest::proptest! {
        /// Under any mix of bans, lifts and time, the list holds at most
        /// `max` bans, its two indexes agree, and it never holds an ended
        /// ban after an insert.
        #[test]
        fn the_indexes_agree_and_the_bound_holds(
            ops in proptest::collection::vec((0u8..3, 0u8..16, 0u64..100, proptest::bool::ANY), 1..300),
        ) {
            let mut b = BanList::new(5);
            let mut now = 0;
            for (op, a, d, extend) in ops {
                let prefix = IpPrefix::new(IpAddr::from([10, 0, 0, a]), 32).unwrap();
                match op {
                    0 => { b.insert(prefix, at(now + d), at(now), extend); }
                    1 => { b.remove(&prefix); }
                    _ => now += d / 10,
                }
                proptest::prop_assert!(b.len() <= 5);
                proptest::prop_assert_eq!(b.len(), b.by_end.len());
                for &(end, p) in &b.by_end {
                    proptest::prop_assert_eq!(b.by_prefix.iter().find(|(q, _)| **q == p).map(|(_, u)| *u), Some(end));
                }
                if op == 0 {
                    proptest::prop_assert!(b.by_end.iter().all(|&(end, _)| end > at(now) || end == at(now + d)));
                }
            }
        }
    }
}
