//! Time sources.
//!
//! Every limiter reads time through a [`Clock`], as nanoseconds since the
//! clock's origin ([`Timestamp`]). A request that checks several limiters
//! reads the clock once and passes the same [`Timestamp`] to each `*_at`
//! method.
//!
//! [`MonotonicClock`] is the default: it reads the CPU's invariant time-stamp
//! counter through the `quanta` crate (falling back to the OS monotonic
//! clock where the TSC is not reliable), which measured about 4× cheaper
//! than [`std::time::Instant::now`] here (`benches/core.rs`, group `clock`);
//! the clock was most of a hot-key check's cost. [`StdClock`] wraps
//! `Instant` for anyone who prefers it. A cached clock refreshed by a
//! background thread would be cheaper still but only millisecond-accurate,
//! which distorts GCRA at high rates. [`ManualClock`] is for tests.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A point in time: nanoseconds since a clock's origin.
///
/// Timestamps from the same clock (or from two [`MonotonicClock`]s, which
/// share one process-wide origin) compare meaningfully.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// This timestamp moved `d` later, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_nanos(d)))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A monotonic source of [`Timestamp`]s.
///
/// Implementations must never go backwards. Limiters tolerate a timestamp
/// that is slightly older than one another thread already used (threads read
/// the clock at different moments), but a clock that jumps back by more than
/// a window makes decisions meaningless.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The default clock: the CPU's time-stamp counter scaled to nanoseconds,
/// against one process-wide origin, so every `MonotonicClock` shares one
/// timeline. The first use calibrates the counter (a few milliseconds).
///
/// ```
/// use floodguard::{Clock, MonotonicClock};
/// let clock = MonotonicClock;
/// let a = clock.now();
/// let b = clock.now();
/// assert!(b >= a);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct MonotonicClock;

struct Tsc {
    clock: quanta::Clock,
    origin: u64,
}

fn tsc() -> &'static Tsc {
    static TSC: OnceLock<Tsc> = OnceLock::new();
    TSC.get_or_init(|| {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Tsc { clock, origin }
    })
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Timestamp {
        let t = tsc();
        Timestamp(t.clock.delta_as_nanos(t.origin, t.clock.raw()))
    }
}

/// A clock on [`std::time::Instant`], against one process-wide origin.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdClock;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for StdClock {
    #[inline]
    fn now(&self) -> Timestamp {
        Timestamp(duration_nanos(
            Instant::now().saturating_duration_since(origin()),
        ))
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use floodguard::{Clock, ManualClock, Timestamp};
/// let clock = ManualClock::new();
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(shared.now(), Timestamp::from_nanos(5_000_000));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at [`Timestamp::ZERO`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock standing at `t`.
    pub fn starting_at(t: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicU64::new(t.0)))
    }

    /// Moves the clock forward by `d` (saturating).
    pub fn advance(&self, d: Duration) {
        let step = duration_nanos(d);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(step))
            });
    }

    /// Sets the clock to `t`. Moving it backwards is allowed for tests of
    /// that very case.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::Release);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::Acquire))
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    #[inline]
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_clocks_do_not_go_backwards_and_track_real_time() {
        for c in [&MonotonicClock as &dyn Clock, &StdClock] {
            let start = c.now();
            let mut last = start;
            for _ in 0..1000 {
                let t = c.now();
                assert!(t >= last);
                last = t;
            }
            std::thread::sleep(Duration::from_millis(20));
            let slept = c.now().saturating_duration_since(start);
            assert!(slept >= Duration::from_millis(19), "{slept:?}");
            assert!(slept < Duration::from_secs(5), "{slept:?}");
        }
    }

    #[test]
    fn manual_clock_saturates() {
        let c = ManualClock::starting_at(Timestamp::from_nanos(u64::MAX - 1));
        c.advance(Duration::from_secs(1));
        assert_eq!(c.now().as_nanos(), u64::MAX);
    }

    #[test]
    fn timestamp_arithmetic() {
        let t = Timestamp::from_nanos(10);
        assert_eq!(t.saturating_add(Duration::from_nanos(5)).as_nanos(), 15);
        assert_eq!(
            Timestamp::from_nanos(3).saturating_duration_since(t),
            Duration::ZERO
        );
    }
}
