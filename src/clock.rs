//! Time sources.
//!
//! Every limiter reads time through a [`Clock`], as nanoseconds since the
//! clock's origin ([`Timestamp`]). A request that checks several limiters
//! reads the clock once and passes the same [`Timestamp`] to each `*_at`
//! method.
//!
//! Measured here (`benches/core.rs`, group `clock`): `Instant::now` about
//! 25 ns, the CPU's time-stamp counter through `quanta` about 10 ns, and a
//! value a background thread refreshes every millisecond 0.3 ns. The clock
//! was the largest part of a hot-key check, so the default is that cached
//! [`CoarseClock`]: web rate limits do not need sub-millisecond time (nginx
//! and HAProxy decide on millisecond time too), and builders refuse quotas
//! that would. [`MonotonicClock`] (TSC, exact) and [`StdClock`] (`Instant`)
//! are there for quotas that need nanoseconds; [`ManualClock`] is for tests.

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

    /// The smallest step the clock moves by; builders check quotas against
    /// it. Exact clocks keep the default of one nanosecond.
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
}

/// An exact clock: the CPU's time-stamp counter scaled to nanoseconds,
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

/// The default clock: read from memory. A background thread stores the
/// [`MonotonicClock`] time every millisecond, so reading it is one load
/// (0.3 ns, against 10 ns for the TSC and 25 ns for `Instant::now` here).
///
/// Same timeline as [`MonotonicClock`], at most about a millisecond behind
/// (more if the machine is too busy to run the thread on time); nginx and
/// HAProxy also decide on millisecond time. One consequence: all requests
/// within one tick see the same instant, so a GCRA rule admits at most
/// `burst` per tick. Builders therefore refuse a GCRA quota whose burst
/// spans less than one tick (`burst × period / rate < 1 ms`) and a window
/// shorter than a tick; use [`MonotonicClock`] for such quotas.
///
/// The thread (`floodguard-clock`) starts with the first `CoarseClock` and
/// runs until the process exits. If it cannot be spawned, reads fall back
/// to the exact clock.
///
/// ```
/// use floodguard::{Clock, CoarseClock, MonotonicClock};
/// let coarse = CoarseClock::new();
/// let exact = MonotonicClock.now();
/// let lag = exact.saturating_duration_since(coarse.now());
/// assert!(lag < std::time::Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct CoarseClock(());

/// How often the coarse clock is refreshed: its resolution.
pub const COARSE_TICK: Duration = Duration::from_millis(1);

/// The latest tick; 0 means "no refresh thread, read the exact clock".
static RECENT: AtomicU64 = AtomicU64::new(0);

fn tick() {
    // Never 0, which means "not running".
    RECENT.store(MonotonicClock.now().0.max(1), Ordering::Release);
}

impl CoarseClock {
    /// Starts the refresh thread if it is not running yet.
    pub fn new() -> Self {
        static STARTED: OnceLock<()> = OnceLock::new();
        STARTED.get_or_init(|| {
            tick();
            let spawned = std::thread::Builder::new()
                .name("floodguard-clock".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(COARSE_TICK);
                        tick();
                    }
                });
            if spawned.is_err() {
                RECENT.store(0, Ordering::Release);
            }
        });
        CoarseClock(())
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> Timestamp {
        match RECENT.load(Ordering::Acquire) {
            0 => MonotonicClock.now(),
            t => Timestamp(t),
        }
    }

    fn resolution(&self) -> Duration {
        COARSE_TICK
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

    fn resolution(&self) -> Duration {
        (**self).resolution()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    #[inline]
    fn now(&self) -> Timestamp {
        (**self).now()
    }

    fn resolution(&self) -> Duration {
        (**self).resolution()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_clocks_do_not_go_backwards_and_track_real_time() {
        for c in [
            &MonotonicClock as &dyn Clock,
            &StdClock,
            &CoarseClock::new(),
        ] {
            let start = c.now();
            let mut last = start;
            for _ in 0..1000 {
                let t = c.now();
                assert!(t >= last);
                last = t;
            }
            std::thread::sleep(Duration::from_millis(20));
            let slept = c.now().saturating_duration_since(start);
            // The coarse clock may lag a tick (or a busy scheduler) behind.
            assert!(slept >= Duration::from_millis(15), "{slept:?}");
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
