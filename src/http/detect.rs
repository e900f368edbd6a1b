//! Attack detection: baselines of the request rate, the service's latency,
//! and the share of each fingerprint class and network; an "under attack"
//! state with hysteresis; and, during an attack, the classes and networks
//! whose share surged.
//!
//! Requests drive it: each one is counted (rate), offered to bounded
//! heavy-hitter sketches ([`TopK`], Space-Saving) of its class and
//! networks, and once per tick the first request past the tick's end
//! closes it: rates and shares of the tick are compared with their
//! baselines, which only learn while the service is calm, so a long attack
//! never becomes the new normal.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::fingerprint::Fingerprint;
use crate::ip::PrefixLengths;
use crate::{ConfigError, IpPrefix, Timestamp, TopK};

/// Most classes or networks flagged at once.
pub(crate) const MAX_FLAGGED: usize = 16;

/// Tuning of attack detection. The defaults suit a service of tens to
/// thousands of requests a second.
///
/// ```
/// use std::time::Duration;
/// use floodguard::http::Detection;
/// let mut d = Detection::default();
/// d.rate_margin = 5.0; // this shop's traffic is bursty
/// d.min_rate = 500.0;
/// # let _ = d;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Detection {
    /// How often rates and shares are measured: 100 ms.
    pub tick: Duration,
    /// Ticks measured before detection is armed: 10 (1 s). Baselines
    /// learn from them.
    pub warmup_ticks: u32,
    /// Half-life of the baselines: 30 s.
    pub baseline_half_life: Duration,
    /// An attack starts when the request rate reaches this multiple of its
    /// baseline: 3.
    pub rate_margin: f64,
    /// ... and at least this many requests a second: 50 (a quiet service
    /// tripling its traffic is not under attack).
    pub min_rate: f64,
    /// Or when the service's mean latency reaches this multiple of its
    /// baseline: 4.
    pub latency_margin: f64,
    /// ... and at least this: 20 ms.
    pub min_latency: Duration,
    /// The attack ends once rate and latency stay below this multiple of
    /// their baselines: 1.5 ...
    pub exit_margin: f64,
    /// ... for this long: 10 s.
    pub cooldown: Duration,
    /// During an attack, a class or network is flagged when its share of
    /// requests reaches this: 0.15 ...
    pub surge_share: f64,
    /// ... and this multiple of its share before the attack: 3.
    pub surge_factor: f64,
    /// Entries of each heavy-hitter sketch: 64.
    pub top_k: usize,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            tick: Duration::from_millis(100),
            warmup_ticks: 10,
            baseline_half_life: Duration::from_secs(30),
            rate_margin: 3.0,
            min_rate: 50.0,
            latency_margin: 4.0,
            min_latency: Duration::from_millis(20),
            exit_margin: 1.5,
            cooldown: Duration::from_secs(10),
            surge_share: 0.15,
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
        if self.baseline_half_life.is_zero() {
            return Err(ConfigError::ZeroDuration {
                field: "baseline_half_life",
            });
        }
        for (field, v) in [
            ("rate_margin", self.rate_margin),
            ("latency_margin", self.latency_margin),
            ("exit_margin", self.exit_margin),
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
        if !(self.surge_share > 0.0 && self.surge_share <= 1.0) {
            return Err(ConfigError::OutOfRange {
                field: "surge_share",
                value: self.surge_share.to_string(),
                range: "(0, 1]",
            });
        }
        if self.top_k == 0 {
            return Err(ConfigError::Zero { field: "top_k" });
        }
        Ok(())
    }
}

/// Why an attack was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttackCause {
    /// The request rate left its baseline.
    Rate,
    /// The service's latency left its baseline ("slow but up").
    Latency,
    /// Overload protection shed requests: the service is at its limit.
    Overload,
}

/// Something the guard wants the operator to know, delivered to the
/// callback set with [`GuardBuilder::on_event`](super::GuardBuilder::on_event)
/// and logged with `tracing`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The service came under attack.
    AttackStarted {
        /// What crossed its margin.
        cause: AttackCause,
        /// Requests a second in the tick that tripped it.
        rate: f64,
        /// The rate's baseline.
        baseline_rate: f64,
        /// The service's mean latency in that tick.
        latency: Duration,
        /// The latency's baseline.
        baseline_latency: Duration,
    },
    /// The attack is over: rate and latency stayed near their baselines
    /// for [`Detection::cooldown`].
    AttackEnded {
        /// How long it lasted.
        lasted: Duration,
    },
    /// A fingerprint class surged during the attack; its members score
    /// [`Weights::class_surge`](super::Weights::class_surge) more.
    ClassFlagged(Share<Fingerprint>),
    /// A network (IPv4 /24, IPv6 /48) surged during the attack.
    PrefixFlagged(Share<IpPrefix>),
    /// A client was banned (or, in shadow mode, would have been).
    ClientBanned {
        /// The banned client: an IPv4 address or an IPv6 /64.
        client: IpPrefix,
        /// For how long.
        duration: Duration,
        /// Its score and the signals behind it.
        report: super::ScoreReport,
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
            } => write!(
                f,
                "attack started ({cause:?}): {rate:.0} req/s against {baseline_rate:.0}, \
                 latency {latency:?} against {baseline_latency:?}"
            ),
            Event::AttackEnded { lasted } => write!(f, "attack ended after {lasted:?}"),
            Event::ClassFlagged(s) => write!(f, "class {} flagged: {s}", s.key),
            Event::PrefixFlagged(s) => write!(f, "network {} flagged: {s}", s.key),
            Event::ClientBanned {
                client,
                duration,
                report,
                offences,
                shadow,
            } => write!(
                f,
                "{}{client} banned for {duration:?} (offence {}), score {report}",
                if *shadow { "[shadow] " } else { "" },
                u32::from(*offences) + 1
            ),
        }
    }
}

/// A class's or network's share of requests, now and before the attack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share<K> {
    /// The class or network.
    pub key: K,
    /// Requests counted for it in the last tick (an overestimate by at most
    /// the sketch's error).
    pub requests: u64,
    /// Its share of the last tick's requests.
    pub share: f64,
    /// Its share in the baseline (before the attack).
    pub baseline_share: f64,
}

impl<K> fmt::Display for Share<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1}% of requests, {:.1}% before",
            self.share * 100.0,
            self.baseline_share * 100.0
        )
    }
}

/// What the detector saw at its last tick.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DetectionSnapshot {
    /// Whether the service is under attack.
    pub under_attack: bool,
    /// Since when, on the guard's clock.
    pub attack_since: Option<Timestamp>,
    /// Requests a second in the last tick.
    pub rate: f64,
    /// The rate's baseline.
    pub baseline_rate: f64,
    /// The service's mean latency in the last tick.
    pub latency: Duration,
    /// The latency's baseline.
    pub baseline_latency: Duration,
    /// Classes flagged in this attack.
    pub flagged_classes: Vec<Share<Fingerprint>>,
    /// Networks flagged in this attack.
    pub flagged_prefixes: Vec<Share<IpPrefix>>,
    /// The busiest classes of the last tick.
    pub top_classes: Vec<Share<Fingerprint>>,
    /// The busiest IPv4 /24 and IPv6 /48 networks of the last tick.
    pub top_prefixes: Vec<Share<IpPrefix>>,
    /// The busiest IPv4 /16 and IPv6 /32 networks of the last tick.
    pub top_networks: Vec<Share<IpPrefix>>,
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

/// Sketches of the current tick.
struct Window {
    classes: TopK<Fingerprint>,
    sites: TopK<IpPrefix>,
    providers: TopK<IpPrefix>,
}

/// Shares learnt while calm, for one kind of key; bounded.
struct Baseline<K> {
    shares: HashMap<K, f64, ahash::RandomState>,
    limit: usize,
}

impl<K: Copy + Eq + Hash> Baseline<K> {
    fn new(limit: usize) -> Self {
        Baseline {
            shares: HashMap::with_capacity_and_hasher(limit, ahash::RandomState::new()),
            limit,
        }
    }

    fn share(&self, k: &K) -> f64 {
        self.shares.get(k).copied().unwrap_or(0.0)
    }

    /// Moves every share `alpha` of the way to this tick's.
    fn learn(&mut self, tick: &[Share<K>], alpha: f64) {
        for v in self.shares.values_mut() {
            *v *= 1.0 - alpha;
        }
        for s in tick {
            *self.shares.entry(s.key).or_insert(0.0) += alpha * s.share;
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

/// State closed at each tick.
struct TickState {
    started: Timestamp,
    ticks: u32,
    baseline_rate: f64,
    baseline_latency: f64,
    calm_since: Option<Timestamp>,
    classes: Baseline<Fingerprint>,
    sites: Baseline<IpPrefix>,
    snapshot: DetectionSnapshot,
}

/// The detector of one guard.
pub(crate) struct Detector {
    config: Detection,
    window: Mutex<Window>,
    state: Mutex<TickState>,
    /// End of the current tick, in clock nanoseconds.
    tick_end: AtomicU64,
    requests: AtomicU64,
    shed: AtomicU64,
    latency_sum_nanos: AtomicU64,
    latency_count: AtomicU64,
    under_attack: AtomicU64,
    /// Class ids (`Fingerprint::class`) and network hashes flagged in this
    /// attack; 0 is an empty place.
    flagged_classes: [AtomicU64; MAX_FLAGGED],
    flagged_sites: [AtomicU64; MAX_FLAGGED],
    flagged_count: AtomicUsize,
    /// Classes flagged by other instances of a fleet (shared bans), each
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

impl Detector {
    pub(crate) fn new(config: Detection, now: Timestamp) -> Result<Self, ConfigError> {
        config.validate()?;
        let k = config.top_k;
        Ok(Detector {
            window: Mutex::new(Window {
                classes: TopK::new(k)?,
                sites: TopK::new(k)?,
                providers: TopK::new(k)?,
            }),
            state: Mutex::new(TickState {
                started: now,
                ticks: 0,
                baseline_rate: 0.0,
                baseline_latency: 0.0,
                calm_since: None,
                classes: Baseline::new(4 * k),
                sites: Baseline::new(4 * k),
                snapshot: DetectionSnapshot::default(),
            }),
            tick_end: AtomicU64::new(now.saturating_add(config.tick).as_nanos()),
            requests: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            latency_sum_nanos: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            under_attack: AtomicU64::new(0),
            flagged_classes: Default::default(),
            flagged_sites: Default::default(),
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

    /// Whether overload protection has shed more than 1% of this tick's
    /// requests so far: what will declare an attack when the tick closes
    /// (once the detector is armed), seen before it does.
    #[inline]
    pub(crate) fn shedding(&self) -> bool {
        let shed = self.shed.load(Ordering::Relaxed);
        shed > 0 && shed as f64 >= 0.01 * self.requests.load(Ordering::Relaxed) as f64
    }

    /// Neither under attack nor shedding: the service is at ease. Good
    /// standing is earned only then, and new clients are suspect
    /// otherwise; the first moments of an overload, before the tick that
    /// declares the attack closes, are not calm.
    #[inline]
    pub(crate) fn calm(&self) -> bool {
        !self.under_attack() && !self.shedding()
    }

    /// Counts one request of class `fp` from `ip`; returns the events of a
    /// tick if this request closed one.
    pub(crate) fn observe(
        &self,
        now: Timestamp,
        fp: Option<&Fingerprint>,
        ip: Option<IpAddr>,
    ) -> Events {
        self.requests.fetch_add(1, Ordering::Relaxed);
        {
            let mut w = self.window.lock();
            if let Some(fp) = fp {
                w.classes.offer(*fp, 1);
            }
            if let Some(ip) = ip {
                w.sites.offer(site(ip), 1);
                w.providers.offer(provider(ip), 1);
            }
        }
        self.maybe_tick(now)
    }

    /// Counts a request or connection refused before scoring (a banned
    /// client retrying): it is traffic, for the rate, though it is not
    /// fingerprinted. Ticks are closed by scored requests only.
    pub(crate) fn count_refused(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request shed by overload protection.
    pub(crate) fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long the service took to answer.
    pub(crate) fn observe_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether class `fp` is flagged in the current attack.
    #[inline]
    pub(crate) fn class_flagged(&self, fp: &Fingerprint) -> bool {
        self.flagged_count.load(Ordering::Relaxed) != 0
            && contains(&self.flagged_classes, fp.class() | 1)
    }

    /// Whether class `fp` is flagged, in this attack or by another instance
    /// of the fleet until a time after `now`.
    #[inline]
    pub(crate) fn class_flagged_at(&self, fp: &Fingerprint, now: Timestamp) -> bool {
        self.class_flagged(fp)
            || (now.as_nanos() < self.remote_latest.load(Ordering::Relaxed)
                && self
                    .remote_classes
                    .iter()
                    .zip(&self.remote_until)
                    .any(|(c, u)| {
                        c.load(Ordering::Acquire) == fp.class() | 1
                            && now.as_nanos() < u.load(Ordering::Relaxed)
                    }))
    }

    /// Flags `class` (a [`Fingerprint::class`]) until `until`, because
    /// another instance of the fleet flagged it. Emits no event, so the flag
    /// is not published again. Keeps an existing flag's later end; false when
    /// all [`MAX_FLAGGED`] places hold unexpired flags. Called by one task
    /// only (the shared-bans subscriber).
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

    /// Whether `ip`'s /24 or /48 is flagged in the current attack.
    #[inline]
    pub(crate) fn site_flagged(&self, ip: IpAddr) -> bool {
        self.flagged_count.load(Ordering::Relaxed) != 0
            && contains(&self.flagged_sites, self.hasher.hash_one(site(ip)) | 1)
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

    fn close_tick(&self, now: Timestamp) -> Events {
        let c = &self.config;
        let mut st = self.state.lock();
        let elapsed = now.saturating_duration_since(st.started).as_secs_f64();
        st.started = now;
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let shed = self.shed.swap(0, Ordering::Relaxed);
        let lat_sum = self.latency_sum_nanos.swap(0, Ordering::Relaxed);
        let lat_n = self.latency_count.swap(0, Ordering::Relaxed);
        let (classes, sites, providers) = {
            let mut w = self.window.lock();
            let total = w.classes.total().max(1);
            let out = (
                shares(&w.classes, total, &st.classes),
                shares(&w.sites, w.sites.total().max(1), &st.sites),
                shares(&w.providers, w.providers.total().max(1), &Baseline::new(0)),
            );
            w.classes.clear();
            w.sites.clear();
            w.providers.clear();
            out
        };
        if elapsed <= 0.0 {
            return Vec::new();
        }
        let rate = requests as f64 / elapsed;
        // With no answer this tick, latency is as it was.
        let latency = if lat_n == 0 {
            st.baseline_latency
        } else {
            lat_sum as f64 / lat_n as f64
        };
        st.ticks = st.ticks.saturating_add(1);
        let armed = st.ticks > c.warmup_ticks;
        let attacking = self.under_attack();
        let mut events = Vec::new();

        let rate_high = rate >= c.rate_margin * st.baseline_rate && rate >= c.min_rate;
        let min_latency = c.min_latency.as_nanos() as f64;
        let latency_high =
            latency >= c.latency_margin * st.baseline_latency && latency >= min_latency;
        // Overload protection shedding more than 1% of requests: the
        // service is at its limit, whatever the rate did.
        let shedding = shed > 0 && shed as f64 >= 0.01 * requests as f64;
        if armed && !attacking && (rate_high || latency_high || shedding) {
            self.under_attack
                .store(now.as_nanos() | 1, Ordering::Relaxed);
            st.calm_since = None;
            st.snapshot.attack_since = Some(now);
            events.push(Event::AttackStarted {
                cause: if rate_high {
                    AttackCause::Rate
                } else if latency_high {
                    AttackCause::Latency
                } else {
                    AttackCause::Overload
                },
                rate,
                baseline_rate: st.baseline_rate,
                latency: nanos(latency),
                baseline_latency: nanos(st.baseline_latency),
            });
        } else if attacking {
            let calm = !shedding
                && rate < c.exit_margin * st.baseline_rate.max(c.min_rate / c.rate_margin)
                && latency
                    < c.exit_margin * st.baseline_latency.max(min_latency / c.latency_margin);
            match (calm, st.calm_since) {
                (false, _) => st.calm_since = None,
                (true, None) => st.calm_since = Some(now),
                (true, Some(since)) if now.saturating_duration_since(since) >= c.cooldown => {
                    let began = st.snapshot.attack_since.take().unwrap_or(now);
                    self.end_attack();
                    st.snapshot.flagged_classes.clear();
                    st.snapshot.flagged_prefixes.clear();
                    events.push(Event::AttackEnded {
                        lasted: now.saturating_duration_since(began),
                    });
                }
                (true, Some(_)) => {}
            }
        } else {
            // Calm: the baselines learn; during warmup, as a plain mean so
            // the first ticks count fully.
            let alpha = if st.ticks <= c.warmup_ticks {
                1.0 / f64::from(st.ticks)
            } else {
                1.0 - (-c.tick.as_secs_f64() / c.baseline_half_life.as_secs_f64()).exp2()
            };
            st.baseline_rate += alpha * (rate - st.baseline_rate);
            if lat_n != 0 {
                st.baseline_latency += alpha * (latency - st.baseline_latency);
            }
            st.classes.learn(&classes, alpha);
            st.sites.learn(&sites, alpha);
        }

        if self.under_attack() {
            for s in &classes {
                let known = st.snapshot.flagged_classes.iter().any(|f| f.key == s.key);
                if self.surged(s) && !known && insert(&self.flagged_classes, s.key.class() | 1) {
                    self.flagged_count.fetch_add(1, Ordering::Relaxed);
                    st.snapshot.flagged_classes.push(*s);
                    events.push(Event::ClassFlagged(*s));
                }
            }
            for s in &sites {
                let known = st.snapshot.flagged_prefixes.iter().any(|f| f.key == s.key);
                let id = self.hasher.hash_one(s.key) | 1;
                if self.surged(s) && !known && insert(&self.flagged_sites, id) {
                    self.flagged_count.fetch_add(1, Ordering::Relaxed);
                    st.snapshot.flagged_prefixes.push(*s);
                    events.push(Event::PrefixFlagged(*s));
                }
            }
        }

        let (baseline_rate, baseline_latency) = (st.baseline_rate, st.baseline_latency);
        let snap = &mut st.snapshot;
        snap.under_attack = self.under_attack();
        snap.rate = rate;
        snap.latency = nanos(latency);
        snap.top_classes = classes.into_iter().take(SNAPSHOT_TOP).collect();
        snap.top_prefixes = sites.into_iter().take(SNAPSHOT_TOP).collect();
        snap.top_networks = providers.into_iter().take(SNAPSHOT_TOP).collect();
        snap.baseline_rate = baseline_rate;
        snap.baseline_latency = nanos(baseline_latency);
        events
    }

    fn surged<K>(&self, s: &Share<K>) -> bool {
        s.share >= self.config.surge_share && s.share >= self.config.surge_factor * s.baseline_share
    }

    fn end_attack(&self) {
        self.under_attack.store(0, Ordering::Relaxed);
        for a in self.flagged_classes.iter().chain(&self.flagged_sites) {
            a.store(0, Ordering::Relaxed);
        }
        self.flagged_count.store(0, Ordering::Relaxed);
    }
}

/// The sketch's heavy hitters as shares of `total`, with their baselines.
fn shares<K: Copy + Eq + Hash>(top: &TopK<K>, total: u64, base: &Baseline<K>) -> Vec<Share<K>> {
    top.top(top.capacity())
        .into_iter()
        .map(|h| Share {
            key: h.key,
            requests: h.count,
            share: h.count as f64 / total as f64,
            baseline_share: base.share(&h.key),
        })
        .collect()
}

fn nanos(n: f64) -> Duration {
    Duration::from_nanos(n.max(0.0) as u64)
}

fn contains(set: &[AtomicU64; MAX_FLAGGED], id: u64) -> bool {
    set.iter().any(|a| a.load(Ordering::Relaxed) == id)
}

/// Puts `id` in a free place; false when all are taken.
fn insert(set: &[AtomicU64; MAX_FLAGGED], id: u64) -> bool {
    set.iter().any(|a| {
        a.compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(ua: &str) -> Fingerprint {
        let (p, ()) = http::Request::get("/")
            .header("user-agent", ua)
            .body(())
            .unwrap()
            .into_parts();
        Fingerprint::of(&p, None)
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    /// Sends `per_tick` requests of each (class, address) in `mix` every
    /// tick from `from` to `to` (ms); returns the events.
    fn drive(d: &Detector, from: u64, to: u64, mix: &[(Fingerprint, IpAddr, u32)]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut t = from;
        while t < to {
            for (f, ip, n) in mix {
                for _ in 0..*n {
                    events.extend(d.observe(at(t), Some(f), Some(*ip)));
                }
            }
            t += 10;
        }
        events
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn shedding_ends_calm_at_once_and_declares_the_attack_at_the_tick() {
        let d = Detector::new(Detection::default(), at(0)).unwrap();
        let shop = (fp("Mozilla/5.0 AppleWebKit"), ip("192.0.2.1"), 1);
        drive(&d, 0, 2_000, &[shop]);
        assert!(d.calm());
        // Mid-tick, overload protection starts shedding: not calm from the
        // first shed request, though the attack is declared only when the
        // tick closes.
        d.observe(at(2_005), Some(&shop.0), Some(shop.1));
        d.count_shed();
        assert!(d.shedding() && !d.calm() && !d.under_attack());
        let events = drive(&d, 2_010, 2_200, &[shop]);
        assert!(d.under_attack(), "{events:?}");
        assert!(events.iter().any(|e| matches!(
            e,
            Event::AttackStarted {
                cause: AttackCause::Overload,
                ..
            }
        )));
        // Shedding under 1% of a tick's requests is not an overload.
        let d = Detector::new(Detection::default(), at(0)).unwrap();
        for _ in 0..200 {
            d.observe(at(5), Some(&shop.0), Some(shop.1));
        }
        d.count_shed();
        assert!(!d.shedding() && d.calm());
    }

    #[test]
    fn a_rate_surge_starts_an_attack_flags_its_class_and_hysteresis_ends_it() {
        let d = Detector::new(Detection::default(), at(0)).unwrap();
        let shop = (fp("Mozilla/5.0 AppleWebKit"), ip("192.0.2.1"), 1);
        // 100 requests a second, calm, for 5 s.
        assert!(drive(&d, 0, 5_000, &[shop]).is_empty());
        assert!(!d.under_attack());
        // A tool class at 900 a second from one network joins.
        let bots = (fp("python-requests/2.32"), ip("198.51.100.9"), 9);
        let events = drive(&d, 5_000, 6_000, &[shop, bots]);
        assert!(d.under_attack(), "{events:?}");
        assert!(matches!(
            events[0],
            Event::AttackStarted {
                cause: AttackCause::Rate,
                ..
            }
        ));
        assert!(d.class_flagged(&bots.0));
        assert!(!d.class_flagged(&shop.0));
        assert!(d.site_flagged(bots.1));
        assert!(!d.site_flagged(shop.1));
        let snap = d.snapshot();
        assert_eq!(snap.flagged_classes.len(), 1);
        assert!(snap.flagged_classes[0].share > 0.8);
        assert!(snap.flagged_classes[0].baseline_share < 0.01);
        // The attack stops: the state holds for the cooldown, then ends.
        let events = drive(&d, 6_000, 15_000, &[shop]);
        assert!(d.under_attack(), "{events:?}");
        let events = drive(&d, 15_000, 18_000, &[shop]);
        assert!(!d.under_attack());
        assert!(
            matches!(events[..], [Event::AttackEnded { .. }]),
            "{events:?}"
        );
        assert!(!d.class_flagged(&bots.0));
    }

    #[test]
    fn baselines_do_not_learn_during_an_attack() {
        let d = Detector::new(Detection::default(), at(0)).unwrap();
        let shop = (fp("Mozilla/5.0 AppleWebKit"), ip("192.0.2.1"), 1);
        let bots = (fp("curl/8"), ip("198.51.100.9"), 9);
        drive(&d, 0, 3_000, &[shop]);
        drive(&d, 3_000, 4_000, &[shop, bots]);
        assert!(d.under_attack());
        let before = d.snapshot().baseline_rate;
        drive(&d, 4_000, 60_000, &[shop, bots]);
        assert!(d.under_attack());
        assert_eq!(d.snapshot().baseline_rate, before);
    }

    #[test]
    fn a_quiet_service_doubling_its_traffic_is_not_attacked() {
        let d = Detector::new(Detection::default(), at(0)).unwrap();
        let a = (fp("Mozilla/5.0 AppleWebKit"), ip("192.0.2.1"), 1);
        // 10 a second, then 40 a second: under `min_rate`.
        let mut events = Vec::new();
        for t in (0..5_000).step_by(100) {
            events.extend(d.observe(at(t), Some(&a.0), Some(a.1)));
        }
        for t in (5_000..10_000).step_by(25) {
            events.extend(d.observe(at(t), Some(&a.0), Some(a.1)));
        }
        assert!(events.is_empty() && !d.under_attack(), "{events:?}");
    }

    #[test]
    fn slow_answers_start_an_attack() {
        let d = Detector::new(Detection::default(), at(0)).unwrap();
        let a = (fp("Mozilla/5.0 AppleWebKit"), ip("192.0.2.1"), 1);
        let mut events = Vec::new();
        for t in (0..10_000).step_by(10) {
            let slow = t >= 5_000;
            d.observe_latency(Duration::from_millis(if slow { 80 } else { 5 }));
            events.extend(d.observe(at(t), Some(&a.0), Some(a.1)));
        }
        assert!(d.under_attack());
        assert!(
            matches!(
                events[..],
                [Event::AttackStarted {
                    cause: AttackCause::Latency,
                    ..
                }]
            ),
            "{events:?}"
        );
    }

    #[cfg(feature = "redis")]
    #[test]
    fn remote_flags_hold_until_they_expire_and_stay_bounded() {
        let d = Detector::new(Detection::default(), at(0)).unwrap();
        let bots = fp("python-requests/2.32");
        let shop = fp("Mozilla/5.0 AppleWebKit");
        assert!(!d.class_flagged_at(&bots, at(0)));
        assert!(d.flag_remote_class(bots.class(), at(5_000), at(0)));
        assert!(d.class_flagged_at(&bots, at(4_999)));
        assert!(!d.class_flagged_at(&shop, at(1_000)));
        // Remote flags are not the local attack's: no event, no snapshot.
        assert!(!d.class_flagged(&bots) && !d.under_attack());
        assert!(d.snapshot().flagged_classes.is_empty());
        // A later end extends the flag, an earlier one does not shorten it.
        assert!(d.flag_remote_class(bots.class(), at(8_000), at(1_000)));
        assert!(d.flag_remote_class(bots.class(), at(2_000), at(1_000)));
        assert!(d.class_flagged_at(&bots, at(7_999)));
        assert!(!d.class_flagged_at(&bots, at(8_000)));
        // Bounded: every place taken by an unexpired flag refuses more.
        for class in 1..MAX_FLAGGED as u64 {
            assert!(d.flag_remote_class(class << 1, at(10_000), at(0)));
        }
        assert!(!d.flag_remote_class(shop.class(), at(10_000), at(0)));
        // An expired place is reused.
        assert!(d.flag_remote_class(shop.class(), at(20_000), at(9_000)));
        assert!(d.class_flagged_at(&shop, at(9_500)));
        assert!(!d.class_flagged_at(&bots, at(9_500)));
    }

    #[test]
    fn bad_tuning_is_refused_with_the_field_named() {
        let bad = |f: fn(&mut Detection)| {
            let mut d = Detection::default();
            f(&mut d);
            Detector::new(d, at(0)).err().unwrap().to_string()
        };
        assert!(bad(|d| d.tick = Duration::from_millis(1)).contains("tick"));
        assert!(bad(|d| d.rate_margin = 0.5).contains("rate_margin"));
        assert!(bad(|d| d.surge_share = 0.0).contains("surge_share"));
        assert!(bad(|d| d.top_k = 0).contains("top_k"));
        assert!(bad(|d| d.exit_margin = f64::NAN).contains("exit_margin"));
    }
}
