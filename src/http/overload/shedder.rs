//! Overload protection: an adaptive concurrency limit around the inner
//! service that sheds the least trusted requests first.
//!
//! The limit follows the service's latency (Netflix's concurrency-limits:
//! [`Gradient2`] or [`Aimd`]): while answers come as fast as usual it
//! grows, when they slow down it shrinks, so requests wait in the service
//! only as long as it can serve them. A request that finds the service at
//! its limit is refused at once (503 with `Retry-After`, gRPC
//! `UNAVAILABLE`) instead of queueing, unless it outranks the traffic the
//! limit protects: each priority may fill a different share of the limit,
//! so sheddable and suspicious requests go first and known-good clients'
//! critical requests last.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crossbeam_utils::sync::ShardedLock;
use http::request::Parts;
use parking_lot::Mutex;

use crate::ConfigError;
use crate::http::millis::millis_since;
use crate::http::overload::waiting::{Full, WaitingRoom};

/// A [`Clock`](crate::Clock) on Tokio's time: with Tokio's clock paused
/// (`#[tokio::test(start_paused = true)]`), rules, scores and detection
/// follow the same simulated time as the service's latencies, which
/// overload protection always measures on Tokio's clock.
///
/// ```
/// use floodguard::Clock;
/// use floodguard::http::{Guard, TokioClock};
/// let guard = Guard::builder().default_rules().clock(TokioClock::new()).build()?;
/// # let _ = guard;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::Clock for TokioClock {
    fn now(&self) -> crate::Timestamp {
        let d = self.origin.elapsed();
        crate::Timestamp::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// How much a request matters to the service, as your closure says
/// ([`Overload::criticality`]): checkout above search above a crawler's
/// page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Criticality {
    /// Shed before anything else (prefetches, crawlers, reports).
    Sheddable,
    /// Most requests.
    #[default]
    Default,
    /// Shed last (checkout, login, health of the business).
    Critical,
}

/// The admission rank of a request: its [`Criticality`], moved up to two
/// steps by its client's standing (with scoring on: clean or suspicious
/// score, light or heavy use; light only for a client seen before, with a
/// good exchange while the service was calm).
///
/// A request is admitted while the requests in flight, as it counts them,
/// are fewer than its priority's [share](Self::share) of the limit. It
/// counts every request of its priority and above, and those of lower
/// priorities only as far as each may hold now (the lowest's up to its
/// share, the two lowest's together up to the second's, and so on): after
/// the limit falls, the lower priorities' requests still in the service
/// from before do not keep a higher priority out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Admitted while fewer than half the limit are in flight.
    Lowest,
    /// ... three quarters of the limit.
    Low,
    /// ... the limit.
    Normal,
    /// ... a quarter above the limit.
    High,
    /// ... half above the limit.
    Highest,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 5] = [
        Priority::Lowest,
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Highest,
    ];

    /// The share of the limit requests of this priority may fill (rounded
    /// down; at small limits each priority still has a place more than the
    /// one below it, and every priority at least one).
    pub fn share(self) -> f64 {
        match self {
            Priority::Lowest => 0.5,
            Priority::Low => 0.75,
            Priority::Normal => 1.0,
            Priority::High => 1.25,
            Priority::Highest => 1.5,
        }
    }

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Lowest => "lowest",
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Highest => "highest",
        }
    }

    /// The rank of a request of `criticality` from a client of `standing`
    /// (−2 to +2).
    pub(crate) fn of(criticality: Criticality, standing: i8) -> Priority {
        let base: i8 = match criticality {
            Criticality::Sheddable => 1,
            Criticality::Default => 2,
            Criticality::Critical => 3,
        };
        let rank = (base + standing).clamp(0, 4);
        Priority::ALL[rank as usize]
    }
}

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
/// [`Priority::High`]) until 30 requests admitted since have been
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
pub enum LimitAlgorithm {
    /// [`Gradient2`] (the default).
    Gradient2(Gradient2),
    /// [`Aimd`].
    Aimd(Aimd),
}

impl LimitAlgorithm {
    /// How much slower than the norm answers may get before the limit
    /// falls.
    fn tolerance(&self) -> f64 {
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

type CriticalityFn = Arc<dyn Fn(&Parts) -> Criticality + Send + Sync>;

/// Overload protection for a [`Guard`](crate::http::Guard), set with
/// [`GuardBuilder::overload`](crate::http::GuardBuilder::overload).
///
/// ```
/// use floodguard::http::{Criticality, Guard, Overload};
///
/// let guard = Guard::builder()
///     .default_rules()
///     .overload(
///         Overload::gradient2()
///             .limits(8, 4, 500) // start, floor, ceiling
///             .criticality(|parts| match parts.uri.path() {
///                 "/checkout" => Criticality::Critical,
///                 p if p.starts_with("/search") => Criticality::Sheddable,
///                 _ => Criticality::Default,
///             })
///             .route("/search"), // a limit of its own
///     )
///     .build()?;
/// # let _ = guard;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use = "overload protection does nothing until given to `GuardBuilder::overload`"]
pub struct Overload {
    algorithm: LimitAlgorithm,
    initial: u32,
    min: u32,
    max: u32,
    criticality: Option<CriticalityFn>,
    routes: Vec<String>,
    every_route: bool,
    route_idle: Duration,
    queue: Option<WaitQueue>,
    latency_floor: Duration,
}

/// A limit's waiting room ([`Overload::queue`]): most requests waiting at
/// once, and longest wait.
#[derive(Clone, Copy, Debug)]
struct WaitQueue {
    capacity: usize,
    timeout: Duration,
}

/// Most routes given a limit of their own by [`Overload::per_route`].
pub const MAX_ROUTE_LIMITS: usize = 64;

/// How long a route's limit from [`Overload::per_route`] must have gone
/// without requests before a new route may take its place, by default:
/// five minutes. See [`Overload::route_idle`].
pub const DEFAULT_ROUTE_IDLE: Duration = Duration::from_secs(300);

/// How often a new route that found every place taken, and no route idle
/// long enough to give up its place, looks again.
const RECLAIM_RETRY_MS: u64 = 1_000;

impl std::fmt::Debug for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overload")
            .field("algorithm", &self.algorithm)
            .field("limits", &(self.initial, self.min, self.max))
            .field("criticality", &self.criticality.is_some())
            .field("routes", &self.routes)
            .field("every_route", &self.every_route)
            .field("route_idle", &self.route_idle)
            .field("queue", &self.queue)
            .finish()
    }
}

impl Default for Overload {
    fn default() -> Self {
        Overload {
            algorithm: LimitAlgorithm::default(),
            initial: 4,
            min: 1,
            max: 1_000,
            criticality: None,
            routes: Vec::new(),
            every_route: false,
            route_idle: DEFAULT_ROUTE_IDLE,
            queue: None,
            latency_floor: DEFAULT_LATENCY_FLOOR,
        }
    }
}

/// Answers faster than this are never congestion, by default: see
/// [`Overload::latency_floor`].
pub const DEFAULT_LATENCY_FLOOR: Duration = Duration::from_millis(20);

/// Requests that found the limit full, per answer in a window, from which
/// demand exceeds the limit for good (see [`Overload::latency_floor`]):
/// twice the demand the limit holds. A crowd the service carries finds the
/// limit full now and then, and the limit grows to meet it; an overload
/// finds it full all the time.
const SATURATED: f64 = 1.0;

impl Overload {
    /// Gradient2 with its defaults; limits start at 4, between 1 and 1,000.
    pub fn gradient2() -> Self {
        Self::default()
    }

    /// AIMD with its defaults; limits start at 4, between 1 and 1,000.
    pub fn aimd() -> Self {
        Self::default().algorithm(LimitAlgorithm::Aimd(Aimd::default()))
    }

    /// The algorithm and its parameters.
    pub fn algorithm(mut self, algorithm: LimitAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The limit's start, floor and ceiling (requests in flight).
    pub fn limits(mut self, initial: u32, min: u32, max: u32) -> Self {
        (self.initial, self.min, self.max) = (initial, min, max);
        self
    }

    /// How much each request matters ([`Criticality::Default`] for all
    /// without it). Called on the request path: keep it quick.
    pub fn criticality(
        mut self,
        f: impl Fn(&Parts) -> Criticality + Send + Sync + 'static,
    ) -> Self {
        self.criticality = Some(Arc::new(f));
        self
    }

    /// Gives requests to `route` (axum's route pattern such as
    /// `/product/{id}`, else the path) a limit of their own, adapted to
    /// that route's latency, so a slow route cannot take the whole
    /// service's allowance. Other requests share the service's limit.
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.routes.push(route.into());
        self
    }

    /// Gives every route a limit of its own, made when the route is first
    /// seen, up to [`MAX_ROUTE_LIMITS`]. Once they are all taken, a new
    /// route shares the service's limit until a route's limit has gone
    /// [`route_idle`](Self::route_idle) without requests: the new route
    /// then takes its place. Routes are axum's route patterns, a bounded
    /// set: a request that matched none (a 404, whatever its path) shares
    /// the service's limit, so junk paths neither take the places nor name
    /// metrics. Without axum there are no route patterns: name the routes
    /// with [`route`](Self::route) instead. A slow route then sheds its own
    /// requests and no others.
    pub fn per_route(mut self) -> Self {
        self.every_route = true;
        self
    }

    /// How long a route's limit from [`per_route`](Self::per_route) must go
    /// without requests (none arriving, none in flight, none waiting)
    /// before a new route may take its place once all
    /// [`MAX_ROUTE_LIMITS`] are taken. Default five minutes
    /// ([`DEFAULT_ROUTE_IDLE`]).
    ///
    /// A route's limit holds what it learned of the route (its limit and
    /// uncongested latency); a route that comes back after losing its
    /// place starts again from the initial limit, and its metrics start
    /// again from zero (as after a restart). Minutes, not seconds, so that
    /// a route used now and then keeps what it learned and its metrics
    /// series survive between scrapes, while one nobody asked for in that
    /// long has nothing current to keep. Reclaiming is lazy: only a new
    /// route that finds every place taken looks for the route idle
    /// longest (at most once a second). A route with a request in flight
    /// or waiting never gives up its place, and routes named with
    /// [`route`](Self::route) keep theirs for good. Zero lets any route
    /// with nothing in flight give up its place.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::http::Overload;
    /// let o = Overload::default().per_route().route_idle(Duration::from_secs(600));
    /// # let _ = o;
    /// ```
    pub fn route_idle(mut self, idle: Duration) -> Self {
        self.route_idle = idle;
        self
    }

    /// A waiting room for each limit (CoDel-style: short, ordered by
    /// priority, adaptive LIFO): a request that finds its priority's share
    /// of the limit full waits up to `timeout` for a place, with up to
    /// `capacity` others, instead of being shed at once. A freed place goes
    /// to the highest priority waiting whose share has room; within a
    /// priority to the oldest waiter, or to the newest once the oldest has
    /// waited half the timeout (adaptive LIFO: under a standing queue the
    /// oldest time out rather than every request waiting out the timeout).
    /// A full room turns away its lowest, oldest waiter for a higher
    /// priority. Waiting requests are counted in
    /// [`LimitStats::waiting_room`].
    ///
    /// The room keeps the service busy between one request's end and the
    /// next one's arrival, so a lower limit still serves the service's
    /// capacity: with the limit pinned low
    /// ([`limits`](Self::limits)), answers come nearly as fast as
    /// uncongested ones. The inner service's future is made when the
    /// request arrives and first polled once it has its place. Without a
    /// room (the default) a request that finds no place is shed at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::http::{Guard, Overload};
    ///
    /// let guard = Guard::builder()
    ///     .overload(Overload::default().route("/search").queue(16, Duration::from_millis(5)))
    ///     .build()?;
    /// # let _ = guard;
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn queue(mut self, capacity: usize, timeout: Duration) -> Self {
        self.queue = Some(WaitQueue { capacity, timeout });
        self
    }

    /// Answers faster than this on average (over a window of answers) are
    /// never congestion, however much slower than the norm they are,
    /// unless demand is far past the limit (as many requests found it full
    /// as were answered in the window: twice what it holds): the limit
    /// does not fall for them, no probe starts, and a limit in use grows
    /// by one place a window. A search going from
    /// 1 ms to 3 ms while a crowd the service can carry arrives is not an
    /// overload, and shedding then would turn people away for nothing;
    /// five times the demand the service can take is one, whatever the
    /// latency. Default 20 ms ([`DEFAULT_LATENCY_FLOOR`]); zero turns it
    /// off (the limit then follows the norm alone).
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::http::Overload;
    /// let o = Overload::default().latency_floor(Duration::from_millis(20));
    /// # let _ = o;
    /// ```
    pub fn latency_floor(mut self, floor: Duration) -> Self {
        self.latency_floor = floor;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.min == 0 {
            return Err(ConfigError::Zero { field: "min_limit" });
        }
        if !(self.min <= self.initial && self.initial <= self.max) {
            return Err(ConfigError::OutOfRange {
                field: "initial_limit",
                value: self.initial.to_string(),
                range: "min_limit..=max_limit",
            });
        }
        let (ratio, tolerance, window) = match self.algorithm {
            LimitAlgorithm::Gradient2(g) => (g.smoothing, g.tolerance, g.long_window),
            LimitAlgorithm::Aimd(a) => (a.backoff, a.tolerance, a.long_window),
        };
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(ConfigError::OutOfRange {
                field: "smoothing or backoff",
                value: ratio.to_string(),
                range: "(0, 1)",
            });
        }
        if !(tolerance >= 1.0 && tolerance.is_finite()) {
            return Err(ConfigError::OutOfRange {
                field: "tolerance",
                value: tolerance.to_string(),
                range: "1 or more",
            });
        }
        if window == 0 {
            return Err(ConfigError::Zero {
                field: "long_window",
            });
        }
        if let Some(q) = self.queue {
            if q.capacity == 0 {
                return Err(ConfigError::Zero {
                    field: "queue_capacity",
                });
            }
            if q.timeout.is_zero() {
                return Err(ConfigError::Zero {
                    field: "queue_timeout",
                });
            }
        }
        Ok(())
    }
}

/// Latency histogram buckets: four per octave from 1 µs, 28 octaves
/// (up to about 4.5 minutes); the last bucket holds everything slower.
const SUB: usize = 4;
const OCTAVES: usize = 28;
const BUCKETS: usize = SUB * OCTAVES;

/// The histogram bucket of a latency in microseconds.
fn bucket(micros: u64) -> usize {
    if micros < 2 {
        return 0;
    }
    let octave = 63 - micros.leading_zeros() as usize;
    let frac = ((micros >> octave.saturating_sub(2)) & 3) as usize;
    (octave * SUB + frac).min(BUCKETS - 1)
}

/// Upper bound of a bucket, in microseconds.
fn bucket_upper(b: usize) -> f64 {
    let (octave, frac) = (b / SUB, b % SUB);
    (1u64 << octave) as f64 * (1.0 + (frac + 1) as f64 / SUB as f64)
}

/// Fewest answers in a window.
const MIN_WINDOW: f64 = 10.0;
/// Answers a probe averages: more than a window, as the norm it measures
/// stands until the next probe.
const PROBE_WINDOW: f64 = 30.0;
/// Windows before the first probe of the uncongested latency, and between
/// probes.
const FIRST_PROBE: u32 = 5;
const PROBE_EVERY: u32 = 200;
/// Windows slower than `SLOW` × the norm in a row that call for a probe.
const SLOW_STREAK: u32 = 20;
const SLOW: f64 = 4.0;

/// Where the limit stands, updated with each answer.
struct LimitState {
    limit: f64,
    /// The norm: the service's uncongested latency, ns, as the last probe
    /// measured it (before the first, the fastest window); 0 before the
    /// first window.
    long: f64,
    /// A probe has measured the norm.
    probed: bool,
    /// The window being gathered: latencies added up (ns), answers, and
    /// the most requests in flight at an answer.
    sum: f64,
    answers: u32,
    peak_in_flight: u32,
    /// Windows until the next probe of the uncongested latency.
    until_probe: u32,
    /// Requests shed when the last probe ended, and when the last window
    /// closed.
    shed_at_probe: u64,
    shed_at_window: u64,
    /// Consecutive windows slower than `SLOW` × the norm.
    slow_streak: u32,
}

/// One adaptive limit: the service's, or a route's.
pub(crate) struct ConcurrencyLimit {
    route: Option<String>,
    algorithm: LimitAlgorithm,
    min: f64,
    max: f64,
    state: Mutex<LimitState>,
    /// The limit as the admission check reads it.
    limit: AtomicU32,
    /// Bumped when a probe starts: only requests admitted since answer
    /// for it, as earlier ones may have queued.
    epoch: AtomicU32,
    /// A probe is on: the limit is pinned at its floor until a window of
    /// answers to requests admitted since is measured. Written only under
    /// the state lock; admission reads it without.
    probing: AtomicBool,
    /// Requests in the service, and of them each priority's. A place is
    /// taken on the total first and given back on it last, so a reader of
    /// both never sees a priority hold more than the total does.
    in_flight: AtomicU32,
    in_flight_by: [AtomicU32; 5],
    admitted: AtomicU64,
    shed: [AtomicU64; 5],
    histogram: [AtomicU64; BUCKETS],
    latency_sum_micros: AtomicU64,
    /// The waiting room and its timeout, with [`Overload::queue`].
    waiting: Option<(WaitingRoom, Duration)>,
    /// Requests admitted after waiting, that waited in vain (timed out),
    /// and turned away from a full room for a higher priority.
    waited: AtomicU64,
    wait_timeouts: AtomicU64,
    turned_away: AtomicU64,
    /// [`Overload::latency_floor`] in nanoseconds.
    floor: f64,
    /// Where [`last_used`](Self::last_used) counts from.
    origin: tokio::time::Instant,
    /// When a request last left (or the limit was made), in ms since
    /// `origin`.
    last_used: AtomicU64,
}

impl ConcurrencyLimit {
    /// A limit last used at `now`, its clock starting at `origin`.
    fn new(
        config: &Overload,
        route: Option<String>,
        origin: tokio::time::Instant,
        now: tokio::time::Instant,
    ) -> Self {
        ConcurrencyLimit {
            origin,
            last_used: AtomicU64::new(millis_since(origin, now)),
            route,
            algorithm: config.algorithm,
            min: f64::from(config.min),
            max: f64::from(config.max),
            state: Mutex::new(LimitState {
                limit: f64::from(config.initial),
                long: 0.0,
                sum: 0.0,
                answers: 0,
                peak_in_flight: 0,
                until_probe: FIRST_PROBE,
                probed: false,
                shed_at_probe: 0,
                shed_at_window: 0,
                slow_streak: 0,
            }),
            limit: AtomicU32::new(config.initial),
            epoch: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            in_flight_by: Default::default(),
            admitted: AtomicU64::new(0),
            shed: Default::default(),
            histogram: [const { AtomicU64::new(0) }; BUCKETS],
            latency_sum_micros: AtomicU64::new(0),
            waiting: config
                .queue
                .map(|q| (WaitingRoom::new(q.capacity, q.timeout / 2), q.timeout)),
            waited: AtomicU64::new(0),
            wait_timeouts: AtomicU64::new(0),
            turned_away: AtomicU64::new(0),
            floor: config.latency_floor.as_nanos() as f64,
        }
    }

    /// A request left at `now`.
    fn touch(&self, now: tokio::time::Instant) {
        let ms = millis_since(self.origin, now);
        // Read first: most requests find it up to date, and write nothing.
        if self.last_used.load(Ordering::Relaxed) < ms {
            self.last_used.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// How long it has gone without requests at `now` (ms since
    /// `origin`); `None` while one is in flight or waiting.
    fn idle_for(&self, now_ms: u64) -> Option<u64> {
        let waiting = self
            .waiting
            .as_ref()
            .is_some_and(|(room, _)| room.len() > 0);
        if self.in_flight.load(Ordering::SeqCst) > 0 || waiting {
            return None;
        }
        Some(now_ms.saturating_sub(self.last_used.load(Ordering::Relaxed)))
    }

    /// How many requests of each priority and below may be in flight.
    fn caps(&self) -> [u32; 5] {
        let limit = f64::from(self.limit.load(Ordering::Relaxed));
        // A probe pins the limit at its floor for all but the high
        // priorities, which keep their share of the adapted limit.
        let probing = self.probing.load(Ordering::Relaxed);
        let mut caps = Priority::ALL.map(|p| {
            let limit = if probing && p < Priority::High {
                self.min
            } else {
                limit
            };
            (limit * p.share()) as u32
        });
        // Small limits would round priorities together (at 3: 1, 2, 3, 3,
        // 4): each priority above Normal has a place more than the one
        // below it, each below Normal a place less than the one above, and
        // every priority at least one, so that a service whose limit fell
        // to its floor still learns.
        let normal = Priority::Normal as usize;
        for i in normal + 1..caps.len() {
            caps[i] = caps[i].max(caps[i - 1] + 1);
        }
        for i in (0..normal).rev() {
            caps[i] = caps[i].min(caps[i + 1].saturating_sub(1));
        }
        caps.map(|c| c.max(1))
    }

    /// Takes a place for a request of `priority` ([`take`](Self::take)),
    /// counted as admitted; a refusal counts as shed unless a waiting room
    /// decides later.
    fn try_acquire(&self, priority: Priority) -> bool {
        let taken = self.take(priority);
        if taken {
            self.admitted.fetch_add(1, Ordering::Relaxed);
        } else if self.waiting.is_none() {
            self.shed[priority as usize].fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Takes a place for a request of `priority` if its share has room.
    ///
    /// A request counts everything in flight of its priority and above,
    /// and the lower priorities' requests only as far as each may hold
    /// now: the lowest's up to its share, the two lowest's together up to
    /// the second's, and so on. When the limit falls, requests a lower
    /// priority took under the old limit do not keep a higher one out
    /// while they finish.
    fn take(&self, priority: Priority) -> bool {
        let caps = self.caps();
        let cap = caps[priority as usize];
        let mut n = self.in_flight.load(Ordering::SeqCst);
        loop {
            // Each priority's count is read after the total: one taken
            // since is in neither, one given back since may still be in
            // the total only, where it counts in full.
            let (mut lower, mut counted_lower) = (0u32, 0u32);
            for (c, q_cap) in self.in_flight_by[..priority as usize].iter().zip(caps) {
                let c = c.load(Ordering::Acquire);
                lower += c;
                counted_lower = (counted_lower + c).min(q_cap);
            }
            let lower = lower.min(n);
            let counted = n - lower + counted_lower.min(lower);
            if counted >= cap {
                return false;
            }
            match self.in_flight.compare_exchange_weak(
                n,
                n + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.in_flight_by[priority as usize].fetch_add(1, Ordering::AcqRel);
                    return true;
                }
                Err(actual) => n = actual,
            }
        }
    }

    fn shed_total(&self) -> u64 {
        self.shed.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// Gives a place back, to the best waiter if any.
    fn release(&self, priority: Priority) {
        self.untake(priority);
        self.hand_over();
    }

    /// Gives the free places to the waiting room's best waiters, counted
    /// as admitted.
    fn hand_over(&self) {
        if let Some((room, _)) = &self.waiting {
            let granted = room.hand_over(|p| self.take(p), |p| self.untake(p));
            self.admitted.fetch_add(granted, Ordering::Relaxed);
        }
    }

    /// Gives a place back to the limit only.
    fn untake(&self, priority: Priority) {
        self.in_flight_by[priority as usize].fetch_sub(1, Ordering::AcqRel);
        // SeqCst with the room's count: a waiter that entered after this
        // release looked finds the place when it looks itself.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// An answer came after `latency` with `in_flight` requests out
    /// (itself included), to a request admitted in `epoch`: adapts the
    /// limit.
    fn answered(&self, latency: Duration, in_flight: u32, epoch: u32) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram[bucket(micros)].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
        // Below a microsecond the clock says nothing useful.
        let rtt = (latency.as_nanos() as f64).max(1_000.0);
        let mut st = self.state.lock();
        let probing = self.probing.load(Ordering::Relaxed);
        if probing && epoch != self.epoch.load(Ordering::Relaxed) {
            // Admitted before the probe: it may have queued.
            return;
        }
        st.sum += rtt;
        st.answers += 1;
        st.peak_in_flight = st.peak_in_flight.max(in_flight);
        // The limit moves once per window: as many answers as the limit
        // (one generation of requests), at least `MIN_WINDOW`. Moving it on
        // every answer makes it swing with each one's noise.
        let window = if probing {
            PROBE_WINDOW
        } else {
            st.limit.max(MIN_WINDOW)
        };
        if f64::from(st.answers) < window {
            return;
        }
        let rtt = st.sum / f64::from(st.answers);
        let in_flight = f64::from(st.peak_in_flight);
        (st.sum, st.answers, st.peak_in_flight) = (0.0, 0, 0);
        // Requests that waited for a place found the limit full, as shed
        // ones did.
        let shed = self.shed_total() + self.waited.load(Ordering::Relaxed);
        let shed_in_window = shed > st.shed_at_window;
        // Demand past what the service takes: as many requests found the
        // limit full in the window as were answered.
        let saturated = shed.saturating_sub(st.shed_at_window) as f64 >= SATURATED * window;
        st.shed_at_window = shed;
        if probing {
            // What the service takes with almost nothing queued: the norm.
            // The probe's own refusals do not call for the next one.
            st.long = rtt;
            st.probed = true;
            st.shed_at_probe = shed;
            self.probing.store(false, Ordering::Relaxed);
            return;
        }
        st.until_probe = st.until_probe.saturating_sub(1);
        // Under the floor, nothing is congestion, unless demand keeps
        // exceeding the limit (queues that keep growing).
        let fast = rtt <= self.floor && !saturated;
        // Latency far above the norm window after window: the service may
        // have become slower for good (heavier requests), not queued.
        // Measure again rather than shrink to the floor.
        st.slow_streak = if rtt > SLOW * st.long && !fast {
            st.slow_streak + 1
        } else {
            0
        };
        if st.slow_streak >= SLOW_STREAK {
            st.slow_streak = 0;
            st.until_probe = 0;
        }
        if st.until_probe == 0 {
            st.until_probe = PROBE_EVERY;
            // Only a limit that sheds needs to know the service's norm
            // exactly; probing costs a window of shed requests.
            if shed > st.shed_at_probe {
                self.start_probe();
                return;
            }
        }
        // Until the first probe, the fastest window stands in for the
        // norm. After it, only probes set the norm: the fastest of many
        // windows is the luckiest, and a service whose latency varies
        // would look slow against it at any load.
        if !st.probed {
            if st.long == 0.0 || rtt < st.long {
                st.long = rtt;
            }
            // The limit never falls on an unmeasured norm.
            if rtt > self.algorithm.tolerance() * st.long && !fast {
                self.start_probe();
                return;
            }
        }
        // The limit is in use: half of it was, or it shed requests. Only
        // the lowest priority's traffic fills no more than half of it
        // (rounded down), and a limit that sheds that traffic while the
        // answers stay fast is below what the service can take.
        let busy = in_flight >= st.limit / 2.0 || shed_in_window;
        let limit = match self.algorithm {
            LimitAlgorithm::Gradient2(g) => {
                let gradient = (g.tolerance * st.long / rtt).clamp(0.5, 2.0);
                if fast && gradient < 1.0 {
                    // Under the floor, slower than the norm is not
                    // congestion: a limit in use grows, but by one place a
                    // window, so that an overload finds the floor before
                    // the limit overshoots far past what the service takes.
                    st.limit + if busy { 1.0 } else { 0.0 }
                } else if gradient < 1.0 || busy {
                    st.limit + g.smoothing * (st.limit * gradient - st.limit)
                } else {
                    st.limit
                }
            }
            LimitAlgorithm::Aimd(a) => {
                if rtt > a.tolerance * st.long && !fast {
                    st.limit * a.backoff
                } else if busy {
                    st.limit + 1.0
                } else {
                    st.limit
                }
            }
        };
        st.limit = limit.clamp(self.min, self.max);
        self.limit.store(st.limit.round() as u32, Ordering::Relaxed);
    }

    /// Pins the limit at its floor until `PROBE_WINDOW` answers to
    /// requests admitted from now on measure the norm (under the state
    /// lock).
    fn start_probe(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.probing.store(true, Ordering::Relaxed);
    }

    /// The latency under which `q` of the answers came, from the
    /// histogram (to a quarter octave).
    fn percentile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .histogram
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos((bucket_upper(b) * 1e3) as u64));
            }
        }
        None
    }

    fn stats(&self) -> LimitStats {
        let answers: u64 = self
            .histogram
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        LimitStats {
            route: self.route.clone(),
            limit: self.limit.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            in_flight_by: Priority::ALL
                .map(|p| (p, self.in_flight_by[p as usize].load(Ordering::Relaxed))),
            admitted: self.admitted.load(Ordering::Relaxed),
            shed: Priority::ALL.map(|p| (p, self.shed[p as usize].load(Ordering::Relaxed))),
            answers,
            latency_sum: Duration::from_micros(self.latency_sum_micros.load(Ordering::Relaxed)),
            waiting_room: self
                .waiting
                .as_ref()
                .map(|(room, timeout)| WaitingRoomStats {
                    capacity: room.capacity(),
                    timeout: *timeout,
                    waiting: room.len(),
                    waited: self.waited.load(Ordering::Relaxed),
                    timed_out: self.wait_timeouts.load(Ordering::Relaxed),
                    turned_away: self.turned_away.load(Ordering::Relaxed),
                }),
            p50: self.percentile(0.5),
            p90: self.percentile(0.9),
            p99: self.percentile(0.99),
            buckets: (0..BUCKETS)
                .map(|b| {
                    let upper = Duration::from_nanos((bucket_upper(b) * 1e3) as u64);
                    (upper, self.histogram[b].load(Ordering::Relaxed))
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// The counters of one adaptive limit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitStats {
    /// The route it guards; `None` for the service's own limit.
    pub route: Option<String>,
    /// The limit now.
    pub limit: u32,
    /// Requests in the service now.
    pub in_flight: u32,
    /// Of them, each priority's.
    pub in_flight_by: [(Priority, u32); 5],
    /// Requests admitted.
    pub admitted: u64,
    /// Requests shed, by priority (with a waiting room: at once when it
    /// was full, or after waiting in vain).
    pub shed: [(Priority, u64); 5],
    /// The waiting room's counters, with [`Overload::queue`].
    pub waiting_room: Option<WaitingRoomStats>,
    /// Answers measured.
    pub answers: u64,
    /// Their latencies added up.
    pub latency_sum: Duration,
    /// Median latency of all answers (to a quarter octave).
    pub p50: Option<Duration>,
    /// 90th percentile.
    pub p90: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// The latency histogram: each non-empty bucket's upper bound and
    /// count.
    pub buckets: Vec<(Duration, u64)>,
}

/// The counters of one limit's waiting room ([`Overload::queue`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitingRoomStats {
    /// Most requests waiting at once.
    pub capacity: usize,
    /// Longest wait.
    pub timeout: Duration,
    /// Requests waiting now (some may have left and not been noticed yet).
    pub waiting: usize,
    /// Requests admitted after waiting.
    pub waited: u64,
    /// Requests shed when their wait ran out.
    pub timed_out: u64,
    /// Requests shed from a full room to make way for a higher priority.
    pub turned_away: u64,
}

impl LimitStats {
    /// Requests shed, all priorities.
    pub fn shed_total(&self) -> u64 {
        self.shed.iter().map(|(_, n)| n).sum()
    }
}

/// The overload state of a guard.
pub(crate) struct Shedder {
    config: Overload,
    service: Arc<ConcurrencyLimit>,
    /// The routes' limits: the configured routes' (for good), then, with
    /// `every_route`, each new route's, up to `places` in all. Read by
    /// every request and written only to add a route or give a place to a
    /// new one: a read takes its thread's shard of the lock only, so
    /// requests on different cores do not contend for it.
    routes: ShardedLock<Vec<Arc<ConcurrencyLimit>>>,
    /// Most route limits at once.
    places: usize,
    /// Where the limits' idle clocks start (Tokio's clock).
    origin: tokio::time::Instant,
    /// Until then (ms since `origin`), a new route that finds every place
    /// taken does not look for an idle one again.
    next_reclaim: AtomicU64,
}

/// A request's place in a limit; given back when its answer comes (with a
/// latency sample) or when it is dropped unanswered.
pub(crate) struct Permit {
    limit: Arc<ConcurrencyLimit>,
    priority: Priority,
    started: tokio::time::Instant,
    epoch: u32,
    done: bool,
}

impl Permit {
    /// A place in `limit` taken at `now`.
    fn new(limit: Arc<ConcurrencyLimit>, priority: Priority, now: tokio::time::Instant) -> Self {
        Permit {
            epoch: limit.epoch.load(Ordering::Relaxed),
            priority,
            limit,
            started: now,
            done: false,
        }
    }

    /// The answer came: sample its latency and give the place back.
    pub(crate) fn answered(mut self) -> Duration {
        let latency = self.started.elapsed();
        let in_flight = self.limit.in_flight.load(Ordering::Relaxed);
        self.limit.answered(latency, in_flight, self.epoch);
        self.limit.touch(self.started + latency);
        self.limit.release(self.priority);
        self.done = true;
        latency
    }
}

/// A request's place in a limit, now or after a wait.
pub(crate) enum Place {
    /// Taken.
    Now(Permit),
    /// Waiting in the limit's room.
    Wait(Ticket),
}

/// A request waiting in a limit's room: resolves to its place, or to
/// `None` when the wait timed out or it was turned away (counted as shed).
pub(crate) struct Ticket {
    rx: tokio::sync::oneshot::Receiver<()>,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    limit: Arc<ConcurrencyLimit>,
    priority: Priority,
    /// Resolved: a place taken from here on is the permit's to give back.
    settled: bool,
}

impl Ticket {
    pub(crate) fn poll_place(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Permit>> {
        use std::future::Future;
        use std::task::Poll;
        let granted = match std::pin::Pin::new(&mut self.rx).poll(cx) {
            // An error: turned away for a higher priority (counted then).
            Poll::Ready(r) => r.is_ok(),
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // A place may have come with the deadline.
                self.rx.close();
                let granted = self.rx.try_recv().is_ok();
                if !granted {
                    self.limit.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                granted
            }
        };
        self.settled = true;
        if granted {
            self.limit.waited.fetch_add(1, Ordering::Relaxed);
            let now = tokio::time::Instant::now();
            Poll::Ready(Some(Permit::new(
                Arc::clone(&self.limit),
                self.priority,
                now,
            )))
        } else {
            self.limit.shed[self.priority as usize].fetch_add(1, Ordering::Relaxed);
            Poll::Ready(None)
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            // Gone before its place came (the client left): a place given
            // meanwhile goes to the next waiter.
            self.rx.close();
            if self.rx.try_recv().is_ok() {
                self.limit.touch(tokio::time::Instant::now());
                self.limit.release(self.priority);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.limit.touch(tokio::time::Instant::now());
            self.limit.release(self.priority);
        }
    }
}

impl Shedder {
    pub(crate) fn new(config: Overload) -> Result<Self, ConfigError> {
        config.validate()?;
        let places = if config.every_route {
            config.routes.len().max(MAX_ROUTE_LIMITS)
        } else {
            config.routes.len()
        };
        let origin = tokio::time::Instant::now();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                Arc::new(ConcurrencyLimit::new(
                    &config,
                    Some(r.clone()),
                    origin,
                    origin,
                ))
            })
            .collect();
        Ok(Shedder {
            service: Arc::new(ConcurrencyLimit::new(&config, None, origin, origin)),
            routes: ShardedLock::new(routes),
            places,
            origin,
            next_reclaim: AtomicU64::new(0),
            config,
        })
    }

    /// Whether any limit is per route (the guard must then find routes).
    pub(crate) fn needs_route(&self) -> bool {
        self.config.every_route || !self.config.routes.is_empty()
    }

    /// The limit `route` is counted in at `now`; `matched`: the route is
    /// one of the application's (see [`Overload::per_route`]).
    fn limit_for(
        &self,
        route: &str,
        matched: bool,
        now: tokio::time::Instant,
    ) -> Arc<ConcurrencyLimit> {
        let find = |routes: &[Arc<ConcurrencyLimit>]| {
            routes
                .iter()
                .find(|l| l.route.as_deref() == Some(route))
                .cloned()
        };
        {
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(l) = find(&routes) {
                return l;
            }
        }
        if !self.config.every_route || !matched {
            return Arc::clone(&self.service);
        }
        let now_ms = millis_since(self.origin, now);
        {
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            // Every place taken: look for an idle one at most once a
            // second, and take the write lock only when there is one.
            if routes.len() >= self.places {
                if now_ms < self.next_reclaim.load(Ordering::Relaxed) {
                    return Arc::clone(&self.service);
                }
                if self.idle_longest(&routes, now_ms).is_none() {
                    self.next_reclaim
                        .store(now_ms.saturating_add(RECLAIM_RETRY_MS), Ordering::Relaxed);
                    return Arc::clone(&self.service);
                }
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = find(&routes) {
            return l;
        }
        let place = if routes.len() < self.places {
            None
        } else if let Some(i) = self.idle_longest(&routes, now_ms) {
            Some(i)
        } else {
            // Busy again since the look under the read lock.
            self.next_reclaim
                .store(now_ms.saturating_add(RECLAIM_RETRY_MS), Ordering::Relaxed);
            return Arc::clone(&self.service);
        };
        let config = &self.config;
        let l = Arc::new(ConcurrencyLimit::new(
            config,
            Some(route.to_owned()),
            self.origin,
            now,
        ));
        match place {
            None => routes.push(Arc::clone(&l)),
            Some(i) => {
                // Requests it still holds (one may have found it just
                // before) give their places back to it, not to `l`.
                let old = std::mem::replace(&mut routes[i], Arc::clone(&l));
                tracing::debug!(
                    route = old.route.as_deref().unwrap_or_default(),
                    idle_ms = now_ms.saturating_sub(old.last_used.load(Ordering::Relaxed)),
                    new_route = route,
                    "floodguard: an idle route's limit gave its place to a new route"
                );
            }
        }
        l
    }

    /// The place of the route limit idle longest at `now_ms`, if it has
    /// been idle for `route_idle` at least. Configured routes keep their
    /// places.
    fn idle_longest(&self, routes: &[Arc<ConcurrencyLimit>], now_ms: u64) -> Option<usize> {
        let least = u64::try_from(self.config.route_idle.as_millis()).unwrap_or(u64::MAX);
        let fixed = self.config.routes.len();
        let (i, idle) = routes
            .iter()
            .enumerate()
            .skip(fixed)
            .filter_map(|(i, l)| Some((i, l.idle_for(now_ms)?)))
            // The first of those idle longest.
            .min_by_key(|&(i, idle)| (std::cmp::Reverse(idle), i))?;
        (idle >= least).then_some(i)
    }

    /// A place for this request, a wait for one, or `Err(priority)` when
    /// it is shed. `standing` is the client's, from −2 (suspicious, heavy)
    /// to +2.
    pub(crate) fn acquire(
        &self,
        parts: &Parts,
        route: &str,
        standing: i8,
    ) -> Result<Place, Priority> {
        let criticality = self
            .config
            .criticality
            .as_ref()
            .map_or(Criticality::Default, |f| f(parts));
        let priority = Priority::of(criticality, standing);
        let now = tokio::time::Instant::now();
        // Not touched now: admitted, waiting or shed (when others are in
        // flight), the route is busy until a request leaves, which touches.
        let limit = self.limit_for(
            route,
            crate::http::identify::peer::route_matched(parts),
            now,
        );
        if limit.try_acquire(priority) {
            return Ok(Place::Now(Permit::new(limit, priority, now)));
        }
        let Some((room, timeout)) = &limit.waiting else {
            return Err(priority);
        };
        match room.enter(priority) {
            Ok((rx, turned_away)) => {
                limit.turned_away.fetch_add(turned_away, Ordering::Relaxed);
                // A place freed before this request entered the room went
                // to nobody: look again now that it waits.
                limit.hand_over();
                Ok(Place::Wait(Ticket {
                    rx,
                    deadline: Box::pin(tokio::time::sleep(*timeout)),
                    limit,
                    priority,
                    settled: false,
                }))
            }
            Err(Full) => {
                limit.shed[priority as usize].fetch_add(1, Ordering::Relaxed);
                Err(priority)
            }
        }
    }

    pub(crate) fn stats(&self) -> Vec<LimitStats> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        std::iter::once(&self.service)
            .chain(routes.iter())
            .map(|l| l.stats())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(config: &Overload) -> ConcurrencyLimit {
        let now = tokio::time::Instant::now();
        ConcurrencyLimit::new(config, None, now, now)
    }

    #[test]
    fn priorities_fill_their_share_of_the_limit() {
        let l = limit(&Overload::default().limits(20, 4, 100));
        let admitted = |p: Priority| (0..100).take_while(|_| l.try_acquire(p)).count();
        assert_eq!(admitted(Priority::Lowest), 10);
        assert_eq!(admitted(Priority::Low), 5);
        assert_eq!(admitted(Priority::Normal), 5);
        assert_eq!(admitted(Priority::High), 5);
        assert_eq!(admitted(Priority::Highest), 5);
        let s = l.stats();
        assert_eq!(s.in_flight, 30);
        assert_eq!(s.shed_total(), 5);
    }

    #[test]
    fn lower_priorities_in_flight_do_not_block_higher_ones_after_the_limit_falls() {
        let l = limit(&Overload::default().limits(20, 1, 100));
        let admitted = |p: Priority| (0..100).take_while(|_| l.try_acquire(p)).count();
        // Low fills its share of 20: 15 places.
        assert_eq!(admitted(Priority::Low), 15);
        // The limit falls to 8 while they are in the service. They count
        // against higher priorities only up to what Low may hold now (6),
        // so Normal (8) and High (10) still find room; Low finds none.
        l.limit.store(8, Ordering::Relaxed);
        assert_eq!(admitted(Priority::Low), 0);
        assert_eq!(admitted(Priority::Lowest), 0);
        assert_eq!(admitted(Priority::Normal), 2);
        // Normal's two and Low's requests, counted up to Normal's share.
        assert_eq!(admitted(Priority::High), 2);
        assert_eq!(admitted(Priority::Highest), 2);
        let s = l.stats();
        assert_eq!(s.in_flight, 21);
        let by = |p: Priority| s.in_flight_by.iter().find(|(q, _)| *q == p).unwrap().1;
        assert_eq!(
            (by(Priority::Low), by(Priority::Normal), by(Priority::High)),
            (15, 2, 2)
        );
        // As Low's requests finish, nothing new of Low gets in until they
        // are under its share again.
        for _ in 0..9 {
            l.release(Priority::Low);
        }
        assert_eq!(admitted(Priority::Low), 0);
        l.release(Priority::Low);
        // 5 Low, 2 Normal, 2 High, 2 Highest: 11 in flight, Low's share 6.
        assert_eq!(admitted(Priority::Low), 0);
        for _ in 0..5 {
            l.release(Priority::Low);
        }
        // Higher priorities count in full against lower ones: 2 each of
        // Normal, High and Highest fill Low's share of 6.
        assert_eq!(l.stats().in_flight, 6);
        assert_eq!(admitted(Priority::Low), 0);
        l.release(Priority::Normal);
        assert_eq!(admitted(Priority::Low), 1);
    }

    #[test]
    fn each_lower_priority_counts_only_up_to_its_own_share() {
        let l = limit(&Overload::default().limits(16, 1, 100));
        let admitted = |p: Priority| (0..100).take_while(|_| l.try_acquire(p)).count();
        // Caps at 16: 8, 12, 16, 20, 24. Low fills its 12.
        assert_eq!(admitted(Priority::Low), 12);
        // The limit falls to 8 (caps 4, 6, 8, 10, 12). For High, Low's
        // twelve count as the six Low may hold now, not as the eight
        // Normal may: four places for High, not two.
        l.limit.store(8, Ordering::Relaxed);
        assert_eq!(admitted(Priority::High), 4);
        // Normal counts them as six too: two places, now taken by High's
        // four (which count in full against Normal).
        assert_eq!(admitted(Priority::Normal), 0);
        assert_eq!(admitted(Priority::Highest), 2);
    }

    #[test]
    fn small_limits_keep_the_priorities_apart() {
        let caps = |limit: u32| {
            let l = limit_of(limit);
            l.caps()
        };
        fn limit_of(n: u32) -> ConcurrencyLimit {
            limit(&Overload::default().limits(n, 1, 100))
        }
        assert_eq!(caps(20), [10, 15, 20, 25, 30]);
        assert_eq!(caps(4), [2, 3, 4, 5, 6]);
        assert_eq!(caps(3), [1, 2, 3, 4, 5]);
        assert_eq!(caps(2), [1, 1, 2, 3, 4]);
        assert_eq!(caps(1), [1, 1, 1, 2, 3]);
    }

    #[test]
    fn priority_ranks_criticality_and_standing() {
        use Criticality::*;
        assert_eq!(Priority::of(Default, 0), Priority::Normal);
        assert_eq!(Priority::of(Default, 1), Priority::High);
        assert_eq!(Priority::of(Sheddable, -1), Priority::Lowest);
        assert_eq!(Priority::of(Critical, 1), Priority::Highest);
        assert_eq!(Priority::of(Critical, -1), Priority::Normal);
    }

    /// Drives a limit round after round against a service that runs
    /// `capacity(round)` requests at once in 10 ms each (times a log-normal
    /// factor of mean 1 and coefficient of variation `cv`) and queues the
    /// rest, with `demand` requests of normal priority at every round (as
    /// many as the limit lets in are answered within the round). Returns
    /// the limit after each round, and whether the round shed a request.
    fn drive(
        config: Overload,
        capacity: impl Fn(usize) -> f64,
        (demand, cv): (u32, f64),
        rounds: usize,
    ) -> Vec<(u32, bool)> {
        let mut rng = fastrand::Rng::with_seed(7);
        let l = limit(&config);
        let sigma = (1.0 + cv * cv).ln().sqrt();
        (0..rounds)
            .map(|round| {
                // Answers count for the probe of the epoch they were
                // admitted in, as the layer's tickets do.
                let epoch = l.epoch.load(Ordering::Relaxed);
                let mut taken = 0;
                while taken < demand && l.try_acquire(Priority::Normal) {
                    taken += 1;
                }
                let load = (f64::from(taken) / capacity(round)).max(1.0);
                for _ in 0..taken {
                    // A standard normal (Irwin-Hall), made log-normal.
                    let z: f64 = (0..12).map(|_| rng.f64()).sum::<f64>() - 6.0;
                    let noise = (sigma * z - sigma * sigma / 2.0).exp();
                    let latency = Duration::from_micros((10_000.0 * noise * load) as u64);
                    l.answered(latency, taken, epoch);
                    l.release(Priority::Normal);
                }
                (l.limit.load(Ordering::Relaxed), taken < demand)
            })
            .collect()
    }

    /// Over `rounds`: how many shed, and the limit's 10th, 50th and 90th
    /// percentiles.
    fn summary(rounds: &[(u32, bool)]) -> (usize, [u32; 3]) {
        let mut limits: Vec<u32> = rounds.iter().map(|r| r.0).collect();
        limits.sort_unstable();
        let at = |q: f64| limits[(q * limits.len() as f64) as usize];
        let shed = rounds.iter().filter(|r| r.1).count();
        (shed, [at(0.1), at(0.5), at(0.9)])
    }

    /// The second half of a steady run's rounds.
    fn steady(config: Overload, capacity: f64, demand: u32, cv: f64) -> (usize, [u32; 3]) {
        let rounds = drive(config, |_| capacity, (demand, cv), 20_000);
        summary(&rounds[10_000..])
    }

    /// Gradient2 alone: without the latency floor, which these tests'
    /// 10 ms service would sit under.
    fn gradient2() -> Overload {
        Overload::gradient2()
            .limits(4, 1, 1000)
            .latency_floor(Duration::ZERO)
    }

    #[test]
    fn answers_under_the_floor_are_no_congestion_unless_demand_stays_above_the_limit() {
        // A 1 ms service slowing to 3 ms as a crowd it can carry comes:
        // without the floor the limit shrinks below the crowd and sheds
        // it; with it, nothing is shed.
        let service = |floor: Duration| {
            let l = limit(
                &Overload::gradient2()
                    .limits(4, 1, 1000)
                    .latency_floor(floor),
            );
            let mut shed = 0;
            for round in 0..2_000u32 {
                let epoch = l.epoch.load(Ordering::Relaxed);
                let demand = if round < 200 { 2 } else { 6 };
                let mut taken = 0;
                while taken < demand && l.try_acquire(Priority::Normal) {
                    taken += 1;
                }
                shed += demand - taken;
                let ms = if round < 200 {
                    1.0
                } else {
                    1.0 + f64::from(taken) / 3.0
                };
                for _ in 0..taken {
                    l.answered(Duration::from_secs_f64(ms / 1e3), taken, epoch);
                    l.release(Priority::Normal);
                }
            }
            shed
        };
        let (without, with) = (service(Duration::ZERO), service(Duration::from_millis(20)));
        // With the floor, only while the limit grows to meet the crowd.
        assert!(
            with * 10 < without && with < 400,
            "with {with}, without {without}"
        );
        // Ten times the service's capacity: the limit settles where answers
        // pass the floor, and most of the demand is shed.
        let l = limit(&Overload::gradient2().limits(4, 1, 1000));
        let (mut shed, mut admitted) = (0u32, 0u32);
        for _ in 0..2_000 {
            let epoch = l.epoch.load(Ordering::Relaxed);
            let mut taken = 0;
            while taken < 50 && l.try_acquire(Priority::Normal) {
                taken += 1;
            }
            shed += 50 - taken;
            admitted += taken;
            // Capacity 5: past it, latency grows faster than what is let
            // in (queues build), through the floor at about 22 at once.
            let ms = (f64::from(taken) / 5.0).powi(2).max(1.0);
            for _ in 0..taken {
                l.answered(Duration::from_secs_f64(ms / 1e3), taken, epoch);
                l.release(Priority::Normal);
            }
        }
        assert!(shed > admitted, "shed {shed}, admitted {admitted}");
    }

    #[test]
    fn a_service_with_varying_latency_below_capacity_is_not_shed() {
        // The fastest of many windows of a varying service is far below
        // its usual latency: a norm taken from it would shrink the limit
        // below the demand.
        for cv in [0.0, 0.5, 1.0] {
            let (shed, [low, _, _]) = steady(gradient2(), 50.0, 20, cv);
            assert_eq!(shed, 0, "cv {cv}");
            assert!(low >= 20, "cv {cv}: {low}");
        }
    }

    #[test]
    fn an_overloaded_limit_settles_at_tolerance_times_capacity() {
        // Answers take `limit / capacity` times the norm once the limit
        // passes capacity; the limit settles where that is the tolerance
        // (1.25), without the standing queue a constant headroom keeps.
        for (capacity, cv, range) in [
            (50.0, 0.0, 55..=70),
            (50.0, 0.5, 50..=75),
            (2.0, 0.0, 2..=3),
            (1.0, 0.0, 1..=2),
            (1.0, 0.3, 1..=2),
        ] {
            let (shed, [_, mid, _]) = steady(gradient2(), capacity, 100, cv);
            assert_eq!(
                shed, 10_000,
                "{capacity} {cv}: the demand is above any limit"
            );
            assert!(range.contains(&mid), "{capacity} {cv}: {mid}");
        }
    }

    #[test]
    fn gradient2_settles_near_capacity_from_below() {
        // From above is tested against a queueing service in
        // tests/overload.rs.
        let (_, [_, mid, _]) = steady(gradient2(), 50.0, 1_000, 0.0);
        assert!((45..=90).contains(&mid), "{mid}");
    }

    #[test]
    fn aimd_settles_near_capacity() {
        let aimd = Overload::aimd().limits(4, 1, 1000);
        let (_, [_, mid, _]) = steady(aimd, 50.0, 1_000, 0.0);
        assert!((40..=110).contains(&mid), "{mid}");
    }

    #[test]
    fn a_limit_that_sheds_grows_while_answers_stay_fast_whoever_fills_it() {
        // Only the lowest priority comes, more than its share: it fills
        // half the limit (rounded down) and the rest is shed. Answers are
        // as fast as ever, so the limit is not what the service can take:
        // it must grow, whether half of it is an odd number or not.
        for start in [5, 6, 7] {
            let l = limit(&Overload::gradient2().limits(start, 1, 1000));
            let fast = Duration::from_millis(1);
            for _ in 0..20 {
                l.answered(fast, 1, l.epoch.load(Ordering::Relaxed));
            }
            for _ in 0..500 {
                // Fill the lowest priority's share; one more is shed.
                while l.try_acquire(Priority::Lowest) {}
                let in_flight = l.in_flight.load(Ordering::Relaxed);
                l.answered(fast, in_flight, l.epoch.load(Ordering::Relaxed));
                l.release(Priority::Lowest);
            }
            let grown = l.limit.load(Ordering::Relaxed);
            assert!(grown >= 2 * start, "{start} -> {grown}");
        }
    }

    #[test]
    fn the_limit_falls_when_latency_rises_and_recovers() {
        // The service can run 50 requests at once, then only 10 (a
        // dependency slowed down: each request holds its place longer), then
        // 50 again; demand always exceeds it.
        let phase = 5_000;
        let capacity = |round| {
            if (phase..2 * phase).contains(&round) {
                10.0
            } else {
                50.0
            }
        };
        let rounds = drive(gradient2(), capacity, (100, 0.0), 3 * phase);
        let end_of = |p: usize| rounds[(p + 1) * phase - 1].0;
        let (before, slow, after) = (end_of(0), end_of(1), end_of(2));
        assert!(slow < before / 2, "{before} -> {slow}");
        assert!(after > slow * 2, "{slow} -> {after}");
    }

    #[test]
    fn histogram_percentiles_are_within_a_quarter_octave() {
        let l = limit(&Overload::default());
        for i in 1..=1000u64 {
            l.answered(Duration::from_micros(i * 100), 1, 0);
        }
        let p50 = l.percentile(0.5).unwrap().as_micros() as f64;
        let p99 = l.percentile(0.99).unwrap().as_micros() as f64;
        assert!((50_000.0..=62_500.0).contains(&p50), "{p50}");
        assert!((99_000.0..=124_000.0).contains(&p99), "{p99}");
        for m in [0, 1, 2, 3, 7, 1_000, 1 << 40] {
            assert!(bucket(m) < BUCKETS);
            if m > 1 && m < 1 << 27 {
                assert!(bucket_upper(bucket(m)) >= m as f64, "{m}");
            }
        }
    }

    #[test]
    fn bad_limits_are_refused() {
        assert!(Overload::default().limits(2, 4, 10).validate().is_err());
        assert!(Overload::default().limits(4, 0, 10).validate().is_err());
        let g = Gradient2 {
            smoothing: 1.5,
            ..Gradient2::default()
        };
        let e = Overload::default()
            .algorithm(LimitAlgorithm::Gradient2(g))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("smoothing"));
    }

    /// Route limits on Tokio's paused clock: routes `/r0` to `/r63` fill
    /// every place at the start.
    mod idle_routes {
        use super::*;
        use tokio::time::{Instant, advance};

        const MINUTE: Duration = Duration::from_secs(60);

        fn full_table(config: Overload) -> Shedder {
            let s = Shedder::new(config.per_route()).unwrap();
            for i in 0..MAX_ROUTE_LIMITS {
                take(&s, &format!("/r{i}")).answered();
            }
            assert_eq!(routes(&s).len(), MAX_ROUTE_LIMITS);
            s
        }

        /// A request to `route` now, admitted.
        fn take(s: &Shedder, route: &str) -> Permit {
            let now = Instant::now();
            let l = s.limit_for(route, true, now);
            assert!(l.try_acquire(Priority::Normal));
            Permit::new(l, Priority::Normal, now)
        }

        /// The route each request to `route` now is counted in.
        fn counted_in(s: &Shedder, route: &str) -> Option<String> {
            s.limit_for(route, true, Instant::now()).route.clone()
        }

        fn routes(s: &Shedder) -> Vec<String> {
            s.stats().into_iter().filter_map(|l| l.route).collect()
        }

        #[tokio::test(start_paused = true)]
        async fn a_new_route_takes_the_place_of_the_route_idle_longest() {
            let s = full_table(Overload::default());
            advance(MINUTE).await;
            for i in 1..MAX_ROUTE_LIMITS {
                take(&s, &format!("/r{i}")).answered();
            }
            // Nobody idle for five minutes: /r64 shares the service's.
            assert_eq!(counted_in(&s, "/r64"), None);
            let ms = Duration::from_millis(1);
            advance(4 * MINUTE - ms).await;
            assert_eq!(counted_in(&s, "/r64"), None);
            // /r0 has been idle for five minutes now; the table is looked
            // at again a second after the last look, and /r0 makes room.
            advance(ms).await;
            assert_eq!(counted_in(&s, "/r64"), None);
            advance(Duration::from_secs(1) - 2 * ms).await;
            assert_eq!(counted_in(&s, "/r64"), None);
            advance(ms).await;
            assert_eq!(counted_in(&s, "/r64").as_deref(), Some("/r64"));
            let now = routes(&s);
            assert_eq!(now.len(), MAX_ROUTE_LIMITS);
            assert!(!now.contains(&"/r0".to_owned()), "{now:?}");
            // The others were used four minutes ago: /r65 waits for them.
            assert_eq!(counted_in(&s, "/r65"), None);
            advance(MINUTE + Duration::from_secs(1)).await;
            assert_eq!(counted_in(&s, "/r65").as_deref(), Some("/r65"));
            assert!(!routes(&s).contains(&"/r1".to_owned()));
            // /r64 is in use, so /r0 coming back takes /r2's place.
            assert_eq!(counted_in(&s, "/r0").as_deref(), Some("/r0"));
            let now = routes(&s);
            assert!(now.contains(&"/r64".to_owned()) && !now.contains(&"/r2".to_owned()));
        }

        #[tokio::test(start_paused = true)]
        async fn a_route_with_a_request_in_flight_keeps_its_place() {
            let s = full_table(Overload::default());
            let held: Vec<Permit> = (0..MAX_ROUTE_LIMITS)
                .map(|i| take(&s, &format!("/r{i}")))
                .collect();
            advance(60 * MINUTE).await;
            assert_eq!(counted_in(&s, "/r64"), None);
            // An hour-long request ends: five minutes later its route's
            // place goes to /r64.
            let mut held = held.into_iter();
            drop(held.next());
            advance(5 * MINUTE + Duration::from_secs(1)).await;
            assert_eq!(counted_in(&s, "/r64").as_deref(), Some("/r64"));
            assert!(!routes(&s).contains(&"/r0".to_owned()));
            drop(held);
        }

        #[tokio::test(start_paused = true)]
        async fn a_route_with_a_request_waiting_keeps_its_place() {
            let config = Overload::default()
                .limits(1, 1, 1)
                .queue(4, Duration::from_secs(3_600));
            let l = limit(&config);
            assert!(l.try_acquire(Priority::Normal));
            let (room, _) = l.waiting.as_ref().unwrap();
            let _ticket = room.enter(Priority::Normal).unwrap();
            // Its place given back without handing it over: only the
            // waiter is left.
            l.untake(Priority::Normal);
            assert_eq!(l.idle_for(3_600_000), None);
        }

        #[tokio::test(start_paused = true)]
        async fn configured_routes_keep_their_places() {
            let s = full_table(Overload::default().route("/search"));
            assert_eq!(routes(&s)[0], "/search");
            advance(60 * MINUTE).await;
            for i in 64..200 {
                counted_in(&s, &format!("/r{i}"));
                advance(Duration::from_secs(1)).await;
            }
            assert!(routes(&s).contains(&"/search".to_owned()));
            assert_eq!(routes(&s).len(), MAX_ROUTE_LIMITS);
        }

        /// A request that found its route's limit just before the route
        /// lost its place gives its place back to that limit, which no
        /// longer counts for the route: nothing goes negative, the new
        /// limits start at zero.
        #[tokio::test(start_paused = true)]
        async fn permits_of_a_route_that_lost_its_place_still_give_it_back() {
            let s = full_table(Overload::default());
            advance(6 * MINUTE).await;
            let now = Instant::now();
            let old = s.limit_for("/r0", true, now);
            assert_eq!(counted_in(&s, "/r64").as_deref(), Some("/r64"));
            // The request found /r0's old limit: admitted there.
            assert!(old.try_acquire(Priority::Normal));
            let late = Permit::new(Arc::clone(&old), Priority::Normal, now);
            // /r0 comes back: a limit of its own again, a new one.
            let unanswered = take(&s, "/r0");
            let fresh = s.limit_for("/r0", true, Instant::now());
            assert!(!Arc::ptr_eq(&old, &fresh));
            assert_eq!(fresh.stats().in_flight, 1);
            advance(Duration::from_millis(5)).await;
            assert_eq!(late.answered(), Duration::from_millis(5));
            drop(unanswered);
            let (o, f) = (old.stats(), fresh.stats());
            assert_eq!((o.in_flight, o.admitted, o.answers), (0, 2, 2), "{o:?}");
            assert_eq!((f.in_flight, f.admitted, f.answers), (0, 1, 0), "{f:?}");
            assert!(o.in_flight_by.iter().all(|(_, n)| *n == 0));
            assert!(f.in_flight_by.iter().all(|(_, n)| *n == 0));
            // What the guard reports: one limit per route, none twice.
            let mut now = routes(&s);
            now.sort();
            now.dedup();
            assert_eq!(now.len(), MAX_ROUTE_LIMITS);
        }
    }
}
