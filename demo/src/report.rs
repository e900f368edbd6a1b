//! Figures of one run, the table, the JSON and the SVG chart.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::http1::Scored;
use crate::traffic::{BUCKET, Outcome, Recorder, Sample};
use crate::{Defence, Scenario};

/// How long after the attack starts the "settled" p99 begins.
const SETTLE: Duration = Duration::from_secs(1);

/// Good exchanges before the attack that make a shopper known good (as
/// `Ladder::known_good_after` does for the guard).
const KNOWN_GOOD_AFTER: usize = 3;

/// A timeline bucket of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    pub t_ms: u64,
    pub legit_total: u64,
    pub legit_ok: u64,
    pub legit_p99_ms: Option<f64>,
    pub attack_sent: u64,
    pub attack_admitted: u64,
    /// Searches answered with a 2xx in this bucket (attack and shoppers).
    pub search_served: u64,
}

/// The shop's memory and CPU, and the load generator's CPU.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// Most file descriptors the shop held open at once during the attack.
    pub peak_fds: usize,
    pub peak_rss_mb: f64,
    pub cpu_s: f64,
    pub attack_cpu_s: f64,
    pub generator_attack_cpu_s: f64,
}

/// Everything the shop printed besides its port.
#[derive(Clone, Debug, Default)]
pub struct ShopOutput {
    pub events: Vec<ShopEvent>,
    pub limits: Vec<LimitLine>,
    /// The shop's timing of its 503 answers (`SHED` line).
    pub shed: Option<ShedTimes>,
}

impl ShopOutput {
    pub fn add(&mut self, line: &str) {
        if let Some(e) = ShopEvent::parse(line) {
            self.events.push(e);
        } else if let Some(l) = LimitLine::parse(line) {
            self.limits.push(l);
        } else if let Some(s) = ShedTimes::parse(line) {
            self.shed = Some(s);
        }
    }
}

/// One report of one overload limit (`LIMIT` line).
#[derive(Clone, Debug)]
pub struct LimitLine {
    pub unix_ms: u64,
    pub route: String,
    pub limit: u32,
    pub in_flight: u32,
    pub shed_total: u64,
    pub admitted: u64,
}

impl LimitLine {
    /// Parses `LIMIT <unix ms> <route> <limit> <in_flight> <shed_total> <admitted>`.
    fn parse(line: &str) -> Option<Self> {
        let mut f = line.strip_prefix("LIMIT ")?.split(' ');
        Some(LimitLine {
            unix_ms: f.next()?.parse().ok()?,
            route: f.next()?.to_owned(),
            limit: f.next()?.parse().ok()?,
            in_flight: f.next()?.parse().ok()?,
            shed_total: f.next()?.parse().ok()?,
            admitted: f.next()?.parse().ok()?,
        })
    }
}

/// The shop's own timing of the requests it shed (answered 503), from
/// its outermost layer's call to the response.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ShedTimes {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl ShedTimes {
    /// Parses `SHED <count> <p50 ns> <p90 ns> <p99 ns> <max ns>`.
    fn parse(line: &str) -> Option<Self> {
        let mut f = line.strip_prefix("SHED ")?.split(' ');
        let mut us = || f.next()?.parse::<f64>().ok().map(|ns| ns / 1e3);
        let count = us()? * 1e3;
        Some(ShedTimes {
            count: count as u64,
            p50_us: us()?,
            p90_us: us()?,
            p99_us: us()?,
            max_us: us()?,
        })
    }
}

/// An overload limit at one moment of the run.
#[derive(Clone, Debug, Serialize)]
pub struct LimitSample {
    /// Since the run began.
    pub t_ms: u64,
    /// The route (`-` for the service's own limit).
    pub route: String,
    pub limit: u32,
    pub in_flight: u32,
    pub shed_total: u64,
    pub admitted: u64,
}

/// Shoppers' requests during the attack that did not get a 2xx, by route
/// and by how they ended (a status such as 503 for shed, 429 for a rate
/// limit, 403 for blocked; or timeout, connect, broken).
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub route: String,
    pub outcome: String,
    pub count: u64,
}

/// The search route's goodput during a search overload.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Goodput {
    /// Searches a second the route served in its calibration (the bare
    /// shop, same process, nothing else running).
    pub capacity_rps: f64,
    /// Searches a second answered with a 2xx during the attack (the
    /// attack's and the shoppers').
    pub served_rps: f64,
    /// Searches a second the attack's crowd sent.
    pub offered_rps: f64,
    /// `served_rps / capacity_rps`.
    pub ratio: f64,
    /// The same from one second into the attack.
    pub settled_ratio: f64,
}

/// Shoppers who had at least `KNOWN_GOOD_AFTER` good exchanges before
/// the attack started, and how they fared during it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct KnownGood {
    pub shoppers: u64,
    pub requests: u64,
    pub ok: u64,
    pub success: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Their p99 against the same run's no-attack p99 (all shoppers).
    pub p99_vs_baseline: f64,
}

/// Round trips of shed (503) attack requests as the load generator saw
/// them on loopback, and the shop's own timing of its 503 answers.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ShedLatency {
    pub client_count: u64,
    pub client_p50_ms: f64,
    pub client_p99_ms: f64,
    pub server: Option<ShedTimes>,
}

/// An event the shop's guard reported.
#[derive(Clone, Debug, Serialize)]
pub struct ShopEvent {
    /// When, in Unix milliseconds.
    pub unix_ms: u64,
    pub kind: String,
    /// The banned client or flagged network, if any.
    pub client: String,
    pub text: String,
}

impl ShopEvent {
    /// Parses `EVENT <unix ms> <kind> <client> <text>`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.strip_prefix("EVENT ")?.splitn(4, ' ');
        Some(ShopEvent {
            unix_ms: f.next()?.parse().ok()?,
            kind: f.next()?.to_owned(),
            client: f.next()?.to_owned(),
            text: f.next().unwrap_or("").to_owned(),
        })
    }

    /// The banned client's address (an IPv6 client's /64 network), if the
    /// event names one.
    fn address(&self) -> Option<std::net::IpAddr> {
        self.client.split('/').next()?.parse().ok()
    }
}

/// Who the guard got right and wrong, client by client: legitimate
/// clients it banned, throttled or challenged (as the shop's `x-fg-action`
/// told each of them), and bots it banned, held or missed.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Confusion {
    /// Legitimate clients that took part.
    pub legit_clients: u64,
    /// ... banned (a `client-banned` event for its address).
    pub legit_banned: u64,
    /// ... served at least once with scoring's `throttle` (rate rules
    /// charged more for it).
    pub legit_throttled: u64,
    /// ... served at least once with scoring's `challenge` (without a
    /// challenge hook, as here, a challenge is a throttle).
    pub legit_challenged: u64,
    /// ... refused (429, 403 or 503) at least once.
    pub legit_refused_clients: u64,
    /// Legitimate requests of the phase refused with 429, 403 and 503.
    pub legit_refused: [u64; 3],
    /// Their share of the phase's legitimate requests.
    pub legit_refused_share: f64,
    /// Attacking clients (addresses; the IPv6 rotation's /64) that sent
    /// something.
    pub bots: u64,
    /// ... banned.
    pub bots_banned: u64,
    /// ... never banned but held: refused twice or more since their last
    /// 2xx (or refused, never served).
    pub bots_held: u64,
    /// ... neither: still served, or only ever slowed down.
    pub bots_missed: u64,
    /// Bots served a 2xx after the attack was declared.
    pub bots_served_after_detection: Option<u64>,
    /// From the phase's start until the first attack declared in it.
    pub declared_after_ms: Option<u64>,
    /// From the phase's start until that attack ended.
    pub ended_after_ms: Option<u64>,
}

impl Confusion {
    fn count(
        rec: &Recorder,
        events: &[ShopEvent],
        in_phase: &[&Sample],
        (attack_unix_ms, declared, ended): (u64, Option<u64>, Option<u64>),
    ) -> Confusion {
        use std::collections::HashSet;
        let banned: HashSet<std::net::IpAddr> = events
            .iter()
            .filter(|e| e.kind == "client-banned" && !e.text.starts_with("[shadow]"))
            .filter_map(ShopEvent::address)
            .collect();
        let legit_clients = rec.legit_clients.lock().clone();
        let legit = rec.legit.lock();
        let distinct = |f: &dyn Fn(&Sample) -> bool| {
            legit
                .iter()
                .filter(|s| f(s))
                .map(|s| s.shopper)
                .collect::<HashSet<_>>()
                .len() as u64
        };
        let refused = |status: u16| {
            in_phase
                .iter()
                .filter(|s| s.outcome == Outcome::Status(status))
                .count() as u64
        };
        let legit_refused = [refused(429), refused(403), refused(503)];
        let bots = rec.bots.lock();
        let bot_banned = |ip: &std::net::IpAddr| banned.contains(ip);
        let held = bots
            .iter()
            .filter(|(ip, r)| {
                !bot_banned(ip) && (r.refused_since_served >= 2 || (r.served == 0 && r.refused > 0))
            })
            .count() as u64;
        let bots_banned = bots.keys().filter(|ip| bot_banned(ip)).count() as u64;
        let detected_at =
            declared.map(|d| Duration::from_millis(d + attack_unix_ms - rec.start_unix_ms));
        Confusion {
            legit_clients: legit_clients.len() as u64,
            legit_banned: legit_clients
                .keys()
                .filter(|ip| banned.contains(ip))
                .count() as u64,
            legit_throttled: distinct(&|s| s.action == Some(Scored::Throttle)),
            legit_challenged: distinct(&|s| s.action == Some(Scored::Challenge)),
            legit_refused_clients: distinct(&|s| s.outcome.refused()),
            legit_refused,
            legit_refused_share: ratio(legit_refused.iter().sum(), in_phase.len() as u64),
            bots: bots.len() as u64,
            bots_banned,
            bots_held: held,
            bots_missed: bots.len() as u64 - bots_banned - held,
            bots_served_after_detection: detected_at.map(|at| {
                bots.values()
                    .filter(|r| r.last_served.is_some_and(|t| t >= at))
                    .count() as u64
            }),
            declared_after_ms: declared,
            ended_after_ms: ended,
        }
    }
}

/// Everything measured for one (scenario, defence) run.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub scenario: Scenario,
    pub defence: Defence,
    /// When the attack started, since the run began.
    pub attack_start_ms: u64,
    /// Legitimate requests started during the attack phase, and how many
    /// got a 2xx.
    pub legit_requests: u64,
    pub legit_ok: u64,
    pub legit_success: f64,
    pub legit_p50_ms: f64,
    pub legit_p99_ms: f64,
    /// Legitimate requests started before the attack (the no-attack
    /// baseline) and the share of them that got a 2xx.
    pub baseline_requests: u64,
    pub baseline_success: f64,
    /// Legitimate p99 before the attack started, and the ratio.
    pub baseline_p99_ms: f64,
    pub p99_vs_baseline: f64,
    /// Legitimate p99 from one second after the attack started: the
    /// sustained state, without the first burst.
    pub settled_p99_ms: f64,
    pub settled_vs_baseline: f64,
    pub attack_sent: u64,
    pub attack_admitted: u64,
    /// Share of attack units that reached a handler (or, for slow
    /// connections, of connection-seconds held open).
    pub attack_admitted_share: f64,
    /// From attack start until the admitted share stayed below 10% for
    /// the rest of the run; `None` if it never did.
    pub time_to_block_ms: Option<u64>,
    pub server_peak_rss_mb: f64,
    /// The shop's CPU time over the run (not its calibration).
    pub server_cpu_s: f64,
    /// The shop's CPU time from the attack's start to the end of the run.
    pub server_attack_cpu_s: f64,
    /// The load generator's (shoppers' and attackers') over the same time:
    /// it shares the cores with the shop.
    pub generator_attack_cpu_s: f64,
    /// From attack start until the guard declared an attack; `None` if it
    /// did not.
    pub detected_after_ms: Option<u64>,
    /// Share of attack units admitted from the first 100 ms bucket after
    /// detection on; `None` without detection.
    pub admitted_after_detection: Option<f64>,
    /// Attacks declared before the attack started (false alarms).
    pub false_alarms: u64,
    /// Clients banned, and how many of them were legitimate shoppers.
    pub bans: u64,
    pub legit_banned: u64,
    /// Client by client: legitimate ones banned, throttled, challenged,
    /// refused; bots banned, held, missed; when the attack was declared and
    /// ended.
    pub confusion: Confusion,
    /// Search overload only: the search route's goodput.
    pub goodput: Option<Goodput>,
    /// Search overload only: shoppers known good before the attack.
    pub known_good: Option<KnownGood>,
    /// Search overload only: how fast shed requests were answered.
    pub shed_latency: Option<ShedLatency>,
    /// Shoppers' failed requests during the attack, by route and outcome.
    pub failures: Vec<Failure>,
    pub events: Vec<ShopEvent>,
    /// Fresh visitors during the attack: each one's first answer.
    pub fresh: Fresh,
    /// Most file descriptors the shop held at once during the attack.
    pub server_peak_fds: usize,
    /// Every overload limit every 100 ms (floodguard defences).
    pub limit_trace: Vec<LimitSample>,
    pub timeline: Vec<Bucket>,
    /// Every shopper request, for `--samples`.
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// Computes a run's figures from what its traffic recorded: the figures
/// of the phase from `attack_start` to `end` (the attack, or the crowd's
/// arrival), the timeline until `run_end` (`end` and a tail, if any, for
/// the attack to be seen to end).
pub fn summarise(
    scenario: Scenario,
    defence: Defence,
    rec: &Recorder,
    (attack_start, end, run_end): (Duration, Duration, Duration),
    server: Usage,
    output: &ShopOutput,
    capacity: Option<f64>,
) -> RunResult {
    let events = &output.events;
    let attack_unix_ms = rec.start_unix_ms + attack_start.as_millis() as u64;
    let started: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "attack-started")
        .map(|e| e.unix_ms)
        .collect();
    let banned = events.iter().filter(|e| e.kind == "client-banned");
    let legit_addresses = rec.legit_clients.lock().clone();
    let legit = rec.legit.lock().clone();
    let in_attack: Vec<_> = legit
        .iter()
        .filter(|s| s.at >= attack_start && s.at < end)
        .collect();
    let before: Vec<_> = legit.iter().filter(|s| s.at < attack_start).collect();
    let ok = in_attack.iter().filter(|s| s.ok).count() as u64;
    let latencies = |v: &[&crate::traffic::Sample]| -> Vec<f64> {
        let mut l: Vec<f64> = v.iter().map(|s| s.latency.as_secs_f64() * 1e3).collect();
        l.sort_by(f64::total_cmp);
        l
    };
    let attack_lat = latencies(&in_attack);
    let base_lat = latencies(&before);
    let baseline_p99 = quantile(&base_lat, 0.99);
    let legit_p99 = quantile(&attack_lat, 0.99);
    let settle = attack_start + SETTLE;
    let settled: Vec<_> = in_attack
        .iter()
        .copied()
        .filter(|s| s.at >= settle)
        .collect();
    let settled_p99 = quantile(&latencies(&settled), 0.99);

    let buckets = (run_end.as_millis() / BUCKET.as_millis()) as usize;
    let mut timeline = Vec::with_capacity(buckets);
    for b in 0..buckets {
        let lo = BUCKET * b as u32;
        let hi = lo + BUCKET;
        let here: Vec<_> = legit.iter().filter(|s| s.at >= lo && s.at < hi).collect();
        let lat = latencies(&here);
        timeline.push(Bucket {
            t_ms: lo.as_millis() as u64,
            legit_total: here.len() as u64,
            legit_ok: here.iter().filter(|s| s.ok).count() as u64,
            legit_p99_ms: (!lat.is_empty()).then(|| quantile(&lat, 0.99)),
            attack_sent: rec.attack_sent[b].load(Ordering::Relaxed),
            attack_admitted: rec.attack_admitted[b].load(Ordering::Relaxed),
            search_served: rec.search_served[b].load(Ordering::Relaxed),
        });
    }
    let first = (attack_start.as_millis() / BUCKET.as_millis()) as usize;
    let detected_after_ms = started
        .iter()
        .find(|&&t| t >= attack_unix_ms)
        .map(|t| t - attack_unix_ms);
    let ended_after_ms = detected_after_ms.and_then(|d| {
        events
            .iter()
            .find(|e| e.kind == "attack-ended" && e.unix_ms >= attack_unix_ms + d)
            .map(|e| e.unix_ms - attack_unix_ms)
    });
    let admitted_after_detection = detected_after_ms.map(|d| {
        let from = attack_start.as_millis() as u64 + d + BUCKET.as_millis() as u64;
        let after = timeline.iter().filter(|b| b.t_ms >= from);
        let (sent, admitted) = after.fold((0, 0), |(s, a), b| {
            (s + b.attack_sent, a + b.attack_admitted)
        });
        ratio(admitted, sent)
    });
    // Units that finished after the deadline (in flight when it passed) are
    // left out of both the timeline and the totals.
    let attack_sent: u64 = timeline.iter().map(|b| b.attack_sent).sum();
    let attack_admitted: u64 = timeline.iter().map(|b| b.attack_admitted).sum();
    let search = scenario == Scenario::SearchOverload;
    let goodput = capacity.filter(|_| search).map(|capacity_rps| {
        let served_from = |from: Duration| {
            let from = from.as_millis() as u64;
            let served: u64 = timeline
                .iter()
                .filter(|b| b.t_ms >= from)
                .map(|b| b.search_served)
                .sum();
            served as f64 / (end - Duration::from_millis(from)).as_secs_f64()
        };
        let served_rps = served_from(attack_start);
        let offered_rps = attack_sent as f64 / (end - attack_start).as_secs_f64();
        RunResult::goodput(capacity_rps, (offered_rps, served_rps), served_from(settle))
    });
    // Known-good figures where people who came before must keep being
    // served: the search overload, and a crowd past capacity.
    let known_good = (search || scenario == Scenario::FlashCrowdOverload)
        .then(|| known_good(&legit, attack_start, end, baseline_p99));
    let shed_latency = search.then(|| {
        let mut rt = rec.shed_round_trips.lock().clone();
        rt.sort_by(f64::total_cmp);
        ShedLatency {
            client_count: rt.len() as u64,
            client_p50_ms: quantile(&rt, 0.5),
            client_p99_ms: quantile(&rt, 0.99),
            server: output.shed,
        }
    });
    let mut failures = std::collections::BTreeMap::<(&str, Outcome), u64>::new();
    for s in in_attack.iter().filter(|s| !s.ok) {
        *failures.entry((s.route, s.outcome)).or_default() += 1;
    }
    let limit_trace = output
        .limits
        .iter()
        .filter(|l| l.unix_ms >= rec.start_unix_ms)
        .map(|l| LimitSample {
            t_ms: l.unix_ms.saturating_sub(rec.start_unix_ms),
            route: l.route.clone(),
            limit: l.limit,
            in_flight: l.in_flight,
            shed_total: l.shed_total,
            admitted: l.admitted,
        })
        .collect();
    RunResult {
        scenario,
        defence,
        attack_start_ms: attack_start.as_millis() as u64,
        legit_requests: in_attack.len() as u64,
        legit_ok: ok,
        legit_success: ratio(ok, in_attack.len() as u64),
        legit_p50_ms: quantile(&attack_lat, 0.5),
        legit_p99_ms: legit_p99,
        baseline_requests: before.len() as u64,
        baseline_success: ratio(
            before.iter().filter(|s| s.ok).count() as u64,
            before.len() as u64,
        ),
        baseline_p99_ms: baseline_p99,
        p99_vs_baseline: legit_p99 / baseline_p99,
        settled_p99_ms: settled_p99,
        settled_vs_baseline: settled_p99 / baseline_p99,
        attack_sent,
        attack_admitted,
        attack_admitted_share: ratio(attack_admitted, attack_sent),
        time_to_block_ms: time_to_block(&timeline[first.min(timeline.len())..]),
        server_peak_rss_mb: server.peak_rss_mb,
        server_peak_fds: server.peak_fds,
        fresh: Fresh::of(&rec.fresh.lock(), attack_start, end),
        server_cpu_s: server.cpu_s,
        server_attack_cpu_s: server.attack_cpu_s,
        generator_attack_cpu_s: server.generator_attack_cpu_s,
        detected_after_ms,
        admitted_after_detection,
        // With no attack at all, every attack declared is a false alarm.
        false_alarms: started
            .iter()
            .filter(|&&t| t < attack_unix_ms || scenario.all_legit())
            .count() as u64,
        bans: banned.clone().count() as u64,
        legit_banned: banned
            .filter_map(ShopEvent::address)
            .filter(|a| legit_addresses.contains_key(a))
            .collect::<std::collections::HashSet<_>>()
            .len() as u64,
        confusion: Confusion::count(
            rec,
            events,
            &in_attack,
            (attack_unix_ms, detected_after_ms, ended_after_ms),
        ),
        goodput,
        known_good,
        shed_latency,
        failures: failures
            .into_iter()
            .map(|((route, outcome), count)| Failure {
                route: route.to_owned(),
                outcome: outcome.name(),
                count,
            })
            .collect(),
        events: events.to_vec(),
        limit_trace,
        timeline,
        samples: legit,
    }
}

impl RunResult {
    fn goodput(
        capacity_rps: f64,
        (offered_rps, served_rps): (f64, f64),
        settled_rps: f64,
    ) -> Goodput {
        Goodput {
            capacity_rps,
            served_rps,
            offered_rps,
            ratio: served_rps / capacity_rps,
            settled_ratio: settled_rps / capacity_rps,
        }
    }
}

/// How shoppers with `KNOWN_GOOD_AFTER` good exchanges before
/// `attack_start` fared in the attack.
fn known_good(
    legit: &[Sample],
    attack_start: Duration,
    end: Duration,
    baseline_p99: f64,
) -> KnownGood {
    let mut good_before = std::collections::HashMap::<u32, usize>::new();
    for s in legit {
        // Finished before the attack began.
        if s.ok && s.at + s.latency < attack_start {
            *good_before.entry(s.shopper).or_default() += 1;
        }
    }
    let known = |s: &&Sample| good_before.get(&s.shopper).copied().unwrap_or(0) >= KNOWN_GOOD_AFTER;
    let theirs: Vec<&Sample> = legit
        .iter()
        .filter(|s| s.at >= attack_start && s.at < end)
        .filter(known)
        .collect();
    let ok = theirs.iter().filter(|s| s.ok).count() as u64;
    let mut lat: Vec<f64> = theirs
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .collect();
    lat.sort_by(f64::total_cmp);
    let p99 = quantile(&lat, 0.99);
    KnownGood {
        shoppers: good_before
            .values()
            .filter(|&&n| n >= KNOWN_GOOD_AFTER)
            .count() as u64,
        requests: theirs.len() as u64,
        ok,
        success: ratio(ok, theirs.len() as u64),
        p50_ms: quantile(&lat, 0.5),
        p99_ms: p99,
        p99_vs_baseline: p99 / baseline_p99,
    }
}

/// Time from the first attack bucket until the admitted share stays below
/// 10% in every later bucket that saw attack traffic.
fn time_to_block(attack: &[Bucket]) -> Option<u64> {
    let start = attack.first()?.t_ms;
    let mut blocked_since = None;
    for b in attack.iter().filter(|b| b.attack_sent > 0) {
        let share = b.attack_admitted as f64 / b.attack_sent as f64;
        if share < 0.10 {
            blocked_since.get_or_insert(b.t_ms);
        } else {
            blocked_since = None;
        }
    }
    blocked_since.map(|t| t - start)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// The table printed at the end of a run.
pub fn table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| scenario | defence | legit ok | legit p50 ms | legit p99 ms | p99 vs no attack | p99 after 1 s vs no attack | known-good ok (n) | known-good p99 vs no attack | search goodput | attack admitted (of sent) | blocked after | detected after | admitted after detection | bans (legit) | server RSS MB | server CPU s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let (known_ok, known_p99) = r.known_good.map_or(("-".into(), "-".into()), |k| {
            (
                format!("{:.2}% ({})", k.success * 100.0, k.shoppers),
                format!("{:.1}×", k.p99_vs_baseline),
            )
        });
        let goodput = r
            .goodput
            .map_or("-".into(), |g| format!("{:.0}%", g.ratio * 100.0));
        let admitted = if r.attack_sent == 0 {
            "-".into()
        } else {
            format!(
                "{:.1}% ({} of {})",
                r.attack_admitted_share * 100.0,
                r.attack_admitted,
                r.attack_sent
            )
        };
        let blocked = match r.time_to_block_ms {
            _ if r.attack_sent == 0 => "-".into(),
            Some(t) => format!("{:.1} s", t as f64 / 1e3),
            None => "never".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {:.2}% | {:.1} | {:.1} | {:.1}× | {:.1}× | {known_ok} | {known_p99} | {goodput} | {admitted} | {blocked} | {} | {} | {} ({}) | {:.0} | {:.1} |\n",
            r.scenario.name(),
            r.defence.name(),
            r.legit_success * 100.0,
            r.legit_p50_ms,
            r.legit_p99_ms,
            r.p99_vs_baseline,
            r.settled_vs_baseline,
            r.detected_after_ms
                .map_or("-".into(), |t| format!("{:.1} s", t as f64 / 1e3)),
            r.admitted_after_detection
                .filter(|a| !a.is_nan())
                .map_or("-".into(), |a| format!("{:.1}%", a * 100.0)),
            r.bans,
            r.legit_banned,
            r.server_peak_rss_mb,
            r.server_cpu_s,
        ));
    }
    out
}

/// Client by client, who the guard got right and wrong in each run
/// (`Confusion`), and when it declared an attack and when that ended.
pub fn confusion_table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| scenario | defence | legit clients | legit refused: requests 429 / 403 / 503 (share) | legit clients refused | banned | throttled | challenged | bots | banned | held | missed | served after detection | attack declared after | ended after | false alarms |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let secs = |t: Option<u64>| t.map_or("-".into(), |t| format!("{:.1} s", t as f64 / 1e3));
    for r in results {
        let c = &r.confusion;
        let [r429, r403, r503] = c.legit_refused;
        let share = if c.legit_refused_share.is_nan() {
            "-".into()
        } else {
            format!("{:.2}%", c.legit_refused_share * 100.0)
        };
        let bots = |n: u64| {
            if c.bots == 0 {
                "-".to_string()
            } else {
                n.to_string()
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {r429} / {r403} / {r503} ({share}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario.name(),
            r.defence.name(),
            c.legit_clients,
            c.legit_refused_clients,
            c.legit_banned,
            c.legit_throttled,
            c.legit_challenged,
            bots(c.bots),
            bots(c.bots_banned),
            bots(c.bots_held),
            bots(c.bots_missed),
            c.bots_served_after_detection
                .filter(|_| c.bots > 0)
                .map_or("-".into(), |n| n.to_string()),
            secs(c.declared_after_ms),
            secs(c.ended_after_ms),
            r.false_alarms,
        ));
    }
    out
}

/// Every shopper request of every run as CSV, for `--samples`.
pub fn samples_csv(results: &[RunResult]) -> String {
    let mut out = String::from("scenario,defence,shopper,route,start_s,latency_ms,outcome\n");
    for r in results {
        for s in &r.samples {
            out.push_str(&format!(
                "{},{},{},{},{:.4},{:.3},{}\n",
                r.scenario.name(),
                r.defence.name(),
                s.shopper,
                s.route,
                s.at.as_secs_f64(),
                s.latency.as_secs_f64() * 1e3,
                s.outcome.name()
            ));
        }
    }
    out
}

/// The search overload's details: the search route's capacity and what
/// was served of it, and how fast shed requests were answered.
pub fn search_table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| defence | search capacity /s | offered /s in attack | served /s | goodput | goodput after 1 s | shed answers | shed at server p50 µs | p99 µs | shed round trip p50 ms | p99 ms | CPU s in attack: shop | load generator |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results.iter().filter(|r| r.goodput.is_some()) {
        let g = r.goodput.expect("filtered");
        let (count, server, client) = r.shed_latency.map_or(
            (0, ("-".into(), "-".into()), ("-".into(), "-".into())),
            |l| {
                let us = |v: f64| format!("{v:.1}");
                let ms = |v: f64| {
                    if v.is_nan() {
                        "-".into()
                    } else {
                        format!("{v:.2}")
                    }
                };
                let server = l
                    .server
                    .filter(|s| s.count > 0)
                    .map_or(("-".into(), "-".into()), |s| (us(s.p50_us), us(s.p99_us)));
                let count = l.server.map_or(l.client_count, |s| s.count);
                (count, server, (ms(l.client_p50_ms), ms(l.client_p99_ms)))
            },
        );
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.0}% | {count} | {} | {} | {} | {} | {:.1} | {:.1} |\n",
            r.defence.name(),
            g.capacity_rps,
            g.offered_rps,
            g.served_rps,
            g.ratio * 100.0,
            g.settled_ratio * 100.0,
            server.0,
            server.1,
            client.0,
            client.1,
            r.server_attack_cpu_s,
            r.generator_attack_cpu_s,
        ));
    }
    out
}

/// Fresh visitors during an attack: one new connection from a new
/// address every 200 ms, asking for the home page.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Fresh {
    pub visitors: u64,
    /// Not answered within `traffic::FRESH_TIMEOUT`.
    pub unanswered: u64,
    /// Time to the first answer; an unanswered visitor counts as the
    /// timeout.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Fresh {
    fn of(visits: &[(Duration, Option<Duration>)], start: Duration, end: Duration) -> Self {
        let timeout = crate::traffic::FRESH_TIMEOUT.as_secs_f64() * 1e3;
        let took: Vec<Option<Duration>> = visits
            .iter()
            .filter(|(at, _)| *at >= start && *at < end)
            .map(|&(_, took)| took)
            .collect();
        let mut ms: Vec<f64> = took
            .iter()
            .map(|t| t.map_or(timeout, |d| d.as_secs_f64() * 1e3))
            .collect();
        ms.sort_by(f64::total_cmp);
        Fresh {
            visitors: took.len() as u64,
            unanswered: took.iter().filter(|t| t.is_none()).count() as u64,
            p50_ms: quantile(&ms, 0.50),
            p99_ms: quantile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// Connections during the attacks: how long a visitor who has never been
/// to the shop waits for its first answer, and the shop's descriptors.
pub fn connections_table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| scenario | defence | fresh visitors | unanswered in 5 s | first answer p50 | p99 | max | shop's peak descriptors (of 8,192) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let f = &r.fresh;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} ({:.0}%) |\n",
            r.scenario.name(),
            r.defence.name(),
            f.visitors,
            f.unanswered,
            f.p50_ms,
            f.p99_ms,
            f.max_ms,
            r.server_peak_fds,
            r.server_peak_fds as f64 / f64::from(crate::SHOP_FD_LIMIT) * 100.0,
        ));
    }
    out
}

/// Where shoppers lost during the attacks: failed requests by route and
/// outcome (503 shed, 429 rate-limited, 403 blocked, timeout, ...).
pub fn failure_table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| scenario | defence | shoppers' failed requests: route outcome × count |\n|---|---|---|\n",
    );
    for r in results.iter().filter(|r| !r.failures.is_empty()) {
        let what: Vec<String> = r
            .failures
            .iter()
            .map(|f| format!("{} {} ×{}", f.route, f.outcome, f.count))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            r.scenario.name(),
            r.defence.name(),
            what.join(", ")
        ));
    }
    out
}

/// Draws legitimate success and p99 over time, one row per scenario, one
/// line per defence.
pub fn svg(results: &[RunResult], path: &str) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let scenarios: Vec<Scenario> = {
        let mut s: Vec<Scenario> = results.iter().map(|r| r.scenario).collect();
        s.dedup();
        s
    };
    // The search overload gets a second row: the search route's limit and
    // what it served.
    let overload = scenarios.contains(&Scenario::SearchOverload);
    let n_rows = scenarios.len() + usize::from(overload);
    let root = SVGBackend::new(path, (1200, 260 * n_rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        "floodguard flood harness: legitimate shoppers during each attack (attack starts at the dashed line)",
        ("sans-serif", 18),
    )?;
    let rows = body.split_evenly((n_rows, 2));
    let colours = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    let end_s = results
        .iter()
        .flat_map(|r| r.timeline.last())
        .map(|b| (b.t_ms + BUCKET.as_millis() as u64) as f64 / 1e3)
        .fold(1.0, f64::max);
    for (row, scenario) in scenarios.iter().enumerate() {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.scenario == *scenario).collect();
        let panel = Panel {
            end_s,
            start_s: runs[0].attack_start_ms as f64 / 1e3,
            colours: &colours,
        };
        let max_p99 = runs
            .iter()
            .flat_map(|r| r.timeline.iter().filter_map(|b| b.legit_p99_ms))
            .fold(1.0, f64::max);
        for (col, (label, y_max)) in [("legit success %", 105.0), ("legit p99 ms", max_p99 * 1.1)]
            .into_iter()
            .enumerate()
        {
            let caption = format!("{}: {label}", scenario.name());
            let mut chart = panel.chart(&rows[row * 2 + col], &caption, y_max)?;
            for (i, r) in runs.iter().enumerate() {
                let colour = colours[i % colours.len()];
                let points = r.timeline.iter().filter(|b| b.legit_total > 0).map(|b| {
                    let x = b.t_ms as f64 / 1e3;
                    let y = if col == 0 {
                        100.0 * b.legit_ok as f64 / b.legit_total as f64
                    } else {
                        b.legit_p99_ms.unwrap_or(0.0)
                    };
                    (x, y)
                });
                let series = chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?;
                if row == 0 && col == 0 {
                    series.label(r.defence.name()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
                }
            }
            if row == 0 && col == 0 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::LowerLeft)
                    .draw()?;
            }
        }
    }
    if overload {
        let runs: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.scenario == Scenario::SearchOverload)
            .collect();
        let row = scenarios.len();
        let start_s = runs[0].attack_start_ms as f64 / 1e3;
        let ctx = Panel {
            end_s,
            start_s,
            colours: &colours,
        };
        ctx.limit_panel(&rows[row * 2], &runs)?;
        ctx.goodput_panel(&rows[row * 2 + 1], &runs)?;
    }
    root.present()?;
    Ok(())
}

/// What every panel of the chart shares: the time axis, the attack's start
/// and the defences' colours.
struct Panel<'a> {
    end_s: f64,
    start_s: f64,
    colours: &'a [plotters::style::RGBColor],
}

type Area<'a> =
    plotters::drawing::DrawingArea<plotters::prelude::SVGBackend<'a>, plotters::coord::Shift>;

type Chart<'a, 'b> = plotters::prelude::ChartContext<
    'a,
    plotters::prelude::SVGBackend<'b>,
    plotters::prelude::Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
>;

impl Panel<'_> {
    /// The search route's concurrency limit (solid) and requests in flight
    /// (thin) over time, one colour per defence that has them.
    fn limit_panel(
        &self,
        area: &Area<'_>,
        runs: &[&RunResult],
    ) -> Result<(), Box<dyn std::error::Error>> {
        use plotters::prelude::*;
        let search = |r: &&RunResult| -> Vec<(f64, u32, u32)> {
            r.limit_trace
                .iter()
                .filter(|l| l.route == "/search")
                .map(|l| (l.t_ms as f64 / 1e3, l.limit, l.in_flight))
                .collect()
        };
        let y_max = runs
            .iter()
            .flat_map(|r| search(r).into_iter().map(|(_, l, f)| l.max(f)))
            .fold(4, u32::max) as f64
            * 1.15;
        let mut chart = self.chart(
            area,
            "search-overload: /search limit (thick) and in flight (thin)",
            y_max,
        )?;
        for (i, r) in runs.iter().enumerate() {
            let colour = self.colours[i % self.colours.len()];
            let trace = search(r);
            if trace.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(
                    trace.iter().map(|&(t, l, _)| (t, f64::from(l))),
                    colour.stroke_width(2),
                ))?
                .label(r.defence.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            chart.draw_series(LineSeries::new(
                trace.iter().map(|&(t, _, f)| (t, f64::from(f))),
                colour.mix(0.6).stroke_width(1),
            ))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        Ok(())
    }

    /// Searches served per second against the route's calibrated capacity
    /// (dashed, in the defence's colour).
    fn goodput_panel(
        &self,
        area: &Area<'_>,
        runs: &[&RunResult],
    ) -> Result<(), Box<dyn std::error::Error>> {
        use plotters::prelude::*;
        let per_s = 1e3 / BUCKET.as_millis() as f64;
        // A centred mean over five buckets (half a second): a bucket holds
        // a few dozen searches.
        let smoothed = |r: &RunResult| -> Vec<(f64, f64)> {
            let t = &r.timeline;
            (0..t.len())
                .map(|i| {
                    let w = &t[i.saturating_sub(2)..(i + 3).min(t.len())];
                    let served: u64 = w.iter().map(|b| b.search_served).sum();
                    (
                        t[i].t_ms as f64 / 1e3,
                        served as f64 * per_s / w.len() as f64,
                    )
                })
                .collect()
        };
        let y_max = runs
            .iter()
            .flat_map(|r| {
                let cap = r.goodput.map_or(0.0, |g| g.capacity_rps);
                smoothed(r).into_iter().map(move |(_, y)| y.max(cap))
            })
            .fold(10.0, f64::max)
            * 1.1;
        let mut chart = self.chart(
            area,
            "search-overload: searches served /s, 0.5 s mean (dashed: capacity)",
            y_max,
        )?;
        for (i, r) in runs.iter().enumerate() {
            let colour = self.colours[i % self.colours.len()];
            chart.draw_series(LineSeries::new(smoothed(r), colour.stroke_width(2)))?;
            if let Some(g) = r.goodput {
                chart.draw_series(DashedLineSeries::new(
                    vec![(0.0, g.capacity_rps), (self.end_s, g.capacity_rps)],
                    6,
                    4,
                    colour.mix(0.7).stroke_width(1),
                ))?;
            }
        }
        Ok(())
    }

    /// A chart on `area` from 0 to `y_max` over the run's time, with its
    /// mesh and the attack's start as a dashed line: what every panel has.
    fn chart<'a, 'b>(
        &self,
        area: &'a Area<'b>,
        caption: &str,
        y_max: f64,
    ) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
        use plotters::prelude::*;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(24)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..self.end_s, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("s")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart.draw_series(DashedLineSeries::new(
            vec![(self.start_s, 0.0), (self.start_s, y_max)],
            4,
            4,
            BLACK.mix(0.5).stroke_width(1),
        ))?;
        Ok(chart)
    }
}
