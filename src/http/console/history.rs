//! The last minutes of a guard at a glance: one sample of its counters a
//! second (on the guard's clock), 300 of them at most, and the rates the
//! console's charts draw from them.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;

use crate::Timestamp;
use crate::http::{DetectionSnapshot, GateStats, GuardStats};

/// Samples kept: five minutes at one a second.
pub(super) const SLOTS: usize = 300;

/// The counters a chart needs, at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Sample {
    at: Timestamp,
    requests: u64,
    admitted: u64,
    /// Refusals: rate limit, blocked or banned, score, challenge or held,
    /// overload.
    refused: [u64; 5],
    /// The service's limit: answers, their latencies added up (ns), the
    /// limit and the requests in flight; `None` without overload
    /// protection.
    limit: Option<(u64, u128, u32, u32)>,
    /// Attack detection's mean latency over its window (ns), with scoring.
    detected_latency: Option<u64>,
    under_attack: bool,
    open_connections: Option<u64>,
}

impl Sample {
    pub(super) fn of(
        now: Timestamp,
        g: &GuardStats,
        detection: Option<&DetectionSnapshot>,
        gate: Option<&GateStats>,
    ) -> Sample {
        Sample {
            at: now,
            requests: g.requests,
            admitted: g.admitted,
            refused: [
                g.refused_rate_limit,
                g.refused_blocked,
                g.refused_score,
                g.refused_challenge + g.refused_suspect,
                g.refused_overload,
            ],
            limit: g
                .overload
                .first()
                .map(|l| (l.answers, l.latency_sum.as_nanos(), l.limit, l.in_flight)),
            detected_latency: detection
                .map(|d| u64::try_from(d.latency.as_nanos()).unwrap_or(u64::MAX)),
            under_attack: detection.is_some_and(|d| d.under_attack),
            open_connections: gate.map(|g| g.open),
        }
    }
}

/// The ring of samples.
#[derive(Debug, Default)]
pub(super) struct History {
    ring: Mutex<VecDeque<Sample>>,
}

/// The charts' series, one point per interval between two samples:
/// seconds before now, rates a second, latency in seconds.
#[derive(Debug, Default, PartialEq, serde::Serialize)]
pub(super) struct Series {
    /// Each point's time, in seconds before the newest sample (≤ 0).
    t: Vec<f64>,
    requests: Vec<f64>,
    admitted: Vec<f64>,
    refused_rate_limit: Vec<f64>,
    refused_blocked: Vec<f64>,
    refused_score: Vec<f64>,
    refused_challenge: Vec<f64>,
    refused_overload: Vec<f64>,
    /// Mean latency over the interval (overload protection's
    /// measurements), else attack detection's; null when neither.
    latency: Vec<Option<f64>>,
    limit: Vec<Option<u32>>,
    in_flight: Vec<Option<u32>>,
    open_connections: Vec<Option<u64>>,
    under_attack: Vec<bool>,
}

impl History {
    /// Whether a sample taken at `now` would be recorded: the newest one
    /// is from an earlier second of the guard's clock.
    pub(super) fn due(&self, now: Timestamp) -> bool {
        self.ring
            .lock()
            .back()
            .is_none_or(|last| second(now) > second(last.at))
    }

    /// Records `sample` unless one was taken in the same second; drops the
    /// oldest past [`SLOTS`].
    pub(super) fn record(&self, sample: Sample) {
        let mut ring = self.ring.lock();
        if ring
            .back()
            .is_some_and(|last| second(sample.at) <= second(last.at))
        {
            return;
        }
        if ring.len() == SLOTS {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ring.lock().len()
    }

    /// The rates between consecutive samples. A gap (nobody sampled for a
    /// while) is one longer interval: the rates stay rates.
    pub(super) fn series(&self) -> Series {
        let ring = self.ring.lock();
        let mut out = Series::default();
        let Some(newest) = ring.back().map(|s| s.at) else {
            return out;
        };
        for (a, b) in ring.iter().zip(ring.iter().skip(1)) {
            let dt = b.at.saturating_duration_since(a.at).as_secs_f64();
            if dt <= 0.0 {
                continue;
            }
            let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
            out.t
                .push(-newest.saturating_duration_since(b.at).as_secs_f64());
            out.requests.push(rate(a.requests, b.requests));
            out.admitted.push(rate(a.admitted, b.admitted));
            let r = |i: usize| rate(a.refused[i], b.refused[i]);
            out.refused_rate_limit.push(r(0));
            out.refused_blocked.push(r(1));
            out.refused_score.push(r(2));
            out.refused_challenge.push(r(3));
            out.refused_overload.push(r(4));
            let measured = match (a.limit, b.limit) {
                (Some((n0, sum0, ..)), Some((n1, sum1, ..))) if n1 > n0 => {
                    Some(sum1.saturating_sub(sum0) as f64 / 1e9 / (n1 - n0) as f64)
                }
                _ => None,
            };
            let detected = b
                .detected_latency
                .map(|ns| Duration::from_nanos(ns).as_secs_f64());
            out.latency.push(measured.or(detected));
            out.limit.push(b.limit.map(|l| l.2));
            out.in_flight.push(b.limit.map(|l| l.3));
            out.open_connections.push(b.open_connections);
            out.under_attack.push(b.under_attack);
        }
        out
    }
}

fn second(t: Timestamp) -> u64 {
    t.as_nanos() / 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64, requests: u64, refused_rate: u64) -> Sample {
        Sample {
            at: Timestamp::from_nanos((secs * 1e9) as u64),
            requests,
            admitted: requests - refused_rate,
            refused: [refused_rate, 0, 0, 0, 0],
            limit: Some((requests, u128::from(requests) * 2_000_000, 40, 3)),
            ..Sample::default()
        }
    }

    #[test]
    fn one_sample_a_second_and_rates_between_them() {
        let h = History::default();
        h.record(at(10.2, 100, 0));
        // Same second: ignored.
        assert!(!h.due(Timestamp::from_nanos(10_900_000_000)));
        h.record(at(10.9, 150, 0));
        assert!(h.due(Timestamp::from_nanos(11_000_000_000)));
        h.record(at(11.2, 400, 100));
        // Nobody sampled for two seconds: one longer interval.
        h.record(at(14.2, 1_000, 400));
        assert_eq!(h.len(), 3);
        let s = h.series();
        assert_eq!(s.t, [-3.0, 0.0]);
        assert_eq!(s.requests, [300.0, 200.0]);
        assert_eq!(s.admitted, [200.0, 100.0]);
        assert_eq!(s.refused_rate_limit, [100.0, 100.0]);
        // Every answer took 2 ms.
        for l in &s.latency {
            assert!((l.unwrap() - 0.002).abs() < 1e-12, "{l:?}");
        }
        assert_eq!(s.limit, [Some(40), Some(40)]);
    }

    #[test]
    fn the_ring_is_bounded() {
        let h = History::default();
        for i in 0..(SLOTS as u64 + 50) {
            h.record(at(i as f64, i * 10, 0));
        }
        assert_eq!(h.len(), SLOTS);
        let s = h.series();
        assert_eq!(s.t.len(), SLOTS - 1);
        assert_eq!(s.t[0], -((SLOTS - 2) as f64));
        assert!(s.requests.iter().all(|r| *r == 10.0));
    }
}
