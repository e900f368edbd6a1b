//! One adaptive concurrency limit: the latency histogram, the window
//! that moves the limit, the probes of the uncongested latency, and the
//! limit's counters.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::http::millis::millis_since;
use crate::http::overload::waiting::WaitingRoom;
use crate::http::{LimitAlgorithm, Overload, Priority};

/// Requests that found the limit full, per answer in a window, from which
/// demand exceeds the limit for good (see [`Overload::latency_floor`]):
/// twice the demand the limit holds. A crowd the service carries finds the
/// limit full now and then, and the limit grows to meet it; an overload
/// finds it full all the time.
const SATURATED: f64 = 1.0;

/// Latency histogram buckets: four per octave from 1 µs, 28 octaves
/// (up to about 4.5 minutes); the last bucket holds everything slower.
pub(super) const SUB: usize = 4;
pub(super) const OCTAVES: usize = 28;
pub(super) const BUCKETS: usize = SUB * OCTAVES;

/// The histogram bucket of a latency in microseconds.
pub(super) fn bucket(micros: u64) -> usize {
    if micros < 2 {
        return 0;
    }
    let octave = 63 - micros.leading_zeros() as usize;
    let frac = ((micros >> octave.saturating_sub(2)) & 3) as usize;
    (octave * SUB + frac).min(BUCKETS - 1)
}

/// Upper bound of a bucket, in microseconds.
pub(super) fn bucket_upper(b: usize) -> f64 {
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
    pub(super) route: Option<String>,
    algorithm: LimitAlgorithm,
    min: f64,
    max: f64,
    state: Mutex<LimitState>,
    /// The limit as the admission check reads it.
    pub(super) limit: AtomicU32,
    /// Bumped when a probe starts: only requests admitted since answer
    /// for it, as earlier ones may have queued.
    pub(super) epoch: AtomicU32,
    /// A probe is on: the limit is pinned at its floor until a window of
    /// answers to requests admitted since is measured. Written only under
    /// the state lock; admission reads it without.
    probing: AtomicBool,
    /// Requests in the service, and of them each priority's. A place is
    /// taken on the total first and given back on it last, so a reader of
    /// both never sees a priority hold more than the total does.
    pub(super) in_flight: AtomicU32,
    in_flight_by: [AtomicU32; 5],
    admitted: AtomicU64,
    pub(super) shed: [AtomicU64; 5],
    histogram: [AtomicU64; BUCKETS],
    latency_sum_micros: AtomicU64,
    /// The waiting room and its timeout, with [`Overload::queue`].
    pub(super) waiting: Option<(WaitingRoom, Duration)>,
    /// Requests admitted after waiting, that waited in vain (timed out),
    /// and turned away from a full room for a higher priority.
    pub(super) waited: AtomicU64,
    pub(super) wait_timeouts: AtomicU64,
    pub(super) turned_away: AtomicU64,
    /// [`Overload::latency_floor`] in nanoseconds.
    floor: f64,
    /// Where [`last_used`](Self::last_used) counts from.
    origin: tokio::time::Instant,
    /// When a request last left (or the limit was made), in ms since
    /// `origin`.
    pub(super) last_used: AtomicU64,
}

impl ConcurrencyLimit {
    /// A limit last used at `now`, its clock starting at `origin`.
    pub(super) fn new(
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
    pub(super) fn touch(&self, now: tokio::time::Instant) {
        let ms = millis_since(self.origin, now);
        // Read first: most requests find it up to date, and write nothing.
        if self.last_used.load(Ordering::Relaxed) < ms {
            self.last_used.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// How long it has gone without requests at `now` (ms since
    /// `origin`); `None` while one is in flight or waiting.
    pub(super) fn idle_for(&self, now_ms: u64) -> Option<u64> {
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
    pub(super) fn caps(&self) -> [u32; 5] {
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
    pub(super) fn try_acquire(&self, priority: Priority) -> bool {
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
    pub(super) fn release(&self, priority: Priority) {
        self.untake(priority);
        self.hand_over();
    }

    /// Gives the free places to the waiting room's best waiters, counted
    /// as admitted.
    pub(super) fn hand_over(&self) {
        if let Some((room, _)) = &self.waiting {
            let granted = room.hand_over(|p| self.take(p), |p| self.untake(p));
            self.admitted.fetch_add(granted, Ordering::Relaxed);
        }
    }

    /// Gives a place back to the limit only.
    pub(super) fn untake(&self, priority: Priority) {
        self.in_flight_by[priority as usize].fetch_sub(1, Ordering::AcqRel);
        // SeqCst with the room's count: a waiter that entered after this
        // release looked finds the place when it looks itself.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// An answer came after `latency` with `in_flight` requests out
    /// (itself included), to a request admitted in `epoch`: adapts the
    /// limit.
    pub(super) fn answered(&self, latency: Duration, in_flight: u32, epoch: u32) {
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
    pub(super) fn percentile(&self, q: f64) -> Option<Duration> {
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

    pub(super) fn stats(&self) -> LimitStats {
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
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::by_priority")
    )]
    pub in_flight_by: [(Priority, u32); 5],
    /// Requests admitted.
    pub admitted: u64,
    /// Requests shed, by priority (with a waiting room: at once when it
    /// was full, or after waiting in vain).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::by_priority")
    )]
    pub shed: [(Priority, u64); 5],
    /// The waiting room's counters, with [`Overload::queue`].
    pub waiting_room: Option<WaitingRoomStats>,
    /// Answers measured.
    pub answers: u64,
    /// Their latencies added up.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serialize::secs"))]
    pub latency_sum: Duration,
    /// Median latency of all answers (to a quarter octave).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::opt_secs")
    )]
    pub p50: Option<Duration>,
    /// 90th percentile.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::opt_secs")
    )]
    pub p90: Option<Duration>,
    /// 99th percentile.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::opt_secs")
    )]
    pub p99: Option<Duration>,
    /// The latency histogram: each non-empty bucket's upper bound and
    /// count.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::secs_pairs")
    )]
    pub buckets: Vec<(Duration, u64)>,
}

/// The counters of one limit's waiting room ([`Overload::queue`]).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitingRoomStats {
    /// Most requests waiting at once.
    pub capacity: usize,
    /// Longest wait.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serialize::secs"))]
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
