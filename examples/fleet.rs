//! The figures for the Redis backend: what a fleet of three instances
//! sharing one limit admits, what a check costs, and what happens when
//! Redis dies and comes back. Starts its own `redis-server` on loopback.
//!
//! ```text
//! cargo run --release --features redis --example fleet                    # about 30 s
//! cargo run --release --features redis --example fleet -- --quick         # CI: a few seconds
//! cargo run --release --features redis --example fleet -- --json fleet.json
//! ```
//!
//! 1. **Accuracy.** Three instances (three `RedisStore`s on one namespace,
//!    one Tokio task each) hammer the same key(s) for a fixed time, far
//!    above the limit, in strict and near-cache mode, with the sliding
//!    window and GCRA. Admitted is compared with the allowance (what one
//!    exact limiter admits over the same span: the limit for a sliding
//!    window that the run stays inside, `burst + span / T` for GCRA) and
//!    with the documented near-cache bound `(I − 1) × sync_after` per key.
//!    Then clients at a human pace, spread round-robin over the instances
//!    or sticking to one, show the under-admission side (`budget_refusals`).
//! 2. **Latency.** Strict `check().await` percentiles; near-cache
//!    `check_now` ns per check next to a local `KeyedLimiter` and governor,
//!    interleaved over several rounds, medians. The near-cache is timed as
//!    built by default (its share of a hot key runs out between syncs, so
//!    most timed checks are refusals) and with a share that never runs out
//!    (the admission path alone).
//! 3. **Outage.** Redis killed at 1 s and restarted at 3 s under a client
//!    checking every 5 ms: the timeline of failure, breaker, fallback and
//!    recovery, for `OnFailure::Local` and `OnFailure::Refuse` (side by
//!    side, each with its own server).
//!
//! Parts 1 and 2 give their stores a 1 s timeout: they measure the
//! algorithms and the cache, and on two busy cores a 50 ms call can time
//! out and open the breaker (part 2 prints the store's failures, part 1
//! the checks decided by the fallback in the JSON).
//!
//! The exit code is non-zero when a hard invariant fails: strict mode off
//! by more than 1 %, near-cache over its bound, a decision slower than the
//! timeout + 100 ms during the outage, no recovery, a panic, or a failure
//! policy not applied.

#[path = "../tests/common/addresses.rs"]
mod addresses;
#[path = "../tests/common/redis_server.rs"]
mod redis_server;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use floodguard::redis::{Mode, RedisStore, SharedBuilder, SharedLimiter};
use redis_server::RedisServer;
use serde::Serialize;

/// Sizes and durations of a run; `--quick` shrinks them all.
#[derive(Clone, Debug, Serialize)]
struct Config {
    quick: bool,
    /// Accuracy: the quota (sliding window `limit` per `period`, GCRA
    /// `limit` per `period` with a burst of `limit`).
    limit: u64,
    period: Duration,
    /// Accuracy: keys of the multi-key runs.
    keys: usize,
    /// Accuracy: how long each run hammers.
    hammer: Duration,
    /// Accuracy, strict: checks in flight per instance.
    strict_in_flight: usize,
    /// Accuracy, near-cache: checks per millisecond per instance, for one
    /// key and per key of the multi-key runs.
    near_per_ms: usize,
    /// Spread: clients, their pace, how long, and their limit.
    clients: usize,
    pace: Duration,
    spread_for: Duration,
    spread_limit: u64,
    /// Latency: sequential strict checks; near-cache rounds × checks.
    strict_checks: usize,
    rounds: usize,
    checks: usize,
    /// Outage: Redis killed, restarted, run stopped (since the start).
    kill_at: Duration,
    restart_at: Duration,
    stop_at: Duration,
    timeout: Duration,
    retry_every: Duration,
}

impl Config {
    fn full() -> Self {
        Config {
            quick: false,
            limit: 1000,
            period: Duration::from_secs(10),
            keys: 50,
            hammer: Duration::from_millis(2000),
            strict_in_flight: 8,
            near_per_ms: 10,
            clients: 20,
            pace: Duration::from_millis(20),
            spread_for: Duration::from_secs(2),
            spread_limit: 50,
            strict_checks: 5_000,
            rounds: 5,
            checks: 2_000_000,
            kill_at: Duration::from_secs(1),
            restart_at: Duration::from_secs(3),
            stop_at: Duration::from_secs(5),
            timeout: Duration::from_millis(50),
            retry_every: Duration::from_millis(500),
        }
    }

    fn quick() -> Self {
        Config {
            quick: true,
            limit: 200,
            keys: 10,
            hammer: Duration::from_millis(400),
            spread_for: Duration::from_millis(800),
            spread_limit: 20,
            strict_checks: 1_000,
            rounds: 3,
            checks: 200_000,
            kill_at: Duration::from_millis(500),
            restart_at: Duration::from_millis(1500),
            stop_at: Duration::from_millis(3000),
            ..Config::full()
        }
    }
}

/// Instances of the fleet.
const INSTANCES: usize = 3;

/// The shared algorithms measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Algo {
    SlidingWindow,
    Gcra,
}

impl Algo {
    fn name(self) -> &'static str {
        match self {
            Algo::SlidingWindow => "sliding window",
            Algo::Gcra => "GCRA",
        }
    }

    /// `limit` per `period`; GCRA with a burst of `limit`.
    fn apply<K: std::hash::Hash + ?Sized>(
        self,
        b: SharedBuilder<K>,
        limit: u64,
        period: Duration,
    ) -> SharedBuilder<K> {
        match self {
            Algo::SlidingWindow => b.sliding_window(limit, period),
            Algo::Gcra => b.gcra(limit, period).burst(limit),
        }
    }

    /// What one exact limiter admits to a key that is always asking, from
    /// its first admission to its last check, as a range: the times are read
    /// around each round trip, so the server's instants are only known
    /// within them. A sliding window run stays inside one window (see
    /// [`inside_one_window`]) on a fresh key, so it admits the limit. Never
    /// more than the key asked for (a slow run that did not reach it).
    fn allowance(self, limit: u64, period: Duration, k: &KeyTally) -> (u64, u64) {
        let (Some(first), Some(last)) = (k.first, k.last) else {
            return (0, 0);
        };
        let (lo, hi) = match self {
            Algo::SlidingWindow => (limit, limit),
            Algo::Gcra => {
                let t = period.as_nanos() / u128::from(limit);
                let span =
                    |a: Instant, b: Instant| (b.saturating_duration_since(a).as_nanos() / t) as u64;
                (limit + span(first.1, last.0), limit + span(first.0, last.1))
            }
        };
        (lo.min(k.offered), hi.min(k.offered))
    }
}

/// One key's checks as one instance (or the fleet) saw them: the first and
/// last check as (sent, answered) instants.
#[derive(Clone, Copy, Debug, Default)]
struct KeyTally {
    offered: u64,
    admitted: u64,
    first: Option<(Instant, Instant)>,
    last: Option<(Instant, Instant)>,
}

impl KeyTally {
    fn record(&mut self, sent: Instant, answered: Instant, allowed: bool) {
        self.offered += 1;
        self.admitted += u64::from(allowed);
        self.first.get_or_insert((sent, answered));
        self.last = Some((sent, answered));
    }

    fn merge(&mut self, o: &KeyTally) {
        self.offered += o.offered;
        self.admitted += o.admitted;
        let pick = |a: Option<(Instant, Instant)>, b, earliest: bool| match (a, b) {
            (Some(x), Some(y)) => Some(if (x < y) == earliest { x } else { y }),
            (x, y) => x.or(y),
        };
        self.first = pick(self.first, o.first, true);
        self.last = pick(self.last, o.last, false);
    }

    /// Units admitted outside the allowance: positive over, negative under.
    fn error(&self, (lo, hi): (u64, u64)) -> i64 {
        let a = self.admitted as i64;
        if a > hi as i64 {
            a - hi as i64
        } else if a < lo as i64 {
            a - lo as i64
        } else {
            0
        }
    }
}

/// A run's keys scored against their allowances.
struct Score {
    offered: u64,
    admitted: u64,
    allowance: (u64, u64),
    /// Per key: units admitted outside its allowance (+ over, − under).
    errors: Vec<i64>,
}

impl Score {
    fn new(algo: Algo, limit: u64, period: Duration, keys: &[KeyTally]) -> Self {
        let ranges: Vec<_> = keys
            .iter()
            .map(|k| algo.allowance(limit, period, k))
            .collect();
        Score {
            offered: keys.iter().map(|k| k.offered).sum(),
            admitted: keys.iter().map(|k| k.admitted).sum(),
            allowance: ranges
                .iter()
                .fold((0, 0), |(a, b), (lo, hi)| (a + lo, b + hi)),
            errors: keys.iter().zip(&ranges).map(|(k, r)| k.error(*r)).collect(),
        }
    }

    fn over(&self) -> i64 {
        self.errors.iter().filter(|e| **e > 0).sum()
    }

    fn under(&self) -> i64 {
        self.errors.iter().filter(|e| **e < 0).sum()
    }

    fn worst_over(&self) -> i64 {
        self.errors.iter().copied().max().unwrap_or(0).max(0)
    }

    fn worst_under(&self) -> i64 {
        self.errors.iter().copied().min().unwrap_or(0).min(0)
    }
}

/// Merges per-instance tallies key by key.
fn merge_all(parts: Vec<Vec<KeyTally>>) -> Vec<KeyTally> {
    let mut out = vec![KeyTally::default(); parts.first().map_or(0, Vec::len)];
    for part in &parts {
        for (o, k) in out.iter_mut().zip(part) {
            o.merge(k);
        }
    }
    out
}

/// Waits, if need be, so that the next `span` falls inside one window of
/// `window` aligned on the Unix epoch, as the server's sliding window is.
/// Loopback: the server reads the same clock.
async fn inside_one_window(window: Duration, span: Duration) {
    let margin = Duration::from_millis(300);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_nanos((now.as_nanos() % window.as_nanos()) as u64);
    if window - into < span + margin {
        tokio::time::sleep(window - into + Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until every limiter sees `n` instances in the registry.
async fn until_fleet_of<K: ?Sized>(limiters: &[SharedLimiter<K>], n: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while limiters.iter().any(|l| l.stats().instances != n) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        100.0 * part / whole
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// Part 1: what the fleet admits.
mod accuracy {
    use super::*;
    use floodguard::redis::DEFAULT_SYNC_AFTER;

    /// The documented near-cache bound per key: `(I − 1) × sync_after`.
    const NEAR_BOUND: u64 = (INSTANCES as u64 - 1) * DEFAULT_SYNC_AFTER;

    #[derive(Debug, Serialize)]
    pub struct Row {
        pub mode: &'static str,
        pub algo: Algo,
        pub keys: usize,
        pub seconds: f64,
        pub offered: u64,
        pub allowance: (u64, u64),
        pub admitted: u64,
        /// Units outside the allowance summed over keys (over − under).
        pub error: i64,
        pub error_pct: f64,
        /// The largest per-key overshoot (units above the allowance).
        pub worst_key_over: i64,
        pub worst_key_under: i64,
        /// Per key: `(I − 1) × sync_after` for the near-cache, 0 for strict.
        pub bound_per_key: u64,
        pub budget_refusals: u64,
        pub fallback: u64,
        pub ok: bool,
    }

    #[derive(Debug, Serialize)]
    pub struct SpreadRow {
        pub algo: Algo,
        pub pattern: &'static str,
        pub clients: usize,
        pub requests: u64,
        pub allowance: (u64, u64),
        pub admitted: u64,
        pub over: i64,
        pub under: i64,
        pub worst_client_over: i64,
        pub worst_client_under: i64,
        pub budget_refusals: u64,
        pub ok: bool,
    }

    pub struct Fleet {
        stores: Vec<RedisStore>,
        /// One near-cached limiter per store, kept alive so that every
        /// instance renews itself in the registry throughout.
        _keepers: Vec<SharedLimiter<u64>>,
    }

    impl Fleet {
        pub fn new(url: &str) -> Self {
            let stores: Vec<_> = (0..INSTANCES)
                .map(|_| {
                    RedisStore::builder(url)
                        .namespace("fleet")
                        // Generous: part 1 measures the algorithms, not
                        // timeouts on a loaded two-core machine.
                        .timeout(Duration::from_secs(1))
                        .build()
                        .expect("store")
                })
                .collect();
            let _keepers = stores
                .iter()
                .map(|s| {
                    SharedLimiter::builder("keeper")
                        .sliding_window(1, Duration::from_secs(1))
                        .build(s)
                        .expect("keeper")
                })
                .collect();
            Fleet { stores, _keepers }
        }

        fn limiters(
            &self,
            name: &str,
            algo: Algo,
            limit: u64,
            period: Duration,
            mode: Mode,
        ) -> Vec<SharedLimiter<u64>> {
            self.stores
                .iter()
                .map(|s| {
                    algo.apply(SharedLimiter::builder(name), limit, period)
                        .mode(mode)
                        .build(s)
                        .expect("limiter")
                })
                .collect()
        }
    }

    /// Strict: `in_flight` tasks per instance, each checking back to back.
    async fn hammer_strict(
        l: &SharedLimiter<u64>,
        keys: usize,
        in_flight: usize,
        end: Instant,
    ) -> Vec<KeyTally> {
        let tasks: Vec<_> = (0..in_flight)
            .map(|c| {
                let l = l.clone();
                tokio::spawn(async move {
                    let mut t = vec![KeyTally::default(); keys];
                    let mut i = c;
                    while Instant::now() < end {
                        let k = i % keys;
                        i += 1;
                        let sent = Instant::now();
                        let d = l.check(&(k as u64)).await;
                        t[k].record(sent, Instant::now(), d.is_allowed());
                    }
                    t
                })
            })
            .collect();
        let mut parts = Vec::new();
        for t in tasks {
            parts.push(t.await.expect("strict client panicked"));
        }
        merge_all(parts)
    }

    /// Near-cache: `per_ms` checks every millisecond, round-robin over keys.
    async fn hammer_near(
        l: SharedLimiter<u64>,
        keys: usize,
        per_ms: usize,
        offset: usize,
        end: Instant,
    ) -> Vec<KeyTally> {
        let mut t = vec![KeyTally::default(); keys];
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut i = offset;
        while Instant::now() < end {
            tick.tick().await;
            for _ in 0..per_ms {
                let k = i % keys;
                i += 1;
                let now = Instant::now();
                let d = l.check_now(&(k as u64), 1).expect("near-cache");
                t[k].record(now, now, d.is_allowed());
            }
        }
        t
    }

    async fn run(fleet: &Fleet, cfg: &Config, mode: Mode, algo: Algo, keys: usize) -> Row {
        let strict = mode == Mode::Strict;
        let name = format!(
            "acc-{}-{}-{keys}",
            if strict { "strict" } else { "near" },
            if algo == Algo::Gcra { "gcra" } else { "sw" }
        );
        let limiters = fleet.limiters(&name, algo, cfg.limit, cfg.period, mode);
        let fleet_ok = strict || until_fleet_of(&limiters, INSTANCES as u64).await;
        if algo == Algo::SlidingWindow {
            inside_one_window(cfg.period, cfg.hammer).await;
        }
        let start = Instant::now();
        let end = start + cfg.hammer;
        let tasks: Vec<_> = limiters
            .iter()
            .enumerate()
            .map(|(n, l)| {
                let l = l.clone();
                let (in_flight, per_ms) = (cfg.strict_in_flight, cfg.near_per_ms * keys);
                tokio::spawn(async move {
                    if strict {
                        hammer_strict(&l, keys, in_flight, end).await
                    } else {
                        hammer_near(l, keys, per_ms, n * 7, end).await
                    }
                })
            })
            .collect();
        let mut parts = Vec::new();
        for t in tasks {
            parts.push(t.await.expect("instance panicked"));
        }
        let seconds = start.elapsed().as_secs_f64();
        let score = Score::new(algo, cfg.limit, cfg.period, &merge_all(parts));
        let error = score.over() + score.under();
        let error_pct = pct(error as f64, score.allowance.1 as f64);
        let bound_per_key = if strict { 0 } else { NEAR_BOUND };
        let stats: Vec<_> = limiters.iter().map(SharedLimiter::stats).collect();
        let ok = fleet_ok
            && if strict {
                // Exact in principle; 1 % of slack, per key and in all.
                let slack = cfg.limit as f64 / 100.0;
                error_pct.abs() <= 1.0
                    && score.worst_over() as f64 <= slack
                    && -score.worst_under() as f64 <= slack
            } else {
                score.worst_over() <= NEAR_BOUND as i64
            };
        Row {
            mode: if strict { "strict" } else { "near-cache" },
            algo,
            keys,
            seconds,
            offered: score.offered,
            allowance: score.allowance,
            admitted: score.admitted,
            error,
            error_pct,
            worst_key_over: score.worst_over(),
            worst_key_under: score.worst_under(),
            bound_per_key,
            budget_refusals: stats.iter().map(|s| s.budget_refusals).sum(),
            fallback: stats.iter().map(|s| s.fallback).sum(),
            ok,
        }
    }

    pub async fn hammer_all(fleet: &Fleet, cfg: &Config) -> Vec<Row> {
        let mut rows = Vec::new();
        for mode in [Mode::Strict, Mode::near_cache()] {
            for algo in [Algo::SlidingWindow, Algo::Gcra] {
                for keys in [1, cfg.keys] {
                    rows.push(run(fleet, cfg, mode, algo, keys).await);
                }
            }
        }
        rows
    }

    /// One client at `pace`: round-robin over the instances, or always the
    /// same one.
    async fn client(
        limiters: Vec<SharedLimiter<u64>>,
        id: usize,
        round_robin: bool,
        cfg: Config,
        start: Instant,
    ) -> KeyTally {
        let offset = cfg.pace.mul_f64(id as f64 / cfg.clients as f64);
        let mut tick = tokio::time::interval_at((start + offset).into(), cfg.pace);
        let requests = (cfg.spread_for.as_nanos() / cfg.pace.as_nanos()) as usize;
        let mut t = KeyTally::default();
        for j in 0..requests {
            tick.tick().await;
            let l = &limiters[if round_robin {
                (id + j) % INSTANCES
            } else {
                id % INSTANCES
            }];
            let now = Instant::now();
            let d = l.check_now(&(id as u64), 1).expect("near-cache");
            t.record(now, now, d.is_allowed());
        }
        t
    }

    pub async fn spread(fleet: &Fleet, cfg: &Config) -> Vec<SpreadRow> {
        let runs: Vec<_> = [Algo::SlidingWindow, Algo::Gcra]
            .into_iter()
            .flat_map(|a| [(a, true), (a, false)])
            .map(|(algo, rr)| {
                let name = format!(
                    "spread-{}-{}",
                    if algo == Algo::Gcra { "gcra" } else { "sw" },
                    if rr { "rr" } else { "sticky" }
                );
                (
                    algo,
                    rr,
                    fleet.limiters(
                        &name,
                        algo,
                        cfg.spread_limit,
                        cfg.period,
                        Mode::near_cache(),
                    ),
                )
            })
            .collect();
        let mut fleet_ok = true;
        for (_, _, ls) in &runs {
            fleet_ok &= until_fleet_of(ls, INSTANCES as u64).await;
        }
        inside_one_window(cfg.period, cfg.spread_for + cfg.pace).await;
        let start = Instant::now() + Duration::from_millis(5);
        let handles: Vec<_> = runs
            .iter()
            .map(|(_, rr, ls)| {
                (0..cfg.clients)
                    .map(|id| tokio::spawn(client(ls.clone(), id, *rr, cfg.clone(), start)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut rows = Vec::new();
        for ((algo, rr, ls), hs) in runs.iter().zip(handles) {
            let mut tallies = Vec::new();
            for h in hs {
                tallies.push(h.await.expect("client panicked"));
            }
            let score = Score::new(*algo, cfg.spread_limit, cfg.period, &tallies);
            rows.push(SpreadRow {
                algo: *algo,
                pattern: if *rr { "round-robin" } else { "one instance" },
                clients: cfg.clients,
                requests: score.offered,
                allowance: score.allowance,
                admitted: score.admitted,
                over: score.over(),
                under: score.under(),
                worst_client_over: score.worst_over(),
                worst_client_under: score.worst_under(),
                budget_refusals: ls.iter().map(|l| l.stats().budget_refusals).sum(),
                ok: fleet_ok && score.worst_over() <= NEAR_BOUND as i64,
            });
        }
        rows
    }
}

/// Part 2: what a check costs.
mod latency {
    use super::*;
    use floodguard::KeyedLimiter;
    use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
    use std::hint::black_box;
    use std::net::{IpAddr, Ipv4Addr};
    use std::num::NonZeroU32;
    use std::sync::Arc;

    /// About a billion a second: the limits never bite, so every limiter
    /// runs its admission path (the near-cache's share still runs out).
    const RATE: u64 = 1_000_000_000;

    #[derive(Debug, Serialize)]
    pub struct Strict {
        pub checks: usize,
        pub p50_us: f64,
        pub p90_us: f64,
        pub p99_us: f64,
        pub max_us: f64,
    }

    #[derive(Debug, Serialize)]
    pub struct Row {
        pub keys: usize,
        pub limiter: &'static str,
        /// ns per check, one figure per round.
        pub rounds_ns: Vec<f64>,
        pub median_ns: f64,
        /// Share of the timed checks admitted (near-cache: its share of a
        /// key runs out until the next sync).
        pub allowed_pct: f64,
        /// Near-cache: share of the checks decided by the local fallback
        /// (the breaker was open).
        pub fallback_pct: f64,
    }

    #[derive(Debug, Serialize)]
    pub struct Report {
        pub strict: Strict,
        pub checks_per_round: usize,
        /// The store's failed calls and breaker openings over part 2.
        pub errors: u64,
        pub timeouts: u64,
        pub breaker_opened: u64,
        pub rows: Vec<Row>,
        /// (keys, limiter, its median / local's median) for the near-cache rows.
        pub ratios: Vec<(usize, &'static str, f64)>,
    }

    fn shared(store: &RedisStore, name: &str, mode: Mode) -> SharedLimiter<IpAddr> {
        SharedLimiter::builder(name)
            .gcra(RATE, Duration::from_secs(1))
            .burst(RATE)
            .mode(mode)
            .build(store)
            .expect("limiter")
    }

    async fn strict(store: &RedisStore, checks: usize) -> Strict {
        let l = shared(store, "lat-strict", Mode::Strict);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        for _ in 0..100 {
            black_box(l.check(&ip).await);
        }
        let mut us = Vec::with_capacity(checks);
        for _ in 0..checks {
            let t = Instant::now();
            black_box(l.check(black_box(&ip)).await);
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        us.sort_by(f64::total_cmp);
        Strict {
            checks,
            p50_us: percentile(&us, 50.0),
            p90_us: percentile(&us, 90.0),
            p99_us: percentile(&us, 99.0),
            max_us: percentile(&us, 100.0),
        }
    }

    /// ns per check of `check` over `n` checks cycling through `keys`, and
    /// how many were admitted.
    fn time<F: Fn(&IpAddr) -> bool>(keys: &[IpAddr], n: usize, check: F) -> (f64, u64) {
        for k in keys.iter().cycle().take(n / 10) {
            black_box(check(black_box(k)));
        }
        let mut allowed = 0;
        let t = Instant::now();
        for k in keys.iter().cycle().take(n) {
            allowed += u64::from(black_box(check(black_box(k))));
        }
        (t.elapsed().as_nanos() as f64 / n as f64, allowed)
    }

    pub async fn run(store: &RedisStore, cfg: &Config) -> Report {
        let strict = strict(store, cfg.strict_checks).await;
        let near = shared(store, "lat-near", Mode::near_cache());
        let local = Arc::new(
            KeyedLimiter::<IpAddr>::builder()
                .gcra(RATE, Duration::from_secs(1))
                .burst(RATE)
                .build()
                .expect("local"),
        );
        let n = NonZeroU32::new(RATE as u32).expect("rate");
        let gov: Arc<DefaultKeyedRateLimiter<IpAddr>> =
            Arc::new(RateLimiter::keyed(Quota::per_second(n).allow_burst(n)));
        // The largest share: a sync every 65,535 admissions, so the cache's
        // own admission path is what is timed.
        let admit = Mode::NearCache {
            sync_every: floodguard::redis::DEFAULT_SYNC_EVERY,
            sync_after: floodguard::redis::MAX_SYNC_AFTER,
        };
        let open = shared(store, "lat-near-open", admit);
        let names = ["near-cache", "near-cache, admit path", "local", "governor"];
        let sets = [addresses::scattered(1), addresses::scattered(10_000)];
        let mut ns = vec![vec![Vec::new(); names.len()]; sets.len()];
        let mut allowed = vec![vec![0u64; names.len()]; sets.len()];
        let mut fallback = vec![vec![0u64; names.len()]; sets.len()];
        let fallbacks = |near: &SharedLimiter<IpAddr>, open: &SharedLimiter<IpAddr>| {
            [near.stats().fallback, open.stats().fallback, 0, 0]
        };
        for round in 0..cfg.rounds {
            for (s, keys) in sets.iter().enumerate() {
                let mut order = [0, 1, 2, 3];
                if round % 2 == 1 {
                    order.reverse();
                }
                for which in order {
                    let before = fallbacks(&near, &open)[which];
                    let job = {
                        let (keys, near, open) = (keys.clone(), near.clone(), open.clone());
                        let (local, gov, n) = (local.clone(), gov.clone(), cfg.checks);
                        move || match which {
                            0 => time(&keys, n, |k| {
                                near.check_now(k, 1).is_some_and(|d| d.is_allowed())
                            }),
                            1 => time(&keys, n, |k| {
                                open.check_now(k, 1).is_some_and(|d| d.is_allowed())
                            }),
                            2 => time(&keys, n, |k| local.check(k).is_allowed()),
                            _ => time(&keys, n, |k| gov.check_key(k).is_ok()),
                        }
                    };
                    // Off the runtime's workers: the near-cache's sync task
                    // must keep running meanwhile.
                    let (t, a) = tokio::task::spawn_blocking(job)
                        .await
                        .expect("timing loop panicked");
                    ns[s][which].push(t);
                    allowed[s][which] += a;
                    fallback[s][which] += fallbacks(&near, &open)[which] - before;
                }
            }
        }
        let mut rows = Vec::new();
        let mut ratios = Vec::new();
        for (s, keys) in sets.iter().enumerate() {
            for (which, name) in names.iter().enumerate() {
                rows.push(Row {
                    keys: keys.len(),
                    limiter: name,
                    median_ns: median(&ns[s][which]),
                    rounds_ns: ns[s][which].clone(),
                    allowed_pct: pct(allowed[s][which] as f64, (cfg.rounds * cfg.checks) as f64),
                    // Warm-up checks included: the same for every round.
                    fallback_pct: pct(
                        fallback[s][which] as f64,
                        (cfg.rounds * (cfg.checks + cfg.checks / 10)) as f64,
                    ),
                });
            }
            for near in [0, 1] {
                ratios.push((
                    keys.len(),
                    names[near],
                    median(&ns[s][near]) / median(&ns[s][2]),
                ));
            }
        }
        let st = store.stats();
        Report {
            strict,
            checks_per_round: cfg.checks,
            errors: st.errors,
            timeouts: st.timeouts,
            breaker_opened: st.breaker_opened,
            rows,
            ratios,
        }
    }
}

/// Part 3: Redis killed and restarted under a steady client.
mod outage {
    use super::*;
    use floodguard::redis::{BreakerState, OnFailure, StoreStats};

    /// One decision of the client.
    #[derive(Clone, Copy, Debug)]
    struct Sample {
        at_ms: f64,
        latency_ms: f64,
        allowed: bool,
        fallback: bool,
        /// Refused by the near-cache because its share was spent.
        budget: bool,
    }

    /// When a store's breaker and calls changed, as polled every ms.
    #[derive(Clone, Copy, Debug, Default)]
    struct Watch {
        first_failure_ms: Option<f64>,
        opened_ms: Option<f64>,
        closed_ms: Option<f64>,
    }

    #[derive(Debug, Default, Serialize)]
    pub struct Lane {
        pub mode: &'static str,
        pub first_failed_call_ms: Option<f64>,
        pub first_fallback_ms: Option<f64>,
        pub breaker_opened_ms: Option<f64>,
        pub breaker_closed_ms: Option<f64>,
        pub first_redis_again_ms: Option<f64>,
        pub decisions: usize,
        /// From the kill to the first decision served by Redis again.
        pub outage_decisions: usize,
        pub outage_fallback: usize,
        /// Refused by the failure policy.
        pub outage_refused: usize,
        /// Refused by the near-cache before the breaker opened: its share
        /// of the key was spent and the sync failed.
        pub outage_budget_refusals: usize,
        pub outage_p99_ms: f64,
        pub outage_max_ms: f64,
        /// The slowest decision from the kill to the stop.
        pub max_after_kill_ms: f64,
        /// Round trips tried between the kill and the restart, and calls
        /// the open breaker skipped.
        pub calls_while_down: u64,
        pub skipped_while_down: u64,
        /// Calls that failed after the new server answered `PING`.
        pub failed_after_up: u64,
        pub breaker_opened: u64,
    }

    #[derive(Debug, Serialize)]
    pub struct Timeline {
        pub policy: &'static str,
        pub timeout_ms: f64,
        pub retry_every_ms: f64,
        /// SIGKILL sent.
        pub kill_ms: f64,
        /// Restart started, and the new server answering `PING`.
        pub restart_ms: f64,
        pub up_ms: f64,
        pub stop_ms: f64,
        /// About `trip_after + down / retry_every`.
        pub expected_calls: f64,
        pub lanes: Vec<Lane>,
        pub panics: usize,
        pub failures: Vec<String>,
    }

    fn ms(t0: Instant, t: Instant) -> f64 {
        t.saturating_duration_since(t0).as_secs_f64() * 1e3
    }

    /// Checks one key every 5 ms until `stop`, noting whether each decision
    /// came from the failure policy.
    async fn client(l: SharedLimiter<str>, t0: Instant, stop: Instant) -> Vec<Sample> {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut out = Vec::new();
        while Instant::now() < stop {
            tick.tick().await;
            let before = l.stats();
            let sent = Instant::now();
            let d = l.check("client").await;
            let done = Instant::now();
            let after = l.stats();
            out.push(Sample {
                at_ms: ms(t0, sent),
                latency_ms: (done - sent).as_secs_f64() * 1e3,
                allowed: d.is_allowed(),
                fallback: after.fallback > before.fallback,
                budget: after.budget_refusals > before.budget_refusals,
            });
        }
        out
    }

    /// Polls the stores' breakers every millisecond until `stop`.
    async fn watch(stores: Vec<RedisStore>, t0: Instant, stop: Instant) -> Vec<Watch> {
        let base: Vec<StoreStats> = stores.iter().map(RedisStore::stats).collect();
        let mut w = vec![Watch::default(); stores.len()];
        while Instant::now() < stop {
            let now = ms(t0, Instant::now());
            for ((s, w), b) in stores.iter().zip(&mut w).zip(&base) {
                let st = s.stats();
                if st.errors + st.timeouts > b.errors + b.timeouts {
                    w.first_failure_ms.get_or_insert(now);
                }
                if st.breaker != BreakerState::Closed {
                    w.opened_ms.get_or_insert(now);
                } else if w.opened_ms.is_some() {
                    w.closed_ms.get_or_insert(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        w
    }

    /// A store's counters when Redis was killed, restarted and answering
    /// again, and at the end.
    struct Marks {
        kill_ms: f64,
        restart_ms: f64,
        at: [StoreStats; 4],
    }

    fn lane(mode: &'static str, samples: Vec<Sample>, w: Watch, m: Marks) -> Lane {
        let Marks {
            kill_ms,
            restart_ms,
            at: [at_kill, at_restart, at_up, at_end],
        } = m;
        let first_redis_again_ms = samples
            .iter()
            .find(|s| s.at_ms > restart_ms && !s.fallback)
            .map(|s| s.at_ms);
        let end = first_redis_again_ms.unwrap_or(f64::INFINITY);
        let during: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at_ms >= kill_ms && s.at_ms < end)
            .collect();
        let mut lat: Vec<f64> = during.iter().map(|s| s.latency_ms).collect();
        lat.sort_by(f64::total_cmp);
        Lane {
            mode,
            first_failed_call_ms: w.first_failure_ms,
            first_fallback_ms: samples.iter().find(|s| s.fallback).map(|s| s.at_ms),
            breaker_opened_ms: w.opened_ms,
            breaker_closed_ms: w.closed_ms,
            first_redis_again_ms,
            decisions: samples.len(),
            outage_decisions: during.len(),
            outage_fallback: during.iter().filter(|s| s.fallback).count(),
            outage_refused: during.iter().filter(|s| s.fallback && !s.allowed).count(),
            outage_budget_refusals: during.iter().filter(|s| s.budget).count(),
            outage_p99_ms: percentile(&lat, 99.0),
            outage_max_ms: percentile(&lat, 100.0),
            max_after_kill_ms: samples
                .iter()
                .filter(|s| s.at_ms >= kill_ms)
                .map(|s| s.latency_ms)
                .fold(0.0, f64::max),
            calls_while_down: at_restart.calls - at_kill.calls,
            skipped_while_down: at_restart.skipped - at_kill.skipped,
            failed_after_up: (at_end.errors + at_end.timeouts) - (at_up.errors + at_up.timeouts),
            breaker_opened: at_end.breaker_opened,
        }
    }

    pub async fn run(cfg: &Config, policy: OnFailure) -> Timeline {
        let policy_name = if policy == OnFailure::Local {
            "local"
        } else {
            "refuse"
        };
        let mut server = RedisServer::start();
        let store = |ns: &str| {
            RedisStore::builder(server.url())
                .namespace(ns)
                .timeout(cfg.timeout)
                .retry_every(cfg.retry_every)
                .on_failure(policy)
                .build()
                .expect("store")
        };
        let stores = [store("outage-strict"), store("outage-near")];
        let limiter = |s: &RedisStore, mode| {
            SharedLimiter::<str>::builder("api")
                .sliding_window(1_000_000, Duration::from_secs(10))
                .mode(mode)
                .build(s)
                .expect("limiter")
        };
        let limiters = [
            limiter(&stores[0], Mode::Strict),
            limiter(&stores[1], Mode::near_cache()),
        ];
        // Connected and synced once before the clock starts.
        for l in &limiters {
            let _ = l.check("client").await;
            l.flush().await;
        }
        let t0 = Instant::now();
        let stop = t0 + cfg.stop_at;
        let clients: Vec<_> = limiters
            .iter()
            .map(|l| tokio::spawn(client(l.clone(), t0, stop)))
            .collect();
        let watcher = tokio::spawn(watch(stores.to_vec(), t0, stop));
        // Kill and restart block (waits for the process, pings): off the
        // workers, so the client's latencies are not theirs.
        let (kill_at, restart_at) = (t0 + cfg.kill_at, t0 + cfg.restart_at);
        let control_stores = stores.clone();
        let controller = tokio::task::spawn_blocking(move || {
            let snapshot = || {
                let s = control_stores
                    .iter()
                    .map(RedisStore::stats)
                    .collect::<Vec<_>>();
                (Instant::now(), s)
            };
            std::thread::sleep(kill_at.saturating_duration_since(Instant::now()));
            let killed = snapshot();
            server.kill();
            std::thread::sleep(restart_at.saturating_duration_since(Instant::now()));
            let restarted = snapshot();
            server.restart();
            (killed, restarted, snapshot(), server)
        });
        let mut panics = 0;
        let mut samples = Vec::new();
        for c in clients {
            match c.await {
                Ok(s) => samples.push(s),
                Err(e) => {
                    panics += usize::from(e.is_panic());
                    samples.push(Vec::new());
                }
            }
        }
        let watches = watcher.await.unwrap_or_else(|e| {
            panics += usize::from(e.is_panic());
            vec![Watch::default(); 2]
        });
        let ((killed, at_kill), (restarted, at_restart), (up, at_up), server) =
            controller.await.expect("controller panicked");
        drop(server);
        let (kill_ms, restart_ms, up_ms) = (ms(t0, killed), ms(t0, restarted), ms(t0, up));
        let lanes: Vec<Lane> = ["strict", "near-cache"]
            .into_iter()
            .zip(samples)
            .enumerate()
            .map(|(i, (mode, s))| {
                let marks = Marks {
                    kill_ms,
                    restart_ms,
                    at: [at_kill[i], at_restart[i], at_up[i], stores[i].stats()],
                };
                lane(mode, s, watches[i], marks)
            })
            .collect();
        let down = (restart_ms - kill_ms) / 1e3;
        let expected_calls =
            f64::from(floodguard::redis::DEFAULT_TRIP_AFTER) + down / cfg.retry_every.as_secs_f64();
        let limit_ms = (cfg.timeout + Duration::from_millis(100)).as_secs_f64() * 1e3;
        let mut failures = Vec::new();
        for l in &lanes {
            let who = format!("outage {policy_name}/{}", l.mode);
            if l.max_after_kill_ms > limit_ms {
                failures.push(format!(
                    "{who}: a decision took {:.1} ms (> {limit_ms:.0} ms)",
                    l.max_after_kill_ms
                ));
            }
            if l.breaker_closed_ms.is_none() || l.first_redis_again_ms.is_none() {
                failures.push(format!("{who}: no recovery before the stop"));
            }
            if l.outage_fallback == 0 {
                failures.push(format!("{who}: the failure policy never decided"));
            }
            let refused = l.outage_refused;
            match policy {
                OnFailure::Refuse if refused < l.outage_fallback => failures.push(format!(
                    "{who}: failing closed admitted {}",
                    l.outage_fallback - refused
                )),
                OnFailure::Local if refused > 0 => {
                    failures.push(format!("{who}: failing open refused {refused}"))
                }
                _ => {}
            }
        }
        if panics > 0 {
            failures.push(format!("outage {policy_name}: {panics} panics"));
        }
        Timeline {
            policy: policy_name,
            timeout_ms: cfg.timeout.as_secs_f64() * 1e3,
            retry_every_ms: cfg.retry_every.as_secs_f64() * 1e3,
            kill_ms,
            restart_ms,
            up_ms,
            stop_ms: cfg.stop_at.as_secs_f64() * 1e3,
            expected_calls,
            lanes,
            panics,
            failures,
        }
    }
}

/// Tables on stdout.
mod report {
    use super::*;

    /// Prints `rows` under `head`, the first column left-aligned.
    pub fn table(title: &str, head: &[&str], rows: &[Vec<String>]) {
        let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
        for r in rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let out: Vec<String> = cells
                .iter()
                .zip(&width)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            println!("  {}", out.join("  ").trim_end());
        };
        println!("\n{title}");
        line(head.to_vec());
        println!(
            "  {}",
            "-".repeat(width.iter().sum::<usize>() + 2 * (width.len() - 1))
        );
        for r in rows {
            line(r.iter().map(String::as_str).collect());
        }
    }

    fn range((lo, hi): (u64, u64)) -> String {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}–{hi}")
        }
    }

    fn opt(v: Option<f64>) -> String {
        v.map_or_else(|| "—".into(), |v| format!("{v:.0}"))
    }

    fn ok(ok: bool) -> String {
        (if ok { "ok" } else { "FAIL" }).into()
    }

    pub fn accuracy(cfg: &Config, rows: &[accuracy::Row]) {
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.mode.into(),
                    r.algo.name().into(),
                    r.keys.to_string(),
                    r.offered.to_string(),
                    range(r.allowance),
                    r.admitted.to_string(),
                    format!("{:+}", r.error),
                    format!("{:+.2}", r.error_pct),
                    format!("{:+}", r.worst_key_over),
                    format!("{:+}", r.worst_key_under),
                    if r.mode == "strict" {
                        "exact".into()
                    } else {
                        format!("≤ +{}", r.bound_per_key)
                    },
                    r.budget_refusals.to_string(),
                    ok(r.ok),
                ]
            })
            .collect();
        table(
            &format!(
                "1. Accuracy: {INSTANCES} instances, one limit of {} per {:?} (GCRA: burst {}), {:.1} s at full demand",
                cfg.limit,
                cfg.period,
                cfg.limit,
                cfg.hammer.as_secs_f64()
            ),
            &[
                "mode",
                "algorithm",
                "keys",
                "offered",
                "allowance",
                "admitted",
                "error",
                "err %",
                "worst key +",
                "worst key −",
                "bound/key",
                "budget refusals",
                "",
            ],
            &body,
        );
    }

    pub fn spread(cfg: &Config, rows: &[accuracy::SpreadRow]) {
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.algo.name().into(),
                    r.pattern.into(),
                    r.requests.to_string(),
                    range(r.allowance),
                    r.admitted.to_string(),
                    format!("{:+}", r.over),
                    format!("{:+}", r.under),
                    format!("{:+} / {:+}", r.worst_client_over, r.worst_client_under),
                    r.budget_refusals.to_string(),
                    ok(r.ok),
                ]
            })
            .collect();
        table(
            &format!(
                "1b. Spread: {} clients, one request every {:?} for {:.1} s, limit {} per {:?} each, near-cache",
                cfg.clients,
                cfg.pace,
                cfg.spread_for.as_secs_f64(),
                cfg.spread_limit,
                cfg.period
            ),
            &[
                "algorithm",
                "requests go to",
                "requests",
                "allowance",
                "admitted",
                "over",
                "under",
                "worst client",
                "budget refusals",
                "",
            ],
            &body,
        );
    }

    pub fn latency(r: &latency::Report) {
        let s = &r.strict;
        table(
            &format!(
                "2a. Strict check().await, {} sequential checks on loopback (µs)",
                s.checks
            ),
            &["", "p50", "p90", "p99", "max"],
            &[vec![
                "strict".into(),
                format!("{:.1}", s.p50_us),
                format!("{:.1}", s.p90_us),
                format!("{:.1}", s.p99_us),
                format!("{:.0}", s.max_us),
            ]],
        );
        let body: Vec<Vec<String>> = r
            .rows
            .iter()
            .map(|row| {
                let ratio = r
                    .ratios
                    .iter()
                    .find(|(k, l, _)| *k == row.keys && *l == row.limiter);
                vec![
                    format!("{} key{}", row.keys, if row.keys == 1 { "" } else { "s" }),
                    row.limiter.into(),
                    format!("{:.1}", row.median_ns),
                    format!(
                        "{:.1}–{:.1}",
                        row.rounds_ns.iter().copied().fold(f64::INFINITY, f64::min),
                        row.rounds_ns.iter().copied().fold(0.0, f64::max)
                    ),
                    format!("{:.1}", row.allowed_pct),
                    format!("{:.1}", row.fallback_pct),
                    ratio.map_or_else(String::new, |x| format!("{:.2}× local", x.2)),
                ]
            })
            .collect();
        table(
            &format!(
                "2b. Per check, ns: median of {} interleaved rounds of {} checks (near-cache: check_now); \
                 store: {} errors, {} timeouts, breaker opened {} times",
                r.rows.first().map_or(0, |x| x.rounds_ns.len()),
                r.checks_per_round,
                r.errors,
                r.timeouts,
                r.breaker_opened
            ),
            &[
                "keys",
                "limiter",
                "median",
                "range",
                "allowed %",
                "fallback %",
                "ratio",
            ],
            &body,
        );
    }

    pub fn outage(t: &outage::Timeline) {
        let l = &t.lanes;
        let row = |name: &str, f: &dyn Fn(&outage::Lane) -> String| {
            let mut r = vec![name.to_string()];
            r.extend(l.iter().map(f));
            r
        };
        let at = |v: f64| format!("{v:.0}");
        let rows = vec![
            row("Redis killed (SIGKILL)", &|_| at(t.kill_ms)),
            row("first failed Redis call", &|x| opt(x.first_failed_call_ms)),
            row("first fallback decision (sent)", &|x| {
                opt(x.first_fallback_ms)
            }),
            row("breaker opened", &|x| opt(x.breaker_opened_ms)),
            row("Redis restarted", &|_| at(t.restart_ms)),
            row("Redis answering again", &|_| at(t.up_ms)),
            row("breaker closed", &|x| opt(x.breaker_closed_ms)),
            row("first decision by Redis again", &|x| {
                opt(x.first_redis_again_ms)
            }),
            row("stop", &|_| at(t.stop_ms)),
            row("decisions during outage", &|x| {
                x.outage_decisions.to_string()
            }),
            row("  by the failure policy", &|x| {
                x.outage_fallback.to_string()
            }),
            row("  refused by the policy", &|x| x.outage_refused.to_string()),
            row("  near-cache budget refusals", &|x| {
                x.outage_budget_refusals.to_string()
            }),
            row("  latency p99 / max (ms)", &|x| {
                format!("{:.3} / {:.3}", x.outage_p99_ms, x.outage_max_ms)
            }),
            row("max latency, kill to stop (ms)", &|x| {
                format!("{:.3}", x.max_after_kill_ms)
            }),
            row("Redis calls while down (skipped)", &|x| {
                format!("{} ({})", x.calls_while_down, x.skipped_while_down)
            }),
            row("calls failed after Redis answered", &|x| {
                x.failed_after_up.to_string()
            }),
            row("breaker opened (times)", &|x| x.breaker_opened.to_string()),
        ];
        let mut head = vec!["ms since start"];
        head.extend(l.iter().map(|x| x.mode));
        table(
            &format!(
                "3. Outage, OnFailure::{}: timeout {:.0} ms, retry every {:.0} ms; ~{:.0} calls expected while down; panics: {}",
                if t.policy == "local" {
                    "Local"
                } else {
                    "Refuse"
                },
                t.timeout_ms,
                t.retry_every_ms,
                t.expected_calls,
                t.panics
            ),
            &head,
            &rows,
        );
    }
}

#[derive(Serialize)]
struct Report {
    config: Config,
    cores: usize,
    seconds: f64,
    accuracy: Vec<accuracy::Row>,
    spread: Vec<accuracy::SpreadRow>,
    latency: latency::Report,
    outage: Vec<outage::Timeline>,
    failures: Vec<String>,
}

async fn run(cfg: Config) -> Report {
    let started = Instant::now();
    let server = RedisServer::start();
    let fleet = accuracy::Fleet::new(&server.url());
    let rows = accuracy::hammer_all(&fleet, &cfg).await;
    report::accuracy(&cfg, &rows);
    let spread = accuracy::spread(&fleet, &cfg).await;
    report::spread(&cfg, &spread);
    drop(fleet);

    // A generous timeout: with the default 50 ms, a sync round starved of
    // CPU by the timing loops (two cores) can time out and open the
    // breaker, and the near-cache rows would time the local fallback.
    let store = RedisStore::builder(server.url())
        .namespace("latency")
        .timeout(Duration::from_secs(1))
        .build()
        .expect("store");
    let lat = latency::run(&store, &cfg).await;
    report::latency(&lat);
    drop(store);
    drop(server);

    // Both policies at once, each with its own server: the load is light.
    use floodguard::redis::OnFailure;
    let (local, refuse) = tokio::join!(
        outage::run(&cfg, OnFailure::Local),
        outage::run(&cfg, OnFailure::Refuse)
    );
    let outages = vec![local, refuse];
    outages.iter().for_each(report::outage);

    let mut failures: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            format!(
                "accuracy {} {} {} keys: error {:+} ({:+.2} %), worst key {:+} / {:+}",
                r.mode,
                r.algo.name(),
                r.keys,
                r.error,
                r.error_pct,
                r.worst_key_over,
                r.worst_key_under
            )
        })
        .collect();
    failures.extend(spread.iter().filter(|r| !r.ok).map(|r| {
        format!(
            "spread {} {}: worst client {:+}",
            r.algo.name(),
            r.pattern,
            r.worst_client_over
        )
    }));
    failures.extend(outages.iter().flat_map(|t| t.failures.iter().cloned()));
    Report {
        config: cfg,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        seconds: started.elapsed().as_secs_f64(),
        accuracy: rows,
        spread,
        latency: lat,
        outage: outages,
        failures,
    }
}

fn main() -> ExitCode {
    let mut cfg = Config::full();
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => cfg = Config::quick(),
            "--json" => match args.next() {
                Some(path) => json = Some(path),
                None => {
                    eprintln!("fleet: --json needs a path");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: fleet [--quick] [--json PATH]");
                return ExitCode::from(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(run(cfg));
    println!("\n{:.1} s, {} cores", report.seconds, report.cores);
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).expect("json");
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("fleet: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if report.failures.is_empty() {
        println!("all invariants hold");
        ExitCode::SUCCESS
    } else {
        for f in &report.failures {
            println!("FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}
