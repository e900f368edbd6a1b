//! Requests per second and p99 latency of bare axum, axum + floodguard
//! (rules only; with client scoring; with scoring and overload protection)
//! and axum + tower_governor
//! with the same per-IP quota, loaded by `wrk` on loopback, interleaved in
//! one run.
//!
//! ```text
//! scripts/http_bench.sh [rounds] [seconds]   # installs wrk if missing, then runs this
//! cargo bench --all-features --bench http_bench -- <rounds> [seconds]
//! ```
//!
//! The script's defaults are 3 rounds of 4 s (about 4 minutes). A
//! `harness = false` bench: the `--bench` flag cargo adds is ignored, and
//! with no arguments (a bare `cargo bench`) it prints its usage and exits
//! rather than load both cores for minutes.
//!
//! Two cases: the limit is never hit (the cost of admitting), and the limit
//! is hit by nearly every request (the cost of refusing); each against two
//! handlers: `/hello` (a constant string, so the middleware's cost is all
//! there is to see) and `/page` (renders a 100-row HTML product list, a
//! stand-in for a handler that does some work). The server runs on one
//! Tokio worker thread in this process; `wrk` runs with one thread in its
//! own process, so each gets one of the two cores. Besides requests/s the
//! table gives the server's CPU time per request (user + system, from
//! /proc), which does not depend on whether wrk or the server is the
//! bottleneck. Each cell is the median over the rounds; ratios are to bare
//! axum with the same handler and case.

#[path = "../demo/src/procfs.rs"]
mod procfs;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use floodguard::http::{Guard, Overload, Rule, Scoring};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Contender {
    Bare,
    Floodguard,
    /// floodguard with the default client scoring on top of the rule.
    FloodguardScoring,
    /// ... and overload protection (per route) on top of that.
    FloodguardOverload,
    TowerGovernor,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Case {
    /// A quota no client reaches: every request is admitted and charged.
    Admit,
    /// One request a second: nearly every request is refused.
    Refuse,
}

const CONTENDERS: [Contender; 5] = [
    Contender::Bare,
    Contender::Floodguard,
    Contender::FloodguardScoring,
    Contender::FloodguardOverload,
    Contender::TowerGovernor,
];
const CASES: [Case; 2] = [Case::Admit, Case::Refuse];
const HANDLERS: [&str; 2] = ["/hello", "/page"];

/// A product list page: about 100 rows of formatted HTML.
async fn page() -> axum::response::Html<String> {
    use std::fmt::Write;
    let mut html = String::with_capacity(12 * 1024);
    html.push_str("<!doctype html><html><head><title>Shop</title></head><body><table>");
    for i in 0..100u32 {
        let price = f64::from(i * 37 % 1000) / 10.0 + 0.99;
        let stock = if i % 7 == 0 { "sold out" } else { "in stock" };
        let _ = write!(
            html,
            "<tr><td><a href=\"/product/{i}\">Product {i}</a></td><td>{price:.2} EUR</td><td>{stock}</td></tr>"
        );
    }
    html.push_str("</table></body></html>");
    axum::response::Html(html)
}

fn app(contender: Contender, case: Case) -> Router {
    let router = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .route("/page", get(page));
    // Same GCRA quota for both limiters: 1 per µs with a burst of a million
    // (never reached), or 1 a second with a burst of 1.
    let (per, burst) = match case {
        Case::Admit => (Duration::from_micros(1), 1_000_000),
        Case::Refuse => (Duration::from_secs(1), 1),
    };
    match contender {
        Contender::Bare => router,
        Contender::Floodguard | Contender::FloodguardScoring | Contender::FloodguardOverload => {
            // Refused connections stay open, as tower_governor's do, so both
            // measure the cost of answering a refusal over keep-alive (by
            // default floodguard closes them and lets the gate turn the
            // reconnects away, which no load generator's req/s can show).
            let mut builder = Guard::builder()
                .rule(Rule::per_ip("per-ip").gcra(1, per).burst(burst))
                .close_refused_connections(false);
            if contender != Contender::Floodguard {
                // Scoring bans a client that keeps pressing against a
                // rule; here the refusals are the measurement, so bans
                // are watched only.
                let mut ladder = floodguard::http::Ladder::default();
                ladder.shadow_ban = true;
                builder = builder.scoring(Scoring::new().ladder(ladder));
            }
            if contender == Contender::FloodguardOverload {
                builder = builder.overload(Overload::default().per_route());
            }
            router.layer(builder.build().expect("valid quota").layer())
        }
        Contender::TowerGovernor => {
            let config = GovernorConfigBuilder::default()
                .key_extractor(PeerIpKeyExtractor)
                .period(per)
                .burst_size(burst as u32)
                .finish()
                .expect("valid quota");
            router.layer(GovernorLayer::new(Arc::new(config)))
        }
    }
}

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    rps: f64,
    p99_ms: f64,
    refused_share: f64,
    /// Server CPU time per request, microseconds.
    cpu_us: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without the `--bench` that `cargo bench` adds.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(rounds), seconds, None) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!(
            "usage: http_bench <rounds> [seconds, 4] (scripts/http_bench.sh: 3 rounds of 4 s)"
        );
        if args.is_empty() {
            return Ok(());
        }
        std::process::exit(2);
    };
    let rounds: usize = rounds.parse()?;
    let seconds: u64 = seconds.map_or(Ok(4), |s| s.parse())?;
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!(
            "wrk not found: run scripts/http_bench.sh, which installs it (apt-get install wrk)"
        );
        std::process::exit(2);
    }
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let cells = HANDLERS.len() * CASES.len() * CONTENDERS.len();
    let cell = |h: usize, c: usize, k: usize| (h * CASES.len() + c) * CONTENDERS.len() + k;
    let mut results = vec![Vec::new(); cells];
    for round in 0..rounds {
        for (hi, &path) in HANDLERS.iter().enumerate() {
            for (ci, &case) in CASES.iter().enumerate() {
                for (ki, &contender) in CONTENDERS.iter().enumerate() {
                    let (addr, handle) = server.block_on(start(app(contender, case)))?;
                    let cpu_before = procfs::cpu_seconds("self");
                    let mut run = wrk(addr, path, seconds)?;
                    let cpu = procfs::cpu_seconds("self") - cpu_before;
                    handle.abort();
                    run.cpu_us = cpu * 1e6 / (run.rps * seconds as f64);
                    eprintln!(
                        "round {}: {path} {case:?} {contender:?}: {:.0} req/s, p99 {:.2} ms, \
                         {:.1} µs CPU/request, {:.1}% refused",
                        round + 1,
                        run.rps,
                        run.p99_ms,
                        run.cpu_us,
                        run.refused_share * 100.0
                    );
                    results[cell(hi, ci, ki)].push(run);
                }
            }
        }
    }
    println!(
        "\n| handler | case | contender | req/s | vs bare | CPU µs/req | vs bare | p99 ms | refused |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    for (hi, path) in HANDLERS.iter().enumerate() {
        for (ci, case) in CASES.iter().enumerate() {
            let bare = &results[cell(hi, ci, 0)];
            let (bare_rps, bare_cpu) = (median(bare, |r| r.rps), median(bare, |r| r.cpu_us));
            for (ki, contender) in CONTENDERS.iter().enumerate() {
                let runs = &results[cell(hi, ci, ki)];
                let (rps, cpu) = (median(runs, |r| r.rps), median(runs, |r| r.cpu_us));
                println!(
                    "| {path} | {case:?} | {contender:?} | {rps:.0} | {:.2}× | {cpu:.1} | {:.2}× | {:.2} | {:.1}% |",
                    rps / bare_rps,
                    cpu / bare_cpu,
                    median(runs, |r| r.p99_ms),
                    median(runs, |r| r.refused_share) * 100.0
                );
            }
        }
    }
    Ok(())
}

async fn start(app: Router) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, make).await;
    });
    Ok((addr, handle))
}

/// Runs wrk (1 thread, 32 keep-alive connections) against `addr`.
fn wrk(addr: SocketAddr, path: &str, seconds: u64) -> Result<Run, Box<dyn std::error::Error>> {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://{addr}{path}"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
    };
    let rps: f64 = field("Requests/sec:")
        .ok_or("no Requests/sec in wrk output")?
        .parse()?;
    let total: f64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().to_owned())
        })
        .ok_or("no request count in wrk output")?
        .parse()?;
    let refused: f64 = field("Non-2xx or 3xx responses:").map_or(Ok(0.0), |v| v.parse())?;
    let p99 = field("99%").ok_or("no 99% latency in wrk output")?;
    Ok(Run {
        rps,
        p99_ms: millis(&p99).ok_or_else(|| format!("bad latency {p99:?}"))?,
        refused_share: if total > 0.0 { refused / total } else { 0.0 },
        cpu_us: f64::NAN,
    })
}

/// wrk's latency text ("850.00us", "1.23ms", "2.00s") in milliseconds.
fn millis(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn median(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
