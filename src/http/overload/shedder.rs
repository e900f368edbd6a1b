//! The guard's overload state: its limits (one shared, some per route),
//! admission by priority, places given back when answers come, and the
//! reclaiming of idle routes' limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crossbeam_utils::sync::ShardedLock;

use crate::ConfigError;
use crate::http::identify::facts::Facts;
use crate::http::millis::millis_since;
use crate::http::overload::limit::ConcurrencyLimit;
use crate::http::overload::waiting::Full;
use crate::http::{Criticality, LimitStats, MAX_ROUTE_LIMITS, Overload, Priority};

/// How often a new route that found every place taken, and no route idle
/// long enough to give up its place, looks again.
const RECLAIM_RETRY_MS: u64 = 1_000;

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
    pub(crate) fn acquire(&self, facts: &Facts<'_>, standing: i8) -> Result<Place, Priority> {
        let parts = facts.parts;
        let criticality = self
            .config
            .criticality
            .as_ref()
            .map_or(Criticality::Default, |f| f(parts));
        let priority = Priority::of(criticality, standing);
        let now = tokio::time::Instant::now();
        // Not touched now: admitted, waiting or shed (when others are in
        // flight), the route is busy until a request leaves, which touches.
        let limit = self.limit_for(facts.route, facts.route_matched, now);
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
    use crate::http::overload::limit::{BUCKETS, bucket, bucket_upper};
    use crate::http::{Gradient2, LimitAlgorithm};

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
        use tokio::time::{Instant, advance};

        use super::*;

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
