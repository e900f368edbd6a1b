//! What a limiter says about one request.

use std::time::Duration;

/// The answer to "may this key make this request now?".
///
/// Counts are in cost units (one per request unless you pass a cost).
/// Durations are exact to the nanosecond; [`Decision::retry_after_secs`]
/// rounds up for `Retry-After` headers, so a denied client is never told to
/// retry at once.
#[derive(Clone, Copy)]
pub struct Decision {
    limit: u64,
    /// `remaining = room / unit`, divided only when asked: most callers only
    /// look at `is_allowed`, and the division was a tenth of a check.
    room: u64,
    /// Never 0.
    unit: u64,
    reset_after: u64,
    /// 0 iff admitted: a denial always asks for a positive wait. (A
    /// separate flag cost a byte store and a padded copy on every check.)
    retry_after: u64,
}

impl Decision {
    fn key(&self) -> (bool, u64, u64, u64, u64) {
        (
            self.is_allowed(),
            self.limit,
            self.remaining(),
            self.reset_after,
            self.retry_after,
        )
    }
}

impl PartialEq for Decision {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Decision {}

impl std::hash::Hash for Decision {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decision")
            .field("allowed", &self.is_allowed())
            .field("limit", &self.limit)
            .field("remaining", &self.remaining())
            .field("reset_after", &self.reset_after())
            .field("retry_after", &self.retry_after())
            .finish()
    }
}

/// `retry_after` value meaning the request can never be admitted (its cost
/// exceeds the limit).
const NEVER: u64 = u64::MAX;

impl Decision {
    /// Admitted; `room / unit` units remain (`unit ≥ 1`).
    #[inline(always)]
    pub(crate) fn allow(limit: u64, room: u64, unit: u64, reset_after: u64) -> Self {
        Decision {
            limit,
            room,
            unit,
            reset_after,
            retry_after: 0,
        }
    }

    pub(crate) fn deny(
        limit: u64,
        (room, unit): (u64, u64),
        reset_after: u64,
        retry_after: u64,
    ) -> Self {
        Decision {
            limit,
            room,
            unit,
            reset_after,
            // A denial always asks for a positive wait.
            retry_after: retry_after.max(1),
        }
    }

    pub(crate) fn never(limit: u64, room: (u64, u64), reset_after: u64) -> Self {
        Self::deny(limit, room, reset_after, NEVER)
    }

    /// Every field, for tests that compare decisions bit for bit:
    /// `(allowed, limit, room, unit, reset_after, retry_after)`.
    #[cfg(test)]
    pub(crate) fn parts(&self) -> (bool, u64, u64, u64, u64, u64) {
        (
            self.is_allowed(),
            self.limit,
            self.room,
            self.unit,
            self.reset_after,
            self.retry_after,
        )
    }

    /// Whether the request was admitted (and charged).
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.retry_after == 0
    }

    /// Whether the request was refused (and not charged).
    #[inline]
    pub fn is_denied(&self) -> bool {
        !self.is_allowed()
    }

    /// The limit in force: requests per window, or the GCRA burst.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Cost units the key may still spend right now (after this request, if
    /// it was admitted).
    pub fn remaining(&self) -> u64 {
        self.room / self.unit.max(1)
    }

    /// Time until the key is back to its full allowance if it sends nothing
    /// more.
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after)
    }

    /// For a denial, the shortest wait after which the same request would be
    /// admitted if nothing else arrived for this key; `None` when admitted.
    /// [`Duration::MAX`] if the cost exceeds the limit and it never will be.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.retry_after {
            0 => None,
            NEVER => Some(Duration::MAX),
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// [`Decision::retry_after`] in whole seconds rounded up: at least 1 for
    /// a denial, 0 when admitted. Suitable for a `Retry-After` header.
    pub fn retry_after_secs(&self) -> u64 {
        // 0 when admitted; a positive wait rounds up to at least 1.
        self.retry_after.div_ceil(1_000_000_000)
    }

    /// Whether this request's cost exceeds the limit, so it can never be
    /// admitted whatever the wait.
    pub fn exceeds_limit(&self) -> bool {
        self.retry_after == NEVER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let d = Decision::deny(10, (0, 1), 5, 1);
        assert_eq!(d.retry_after_secs(), 1);
        let d = Decision::deny(10, (0, 1), 5, 1_000_000_001);
        assert_eq!(d.retry_after_secs(), 2);
        let d = Decision::deny(10, (0, 1), 5, 0);
        assert_eq!(d.retry_after(), Some(Duration::from_nanos(1)));
        assert_eq!(Decision::allow(10, 7, 2, 5).remaining(), 3);
        assert_eq!(Decision::allow(10, 6, 2, 5), Decision::allow(10, 3, 1, 5));
        assert_eq!(Decision::allow(10, 3, 1, 5).retry_after(), None);
        assert_eq!(Decision::allow(10, 3, 1, 5).retry_after_secs(), 0);
        let never = Decision::never(1, (1, 1), 0);
        assert!(never.exceeds_limit());
        assert_eq!(never.retry_after(), Some(Duration::MAX));
    }
}
