//! Counters that many threads bump without sharing a cache line.
//!
//! Each thread gets a stripe index once; counters are summed on read. A
//! single shared `AtomicU64` would make two threads checking distinct keys
//! fight over one line and halve their throughput.

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Threads that get a stripe of their own; later ones share the last one.
const OWNED: usize = 31;
const STRIPES: usize = OWNED + 1;
/// Counters per stripe: 128 bytes, the padding `CachePadded` uses on x86-64
/// and aarch64, so no two threads' stripes share a line (or a prefetched
/// pair of lines).
const WORDS: usize = 16;

/// Which counter of a [`Striped`] set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    /// Every decision; admitted = checked − denied, so the admit path
    /// bumps one counter at a fixed offset.
    Checked = 0,
    Denied = 1,
    Evictions = 2,
    Reclaimed = 3,
    Filled = 4,
}

/// How many [`Count`]s there are.
pub(crate) const COUNTS: usize = 5;

impl From<Count> for usize {
    fn from(c: Count) -> usize {
        c as usize
    }
}

/// A set of `N` counters striped over cache lines.
///
/// While a thread lives it owns one stripe index in every `Striped`, so it
/// can bump its counters with a plain load and store: a locked read-modify-
/// write cost as much as the rate-limit decision itself. Indices are given
/// back when threads exit; threads beyond [`OWNED`] at once share one
/// stripe and use `fetch_add`.
///
/// Stripe `i` is words `i·WORDS .. i·WORDS + N` of one aligned array.
pub(crate) struct Striped<const N: usize = COUNTS> {
    words: Box<CachePadded<[AtomicU64; STRIPES * WORDS]>>,
}

impl<const N: usize> Default for Striped<N> {
    fn default() -> Self {
        const { assert!(N <= WORDS, "a stripe holds at most WORDS counters") };
        Striped {
            words: Box::new(CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0)))),
        }
    }
}

static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A thread's stripe index; returned to the pool when the thread exits.
struct Slot(usize);

impl Slot {
    fn take() -> Slot {
        if let Some(i) = FREE.lock().pop() {
            return Slot(i);
        }
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        Slot(if i < OWNED { i } else { OWNED })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0 < OWNED {
            FREE.lock().push(self.0);
        }
    }
}

thread_local! {
    /// This thread's stripe as the offset of its first word (`i·WORDS`),
    /// which a bump adds without a multiply; `usize::MAX` until first use.
    /// A plain `Cell` with a const initialiser is the cheapest thread-local
    /// to read.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Owns the index and gives it back when the thread exits.
    static OWNER: Cell<Option<Slot>> = const { Cell::new(None) };
}

#[cold]
fn assign_stripe() -> usize {
    let slot = Slot::take();
    let i = slot.0;
    // If thread-locals are being torn down, keep to the shared stripe.
    if OWNER.try_with(|o| o.set(Some(slot))).is_err() {
        return OWNED;
    }
    let _ = STRIPE.try_with(|s| s.set(i * WORDS));
    i
}

/// This thread's stripe index, assigning one on first use.
fn stripe() -> usize {
    match STRIPE.try_with(Cell::get) {
        Ok(usize::MAX) => assign_stripe(),
        Ok(offset) => offset / WORDS,
        Err(_) => OWNED,
    }
}

impl<const N: usize> Striped<N> {
    #[inline]
    pub(crate) fn add(&self, which: impl Into<usize>, n: u64) {
        let which = which.into();
        debug_assert!(which < N);
        // One test covers both other cases: a thread without a stripe yet
        // (`usize::MAX`) and one on the shared stripe (`OWNED`).
        let offset = STRIPE.try_with(Cell::get).unwrap_or(usize::MAX);
        if offset >= OWNED * WORDS {
            return self.add_shared(which, n);
        }
        let c = &self.words[offset + which];
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// [`add`](Self::add) for a thread without an owned stripe (yet).
    #[cold]
    #[inline(never)]
    fn add_shared(&self, which: usize, n: u64) {
        let i = stripe();
        let c = &self.words[i * WORDS + which];
        if i < OWNED {
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn sum(&self, which: impl Into<usize>) -> u64 {
        let which = which.into();
        (0..STRIPES)
            .map(|i| self.words[i * WORDS + which].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl std::fmt::Debug for Striped<COUNTS> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Striped")
            .field("checked", &self.sum(Count::Checked))
            .field("denied", &self.sum(Count::Denied))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_threads() {
        let s = Striped::<COUNTS>::default();
        // More threads than owned stripes, twice over, so shared stripes,
        // reuse of freed ones and owned ones are all exercised.
        for _ in 0..2 {
            std::thread::scope(|scope| {
                for _ in 0..OWNED + 8 {
                    scope.spawn(|| {
                        for _ in 0..1000 {
                            s.add(Count::Checked, 1);
                        }
                    });
                }
            });
        }
        assert_eq!(s.sum(Count::Checked), 2 * (OWNED as u64 + 8) * 1000);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        s.add(Count::Checked, 1);
                    }
                });
            }
        });
        assert_eq!(s.sum(Count::Checked), 2 * (OWNED as u64 + 8) * 1000 + 8000);
        assert_eq!(s.sum(Count::Denied), 0);
    }
}
