//! What the console's page polls: the guard's snapshot (bans capped), the
//! attack state said in words, the charts' series and the gate's counters.

use std::time::Duration;

use crate::http::{DetectionSnapshot, GateStats, Snapshot};

use super::events::Shown;
use super::history::Series;

/// Bans listed at most (the longest left first); the total is given too.
pub(super) const MAX_BANS_LISTED: usize = 500;

/// The page's view of the guard at one poll.
#[derive(Debug, serde::Serialize)]
pub(super) struct State {
    /// `under_attack`, `degraded`, `calm` or `unknown` (no scoring).
    pub(super) status: &'static str,
    /// Why, in a few sentences.
    pub(super) why: Vec<String>,
    /// The value actions must carry in `X-Floodguard-Csrf` (null for a
    /// bearer-token caller, who needs none).
    pub(super) csrf: Option<String>,
    pub(super) snapshot: Snapshot,
    /// Bans in force, of which `snapshot.bans` lists the longest-lasting.
    pub(super) bans_total: usize,
    pub(super) history: Series,
    pub(super) gate: Option<GateStats>,
    /// The latest events, newest first, when the console was given a log.
    pub(super) events: Option<Vec<Shown>>,
}

impl State {
    pub(super) fn new(
        mut snapshot: Snapshot,
        history: Series,
        gate: Option<GateStats>,
        csrf: Option<String>,
        events: Option<Vec<Shown>>,
    ) -> State {
        let (status, why) = verdict(&snapshot);
        let bans_total = snapshot.bans.len();
        snapshot
            .bans
            .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        snapshot.bans.truncate(MAX_BANS_LISTED);
        State {
            status,
            why,
            csrf,
            snapshot,
            bans_total,
            history,
            gate,
            events,
        }
    }
}

/// The attack state and why, in words.
pub(super) fn verdict(s: &Snapshot) -> (&'static str, Vec<String>) {
    let Some(d) = &s.detection else {
        return (
            "unknown",
            vec!["attack detection is off: build the guard with `.scoring(Scoring::new())`".into()],
        );
    };
    let mut why = Vec::new();
    let status = if d.under_attack {
        let since = d
            .attack_since
            .map(|t| s.now.saturating_duration_since(t))
            .unwrap_or_default();
        why.push(format!("under attack for {}", span(since)));
        "under_attack"
    } else if d.degraded {
        why.push("degraded, but no attack: traffic is not surging".into());
        "degraded"
    } else {
        why.push("calm".into());
        "calm"
    };
    why.push(traffic(d));
    if d.under_attack || d.suspect_share > 0.0 {
        why.push(format!(
            "{:.0}% of requests look automated or anomalous ({:.0}% before); {:.0}% refused or failing",
            d.suspect_share * 100.0,
            d.baseline_suspect_share * 100.0,
            d.bad_share * 100.0
        ));
    }
    let flagged = [
        (d.flagged_classes.len(), "cluster"),
        (d.flagged_prefixes.len(), "network"),
        (d.flagged_routes.len(), "route"),
    ];
    let named: Vec<String> = flagged
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if !named.is_empty() {
        why.push(format!("flagged as surging: {}", named.join(", ")));
    }
    if !s.bans.is_empty() {
        let n = s.bans.len();
        why.push(format!("{n} ban{} in force", if n == 1 { "" } else { "s" }));
    }
    (status, why)
}

fn traffic(d: &DetectionSnapshot) -> String {
    format!(
        "{:.0} requests/s against a baseline of {:.0}; latency {} against {}",
        d.rate,
        d.baseline_rate,
        ms(d.latency),
        ms(d.baseline_latency)
    )
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn span(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{:.1} h", s as f64 / 3600.0)
    }
}
