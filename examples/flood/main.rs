//! The flood harness: legitimate shoppers and an attack against an axum
//! shop on loopback, for every scenario and defence, in one run.
//!
//! ```text
//! cargo run --release --example flood --features axum            # everything, about 2 minutes
//! cargo run --release --example flood --features axum -- --scenario botnet --defence floodguard
//! cargo run --release --example flood --features axum -- --json flood.json --svg flood.svg
//! cargo run --release --example flood --features axum -- --check # CI: checks the harness itself
//! ```
//!
//! Each run starts a fresh shop in its own process (this program run with
//! `--serve <defence>`), lets 200 shoppers browse for a while (the no-attack
//! baseline), then starts the attack while they go on. Traffic goes only to
//! 127.0.0.1, from many 127.x.y.z source addresses; every loop stops at the
//! run's deadline.
//!
//! Options: `--scenario a,b` and `--defence x,y` select a subset (names as
//! in the table); `--duration F` scales every phase by F; `--json PATH`
//! writes all figures and timelines; `--svg PATH` draws legitimate success
//! and p99 over time.

mod http1;
#[path = "../procfs/mod.rs"]
mod procfs;
mod report;
mod shop;
mod traffic;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use report::RunResult;
use traffic::Recorder;

/// An attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    SingleFlood,
    Botnet,
    MimicBotnet,
    Ipv6Rotation,
    Slowloris,
    SearchOverload,
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

const SCENARIOS: [Scenario; 6] = [
    Scenario::SingleFlood,
    Scenario::Botnet,
    Scenario::MimicBotnet,
    Scenario::Ipv6Rotation,
    Scenario::Slowloris,
    Scenario::SearchOverload,
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
            Scenario::SearchOverload => "search-overload",
        }
    }
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
}

/// Phases of one run at `--duration 1`.
const BASELINE: Duration = Duration::from_millis(1_500);
const ATTACK: Duration = Duration::from_millis(3_000);
/// File descriptors the shop may hold, as a modest deployment would set.
const SHOP_FD_LIMIT: u32 = 8192;

struct Options {
    scenarios: Vec<Scenario>,
    defences: Vec<Defence>,
    scale: f64,
    json: Option<String>,
    svg: Option<String>,
    check: bool,
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
        check: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--scenario" => o.scenarios = parse_list(&value()?, &SCENARIOS, Scenario::name)?,
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
            "--check" => o.check = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.check {
        o.defences
            .retain(|d| matches!(d, Defence::None | Defence::Floodguard));
        o.scale = o.scale.min(0.4);
    }
    Ok(o)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let defence = parse_list(
            args.get(2).map_or("", String::as_str),
            &DEFENCES,
            Defence::name,
        )?;
        return shop::serve(defence[0]);
    }
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("flood: {e}");
            }
            eprintln!(
                "usage: flood [--scenario a,b] [--defence x,y] [--duration F] [--json PATH] [--svg PATH] [--check]"
            );
            std::process::exit(2);
        }
    };
    let baseline = BASELINE.mul_f64(o.scale);
    let attack = ATTACK.mul_f64(o.scale);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "flood: {} scenarios × {} defences, {:.1} s baseline + {:.1} s attack each, {cores} cores",
        o.scenarios.len(),
        o.defences.len(),
        baseline.as_secs_f64(),
        attack.as_secs_f64()
    );
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
    let mut results = Vec::new();
    for &scenario in &o.scenarios {
        for &defence in &o.defences {
            let run = run(scenario, defence, baseline, attack, attackers.handle());
            let r = shoppers.block_on(run)?;
            eprintln!(
                "  {:<16} {:<17} legit {:>6.2}% ok, p99 {:>7.1} ms ({:.1}× no-attack), attack admitted {:>5.1}%",
                scenario.name(),
                defence.name(),
                r.legit_success * 100.0,
                r.legit_p99_ms,
                r.p99_vs_baseline,
                r.attack_admitted_share * 100.0
            );
            results.push(r);
        }
    }
    println!("\n{}", report::table(&results));
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(path) = &o.json {
        std::fs::write(path, &json)?;
        eprintln!("wrote {path}");
    }
    if let Some(path) = &o.svg {
        report::svg(&results, path, baseline)?;
        eprintln!("wrote {path}");
    }
    if o.check {
        check(&results, &json)?;
        eprintln!("flood --check: ok");
    }
    Ok(())
}

/// One scenario against one defence, in a fresh shop process.
async fn run(
    scenario: Scenario,
    defence: Defence,
    baseline: Duration,
    attack: Duration,
    attackers: &tokio::runtime::Handle,
) -> Result<RunResult, Box<dyn std::error::Error>> {
    let (mut child, port, events) = spawn_shop(defence)?;
    let shop = SocketAddr::from(([127, 0, 0, 1], port));
    let rec = Recorder::new(baseline + attack);
    let attack_at = rec.start + baseline;
    let stop = attack_at + attack;
    let mut set = JoinSet::new();
    traffic::shoppers(&mut set, shop, &rec, stop);
    tokio::time::sleep_until(attack_at.into()).await;
    traffic::attack(&mut set, attackers, scenario, shop, &rec, stop);
    // Every task stops at `stop`; a stuck exchange is cut off by its own
    // timeout, and the whole set by this bound.
    let drain = tokio::time::timeout(Duration::from_secs(8), async {
        while set.join_next().await.is_some() {}
    });
    if drain.await.is_err() {
        set.abort_all();
    }
    let server = server_usage(child.id());
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(2);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let events = events.join().unwrap_or_default();
    Ok(report::summarise(
        scenario,
        defence,
        &rec,
        baseline,
        baseline + attack,
        server,
        &events,
    ))
}

/// What the shop reports as it runs: the events of its guard.
type EventReader = std::thread::JoinHandle<Vec<report::ShopEvent>>;

/// Starts this program as the shop behind `defence`, with a file
/// descriptor limit a modest deployment would have, reads its port, and
/// collects the events it prints until it exits.
fn spawn_shop(defence: Defence) -> Result<(Child, u16, EventReader), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {SHOP_FD_LIMIT} && exec \"$0\" --serve {}",
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
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("shop did not start: {line:?}"))?;
    let events = std::thread::spawn(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| report::ShopEvent::parse(&l))
            .collect()
    });
    Ok((child, port, events))
}

/// The shop's peak RSS (MB) and CPU time (s) so far.
fn server_usage(pid: u32) -> (f64, f64) {
    let pid = pid.to_string();
    (procfs::peak_rss_mib(&pid), procfs::cpu_seconds(&pid))
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
        if !(r.server_cpu_s > 0.0 && r.server_peak_rss_mb > 0.0) {
            return Err(format!("{label}: server usage not measured").into());
        }
        if r.legit_banned > 0 {
            return Err(format!("{label}: {} shoppers banned", r.legit_banned).into());
        }
    }
    Ok(())
}
