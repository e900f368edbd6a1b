//! The overload configuration a guard is built with: the algorithm, the
//! limits, criticality, routes with limits of their own and the waiting
//! room.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;

use crate::ConfigError;
use crate::http::{Aimd, Criticality, LimitAlgorithm};
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
    pub(crate) algorithm: LimitAlgorithm,
    pub(crate) initial: u32,
    pub(crate) min: u32,
    pub(crate) max: u32,
    pub(crate) criticality: Option<CriticalityFn>,
    pub(crate) routes: Vec<String>,
    pub(crate) every_route: bool,
    pub(crate) route_idle: Duration,
    pub(crate) queue: Option<WaitQueue>,
    pub(crate) latency_floor: Duration,
}

/// A limit's waiting room ([`Overload::queue`]): most requests waiting at
/// once, and longest wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaitQueue {
    pub(crate) capacity: usize,
    pub(crate) timeout: Duration,
}

/// Most routes given a limit of their own by [`Overload::per_route`].
pub const MAX_ROUTE_LIMITS: usize = 64;

/// How long a route's limit from [`Overload::per_route`] must have gone
/// without requests before a new route may take its place, by default:
/// five minutes. See [`Overload::route_idle`].
pub const DEFAULT_ROUTE_IDLE: Duration = Duration::from_secs(300);

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

impl Overload {
    /// Whether two configurations set the same values; the criticality
    /// hook is code, and is not compared.
    pub(crate) fn same_settings(&self, other: &Overload) -> bool {
        self.algorithm == other.algorithm
            && (self.initial, self.min, self.max) == (other.initial, other.min, other.max)
            && self.routes == other.routes
            && self.every_route == other.every_route
            && self.route_idle == other.route_idle
            && self.queue == other.queue
            && self.latency_floor == other.latency_floor
    }

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
    /// [`LimitStats::waiting_room`](crate::http::LimitStats::waiting_room).
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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
