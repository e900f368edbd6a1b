//! What detection remembers of normal traffic: decaying sketches of
//! clusters, networks and routes, the request-rate baseline, and the
//! counts one tick gathers.

use std::collections::HashMap;
use std::hash::Hash;

use crate::http::{Cluster, DetectionSnapshot};
use crate::{IpPrefix, Timestamp, TopK};

/// Longest route name kept for the snapshot and events (bytes).
pub(super) const MAX_ROUTE_NAME: usize = 64;

/// A route's name, truncated to [`MAX_ROUTE_NAME`] bytes at a character
/// boundary, held inline: noting one never allocates.
#[derive(Clone, Copy, Debug)]
pub(super) struct RouteName {
    len: u8,
    bytes: [u8; MAX_ROUTE_NAME],
}

impl RouteName {
    pub(super) fn of(route: &str) -> Self {
        let mut end = route.len().min(MAX_ROUTE_NAME);
        while !route.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; MAX_ROUTE_NAME];
        bytes[..end].copy_from_slice(&route.as_bytes()[..end]);
        RouteName {
            len: end as u8,
            bytes,
        }
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

/// Values of recently seen keys, direct-mapped (a slot per key's hash, the
/// latest key wins): bounded, and noting a key never allocates.
pub(super) struct Recent<T> {
    slots: Box<[Option<(u64, T)>]>,
}

impl<T: Copy> Recent<T> {
    pub(super) fn new(slots: usize) -> Self {
        Recent {
            slots: vec![None; slots].into_boxed_slice(),
        }
    }

    fn slot(&self, key: u64) -> usize {
        // The keys are hashes already; their high bits pick the slot.
        ((key >> 32) as usize) % self.slots.len()
    }

    pub(super) fn holds(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn note(&mut self, key: u64, value: T) {
        let i = self.slot(key);
        self.slots[i] = Some((key, value));
    }

    pub(super) fn get(&self, key: u64) -> Option<&T> {
        match &self.slots[self.slot(key)] {
            Some((k, v)) if *k == key => Some(v),
            _ => None,
        }
    }
}

/// The decaying sketches.
pub(super) struct Window {
    /// Clusters at each level (fine, product, family) by id, weighted by
    /// requests.
    pub(super) clusters: TopK<u64>,
    /// The clusters of recent ids, for the snapshot and events.
    pub(super) cluster_keys: Recent<Cluster>,
    /// Fine and coarse clusters and sites, weighted by clients new to the
    /// guard.
    pub(super) fresh: TopK<u64>,
    pub(super) sites: TopK<IpPrefix>,
    pub(super) providers: TopK<IpPrefix>,
    pub(super) routes: TopK<u64>,
    pub(super) route_names: Recent<RouteName>,
}

/// Shares learnt while the traffic behaved, for one kind of key; bounded.
pub(super) struct Baseline<K> {
    shares: HashMap<K, f64, ahash::RandomState>,
    limit: usize,
}

impl<K: Clone + Eq + Hash> Baseline<K> {
    pub(super) fn new(limit: usize) -> Self {
        Baseline {
            shares: HashMap::with_capacity_and_hasher(limit, ahash::RandomState::new()),
            limit,
        }
    }

    pub(super) fn share(&self, k: &K) -> f64 {
        self.shares.get(k).copied().unwrap_or(0.0)
    }

    /// Moves every share `alpha` of the way to the window's.
    pub(super) fn learn(&mut self, now: &[(K, f64)], alpha: f64) {
        for v in self.shares.values_mut() {
            *v *= 1.0 - alpha;
        }
        for (k, share) in now {
            *self.shares.entry(k.clone()).or_insert(0.0) += alpha * share;
        }
        if self.shares.len() > self.limit {
            let mut v: Vec<f64> = self.shares.values().copied().collect();
            let cut = v.len() - self.limit;
            v.select_nth_unstable_by(cut, f64::total_cmp);
            let floor = v[cut];
            self.shares.retain(|_, s| *s >= floor);
        }
    }
}

/// Counts of one tick, or their decayed sums.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counts {
    pub(super) requests: f64,
    pub(super) suspect: f64,
    /// Refused by the guard (rules, bans, scores); not shed.
    pub(super) refused: f64,
    pub(super) shed: f64,
    pub(super) answers: f64,
    /// Answers with a 4xx or 5xx status.
    pub(super) errors: f64,
    pub(super) latency_nanos: f64,
}

impl Counts {
    pub(super) fn fold(&mut self, tick: &Counts, decay: f64) {
        let f = |sum: &mut f64, x: f64| *sum = *sum * decay + x;
        f(&mut self.requests, tick.requests);
        f(&mut self.suspect, tick.suspect);
        f(&mut self.refused, tick.refused);
        f(&mut self.shed, tick.shed);
        f(&mut self.answers, tick.answers);
        f(&mut self.errors, tick.errors);
        f(&mut self.latency_nanos, tick.latency_nanos);
    }
}

/// A rate's baseline: its mean and the variance of its window estimate.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RateBaseline {
    pub(super) mean: f64,
    var: f64,
}

impl RateBaseline {
    pub(super) fn learn(&mut self, x: f64, alpha: f64) {
        let d = x - self.mean;
        self.mean += alpha * d;
        self.var += alpha * (d * d - self.var);
    }

    /// Whether `rate` is raised: `margin` times the mean or more, and
    /// `z` standard deviations above it (the baseline's variance plus the
    /// Poisson noise of a window of `span` seconds).
    pub(super) fn raised(&self, rate: f64, margin: f64, z: f64, span: f64) -> bool {
        let sd = (self.var + self.mean.max(1.0 / span) / span).sqrt();
        rate >= margin * self.mean && rate - self.mean >= z * sd
    }
}

/// State closed at each tick.
pub(super) struct TickState {
    pub(super) started: Timestamp,
    pub(super) armed_at: Timestamp,
    pub(super) sums: Counts,
    /// Ticks folded since the first request (the baselines' plain mean
    /// until armed).
    pub(super) ticks: u32,
    /// Requests seen in all: detection is armed only once the baselines
    /// have learnt from [`WARM_WINDOWS`] windows' worth of `min_requests`.
    pub(super) seen: f64,
    pub(super) rate: RateBaseline,
    pub(super) suspect: RateBaseline,
    pub(super) latency: f64,
    pub(super) bad_share: f64,
    pub(super) calm_since: Option<Timestamp>,
    /// Since when the service has been at ease again in a busy period.
    pub(super) ease_since: Option<Timestamp>,
    pub(super) clusters: Baseline<u64>,
    pub(super) sites: Baseline<IpPrefix>,
    pub(super) routes: Baseline<u64>,
    pub(super) snapshot: DetectionSnapshot,
}
