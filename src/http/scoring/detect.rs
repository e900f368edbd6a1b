//! Attack detection: baselines of the request rate, the service's latency,
//! the share of traffic that looks automated or misbehaves, and the share of
//! each [`Cluster`], network and route; an "under attack" state with
//! hysteresis; and, during an attack, the clusters, networks and routes
//! whose share surged.
//!
//! Requests drive it: each one is counted and offered to bounded
//! heavy-hitter sketches ([`TopK`], Space-Saving), and once per tick the
//! first request past the tick's end closes it. Nothing is judged on one
//! tick: counts are kept over a decaying window of about a second (a tick's
//! weight falls by `e` per [`Detection::window`]), every judgement needs a
//! minimum count, and a rate counts as raised only when it is both a
//! multiple of its baseline and significant against the baseline's own
//! variance. The decisions:
//!
//! * **degraded**: the service's mean latency past an absolute objective
//!   ([`Detection::latency_objective`]) and a multiple of its baseline, or
//!   overload protection shedding a steady share of requests;
//! * **surge**: the request rate raised, significantly;
//! * **suspect surge**: the rate of requests that do not look like people
//!   (automated user agents, header anomalies) raised, significantly; or a
//!   large share of the traffic refused or answered with errors, far above
//!   its baseline;
//! * an attack is a surge while the service is degraded, or a suspect
//!   surge; never volume alone while the service copes (more people
//!   arriving is not an attack), nor a slow service without more traffic
//!   (that is not calm either: overload protection and scoring treat it as
//!   trouble, but no attack is declared);
//! * it ends once neither holds for [`Detection::cooldown`]. The baselines
//!   learn whenever the traffic behaves like people, during an attack too,
//!   so a site that grows, or a crowd that stays, becomes the new normal
//!   within a bounded time (with the defaults, a tenfold step is within the
//!   margin about 25 s after the traffic turns steady, and the attack ends
//!   10 s later).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::http::identify::look::Cluster;
use crate::ip::PrefixLengths;
use crate::{ConfigError, IpPrefix, Timestamp, TopK};

/// Most networks or routes flagged at once (each), and clusters flagged by
/// other instances of a fleet.
pub(crate) const MAX_FLAGGED: usize = 16;

/// Detection is armed once this many times `min_requests` were seen.
const WARM_WINDOWS: f64 = 10.0;

/// Clusters remembered by id for the snapshot and events.
const CLUSTER_KEYS: usize = 1024;

/// Most clusters flagged at once: a botnet spread over dozens of tools
/// has dozens of clusters (and one family-wide one).
pub(crate) const MAX_FLAGGED_CLUSTERS: usize = 64;

/// Weight of one request in the sketches: counts are kept in sixteenths so
/// that decaying them loses little.
const UNIT: u64 = 16;

/// Longest route name kept for the snapshot and events (bytes).
const MAX_ROUTE_NAME: usize = 64;

/// Route names kept at once, for saying a flagged route in words.
const ROUTE_NAMES: usize = 256;

/// A route's name, truncated to [`MAX_ROUTE_NAME`] bytes at a character
/// boundary, held inline: noting one never allocates.
#[derive(Clone, Copy, Debug)]
struct RouteName {
    len: u8,
    bytes: [u8; MAX_ROUTE_NAME],
}

impl RouteName {
    fn of(route: &str) -> Self {
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

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

/// Values of recently seen keys, direct-mapped (a slot per key's hash, the
/// latest key wins): bounded, and noting a key never allocates.
struct Recent<T> {
    slots: Box<[Option<(u64, T)>]>,
}

impl<T: Copy> Recent<T> {
    fn new(slots: usize) -> Self {
        Recent {
            slots: vec![None; slots].into_boxed_slice(),
        }
    }

    fn slot(&self, key: u64) -> usize {
        // The keys are hashes already; their high bits pick the slot.
        ((key >> 32) as usize) % self.slots.len()
    }

    fn holds(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    fn note(&mut self, key: u64, value: T) {
        let i = self.slot(key);
        self.slots[i] = Some((key, value));
    }

    fn get(&self, key: u64) -> Option<&T> {
        match &self.slots[self.slot(key)] {
            Some((k, v)) if *k == key => Some(v),
            _ => None,
        }
    }
}

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
pub struct Detection {
    /// How often the counts are folded and judged: 100 ms.
    pub tick: Duration,
    /// The span the counts are judged over: 1 s. Each tick's counts weigh
    /// `e^(-age / window)`, so judgements see about the last second.
    pub window: Duration,
    /// Time measured before detection is armed: 1 s, and at least ten
    /// times `min_requests` requests. Baselines learn from it.
    pub warmup: Duration,
    /// Half-life of the baselines: 30 s. They learn while the traffic
    /// behaves like people, during an attack too.
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
    fn span(&self) -> f64 {
        self.tick.as_secs_f64() / (1.0 - self.decay())
    }
}

/// Why an attack was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttackCause {
    /// Traffic surged while the service's latency was past its objective
    /// ("slow but up").
    Latency,
    /// Traffic surged while overload protection shed requests: the
    /// service is at its limit.
    Overload,
    /// Traffic surged that does not look like people: automated user
    /// agents or header anomalies, or a large share refused or failing.
    SuspectSurge,
}

/// Something the guard wants the operator to know, delivered to the
/// callback set with [`GuardBuilder::on_event`](crate::http::GuardBuilder::on_event)
/// and logged with `tracing`. `Display` says it in words.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The service came under attack.
    AttackStarted {
        /// What tipped it.
        cause: AttackCause,
        /// Requests a second over the window.
        rate: f64,
        /// The rate's baseline.
        baseline_rate: f64,
        /// The service's mean latency over the window.
        latency: Duration,
        /// The latency's baseline.
        baseline_latency: Duration,
        /// Share of the window's requests that look automated or
        /// anomalous, and its baseline.
        suspect_share: (f64, f64),
        /// Share of the window's requests refused by the guard (rules,
        /// bans, scores), and shed by overload protection.
        refused_share: (f64, f64),
    },
    /// The attack is over: no degraded or suspect surge for
    /// [`Detection::cooldown`].
    AttackEnded {
        /// How long it lasted.
        lasted: Duration,
    },
    /// A cluster surged during the attack; its newcomers are suspect
    /// ([`Weights::class_surge`](crate::http::Weights::class_surge)), and rank
    /// low in overload shedding.
    ClassFlagged(Share<Cluster>),
    /// A network (IPv4 /24, IPv6 /48) surged during the attack.
    PrefixFlagged(Share<IpPrefix>),
    /// A route surged during the attack: clients that ask for nothing
    /// else are suspect.
    RouteFlagged(Share<String>),
    /// A client was banned (or, in shadow mode, would have been).
    ClientBanned {
        /// The banned client: an IPv4 address or an IPv6 /64.
        client: IpPrefix,
        /// For how long.
        duration: Duration,
        /// Its score and the signals behind it.
        report: crate::http::ScoreReport,
        /// Its offences before this one.
        offences: u8,
        /// Only observed: the ladder's ban is in shadow mode.
        shadow: bool,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::AttackStarted {
                cause,
                rate,
                baseline_rate,
                latency,
                baseline_latency,
                suspect_share,
                refused_share,
            } => {
                let why = match cause {
                    AttackCause::Latency => "traffic surged and the service slowed down",
                    AttackCause::Overload => "traffic surged past what the service can serve",
                    AttackCause::SuspectSurge => "traffic that does not look like people surged",
                };
                write!(
                    f,
                    "attack started: {why}: {rate:.0} req/s against {baseline_rate:.0}, \
                     latency {} ms against {} ms, {:.0}% automated or anomalous \
                     ({:.0}% before), {:.0}% refused, {:.0}% shed",
                    latency.as_millis(),
                    baseline_latency.as_millis(),
                    suspect_share.0 * 100.0,
                    suspect_share.1 * 100.0,
                    refused_share.0 * 100.0,
                    refused_share.1 * 100.0
                )
            }
            Event::AttackEnded { lasted } => {
                write!(f, "attack ended after {:.1} s", lasted.as_secs_f64())
            }
            Event::ClassFlagged(s) => write!(f, "cluster flagged: {}: {s}", s.key),
            Event::PrefixFlagged(s) => write!(f, "network flagged: {}: {s}", s.key),
            Event::RouteFlagged(s) => write!(f, "route flagged: {}: {s}", s.key),
            Event::ClientBanned {
                client,
                duration,
                report,
                offences,
                shadow,
            } => write!(
                f,
                "{}{client} banned for {} s (offence {}): score {report}",
                if *shadow { "[shadow] " } else { "" },
                duration.as_secs(),
                u32::from(*offences) + 1
            ),
        }
    }
}

/// A cluster's, network's or route's share of requests, now and before
/// the attack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share<K> {
    /// The cluster, network or route.
    pub key: K,
    /// Requests counted for it over the window (an overestimate by at most
    /// the sketch's error).
    pub requests: u64,
    /// Clients new to the guard it brought over the window (clusters only;
    /// 0 for networks and routes).
    pub new_clients: u64,
    /// Its share of the window's requests.
    pub share: f64,
    /// Its share in the baseline (before the attack).
    pub baseline_share: f64,
}

impl<K> fmt::Display for Share<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1}% of requests ({:.1}% before), {} requests",
            self.share * 100.0,
            self.baseline_share * 100.0,
            self.requests
        )?;
        if self.new_clients > 0 {
            write!(f, " from {} new clients", self.new_clients)?;
        }
        f.write_str(" in the last second")
    }
}

/// What the detector saw at its last tick; rates and shares are over the
/// window (about the last second).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DetectionSnapshot {
    /// Whether the service is under attack.
    pub under_attack: bool,
    /// Since when, on the guard's clock.
    pub attack_since: Option<Timestamp>,
    /// Whether the service is degraded (latency past its objective, or
    /// shedding), attack or not.
    pub degraded: bool,
    /// Requests a second.
    pub rate: f64,
    /// The rate's baseline.
    pub baseline_rate: f64,
    /// The service's mean latency.
    pub latency: Duration,
    /// The latency's baseline.
    pub baseline_latency: Duration,
    /// Share of requests that look automated or anomalous, and its
    /// baseline.
    pub suspect_share: f64,
    /// The suspect share's baseline.
    pub baseline_suspect_share: f64,
    /// Share of requests refused by the guard or answered with an error.
    pub bad_share: f64,
    /// Clusters flagged in this attack.
    pub flagged_classes: Vec<Share<Cluster>>,
    /// Networks flagged in this attack.
    pub flagged_prefixes: Vec<Share<IpPrefix>>,
    /// Routes flagged in this attack.
    pub flagged_routes: Vec<Share<String>>,
    /// The busiest clusters.
    pub top_classes: Vec<Share<Cluster>>,
    /// The busiest IPv4 /24 and IPv6 /48 networks.
    pub top_prefixes: Vec<Share<IpPrefix>>,
    /// The busiest IPv4 /16 and IPv6 /32 networks.
    pub top_networks: Vec<Share<IpPrefix>>,
    /// The busiest routes.
    pub top_routes: Vec<Share<String>>,
}

/// How many of each top list a snapshot keeps.
const SNAPSHOT_TOP: usize = 10;

/// The network levels watched: sites (/24, /48) and providers (/16, /32).
pub(crate) fn site(ip: IpAddr) -> IpPrefix {
    IpPrefix::of(ip, PrefixLengths::new(24, 48).expect("valid lengths"))
}

fn provider(ip: IpAddr) -> IpPrefix {
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

/// The decaying sketches.
struct Window {
    /// Clusters at each level (fine, product, family) by id, weighted by
    /// requests.
    clusters: TopK<u64>,
    /// The clusters of recent ids, for the snapshot and events.
    cluster_keys: Recent<Cluster>,
    /// Fine and coarse clusters and sites, weighted by clients new to the
    /// guard.
    fresh: TopK<u64>,
    sites: TopK<IpPrefix>,
    providers: TopK<IpPrefix>,
    routes: TopK<u64>,
    route_names: Recent<RouteName>,
}

/// Shares learnt while the traffic behaved, for one kind of key; bounded.
struct Baseline<K> {
    shares: HashMap<K, f64, ahash::RandomState>,
    limit: usize,
}

impl<K: Clone + Eq + Hash> Baseline<K> {
    fn new(limit: usize) -> Self {
        Baseline {
            shares: HashMap::with_capacity_and_hasher(limit, ahash::RandomState::new()),
            limit,
        }
    }

    fn share(&self, k: &K) -> f64 {
        self.shares.get(k).copied().unwrap_or(0.0)
    }

    /// Moves every share `alpha` of the way to the window's.
    fn learn(&mut self, now: &[(K, f64)], alpha: f64) {
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
struct Counts {
    requests: f64,
    suspect: f64,
    /// Refused by the guard (rules, bans, scores); not shed.
    refused: f64,
    shed: f64,
    answers: f64,
    /// Answers with a 4xx or 5xx status.
    errors: f64,
    latency_nanos: f64,
}

impl Counts {
    fn fold(&mut self, tick: &Counts, decay: f64) {
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
struct RateBaseline {
    mean: f64,
    var: f64,
}

impl RateBaseline {
    fn learn(&mut self, x: f64, alpha: f64) {
        let d = x - self.mean;
        self.mean += alpha * d;
        self.var += alpha * (d * d - self.var);
    }

    /// Whether `rate` is raised: `margin` times the mean or more, and
    /// `z` standard deviations above it (the baseline's variance plus the
    /// Poisson noise of a window of `span` seconds).
    fn raised(&self, rate: f64, margin: f64, z: f64, span: f64) -> bool {
        let sd = (self.var + self.mean.max(1.0 / span) / span).sqrt();
        rate >= margin * self.mean && rate - self.mean >= z * sd
    }
}

/// State closed at each tick.
struct TickState {
    started: Timestamp,
    armed_at: Timestamp,
    sums: Counts,
    /// Ticks folded since the first request (the baselines' plain mean
    /// until armed).
    ticks: u32,
    /// Requests seen in all: detection is armed only once the baselines
    /// have learnt from [`WARM_WINDOWS`] windows' worth of `min_requests`.
    seen: f64,
    rate: RateBaseline,
    suspect: RateBaseline,
    latency: f64,
    bad_share: f64,
    calm_since: Option<Timestamp>,
    /// Since when the service has been at ease again in a busy period.
    ease_since: Option<Timestamp>,
    clusters: Baseline<u64>,
    sites: Baseline<IpPrefix>,
    routes: Baseline<u64>,
    snapshot: DetectionSnapshot,
}

/// The detector of one guard.
pub(crate) struct Detector {
    config: Detection,
    window: Mutex<Window>,
    state: Mutex<TickState>,
    /// End of the current tick, in clock nanoseconds.
    tick_end: AtomicU64,
    /// This tick's counts.
    requests: AtomicU64,
    suspect: AtomicU64,
    refused: AtomicU64,
    shed: AtomicU64,
    answers: AtomicU64,
    errors: AtomicU64,
    latency_sum_nanos: AtomicU64,
    /// The decayed shed count at the last tick and whether the service
    /// was degraded then, for `calm` between ticks.
    degraded: AtomicU64,
    under_attack: AtomicU64,
    /// Busy periods begun (the request rate raised, or the service
    /// degraded), twice plus one while one lasts: see [`Self::busy_stamp`].
    busy: AtomicU32,
    /// Cluster ids, network hashes and route hashes flagged in this
    /// attack; 0 is an empty place.
    flagged_classes: [AtomicU64; MAX_FLAGGED_CLUSTERS],
    flagged_sites: [AtomicU64; MAX_FLAGGED],
    flagged_routes: [AtomicU64; MAX_FLAGGED],
    flagged_count: AtomicUsize,
    /// Clusters flagged by other instances of a fleet (shared bans), each
    /// until its time in `remote_until` (clock nanoseconds); 0 is an empty
    /// place. Written by one task only; they never emit an event.
    remote_classes: [AtomicU64; MAX_FLAGGED],
    remote_until: [AtomicU64; MAX_FLAGGED],
    /// The latest of `remote_until`: none is flagged from then on.
    remote_latest: AtomicU64,
    hasher: ahash::RandomState,
}

/// What a closed tick produced for the guard to act on.
pub(crate) type Events = Vec<Event>;

/// The judgements of one tick; see the module documentation.
#[derive(Clone, Copy, Debug, Default)]
struct Judgement {
    surge: bool,
    suspect_surge: bool,
    latency_degraded: bool,
    shedding: bool,
    misbehaving: bool,
}

impl Judgement {
    fn degraded(&self) -> bool {
        self.latency_degraded || self.shedding
    }

    fn attack(&self) -> bool {
        (self.surge && self.degraded()) || self.suspect_surge
    }

    /// Traffic the baselines may learn from: nothing about it says bots.
    fn people_like(&self) -> bool {
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
            hasher: ahash::RandomState::new(),
            config,
        })
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
                >= 0.5 * self.config.shed_share * self.requests.load(Ordering::Relaxed) as f64
    }

    /// The busy period a client first seen now joins in: 0 while the
    /// service is at ease, else a number from 1 to 255 for the period
    /// (which wraps). A busy period begins at a tick whose request rate is
    /// rising (half the margin and half the significance of a surge) or
    /// whose service is degraded, and ends after
    /// [`Detection::cooldown`] without either. Overload protection serves
    /// the clients who came before it first (sessions under way before
    /// new ones, as session-based admission control does): a crowd that
    /// takes the service past its capacity cannot push out the customers
    /// it found there, however well it behaves.
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
    #[cfg(feature = "redis")]
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
    fn fresh_site(&self, site: IpPrefix) -> u64 {
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

    /// Closes the tick if `now` is past its end and nobody else is closing it.
    fn maybe_tick(&self, now: Timestamp) -> Events {
        let end = self.tick_end.load(Ordering::Relaxed);
        if now.as_nanos() < end {
            return Vec::new();
        }
        let next = now.saturating_add(self.config.tick).as_nanos();
        if self
            .tick_end
            .compare_exchange(end, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Vec::new();
        }
        self.close_tick(now)
    }

    /// Takes this tick's counts, leaving zeros.
    fn take_tick(&self) -> Counts {
        let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed) as f64;
        Counts {
            requests: take(&self.requests),
            suspect: take(&self.suspect),
            refused: take(&self.refused),
            shed: take(&self.shed),
            answers: take(&self.answers),
            errors: take(&self.errors),
            latency_nanos: take(&self.latency_sum_nanos),
        }
    }

    fn close_tick(&self, now: Timestamp) -> Events {
        let c = &self.config;
        let mut st = self.state.lock();
        let elapsed = now.saturating_duration_since(st.started).as_secs_f64();
        st.started = now;
        let tick = self.take_tick();
        if elapsed <= 0.0 {
            return Vec::new();
        }
        // A tick that ran long (no request came to close it) decays the
        // sums by its whole length.
        let decay = (-elapsed / c.window.as_secs_f64()).exp();
        st.sums.fold(&tick, decay);
        let keep = ((decay * 1024.0).round() as u64).min(1024);
        let (clusters, fresh, sites, providers, routes) = {
            let mut w = self.window.lock();
            let n = (st.sums.requests * UNIT as f64).max(1.0);
            let clusters: Vec<Share<Cluster>> = shares(&w.clusters, n, &st.clusters)
                .into_iter()
                .filter_map(|s| {
                    Some(Share {
                        key: *w.cluster_keys.get(s.key)?,
                        requests: s.requests,
                        new_clients: s.new_clients,
                        share: s.share,
                        baseline_share: s.baseline_share,
                    })
                })
                .collect();
            let sites = shares(&w.sites, n, &st.sites);
            let providers = shares(&w.providers, n, &Baseline::new(0));
            let routes: Vec<(Share<u64>, Box<str>)> = shares(&w.routes, n, &st.routes)
                .into_iter()
                .map(|s| {
                    let name = w
                        .route_names
                        .get(s.key)
                        .map_or("?", RouteName::as_str)
                        .into();
                    (s, name)
                })
                .collect();
            let fresh: Vec<(u64, u64)> = w
                .fresh
                .top(w.fresh.capacity())
                .into_iter()
                .map(|h| (h.key, h.count / UNIT))
                .collect();
            w.clusters.decay(keep, 1024);
            w.fresh.decay(keep, 1024);
            w.sites.decay(keep, 1024);
            w.providers.decay(keep, 1024);
            w.routes.decay(keep, 1024);
            (clusters, fresh, sites, providers, routes)
        };
        let fresh_of = |k: u64| fresh.iter().find(|(f, _)| *f == k).map_or(0, |(_, n)| *n);

        let span = c.span();
        let sums = st.sums;
        let rate = sums.requests / span;
        let suspect_rate = sums.suspect / span;
        let suspect_share = sums.suspect / sums.requests.max(1.0);
        let bad_share = (sums.refused + sums.errors) / sums.requests.max(1.0);
        let latency = if sums.answers >= 1.0 {
            sums.latency_nanos / sums.answers
        } else {
            st.latency
        };
        let min = f64::from(c.min_requests);
        let enough = sums.requests >= min;
        let surge = enough && st.rate.raised(rate, c.rate_margin, c.significance, span);
        let misbehaving = enough
            && sums.refused + sums.errors >= min / 2.0
            && bad_share >= c.misbehaviour_share
            && bad_share >= 2.0 * st.bad_share;
        let j = Judgement {
            surge,
            suspect_surge: (sums.suspect >= min
                && st
                    .suspect
                    .raised(suspect_rate, c.rate_margin, c.significance, span))
                || (surge && misbehaving),
            latency_degraded: sums.answers >= f64::from(c.min_answers)
                && latency >= c.latency_objective.as_nanos() as f64
                && latency >= c.latency_margin * st.latency,
            // Shedding over the window, and still shedding now.
            shedding: tick.shed > 0.0
                && sums.shed >= f64::from(c.min_shed)
                && sums.shed >= c.shed_share * sums.requests,
            misbehaving,
        };
        self.degraded
            .store(u64::from(j.degraded()), Ordering::Relaxed);

        if st.seen > 0.0 || tick.requests > 0.0 {
            st.ticks = st.ticks.saturating_add(1);
        }
        st.seen += tick.requests;
        // Armed once the warmup has passed and the baselines have seen
        // enough traffic: a service that starts quiet does not take its
        // first visitors for a surge.
        let armed = now >= st.armed_at && st.seen >= WARM_WINDOWS * min;
        // A busy period begins on a gentler rise than a surge (half the
        // margin and half the significance): it only ranks the clients who
        // come during it behind those who came before, when overload
        // protection has to choose, and the earlier it begins, the fewer of
        // a crowd's first members rank with the customers it found.
        let rising = enough
            && st.rate.raised(
                rate,
                1.0 + (c.rate_margin - 1.0) / 2.0,
                c.significance / 2.0,
                span,
            );
        self.mark_busy_period(&mut st, armed && (rising || j.degraded()), now);
        let attacking = self.under_attack();
        let mut events = Vec::new();
        if armed && !attacking && j.attack() {
            self.under_attack
                .store(now.as_nanos() | 1, Ordering::Relaxed);
            st.calm_since = None;
            st.snapshot.attack_since = Some(now);
            events.push(Event::AttackStarted {
                cause: if j.suspect_surge {
                    AttackCause::SuspectSurge
                } else if j.latency_degraded {
                    AttackCause::Latency
                } else {
                    AttackCause::Overload
                },
                rate,
                baseline_rate: st.rate.mean,
                latency: nanos(latency),
                baseline_latency: nanos(st.latency),
                suspect_share: (suspect_share, st.suspect.mean / st.rate.mean.max(1e-9)),
                refused_share: (
                    sums.refused / sums.requests.max(1.0),
                    sums.shed / sums.requests.max(1.0),
                ),
            });
        } else if attacking {
            match (j.attack(), st.calm_since) {
                (true, _) => st.calm_since = None,
                (false, None) => st.calm_since = Some(now),
                (false, Some(since)) if now.saturating_duration_since(since) >= c.cooldown => {
                    let began = st.snapshot.attack_since.take().unwrap_or(now);
                    self.end_attack();
                    st.snapshot.flagged_classes.clear();
                    st.snapshot.flagged_prefixes.clear();
                    st.snapshot.flagged_routes.clear();
                    events.push(Event::AttackEnded {
                        lasted: now.saturating_duration_since(began),
                    });
                }
                (false, Some(_)) => {}
            }
        }

        // The baselines learn from traffic that behaves like people, during
        // an attack too (so that growth, or a crowd that stays, becomes the
        // norm); from everything while warming up, as a plain mean.
        let warm = !armed;
        let alpha = if warm {
            1.0 / f64::from(st.ticks.max(1))
        } else {
            1.0 - (-elapsed / c.baseline_half_life.as_secs_f64()).exp2()
        };
        if warm || j.people_like() {
            st.rate.learn(rate, alpha);
            st.suspect.learn(suspect_rate, alpha);
            st.bad_share += alpha * (bad_share - st.bad_share);
        }
        if (warm || !j.degraded()) && sums.answers >= 1.0 {
            st.latency += alpha * (latency - st.latency);
        }
        if warm || (j.people_like() && !self.under_attack()) {
            let c: Vec<(u64, f64)> = clusters.iter().map(|s| (s.key.id(), s.share)).collect();
            st.clusters.learn(&c, alpha);
            let p: Vec<(IpPrefix, f64)> = sites.iter().map(|s| (s.key, s.share)).collect();
            st.sites.learn(&p, alpha);
            let r: Vec<(u64, f64)> = routes.iter().map(|(s, _)| (s.key, s.share)).collect();
            st.routes.learn(&r, alpha);
        }

        let clusters: Vec<Share<Cluster>> = clusters
            .into_iter()
            .map(|s| Share {
                new_clients: fresh_of(s.key.id()),
                ..s
            })
            .collect();
        let named = |s: &Share<u64>, name: &str| Share {
            key: name.to_owned(),
            requests: s.requests,
            new_clients: 0,
            share: s.share,
            baseline_share: s.baseline_share,
        };
        if self.under_attack() {
            // The widest clusters first: one flagged holds every cluster
            // inside it, which then need no place.
            let mut by_width: Vec<&Share<Cluster>> = clusters.iter().collect();
            by_width.sort_by_key(|s| std::cmp::Reverse(s.key.width()));
            for s in by_width {
                let known = st.snapshot.flagged_classes.iter().any(|f| {
                    f.key == s.key || f.key == s.key.coarse() || f.key == s.key.family_wide()
                });
                if !known
                    && s.new_clients >= u64::from(c.min_new_clients)
                    && self.surged(s, sums.requests)
                    && insert(&self.flagged_classes, s.key.id())
                {
                    self.flagged_count.fetch_add(1, Ordering::Relaxed);
                    st.snapshot.flagged_classes.push(*s);
                    events.push(Event::ClassFlagged(*s));
                }
            }
            for s in &sites {
                let known = st.snapshot.flagged_prefixes.iter().any(|f| f.key == s.key);
                let id = self.hasher.hash_one(s.key) | 1;
                let s = Share {
                    new_clients: fresh_of(self.fresh_site(s.key)),
                    ..*s
                };
                if !known
                    && s.new_clients >= u64::from(c.min_new_clients)
                    && self.surged(&s, sums.requests)
                    && insert(&self.flagged_sites, id)
                {
                    self.flagged_count.fetch_add(1, Ordering::Relaxed);
                    st.snapshot.flagged_prefixes.push(s);
                    events.push(Event::PrefixFlagged(s));
                }
            }
            for (s, name) in &routes {
                let known = st.snapshot.flagged_routes.iter().any(|f| *f.key == **name);
                if !known
                    && self.surged(s, sums.requests)
                    && insert(&self.flagged_routes, s.key | 1)
                {
                    self.flagged_count.fetch_add(1, Ordering::Relaxed);
                    let s = named(s, name);
                    st.snapshot.flagged_routes.push(s.clone());
                    events.push(Event::RouteFlagged(s));
                }
            }
        }

        let snap_latency = st.latency;
        let (baseline_rate, baseline_suspect) = (st.rate.mean, st.suspect.mean);
        let snap = &mut st.snapshot;
        snap.under_attack = self.under_attack();
        snap.degraded = j.degraded();
        snap.rate = rate;
        snap.latency = nanos(latency);
        snap.baseline_rate = baseline_rate;
        snap.baseline_latency = nanos(snap_latency);
        snap.suspect_share = suspect_share;
        snap.baseline_suspect_share = baseline_suspect / baseline_rate.max(1e-9);
        snap.bad_share = bad_share;
        snap.top_classes = clusters.into_iter().take(SNAPSHOT_TOP).collect();
        snap.top_prefixes = sites.into_iter().take(SNAPSHOT_TOP).collect();
        snap.top_networks = providers.into_iter().take(SNAPSHOT_TOP).collect();
        snap.top_routes = routes
            .iter()
            .take(SNAPSHOT_TOP)
            .map(|(s, name)| named(s, name))
            .collect();
        events
    }

    /// Whether a key's share surged: at least `surge_share` of the window's
    /// `requests`, `surge_factor` times its baseline share, significantly,
    /// over at least half of `min_requests`.
    fn surged<K>(&self, s: &Share<K>, requests: f64) -> bool {
        let c = &self.config;
        let count = s.requests as f64;
        let expected = s.baseline_share * requests;
        count >= f64::from(c.min_requests) / 2.0
            && s.share >= c.surge_share
            && s.share >= c.surge_factor * s.baseline_share
            && count - expected >= c.significance * (expected + 1.0).sqrt()
    }

    /// Begins a busy period at a busy tick, or ends one after
    /// [`Detection::cooldown`] of ticks at ease.
    fn mark_busy_period(&self, st: &mut TickState, busy: bool, now: Timestamp) {
        let n = self.busy.load(Ordering::Relaxed);
        let in_period = n & 1 == 1;
        if busy {
            st.ease_since = None;
            if !in_period {
                self.busy.store(n.wrapping_add(1), Ordering::Relaxed);
            }
        } else if in_period {
            let since = *st.ease_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.config.cooldown {
                self.busy.store(n.wrapping_add(1), Ordering::Relaxed);
                st.ease_since = None;
            }
        }
    }

    fn end_attack(&self) {
        self.under_attack.store(0, Ordering::Relaxed);
        for a in self
            .flagged_classes
            .iter()
            .chain(&self.flagged_sites)
            .chain(&self.flagged_routes)
        {
            a.store(0, Ordering::Relaxed);
        }
        self.flagged_count.store(0, Ordering::Relaxed);
    }
}

/// The sketch's heavy hitters as shares of `total` (in sketch units), with
/// their baselines; counts in requests.
fn shares<K: Copy + Eq + Hash>(top: &TopK<K>, total: f64, base: &Baseline<K>) -> Vec<Share<K>> {
    top.top(top.capacity())
        .into_iter()
        .map(|h| Share {
            requests: h.count / UNIT,
            new_clients: 0,
            share: h.count as f64 / total,
            baseline_share: base.share(&h.key),
            key: h.key,
        })
        .collect()
}

fn nanos(n: f64) -> Duration {
    Duration::from_nanos(n.max(0.0) as u64)
}

fn contains(set: &[AtomicU64], id: u64) -> bool {
    set.iter().any(|a| a.load(Ordering::Relaxed) == id)
}

/// Puts `id` in a free place; false when all are taken.
fn insert(set: &[AtomicU64], id: u64) -> bool {
    set.iter().any(|a| {
        a.compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use http::Version;

    use super::*;
    use crate::http::identify::look::UaDetails;
    use crate::http::{UaFamily, ua_family};

    const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    /// Twelve tools' user agents, as a diverse botnet sends them.
    const TOOLS: [&str; 12] = [
        "curl/7.88.1",
        "Wget/1.21.3",
        "python-requests/2.34.2",
        "python-httpx/0.29.0",
        "Python-urllib/3.11",
        "Python/3.11 aiohttp/3.14.5",
        "node",
        "axios/1.21.1",
        "got (https://github.com/sindresorhus/got)",
        "Java-http-client/17.0.15",
        "Go-http-client/1.1",
        "okhttp/3.13.1",
    ];

    fn cluster(ua: &str, headers: u32) -> Cluster {
        let family = ua_family(ua.as_bytes());
        Cluster::fine(
            family,
            &UaDetails::of(ua.as_bytes(), family),
            Version::HTTP_11,
            headers,
        )
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    /// A population: `(user agent, first address, clients, requests a
    /// second each, route)`; clients are numbered from the address up.
    #[derive(Clone, Copy)]
    struct Crowd {
        ua: &'static str,
        net: u8,
        clients: u32,
        rate: f64,
        route: &'static str,
    }

    fn shoppers(clients: u32) -> Crowd {
        Crowd {
            ua: CHROME,
            net: 20,
            clients,
            rate: 1.0,
            route: "/product/{id}",
        }
    }

    /// `people`, and `clients` of each of the twelve `TOOLS`, each tool in
    /// its own network from `net` on, at `rate` requests a second each to
    /// `route`.
    fn with_tools(
        people: Crowd,
        net: u8,
        clients: u32,
        rate: f64,
        route: &'static str,
    ) -> Vec<Crowd> {
        let tools = TOOLS.iter().enumerate().map(|(i, ua)| Crowd {
            ua,
            net: net + i as u8,
            clients,
            rate,
            route,
        });
        std::iter::once(people).chain(tools).collect()
    }

    /// The service: how long an answer takes and whether requests are
    /// shed, given the offered rate.
    type Service = fn(f64) -> (Duration, bool);

    fn fast(_: f64) -> (Duration, bool) {
        (Duration::from_millis(5), false)
    }

    /// A service that carries 500 requests a second, and sheds past it.
    fn capacity_500(rate: f64) -> (Duration, bool) {
        (Duration::from_millis(5), rate > 500.0)
    }

    struct Run {
        d: Detector,
        events: Vec<(u64, Event)>,
        seen: std::collections::HashSet<IpAddr>,
        /// Fractional requests owed per crowd.
        owed: Vec<f64>,
        next: Vec<u32>,
    }

    impl Run {
        fn new() -> Run {
            Run {
                d: Detector::new(Detection::default(), at(0)).unwrap(),
                events: Vec::new(),
                seen: Default::default(),
                owed: Vec::new(),
                next: Vec::new(),
            }
        }

        /// Drives `crowds` for `[from, to)` ms in 10 ms steps; each crowd's
        /// clients take turns.
        fn drive(&mut self, from: u64, to: u64, crowds: &[Crowd], service: Service) {
            self.owed.resize(crowds.len(), 0.0);
            self.next.resize(crowds.len(), 0);
            let total: f64 = crowds.iter().map(|c| c.rate * f64::from(c.clients)).sum();
            let mut t = from;
            while t < to {
                for (i, c) in crowds.iter().enumerate() {
                    self.owed[i] += c.rate * f64::from(c.clients) / 100.0;
                    while self.owed[i] >= 1.0 {
                        self.owed[i] -= 1.0;
                        let k = self.next[i] % c.clients.max(1);
                        self.next[i] = self.next[i].wrapping_add(1);
                        let ip = IpAddr::from([c.net, (k >> 16) as u8, (k >> 8) as u8, k as u8]);
                        let family = ua_family(c.ua.as_bytes());
                        let s = Sighting {
                            cluster: cluster(c.ua, 0b111),
                            cluster_ids: cluster(c.ua, 0b111).ids(),
                            ip,
                            site: site(ip),
                            route: c.route,
                            route_hash: self.d.route_hash(c.route),
                            new_client: self.seen.insert(ip),
                            suspect: family != UaFamily::Browser,
                        };
                        let events = self.d.observe(at(t), &s);
                        self.events.extend(events.into_iter().map(|e| (t, e)));
                        let (latency, shed) = service(total);
                        if shed && k % 2 == 0 {
                            self.d.count_shed();
                        } else {
                            self.d.observe_answer(latency, false);
                        }
                    }
                }
                t += 10;
            }
        }

        fn started(&self) -> Option<u64> {
            self.events
                .iter()
                .find_map(|(t, e)| matches!(e, Event::AttackStarted { .. }).then_some(*t))
        }

        fn ended(&self) -> Option<u64> {
            self.events
                .iter()
                .find_map(|(t, e)| matches!(e, Event::AttackEnded { .. }).then_some(*t))
        }
    }

    #[test]
    fn a_flash_crowd_the_service_carries_is_no_attack() {
        let mut r = Run::new();
        r.drive(0, 20_000, &[shoppers(200)], fast);
        // Ten times as many people within 10 s, then steady.
        for step in 1..=10 {
            let n = 200 + 180 * step;
            let from = 20_000 + u64::from(step - 1) * 1_000;
            r.drive(from, from + 1_000, &[shoppers(n)], fast);
        }
        r.drive(30_000, 60_000, &[shoppers(2_000)], fast);
        assert_eq!(r.started(), None, "{:?}", r.events);
        assert!(r.d.calm());
        // The baseline followed the crowd.
        let snap = r.d.snapshot();
        assert!(snap.baseline_rate > 1_000.0, "{snap:?}");
    }

    #[test]
    fn growth_and_a_small_site_joined_by_more_are_no_attack() {
        let mut r = Run::new();
        // ×5 over 60 s.
        r.drive(0, 10_000, &[shoppers(100)], fast);
        for s in 0..60 {
            let from = 10_000 + s * 1_000;
            r.drive(
                from,
                from + 1_000,
                &[shoppers(100 + 400 * s as u32 / 60)],
                fast,
            );
        }
        assert_eq!(r.started(), None, "{:?}", r.events);
        // 10 people, and 40 more at once.
        let mut r = Run::new();
        r.drive(0, 20_000, &[shoppers(10)], fast);
        r.drive(20_000, 60_000, &[shoppers(50)], fast);
        assert_eq!(r.started(), None, "{:?}", r.events);
    }

    #[test]
    fn a_page_load_a_lone_client_or_a_single_shed_is_no_surge() {
        let mut r = Run::new();
        let quiet = shoppers(5);
        r.drive(0, 10_000, &[quiet], fast);
        // One client fetches a page and 40 assets within 100 ms.
        let page = Crowd {
            ua: CHROME,
            net: 30,
            clients: 1,
            rate: 400.0,
            route: "/static/app.css",
        };
        r.drive(10_000, 10_100, &[quiet, page], fast);
        r.drive(10_100, 20_000, &[quiet], fast);
        // One shed request: newcomers rank lower at once, but it is no
        // overload once the tick judges it.
        r.d.count_shed();
        assert!(r.d.degraded() && !r.d.calm());
        r.drive(20_000, 25_000, &[quiet], fast);
        assert!(!r.d.degraded() && r.d.calm());
        assert_eq!(r.started(), None, "{:?}", r.events);
        assert!(r.d.snapshot().flagged_classes.is_empty());
    }

    #[test]
    fn mixed_clients_at_a_human_pace_raise_nothing() {
        let mut r = Run::new();
        let crowds = with_tools(shoppers(100), 40, 3, 0.2, "/api/items");
        r.drive(0, 60_000, &crowds, fast);
        assert_eq!(r.started(), None, "{:?}", r.events);
    }

    #[test]
    fn a_diverse_botnet_is_detected_within_two_seconds_with_its_clusters_and_route() {
        let mut r = Run::new();
        r.drive(0, 20_000, &[shoppers(200)], capacity_500);
        // 3,000 bots, 250 for each of twelve tools, 2 searches a second.
        let crowds = with_tools(shoppers(200), 100, 250, 2.0, "/search");
        r.drive(20_000, 30_000, &crowds, capacity_500);
        let started = r.started().expect("detected");
        assert!(
            started - 20_000 <= 2_000,
            "detected after {} ms",
            started - 20_000
        );
        let snap = r.d.snapshot();
        // Every tool's requests fall in a flagged cluster (the family-wide
        // one of tools, or each product's), and the shoppers' do not.
        for ua in TOOLS {
            assert!(r.d.cluster_flagged(cluster(ua, 0b111).ids()), "{ua}");
        }
        assert!(
            snap.flagged_classes
                .iter()
                .all(|s| s.key.family() == UaFamily::Tool),
            "{:?}",
            snap.flagged_classes
        );
        assert!(!r.d.cluster_flagged(cluster(CHROME, 0b111).ids()));
        assert_eq!(snap.flagged_routes.len(), 1, "{:?}", snap.flagged_routes);
        assert_eq!(snap.flagged_routes[0].key, "/search");
        assert!(r.d.route_flagged(r.d.route_hash("/search")));
        assert!(!r.d.route_flagged(r.d.route_hash("/product/{id}")));
        // It says so in words.
        let text = r
            .events
            .iter()
            .find(|(_, e)| matches!(e, Event::ClassFlagged(_)))
            .map(|(_, e)| e.to_string())
            .unwrap();
        assert!(text.contains("new clients"), "{text}");
        // The bots stop: the attack ends after the cooldown.
        r.drive(30_000, 45_000, &[shoppers(200)], capacity_500);
        assert!(r.ended().is_some() && !r.d.under_attack());
    }

    #[test]
    fn a_crowd_past_capacity_is_an_attack_that_ends_once_it_is_steady() {
        let mut r = Run::new();
        r.drive(0, 20_000, &[shoppers(200)], capacity_500);
        // 2,000 people within 10 s, past what the service carries.
        for step in 1..=10 {
            let n = 200 + 180 * step;
            let from = 20_000 + u64::from(step - 1) * 1_000;
            r.drive(from, from + 1_000, &[shoppers(n)], capacity_500);
        }
        assert!(
            r.started().is_some(),
            "an overload with a surge is declared"
        );
        r.drive(30_000, 90_000, &[shoppers(2_000)], capacity_500);
        let ended = r.ended().expect("the attack ends once the crowd is steady");
        assert!(ended <= 30_000 + 60_000, "ended at {ended} ms");
        assert!(!r.d.under_attack());
        // Still shedding: not calm, though no attack.
        assert!(r.d.degraded() && !r.d.calm());
        assert!(r.d.snapshot().flagged_classes.is_empty());
    }

    #[test]
    fn a_busy_period_lasts_while_the_crowd_sheds_and_ends_after_the_cooldown() {
        let mut r = Run::new();
        r.drive(0, 20_000, &[shoppers(200)], capacity_500);
        assert_eq!(r.d.busy_stamp(), 0, "at ease");
        r.drive(20_000, 22_000, &[shoppers(2_000)], capacity_500);
        let crowd = r.d.busy_stamp();
        assert_ne!(crowd, 0, "a crowd past capacity begins a busy period");
        // The same period while it sheds, the attack's end included.
        r.drive(22_000, 90_000, &[shoppers(2_000)], capacity_500);
        assert!(r.ended().is_some());
        assert_eq!(r.d.busy_stamp(), crowd);
        // The crowd leaves: at ease again after the cooldown.
        r.drive(90_000, 95_000, &[shoppers(200)], capacity_500);
        assert_eq!(r.d.busy_stamp(), crowd, "within the cooldown");
        r.drive(95_000, 110_000, &[shoppers(200)], capacity_500);
        assert_eq!(r.d.busy_stamp(), 0);
        // A new crowd is another period.
        r.drive(110_000, 112_000, &[shoppers(2_000)], capacity_500);
        assert_ne!(r.d.busy_stamp(), 0);
        assert_ne!(r.d.busy_stamp(), crowd);
    }

    #[test]
    fn a_slow_service_without_more_traffic_is_degraded_not_attacked() {
        let mut r = Run::new();
        r.drive(0, 10_000, &[shoppers(100)], fast);
        fn slow(_: f64) -> (Duration, bool) {
            (Duration::from_millis(400), false)
        }
        r.drive(10_000, 20_000, &[shoppers(100)], slow);
        assert_eq!(r.started(), None);
        assert!(r.d.degraded() && !r.d.calm());
        // With a surge on top, it is an attack.
        r.drive(20_000, 23_000, &[shoppers(400)], slow);
        assert!(matches!(
            r.events
                .iter()
                .find(|(_, e)| matches!(e, Event::AttackStarted { .. })),
            Some((
                _,
                Event::AttackStarted {
                    cause: AttackCause::Latency,
                    ..
                }
            ))
        ));
    }

    #[test]
    fn a_single_address_flood_of_refusals_is_a_suspect_surge() {
        let mut r = Run::new();
        r.drive(0, 10_000, &[shoppers(100)], fast);
        for t in (10_000..12_000).step_by(10) {
            for _ in 0..10 {
                let s = Sighting {
                    cluster: cluster(CHROME, 0b111),
                    cluster_ids: cluster(CHROME, 0b111).ids(),
                    ip: IpAddr::from([66, 6, 6, 6]),
                    site: site(IpAddr::from([66, 6, 6, 6])),
                    route: "/search",
                    route_hash: r.d.route_hash("/search"),
                    new_client: false,
                    suspect: false,
                };
                r.d.observe(at(t), &s);
                r.d.count_refusal();
            }
            r.drive(t, t + 10, &[shoppers(100)], fast);
        }
        assert!(r.d.under_attack(), "{:?}", r.events);
        // One client is not a surging cluster or network.
        assert!(r.d.snapshot().flagged_classes.is_empty());
        assert!(r.d.snapshot().flagged_prefixes.is_empty());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn remote_flags_hold_until_they_expire_and_stay_bounded() {
        let d = Detector::new(Detection::default(), at(0)).unwrap();
        let bots = cluster("python-requests/2.32", 0b111);
        let shop = cluster(CHROME, 0b111);
        let ids = |c: Cluster| c.ids();
        assert!(!d.cluster_flagged_at(ids(bots), at(0)));
        assert!(d.flag_remote_class(bots.id(), at(5_000), at(0)));
        assert!(d.cluster_flagged_at(ids(bots), at(4_999)));
        assert!(!d.cluster_flagged_at(ids(shop), at(1_000)));
        // Remote flags are not the local attack's: no event, no snapshot.
        assert!(!d.cluster_flagged(ids(bots)) && !d.under_attack());
        assert!(d.snapshot().flagged_classes.is_empty());
        // A later end extends the flag, an earlier one does not shorten it.
        assert!(d.flag_remote_class(bots.id(), at(8_000), at(1_000)));
        assert!(d.flag_remote_class(bots.id(), at(2_000), at(1_000)));
        assert!(d.cluster_flagged_at(ids(bots), at(7_999)));
        assert!(!d.cluster_flagged_at(ids(bots), at(8_000)));
        // Bounded: every place taken by an unexpired flag refuses more.
        for class in 1..MAX_FLAGGED as u64 {
            assert!(d.flag_remote_class(class << 1, at(10_000), at(0)));
        }
        assert!(!d.flag_remote_class(shop.id(), at(10_000), at(0)));
        // An expired place is reused.
        assert!(d.flag_remote_class(shop.id(), at(20_000), at(9_000)));
        assert!(d.cluster_flagged_at(ids(shop), at(9_500)));
        assert!(!d.cluster_flagged_at(ids(bots), at(9_500)));
    }

    #[test]
    fn bad_tuning_is_refused_with_the_field_named() {
        let bad = |f: fn(&mut Detection)| {
            let mut d = Detection::default();
            f(&mut d);
            Detector::new(d, at(0)).err().unwrap().to_string()
        };
        assert!(bad(|d| d.tick = Duration::from_millis(1)).contains("tick"));
        assert!(bad(|d| d.window = Duration::from_millis(20)).contains("window"));
        assert!(bad(|d| d.rate_margin = 0.5).contains("rate_margin"));
        assert!(bad(|d| d.surge_share = 0.0).contains("surge_share"));
        assert!(bad(|d| d.top_k = 0).contains("top_k"));
        assert!(bad(|d| d.significance = f64::NAN).contains("significance"));
        assert!(bad(|d| d.latency_objective = Duration::ZERO).contains("latency_objective"));
    }
}
