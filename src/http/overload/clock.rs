//! A clock on Tokio's time, so that rules, scores and detection follow
//! the same simulated time as overload's latencies in tests.

/// A [`Clock`](crate::Clock) on Tokio's time: with Tokio's clock paused
/// (`#[tokio::test(start_paused = true)]`), rules, scores and detection
/// follow the same simulated time as the service's latencies, which
/// overload protection always measures on Tokio's clock.
///
/// ```
/// use floodguard::Clock;
/// use floodguard::http::{Guard, TokioClock};
/// let guard = Guard::builder().default_rules().clock(TokioClock::new()).build()?;
/// # let _ = guard;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::Clock for TokioClock {
    fn now(&self) -> crate::Timestamp {
        let d = self.origin.elapsed();
        crate::Timestamp::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}
