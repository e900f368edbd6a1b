//! A guard's families: requests and refusals, rules, sessions, shared
//! rules and bans; the order they are written in.

use super::overload::write_overload;
use super::scoring::{write_detection, write_offenders, write_scoring};
use super::sink::{Kind, Out};
use super::text::Text;
use crate::Clock;
use crate::http::identify::session::SessionStats;
use crate::http::{Guard, GuardStats, SharedBanStats};

impl<C: Clock> Guard<C> {
    /// The guard's counters in the Prometheus text format 0.0.4. Serve it
    /// with [`PROMETHEUS_CONTENT_TYPE`](crate::http::PROMETHEUS_CONTENT_TYPE) (or mount `metrics_handler` under
    /// feature `axum`). Every family has `# HELP` and `# TYPE` lines; they
    /// come in this order, rules in the order they were added, offenders
    /// highest score first:
    ///
    /// | family | labels |
    /// |---|---|
    /// | `floodguard_requests_total`, `_admitted_total` | |
    /// | `floodguard_refused_total` | `reason`: `rate_limit`, `blocked`, `score`, `challenge`, `no_peer_address` |
    /// | `floodguard_safelisted_total`, `_malformed_forwarding_total` | |
    /// | `floodguard_untrusted_forwarding_total`, `_forgotten_proxy_warnings_total` | |
    /// | `floodguard_bans` (gauge), `_bans_evicted_total` | |
    /// | `floodguard_tarpit_held_total`, `_tarpit_full_total`, `_tarpit_holding` (gauge) | |
    /// | `floodguard_rule_admitted_total`, `_rule_denied_total`, `_rule_keys`, `_rule_key_capacity`, `_rule_evictions_total` | `rule`, `shadow` |
    ///
    /// With [scoring](crate::http::GuardBuilder::scoring) on, also:
    ///
    /// | family | labels |
    /// |---|---|
    /// | `floodguard_score_actions_total` | `action`: `throttle`, `challenge`, `ban`; `shadow` |
    /// | `floodguard_challenges_passed_total`, `_under_attack_requests_total` | |
    /// | `floodguard_scored_clients`, `_scored_client_evictions_total` | |
    /// | `floodguard_under_attack` (0 or 1), `_attack_duration_seconds` | |
    /// | `floodguard_request_rate`, `_baseline_request_rate` (per second) | |
    /// | `floodguard_latency_seconds`, `_baseline_latency_seconds` | |
    /// | `floodguard_flagged_classes`, `_flagged_networks` (counts) | |
    /// | `floodguard_flagged_class_share`, `_flagged_class_baseline_share` | `class` |
    /// | `floodguard_flagged_network_share`, `_flagged_network_baseline_share` | `network` |
    /// | `floodguard_offender_score` | `client`, `signal`, `action` |
    ///
    /// Series per class, network or client are bounded: at most 16
    /// flagged classes, 16 flagged networks and 32 offenders. The busiest
    /// classes and networks of each tick
    /// ([`DetectionSnapshot::top_classes`](crate::http::DetectionSnapshot::top_classes) and the like) are left out, as
    /// they would mint new series every tick; [`Guard::snapshot`] has
    /// them.
    ///
    /// For rules [shared through Redis](crate::http::Rule::shared), also
    /// `floodguard_shared_rule_total` (labels `rule` and `event`:
    /// `fallback` (decided by the failure policy), `budget_refusal` (this
    /// instance's share spent before a sync), `pushed_key`, `failed_round`),
    /// `floodguard_shared_rule_redis_available` (0 or 1) and
    /// `floodguard_shared_rule_instances` (the fleet's size), by `rule`.
    ///
    /// With the [session cookie](crate::http::GuardBuilder::session) on, also
    /// `floodguard_session_cookies_total` (label `outcome`: `valid`,
    /// `invalid`, `issued`, `not_returned`; see
    /// [`SessionStats`](crate::http::SessionStats)).
    ///
    /// With [shared bans](crate::http::GuardBuilder::share_bans) on, also
    /// `floodguard_shared_bans_total` (label `event`: `published`,
    /// `received`, `loaded`, `load_pages`, `reconciled_lifts`, `dropped`,
    /// `errors`, `rejected`) and
    /// `floodguard_shared_bans_subscribed` (0 or 1).
    ///
    /// `reason="no_peer_address"` counts requests that carried no peer
    /// address; they are refused unless the guard was built with
    /// [`MissingPeer::SkipAddressRules`](crate::http::MissingPeer::SkipAddressRules),
    /// which serves (and counts as admitted) them instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::http::{Guard, PeerAddr, Rule};
    ///
    /// let guard = Guard::builder()
    ///     .rule(Rule::per_ip("per-ip").sliding_window(1, Duration::from_secs(60)))
    ///     .build()?;
    /// let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    /// parts.extensions.insert(PeerAddr("192.0.2.1:4000".parse().unwrap()));
    /// let _ = guard.check(&parts);
    /// let _ = guard.check(&parts);
    /// let text = guard.prometheus();
    /// assert!(text.contains("floodguard_requests_total 2\n"));
    /// assert!(text.contains("floodguard_refused_total{reason=\"rate_limit\"} 1\n"));
    /// assert!(text.contains("floodguard_rule_denied_total{rule=\"per-ip\",shadow=\"false\"} 1\n"));
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.write_prometheus(&mut out);
        out
    }

    /// Appends [`prometheus`](Self::prometheus)'s text to `out`, so that
    /// several sources (the guard, a [`Gate`](crate::http::Gate), your own metrics) can share
    /// one buffer and one response.
    pub fn write_prometheus(&self, out: &mut String) {
        self.families(&mut Out::new(&mut Text { out }));
    }

    /// Every family of the guard, in order, to `t`.
    pub(super) fn families(&self, t: &mut Out<'_>) {
        let snap = self.snapshot();
        write_guard(t, &snap.stats, snap.bans.len());
        write_rules(t, &snap.stats);
        if let Some(sc) = &snap.stats.scoring {
            write_scoring(t, sc);
        }
        if let Some(se) = &snap.stats.session {
            write_session(t, se);
        }
        if let Some(d) = &snap.detection {
            let attack_for = d
                .attack_since
                .filter(|_| d.under_attack)
                .map_or(0.0, |since| {
                    self.now().saturating_duration_since(since).as_secs_f64()
                });
            write_detection(t, d, attack_for);
        }
        write_offenders(t, &snap.offenders);
        write_overload(t, &snap.stats.overload);
        write_shared_rules(t, &snap.stats);
        if let Some(s) = &snap.stats.shared_bans {
            write_shared_bans(t, s);
        }
    }
}

/// The counters of rules shared through Redis, if any.
pub(super) fn write_shared_rules(t: &mut Out<'_>, s: &GuardStats) {
    let shared: Vec<_> = s
        .rules
        .iter()
        .filter_map(|r| Some((r.name.as_str(), r.shared?)))
        .collect();
    if shared.is_empty() {
        return;
    }
    t.family(
        "floodguard_shared_rule_total",
        Kind::Counter,
        "Rules shared through Redis, by event: fallback (decided by the failure policy, Redis \
         unreachable), budget_refusal (refused because this instance's share was spent before \
         a sync), pushed_key (keys pushed to Redis), failed_round (sync rounds that failed).",
    );
    for (rule, st) in &shared {
        for (event, n) in [
            ("fallback", st.fallback),
            ("budget_refusal", st.budget_refusals),
            ("pushed_key", st.pushed_keys),
            ("failed_round", st.failed_rounds),
        ] {
            t.sample(
                "floodguard_shared_rule_total",
                &[("rule", rule), ("event", event)],
                n,
            );
        }
    }
    t.family(
        "floodguard_shared_rule_redis_available",
        Kind::Gauge,
        "Whether a shared rule's Redis is reachable (0 or 1).",
    );
    for (rule, st) in &shared {
        t.sample(
            "floodguard_shared_rule_redis_available",
            &[("rule", rule)],
            u64::from(st.redis_available),
        );
    }
    t.family(
        "floodguard_shared_rule_instances",
        Kind::Gauge,
        "Instances a shared rule's keys are divided among.",
    );
    for (rule, st) in &shared {
        t.sample(
            "floodguard_shared_rule_instances",
            &[("rule", rule)],
            st.instances,
        );
    }
}

/// Shared bans' counters, by event.
pub(super) fn write_shared_bans(t: &mut Out<'_>, s: &SharedBanStats) {
    t.family(
        "floodguard_shared_bans_total",
        Kind::Counter,
        "Shared bans, by event: published (bans, lifts and flagged classes this guard \
         published), received (messages from other instances applied), loaded (bans and \
         classes loaded from Redis on connecting), load_pages (pages of the ban set read \
         on connecting, 1,000 bans each), reconciled_lifts (bans from Redis's set, \
         learned or written by this guard, lifted on reconnecting, having been lifted \
         elsewhere meanwhile), dropped (not \
         published: queue full), errors (failed calls to Redis, lost connections), rejected \
         (bad messages or entries from Redis, ignored).",
    );
    for (event, n) in [
        ("published", s.published),
        ("received", s.received),
        ("loaded", s.loaded),
        ("load_pages", s.load_pages),
        ("reconciled_lifts", s.reconciled_lifts),
        ("dropped", s.dropped),
        ("errors", s.errors),
        ("rejected", s.rejected),
    ] {
        t.sample("floodguard_shared_bans_total", &[("event", event)], n);
    }
    t.gauge(
        "floodguard_shared_bans_subscribed",
        "Whether the shared-bans subscriber is connected to Redis (0 or 1).",
        u64::from(s.subscribed),
    );
}

/// The request counters, refusals and bans.
pub(super) fn write_guard(t: &mut Out<'_>, s: &GuardStats, bans: usize) {
    t.counter(
        "floodguard_requests_total",
        "Requests the guard inspected.",
        s.requests,
    );
    t.counter(
        "floodguard_admitted_total",
        "Requests passed to the service (safelisted ones included).",
        s.admitted,
    );
    t.family(
        "floodguard_refused_total",
        Kind::Counter,
        "Requests refused, by reason: rate_limit (a rule, 429), blocked (blocklisted or \
         banned, 403), score (the score reached the ban threshold), challenge (answered with \
         a challenge page), suspect (held back at the challenge threshold without a challenge \
         hook, 429), overload (shed at the concurrency limit, 503), no_peer_address \
         (no peer address: a server setup error; such requests are served instead when the \
         guard skips address rules for them).",
    );
    for (reason, n) in [
        ("rate_limit", s.refused_rate_limit),
        ("blocked", s.refused_blocked),
        ("score", s.refused_score),
        ("challenge", s.refused_challenge),
        ("suspect", s.refused_suspect),
        ("overload", s.refused_overload),
        ("no_peer_address", s.no_peer_address),
    ] {
        t.sample("floodguard_refused_total", &[("reason", reason)], n);
    }
    t.counter(
        "floodguard_safelisted_total",
        "Requests from safelisted clients (no rule checked).",
        s.safelisted,
    );
    t.counter(
        "floodguard_malformed_forwarding_total",
        "Requests from a trusted proxy whose forwarding header was unusable; keyed on the \
         nearest trusted hop.",
        s.malformed_forwarding,
    );
    t.counter(
        "floodguard_untrusted_forwarding_total",
        "Requests from a peer that is not a trusted proxy carrying the forwarding header \
         (ignored).",
        s.untrusted_forwarding,
    );
    t.counter(
        "floodguard_forgotten_proxy_warnings_total",
        "Warnings that an untrusted peer forwards for many clients (a proxy not trusted).",
        s.forgotten_proxy_warnings,
    );
    t.gauge("floodguard_bans", "Runtime bans in force.", bans);
    t.counter(
        "floodguard_bans_evicted_total",
        "Bans lifted early to make room for a new one in a full ban list.",
        s.bans_evicted,
    );
    t.counter(
        "floodguard_tarpit_held_total",
        "Refusals of blocked clients held by the tarpit before being sent.",
        s.tarpit.held,
    );
    t.counter(
        "floodguard_tarpit_full_total",
        "Refusals of blocked clients sent at once because the tarpit was full.",
        s.tarpit.full,
    );
    t.gauge(
        "floodguard_tarpit_holding",
        "Refusals held by the tarpit now.",
        s.tarpit.holding,
    );
}

/// Each rule's counters, labelled by rule name and shadow mode.
pub(super) fn write_rules(t: &mut Out<'_>, s: &GuardStats) {
    if s.rules.is_empty() {
        return;
    }
    let families: [(&'static str, Kind, &'static str); 5] = [
        (
            "floodguard_rule_admitted_total",
            Kind::Counter,
            "Requests a rule admitted and charged.",
        ),
        (
            "floodguard_rule_denied_total",
            Kind::Counter,
            "Requests a rule refused (shadow=\"true\": would have refused).",
        ),
        (
            "floodguard_rule_keys",
            Kind::Gauge,
            "Keys a rule's table holds now.",
        ),
        (
            "floodguard_rule_key_capacity",
            Kind::Gauge,
            "Keys a rule's table can hold.",
        ),
        (
            "floodguard_rule_evictions_total",
            Kind::Counter,
            "Live keys a rule's table dropped to make room; steady growth means its capacity \
             is too small.",
        ),
    ];
    for (i, (name, kind, help)) in families.into_iter().enumerate() {
        t.family(name, kind, help);
        for r in &s.rules {
            let l = &r.limiter;
            let value = match i {
                0 => l.admitted,
                1 => l.denied,
                2 => l.occupancy as u64,
                3 => l.capacity as u64,
                _ => l.evictions,
            };
            let shadow = if r.shadow { "true" } else { "false" };
            t.sample(name, &[("rule", &r.name), ("shadow", shadow)], value);
        }
    }
}

pub(super) fn write_session(t: &mut Out<'_>, s: &SessionStats) {
    t.family(
        "floodguard_session_cookies_total",
        Kind::Counter,
        "The session cookie, by outcome: valid and invalid count requests that carried one \
         (invalid: forged, malformed, expired or from another network), issued counts cookies \
         sent, not_returned counts clients sent one that came back three times without it.",
    );
    for (outcome, n) in [
        ("valid", s.valid),
        ("invalid", s.invalid),
        ("issued", s.issued),
        ("not_returned", s.not_returned),
    ] {
        t.sample(
            "floodguard_session_cookies_total",
            &[("outcome", outcome)],
            n,
        );
    }
}
