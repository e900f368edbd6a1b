//! A circuit breaker: a dead Redis costs one timeout per interval, not one
//! per request.

use crate::Timestamp;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Redis answers; every call goes to it.
    Closed,
    /// Redis failed; calls use the failure policy until the next probe.
    Open,
    /// One call is probing whether Redis is back; the others still use the
    /// failure policy.
    Probing,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const PROBING: u8 = 2;

/// What a caller may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Permission {
    /// Call Redis.
    Call,
    /// Call Redis: this call is the probe that may close the breaker.
    Probe,
    /// Do not call; apply the failure policy.
    Skip,
}

/// A transition worth logging once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened,
    Closed,
}

/// The breaker's state in three atomics: no lock on the per-call path.
pub(crate) struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    /// When an open breaker lets its next probe through (ns, caller's clock).
    retry_at: AtomicU64,
    trip_after: u32,
    retry_every: Duration,
    opened: AtomicU64,
}

impl Breaker {
    /// Opens after `trip_after` failures in a row; probes every
    /// `retry_every` while open.
    pub(crate) fn new(trip_after: u32, retry_every: Duration) -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            retry_at: AtomicU64::new(0),
            trip_after: trip_after.max(1),
            retry_every,
            opened: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::Probing,
        }
    }

    /// Times the breaker has opened.
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Time until an open breaker lets a probe through (zero if closed).
    pub(crate) fn retry_in(&self, now: Timestamp) -> Duration {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Duration::ZERO;
        }
        let at = Timestamp::from_nanos(self.retry_at.load(Ordering::Acquire));
        at.saturating_duration_since(now)
    }

    pub(crate) fn permission(&self, now: Timestamp) -> Permission {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Permission::Call,
            OPEN if now.as_nanos() >= self.retry_at.load(Ordering::Acquire) => {
                // One caller wins the probe; the rest keep skipping.
                match self.state.compare_exchange(
                    OPEN,
                    PROBING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Permission::Probe,
                    Err(_) => Permission::Skip,
                }
            }
            _ => Permission::Skip,
        }
    }

    /// Records an answer from Redis.
    pub(crate) fn success(&self) -> Option<Transition> {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.state.load(Ordering::Acquire) == CLOSED {
            return None;
        }
        (self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED).then_some(Transition::Closed)
    }

    /// Records an error or a timeout.
    pub(crate) fn failure(&self, now: Timestamp) -> Option<Transition> {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let state = self.state.load(Ordering::Acquire);
        if state == OPEN || (state == CLOSED && failures < self.trip_after) {
            return None;
        }
        // A failed probe, or enough failures in a row: open until the next
        // probe.
        self.retry_at.store(
            now.saturating_add(self.retry_every).as_nanos(),
            Ordering::Release,
        );
        let was = self.state.swap(OPEN, Ordering::AcqRel);
        if was == CLOSED {
            self.opened.fetch_add(1, Ordering::Relaxed);
            Some(Transition::Opened)
        } else {
            None
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
    fn opens_after_failures_in_a_row_and_probes_once_per_interval() {
        let b = Breaker::new(2, Duration::from_secs(1));
        assert_eq!(b.permission(at(0)), Permission::Call);
        assert_eq!(b.failure(at(0)), None);
        assert_eq!(b.success(), None, "a success resets the run");
        assert_eq!(b.failure(at(1)), None);
        assert_eq!(b.failure(at(2)), Some(Transition::Opened));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened(), 1);
        assert_eq!(b.permission(at(500)), Permission::Skip);
        assert_eq!(b.retry_in(at(500)), Duration::from_millis(502));
        // One probe after the interval, the others keep skipping.
        assert_eq!(b.permission(at(1002)), Permission::Probe);
        assert_eq!(b.permission(at(1003)), Permission::Skip);
        assert_eq!(b.state(), BreakerState::Probing);
        // A failed probe opens it for another interval, without counting a
        // new opening.
        assert_eq!(b.failure(at(1010)), None);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.permission(at(1500)), Permission::Skip);
        assert_eq!(b.permission(at(2010)), Permission::Probe);
        assert_eq!(b.success(), Some(Transition::Closed));
        assert_eq!(b.permission(at(2011)), Permission::Call);
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn late_answers_after_opening_do_not_reopen_or_close_twice() {
        let b = Breaker::new(1, Duration::from_secs(1));
        assert_eq!(b.failure(at(0)), Some(Transition::Opened));
        // Calls that were already in flight fail too: still one opening.
        assert_eq!(b.failure(at(1)), None);
        assert_eq!(b.opened(), 1);
        assert_eq!(b.success(), Some(Transition::Closed));
        assert_eq!(b.success(), None);
    }
}
