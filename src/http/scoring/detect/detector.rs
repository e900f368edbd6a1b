//! The detector of one guard: what each request adds, what scoring asks
//! (under attack, degraded, flagged cluster, network or route), and the
//! flags other instances of a fleet share.
//!
//! Busy periods: one begins at a tick whose request rate is rising (half
//! the margin and half the significance of a surge) or whose service is
//! degraded, and ends after [`Detection::cooldown`] without either. Each
//! client is stamped with the period it was first seen in, and overload
//! protection serves the clients who came before a period first
//! (sessions under way before new ones, as session-based admission
//! control does): a crowd that takes the service past its capacity cannot
//! push out the customers it found there, however well it behaves.

use arc_swap::ArcSwap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::baseline::{Baseline, Counts, RateBaseline, Recent, RouteName, TickState, Window};
use crate::http::{Cluster, Detection, DetectionSnapshot, Event};
use crate::ip::PrefixLengths;
use crate::{ConfigError, IpPrefix, Timestamp, TopK};

/// Most networks or routes flagged at once (each), and clusters flagged by
/// other instances of a fleet.
pub(crate) const MAX_FLAGGED: usize = 16;

/// Detection is armed once this many times `min_requests` were seen.
pub(super) const WARM_WINDOWS: f64 = 10.0;

/// Clusters remembered by id for the snapshot and events.
pub(super) const CLUSTER_KEYS: usize = 1024;

/// Most clusters flagged at once: a botnet spread over dozens of tools
/// has dozens of clusters (and one family-wide one).
pub(crate) const MAX_FLAGGED_CLUSTERS: usize = 64;

/// Weight of one request in the sketches: counts are kept in sixteenths so
/// that decaying them loses little.
pub(super) const UNIT: u64 = 16;

/// Route names kept at once, for saying a flagged route in words.
pub(super) const ROUTE_NAMES: usize = 256;

/// How many of each top list a snapshot keeps.
pub(super) const SNAPSHOT_TOP: usize = 10;

/// The network levels watched: sites (/24, /48) and providers (/16, /32).
pub(crate) fn site(ip: IpAddr) -> IpPrefix {
    IpPrefix::of(ip, PrefixLengths::new(24, 48).expect("valid lengths"))
}

pub(super) fn provider(ip: IpAddr) -> IpPrefix {
    IpPrefix::of(ip, PrefixLengths::new(16, 32).expect("valid lengths"))
}

/// One request as detection sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sighting<'a> {
    /// Its fine cluster, and [`Cluster::ids`].
    pub(crate) cluster: Cluster,
    pub(crate) cluster_ids: [u64; 3],
    pub(crate) ip: IpAddr,
    /// `ip`'s /24 or /48 ([`site`]), which the scorer has at hand.
    pub(crate) site: IpPrefix,
    /// The route (axum's matched pattern, else the path) and its hash.
    pub(crate) route: &'a str,
    pub(crate) route_hash: u64,
    /// The client's first request the guard has seen.
    pub(crate) new_client: bool,
    /// It looks automated or anomalous.
    pub(crate) suspect: bool,
}

/// The detector of one guard.
pub(crate) struct Detector {
    /// Swapped whole by a reload (thresholds only; the tick, window,
    /// warm-up and sketch sizes stay).
    pub(super) config: ArcSwap<Detection>,
    pub(super) window: Mutex<Window>,
    pub(super) state: Mutex<TickState>,
    /// End of the current tick, in clock nanoseconds.
    pub(super) tick_end: AtomicU64,
    /// This tick's counts.
    pub(super) requests: AtomicU64,
    pub(super) suspect: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) shed: AtomicU64,
    pub(super) answers: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) latency_sum_nanos: AtomicU64,
    /// The decayed shed count at the last tick and whether the service
    /// was degraded then, for `calm` between ticks.
    pub(super) degraded: AtomicU64,
    pub(super) under_attack: AtomicU64,
    /// Busy periods begun (the request rate raised, or the service
    /// degraded), twice plus one while one lasts: see [`Self::busy_stamp`].
    pub(super) busy: AtomicU32,
    /// Cluster ids, network hashes and route hashes flagged in this
    /// attack; 0 is an empty place.
    pub(super) flagged_classes: [AtomicU64; MAX_FLAGGED_CLUSTERS],
    pub(super) flagged_sites: [AtomicU64; MAX_FLAGGED],
    pub(super) flagged_routes: [AtomicU64; MAX_FLAGGED],
    pub(super) flagged_count: AtomicUsize,
    /// Clusters flagged by other instances of a fleet (shared bans), each
    /// until its time in `remote_until` (clock nanoseconds); 0 is an empty
    /// place. Written by one task only; they never emit an event.
    remote_classes: [AtomicU64; MAX_FLAGGED],
    remote_until: [AtomicU64; MAX_FLAGGED],
    /// The latest of `remote_until`: none is flagged from then on.
    remote_latest: AtomicU64,
    pub(super) hasher: ahash::RandomState,
}

/// What a closed tick produced for the guard to act on.
pub(crate) type Events = Vec<Event>;

/// The judgements of one tick; see the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Judgement {
    pub(super) surge: bool,
    pub(super) suspect_surge: bool,
    pub(super) latency_degraded: bool,
    pub(super) shedding: bool,
    pub(super) misbehaving: bool,
}

impl Judgement {
    pub(super) fn degraded(&self) -> bool {
        self.latency_degraded || self.shedding
    }

    pub(super) fn attack(&self) -> bool {
        (self.surge && self.degraded()) || self.suspect_surge
    }

    /// Traffic the baselines may learn from: nothing about it says bots.
    pub(super) fn people_like(&self) -> bool {
        !self.suspect_surge && !self.misbehaving
    }
}

impl Detector {
    pub(crate) fn new(config: Detection, now: Timestamp) -> Result<Self, ConfigError> {
        config.validate()?;
        let k = config.top_k;
        Ok(Detector {
            window: Mutex::new(Window {
                clusters: TopK::new(2 * k)?,
                cluster_keys: Recent::new(CLUSTER_KEYS),
                fresh: TopK::new(2 * k)?,
                sites: TopK::new(k)?,
                providers: TopK::new(k)?,
                routes: TopK::new(k)?,
                route_names: Recent::new(ROUTE_NAMES),
            }),
            state: Mutex::new(TickState {
                started: now,
                armed_at: now.saturating_add(config.warmup),
                sums: Counts::default(),
                ticks: 0,
                seen: 0.0,
                rate: RateBaseline::default(),
                suspect: RateBaseline::default(),
                latency: 0.0,
                bad_share: 0.0,
                calm_since: None,
                ease_since: None,
                clusters: Baseline::new(8 * k),
                sites: Baseline::new(4 * k),
                routes: Baseline::new(4 * k),
                snapshot: DetectionSnapshot::default(),
            }),
            tick_end: AtomicU64::new(now.saturating_add(config.tick).as_nanos()),
            requests: AtomicU64::new(0),
            suspect: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_sum_nanos: AtomicU64::new(0),
            degraded: AtomicU64::new(0),
            under_attack: AtomicU64::new(0),
            busy: AtomicU32::new(0),
            flagged_classes: [const { AtomicU64::new(0) }; MAX_FLAGGED_CLUSTERS],
            flagged_sites: Default::default(),
            flagged_routes: Default::default(),
            flagged_count: AtomicUsize::new(0),
            remote_classes: Default::default(),
            remote_until: Default::default(),
            remote_latest: AtomicU64::new(0),
            hasher: route_hasher(),
            config: ArcSwap::from_pointee(config),
        })
    }

    /// Puts new thresholds in force (checked by the caller).
    pub(crate) fn retune(&self, config: Detection) {
        self.config.store(std::sync::Arc::new(config));
    }

    /// Whether the service is under attack now.
    #[inline]
    pub(crate) fn under_attack(&self) -> bool {
        self.under_attack.load(Ordering::Relaxed) != 0
    }

    /// Whether the service is degraded: at the last tick (latency past its
    /// objective, or a steady share shed), or since then overload
    /// protection shed half of [`Detection::shed_share`] of this tick's
    /// requests or more (1% by default). The second
    /// shows an overload from its first moment, before a tick judges it:
    /// scoring ranks newcomers down from then on, and no attack is
    /// declared on it alone (the tick's judgement needs `min_shed`).
    #[inline]
    pub(crate) fn degraded(&self) -> bool {
        if self.degraded.load(Ordering::Relaxed) != 0 {
            return true;
        }
        let shed = self.shed.load(Ordering::Relaxed);
        shed > 0
            && shed as f64
                >= 0.5
                    * self.config.load().shed_share
                    * self.requests.load(Ordering::Relaxed) as f64
    }

    /// The busy period a client first seen now joins in: 0 while the
    /// service is at ease, else a number from 1 to 255 for the period
    /// (which wraps). See the module documentation for when one begins and
    /// ends, and why.
    #[inline]
    pub(crate) fn busy_stamp(&self) -> u8 {
        let n = self.busy.load(Ordering::Relaxed);
        if n & 1 == 0 {
            0
        } else {
            1 + ((n >> 1) % 255) as u8
        }
    }

    /// Neither under attack nor degraded: the service is at ease. Good
    /// standing is earned freely only then, and new clients are suspect
    /// otherwise.
    #[inline]
    pub(crate) fn calm(&self) -> bool {
        !self.under_attack() && !self.degraded()
    }

    /// Counts one request; returns the events of a tick if this request
    /// closed one.
    pub(crate) fn observe(&self, now: Timestamp, s: &Sighting<'_>) -> Events {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if s.suspect {
            self.suspect.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut w = self.window.lock();
            for id in s.cluster_ids {
                w.clusters.offer(id, UNIT);
            }
            if !w.cluster_keys.holds(s.cluster_ids[0]) {
                let levels = [s.cluster, s.cluster.coarse(), s.cluster.family_wide()];
                for (id, c) in s.cluster_ids.into_iter().zip(levels) {
                    w.cluster_keys.note(id, c);
                }
            }
            let site = s.site;
            if s.new_client {
                for id in s.cluster_ids {
                    w.fresh.offer(id, UNIT);
                }
                w.fresh.offer(self.fresh_site(site), UNIT);
            }
            w.sites.offer(site, UNIT);
            w.providers.offer(provider(s.ip), UNIT);
            w.routes.offer(s.route_hash, UNIT);
            if !w.route_names.holds(s.route_hash) {
                w.route_names.note(s.route_hash, RouteName::of(s.route));
            }
        }
        self.maybe_tick(now)
    }

    /// Counts a request or connection refused before it was scored (a
    /// banned client retrying): it is traffic, and refused.
    pub(crate) fn count_refused(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal of a request already observed (a rate rule, the
    /// score).
    pub(crate) fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request (already observed) shed by overload protection.
    /// Shedding says the service is full, not that its clients misbehave:
    /// it is not a refusal here.
    pub(crate) fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an answer of the service: how long it took, and whether its
    /// status was an error (4xx, 5xx).
    pub(crate) fn observe_answer(&self, latency: Duration, error: bool) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.answers.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The hash of a route, as [`Sighting::route_hash`] and
    /// [`route_flagged`](Self::route_flagged) take it.
    pub(crate) fn route_hash(&self, route: &str) -> u64 {
        self.hasher.hash_one(route)
    }

    /// Whether the route of `route_hash` is flagged in the current attack.
    #[inline]
    pub(crate) fn route_flagged(&self, route_hash: u64) -> bool {
        self.flagged_count.load(Ordering::Relaxed) != 0
            && contains(&self.flagged_routes, route_hash | 1)
    }

    /// Whether a cluster of ids `ids` ([`Cluster::ids`]: it, its product,
    /// its family) is flagged in this attack.
    #[inline]
    pub(crate) fn cluster_flagged(&self, ids: [u64; 3]) -> bool {
        self.flagged_count.load(Ordering::Relaxed) != 0
            && ids.iter().any(|id| contains(&self.flagged_classes, *id))
    }

    /// [`cluster_flagged`](Self::cluster_flagged), or flagged by another
    /// instance of the fleet until a time after `now`.
    #[inline]
    pub(crate) fn cluster_flagged_at(&self, ids: [u64; 3], now: Timestamp) -> bool {
        self.cluster_flagged(ids)
            || (now.as_nanos() < self.remote_latest.load(Ordering::Relaxed)
                && self
                    .remote_classes
                    .iter()
                    .zip(&self.remote_until)
                    .any(|(c, u)| {
                        ids.contains(&c.load(Ordering::Acquire))
                            && now.as_nanos() < u.load(Ordering::Relaxed)
                    }))
    }

    /// Flags the cluster of id `class` ([`Cluster::id`]) until `until`,
    /// because another instance of the fleet flagged it. Emits no event, so
    /// the flag is not published again. Keeps an existing flag's later end;
    /// false when all [`MAX_FLAGGED`] places hold unexpired flags. Called by
    /// one task only (the shared-bans subscriber).
    pub(crate) fn flag_remote_class(&self, class: u64, until: Timestamp, now: Timestamp) -> bool {
        let id = class | 1;
        let (until, now) = (until.as_nanos(), now.as_nanos());
        if until <= now {
            return false;
        }
        let slots = self.remote_classes.iter().zip(&self.remote_until);
        let place = slots.clone().find(|(c, _)| c.load(Ordering::Relaxed) == id);
        let place = place.or_else(|| {
            slots
                .clone()
                .find(|(c, u)| c.load(Ordering::Relaxed) == 0 || u.load(Ordering::Relaxed) <= now)
        });
        let Some((c, u)) = place else {
            return false;
        };
        if c.load(Ordering::Relaxed) == id {
            u.fetch_max(until, Ordering::Relaxed);
        } else {
            // Empty the place first, so no reader pairs the old class with
            // the new end.
            c.store(0, Ordering::Release);
            u.store(until, Ordering::Relaxed);
            c.store(id, Ordering::Release);
        }
        self.remote_latest.fetch_max(until, Ordering::Relaxed);
        true
    }

    /// Declares an attack now, with these clusters and routes flagged: for
    /// scoring's tests, which are about what a flag does, not how it comes.
    #[cfg(test)]
    pub(crate) fn force_attack(&self, clusters: &[u64], routes: &[u64]) {
        self.under_attack.store(1, Ordering::Relaxed);
        for id in clusters {
            insert(&self.flagged_classes, *id);
        }
        for hash in routes {
            insert(&self.flagged_routes, *hash | 1);
        }
        self.flagged_count
            .fetch_add(clusters.len() + routes.len(), Ordering::Relaxed);
    }

    /// A site's key in the fresh sketch: even, where cluster ids are odd.
    pub(super) fn fresh_site(&self, site: IpPrefix) -> u64 {
        self.hasher.hash_one(site) & !1
    }

    /// Whether `site` (a [`site`] prefix) is flagged in the current attack.
    #[inline]
    pub(crate) fn site_flagged(&self, site: IpPrefix) -> bool {
        self.flagged_count.load(Ordering::Relaxed) != 0
            && contains(&self.flagged_sites, self.hasher.hash_one(site) | 1)
    }

    /// What the last tick saw.
    pub(crate) fn snapshot(&self) -> DetectionSnapshot {
        self.state.lock().snapshot.clone()
    }
}

pub(super) fn nanos(n: f64) -> Duration {
    Duration::from_nanos(n.max(0.0) as u64)
}

pub(super) fn contains(set: &[AtomicU64], id: u64) -> bool {
    set.iter().any(|a| a.load(Ordering::Relaxed) == id)
}

/// Puts `id` in a free place; false when all are taken.
pub(super) fn insert(set: &[AtomicU64], id: u64) -> bool {
    set.iter().any(|a| {
        a.compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    })
}

/// The hasher of routes and sites: keyed per process, so nobody can aim a
/// collision; fixed in unit tests, where the profiles' 16 route buckets
/// would otherwise make a test pass or fail by the draw of the key.
fn route_hasher() -> ahash::RandomState {
    #[cfg(test)]
    return ahash::RandomState::with_seeds(1, 2, 3, 4);
    #[cfg(not(test))]
    ahash::RandomState::new()
}
