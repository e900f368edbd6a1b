//! How a concurrency limit adapts to the service's latency: Gradient2
//! or AIMD, with their parameters.

/// Netflix's Gradient2: the limit follows the ratio of the service's
/// uncongested latency (the norm) to its latest latency.
///
/// The limit moves once per window of answers (as many as the limit, at
/// least ten): `gradient = clamp(tolerance × norm / recent, 0.5, 2)` and
/// the limit moves `smoothing` of the way to `limit × gradient`, where
/// `recent` is the window's mean latency. It falls whenever answers are
/// slower than `tolerance` × the norm, and grows while they are faster
/// only if it is in use (at least half of it was, or it shed requests).
/// So it settles where answers take about `tolerance` times the norm,
/// whatever the limit. (The original adds `√limit` to every target to
/// keep a short queue; at the small limits of a CPU-bound service, a few
/// requests at once per core, that queue made answers take 3× the norm
/// and more.)
///
/// The norm is measured by probes, as Envoy's adaptive concurrency does:
/// the limit is held at its floor (for the priorities below
/// [`Priority::High`](crate::http::Priority::High)) until 30 requests admitted since have been
/// answered, and their mean latency is the norm. Probes come before the
/// limit first falls, after the first five windows and then every 200
/// windows if the limit shed requests since the last probe ended, and
/// after 20 windows in a row slower than four times the norm (the service
/// may have become slower for good). Before the first probe the fastest
/// window stands in for the norm; after it, only probes set it. So,
/// unlike the original's long-term average, a sustained overload cannot
/// drift the norm up until the queueing looks normal, and unlike the
/// fastest window seen, a service whose latency varies a lot does not
/// look slow at any load.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Gradient2 {
    /// How much slower than the norm answers may get before the limit
    /// shrinks, and where it settles: 1.25 (Envoy's adaptive concurrency
    /// allows the same 25%).
    pub tolerance: f64,
    /// How far the limit moves towards its target per window: 0.2.
    pub smoothing: f64,
    /// Not used since the norm is measured by probes (see above); kept,
    /// and still checked to be nonzero, for configurations that set it:
    /// 600.
    pub long_window: u32,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Gradient2 {
            tolerance: 1.25,
            smoothing: 0.2,
            long_window: 600,
        }
    }
}

/// Additive increase, multiplicative decrease, once per window of answers
/// as in [`Gradient2`]: while the window's mean latency stays within
/// `tolerance` × the norm (measured by probes, as for [`Gradient2`]), the
/// limit grows by one if at least half of it was in use or it shed
/// requests; beyond, it is multiplied by `backoff`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Aimd {
    /// Multiplier on a slow answer: 0.9.
    pub backoff: f64,
    /// How much slower than usual counts as slow: 2.
    pub tolerance: f64,
    /// Not used since the norm is measured by probes; kept, and still
    /// checked to be nonzero, for configurations that set it: 600.
    pub long_window: u32,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            backoff: 0.9,
            tolerance: 2.0,
            long_window: 600,
        }
    }
}

/// How the concurrency limit adapts.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum LimitAlgorithm {
    /// [`Gradient2`] (the default).
    Gradient2(Gradient2),
    /// [`Aimd`].
    Aimd(Aimd),
}

impl LimitAlgorithm {
    /// How much slower than the norm answers may get before the limit
    /// falls.
    pub(super) fn tolerance(&self) -> f64 {
        match self {
            LimitAlgorithm::Gradient2(g) => g.tolerance,
            LimitAlgorithm::Aimd(a) => a.tolerance,
        }
    }
}

impl Default for LimitAlgorithm {
    fn default() -> Self {
        LimitAlgorithm::Gradient2(Gradient2::default())
    }
}
