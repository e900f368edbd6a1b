//! The flood harness: legitimate shoppers and an attack against an axum
//! shop on loopback, for every scenario and defence, in one run.
//!
//! ```text
//! cargo run --release -p floodguard-demo            # everything, about 2 minutes
//! cargo run --release -p floodguard-demo -- --scenario botnet --defence floodguard
//! cargo run --release -p floodguard-demo -- --json flood.json --svg flood.svg
//! cargo run --release -p floodguard-demo -- --check # CI: checks the harness itself
//! cargo run --release -p floodguard-demo -- --scenario detection --defence none,floodguard
//! ```
//!
//! A package of its own (`floodguard-demo`, not published) rather than an
//! example of `floodguard`, so that running it builds only what it uses:
//! Cargo builds all of a package's dev-dependencies before any example.
//!
//! Each run starts a fresh shop in its own process (this program run with
//! `--serve <defence>`), lets 200 shoppers browse for a while (the no-attack
//! baseline), then starts the attack while they go on. Traffic goes only to
//! 127.0.0.1, from many 127.x.y.z source addresses; every loop stops at the
//! run's deadline. With two cores or more, the shop runs on the first half
//! of them and the load generator on the rest (`cpus`), unless
//! `--shared-cores` is given.
//!
//! Options: `--scenario a,b` and `--defence x,y` select a subset (names as
//! in the table); `--duration F` scales every phase by F; `--json PATH`
//! writes all figures and timelines; the chart of legitimate success and
//! p99 over time (and, for the search overload, the search route's limit
//! and what it served) goes to `target/flood.svg` (the target directory
//! the program was built in), or to `--svg PATH`, or nowhere with
//! `--no-svg`; `--samples PATH` writes every shopper request
//! as CSV (route, start, latency, outcome); `--overload-limit N` pins the
//! floodguard rows' overload limits at `N` instead of letting them adapt,
//! and `--overload-queue CAPACITY,MS` gives each a waiting room
//! (`Overload::queue`), to see what each costs in goodput and buys in
//! latency. `--session` turns on floodguard's session cookie
//! (`GuardBuilder::session`) in the floodguard rows' shop: the people
//! (the shoppers and the detection shapes' newcomers) keep the cookie the
//! shop sets and send it back, as a browser does; API clients, tools and
//! bots keep none. `--without header-order,route-mix,…` zeroes those
//! scoring signals' weights in the floodguard rows (`header-order`,
//! `client-hints`, `anomalies`, `automation`, `route-mix`, `class-surge`,
//! `session`), to measure what each contributes.
//!
//! The search overload has figures of its own:
//!
//! * *search goodput*: searches answered with a 2xx per second during the
//!   attack (the attack's, which look like shoppers', and the shoppers'),
//!   over the search route's capacity. The capacity is measured in the same
//!   run: the shop process also serves the bare shop (no defence) on a
//!   second port, and 16 keep-alive connections search back to back there
//!   for 1 s before the shoppers start and again after the attack, with
//!   nothing else running; the higher of the two rates is the capacity (this
//!   VM's other work can only lower a measurement). The crowd is sized to
//!   offer 5× that capacity.
//! * *known-good shoppers*: those with three or more good exchanges before
//!   the attack started (the guard's `Ladder::known_good_after`); their
//!   success and p99 during the attack, the p99 against the same run's
//!   no-attack p99 of all shoppers. The search overload's baseline is at
//!   least 1.5 s whatever `--duration` says, so that there are some.
//! * the shop prints its overload limits every 100 ms
//!   (`LIMIT <unix ms> <route> <limit> <in flight> <shed> <admitted>`), and
//!   times its 503 answers (from its outermost layer's call to the
//!   response): `limit_trace` and `shed_latency.server` in the JSON, with
//!   the round trips of shed requests as the load generator saw them.
//!
//! Shoppers' failed requests are broken down by route and outcome (a status
//! such as 503, 429 or 403, or timeout, connect, broken) in a table of
//! their own and `failures` in the JSON.
//!
//! # Traffic floodguard was not tuned on
//!
//! `--scenario detection` runs eight more shapes (`shapes`), each with
//! phases of its own (at `--duration 1`; the shoppers browse throughout):
//!
//! | scenario | phases | what happens |
//! |---|---|---|
//! | flash-crowd | 5 s + 30 s | a newsletter: 1,800 newcomers arrive evenly over 10 s (the shoppers ×10) and stay; browser-like (Chrome's headers, a page then its stylesheet, 0.3-1.5 s of thought, keep-alive, an address each, the session cookie after their first page), 3% of their pages searches: the shop carries them |
//! | flash-crowd-overload | 5 s + 30 s | the same crowd, 35% of their pages searches: past the search route's capacity |
//! | growth | 5 s + 70 s | 800 such newcomers over 60 s, linearly (the shoppers ×5), 10% searches |
//! | small-site | 5 s + 15 s | 10 shoppers, then 40 more (the same kind) all at once |
//! | mixed-clients | 5 s + 20 s | no attack: besides the shoppers, 120 API clients, command-line tools and text browsers, a request every 1-10 s each, each replaying one real captured head (the `plain` captures of the `library`, `tool` and `text-browser` families in turn); tools open a connection per request |
//! | diverse-botnet | 5 s + 15 s + 12 s | 3,000 bots, each replaying one of the captured `tool` and `library` heads (25 today, at least 12 required), with an extra `X-Req-<random>: <random>` header at a random place and the header names' casing (as captured, lower, Title-Case or UPPER) drawn per request; two searches a second each |
//! | spoofed-browser | 5 s + 15 s + 12 s | 2,000 bots sending the captured Chromium document head (localhost origin: client hints and `Sec-Fetch-*`) with only its User-Agent changed to Windows NT 10.0 while `sec-ch-ua-platform` says `"Linux"`; a search every 1-2 s each |
//! | perfect-browser | 5 s + 15 s + 12 s | 2,000 bots sending the captured Chromium document head byte for byte, plus a session cookie where Chrome puts it (as the shoppers carry one); told apart only by behaviour: they only ever search (a search every 1-2 s each, keep-alive), never a page, never an asset |
//!
//! The last number is a tail: the shoppers alone for 12 s after the attack,
//! so that its end shows (the guard waits for 10 s of calm). Everyone in the
//! first five is legitimate and counted in every legitimate figure; any
//! attack declared there is a false alarm. The replayed heads are read at
//! run time from `tests/data/heads/` (`index.tsv`, written by
//! `scripts/capture_heads.py`): only the request target and the `Host`
//! value (the captured name, the shop's port) are rewritten, the rest goes
//! out byte-exact. `--show` prints what each selected shape's clients send
//! and stops. `--check` runs small-site, mixed-clients and diverse-botnet
//! besides the six attacks.
//!
//! Every run also counts client by client (the confusion table, and
//! `confusion` in the JSON): legitimate clients banned (the shop's
//! `client-banned` events), throttled and challenged (the shop copies the
//! guard's `GuardDecision::action` of each served request into an
//! `x-fg-action` header), refused at least once, and the share of their
//! requests refused with 429, 403 and 503; bots banned, held (never banned,
//! but refused twice or more since their last 2xx, or never served) and
//! missed (the rest), and how many were still served after the attack was
//! declared; when the attack was declared and when it ended.

mod console_probe;
mod cpus;
mod heads;
mod http1;
mod procfs;
mod report;
mod shapes;
mod shop;
mod traffic;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use report::RunResult;
use shapes::{Plan, Shape};
use shop::ShopTweaks;
use traffic::Recorder;

/// An attack, or a crowd that is not one (`shapes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    SingleFlood,
    Botnet,
    MimicBotnet,
    Ipv6Rotation,
    Slowloris,
    SlowlorisWide,
    SlowlorisV6,
    SearchOverload,
    FlashCrowd,
    FlashCrowdOverload,
    Growth,
    SmallSite,
    MixedClients,
    DiverseBotnet,
    SpoofedBrowser,
    PerfectBrowser,
}

/// What stands in front of the shop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Defence {
    None,
    TowerGovernor,
    Floodguard,
    FloodguardTuned,
}

/// The default run: the attacks floodguard was tuned on.
/// Where `--console` serves each floodguard run's console (127.0.0.1).
const CONSOLE_PORT: u16 = 9901;

const SCENARIOS: [Scenario; 6] = [
    Scenario::SingleFlood,
    Scenario::Botnet,
    Scenario::MimicBotnet,
    Scenario::Ipv6Rotation,
    Scenario::Slowloris,
    Scenario::SearchOverload,
];
/// `--scenario detection`: traffic it was not tuned on (issue 17), crowds
/// of people that are no attack and botnets that look like people.
const DETECTION: [Scenario; 8] = [
    Scenario::FlashCrowd,
    Scenario::FlashCrowdOverload,
    Scenario::Growth,
    Scenario::SmallSite,
    Scenario::MixedClients,
    Scenario::DiverseBotnet,
    Scenario::SpoofedBrowser,
    Scenario::PerfectBrowser,
];
/// `--scenario slow`: slow connections from many addresses (issue 18),
/// each address holding one, against a shop with 8,192 descriptors.
const SLOW: [Scenario; 2] = [Scenario::SlowlorisWide, Scenario::SlowlorisV6];
/// What `--check` adds to the default run: the cheapest of `DETECTION`
/// (a few seconds each at the check's scale).
const CHECK_DETECTION: [Scenario; 3] = [
    Scenario::SmallSite,
    Scenario::MixedClients,
    Scenario::DiverseBotnet,
];
const DEFENCES: [Defence; 4] = [
    Defence::None,
    Defence::TowerGovernor,
    Defence::Floodguard,
    Defence::FloodguardTuned,
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::SingleFlood => "single-flood",
            Scenario::Botnet => "botnet",
            Scenario::MimicBotnet => "mimic-botnet",
            Scenario::Ipv6Rotation => "ipv6-rotation",
            Scenario::Slowloris => "slowloris",
            Scenario::SlowlorisWide => "slowloris-wide",
            Scenario::SlowlorisV6 => "slowloris-v6",
            Scenario::SearchOverload => "search-overload",
            Scenario::FlashCrowd => "flash-crowd",
            Scenario::FlashCrowdOverload => "flash-crowd-overload",
            Scenario::Growth => "growth",
            Scenario::SmallSite => "small-site",
            Scenario::MixedClients => "mixed-clients",
            Scenario::DiverseBotnet => "diverse-botnet",
            Scenario::SpoofedBrowser => "spoofed-browser",
            Scenario::PerfectBrowser => "perfect-browser",
        }
    }

    /// The scenario's phases at `scale` (`--duration`).
    fn phases(self, scale: f64) -> Phases {
        let s = |ms: u64| Duration::from_millis(ms).mul_f64(scale);
        let (baseline, attack, tail, ramp) = match self {
            Scenario::SearchOverload => (s(1_500).max(KNOWN_GOOD_BASELINE), s(3_000), 0, 0),
            Scenario::SingleFlood
            | Scenario::Botnet
            | Scenario::MimicBotnet
            | Scenario::Ipv6Rotation
            | Scenario::Slowloris => (s(1_500), s(3_000), 0, 0),
            // Long enough for every deadline to have fired several times.
            Scenario::SlowlorisWide | Scenario::SlowlorisV6 => (s(1_500), s(30_000), 0, 0),
            // The crowd arrives over 10 s, then stays for 20 s.
            Scenario::FlashCrowd | Scenario::FlashCrowdOverload => (s(5_000), s(30_000), 0, 10_000),
            // Five times the shoppers after a minute, then 10 s more.
            Scenario::Growth => (s(5_000), s(70_000), 0, 60_000),
            Scenario::SmallSite => (s(5_000), s(15_000), 0, 0),
            Scenario::MixedClients => (s(5_000), s(20_000), 0, 0),
            // Then 15 s of shoppers alone: the guard's detection needs
            // about a second for its window to empty, then 10 s of calm to
            // end an attack.
            Scenario::DiverseBotnet | Scenario::SpoofedBrowser | Scenario::PerfectBrowser => {
                (s(5_000), s(15_000), 15_000, 0)
            }
        };
        Phases {
            baseline,
            attack,
            tail: s(tail),
            ramp: s(ramp),
        }
    }
}

/// A run's phases: the shoppers alone (`baseline`); the attack, or the
/// crowd's arrival and stay (`attack`), whose figures the table gives; the
/// shoppers alone again (`tail`), for the attack's end to show; and how
/// long a crowd takes to arrive (`ramp`, within `attack`).
#[derive(Clone, Copy, Debug)]
struct Phases {
    baseline: Duration,
    attack: Duration,
    tail: Duration,
    ramp: Duration,
}

impl Defence {
    fn name(self) -> &'static str {
        match self {
            Defence::None => "none",
            Defence::TowerGovernor => "tower-governor",
            Defence::Floodguard => "floodguard",
            Defence::FloodguardTuned => "floodguard-tuned",
        }
    }

    /// A floodguard shop (which `--console` serves a console for).
    fn is_floodguard(self) -> bool {
        matches!(self, Defence::Floodguard | Defence::FloodguardTuned)
    }
}

/// The search route's capacity calibration before and after a
/// search-overload run.
const CALIBRATION: Duration = Duration::from_millis(1_000);
/// The search overload's shortest baseline, whatever the scale: shoppers
/// need time to become known good (three good exchanges at their pace)
/// before it starts.
const KNOWN_GOOD_BASELINE: Duration = Duration::from_millis(1_500);

/// File descriptors the shop may hold, as a modest deployment would set.
pub const SHOP_FD_LIMIT: u32 = 8192;

struct Options {
    scenarios: Vec<Scenario>,
    defences: Vec<Defence>,
    scale: f64,
    json: Option<String>,
    /// `--svg PATH`, or `chart_path()`; `None` with `--no-svg`.
    svg: Option<String>,
    no_svg: bool,
    samples: Option<String>,
    check: bool,
    /// `--show`: print what the new shapes' clients send, and stop.
    show: bool,
    /// `--overload-limit`, `--overload-queue` and `--session`.
    overload: ShopTweaks,
    /// `--shared-cores`: no cores of their own for the shop and the load
    /// generator.
    shared_cores: bool,
}

fn parse_list<T: Copy>(
    arg: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Vec<T>, String> {
    arg.split(',')
        .map(|a| {
            all.iter()
                .copied()
                .find(|x| name(*x) == a.trim())
                .ok_or_else(|| {
                    format!(
                        "unknown {a:?}; one of {}",
                        all.iter().map(|x| name(*x)).collect::<Vec<_>>().join(", ")
                    )
                })
        })
        .collect()
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        scenarios: SCENARIOS.to_vec(),
        defences: DEFENCES.to_vec(),
        scale: 1.0,
        json: None,
        svg: None,
        no_svg: false,
        samples: None,
        check: false,
        show: false,
        overload: ShopTweaks::default(),
        shared_cores: false,
    };
    let mut scenario_given = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--scenario" => {
                o.scenarios = scenarios(&value()?)?;
                scenario_given = true;
            }
            "--defence" => o.defences = parse_list(&value()?, &DEFENCES, Defence::name)?,
            "--duration" => {
                o.scale = value()?
                    .parse()
                    .map_err(|_| "--duration takes a number".to_string())?;
                if !(0.1..=20.0).contains(&o.scale) {
                    return Err("--duration must be between 0.1 and 20".into());
                }
            }
            "--json" => o.json = Some(value()?),
            "--svg" => o.svg = Some(value()?),
            "--no-svg" => o.no_svg = true,
            "--samples" => o.samples = Some(value()?),
            "--check" => o.check = true,
            "--show" => o.show = true,
            "--console" => {
                let mut token = [0u8; 16];
                getrandom::fill(&mut token)
                    .map_err(|e| format!("--console: no random token: {e}"))?;
                o.overload.console = Some((CONSOLE_PORT, u128::from_le_bytes(token)));
            }
            "--shared-cores" => o.shared_cores = true,
            "--overload-limit" | "--overload-queue" => o.overload.set(&a, &value()?)?,
            "--session" => o.overload.session = true,
            "--without" => o.overload.set(&a, &value()?)?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.no_svg {
        o.svg = None;
    } else if o.svg.is_none() {
        o.svg = Some(chart_path());
    }
    if o.check {
        o.defences
            .retain(|d| matches!(d, Defence::None | Defence::Floodguard));
        o.scale = o.scale.min(0.4);
        if !scenario_given {
            o.scenarios.extend(CHECK_DETECTION);
        }
    }
    Ok(o)
}

/// `--scenario`'s list: names, and the groups `default` (the six attacks
/// floodguard was tuned on), `detection` (the eight shapes it was not),
/// `slow` (slowloris from many addresses) and `all`.
fn scenarios(arg: &str) -> Result<Vec<Scenario>, String> {
    let every: Vec<Scenario> = SCENARIOS
        .iter()
        .chain(&DETECTION)
        .chain(&SLOW)
        .copied()
        .collect();
    let mut out = Vec::new();
    for a in arg.split(',') {
        match a.trim() {
            "default" => out.extend(SCENARIOS),
            "detection" => out.extend(DETECTION),
            "slow" => out.extend(SLOW),
            "all" => out.extend(&every),
            one => out.extend(
                parse_list(one, &every, Scenario::name)
                    .map_err(|e| format!("{e}; or a group: default, detection, slow, all"))?,
            ),
        }
    }
    Ok(out)
}

impl ShopTweaks {
    /// Takes `--overload-limit N`, `--overload-queue CAPACITY,MS` or
    /// `--session on`.
    fn set(&mut self, flag: &str, value: &str) -> Result<(), String> {
        let number = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
        };
        match flag {
            "--session" => self.session = value == "on",
            "--console" => {
                let (port, token) = value
                    .split_once(':')
                    .and_then(|(p, t)| Some((p.parse().ok()?, u128::from_str_radix(t, 16).ok()?)))
                    .ok_or("--console takes PORT:TOKEN (32 hex digits)")?;
                self.console = Some((port, token));
            }
            "--without" => {
                for name in value.split(',').filter(|n| !n.is_empty()) {
                    let i = shop::SIGNALS
                        .iter()
                        .position(|(n, _)| *n == name.trim())
                        .ok_or_else(|| {
                            let names: Vec<&str> = shop::SIGNALS.iter().map(|(n, _)| *n).collect();
                            format!(
                                "--without: unknown signal {name:?}; one of {}",
                                names.join(", ")
                            )
                        })?;
                    self.without |= 1 << i;
                }
            }
            "--overload-limit" => {
                let n =
                    number(value).ok_or("--overload-limit takes a whole number from 1 to 10000")?;
                self.limit = Some(n);
            }
            _ => {
                let queue = value
                    .split_once(',')
                    .and_then(|(c, ms)| {
                        Some((
                            number(c)? as usize,
                            Duration::from_millis(number(ms)?.into()),
                        ))
                    })
                    .ok_or("--overload-queue takes CAPACITY,MS (each from 1 to 10000)")?;
                self.queue = Some(queue);
            }
        }
        Ok(())
    }

    /// The same flags, for the shop's command line.
    fn args(&self) -> String {
        let mut args = String::new();
        if let Some(n) = self.limit {
            args += &format!(" --overload-limit {n}");
        }
        if let Some((capacity, timeout)) = self.queue {
            args += &format!(" --overload-queue {capacity},{}", timeout.as_millis());
        }
        if self.session {
            args += " --session on";
        }
        if let Some((port, token)) = self.console {
            args += &format!(" --console {port}:{token:032x}");
        }
        if self.without != 0 {
            let names: Vec<&str> = shop::SIGNALS
                .iter()
                .enumerate()
                .filter(|(i, _)| self.without & (1 << i) != 0)
                .map(|(_, (n, _))| *n)
                .collect();
            args += &format!(" --without {}", names.join(","));
        }
        args
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let defence = parse_list(
            args.get(2).map_or("", String::as_str),
            &DEFENCES,
            Defence::name,
        )?;
        let mut tweaks = ShopTweaks::default();
        for pair in args.get(3..).unwrap_or_default().chunks(2) {
            match pair {
                [flag, value] if flag == "--cpus" => {
                    let cpus = cpus::parse(value).ok_or("--cpus takes core numbers")?;
                    cpus::pin(&cpus)?;
                }
                [flag, value] => tweaks.set(flag, value)?,
                _ => return Err(format!("--serve: {pair:?} has no value").into()),
            }
        }
        return shop::serve(defence[0], tweaks);
    }
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("flood: {e}");
            }
            eprintln!(
                "usage: flood [--scenario a,b] [--defence x,y] [--duration F] [--json PATH] [--svg PATH | --no-svg] [--samples PATH] [--overload-limit N] [--overload-queue CAPACITY,MS] [--session] [--without SIGNAL,…] [--shared-cores] [--console] [--check] [--show]"
            );
            std::process::exit(2);
        }
    };
    // The captured heads and each scenario's traffic plan, before any
    // shop starts: a missing capture is an error now, not after minutes.
    let heads = if o.scenarios.iter().any(|s| s.needs_heads()) {
        match heads::Heads::load() {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("flood: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let mut plans = std::collections::HashMap::new();
    for &s in &o.scenarios {
        match Plan::of(s, heads.as_ref()) {
            Ok(plan) => {
                plans.insert(s, plan.map(std::sync::Arc::new));
            }
            Err(e) => {
                eprintln!("flood: {}: {e}", s.name());
                std::process::exit(2);
            }
        }
    }
    if o.show {
        // What each scenario's new clients send, for a shop on port 8080.
        for &s in &o.scenarios {
            let Some(Some(plan)) = plans.get(&s) else {
                continue;
            };
            println!("==== {}", s.name());
            for request in plan.show(8080) {
                println!(
                    "{}",
                    String::from_utf8_lossy(&request).replace("\r\n", "⏎\n")
                );
            }
        }
        return Ok(());
    }
    if o.scenarios.contains(&Scenario::SlowlorisV6) {
        if let Err(e) = route_v6_loopback() {
            eprintln!(
                "flood: slowloris-v6 needs {}/64 routed to loopback: {e}",
                traffic::SLOW_V6_NET
            );
            std::process::exit(2);
        }
    }
    let run_time: Duration = o
        .scenarios
        .iter()
        .map(|s| {
            let p = s.phases(o.scale);
            p.baseline + p.attack + p.tail
        })
        .sum::<Duration>()
        * o.defences.len() as u32;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Before any thread starts: the runtimes' threads keep the
    // load generator's cores.
    let shop_cpus = if o.shared_cores {
        None
    } else {
        cpus::split(&cpus::allowed()).and_then(|(shop, generator)| match cpus::pin(&generator) {
            Ok(()) => Some((shop, generator)),
            Err(e) => {
                eprintln!(
                    "flood: cannot keep cores apart ({e}); shop and load generator share them"
                );
                None
            }
        })
    };
    eprintln!(
        "flood: {} scenarios × {} defences, {:.0} s of traffic in all, {cores} cores{}",
        o.scenarios.len(),
        o.defences.len(),
        run_time.as_secs_f64(),
        shop_cpus.as_ref().map_or_else(
            || " shared by shop and load generator".to_string(),
            |(shop, generator)| format!(
                " (shop on {}, load generator on {})",
                cpus::list(shop),
                cpus::list(generator)
            )
        )
    );
    let shop_cpus = shop_cpus.map(|(shop, _)| shop);
    if o.overload.limit.is_some()
        || o.overload.queue.is_some()
        || o.overload.session
        || o.overload.without != 0
    {
        eprintln!("flood: floodguard's shop changed:{}", o.overload.args());
    }
    // Shoppers and attackers on runtimes of their own: the operating system
    // shares the cores between them, but no attack task ever waits in
    // front of a shopper's in one task queue.
    let shoppers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let attackers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    eprint!("{LEGEND}");
    if let Some((port, token)) = o.overload.console {
        eprintln!(
            "console: while a floodguard run goes, http://127.0.0.1:{port}/?token={token:032x} shows its shop live\n\
             \x20        (each run starts a new shop: open the link again when the page says its session ended)\n"
        );
    }
    let mut results = Vec::new();
    let mut unhealthy = 0;
    // Floodguard runs whose console answered, of those that had one.
    let mut consoles = (0, 0);
    for &scenario in &o.scenarios {
        for &defence in &o.defences {
            let shop = (defence, o.overload, shop_cpus.as_deref());
            let plan = plans.get(&scenario).cloned().flatten();
            let probe =
                o.overload
                    .console
                    .filter(|_| defence.is_floodguard())
                    .map(|(port, token)| {
                        attackers.spawn(console_probe::answers(
                            port,
                            token,
                            Duration::from_secs(10),
                        ))
                    });
            let run = run((scenario, plan), shop, o.scale, attackers.handle());
            let r = shoppers.block_on(run)?;
            if let Some(probe) = probe {
                consoles.1 += 1;
                consoles.0 += u32::from(shoppers.block_on(probe).unwrap_or(false));
            }
            let c = &r.confusion;
            let attack = if r.attack_sent == 0 {
                format!(
                    "no attack; {} of {} people banned",
                    c.legit_banned, c.legit_clients
                )
            } else {
                format!(
                    "attack admitted {:>5.1}%; bots banned {}, held {}, missed {}",
                    r.attack_admitted_share * 100.0,
                    c.bots_banned,
                    c.bots_held,
                    c.bots_missed
                )
            };
            eprintln!(
                "  {:<20} {:<17} legit {:>6.2}% ok, p99 {:>7.1} ms ({:.1}× no-attack), {attack}",
                scenario.name(),
                defence.name(),
                r.legit_success * 100.0,
                r.legit_p99_ms,
                r.p99_vs_baseline,
            );
            if let Some(why) = baseline_trouble(&r) {
                unhealthy += 1;
                eprintln!("  ! unhealthy no-attack baseline: {why}");
            }
            results.push(r);
        }
    }
    println!("\n{}", report::table(&results));
    println!("{}", report::confusion_table(&results));
    println!("{}", report::connections_table(&results));
    if results.iter().any(|r| r.goodput.is_some()) {
        println!("{}", report::search_table(&results));
    }
    if results.iter().any(|r| !r.failures.is_empty()) {
        println!("{}", report::failure_table(&results));
    }
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(path) = &o.json {
        std::fs::write(path, &json)?;
        eprintln!("wrote {path}");
    }
    if let Some(path) = &o.samples {
        std::fs::write(path, report::samples_csv(&results))?;
        eprintln!("wrote {path}");
    }
    if let Some(path) = &o.svg {
        report::svg(&results, path)?;
        eprintln!(
            "chart: {path} (legitimate success and p99 over time; --svg PATH elsewhere, --no-svg for none)"
        );
    }
    if unhealthy > 0 {
        eprintln!("{}", baseline_warning(unhealthy, results.len(), cores));
    }
    if consoles.1 > 0 {
        eprintln!(
            "console: signed in and read the state during {} of {} floodguard runs",
            consoles.0, consoles.1
        );
        if o.check && consoles.0 < consoles.1 {
            return Err("flood --check: a floodguard run's console did not answer".into());
        }
    }
    if o.check {
        check(&results, &json)?;
        eprintln!("flood --check: ok");
    }
    Ok(())
}

/// What the per-run lines say, printed before the first.
const LEGEND: &str = "\
flood: one line per run (a scenario against a defence, in a fresh shop); full tables after the last
  legit ok                  shoppers' requests started during the attack that got a 2xx within 5 s
  p99 (N× no-attack)        shoppers' 99th-percentile latency during the attack, and its ratio to
                            the same run's p99 before the attack (the no-attack baseline)
  attack admitted           attack requests that reached the shop's handlers, of those sent
                            (slowloris: connection-seconds held open)
  bots banned, held, missed attacking clients banned; held back (refused twice or more since
                            their last 2xx, or never served); neither
  N of M people banned      runs without an attack: legitimate clients banned (false alarms)
";

/// The no-attack baseline counts as unhealthy when the shoppers, before
/// any attack, get fewer than this share of 2xx answers…
const BASELINE_MIN_OK: f64 = 0.99;
/// …or a p99 above this. On the project's idle 2-core VM the shoppers'
/// p99 before the attack is about 5 ms (the search costs about one
/// millisecond of CPU); five times that means something else holds the
/// cores, and every "× no-attack" ratio of that run is measured against a
/// slow shop.
const BASELINE_MAX_P99_MS: f64 = 25.0;

/// Why this run's no-attack baseline is not to be trusted, if it is not.
fn baseline_trouble(r: &RunResult) -> Option<String> {
    if r.baseline_requests == 0 {
        return Some("no shopper request started before the attack".into());
    }
    let mut why = Vec::new();
    if r.baseline_success < BASELINE_MIN_OK {
        why.push(format!(
            "only {:.1}% of the shoppers' {} requests got a 2xx with no attack running (rule: at least {:.0}%)",
            r.baseline_success * 100.0,
            r.baseline_requests,
            BASELINE_MIN_OK * 100.0
        ));
    }
    if r.baseline_p99_ms > BASELINE_MAX_P99_MS {
        why.push(format!(
            "shoppers' p99 {:.1} ms with no attack running (rule: at most {BASELINE_MAX_P99_MS:.0} ms)",
            r.baseline_p99_ms
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The closing warning when some runs' baselines were unhealthy.
fn baseline_warning(unhealthy: usize, runs: usize, cores: usize) -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .map(|l| format!(" (load average now {l} on {cores} cores)"))
        .unwrap_or_default();
    format!(
        "warning: {unhealthy} of {runs} runs (marked !) had an unhealthy no-attack baseline: before\n\
         \x20        any attack, the shoppers' p99 was above {BASELINE_MAX_P99_MS:.0} ms or under {:.0}% of\n\
         \x20        their requests got a 2xx. This machine looks busy{load}: those runs'\n\
         \x20        figures, their \"× no-attack\" ratios above all, say more about the machine\n\
         \x20        than about the defences. Close other load (builds, browsers, benchmarks) and run\n\
         \x20        again; if something else holds one core, --shared-cores lets the shop and the\n\
         \x20        load generator use every core instead of half each.",
        BASELINE_MIN_OK * 100.0
    )
}

/// Where the chart goes without `--svg`: `flood.svg` in the target
/// directory this program was built in (`target/` for `cargo run`, or
/// `CARGO_TARGET_DIR`), as a path from the current directory when it is
/// below it; `flood.svg` here when the program runs from elsewhere.
fn chart_path() -> String {
    let target = std::env::current_exe().ok().and_then(|exe| {
        let profile_dir = exe.parent()?;
        matches!(profile_dir.file_name()?.to_str()?, "release" | "debug")
            .then(|| profile_dir.parent().map(|t| t.join("flood.svg")))
            .flatten()
    });
    let Some(path) = target else {
        return "flood.svg".into();
    };
    std::env::current_dir()
        .ok()
        .and_then(|here| {
            path.strip_prefix(here)
                .ok()
                .map(|p| p.display().to_string())
        })
        .unwrap_or_else(|| path.display().to_string())
}

/// One scenario (and its traffic plan, for the shapes of `shapes`)
/// against one defence, in a fresh shop process.
async fn run(
    (scenario, plan): (Scenario, Option<std::sync::Arc<Plan>>),
    (defence, overload, cpus): (Defence, ShopTweaks, Option<&[usize]>),
    scale: f64,
    attackers: &tokio::runtime::Handle,
) -> Result<RunResult, Box<dyn std::error::Error>> {
    let phases = scenario.phases(scale);
    let (baseline, attack) = (phases.baseline, phases.attack);
    let Shop {
        mut child,
        ports: (port, calibration_port, port_v6),
        output,
    } = spawn_shop(defence, overload, cpus)?;
    let shop = SocketAddr::from(([127, 0, 0, 1], port));
    // The search route's capacity, for the search overload's goodput:
    // measured on the same shop process without its defence, with nothing
    // else running, before the run and again after it; the higher of the
    // two counts (this VM's other work can only lower a measurement).
    let search = scenario == Scenario::SearchOverload;
    let calibration = SocketAddr::from(([127, 0, 0, 1], calibration_port));
    let calibrate = || traffic::calibrate(calibration, CALIBRATION.mul_f64(scale));
    let mut capacity = if search {
        let rps = calibrate().await;
        // Let the sockets settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some(rps)
    } else {
        None
    };
    let pid = child.id().to_string();
    // The shop's CPU is counted from here: the calibration is not the run's.
    let cpu_at_start = procfs::cpu_seconds(&pid);
    let rec = Recorder::new(baseline + attack + phases.tail);
    let attack_at = rec.start + baseline;
    let attack_stop = attack_at + attack;
    // Shoppers go on through the tail.
    let stop = attack_stop + phases.tail;
    let mut set = JoinSet::new();
    let shoppers = if scenario == Scenario::SmallSite {
        0..shapes::SMALL_SITE.0
    } else {
        0..traffic::SHOPPERS
    };
    traffic::shoppers(&mut set, shop, &rec, shoppers, (rec.start, stop));
    tokio::time::sleep_until(attack_at.into()).await;
    let cpu_at_attack = (procfs::cpu_seconds(&pid), procfs::cpu_seconds("self"));
    traffic::attack(
        &mut set,
        attackers,
        (scenario, capacity),
        (shop, port_v6),
        &rec,
        attack_stop,
    );
    traffic::fresh_visitors(&mut set, shop, &rec, attack_stop);
    // The shop's open descriptors, sampled through the attack.
    let fds = {
        let pid = pid.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while Instant::now() < attack_stop {
                peak = peak.max(procfs::open_fds(&pid));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    if let Some(plan) = &plan {
        let shape = Shape {
            shop,
            rec: std::sync::Arc::clone(&rec),
            start: attack_at,
            attack_stop,
            stop,
            ramp: phases.ramp,
        };
        plan.start(&mut set, attackers, &shape);
    }
    // Every task stops at `stop`; a stuck exchange is cut off by its own
    // timeout, and the whole set by this bound, counted from `stop` (not
    // from now: with a long `--duration` it cut the attack short).
    let drain = tokio::time::timeout_at((stop + Duration::from_secs(8)).into(), async {
        while set.join_next().await.is_some() {}
    });
    if drain.await.is_err() {
        set.abort_all();
    }
    let cpu_at_end = procfs::cpu_seconds(&pid);
    let server = report::Usage {
        peak_fds: fds.await.unwrap_or(0),
        peak_rss_mb: procfs::peak_rss_mib(&pid),
        cpu_s: cpu_at_end - cpu_at_start,
        attack_cpu_s: cpu_at_end - cpu_at_attack.0,
        generator_attack_cpu_s: procfs::cpu_seconds("self") - cpu_at_attack.1,
    };
    if let Some(before) = capacity {
        tokio::time::sleep(Duration::from_millis(300)).await;
        capacity = Some(before.max(calibrate().await));
    }
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(2);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let output = output.join().unwrap_or_default();
    Ok(report::summarise(
        scenario,
        defence,
        &rec,
        (baseline, baseline + attack, baseline + attack + phases.tail),
        server,
        &output,
        capacity,
    ))
}

/// What the shop reports as it runs: its guard's events and limits.
type OutputReader = std::thread::JoinHandle<report::ShopOutput>;

/// A shop process: its ports (the shop's, the bare calibration one's, and
/// the shop's on `[::1]`) and the thread that collects its output.
struct Shop {
    child: Child,
    ports: (u16, u16, u16),
    output: OutputReader,
}

/// Starts this program as the shop behind `defence` (on `cpus`, if
/// given), with a file descriptor limit a modest deployment would have,
/// reads its ports (the shop's and the calibration one's), and collects
/// what it prints until it exits.
fn spawn_shop(
    defence: Defence,
    overload: ShopTweaks,
    cpus: Option<&[usize]>,
) -> Result<Shop, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut fixed = overload.args();
    if let Some(cpus) = cpus {
        fixed += &format!(" --cpus {}", cpus::list(cpus));
    }
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {SHOP_FD_LIMIT} && exec \"$0\" --serve {}{fixed}",
            defence.name()
        ))
        .arg(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let ports = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| {
            let mut ports = p.split(' ').map(|n| n.parse().ok());
            Some((ports.next()??, ports.next()??, ports.next()??))
        })
        .ok_or_else(|| format!("shop did not start: {line:?}"))?;
    let output = std::thread::spawn(move || {
        let mut out = report::ShopOutput::default();
        for l in stdout.lines().map_while(Result::ok) {
            out.add(&l);
        }
        out
    });
    Ok(Shop {
        child,
        ports,
        output,
    })
}

/// Routes the IPv6 slowloris's /64 to loopback, so that its addresses can
/// connect to the shop on `[::1]` (Linux, as root or with `CAP_NET_ADMIN`).
fn route_v6_loopback() -> Result<(), String> {
    let net = format!("{}/64", traffic::SLOW_V6_NET);
    let out = Command::new("ip")
        .args(["-6", "route", "replace", "local", &net, "dev", "lo"])
        .output()
        .map_err(|e| format!("cannot run `ip` ({e})"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip -6 route replace local {net} dev lo` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `--check`: the harness checks itself (no performance thresholds).
fn check(results: &[RunResult], json: &str) -> Result<(), Box<dyn std::error::Error>> {
    let parsed: serde_json::Value = serde_json::from_str(json)?;
    let runs = parsed.as_array().ok_or("JSON is not a list of runs")?;
    if runs.len() != results.len() {
        return Err("JSON lost runs".into());
    }
    for r in results {
        let label = format!("{} / {}", r.scenario.name(), r.defence.name());
        let sum = |f: fn(&report::Bucket) -> u64| r.timeline.iter().map(f).sum::<u64>();
        if r.legit_ok > r.legit_requests || r.attack_admitted > r.attack_sent {
            return Err(format!("{label}: more successes than requests").into());
        }
        if sum(|b| b.attack_sent) != r.attack_sent
            || sum(|b| b.attack_admitted) != r.attack_admitted
        {
            return Err(format!("{label}: timeline does not add up to the totals").into());
        }
        if r.legit_requests == 0 || r.baseline_p99_ms.is_nan() {
            return Err(format!("{label}: shoppers sent nothing").into());
        }
        check_confusion(r).map_err(|e| format!("{label}: {e}"))?;
        if !(r.server_cpu_s > 0.0 && r.server_peak_rss_mb > 0.0) {
            return Err(format!("{label}: server usage not measured").into());
        }
        let failed: u64 = r.failures.iter().map(|f| f.count).sum();
        if failed != r.legit_requests - r.legit_ok {
            return Err(format!("{label}: failures by reason do not add up").into());
        }
        if r.scenario.all_legit() {
            // No attack: nothing else to check. The guard may well ban,
            // throttle or refuse these people: that is what the scenario
            // measures, not a fault of the harness.
            continue;
        }
        if r.attack_sent == 0 {
            return Err(format!("{label}: the attack sent nothing").into());
        }
        // With no defence, every attack must hurt: most of it served, or
        // shoppers' p99 at least 5× its no-attack value, or under 90% of
        // them served (a botnet whose requests queue past their timeout
        // is served little and hurts a lot).
        let hurts =
            r.attack_admitted_share >= 0.5 || r.p99_vs_baseline >= 5.0 || r.legit_success < 0.9;
        if r.defence == Defence::None && !hurts {
            return Err(format!(
                "{label}: with no defence the attack does no harm ({:.0}% got through, \
                 p99 {:.1}× no-attack, {:.0}% of shoppers served)",
                r.attack_admitted_share * 100.0,
                r.p99_vs_baseline,
                r.legit_success * 100.0
            )
            .into());
        }
        // The attacks floodguard was tuned on must not cost a shopper a
        // ban; the new shapes measure whether they do.
        if SCENARIOS.contains(&r.scenario) && r.legit_banned > 0 {
            return Err(format!("{label}: {} shoppers banned", r.legit_banned).into());
        }
        if r.scenario == Scenario::SearchOverload {
            check_search_overload(r).map_err(|e| format!("{label}: {e}"))?;
        }
    }
    Ok(())
}

/// The client-by-client counts add up, and a scoring guard told the
/// load generator what it did (`x-fg-action`).
fn check_confusion(r: &RunResult) -> Result<(), String> {
    let c = &r.confusion;
    let legit = [
        c.legit_banned,
        c.legit_throttled,
        c.legit_challenged,
        c.legit_refused_clients,
    ];
    if c.legit_clients == 0 || legit.iter().any(|&n| n > c.legit_clients) {
        return Err(format!("legitimate client counts {c:?}"));
    }
    let refused: u64 = c.legit_refused.iter().sum();
    if refused > r.legit_requests - r.legit_ok {
        return Err(format!(
            "{refused} legitimate refusals, more than the failures"
        ));
    }
    if c.bots_banned + c.bots_held + c.bots_missed != c.bots {
        return Err(format!("bot counts {c:?} do not add up"));
    }
    if (c.bots == 0) != r.scenario.all_legit() {
        return Err(format!("{} bots", c.bots));
    }
    let scoring = matches!(r.defence, Defence::Floodguard | Defence::FloodguardTuned);
    let told = r.samples.iter().any(|s| s.action.is_some());
    if scoring && r.legit_ok > 0 && !told {
        return Err("the shop never said what scoring did (x-fg-action)".into());
    }
    if !scoring && told {
        return Err("x-fg-action from a shop without scoring".into());
    }
    Ok(())
}

/// The search overload's own figures are there and make sense.
fn check_search_overload(r: &RunResult) -> Result<(), String> {
    let g = r.goodput.ok_or("no goodput")?;
    // Served searches over the route's capacity: more than none, and not
    // far above what the route can serve (some slack for a calibration
    // this VM's other work slowed).
    if !(g.capacity_rps > 0.0 && g.ratio > 0.0 && g.ratio <= 2.0) {
        return Err(format!("goodput {g:?} not in (0, 2]"));
    }
    let k = r.known_good.ok_or("no known-good figures")?;
    if k.shoppers == 0 || k.requests == 0 || k.ok > k.requests || k.p99_ms.is_nan() {
        return Err(format!("known-good figures {k:?}"));
    }
    let shed = r.shed_latency.ok_or("no shed latencies")?;
    if matches!(r.defence, Defence::Floodguard | Defence::FloodguardTuned) {
        // The shop reports its limits every 100 ms while it runs, the
        // search route's among them, and times what it sheds.
        let search: Vec<_> = r
            .limit_trace
            .iter()
            .filter(|l| l.route == "/search")
            .collect();
        let run_ms = r.timeline.len() as u64 * traffic::BUCKET.as_millis() as u64;
        if search.len() * 200 < run_ms as usize || search.iter().any(|l| l.limit == 0) {
            return Err(format!(
                "limit trace of /search has {} reports",
                search.len()
            ));
        }
        let server = shed
            .server
            .ok_or("the shop did not report its shed timing")?;
        let shed_by_limits = search.last().map_or(0, |l| l.shed_total);
        if server.count > 0 && !(server.p50_us > 0.0 && server.p50_us <= server.p99_us) {
            return Err(format!("shed timing {server:?}"));
        }
        if shed_by_limits > 0 && server.count == 0 {
            return Err("the limit shed searches but the shop timed no 503".into());
        }
    }
    Ok(())
}
