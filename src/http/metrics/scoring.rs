//! Scoring's families: actions, detection, shares and top offenders.

use super::sink::{Kind, Out};
use crate::http::ScoringStats;
use crate::http::scoring::detect::{DetectionSnapshot, Share};
use crate::http::scoring::scorer::Offender;

/// The ladder's actions and the client table.
pub(super) fn write_scoring(t: &mut Out<'_>, s: &ScoringStats) {
    t.family(
        "floodguard_score_actions_total",
        Kind::Counter,
        "What the score ladder did (shadow=\"true\": only observed): throttle and challenge \
         count requests, ban counts clients banned.",
    );
    for (action, shadow, n) in [
        ("throttle", "false", s.throttled),
        ("throttle", "true", s.shadow_throttles),
        ("challenge", "false", s.challenged),
        ("challenge", "true", s.shadow_challenges),
        ("hold", "false", s.held),
        ("ban", "false", s.banned),
        ("ban", "true", s.shadow_bans),
    ] {
        t.sample(
            "floodguard_score_actions_total",
            &[("action", action), ("shadow", shadow)],
            n,
        );
    }
    t.counter(
        "floodguard_challenges_passed_total",
        "Requests that carried a solved challenge and were served.",
        s.challenges_passed,
    );
    t.counter(
        "floodguard_under_attack_requests_total",
        "Requests that arrived while the service was under attack.",
        s.under_attack_requests,
    );
    t.gauge(
        "floodguard_scored_clients",
        "Clients whose score is remembered now.",
        s.clients,
    );
    t.counter(
        "floodguard_scored_client_evictions_total",
        "Client score records dropped to make room.",
        s.client_evictions,
    );
}

/// The attack state at the detector's last tick.
pub(super) fn write_detection(t: &mut Out<'_>, d: &DetectionSnapshot, attack_for: f64) {
    t.gauge(
        "floodguard_under_attack",
        "1 while attack detection holds the service under attack, else 0.",
        u64::from(d.under_attack),
    );
    t.gauge(
        "floodguard_attack_duration_seconds",
        "How long the current attack has lasted; 0 when calm.",
        attack_for,
    );
    t.gauge(
        "floodguard_request_rate",
        "Requests a second in the detector's last tick.",
        d.rate,
    );
    t.gauge(
        "floodguard_baseline_request_rate",
        "The request rate's baseline, learnt while calm.",
        d.baseline_rate,
    );
    t.gauge(
        "floodguard_latency_seconds",
        "The service's mean latency in the detector's last tick.",
        d.latency.as_secs_f64(),
    );
    t.gauge(
        "floodguard_baseline_latency_seconds",
        "The latency's baseline, learnt while calm.",
        d.baseline_latency.as_secs_f64(),
    );
    t.gauge(
        "floodguard_flagged_classes",
        "Fingerprint classes flagged as surging in this attack.",
        d.flagged_classes.len(),
    );
    t.gauge(
        "floodguard_flagged_networks",
        "Networks (IPv4 /24, IPv6 /48) flagged as surging in this attack.",
        d.flagged_prefixes.len(),
    );
    let classes: Vec<(String, &Share<_>)> = d
        .flagged_classes
        .iter()
        .map(|s| (s.key.to_string(), s))
        .collect();
    let networks: Vec<(String, &Share<_>)> = d
        .flagged_prefixes
        .iter()
        .map(|s| (s.key.to_string(), s))
        .collect();
    write_shares(
        t,
        "class",
        &classes,
        [
            (
                "floodguard_flagged_class_share",
                "A flagged fingerprint class's share of the last tick's requests.",
            ),
            (
                "floodguard_flagged_class_baseline_share",
                "A flagged fingerprint class's share of requests before the attack.",
            ),
        ],
    );
    write_shares(
        t,
        "network",
        &networks,
        [
            (
                "floodguard_flagged_network_share",
                "A flagged network's share of the last tick's requests.",
            ),
            (
                "floodguard_flagged_network_baseline_share",
                "A flagged network's share of requests before the attack.",
            ),
        ],
    );
}

/// Two gauges per flagged key: its share now and before the attack.
pub(super) fn write_shares<K>(
    t: &mut Out<'_>,
    label: &'static str,
    shares: &[(String, &Share<K>)],
    families: [(&'static str, &'static str); 2],
) {
    if shares.is_empty() {
        return;
    }
    for (i, (name, help)) in families.into_iter().enumerate() {
        t.family(name, Kind::Gauge, help);
        for (n, (key, s)) in shares.iter().enumerate() {
            // One series per key, even if a list repeated one.
            if shares[..n].iter().any(|(k, _)| k == key) {
                continue;
            }
            let value = if i == 0 { s.share } else { s.baseline_share };
            t.sample(name, &[(label, key)], value);
        }
    }
}

/// The worst offenders' scores, with the signal that weighed most.
pub(super) fn write_offenders(t: &mut Out<'_>, offenders: &[Offender]) {
    const NAME: &str = "floodguard_offender_score";
    if offenders.is_empty() {
        return;
    }
    t.family(
        NAME,
        Kind::Gauge,
        "Highest score (0-100) of a client that reached the throttle threshold (an IPv4 \
         address or an IPv6 /64), with its largest signal and the ladder's action; at most \
         32 clients.",
    );
    let clients: Vec<String> = offenders.iter().map(|o| o.client.to_string()).collect();
    for (n, (o, client)) in offenders.iter().zip(&clients).enumerate() {
        if clients[..n].contains(client) {
            continue;
        }
        let signal = o.report.top_signal().map_or("none", |s| s.name());
        t.sample(
            NAME,
            &[
                ("client", client),
                ("signal", signal),
                ("action", o.action.name()),
            ],
            o.report.score(),
        );
    }
}
