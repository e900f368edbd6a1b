//! Counters that many threads bump without sharing a cache line.
//!
//! Each thread gets a stripe index once; counters are summed on read. A
//! single shared `AtomicU64` would make two threads checking distinct keys
//! fight over one line and halve their throughput.

use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 16;

/// Which counter of a [`Striped`] set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    Admitted = 0,
    Denied = 1,
    Evictions = 2,
    Reclaimed = 3,
    Filled = 4,
}

const COUNTS: usize = 5;

/// A set of counters striped over [`STRIPES`] cache lines.
pub(crate) struct Striped {
    stripes: Box<[CachePadded<[AtomicU64; COUNTS]>]>,
}

impl Default for Striped {
    fn default() -> Self {
        Striped {
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(Default::default()))
                .collect(),
        }
    }
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

impl Striped {
    #[inline]
    pub(crate) fn add(&self, which: Count, n: u64) {
        self.stripes[stripe()][which as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self, which: Count) -> u64 {
        self.stripes
            .iter()
            .map(|s| s[which as usize].load(Ordering::Relaxed))
            .sum()
    }
}

impl std::fmt::Debug for Striped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Striped")
            .field("admitted", &self.sum(Count::Admitted))
            .field("denied", &self.sum(Count::Denied))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_threads() {
        let s = Striped::default();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        s.add(Count::Admitted, 1);
                    }
                });
            }
        });
        assert_eq!(s.sum(Count::Admitted), 8000);
        assert_eq!(s.sum(Count::Denied), 0);
    }
}
