//! Rate-limiting algorithms as pure state machines over one `u64`.
//!
//! An algorithm never touches memory itself: given a key's current state (or
//! `None`), the time and a cost, it returns a [`Decision`] and the state to
//! store. A [`Store`](crate::Store) runs that step atomically (a
//! compare-exchange loop for the in-memory table), so the same algorithms can
//! sit on other stores later.

mod divide;
pub mod gcra;
pub mod sliding_window;

pub use gcra::Gcra;
pub use sliding_window::SlidingWindow;

use crate::decision::Decision;

/// The result of one step: the decision and, if the state changed, the new
/// state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What to tell the caller.
    pub decision: Decision,
    /// The state to store, `None` if nothing is charged.
    pub state: Option<u64>,
}

impl Outcome {
    pub(crate) fn unchanged(decision: Decision) -> Self {
        Outcome {
            decision,
            state: None,
        }
    }
}

/// What a store should do with a key's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Decide, and charge `cost` if admitted.
    Check(u64),
    /// Decide as `Check` would, but charge nothing.
    Peek(u64),
    /// Give back `cost` charged earlier; the decision is that of a `Peek(0)`.
    Refund(u64),
}

/// One of the built-in algorithms with its parameters, checked and ready
/// to run.
///
/// Builders take a [`Quota`](crate::Quota), the description of a limit, and
/// turn it into an `Algorithm` in `build()` with
/// [`Quota::algorithm`](crate::Quota::algorithm), the one place quotas are
/// checked; `Quota::from(algorithm)` gives the quota in force back. Use an
/// `Algorithm` directly to run a limiter on another store
/// ([`KeyedLimiter::with_store`](crate::KeyedLimiter::with_store)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Two-window weighted counter.
    SlidingWindow(SlidingWindow),
    /// Generic cell rate algorithm.
    Gcra(Gcra),
}

impl Algorithm {
    /// Runs `op` on `state` at `now` (ns).
    #[inline(always)]
    pub fn step(&self, state: Option<u64>, now: u64, op: Op) -> Outcome {
        match op {
            Op::Check(cost) => self.check(state, now, cost),
            Op::Peek(cost) => Outcome::unchanged(self.check(state, now, cost).decision),
            Op::Refund(cost) => {
                let state = state.map(|s| match self {
                    Algorithm::SlidingWindow(a) => a.refund(s, now, cost),
                    Algorithm::Gcra(a) => a.refund(s, now, cost),
                });
                Outcome {
                    decision: self.check(state, now, 0).decision,
                    state,
                }
            }
        }
    }

    #[inline(always)]
    fn check(&self, state: Option<u64>, now: u64, cost: u64) -> Outcome {
        match self {
            Algorithm::SlidingWindow(a) => a.check(state, now, cost),
            Algorithm::Gcra(a) => a.check(state, now, cost),
        }
    }

    /// How much a stored state still matters; 0 means it carries no
    /// information and may be dropped first.
    #[inline]
    pub fn heat(&self, state: u64, now: u64) -> u64 {
        match self {
            Algorithm::SlidingWindow(a) => a.heat(state, now),
            Algorithm::Gcra(a) => a.heat(state, now),
        }
    }

    /// The limit reported in decisions (window limit or GCRA burst).
    pub fn limit(&self) -> u64 {
        match self {
            Algorithm::SlidingWindow(a) => a.limit(),
            Algorithm::Gcra(a) => a.burst(),
        }
    }
}

impl From<SlidingWindow> for Algorithm {
    fn from(a: SlidingWindow) -> Self {
        Algorithm::SlidingWindow(a)
    }
}

impl From<Gcra> for Algorithm {
    fn from(a: Gcra) -> Self {
        Algorithm::Gcra(a)
    }
}
