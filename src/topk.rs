//! Heavy hitters in bounded memory: the Space-Saving sketch.
//!
//! A flood shows up as a few keys taking a large share of the traffic: one
//! /24 or /16 (IPv6 /48 or /32) behind most requests, one client
//! fingerprint class behind most logins. Counting every key exactly needs
//! memory in proportion to the number of distinct keys, which an attacker
//! chooses. [`TopK`] follows the heaviest keys in `k` entries fixed when it
//! is made (Metwally, Agrawal and El Abbadi, ICDT 2005), with guarantees
//! that do not depend on the stream:
//!
//! * for every key held, `count - error <= true weight <= count`;
//! * every key whose true weight exceeds `total / k` is held;
//! * the counts held add up to `total`.
//!
//! The full statement, with decay and costs, is on [`TopK`], which the
//! crate root exports (this module is private).

use std::collections::HashMap;
use std::hash::Hash;

use crate::error::ConfigError;

/// One key held by a [`TopK`], with its estimated weight.
///
/// The key's true weight lies in `count - error ..= count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeavyHitter<K> {
    /// The key.
    pub key: K,
    /// The estimated weight: never below the key's true weight, above it by
    /// at most `error`.
    pub count: u64,
    /// How much `count` may overestimate by: the count the key inherited
    /// when it took over its entry (0 if it took a free one).
    pub error: u64,
}

impl<K> HeavyHitter<K> {
    /// `count - error`: the weight the key is guaranteed to have had.
    pub fn lower_bound(&self) -> u64 {
        self.count.saturating_sub(self.error)
    }
}

#[derive(Clone, Copy)]
struct Entry<K> {
    key: K,
    count: u64,
    error: u64,
}

impl<K: Copy> Entry<K> {
    fn hitter(&self) -> HeavyHitter<K> {
        HeavyHitter {
            key: self.key,
            count: self.count,
            error: self.error,
        }
    }
}

/// The heaviest keys of a stream, in `k` entries: the Space-Saving sketch.
///
/// Made with a fixed capacity `k` (Metwally, Agrawal and El Abbadi,
/// *Efficient Computation of Frequent and Top-k Elements in Data Streams*,
/// ICDT 2005). Each [`offer`](Self::offer) of a key with a weight:
///
/// * adds the weight to the key's count if the key is held;
/// * else takes a free entry while there is one, counted exactly;
/// * else replaces the entry with the smallest count `min`: the newcomer
///   inherits it, its count becomes `min + weight` and its error `min`.
///
/// # Guarantees
///
/// With `total` the sum of the weights offered ([`total`](Self::total)) and
/// a key's true weight the sum of the weights offered for it:
///
/// * for every key held, `count - error <= true weight <= count`:
///   [`HeavyHitter::count`] never underestimates and
///   [`HeavyHitter::lower_bound`] never overestimates;
/// * a key not held has a true weight of at most the smallest count held,
///   which is at most `total / k`; so **every key whose true weight exceeds
///   `total / k` is held**, and a heavy hitter cannot hide among many
///   distinct keys;
/// * the counts held add up to `total` exactly;
/// * while no more than `k` distinct keys have been offered, every count is
///   exact and every error 0.
///
/// Weights saturate at `u64::MAX`; the guarantees hold while `total` stays
/// below it.
///
/// [`decay`](Self::decay) scales every count down, so the sketch can follow
/// what is heavy *recently*: decaying by 1/2 every few seconds weighs each
/// request by its age. The guarantees then hold against true weights decayed
/// the same way (see the method).
///
/// # Cost
///
/// Memory is `k` entries (the key and two `u64`s), a heap of `k`
/// `(u64, u32)` pairs, and a hash index sized once, at construction, for `k`
/// keys and all the churn of replacements: the sketch allocates nothing
/// after [`new`](Self::new) (only [`top`](Self::top) allocates, the list it
/// returns). A key already held costs one hash lookup and an addition. A new
/// key costs a hash insert (and a removal once full) and `O(log k)` to find
/// the smallest count, in a min-heap that hits do not touch: a hit only
/// raises its entry's count, and the heap catches up when a stale entry
/// reaches its top.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use floodguard::ip::PrefixLengths;
/// use floodguard::{IpPrefix, TopK};
///
/// // Requests per /24 (IPv6 /48), in 64 entries whatever the traffic.
/// let lengths = PrefixLengths::new(24, 48)?;
/// let mut sites = TopK::<IpPrefix>::new(64)?;
/// for (ip, requests) in [("198.51.100.7", 50), ("2001:db8:1:2::9", 30), ("198.51.100.9", 40)] {
///     let ip: IpAddr = ip.parse().unwrap();
///     sites.offer(IpPrefix::of(ip, lengths), requests);
/// }
/// let top = sites.top(2);
/// assert_eq!(top[0].key, "198.51.100.0/24".parse::<IpPrefix>()?);
/// assert_eq!((top[0].count, top[0].error), (90, 0));
/// assert_eq!(top[1].key, "2001:db8:1::/48".parse::<IpPrefix>()?);
/// assert_eq!(sites.total(), 120);
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
///
/// Once full, a newcomer takes over the smallest entry and its count:
///
/// ```
/// use floodguard::TopK;
/// let mut t = TopK::new(2)?;
/// t.offer("a", 5);
/// t.offer("b", 2);
/// t.offer("c", 1); // replaces "b": count 2 + 1, of which 2 may not be "c"'s
/// let c = t.get(&"c").unwrap();
/// assert_eq!((c.count, c.error, c.lower_bound()), (3, 2, 1));
/// assert!(t.get(&"b").is_none());
/// assert_eq!(t.iter().map(|h| h.count).sum::<u64>(), t.total());
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct TopK<K> {
    /// At most `capacity` entries, never moved except by `decay`.
    entries: Vec<Entry<K>>,
    /// A binary min-heap of `(count, slot)` over every entry. The count
    /// recorded here may be behind the entry's (a hit does not touch the
    /// heap), never ahead: so the top's recorded count is a lower bound of
    /// every count, and equals the smallest once the top is up to date.
    heap: Vec<(u64, u32)>,
    /// Key to slot in `entries`. A hand-written linear-probing index (a
    /// quarter full, backward-shift removal) was measured against it: a
    /// quarter faster on hits to one key and on all-distinct keys at
    /// k = 1024, but a quarter slower on Zipf-like streams, which are what
    /// the sketch is for.
    index: HashMap<K, u32, ahash::RandomState>,
    capacity: usize,
    total: u64,
}

impl<K> std::fmt::Debug for TopK<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopK")
            .field("capacity", &self.capacity)
            .field("len", &self.entries.len())
            .field("total", &self.total)
            .finish()
    }
}

impl<K> TopK<K> {
    /// The largest `k` accepted by [`TopK::new`].
    pub const MAX_CAPACITY: usize = 1 << 24;
}

impl<K: Copy + Eq + Hash> TopK<K> {
    /// A sketch of `k` entries.
    ///
    /// Fails with [`ConfigError::Zero`] for `k == 0` and
    /// [`ConfigError::TooLarge`] above [`TopK::MAX_CAPACITY`].
    pub fn new(k: usize) -> Result<Self, ConfigError> {
        if k == 0 {
            return Err(ConfigError::Zero { field: "k" });
        }
        if k > Self::MAX_CAPACITY {
            return Err(ConfigError::TooLarge {
                field: "k",
                value: k as u64,
                max: Self::MAX_CAPACITY as u64,
            });
        }
        Ok(TopK {
            entries: Vec::with_capacity(k),
            heap: Vec::with_capacity(k),
            // Twice `k`: a removal can leave a tombstone, and a table more
            // than half full rehashes into a larger one when tombstones run
            // it out of room (sized for `k`, it doubled under churn of at
            // most `k` keys). At most half full, it rehashes in place.
            index: HashMap::with_capacity_and_hasher(2 * k, ahash::RandomState::new()),
            capacity: k,
            total: 0,
        })
    }

    /// Counts `weight` more for `key`. A weight of 0 changes nothing.
    #[inline]
    pub fn offer(&mut self, key: K, weight: u64) {
        if weight == 0 {
            return;
        }
        self.total = self.total.saturating_add(weight);
        if let Some(&slot) = self.index.get(&key) {
            let e = &mut self.entries[slot as usize];
            e.count = e.count.saturating_add(weight);
            return;
        }
        if self.entries.len() < self.capacity {
            // `capacity <= MAX_CAPACITY`, so the slot fits.
            let slot = self.entries.len() as u32;
            self.entries.push(Entry {
                key,
                count: weight,
                error: 0,
            });
            self.index.insert(key, slot);
            self.heap.push((weight, slot));
            self.sift_up(self.heap.len() - 1);
            return;
        }
        let slot = self.settle_min();
        let e = &mut self.entries[slot as usize];
        let min = e.count;
        self.index.remove(&e.key);
        *e = Entry {
            key,
            count: min.saturating_add(weight),
            error: min,
        };
        self.index.insert(key, slot);
        self.heap[0].0 = e.count;
        self.sift_down(0);
    }

    /// The sum of the weights offered since the sketch was made or cleared,
    /// scaled by every [`decay`](Self::decay) since; always the sum of the
    /// counts held.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Keys held, at most [`capacity`](Self::capacity).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `k`, the most keys the sketch holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The `n` keys with the largest counts (fewer if fewer are held),
    /// largest first; among equal counts, the smaller error first.
    pub fn top(&self, n: usize) -> Vec<HeavyHitter<K>> {
        if n == 0 {
            return Vec::new();
        }
        let mut all: Vec<HeavyHitter<K>> = self.iter().collect();
        let order = |a: &HeavyHitter<K>, b: &HeavyHitter<K>| {
            b.count.cmp(&a.count).then(a.error.cmp(&b.error))
        };
        if n < all.len() {
            all.select_nth_unstable_by(n - 1, order);
            all.truncate(n);
        }
        all.sort_unstable_by(order);
        all
    }

    /// `key`'s estimate, if the sketch holds it. A key not held has a true
    /// weight of at most the smallest count held.
    pub fn get(&self, key: &K) -> Option<HeavyHitter<K>> {
        let &slot = self.index.get(key)?;
        self.entries.get(slot as usize).map(Entry::hitter)
    }

    /// Every key held, in no particular order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = HeavyHitter<K>> {
        self.entries.iter().map(Entry::hitter)
    }

    /// Multiplies every count, every error and the total by
    /// `keep_num / keep_den`, and drops the keys whose count reaches 0.
    ///
    /// Counts round down and errors round up (to at most the count), and the
    /// total becomes the sum of the rounded counts. The guarantees of
    /// [`TopK`] then hold against each key's true weight scaled the same
    /// way and rounded down at every decay: after one,
    /// `count - error <= floor(true * keep_num / keep_den) <= count`, and
    /// every key above `total / k` is held.
    ///
    /// A factor of 1 or more (`keep_num >= keep_den`, which includes
    /// `keep_den == 0`) changes nothing: decay never raises a count. A
    /// factor of 0 clears the sketch. Costs `O(k)`.
    ///
    /// ```
    /// use floodguard::TopK;
    /// let mut t = TopK::new(4)?;
    /// t.offer("a", 9);
    /// t.offer("b", 1);
    /// t.decay(1, 2);
    /// assert_eq!(t.get(&"a").map(|h| h.count), Some(4));
    /// assert!(t.get(&"b").is_none()); // 1/2 rounds down to 0
    /// assert_eq!(t.total(), 4);
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn decay(&mut self, keep_num: u64, keep_den: u64) {
        if keep_num >= keep_den {
            return;
        }
        if keep_num == 0 {
            self.clear();
            return;
        }
        let (num, den) = (u128::from(keep_num), u128::from(keep_den));
        // Both results are at most their input, as `num < den`: they fit.
        let down = |x: u64| (u128::from(x) * num / den) as u64;
        let up = |x: u64| (u128::from(x) * num).div_ceil(den) as u64;
        self.entries.retain_mut(|e| {
            e.count = down(e.count);
            e.error = up(e.error).min(e.count);
            e.count > 0
        });
        // Slots moved: index and heap are rebuilt from the entries.
        self.index.clear();
        self.heap.clear();
        self.total = 0;
        for (slot, e) in self.entries.iter().enumerate() {
            self.index.insert(e.key, slot as u32);
            self.heap.push((e.count, slot as u32));
            self.total = self.total.saturating_add(e.count);
        }
        for i in (0..self.heap.len() / 2).rev() {
            self.sift_down(i);
        }
    }

    /// Forgets every key and the total; keeps the memory.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.heap.clear();
        self.index.clear();
        self.total = 0;
    }

    /// Brings the heap's top up to date until it is, and returns its slot:
    /// an entry with the smallest count. The heap must not be empty.
    fn settle_min(&mut self) -> u32 {
        loop {
            let (recorded, slot) = self.heap[0];
            let count = self.entries[slot as usize].count;
            if recorded == count {
                return slot;
            }
            self.heap[0].0 = count;
            self.sift_down(0);
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        let heap = &mut self.heap;
        let item = heap[i];
        while i > 0 {
            let parent = (i - 1) / 2;
            if heap[parent].0 <= item.0 {
                break;
            }
            heap[i] = heap[parent];
            i = parent;
        }
        heap[i] = item;
    }

    fn sift_down(&mut self, mut i: usize) {
        let heap = &mut self.heap;
        let n = heap.len();
        let item = heap[i];
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n && heap[right].0 < heap[left].0 {
                right
            } else {
                left
            };
            if heap[child].0 >= item.0 {
                break;
            }
            heap[i] = heap[child];
            i = child;
        }
        heap[i] = item;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap as StdMap;

    /// Every structural invariant, and the sum of counts.
    fn check_shape<K: Copy + Eq + Hash + std::fmt::Debug>(t: &TopK<K>) {
        assert!(t.len() <= t.capacity());
        assert_eq!(t.heap.len(), t.len());
        assert_eq!(t.index.len(), t.len());
        for (slot, e) in t.entries.iter().enumerate() {
            assert_eq!(t.index.get(&e.key), Some(&(slot as u32)));
            assert!(e.error <= e.count, "{:?}", e.key);
        }
        let mut seen = vec![false; t.len()];
        for (i, &(recorded, slot)) in t.heap.iter().enumerate() {
            assert!(recorded <= t.entries[slot as usize].count);
            assert!(!std::mem::replace(&mut seen[slot as usize], true));
            if i > 0 {
                assert!(t.heap[(i - 1) / 2].0 <= recorded);
            }
        }
        assert_eq!(t.iter().map(|h| h.count).sum::<u64>(), t.total());
    }

    #[test]
    fn zero_and_huge_k_are_refused() {
        assert_eq!(
            TopK::<u32>::new(0).unwrap_err(),
            ConfigError::Zero { field: "k" }
        );
        assert!(matches!(
            TopK::<u32>::new(usize::MAX),
            Err(ConfigError::TooLarge { field: "k", .. })
        ));
        assert_eq!(TopK::<u32>::new(1).unwrap().capacity(), 1);
    }

    #[test]
    fn counts_exactly_under_capacity() {
        let mut t = TopK::new(10).unwrap();
        assert!(t.is_empty());
        for i in 0..10u32 {
            for _ in 0..=i {
                t.offer(i, 2);
            }
        }
        t.offer(3, 0);
        assert_eq!(t.len(), 10);
        assert_eq!(t.total(), 2 * 55);
        for i in 0..10u32 {
            let h = t.get(&i).unwrap();
            assert_eq!((h.count, h.error), (2 * u64::from(i + 1), 0));
        }
        let top: Vec<u32> = t.top(3).iter().map(|h| h.key).collect();
        assert_eq!(top, [9, 8, 7]);
        assert_eq!(t.top(100).len(), 10);
        assert!(t.top(0).is_empty());
        check_shape(&t);
    }

    #[test]
    fn a_miss_when_full_replaces_the_smallest() {
        let mut t = TopK::new(3).unwrap();
        t.offer('a', 10);
        t.offer('b', 4);
        t.offer('c', 7);
        // "b" grows past "c" without the heap hearing of it.
        t.offer('b', 5);
        t.offer('d', 2);
        assert!(t.get(&'c').is_none());
        let d = t.get(&'d').unwrap();
        assert_eq!((d.count, d.error, d.lower_bound()), (9, 7, 2));
        assert_eq!(t.get(&'b').map(|h| h.count), Some(9));
        // The smallest is now one of the 9s; "a" stays.
        t.offer('e', 1);
        assert_eq!(t.get(&'a').map(|h| (h.count, h.error)), Some((10, 0)));
        assert_eq!(t.get(&'e').map(|h| (h.count, h.error)), Some((10, 9)));
        assert_eq!(t.len(), 3);
        assert_eq!(t.total(), 29);
        check_shape(&t);
        let top = t.top(3);
        assert_eq!(top[0].key, 'a', "a tie goes to the smaller error");
        assert_eq!(top[1].key, 'e');
    }

    #[test]
    fn a_heavy_hitter_survives_a_flood_of_distinct_keys() {
        let mut t = TopK::new(16).unwrap();
        for i in 0..100_000u64 {
            t.offer(i, 1);
            if i % 8 == 0 {
                t.offer(u64::MAX, 1);
            }
        }
        let h = t.get(&u64::MAX).unwrap();
        assert!(h.lower_bound() <= 12_500 && 12_500 <= h.count);
        assert_eq!(t.top(1)[0].key, u64::MAX);
        check_shape(&t);
    }

    #[test]
    fn the_index_never_grows() {
        let mut t = TopK::new(100).unwrap();
        let capacity = t.index.capacity();
        assert!(capacity >= 200);
        for i in 0..200_000u64 {
            t.offer(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1 + i % 3);
            assert!(t.index.capacity() <= capacity);
        }
        check_shape(&t);
    }

    #[test]
    fn decay_scales_rounds_and_drops() {
        let mut t = TopK::new(3).unwrap();
        t.offer(1u8, 10);
        t.offer(2, 3);
        t.offer(3, 1);
        t.offer(4, 6); // replaces 3: count 7, error 1
        check_shape(&t);
        t.decay(1, 1);
        t.decay(5, 0);
        assert_eq!(t.total(), 20);
        t.decay(1, 3);
        // 10/3 -> 3; 3/3 -> 1; 7/3 -> 2 with error 1/3 rounded up to 1.
        assert_eq!(t.get(&1).map(|h| (h.count, h.error)), Some((3, 0)));
        assert_eq!(t.get(&2).map(|h| (h.count, h.error)), Some((1, 0)));
        assert_eq!(t.get(&4).map(|h| (h.count, h.error)), Some((2, 1)));
        assert_eq!(t.total(), 6);
        check_shape(&t);
        t.decay(1, 2);
        assert!(t.get(&2).is_none());
        assert_eq!(t.len(), 2);
        assert_eq!(t.total(), 2);
        check_shape(&t);
        // The free entry is taken exactly again.
        t.offer(9, 5);
        assert_eq!(t.get(&9).map(|h| (h.count, h.error)), Some((5, 0)));
        t.decay(0, 7);
        assert!(t.is_empty());
        assert_eq!(t.total(), 0);
    }

    #[test]
    fn decay_keeps_huge_counts_in_range() {
        let mut t = TopK::new(2).unwrap();
        t.offer(1u8, u64::MAX);
        t.offer(1, u64::MAX);
        t.offer(2, 1);
        t.offer(3, u64::MAX);
        t.decay(u64::MAX - 1, u64::MAX);
        assert_eq!(t.get(&1).map(|h| h.count), Some(u64::MAX - 1));
        assert!(t.iter().all(|h| h.error <= h.count));
        t.decay(1, u64::MAX);
        assert!(t.len() <= 2);
    }

    #[test]
    fn clear_forgets_everything_and_keeps_capacity() {
        let mut t = TopK::new(2).unwrap();
        for i in 0..10 {
            t.offer(i, 1);
        }
        t.clear();
        assert!(t.is_empty());
        assert_eq!((t.total(), t.capacity()), (0, 2));
        assert!(t.top(5).is_empty());
        t.offer(42, 3);
        assert_eq!(t.get(&42).map(|h| (h.count, h.error)), Some((3, 0)));
        check_shape(&t);
    }

    /// A stream over a small alphabet: `(key, weight)`, with the occasional
    /// decay as `(u8::MAX, keep)` for `keep` in sixteenths.
    fn stream(decays: bool) -> impl Strategy<Value = Vec<(u8, u64)>> {
        let step = (0u8..24, 1u64..50);
        let decay = (Just(u8::MAX), 0u64..16);
        if decays {
            prop::collection::vec(prop_oneof![20 => step, 1 => decay], 0..400).boxed()
        } else {
            prop::collection::vec(step, 0..400).boxed()
        }
    }

    /// Offers `ops` to a sketch of `k` and to exact counts decayed the same
    /// way, checking the guarantees after every step.
    fn run(k: usize, ops: &[(u8, u64)]) -> Result<(), TestCaseError> {
        let mut t = TopK::new(k).unwrap();
        let mut exact: StdMap<u8, u64> = StdMap::new();
        for &(key, weight) in ops {
            if key == u8::MAX {
                t.decay(weight, 16);
                for v in exact.values_mut() {
                    *v = *v * weight / 16;
                }
                exact.retain(|_, v| *v > 0);
            } else {
                t.offer(key, weight);
                *exact.entry(key).or_default() += weight;
            }
            prop_assert!(t.len() <= k);
            prop_assert_eq!(t.iter().map(|h| h.count).sum::<u64>(), t.total());
            let min = if t.len() == k {
                t.iter().map(|h| h.count).min().unwrap_or(0)
            } else {
                0
            };
            prop_assert!(min as u128 * k as u128 <= t.total() as u128);
            for (&key, &true_weight) in &exact {
                match t.get(&key) {
                    Some(h) => {
                        prop_assert!(h.lower_bound() <= true_weight, "{:?} {}", h, true_weight);
                        prop_assert!(true_weight <= h.count, "{:?} {}", h, true_weight);
                    }
                    None => {
                        prop_assert!(true_weight <= min, "{} absent with {}", key, true_weight);
                        prop_assert!(true_weight as u128 * k as u128 <= t.total() as u128);
                    }
                }
            }
            for h in t.iter() {
                prop_assert!(h.error <= h.count);
                if !exact.contains_key(&h.key) {
                    prop_assert_eq!(h.lower_bound(), 0);
                }
            }
        }
        let top = t.top(k);
        prop_assert!(top.windows(2).all(|w| w[0].count >= w[1].count));
        prop_assert_eq!(top.len(), t.len());
        if exact.len() <= k {
            // Never more distinct keys than entries: exact, without decay.
            if !ops.iter().any(|&(key, _)| key == u8::MAX) {
                for h in t.iter() {
                    prop_assert_eq!(Some(&h.count), exact.get(&h.key));
                    prop_assert_eq!(h.error, 0);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn guarantees_hold(k in 1usize..12, ops in stream(false)) {
            run(k, &ops)?;
        }

        #[test]
        fn guarantees_hold_through_decay(k in 1usize..12, ops in stream(true)) {
            run(k, &ops)?;
        }

        #[test]
        fn heap_and_index_stay_consistent(k in 1usize..12, ops in stream(true)) {
            let mut t = TopK::new(k).unwrap();
            for (key, weight) in ops {
                if key == u8::MAX {
                    t.decay(weight, 16);
                } else {
                    t.offer(key, weight);
                }
                check_shape(&t);
            }
        }
    }
}
