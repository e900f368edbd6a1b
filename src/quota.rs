//! `Quota`: one rate limit as a value, the same for every builder.

use crate::algo::{Algorithm, Gcra, SlidingWindow};
use crate::clock::duration_nanos;
use crate::error::ConfigError;
use std::time::Duration;

/// A rate limit as a value: a sliding window (`limit` per `window`) or GCRA
/// (`rate` per `period`, with a burst).
///
/// The one quota type of the crate: [`KeyedLimiter`](crate::KeyedLimiter)'s
/// builder, a guard's [`Rule`](crate::http::Rule) and the Redis
/// [`SharedLimiter`](crate::redis::SharedLimiter)'s builder each take one
/// with `.quota(q)`, and their `.sliding_window(..)`, `.gcra(..)` and
/// `.burst(..)` are shorthands that set it. Write a quota once, use it
/// everywhere:
///
/// ```
/// use std::time::Duration;
/// use floodguard::{KeyedLimiter, Quota};
///
/// // 5 a minute on average, 3 at once.
/// const LOGIN: Quota = Quota::gcra(5, Duration::from_secs(60)).burst(3);
///
/// let limiter = KeyedLimiter::<str>::builder().quota(LOGIN).build()?;
/// assert_eq!(limiter.check("alice").remaining(), 2);
/// assert_eq!((LOGIN.limit(), LOGIN.window()), (3, Duration::from_secs(36)));
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
///
/// Making a quota checks nothing. [`Quota::algorithm`] checks it (every
/// builder calls it in `build()`, so errors name the same fields
/// everywhere) and turns it into the [`Algorithm`] that runs it: the quota
/// is what was asked for, the algorithm the checked, precomputed state
/// machine in force. `Quota::from(algorithm)` goes back.
///
/// ```
/// use std::time::Duration;
/// use floodguard::{ConfigError, Quota};
///
/// let err = Quota::sliding_window(100, Duration::ZERO).algorithm().unwrap_err();
/// assert_eq!(err, ConfigError::ZeroDuration { field: "window" });
/// let err = Quota::sliding_window(100, Duration::from_secs(1)).burst(10).algorithm();
/// assert_eq!(err.unwrap_err(), ConfigError::BurstWithoutGcra);
/// ```
///
/// Equality compares what was given: `Quota::gcra(5, d)` and
/// `Quota::gcra(5, d).burst(5)` limit alike but are not equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    pub(crate) kind: Kind,
    /// The burst if one was given: GCRA's defaults to its rate, and a
    /// sliding window's is refused by [`Quota::algorithm`].
    pub(crate) burst: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// No algorithm chosen yet: only builders start from it (it is not
    /// public), and [`Quota::algorithm`] refuses it.
    Unset,
    SlidingWindow {
        limit: u64,
        window: Duration,
    },
    Gcra {
        rate: u64,
        period: Duration,
    },
}

impl Quota {
    /// What a builder holds before a quota is given: `build()` reports
    /// [`ConfigError::MissingAlgorithm`].
    pub(crate) const UNSET: Quota = Quota {
        kind: Kind::Unset,
        burst: None,
    };

    /// At most `limit` cost units per `window`, counted with the two-window
    /// weighted counter ([`SlidingWindow`]). Its burst is its limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::Quota;
    /// let q = Quota::sliding_window(100, Duration::from_secs(60));
    /// assert_eq!(q.limit(), 100);
    /// assert_eq!(q.algorithm()?.limit(), 100);
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub const fn sliding_window(limit: u64, window: Duration) -> Self {
        Quota {
            kind: Kind::SlidingWindow { limit, window },
            burst: None,
        }
    }

    /// `rate` cost units per `period` on average, with GCRA ([`Gcra`]); the
    /// burst defaults to `rate` (a full period's worth at once).
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::Quota;
    /// let q = Quota::gcra(20, Duration::from_secs(1));
    /// assert_eq!(q.limit(), 20);
    /// assert_eq!(q.window(), Duration::from_secs(1));
    /// ```
    pub const fn gcra(rate: u64, period: Duration) -> Self {
        Quota {
            kind: Kind::Gcra { rate, period },
            burst: None,
        }
    }

    /// GCRA only: how many cost units a key may spend at once after
    /// idling. [`Quota::algorithm`] refuses a burst on a sliding window
    /// ([`ConfigError::BurstWithoutGcra`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::Quota;
    /// let q = Quota::gcra(20, Duration::from_secs(1)).burst(40);
    /// assert_eq!(q.limit(), 40);
    /// assert_eq!(q.window(), Duration::from_secs(2));
    /// ```
    pub const fn burst(self, burst: u64) -> Self {
        Quota {
            kind: self.kind,
            burst: Some(burst),
        }
    }

    /// Checks the quota and builds the algorithm that runs it. The one
    /// place quotas are checked: the builders report exactly these errors.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad field: [`Zero`](ConfigError::Zero)
    /// (`limit`, `rate`, `burst`), [`ZeroDuration`](ConfigError::ZeroDuration)
    /// (`window`, `period`), [`TooLarge`](ConfigError::TooLarge),
    /// [`WindowTooShort`](ConfigError::WindowTooShort),
    /// [`RateTooHigh`](ConfigError::RateTooHigh),
    /// [`BurstOverflow`](ConfigError::BurstOverflow), or
    /// [`BurstWithoutGcra`](ConfigError::BurstWithoutGcra).
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::{ConfigError, Quota};
    /// use floodguard::algo::Algorithm;
    ///
    /// let a = Quota::gcra(5, Duration::from_secs(60)).burst(3).algorithm()?;
    /// assert!(matches!(a, Algorithm::Gcra(g) if g.interval() == Duration::from_secs(12)));
    /// assert_eq!(
    ///     Quota::gcra(0, Duration::from_secs(1)).algorithm(),
    ///     Err(ConfigError::Zero { field: "rate" })
    /// );
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn algorithm(&self) -> Result<Algorithm, ConfigError> {
        Ok(match self.kind {
            Kind::Unset => return Err(ConfigError::MissingAlgorithm),
            Kind::SlidingWindow { limit, window } => {
                if self.burst.is_some() {
                    return Err(ConfigError::BurstWithoutGcra);
                }
                SlidingWindow::new(limit, window)?.into()
            }
            Kind::Gcra { rate, period } => {
                Gcra::new(rate, period, self.burst.unwrap_or(rate))?.into()
            }
        })
    }

    /// The most a key may spend at once: the sliding window's limit, or the
    /// GCRA burst. Decisions report it as their limit, and a guard rule's
    /// `RateLimit-Policy` header as its `q`.
    pub const fn limit(&self) -> u64 {
        match self.kind {
            Kind::Unset => 0,
            Kind::SlidingWindow { limit, .. } => limit,
            Kind::Gcra { rate, .. } => match self.burst {
                Some(burst) => burst,
                None => rate,
            },
        }
    }

    /// The time a key's whole [`limit`](Self::limit) takes to come back:
    /// the sliding window, or the time GCRA takes to refill its burst
    /// (`burst` emission intervals of `period / rate`, rounded up to the
    /// nanosecond as [`Gcra`] does). A guard rule's `RateLimit-Policy`
    /// header gives it as `w`, in seconds rounded up; a near-cached
    /// [`SharedLimiter`](crate::redis::SharedLimiter) reports it as the
    /// reset of an admission.
    pub fn window(&self) -> Duration {
        match self.kind {
            Kind::Unset => Duration::ZERO,
            Kind::SlidingWindow { window, .. } => window,
            Kind::Gcra { rate, period } => {
                let interval = duration_nanos(period).div_ceil(rate.max(1));
                Duration::from_nanos(interval.saturating_mul(self.limit()))
            }
        }
    }

    /// `q`'s algorithm with the burst given so far: what a builder's
    /// `.sliding_window(..)` and `.gcra(..)` do to its quota, so that its
    /// `.burst(b)` may come before or after them.
    pub(crate) const fn switch_to(self, q: Quota) -> Quota {
        Quota {
            kind: q.kind,
            burst: self.burst,
        }
    }
}

/// The quota an algorithm runs: its parameters in force (a sliding window
/// rounded as [`SlidingWindow::window`] says, a GCRA burst always given).
impl From<Algorithm> for Quota {
    fn from(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::SlidingWindow(a) => Quota::sliding_window(a.limit(), a.window()),
            Algorithm::Gcra(a) => Quota::gcra(a.rate(), a.period()).burst(a.burst()),
        }
    }
}

/// [`Quota::algorithm`].
impl TryFrom<Quota> for Algorithm {
    type Error = ConfigError;

    fn try_from(quota: Quota) -> Result<Self, ConfigError> {
        quota.algorithm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn errors_name_the_field() {
        let err = |q: Quota| q.algorithm().unwrap_err();
        assert_eq!(err(Quota::UNSET), ConfigError::MissingAlgorithm);
        assert_eq!(
            err(Quota::UNSET.burst(3)),
            ConfigError::MissingAlgorithm,
            "a burst alone chooses no algorithm"
        );
        assert_eq!(
            err(Quota::sliding_window(0, SEC)),
            ConfigError::Zero { field: "limit" }
        );
        assert_eq!(
            err(Quota::sliding_window(1, Duration::ZERO)),
            ConfigError::ZeroDuration { field: "window" }
        );
        assert!(matches!(
            err(Quota::sliding_window(1 << 24, SEC)),
            ConfigError::TooLarge { field: "limit", .. }
        ));
        assert!(matches!(
            err(Quota::sliding_window(1_000_000, Duration::from_nanos(100))),
            ConfigError::WindowTooShort { .. }
        ));
        // A sliding window's burst is refused before its fields are read.
        assert_eq!(
            err(Quota::sliding_window(0, SEC).burst(2)),
            ConfigError::BurstWithoutGcra
        );
        assert_eq!(
            err(Quota::gcra(0, SEC)),
            ConfigError::Zero { field: "rate" }
        );
        assert_eq!(
            err(Quota::gcra(1, SEC).burst(0)),
            ConfigError::Zero { field: "burst" }
        );
        assert_eq!(
            err(Quota::gcra(1, Duration::ZERO)),
            ConfigError::ZeroDuration { field: "period" }
        );
        assert_eq!(
            err(Quota::gcra(11, Duration::from_nanos(10))),
            ConfigError::RateTooHigh {
                rate: 11,
                period_nanos: 10
            }
        );
        assert!(matches!(
            err(Quota::gcra(1, Duration::from_secs(1 << 40)).burst(1 << 40)),
            ConfigError::BurstOverflow { .. }
        ));
        assert_eq!(
            Algorithm::try_from(Quota::gcra(0, SEC)),
            Err(ConfigError::Zero { field: "rate" })
        );
    }

    #[test]
    fn quotas_become_the_algorithms_the_builders_built() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            Quota::sliding_window(100, minute).algorithm(),
            Ok(SlidingWindow::new(100, minute).unwrap().into())
        );
        // GCRA's burst defaults to its rate.
        assert_eq!(
            Quota::gcra(5, minute).algorithm(),
            Ok(Gcra::new(5, minute, 5).unwrap().into())
        );
        assert_eq!(
            Quota::gcra(5, minute).burst(3).algorithm(),
            Ok(Gcra::new(5, minute, 3).unwrap().into())
        );
        assert_eq!(Algorithm::try_from(Quota::gcra(5, minute).burst(3)), {
            Quota::gcra(5, minute).burst(3).algorithm()
        });
        // The last burst counts; a burst set before the algorithm is kept.
        assert_eq!(
            Quota::gcra(5, minute).burst(9).burst(3),
            Quota::gcra(5, minute).burst(3)
        );
        assert_eq!(
            Quota::UNSET.burst(3).switch_to(Quota::gcra(5, minute)),
            Quota::gcra(5, minute).burst(3)
        );
        assert_eq!(
            Quota::gcra(5, minute)
                .burst(3)
                .switch_to(Quota::sliding_window(5, minute))
                .algorithm(),
            Err(ConfigError::BurstWithoutGcra)
        );
    }

    #[test]
    fn algorithms_give_their_quota_back() {
        let quotas = [
            Quota::sliding_window(100, Duration::from_secs(60)),
            Quota::sliding_window(1, Duration::from_millis(1)),
            Quota::gcra(5, Duration::from_secs(60)).burst(3),
            Quota::gcra(3, Duration::from_nanos(10)).burst(1),
        ];
        for q in quotas {
            let a = q.algorithm().unwrap();
            assert_eq!(Quota::from(a), q);
            assert_eq!(Quota::from(a).algorithm(), Ok(a));
        }
        // The burst in force is given back, and a sliding window's window
        // as in force: rounded down to whole units past 2^32 ns.
        let a = Quota::gcra(5, SEC).algorithm().unwrap();
        assert_eq!(Quota::from(a), Quota::gcra(5, SEC).burst(5));
        let long = Duration::from_nanos((1 << 40) + 5);
        let a = Quota::sliding_window(10, long).algorithm().unwrap();
        assert_eq!(
            Quota::from(a),
            Quota::sliding_window(10, Duration::from_nanos(1 << 40))
        );
        assert_eq!(Quota::from(a).algorithm(), Ok(a));
    }

    #[test]
    fn limit_and_window_match_the_algorithm() {
        let quotas = [
            Quota::sliding_window(100, Duration::from_secs(60)),
            Quota::gcra(5, Duration::from_secs(60)),
            Quota::gcra(5, Duration::from_secs(60)).burst(3),
            // Emission interval 4 ns, rounded up.
            Quota::gcra(3, Duration::from_nanos(10)).burst(2),
            Quota::gcra(1_000_000_000, SEC).burst(5_000_000_000),
        ];
        for q in quotas {
            let a = q.algorithm().unwrap();
            assert_eq!(q.limit(), a.limit(), "{q:?}");
            let window = match a {
                Algorithm::SlidingWindow(s) => s.window(),
                Algorithm::Gcra(g) => {
                    Duration::from_nanos(duration_nanos(g.interval()) * g.burst())
                }
            };
            assert_eq!(q.window(), window, "{q:?}");
        }
        assert_eq!(
            Quota::gcra(3, Duration::from_nanos(10)).burst(2).window(),
            Duration::from_nanos(8)
        );
        // Quotas that do not validate still answer, without panicking.
        assert_eq!(Quota::gcra(0, SEC).window(), Duration::ZERO);
        assert_eq!(Quota::UNSET.limit(), 0);
        assert_eq!(Quota::UNSET.window(), Duration::ZERO);
    }
}
