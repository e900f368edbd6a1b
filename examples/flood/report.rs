//! Figures of one run, the table, the JSON and the SVG chart.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::traffic::{BUCKET, Recorder};
use crate::{Defence, Scenario};

/// How long after the attack starts the "settled" p99 begins.
const SETTLE: Duration = Duration::from_secs(1);

/// A timeline bucket of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    pub t_ms: u64,
    pub legit_total: u64,
    pub legit_ok: u64,
    pub legit_p99_ms: Option<f64>,
    pub attack_sent: u64,
    pub attack_admitted: u64,
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

    /// Whether the client is one of the legitimate shoppers (127.20.x.1).
    fn is_shopper(&self) -> bool {
        self.client.starts_with("127.20.")
    }
}

/// Everything measured for one (scenario, defence) run.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub scenario: Scenario,
    pub defence: Defence,
    /// Legitimate requests started during the attack phase, and how many
    /// got a 2xx.
    pub legit_requests: u64,
    pub legit_ok: u64,
    pub legit_success: f64,
    pub legit_p50_ms: f64,
    pub legit_p99_ms: f64,
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
    pub server_cpu_s: f64,
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
    pub events: Vec<ShopEvent>,
    pub timeline: Vec<Bucket>,
}

/// Computes a run's figures from what its traffic recorded.
pub fn summarise(
    scenario: Scenario,
    defence: Defence,
    rec: &Recorder,
    attack_start: Duration,
    end: Duration,
    server: (f64, f64),
    events: &[ShopEvent],
) -> RunResult {
    let attack_unix_ms = rec.start_unix_ms + attack_start.as_millis() as u64;
    let started: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "attack-started")
        .map(|e| e.unix_ms)
        .collect();
    let banned = events.iter().filter(|e| e.kind == "client-banned");
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

    let buckets = (end.as_millis() / BUCKET.as_millis()) as usize;
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
        });
    }
    let first = (attack_start.as_millis() / BUCKET.as_millis()) as usize;
    let detected_after_ms = started
        .iter()
        .find(|&&t| t >= attack_unix_ms)
        .map(|t| t - attack_unix_ms);
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
    RunResult {
        scenario,
        defence,
        legit_requests: in_attack.len() as u64,
        legit_ok: ok,
        legit_success: ratio(ok, in_attack.len() as u64),
        legit_p50_ms: quantile(&attack_lat, 0.5),
        legit_p99_ms: legit_p99,
        baseline_p99_ms: baseline_p99,
        p99_vs_baseline: legit_p99 / baseline_p99,
        settled_p99_ms: settled_p99,
        settled_vs_baseline: settled_p99 / baseline_p99,
        attack_sent,
        attack_admitted,
        attack_admitted_share: ratio(attack_admitted, attack_sent),
        time_to_block_ms: time_to_block(&timeline[first.min(timeline.len())..]),
        server_peak_rss_mb: server.0,
        server_cpu_s: server.1,
        detected_after_ms,
        admitted_after_detection,
        false_alarms: started.iter().filter(|&&t| t < attack_unix_ms).count() as u64,
        bans: banned.clone().count() as u64,
        legit_banned: banned.filter(|e| e.is_shopper()).count() as u64,
        events: events.to_vec(),
        timeline,
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
        "| scenario | defence | legit ok | legit p50 ms | legit p99 ms | p99 vs no attack | p99 after 1 s vs no attack | attack admitted | blocked after | detected after | admitted after detection | bans (legit) | server RSS MB | server CPU s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {:.2}% | {:.1} | {:.1} | {:.1}× | {:.1}× | {:.1}% | {} | {} | {} | {} ({}) | {:.0} | {:.1} |\n",
            r.scenario.name(),
            r.defence.name(),
            r.legit_success * 100.0,
            r.legit_p50_ms,
            r.legit_p99_ms,
            r.p99_vs_baseline,
            r.settled_vs_baseline,
            r.attack_admitted_share * 100.0,
            r.time_to_block_ms
                .map_or("never".into(), |t| format!("{:.1} s", t as f64 / 1e3)),
            r.detected_after_ms
                .map_or("-".into(), |t| format!("{:.1} s", t as f64 / 1e3)),
            r.admitted_after_detection
                .map_or("-".into(), |a| format!("{:.1}%", a * 100.0)),
            r.bans,
            r.legit_banned,
            r.server_peak_rss_mb,
            r.server_cpu_s,
        ));
    }
    out
}

/// Draws legitimate success and p99 over time, one row per scenario, one
/// line per defence.
pub fn svg(
    results: &[RunResult],
    path: &str,
    attack_start: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let scenarios: Vec<Scenario> = {
        let mut s: Vec<Scenario> = results.iter().map(|r| r.scenario).collect();
        s.dedup();
        s
    };
    let root = SVGBackend::new(path, (1200, 260 * scenarios.len() as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        "floodguard flood harness: legitimate shoppers during each attack (attack starts at the dashed line)",
        ("sans-serif", 18),
    )?;
    let rows = body.split_evenly((scenarios.len(), 2));
    let colours = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    let end_s = results
        .iter()
        .flat_map(|r| r.timeline.last())
        .map(|b| (b.t_ms + BUCKET.as_millis() as u64) as f64 / 1e3)
        .fold(1.0, f64::max);
    let start_s = attack_start.as_secs_f64();
    for (row, scenario) in scenarios.iter().enumerate() {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.scenario == *scenario).collect();
        let max_p99 = runs
            .iter()
            .flat_map(|r| r.timeline.iter().filter_map(|b| b.legit_p99_ms))
            .fold(1.0, f64::max);
        for (col, (label, y_max)) in [("legit success %", 105.0), ("legit p99 ms", max_p99 * 1.1)]
            .into_iter()
            .enumerate()
        {
            let area = &rows[row * 2 + col];
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{}: {label}", scenario.name()), ("sans-serif", 14))
                .margin(6)
                .x_label_area_size(24)
                .y_label_area_size(44)
                .build_cartesian_2d(0f64..end_s, 0f64..y_max)?;
            chart
                .configure_mesh()
                .x_desc("s")
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            chart.draw_series(DashedLineSeries::new(
                vec![(start_s, 0.0), (start_s, y_max)],
                4,
                4,
                BLACK.mix(0.5).stroke_width(1),
            ))?;
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
    root.present()?;
    Ok(())
}
