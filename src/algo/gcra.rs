//! GCRA: the generic cell rate algorithm (a token bucket kept as one time).
//!
//! A key admits `rate` cost units per `period` on average, and up to `burst`
//! at once after being idle. The emission interval is
//! `T = ⌈period / rate⌉` ns (rounded up, so the rate is never exceeded). The
//! state is the theoretical arrival time `TAT` in clock nanoseconds: the time
//! at which the key's allowance is fully used if it keeps spending at rate.
//! A request of cost `n` at `t` is admitted iff
//!
//! ```text
//! max(TAT, t) + n·T − t ≤ burst·T
//! ```
//!
//! and then `TAT := max(TAT, t) + n·T`. This is exact: it admits the same
//! requests as a token bucket of size `burst` refilled by one token every
//! `T`, with no rounding (property-tested against a textbook model).

use super::Outcome;
use crate::decision::Decision;
use crate::error::ConfigError;
use std::time::Duration;

/// `burst · T` must stay below this, and timestamps are clamped to it (2^62
/// ns, 146 years of uptime), so `TAT` always fits below `u64::MAX`.
const MAX_TOLERANCE: u64 = 1 << 62;

/// GCRA parameters; a pure state machine over one `u64` (the TAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    rate: u64,
    period_nanos: u64,
    burst: u64,
    /// Emission interval `T` in ns.
    interval: u64,
    /// `burst · T`.
    tolerance: u64,
}

impl Gcra {
    /// `rate` cost units per `period`, up to `burst` at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::algo::Gcra;
    /// // 5 logins a minute, 3 at once.
    /// let g = Gcra::new(5, Duration::from_secs(60), 3).unwrap();
    /// assert_eq!(g.interval(), Duration::from_secs(12));
    /// ```
    pub fn new(rate: u64, period: Duration, burst: u64) -> Result<Self, ConfigError> {
        if rate == 0 {
            return Err(ConfigError::Zero { field: "rate" });
        }
        if burst == 0 {
            return Err(ConfigError::Zero { field: "burst" });
        }
        let period_nanos = crate::clock::duration_nanos(period);
        if period_nanos == 0 {
            return Err(ConfigError::ZeroDuration { field: "period" });
        }
        let interval = period_nanos.div_ceil(rate);
        if rate > period_nanos {
            return Err(ConfigError::RateTooHigh { rate, period_nanos });
        }
        let tolerance = burst
            .checked_mul(interval)
            .filter(|t| *t < MAX_TOLERANCE)
            .ok_or(ConfigError::BurstOverflow {
                burst,
                interval_nanos: interval,
            })?;
        Ok(Gcra {
            rate,
            period_nanos,
            burst,
            interval,
            tolerance,
        })
    }

    /// Sustained rate: cost units per [`Gcra::period`].
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The period over which [`Gcra::rate`] applies.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_nanos)
    }

    /// Largest cost admitted at once after idling.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Time between two admissions at the sustained rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    /// Decides a request of `cost` at `now` (ns) against `state` (the TAT,
    /// `None` for a fresh key). Returns the decision and, if admitted, the
    /// new TAT.
    #[inline(always)]
    pub fn check(&self, state: Option<u64>, now: u64, cost: u64) -> Outcome {
        // Clamped so that `now + tolerance` fits and never reaches u64::MAX,
        // the value that marks a slot being replaced.
        let now = now.min(MAX_TOLERANCE);
        let tat = state.map_or(now, |s| s.max(now));
        let backlog = tat - now;
        // `cost ≤ burst` first, so `cost · T` cannot overflow.
        if cost <= self.burst && backlog + cost * self.interval <= self.tolerance {
            let after = backlog + cost * self.interval;
            Outcome {
                decision: Decision::allow(self.burst, self.tolerance - after, self.interval, after),
                state: Some(now + after),
            }
        } else {
            Outcome::unchanged(self.refuse(backlog, cost))
        }
    }

    /// The denial: kept out of line, the admit path is the hot one.
    #[cold]
    #[inline(never)]
    fn refuse(&self, backlog: u64, cost: u64) -> Decision {
        let remaining = (self.tolerance.saturating_sub(backlog), self.interval);
        if cost > self.burst {
            return Decision::never(self.burst, remaining, backlog);
        }
        let after = backlog + cost * self.interval;
        Decision::deny(self.burst, remaining, backlog, after - self.tolerance)
    }

    /// Gives back `cost` charged earlier. Returns the new TAT.
    pub fn refund(&self, state: u64, now: u64, cost: u64) -> u64 {
        state
            .saturating_sub(cost.saturating_mul(self.interval))
            .max(now.min(state))
    }

    /// How much the state still matters: `TAT − now`, 0 once the key is back
    /// to its full burst (the entry carries no information).
    pub fn heat(&self, state: u64, now: u64) -> u64 {
        state.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_then_steady_rate() {
        let g = Gcra::new(5, Duration::from_secs(60), 3).unwrap();
        let mut st = None;
        for i in 0..3 {
            let o = g.check(st, 0, 1);
            assert!(o.decision.is_allowed(), "{i}");
            assert_eq!(o.decision.remaining(), 2 - i);
            st = o.state;
        }
        let d = g.check(st, 0, 1).decision;
        assert!(d.is_denied());
        assert_eq!(d.retry_after(), Some(Duration::from_secs(12)));
        assert_eq!(d.reset_after(), Duration::from_secs(36));
        assert!(g.check(st, 12 * SEC - 1, 1).decision.is_denied());
        assert!(g.check(st, 12 * SEC, 1).decision.is_allowed());
    }

    #[test]
    fn interval_rounds_up() {
        let g = Gcra::new(3, Duration::from_nanos(10), 1).unwrap();
        assert_eq!(g.interval(), Duration::from_nanos(4));
    }

    #[test]
    fn refund_restores_allowance() {
        let g = Gcra::new(1, Duration::from_secs(1), 2).unwrap();
        let st = g.check(None, 100, 2).state.unwrap();
        assert!(g.check(Some(st), 100, 1).decision.is_denied());
        let back = g.refund(st, 100, 1);
        assert!(g.check(Some(back), 100, 1).decision.is_allowed());
        assert_eq!(g.heat(g.refund(st, 100, 2), 100), 0);
    }

    #[test]
    fn errors_name_the_field() {
        let d = Duration::from_secs(1);
        assert!(
            Gcra::new(0, d, 1)
                .unwrap_err()
                .to_string()
                .contains("`rate`")
        );
        assert!(
            Gcra::new(1, d, 0)
                .unwrap_err()
                .to_string()
                .contains("`burst`")
        );
        assert!(
            Gcra::new(1, Duration::ZERO, 1)
                .unwrap_err()
                .to_string()
                .contains("`period`")
        );
        assert!(matches!(
            Gcra::new(1, Duration::from_secs(1 << 40), 1 << 40),
            Err(ConfigError::BurstOverflow { .. })
        ));
        assert!(matches!(
            Gcra::new(2_000_000_000, d, 1),
            Err(ConfigError::RateTooHigh { .. })
        ));
    }
}
