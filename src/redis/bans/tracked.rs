//! Which bans a reload may lift: those Redis's set held, and not this
//! guard's own while they wait to be written.

use crate::{IpPrefix, Timestamp};

/// A hash map keyed by exact prefix (unlike [`crate::PrefixMap`], which
/// finds an address's longest matching prefix).
type PrefixHashMap<V> = std::collections::HashMap<IpPrefix, V, ahash::RandomState>;

/// The bans a reload may lift, and this guard's own bans it must not.
#[derive(Default)]
pub(super) struct Tracked {
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
    /// Counts changes to the bans recorded as in the set: a reload asks
    /// for the set at one, and lifts only what was recorded by then.
    pub(super) fn changes(&self) -> u64 {
        self.changes
    }

    /// Forgets that the set holds a ban of `prefix`: a reload does not
    /// lift it (until it is recorded as in the set again).
    pub(super) fn forget(&mut self, prefix: &IpPrefix) {
        self.in_set.remove(prefix);
    }

    /// Records that the set holds a ban of `prefix` until `until`, unless
    /// one of this guard's own bans of it waits to be written (the set
    /// may lack it until then). A full map drops ended entries first; a
    /// ban that still finds no room ends on its own, without reconciling.
    pub(super) fn in_set_until(
        &mut self,
        prefix: IpPrefix,
        until: Timestamp,
        now: Timestamp,
        max: usize,
    ) {
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
    pub(super) fn missing(
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
    pub(super) fn queued(&mut self, prefix: IpPrefix) {
        *self.unpublished.entry(prefix).or_insert(0) += 1;
    }

    /// One of this guard's bans of `prefix` is off the queue: written
    /// (`Some(end)`, when it ends there) or not.
    pub(super) fn settled(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
