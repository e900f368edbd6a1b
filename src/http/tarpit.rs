//! Holding a blocked client's refusal for a while before sending it.
//!
//! A flood tool waits for each answer before it sends the next request on
//! a connection. Answered at once, a banned client gets a refusal every few
//! microseconds and keeps the service busy refusing it; held for a second,
//! each of its connections costs one refusal a second. That matters most
//! where the connection cannot be closed: behind a trusted proxy (the
//! proxy's connection carries other clients too) and on HTTP/2. Holding
//! costs a timer and a small future per request, never a thread, and the
//! number held at once is capped: past the cap, refusals go out at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How long refusals of blocked clients (blocklisted or banned, the 403 /
/// `PERMISSION_DENIED` answers) are held before they are sent, and how
/// many may be held at once. Set with
/// [`GuardBuilder::tarpit`](crate::http::GuardBuilder::tarpit).
///
/// The default holds each for one second, at most 1,024 at once. Rate-limit
/// refusals (429) and overload refusals (503) are never held: those
/// clients may be legitimate, and a refused request's `Retry-After` tells
/// them when to come back.
///
/// ```
/// use std::time::Duration;
/// use floodguard::http::{Guard, Tarpit};
///
/// let guard = Guard::builder()
///     .tarpit(Tarpit::new(Duration::from_secs(2), 4_096))
///     .build()?;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Tarpit {
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    hold: Duration,
    max_held: usize,
}

impl Tarpit {
    /// Holds each blocked client's refusal for `hold`, at most `max_held`
    /// at once (each held refusal is a pending response: on HTTP/1 it
    /// keeps its connection, and so a file descriptor, until sent).
    pub const fn new(hold: Duration, max_held: usize) -> Self {
        Tarpit { hold, max_held }
    }

    /// Sends every refusal at once.
    pub const fn off() -> Self {
        Tarpit {
            hold: Duration::ZERO,
            max_held: 0,
        }
    }

    /// How long a refusal is held.
    pub const fn hold(&self) -> Duration {
        self.hold
    }

    /// How many refusals may be held at once.
    pub const fn max_held(&self) -> usize {
        self.max_held
    }

    fn is_on(&self) -> bool {
        !self.hold.is_zero() && self.max_held > 0
    }
}

impl Default for Tarpit {
    fn default() -> Self {
        Tarpit::new(Duration::from_secs(1), 1_024)
    }
}

/// The tarpit's counters, in [`GuardStats`](crate::http::GuardStats).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TarpitStats {
    /// Refusals held so far.
    pub held: u64,
    /// Refusals sent at once because the most allowed were already held.
    pub full: u64,
    /// Refusals held now.
    pub holding: usize,
}

/// A guard's tarpit: its setting and what it holds.
#[derive(Debug)]
pub(crate) struct TarpitState {
    config: Tarpit,
    holding: Arc<AtomicUsize>,
    held: AtomicU64,
    full: AtomicU64,
}

impl TarpitState {
    pub(crate) fn new(config: Tarpit) -> Self {
        TarpitState {
            config,
            holding: Arc::new(AtomicUsize::new(0)),
            held: AtomicU64::new(0),
            full: AtomicU64::new(0),
        }
    }

    /// The setting.
    pub(crate) fn config(&self) -> Tarpit {
        self.config
    }

    /// A place to hold one refusal, and for how long; `None` when the
    /// tarpit is off or full (counted).
    pub(crate) fn hold(&self) -> Option<(Duration, Held)> {
        if !self.config.is_on() {
            return None;
        }
        let max = self.config.max_held;
        let taken = self
            .holding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            self.full.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        Some((
            self.config.hold,
            Held {
                holding: Arc::clone(&self.holding),
            },
        ))
    }

    /// Refusals held now (each keeps its descriptor).
    pub(crate) fn holding(&self) -> usize {
        self.holding.load(Ordering::Acquire)
    }

    pub(crate) fn stats(&self) -> TarpitStats {
        TarpitStats {
            held: self.held.load(Ordering::Relaxed),
            full: self.full.load(Ordering::Relaxed),
            holding: self.holding(),
        }
    }
}

/// One held refusal's place, given back when it is dropped: when the
/// refusal is sent, or when the client goes away first.
#[derive(Debug)]
pub(crate) struct Held {
    holding: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.holding.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_up_to_the_cap_and_gives_places_back() {
        let t = TarpitState::new(Tarpit::new(Duration::from_millis(5), 2));
        let a = t.hold().expect("first");
        let b = t.hold().expect("second");
        assert_eq!(a.0, Duration::from_millis(5));
        assert!(t.hold().is_none(), "full");
        assert_eq!(
            t.stats(),
            TarpitStats {
                held: 2,
                full: 1,
                holding: 2
            }
        );
        drop(a);
        let c = t.hold().expect("a place came back");
        drop((b, c));
        assert_eq!(t.stats().holding, 0);
        assert_eq!(t.stats().held, 3);
    }

    #[test]
    fn off_holds_nothing() {
        for config in [
            Tarpit::off(),
            Tarpit::new(Duration::ZERO, 10),
            Tarpit::new(Duration::from_secs(1), 0),
        ] {
            let t = TarpitState::new(config);
            assert!(t.hold().is_none());
            assert_eq!(t.stats(), TarpitStats::default(), "off is not full");
        }
    }
}
