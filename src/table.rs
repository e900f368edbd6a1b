//! Bounded keyed state: a set-associative table of atomic slots.
//!
//! The table has a fixed number of buckets, each one 64-byte cache line with
//! four slots: four 64-bit tags (the key's hash, 0 for empty) and four 64-bit
//! states. Memory is `16 bytes × capacity` (rounded up to a multiple of 4)
//! plus a constant, whatever keys arrive; nothing is allocated after
//! construction.
//!
//! * **Hit** (the key's tag is in its bucket): load the state, re-check the
//!   tag, compute the step, compare-exchange. No lock; one cache line.
//! * **Two choices**: a key may live in one of two buckets picked by its
//!   hash: the first while that holds fewer than two keys, else the emptier
//!   of the two. Most hits read one line, and keys rarely push each other
//!   out below ~60% load (about 0.05% of inserts at 60%, against 1% for
//!   always-first and 6% for a single choice, in a simulation of random
//!   hashes), so size the table at about 1.6× the keys you expect to be
//!   active at once.
//! * **Miss**: take both buckets' insert locks (a bit in each first tag
//!   word, held for a few dozen instructions), look again, pick a victim,
//!   write the tag and the state, release. Inserts of one key are
//!   serialised, so a key is never present twice.
//! * **Victim**: an empty slot, else, among the eight slots of both
//!   buckets, the one whose state carries the least information: a key
//!   whose window or backlog has passed first (heat 0), then the coldest
//!   (lowest estimate, shortest backlog). A hot key (an attacker's) is never
//!   evicted while a colder key shares its buckets. This is
//!   least-information rather than least-recently-used: dropping a key
//!   forgives its count, so the smallest count is the cheapest to forgive.
//!
//! The buckets are one zeroed allocation made at build time. Tables of
//! 2 MiB or more are aligned to 2 MiB and, on Linux, advised into
//! transparent huge pages (`madvise(MADV_HUGEPAGE)`): a large table is hit
//! at random, and with 4 KiB pages nearly every lookup would also miss the
//! TLB (a 26 MB table spans 6,400 pages, far more than the TLB holds).
//! The whole table is written once at build time, so its memory is resident
//! from the start and no check ever takes a page fault.
//!
//! Keys arrive as 64-bit hashes from the limiter's per-instance random
//! [`ahash::RandomState`]: nobody outside can aim collisions, and two keys
//! share state only if 62 hash bits collide.
//!
//! One documented race: a request whose key is evicted in the instant
//! between its tag re-check and its compare-exchange, and replaced by a key
//! whose fresh state is bit-identical, charges the new key. It can only
//! over-count, never admit more.

use crate::Timestamp;
use crate::algo::{Algorithm, Op};
use crate::decision::Decision;
use crate::error::ConfigError;
use crate::stats::{Count, Striped};
use crate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};

const WAYS: usize = 4;
/// A key spills to its second bucket only once its first holds this many.
const SPILL: usize = 2;
/// Bit 0 of a bucket's first tag word is its insert lock; real tags have it
/// clear (and bit 1 set, so they are never 0, the empty tag).
const LOCK: u64 = 1;
/// State value of a slot whose key is being replaced. No algorithm produces it.
const REPLACING: u64 = u64::MAX;

/// Largest accepted capacity (2^32 slots, 64 GiB).
pub const MAX_CAPACITY: usize = 1 << 32;

/// One atomic step on a slot's 64-bit state, as the table runs it: the
/// rate algorithms (through [`Store::apply`]) and client scores share the
/// table this way.
pub(crate) trait Transition: Copy {
    /// What the step tells its caller.
    type Output;
    /// The output and the state to store (`None`: leave it) given the
    /// key's state (`None`: the key has no entry).
    fn step(&self, state: Option<u64>, now: u64) -> (Self::Output, Option<u64>);
    /// Whether a key without an entry gets one when `step` returns a state.
    fn inserts(&self) -> bool;
    /// How much a stored state still matters; the lowest is evicted first,
    /// and 0 means it carries no information.
    fn heat(&self, state: u64, now: u64) -> u64;
}

/// A rate algorithm's step: only a check creates an entry.
#[derive(Clone, Copy)]
struct AlgorithmStep<'a> {
    algorithm: &'a Algorithm,
    op: Op,
}

impl Transition for AlgorithmStep<'_> {
    type Output = Decision;

    #[inline(always)]
    fn step(&self, state: Option<u64>, now: u64) -> (Decision, Option<u64>) {
        let out = self.algorithm.step(state, now, self.op);
        (out.decision, out.state)
    }

    #[inline(always)]
    fn inserts(&self) -> bool {
        matches!(self.op, Op::Check(_))
    }

    #[inline]
    fn heat(&self, state: u64, now: u64) -> u64 {
        self.algorithm.heat(state, now)
    }
}

#[repr(C, align(64))]
#[derive(Default)]
struct Bucket {
    tags: [AtomicU64; WAYS],
    states: [AtomicU64; WAYS],
}

impl Bucket {
    /// Slot `i`'s tag, without the lock bit (0 for an empty slot).
    #[inline(always)]
    fn tag(&self, i: usize) -> u64 {
        self.tags[i].load(Ordering::Acquire) & !LOCK
    }

    /// Whether slot `i` holds the tag given as `tag | LOCK`. Setting the
    /// lock bit on both sides ignores it as clearing it does, but the key's
    /// side is then `hash | 3`: one instruction instead of two.
    #[inline(always)]
    fn holds(&self, i: usize, locked_tag: u64) -> bool {
        self.tags[i].load(Ordering::Acquire) | LOCK == locked_tag
    }
}

/// The one place in the crate with `unsafe` code: allocating, advising and
/// freeing the bucket array by hand.
#[allow(unsafe_code)]
mod buckets {
    use super::Bucket;
    use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
    use std::ptr::NonNull;

    /// Size and alignment of a transparent huge page (x86-64, and aarch64 with
    /// 4 KiB base pages). Bucket arrays at least this large are aligned to it.
    pub(super) const HUGE_PAGE: usize = 2 << 20;

    /// The bucket array: one zeroed allocation, owned, freed on drop.
    ///
    /// A `Box<[Bucket]>` cannot ask for more than the type's 64-byte alignment,
    /// and would be written before the huge-page advice could take effect;
    /// this is the same thing with the allocation done by hand.
    pub(super) struct Buckets {
        ptr: NonNull<Bucket>,
        len: usize,
    }

    // SAFETY: `Buckets` owns its array exclusively, like a `Box<[Bucket]>`, and
    // `Bucket` (atomics only) is `Send` and `Sync`.
    unsafe impl Send for Buckets {}
    // SAFETY: as above; shared access only hands out `&[Bucket]`.
    unsafe impl Sync for Buckets {}

    impl Buckets {
        /// `len` empty buckets (`len ≥ 1`).
        pub(super) fn zeroed(len: usize) -> Self {
            let layout = Self::layout(len);
            // SAFETY: the layout's size is non-zero (`len ≥ 1`, a bucket is 64
            // bytes).
            let raw = unsafe { alloc(layout) };
            let Some(ptr) = NonNull::new(raw) else {
                handle_alloc_error(layout)
            };
            if layout.align() == HUGE_PAGE {
                advise_huge_pages(raw, layout.size());
            }
            // Zeroed only now, after the advice, so that the first touch of each
            // 2 MiB region faults in a huge page rather than 512 small ones
            // (`alloc_zeroed` would write, or calloc, before we could advise).
            // SAFETY: `raw` is valid for writes of `layout.size()` bytes, which
            // is `len` buckets. All-zero bytes are a valid `Bucket` (its fields
            // are `AtomicU64`s, for which 0 is a valid value), and the same one
            // as `Bucket::default()`: every tag empty, every state 0.
            unsafe { raw.write_bytes(0, layout.size()) };
            Buckets {
                ptr: ptr.cast(),
                len,
            }
        }

        /// The layout of `len` buckets: 64-byte aligned, 2 MiB aligned from
        /// 2 MiB on. Deterministic in `len`, so `Drop` recomputes it.
        fn layout(len: usize) -> Layout {
            let layout =
                Layout::array::<Bucket>(len).expect("table size overflows the address space");
            if layout.size() >= HUGE_PAGE {
                layout
                    .align_to(HUGE_PAGE)
                    .expect("2 MiB is a valid alignment")
            } else {
                layout
            }
        }
    }

    impl std::ops::Deref for Buckets {
        type Target = [Bucket];

        #[inline(always)]
        fn deref(&self) -> &[Bucket] {
            // SAFETY: `ptr` points to `len` initialised (zeroed) buckets that
            // live until `self` is dropped; only shared references are made.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }
    }

    impl Drop for Buckets {
        fn drop(&mut self) {
            // SAFETY: `ptr` came from `alloc` with this same layout (`layout` is
            // a function of `len` alone) and is freed only here. `Bucket` has no
            // drop glue, so nothing else needs to run.
            unsafe { dealloc(self.ptr.as_ptr().cast(), Self::layout(self.len)) };
        }
    }

    /// Asks the kernel to back `len` bytes at `ptr` with transparent huge pages
    /// (which it does when THP is in `madvise` or `always` mode). Only whole
    /// 2 MiB regions can be: the advice covers those.
    #[cfg(target_os = "linux")]
    fn advise_huge_pages(ptr: *mut u8, len: usize) {
        let whole = len / HUGE_PAGE * HUGE_PAGE;
        // SAFETY: `ptr` is 2 MiB aligned (so page aligned) and starts an
        // allocation of ours of at least `whole` bytes, not yet in use.
        // MADV_HUGEPAGE changes only how the kernel backs these pages, never
        // their contents or whether they are mapped. Its failure (a kernel built
        // without THP) is harmless: the table then uses ordinary pages.
        unsafe {
            libc::madvise(ptr.cast(), whole, libc::MADV_HUGEPAGE);
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn advise_huge_pages(_ptr: *mut u8, _len: usize) {}
}

use buckets::Buckets;

/// The default [`Store`]: fixed capacity, lock-free hits, bounded memory.
///
/// ```
/// use floodguard::{AtomicTable, Store};
/// let table = AtomicTable::with_capacity(1000).unwrap();
/// assert_eq!(table.capacity(), 1000);
/// assert_eq!(table.memory_bytes(), 1000 * 16);
/// ```
pub struct AtomicTable {
    buckets: Buckets,
    capacity: usize,
    counters: Striped,
}

impl std::fmt::Debug for AtomicTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicTable")
            .field("capacity", &self.capacity)
            .field("occupancy", &self.occupancy())
            .field("evictions", &self.evictions())
            .finish()
    }
}

#[inline]
fn tag_of(hash: u64) -> u64 {
    (hash | 2) & !LOCK
}

impl AtomicTable {
    /// A table for at least `capacity` keys (rounded up to a multiple of 4).
    pub fn with_capacity(capacity: usize) -> Result<Self, ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::Zero { field: "capacity" });
        }
        if capacity > MAX_CAPACITY {
            return Err(ConfigError::TooLarge {
                field: "capacity",
                value: capacity as u64,
                max: MAX_CAPACITY as u64,
            });
        }
        let buckets = capacity.div_ceil(WAYS);
        Ok(AtomicTable {
            buckets: Buckets::zeroed(buckets),
            capacity: buckets * WAYS,
            counters: Striped::default(),
        })
    }

    /// Bytes held by the slots (the constant part is a few hundred bytes).
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    /// Occupied slots replaced because their state had expired.
    pub fn reclaimed(&self) -> u64 {
        self.counters.sum(Count::Reclaimed)
    }

    #[inline]
    fn first_bucket(&self, hash: u64) -> usize {
        // Multiply-shift maps a hash onto any bucket count without a
        // division or a power-of-two size.
        ((hash as u128 * self.buckets.len() as u128) >> 64) as usize
    }

    /// Runs one [`Transition`] on `key`'s state atomically and returns its
    /// output. The step goes by value: a reference would make the caller
    /// build it in memory before even the fast path.
    #[inline(always)]
    pub(crate) fn run<T: Transition>(&self, key: u64, now: u64, step: T) -> T::Output {
        let locked_tag = tag_of(key) | LOCK;
        // Fast path: the key sits in its first bucket and nobody is moving
        // it. Kept small so the common case stays in registers.
        let bucket = &self.buckets[self.first_bucket(key)];
        for i in 0..WAYS {
            if !bucket.holds(i, locked_tag) {
                continue;
            }
            let slot = &bucket.states[i];
            let s = slot.load(Ordering::Acquire);
            if s == REPLACING || !bucket.holds(i, locked_tag) {
                break;
            }
            let (out, new) = step.step(Some(s), now);
            // A state left unchanged (cost 0) is written back as well: that
            // saves a comparison on every admission.
            let Some(new) = new else {
                return out;
            };
            if slot
                .compare_exchange(s, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return out;
            }
            break;
        }
        self.run_slow(key, now, step)
    }

    /// Everything but an uncontended hit in the first bucket: second bucket,
    /// contention, insertion (hot during a flood of new keys, so not cold).
    #[inline(never)]
    fn run_slow<T: Transition>(&self, key: u64, now: u64, step: T) -> T::Output {
        let tag = tag_of(key);
        let pair = self.candidates(key);
        let mut spins = 0u32;
        'lookup: loop {
            if let Some((b, i)) = self.locate(pair, tag) {
                let bucket = &self.buckets[b];
                let slot = &bucket.states[i];
                let mut s = slot.load(Ordering::Acquire);
                loop {
                    if s == REPLACING || bucket.tag(i) != tag {
                        backoff(&mut spins);
                        continue 'lookup;
                    }
                    // As on the fast path in `run`, whose single attempt
                    // this loop repeats (kept apart there for its cost).
                    let (out, new) = step.step(Some(s), now);
                    let Some(new) = new else {
                        return out;
                    };
                    match slot.compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => return out,
                        Err(actual) => s = actual,
                    }
                }
            }
            let (out, new) = step.step(None, now);
            match new {
                Some(state) if step.inserts() => {
                    if self.insert(pair, tag, state, now, &step) {
                        return out;
                    }
                }
                _ => return out,
            }
        }
    }

    /// The key's two candidate buckets.
    #[inline]
    fn candidates(&self, hash: u64) -> (usize, usize) {
        let other = hash.rotate_left(32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (self.first_bucket(hash), self.first_bucket(other))
    }

    /// Finds `tag` in its buckets: `(bucket, slot)`.
    #[inline]
    fn locate(&self, (first, second): (usize, usize), tag: u64) -> Option<(usize, usize)> {
        let mut occupied = 0;
        for i in 0..WAYS {
            let t = self.buckets[first].tag(i);
            if t == tag {
                return Some((first, i));
            }
            occupied += usize::from(t != 0);
        }
        // Slots are never emptied, and a key goes to its second bucket only
        // when its first held at least `SPILL` keys: a first bucket with
        // fewer settles it.
        if occupied < SPILL || second == first {
            return None;
        }
        let b = &self.buckets[second];
        (0..WAYS).find(|&i| b.tag(i) == tag).map(|i| (second, i))
    }

    /// Empty slots of a bucket (read under its lock).
    fn free_slots(&self, b: usize) -> impl Iterator<Item = usize> + '_ {
        let bucket = &self.buckets[b];
        (0..WAYS).filter(|&i| bucket.tag(i) == 0)
    }

    /// Under the locks: where a new key goes if a slot is free. The first
    /// bucket while it holds fewer than `SPILL` keys (so most hits read one
    /// line), then whichever bucket is emptier: choosing the less loaded of
    /// two keeps a 4-way table almost free of overflow up to ~60% load,
    /// where always-first overflows 20 times as often.
    fn free_slot(&self, (first, second): (usize, usize)) -> Option<(usize, usize)> {
        let free_first = self.free_slots(first).count();
        let spill = WAYS - free_first >= SPILL && first != second;
        let b = if spill && self.free_slots(second).count() > free_first {
            second
        } else {
            first
        };
        self.free_slots(b).next().map(|i| (b, i))
    }

    fn lock(bucket: &Bucket) {
        let mut spins = 0u32;
        while bucket.tags[0].fetch_or(LOCK, Ordering::Acquire) & LOCK != 0 {
            backoff(&mut spins);
        }
    }

    fn unlock(bucket: &Bucket) {
        // Only the holder writes this word while the bit is set (waiters'
        // `fetch_or` of a bit already set changes nothing), so a plain store
        // is enough: one locked instruction fewer per insert.
        let word = bucket.tags[0].load(Ordering::Relaxed);
        bucket.tags[0].store(word & !LOCK, Ordering::Release);
    }

    /// Locks both candidate buckets, lower index first so two inserters
    /// never wait on each other in a cycle.
    fn lock_pair(&self, (first, second): (usize, usize)) {
        Self::lock(&self.buckets[first.min(second)]);
        if first != second {
            Self::lock(&self.buckets[first.max(second)]);
        }
    }

    fn unlock_pair(&self, (first, second): (usize, usize)) {
        Self::unlock(&self.buckets[first]);
        if first != second {
            Self::unlock(&self.buckets[second]);
        }
    }

    /// Under the locks: picks a slot for a new key among both buckets and
    /// marks it as being replaced. Returns `(bucket, slot, what it held)`.
    fn claim_victim<T: Transition>(
        &self,
        (first, second): (usize, usize),
        now: u64,
        step: &T,
    ) -> (usize, usize, Victim) {
        let order = [first, second];
        let candidates = if first == second {
            &order[..1]
        } else {
            &order[..]
        };
        if let Some((b, i)) = self.free_slot((first, second)) {
            // Readers that see the new tag must not take the empty slot's
            // zero state for a real one.
            self.buckets[b].states[i].store(REPLACING, Ordering::Relaxed);
            return (b, i, Victim::Empty);
        }
        loop {
            let mut best: Option<(usize, usize, u64, u64)> = None;
            for &b in candidates {
                for i in 0..WAYS {
                    let s = self.buckets[b].states[i].load(Ordering::Acquire);
                    if s == REPLACING {
                        continue;
                    }
                    let heat = step.heat(s, now);
                    if best.is_none_or(|(_, _, h, _)| heat < h) {
                        best = Some((b, i, heat, s));
                    }
                }
            }
            // Every slot mid-replacement cannot happen under the locks, but
            // spin rather than trust that.
            let Some((b, i, heat, s)) = best else {
                std::hint::spin_loop();
                continue;
            };
            // A concurrent hit may update the victim; then look again.
            if self.buckets[b].states[i]
                .compare_exchange(s, REPLACING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                let victim = if heat == 0 {
                    Victim::Expired
                } else {
                    Victim::Live
                };
                return (b, i, victim);
            }
        }
    }

    /// Inserts a new key with `state`; `false` if another thread inserted
    /// the key meanwhile (the caller then retries as a hit).
    fn insert<T: Transition>(
        &self,
        pair: (usize, usize),
        tag: u64,
        state: u64,
        now: u64,
        step: &T,
    ) -> bool {
        self.lock_pair(pair);
        if self.locate(pair, tag).is_some() {
            self.unlock_pair(pair);
            return false;
        }
        let (b, i, victim) = self.claim_victim(pair, now, step);
        let bucket = &self.buckets[b];
        // Both buckets are locked: keep the lock bit of a first tag word.
        let lock_bit = if i == 0 { LOCK } else { 0 };
        bucket.tags[i].store(tag | lock_bit, Ordering::Release);
        bucket.states[i].store(state, Ordering::Release);
        self.unlock_pair(pair);
        let count = match victim {
            Victim::Empty => Count::Filled,
            Victim::Expired => Count::Reclaimed,
            Victim::Live => Count::Evictions,
        };
        self.counters.add(count, 1);
        true
    }
}

enum Victim {
    Empty,
    Expired,
    Live,
}

fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        // The holder may have been preempted; let it run.
        std::thread::yield_now();
    }
}

impl Store for AtomicTable {
    #[inline(always)]
    fn apply(&self, key: u64, now: Timestamp, algorithm: &Algorithm, op: Op) -> Decision {
        self.run(key, now.as_nanos(), AlgorithmStep { algorithm, op })
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn occupancy(&self) -> usize {
        self.counters.sum(Count::Filled) as usize
    }

    fn evictions(&self) -> u64 {
        self.counters.sum(Count::Evictions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::SlidingWindow;
    use std::time::Duration;

    fn sw(limit: u64) -> Algorithm {
        SlidingWindow::new(limit, Duration::from_secs(1))
            .unwrap()
            .into()
    }

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    /// Resident set size of this process (Linux).
    fn rss_bytes() -> Option<usize> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Every tag and state of the table is 0.
    fn all_zero(t: &AtomicTable) -> bool {
        t.buckets.iter().all(|b| {
            (0..WAYS).all(|i| {
                b.tags[i].load(Ordering::Relaxed) == 0 && b.states[i].load(Ordering::Relaxed) == 0
            })
        })
    }

    /// Builds a table, checks its bucket array is aligned to `align` and
    /// zeroed, then uses it (so a later allocation reusing the memory would
    /// find it dirty).
    fn build_check_use(capacity: usize, align: usize) {
        let t = AtomicTable::with_capacity(capacity).unwrap();
        assert_eq!(t.buckets.len(), capacity.div_ceil(WAYS));
        assert_eq!(t.memory_bytes(), t.buckets.len() * 64);
        assert_eq!(
            t.buckets.as_ptr() as usize % align,
            0,
            "capacity {capacity}"
        );
        assert!(all_zero(&t), "capacity {capacity}: not zeroed");
        let a = sw(3);
        let now = Timestamp::ZERO;
        let keys = (capacity / 2).clamp(1, 10_000) as u64;
        let key = |k: u64| k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for k in 0..keys {
            assert!(t.apply(key(k), now, &a, Op::Check(2)).is_allowed());
        }
        for k in 0..keys {
            assert_eq!(t.apply(key(k), now, &a, Op::Peek(0)).remaining(), 1);
        }
        assert!(!all_zero(&t));
    }

    #[test]
    fn large_tables_are_huge_page_aligned_zeroed_and_freed() {
        // 16 MiB of buckets each: 16 leaked tables would be 256 MiB.
        const CAPACITY: usize = 1 << 20;
        let before = rss_bytes();
        for _ in 0..16 {
            build_check_use(CAPACITY, buckets::HUGE_PAGE);
        }
        // Just over the threshold, and not a multiple of 2 MiB.
        build_check_use((buckets::HUGE_PAGE + 3 * 64) / 16, buckets::HUGE_PAGE);
        if let (Some(before), Some(after)) = (before, rss_bytes()) {
            // Other tests run alongside: allow them some room.
            let grown = after.saturating_sub(before);
            assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
        }
    }

    #[test]
    fn small_tables_are_cache_line_aligned_and_zeroed() {
        for capacity in [1, 4, 5, 1000, 100_000, buckets::HUGE_PAGE / 16 - 4] {
            build_check_use(capacity, 64);
        }
    }

    #[test]
    fn capacity_rounds_up_and_validates() {
        assert_eq!(AtomicTable::with_capacity(5).unwrap().capacity(), 8);
        assert!(AtomicTable::with_capacity(0).is_err());
    }

    #[test]
    fn peek_and_refund_do_not_insert() {
        let t = AtomicTable::with_capacity(4).unwrap();
        let a = sw(2);
        let now = Timestamp::ZERO;
        assert!(t.apply(7, now, &a, Op::Peek(1)).is_allowed());
        assert!(t.apply(7, now, &a, Op::Refund(1)).is_allowed());
        assert_eq!(t.occupancy(), 0);
        assert!(t.apply(7, now, &a, Op::Check(2)).is_allowed());
        assert_eq!(t.occupancy(), 1);
        assert!(t.apply(7, now, &a, Op::Peek(1)).is_denied());
        t.apply(7, now, &a, Op::Refund(1));
        assert!(t.apply(7, now, &a, Op::Check(1)).is_allowed());
    }

    #[test]
    fn full_bucket_evicts_coldest_then_expired_first() {
        // One bucket: every key lands in it.
        let t = AtomicTable::with_capacity(4).unwrap();
        let a = sw(100);
        let now = Timestamp::ZERO;
        for k in 0..4u64 {
            // Key k gets k+1 requests: key 0 is coldest.
            for _ in 0..=k {
                t.apply(k << 8, now, &a, Op::Check(1));
            }
        }
        assert_eq!(t.occupancy(), 4);
        t.apply(99 << 8, now, &a, Op::Check(1));
        assert_eq!(t.evictions(), 1);
        // Key 3 (4 requests) survived with its count.
        assert_eq!(t.apply(3 << 8, now, &a, Op::Peek(0)).remaining(), 96);
        // Key 0 was the victim: it starts afresh.
        assert_eq!(t.apply(0, now, &a, Op::Peek(0)).remaining(), 100);
        // Two windows later every entry has expired: reuse, not eviction.
        let later = Timestamp::from_nanos(2_000_000_000);
        t.apply(1234 << 8, later, &a, Op::Check(1));
        assert_eq!(t.evictions(), 1);
        assert_eq!(t.reclaimed(), 1);
    }
}
