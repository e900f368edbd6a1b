//! Detection's configuration: how fast baselines learn, how far traffic
//! must rise to count as an attack, and how long one lasts.

use std::time::Duration;

use crate::ConfigError;

/// Tuning of attack detection. The defaults suit a service of a few to
/// thousands of requests a second.
///
/// Nothing is judged on one tick: counts are kept over a decaying window
/// (about the last second), every judgement needs a minimum count, and a
/// rate counts as raised only when it is both a multiple of its baseline
/// and significant against the baseline's own variance. The service is
/// *degraded* when its latency is past an absolute objective and a
/// multiple of its baseline, or when overload protection sheds a steady
/// share. An attack is a surge of traffic while the service is degraded,
/// or a surge of traffic that does not look like people (automated user
/// agents, header anomalies, a large share refused or failing); never
/// volume alone while the service copes. Baselines learn whenever the
/// traffic behaves like people, during an attack too, so growth and a
/// crowd that stays become the new normal.
///
/// ```
/// use std::time::Duration;
/// use floodguard::http::Detection;
/// let mut d = Detection::default();
/// d.latency_objective = Duration::from_millis(200); // a slow report generator
/// d.min_requests = 200;
/// # let _ = d;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Detection {
    /// How often the counts are folded and judged: 100 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub tick: Duration,
    /// The span the counts are judged over: 1 s. Each tick's counts weigh
    /// `e^(-age / window)`, so judgements see about the last second.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub window: Duration,
    /// Time measured before detection is armed: 1 s, and at least ten
    /// times `min_requests` requests. Baselines learn from it.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub warmup: Duration,
    /// Half-life of the baselines: 30 s. They learn while the traffic
    /// behaves like people, during an attack too.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub baseline_half_life: Duration,
    /// A rate is raised at this multiple of its baseline or more: 2 ...
    pub rate_margin: f64,
    /// ... and this many standard deviations above it (the baseline's own
    /// variance and Poisson noise): 5.
    pub significance: f64,
    /// ... and with at least this many requests in the window: 50. No
    /// rate, share or surge is judged on fewer.
    pub min_requests: u32,
    /// Clients new to the guard a cluster must bring within the window
    /// before it can be flagged: 10. One client, however busy, is never a
    /// surging cluster (rate rules deal with it).
    pub min_new_clients: u32,
    /// The service is degraded when its mean latency over the window is
    /// at least this (100 ms: what a person starts to notice) ...
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub latency_objective: Duration,
    /// ... and this multiple of its baseline: 3 ...
    pub latency_margin: f64,
    /// ... over at least this many answers: 20.
    pub min_answers: u32,
    /// Or when overload protection sheds at least this share of the
    /// window's requests (2%), and at least `min_shed` of them ...
    pub shed_share: f64,
    /// ... 10. A single shed request is never an overload.
    pub min_shed: u32,
    /// Traffic misbehaves when this share of it (20%) is refused by the
    /// guard or answered with errors, and twice its baseline share.
    pub misbehaviour_share: f64,
    /// The attack ends once neither a degraded surge nor a suspect surge
    /// is seen for this long: 10 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub cooldown: Duration,
    /// During an attack, a cluster, network or route is flagged when its
    /// share of the window's requests reaches this: 0.02 ...
    pub surge_share: f64,
    /// ... and this multiple of its baseline share: 3, significantly (see
    /// `significance`), over at least `min_requests / 2` requests.
    pub surge_factor: f64,
    /// Entries of each heavy-hitter sketch: 64.
    pub top_k: usize,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            tick: Duration::from_millis(100),
            window: Duration::from_secs(1),
            warmup: Duration::from_secs(1),
            baseline_half_life: Duration::from_secs(30),
            rate_margin: 2.0,
            significance: 5.0,
            min_requests: 50,
            min_new_clients: 10,
            latency_objective: Duration::from_millis(100),
            latency_margin: 3.0,
            min_answers: 20,
            shed_share: 0.02,
            min_shed: 10,
            misbehaviour_share: 0.2,
            cooldown: Duration::from_secs(10),
            surge_share: 0.02,
            surge_factor: 3.0,
            top_k: 64,
        }
    }
}

impl Detection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.tick < Duration::from_millis(10) {
            return Err(ConfigError::OutOfRange {
                field: "tick",
                value: format!("{:?}", self.tick),
                range: "10 ms or more",
            });
        }
        if self.window < self.tick {
            return Err(ConfigError::OutOfRange {
                field: "window",
                value: format!("{:?}", self.window),
                range: "at least one tick",
            });
        }
        for (field, d) in [
            ("baseline_half_life", self.baseline_half_life),
            ("latency_objective", self.latency_objective),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { field });
            }
        }
        for (field, v) in [
            ("rate_margin", self.rate_margin),
            ("latency_margin", self.latency_margin),
            ("surge_factor", self.surge_factor),
        ] {
            if !(v >= 1.0 && v.is_finite()) {
                return Err(ConfigError::OutOfRange {
                    field,
                    value: v.to_string(),
                    range: "1 or more",
                });
            }
        }
        if !(self.significance >= 0.0 && self.significance.is_finite()) {
            return Err(ConfigError::OutOfRange {
                field: "significance",
                value: self.significance.to_string(),
                range: "0 or more",
            });
        }
        for (field, v) in [
            ("surge_share", self.surge_share),
            ("shed_share", self.shed_share),
            ("misbehaviour_share", self.misbehaviour_share),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(ConfigError::OutOfRange {
                    field,
                    value: v.to_string(),
                    range: "(0, 1]",
                });
            }
        }
        for (field, v) in [
            ("top_k", self.top_k),
            ("min_requests", self.min_requests as usize),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        Ok(())
    }

    /// Each tick's weight relative to the one before: `e^(-tick/window)`.
    fn decay(&self) -> f64 {
        (-self.tick.as_secs_f64() / self.window.as_secs_f64()).exp()
    }

    /// Seconds the decayed sums span: a steady rate `r` holds `r × span`.
    pub(super) fn span(&self) -> f64 {
        self.tick.as_secs_f64() / (1.0 - self.decay())
    }
}
