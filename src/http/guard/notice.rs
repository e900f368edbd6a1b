//! Setup warnings the guard gives at most once per interval. A wiring
//! mistake must not stay silent: without a `tracing` subscriber installed
//! they go to standard error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Timestamp;

/// The last time a notice was given (nanoseconds + 1; 0 for never).
#[derive(Debug, Default)]
pub(crate) struct Notice {
    last: AtomicU64,
}

impl Notice {
    /// Whether a notice is due at `now`, at most one per `every`; a caller
    /// that gets `true` has claimed it and gives it.
    pub(crate) fn due(&self, now: Timestamp, every: Duration) -> bool {
        let prev = self.last.load(Ordering::Relaxed);
        let due = prev == 0 || now.as_nanos().saturating_sub(prev - 1) >= every.as_nanos() as u64;
        due && self
            .last
            .compare_exchange(
                prev,
                now.as_nanos() + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

/// Logs a setup error: to `tracing` when a subscriber is installed, else to
/// standard error.
pub(crate) fn setup_error(message: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::error!("{message}");
    } else {
        eprintln!("ERROR {message}");
    }
}

/// Logs a setup warning: to `tracing` when a subscriber is installed, else
/// to standard error.
pub(crate) fn setup_warning(message: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{message}");
    } else {
        eprintln!("WARN {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_due_once_per_interval() {
        let n = Notice::default();
        let every = Duration::from_secs(10);
        let at = |s: u64| Timestamp::from_nanos(s * 1_000_000_000);
        assert!(n.due(at(0), every));
        assert!(!n.due(at(5), every));
        assert!(n.due(at(10), every));
        assert!(!n.due(at(19), every));
    }
}
