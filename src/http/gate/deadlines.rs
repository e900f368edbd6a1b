//! The gate's deadlines: how long a request head may take and a
//! keep-alive connection may stay idle.

use std::time::Duration;

/// How long a connection may take over a request head, and stay idle
/// between requests; set with
/// [`GateBuilder::deadlines`](crate::http::GateBuilder::deadlines).
///
/// The default gives a request head 10 seconds from the connection's
/// accept (or from the first byte of a later head on a keep-alive
/// connection), plus a second for every 500 bytes received, up to 30
/// seconds in all (Apache `mod_reqtimeout`'s `header=20-40,MinRate=500`
/// in spirit, HAProxy's usual `timeout http-request 10s`), and closes a
/// keep-alive connection after 60 seconds without a byte either way
/// (nginx `keepalive_timeout` is 75 s). A browser sends a head in one
/// packet right after connecting; a slowloris client trickles one for
/// ever.
///
/// Under descriptor pressure (see
/// [`GateBuilder::descriptor_budget`](crate::http::GateBuilder::descriptor_budget))
/// each of these shrinks, to a tenth at the budget.
///
/// ```
/// use std::time::Duration;
/// use floodguard::http::{Deadlines, Gate};
///
/// let gate = Gate::builder()
///     .deadlines(Deadlines::default().head(Duration::from_secs(5)).keep_alive(Duration::from_secs(20)))
///     .build()?;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Deadlines {
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration::or_off"))]
    head: Option<Duration>,
    min_rate: u32,
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    head_max: Duration,
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration::or_off"))]
    pub(super) keep_alive: Option<Duration>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            head: Some(Duration::from_secs(10)),
            min_rate: 500,
            head_max: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(60)),
        }
    }
}

impl Deadlines {
    /// No deadline: a head may take for ever and an idle connection stays
    /// open. The descriptor budget still closes the longest waiting
    /// connections when it is full.
    pub const fn off() -> Self {
        Deadlines {
            head: None,
            min_rate: 0,
            head_max: Duration::ZERO,
            keep_alive: None,
        }
    }

    /// A request head must be complete this long after its start (before
    /// the minimum rate's extension).
    pub const fn head(mut self, d: Duration) -> Self {
        self.head = Some(d);
        self
    }

    /// Every `bytes_per_second` bytes of a head received extend its
    /// deadline by a second, up to `up_to` in all; 0 turns the extension
    /// off.
    pub const fn min_rate(mut self, bytes_per_second: u32, up_to: Duration) -> Self {
        self.min_rate = bytes_per_second;
        self.head_max = up_to;
        self
    }

    /// A keep-alive connection is closed after this long without a byte
    /// either way.
    pub const fn keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = Some(d);
        self
    }

    /// Time allowed for a head that has brought `bytes` so far.
    pub(super) fn head_allowance(&self, bytes: u32) -> Option<Duration> {
        let head = self.head?;
        if self.min_rate == 0 {
            return Some(head);
        }
        let extension = Duration::from_millis(u64::from(bytes) * 1_000 / u64::from(self.min_rate));
        Some(head.saturating_add(extension).min(self.head_max.max(head)))
    }
}
