//! Prometheus text exposition (format 0.0.4) of a guard's and a gate's
//! counters, and under feature `axum` a ready `/metrics` handler.
//!
//! Everything here reads the public API ([`Guard::snapshot`],
//! [`Gate::stats`]) at scrape time; the request path is untouched.

use std::fmt::Write as _;

use crate::Clock;
use crate::http::gate::gate::Gate;
use crate::http::identify::session::SessionStats;
use crate::http::scoring::detect::{DetectionSnapshot, Share};
use crate::http::scoring::scorer::Offender;
use crate::http::{Guard, GuardStats, ScoringStats, SharedBanStats};
use crate::http::{LimitStats, WaitingRoomStats};

/// The `Content-Type` of the Prometheus text format this module writes:
/// `text/plain; version=0.0.4; charset=utf-8`.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl<C: Clock> Guard<C> {
    /// The guard's counters in the Prometheus text format 0.0.4. Serve it
    /// with [`PROMETHEUS_CONTENT_TYPE`] (or mount `metrics_handler` under
    /// feature `axum`). Every family has `# HELP` and `# TYPE` lines; they
    /// come in this order, rules in the order they were added, offenders
    /// highest score first:
    ///
    /// | family | labels |
    /// |---|---|
    /// | `floodguard_requests_total`, `_admitted_total` | |
    /// | `floodguard_refused_total` | `reason`: `rate_limit`, `blocked`, `score`, `challenge`, `no_peer_address` |
    /// | `floodguard_safelisted_total`, `_malformed_forwarding_total` | |
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
    /// ([`DetectionSnapshot::top_classes`] and the like) are left out, as
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
    /// several sources (the guard, a [`Gate`], your own metrics) can share
    /// one buffer and one response.
    pub fn write_prometheus(&self, out: &mut String) {
        let snap = self.snapshot();
        let mut t = Text { out };
        write_guard(&mut t, &snap.stats, snap.bans.len());
        write_rules(&mut t, &snap.stats);
        if let Some(sc) = &snap.stats.scoring {
            write_scoring(&mut t, sc);
        }
        if let Some(se) = &snap.stats.session {
            write_session(&mut t, se);
        }
        if let Some(d) = &snap.detection {
            let attack_for = d
                .attack_since
                .filter(|_| d.under_attack)
                .map_or(0.0, |since| {
                    self.now().saturating_duration_since(since).as_secs_f64()
                });
            write_detection(&mut t, d, attack_for);
        }
        write_offenders(&mut t, &snap.offenders);
        write_overload(&mut t, &snap.stats.overload);
        #[cfg(feature = "redis")]
        write_shared_rules(&mut t, &snap.stats);
        if let Some(s) = &snap.stats.shared_bans {
            write_shared_bans(&mut t, s);
        }
    }
}

/// The counters of rules shared through Redis, if any.
#[cfg(feature = "redis")]
fn write_shared_rules(t: &mut Text<'_>, s: &GuardStats) {
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
fn write_shared_bans(t: &mut Text<'_>, s: &SharedBanStats) {
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

impl Gate {
    /// The gate's counters in the Prometheus text format 0.0.4:
    /// connections accepted, refused by reason, open now, and held by the
    /// tarpit.
    ///
    /// ```
    /// use floodguard::http::Gate;
    /// let gate = Gate::builder().build()?;
    /// assert!(gate.prometheus().contains("floodguard_gate_accepted_total 0\n"));
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(1024);
        self.write_prometheus(&mut out);
        out
    }

    /// Appends [`prometheus`](Self::prometheus)'s text to `out`; with a
    /// guard's text in the same buffer, one scrape gets both.
    pub fn write_prometheus(&self, out: &mut String) {
        let s = self.stats();
        let mut t = Text { out };
        t.counter(
            "floodguard_gate_accepted_total",
            "Connections the gate admitted (exempt ones included).",
            s.accepted,
        );
        t.family(
            "floodguard_gate_refused_total",
            Kind::Counter,
            "Connections the gate refused at accept, by reason: blocked (the verdict hook: \
             blocklisted or banned), per_ip and per_prefix (too many open), rate and \
             network_rate (new connections too fast), slow (the address left a request head \
             half sent), budget (the descriptor budget full of requests being served).",
        );
        for (reason, n) in [
            ("blocked", s.refused_banned),
            ("per_ip", s.refused_per_ip),
            ("per_prefix", s.refused_per_prefix),
            ("rate", s.refused_rate),
            ("network_rate", s.refused_network_rate),
            ("slow", s.refused_slow),
            ("budget", s.refused_budget),
        ] {
            t.sample("floodguard_gate_refused_total", &[("reason", reason)], n);
        }
        t.family(
            "floodguard_gate_closed_total",
            Kind::Counter,
            "Admitted connections the gate closed, by reason: head_timeout (a request head \
             not complete by its deadline), idle (keep-alive time), budget (room made for a \
             new connection).",
        );
        for (reason, n) in [
            ("head_timeout", s.closed_head_timeout),
            ("idle", s.closed_idle),
            ("budget", s.closed_budget),
        ] {
            t.sample("floodguard_gate_closed_total", &[("reason", reason)], n);
        }
        t.gauge(
            "floodguard_gate_open_connections",
            "Admitted connections open now.",
            s.open,
        );
        t.gauge(
            "floodguard_gate_descriptor_budget",
            "Descriptors the gate lets its connections and tarpit hold.",
            s.budget,
        );
        t.counter(
            "floodguard_gate_tarpit_held_total",
            "Refused connections held open by the tarpit before their reset.",
            s.tarpit.held,
        );
        t.counter(
            "floodguard_gate_tarpit_full_total",
            "Refused connections reset at once because the tarpit was full.",
            s.tarpit.full,
        );
        t.gauge(
            "floodguard_gate_tarpit_holding",
            "Refused connections held by the tarpit now.",
            s.tarpit.holding,
        );
    }
}

/// The request counters, refusals and bans.
fn write_guard(t: &mut Text<'_>, s: &GuardStats, bans: usize) {
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
fn write_rules(t: &mut Text<'_>, s: &GuardStats) {
    if s.rules.is_empty() {
        return;
    }
    let families: [(&str, Kind, &str); 5] = [
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

/// The ladder's actions and the client table.
fn write_scoring(t: &mut Text<'_>, s: &ScoringStats) {
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

fn write_session(t: &mut Text<'_>, s: &SessionStats) {
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

/// The attack state at the detector's last tick.
fn write_detection(t: &mut Text<'_>, d: &DetectionSnapshot, attack_for: f64) {
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
fn write_shares<K>(
    t: &mut Text<'_>,
    label: &str,
    shares: &[(String, &Share<K>)],
    families: [(&str, &str); 2],
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
fn write_offenders(t: &mut Text<'_>, offenders: &[Offender]) {
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

/// A metric family's type.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Overload protection: each adaptive limit (`route=""` for the
/// service's own) with its latency histogram.
fn write_overload(t: &mut Text<'_>, limits: &[LimitStats]) {
    if limits.is_empty() {
        return;
    }
    let route = |l: &LimitStats| l.route.clone().unwrap_or_default();
    t.family(
        "floodguard_concurrency_limit",
        Kind::Gauge,
        "The adaptive concurrency limit now, per limit (route=\"\": the service's own).",
    );
    for l in limits {
        t.sample(
            "floodguard_concurrency_limit",
            &[("route", &route(l))],
            l.limit,
        );
    }
    t.family(
        "floodguard_in_flight",
        Kind::Gauge,
        "Requests in the service now, per limit.",
    );
    for l in limits {
        t.sample("floodguard_in_flight", &[("route", &route(l))], l.in_flight);
    }
    t.family(
        "floodguard_shed_total",
        Kind::Counter,
        "Requests shed at the concurrency limit, by limit and priority.",
    );
    for l in limits {
        for (p, n) in l.shed {
            let labels = [("route", route(l)), ("priority", p.name().to_owned())];
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            t.sample("floodguard_shed_total", &labels, n);
        }
    }
    let rooms: Vec<_> = limits
        .iter()
        .filter_map(|l| l.waiting_room.as_ref().map(|w| (route(l), w)))
        .collect();
    if !rooms.is_empty() {
        t.family(
            "floodguard_waiting",
            Kind::Gauge,
            "Requests waiting for a place now, per limit with a waiting room.",
        );
        for (r, w) in &rooms {
            t.sample("floodguard_waiting", &[("route", r)], w.waiting);
        }
        type Read = fn(&WaitingRoomStats) -> u64;
        let counters: [(&str, &str, Read); 3] = [
            (
                "floodguard_waited_total",
                "Requests admitted after waiting, per limit.",
                |w| w.waited,
            ),
            (
                "floodguard_wait_timeouts_total",
                "Requests shed when their wait ran out, per limit.",
                |w| w.timed_out,
            ),
            (
                "floodguard_turned_away_total",
                "Requests shed from a full waiting room for a higher priority, per limit.",
                |w| w.turned_away,
            ),
        ];
        for (name, help, value) in counters {
            t.family(name, Kind::Counter, help);
            for (r, w) in &rooms {
                t.sample(name, &[("route", r)], value(w));
            }
        }
    }
    t.family(
        "floodguard_service_latency_seconds",
        Kind::Histogram,
        "Latency of the service's answers, per limit (buckets a quarter octave apart).",
    );
    for l in limits {
        let r = route(l);
        let mut seen = 0;
        for (upper, n) in &l.buckets {
            seen += n;
            let le = format!("{}", upper.as_secs_f64());
            t.sample(
                "floodguard_service_latency_seconds_bucket",
                &[("route", &r), ("le", &le)],
                seen,
            );
        }
        t.sample(
            "floodguard_service_latency_seconds_bucket",
            &[("route", &r), ("le", "+Inf")],
            l.answers,
        );
        t.sample(
            "floodguard_service_latency_seconds_sum",
            &[("route", &r)],
            l.latency_sum.as_secs_f64(),
        );
        t.sample(
            "floodguard_service_latency_seconds_count",
            &[("route", &r)],
            l.answers,
        );
    }
}

/// A sample's value.
trait Value {
    fn write(self, out: &mut String);
}

impl Value for u64 {
    fn write(self, out: &mut String) {
        // Writing to a `String` cannot fail.
        let _ = write!(out, "{self}");
    }
}

impl Value for u32 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for usize {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f32 {
    /// The shortest decimal that reads back as the same `f32`: a score
    /// of 87.79362, not its `f64` widening 87.79361724853516.
    fn write(self, out: &mut String) {
        if self.is_finite() {
            let _ = write!(out, "{self}");
        } else {
            f64::from(self).write(out);
        }
    }
}

impl Value for f64 {
    fn write(self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// A writer of the text format into a borrowed buffer.
struct Text<'a> {
    out: &'a mut String,
}

impl Text<'_> {
    /// A family's `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push_str(match kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
            Kind::Histogram => " histogram\n",
        });
    }

    /// One sample line.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write(self.out);
        self.out.push('\n');
    }

    /// A counter family of one unlabelled sample.
    fn counter(&mut self, name: &str, help: &str, value: impl Value) {
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], value);
    }

    /// A gauge family of one unlabelled sample.
    fn gauge(&mut self, name: &str, help: &str, value: impl Value) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], value);
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(feature = "axum")]
mod axum_support {
    use axum::routing::MethodRouter;
    use http::header::CONTENT_TYPE;

    use crate::Clock;
    use crate::http::PROMETHEUS_CONTENT_TYPE;
    use crate::http::{Gate, Guard};

    /// A `GET` (and `HEAD`) route that answers with the guard's
    /// [`prometheus`](Guard::prometheus) text and
    /// `content-type: text/plain; version=0.0.4; charset=utf-8`. Mount it
    /// at a path of your choosing:
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use floodguard::http::Guard;
    ///
    /// let guard = Guard::builder().default_rules().build()?;
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "shop" }))
    ///     .layer(guard.layer())
    ///     // Added after `.layer`: scrapes are not counted or limited.
    ///     .route("/metrics", floodguard::http::metrics_handler(guard.clone()));
    /// # let _ = app;
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    ///
    /// Where the route sits decides whether the guard sees the scrapes:
    /// axum's `Router::layer` wraps only the routes added before it, so a
    /// metrics route added after `.layer(guard.layer())` is in front of the
    /// guard (scrapes are neither counted nor limited), and one added
    /// before it is behind the guard (each scrape is a request, charged on
    /// the rules like any other; a scraper on a safelisted address skips
    /// them). A guard layered around the whole app (`ServiceBuilder`
    /// around the router, or `Router::layer` on a merged router) covers
    /// the metrics route too.
    ///
    /// The text names clients and networks (offenders, flagged
    /// networks): serve it where only your monitoring can reach it, on an
    /// internal listener or behind your own authentication.
    pub fn metrics_handler<C, S>(guard: Guard<C>) -> MethodRouter<S>
    where
        C: Clock + Send + Sync + 'static,
        S: Clone + Send + Sync + 'static,
    {
        axum::routing::get(move || {
            let body = guard.prometheus();
            async move { ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], body) }
        })
    }

    /// Like [`metrics_handler`], with the [`Gate`]'s counters after the
    /// guard's in the same answer.
    ///
    /// ```
    /// use axum::Router;
    /// use floodguard::http::{Guard, metrics_handler_with_gate};
    ///
    /// let guard = Guard::builder().default_rules().build()?;
    /// let gate = guard.gate().max_connections_per_ip(16).build()?;
    /// let admin: Router = Router::new()
    ///     .route("/metrics", metrics_handler_with_gate(guard.clone(), gate.clone()));
    /// # let _ = admin;
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn metrics_handler_with_gate<C, S>(guard: Guard<C>, gate: Gate) -> MethodRouter<S>
    where
        C: Clock + Send + Sync + 'static,
        S: Clone + Send + Sync + 'static,
    {
        axum::routing::get(move || {
            let mut body = guard.prometheus();
            gate.write_prometheus(&mut body);
            async move { ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], body) }
        })
    }
}

#[cfg(feature = "axum")]
pub use axum_support::{metrics_handler, metrics_handler_with_gate};

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use http::request::Parts;

    use super::*;
    use crate::ManualClock;
    use crate::http::{Detection, PeerAddr, Rule, Scoring, SessionCookie};

    /// One parsed sample line.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    impl Sample {
        fn label(&self, k: &str) -> Option<&str> {
            self.labels
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        }
    }

    fn valid_name(s: &str, colon: bool) -> bool {
        let mut b = s.bytes();
        let ok = |c: u8| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':');
        b.next().is_some_and(ok) && b.all(|c| ok(c) || c.is_ascii_digit())
    }

    /// Parses `{k="v",...} value`, undoing the escapes.
    fn parse_labels(rest: &str) -> (Vec<(String, String)>, &str) {
        let Some(mut s) = rest.strip_prefix('{') else {
            return (Vec::new(), rest);
        };
        let mut labels = Vec::new();
        loop {
            if let Some(r) = s.strip_prefix('}') {
                return (labels, r);
            }
            let eq = s.find("=\"").expect("label name then =\"");
            let key = &s[..eq];
            assert!(valid_name(key, false), "bad label name {key:?}");
            let mut value = String::new();
            let mut chars = s[eq + 2..].char_indices();
            let end = loop {
                let (i, c) = chars.next().expect("unterminated label value");
                match c {
                    '"' => break eq + 2 + i + 1,
                    '\\' => match chars.next().expect("dangling escape").1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => panic!("bad escape \\{c}"),
                    },
                    '\n' => panic!("raw newline in a label value"),
                    c => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            s = &s[end..];
            s = s.strip_prefix(',').unwrap_or(s);
        }
    }

    /// Checks the text line by line against the format and returns its
    /// samples: names and label names valid, HELP and TYPE once per family
    /// and before its samples, a family's samples together, counters
    /// ending in `_total`, values that parse, no repeated series.
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.is_empty() || text.ends_with('\n'));
        let mut help = HashSet::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut closed = HashSet::new();
        let mut current: Option<String> = None;
        let mut series = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, doc) = rest.split_once(' ').expect("HELP name text");
                assert!(valid_name(name, true), "{line}");
                assert!(!doc.is_empty(), "{line}");
                assert!(help.insert(name.to_owned()), "HELP twice: {name}");
                assert!(!types.contains_key(name), "HELP after TYPE: {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(help.contains(name), "TYPE without HELP: {name}");
                assert!(matches!(kind, "counter" | "gauge"), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter {name}");
                } else {
                    assert!(!name.ends_with("_total"), "gauge {name}");
                }
                assert!(types.insert(name.into(), kind.into()).is_none(), "{line}");
                if let Some(prev) = current.replace(name.to_owned()) {
                    closed.insert(prev);
                }
            } else {
                assert!(!line.starts_with('#'), "stray comment {line}");
                let end = line.find(['{', ' ']).expect("name then labels or value");
                let name = &line[..end];
                assert!(valid_name(name, true), "{line}");
                assert_eq!(current.as_deref(), Some(name), "sample outside its family");
                assert!(!closed.contains(name));
                let (labels, rest) = parse_labels(&line[end..]);
                let value = rest.strip_prefix(' ').expect("space before value");
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("value {line}"));
                let key = format!("{name}{labels:?}");
                assert!(series.insert(key), "series twice: {line}");
                samples.push(Sample {
                    name: name.to_owned(),
                    labels,
                    value,
                });
            }
        }
        assert_eq!(help.len(), types.len(), "every family has HELP and TYPE");
        samples
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
        found[0].value
    }

    fn parts(ip: IpAddr, user_agent: &str) -> Parts {
        let (mut parts, ()) = http::Request::get("/")
            .header("host", "shop.test")
            .header("user-agent", user_agent)
            .header("accept", "*/*")
            .header("accept-language", "en")
            .header("accept-encoding", "gzip")
            .body(())
            .unwrap()
            .into_parts();
        parts
            .extensions
            .insert(PeerAddr(SocketAddr::new(ip, 40_000)));
        parts
    }

    fn v4(a: u8, b: u8, c: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, a, b, c))
    }

    const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

    /// A guard with enforced and shadow rules and scoring, calm traffic
    /// for three seconds, then a flood from a scripting tool.
    fn flooded() -> (ManualClock, Guard<ManualClock>) {
        let clock = ManualClock::new();
        let detection = Detection::default();
        let guard = Guard::builder()
            .rule(Rule::per_ip("per-ip").sliding_window(5, Duration::from_secs(1)))
            .rule(Rule::global("ceiling").gcra(100_000, Duration::from_secs(1)))
            .rule(
                Rule::per_ip("would-be")
                    .sliding_window(2, Duration::from_secs(1))
                    .shadow(),
            )
            .scoring(Scoring::new().detection(detection))
            .session(SessionCookie::new([3; 16]))
            .clock(clock.clone())
            .build()
            .unwrap();
        let step = Duration::from_millis(100);
        for i in 0..30u32 {
            // Calm: 60 browsers, 200 requests a second in all (detection
            // arms once it has seen 500).
            for k in 0..20 {
                let b = ((i * 20 + k) % 60) as u8;
                let _ = guard.check(&parts(v4(1, 1, b), BROWSER));
            }
            clock.advance(step);
        }
        for i in 0..40u8 {
            let _ = guard.check(&parts(v4(1, 1, i % 4), BROWSER));
            for k in 0..20u8 {
                let bot = v4(2, k, 9);
                let _ = guard.check(&parts(bot, "python-requests/2.32.3"));
            }
            clock.advance(step);
        }
        (clock, guard)
    }

    #[test]
    fn exposition_is_well_formed_and_matches_the_stats() {
        let (_, guard) = flooded();
        let mut forged = parts(v4(1, 1, 1), BROWSER);
        forged
            .headers
            .insert(http::header::COOKIE, "__fg=0123".parse().unwrap());
        let _ = guard.check(&forged);
        let text = guard.prometheus();
        let samples = parse(&text);
        let s = guard.stats();
        let v = |name, labels: &[(&str, &str)]| value(&samples, name, labels);
        assert_eq!(v("floodguard_requests_total", &[]), s.requests as f64);
        assert_eq!(v("floodguard_admitted_total", &[]), s.admitted as f64);
        for (reason, n) in [
            ("rate_limit", s.refused_rate_limit),
            ("blocked", s.refused_blocked),
            ("score", s.refused_score),
            ("challenge", s.refused_challenge),
            ("no_peer_address", s.no_peer_address),
        ] {
            assert_eq!(
                v("floodguard_refused_total", &[("reason", reason)]),
                n as f64
            );
        }
        assert!(s.refused_rate_limit > 0 && s.refused_blocked + s.refused_score > 0);
        assert_eq!(v("floodguard_bans", &[]), guard.bans().len() as f64);
        assert!(!guard.bans().is_empty());
        let t = s.tarpit;
        assert_eq!(v("floodguard_tarpit_held_total", &[]), t.held as f64);
        assert_eq!(v("floodguard_tarpit_full_total", &[]), t.full as f64);
        assert_eq!(v("floodguard_tarpit_holding", &[]), t.holding as f64);
        for r in &s.rules {
            let shadow = if r.shadow { "true" } else { "false" };
            let l = [("rule", r.name.as_str()), ("shadow", shadow)];
            assert_eq!(
                v("floodguard_rule_admitted_total", &l),
                r.limiter.admitted as f64
            );
            assert_eq!(
                v("floodguard_rule_denied_total", &l),
                r.limiter.denied as f64
            );
            assert_eq!(v("floodguard_rule_keys", &l), r.limiter.occupancy as f64);
            assert_eq!(
                v("floodguard_rule_key_capacity", &l),
                r.limiter.capacity as f64
            );
        }
        assert!(
            v(
                "floodguard_rule_denied_total",
                &[("rule", "would-be"), ("shadow", "true")]
            ) > 0.0
        );
        let se = s.session.unwrap();
        assert_eq!(se.invalid, 1);
        for (outcome, n) in [
            ("valid", se.valid),
            ("invalid", se.invalid),
            ("issued", se.issued),
            ("not_returned", se.not_returned),
        ] {
            assert_eq!(
                v("floodguard_session_cookies_total", &[("outcome", outcome)]),
                n as f64
            );
        }
        let sc = s.scoring.unwrap();
        let actions = |a, shadow| {
            v(
                "floodguard_score_actions_total",
                &[("action", a), ("shadow", shadow)],
            )
        };
        assert_eq!(actions("throttle", "false"), sc.throttled as f64);
        assert_eq!(actions("challenge", "false"), sc.challenged as f64);
        assert_eq!(actions("ban", "false"), sc.banned as f64);
        assert_eq!(actions("ban", "true"), sc.shadow_bans as f64);
        assert!(sc.banned > 0);
        assert_eq!(
            v("floodguard_under_attack_requests_total", &[]),
            sc.under_attack_requests as f64
        );
        assert_eq!(v("floodguard_scored_clients", &[]), sc.clients as f64);
        // The flood was detected; its class flagged with its share.
        let snap = guard.snapshot();
        let d = snap.detection.unwrap();
        assert!(d.under_attack);
        assert_eq!(v("floodguard_under_attack", &[]), 1.0);
        assert_eq!(v("floodguard_request_rate", &[]), d.rate);
        assert_eq!(
            v("floodguard_flagged_classes", &[]),
            d.flagged_classes.len() as f64
        );
        assert!(v("floodguard_attack_duration_seconds", &[]) > 0.0);
        let flagged = d.flagged_classes.first().expect("a flagged class");
        let class = flagged.key.to_string();
        assert_eq!(
            v("floodguard_flagged_class_share", &[("class", &class)]),
            flagged.share
        );
        // Offenders: one series each, highest score first.
        let offenders: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == "floodguard_offender_score")
            .collect();
        assert_eq!(offenders.len(), snap.offenders.len());
        assert!(!offenders.is_empty() && offenders.len() <= 32);
        for (o, sample) in snap.offenders.iter().zip(&offenders) {
            assert_eq!(sample.label("client"), Some(o.client.to_string().as_str()));
            assert_eq!(sample.value as f32, o.report.score());
            let signal = o.report.top_signal().map_or("none", |s| s.name());
            assert_eq!(sample.label("signal"), Some(signal));
        }
    }

    #[test]
    fn output_is_deterministic() {
        let (_, guard) = flooded();
        assert_eq!(guard.prometheus(), guard.prometheus());
        let mut both = String::from("# a line of my own\n");
        guard.write_prometheus(&mut both);
        assert_eq!(both, format!("# a line of my own\n{}", guard.prometheus()));
    }

    #[test]
    fn scoring_families_only_when_scoring_is_on() {
        let guard = Guard::builder().build().unwrap();
        let text = guard.prometheus();
        let samples = parse(&text);
        assert_eq!(value(&samples, "floodguard_requests_total", &[]), 0.0);
        for absent in [
            "floodguard_rule_",
            "floodguard_score_",
            "floodguard_under_attack",
            "floodguard_offender_score",
        ] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        // The attack goes, the gauges stay, at 0.
        let (clock, guard) = flooded();
        clock.advance(Duration::from_secs(120));
        for i in 0..100u8 {
            let _ = guard.check(&parts(v4(1, 1, i % 4), BROWSER));
            clock.advance(Duration::from_millis(250));
        }
        let samples = parse(&guard.prometheus());
        assert_eq!(value(&samples, "floodguard_under_attack", &[]), 0.0);
        assert_eq!(
            value(&samples, "floodguard_attack_duration_seconds", &[]),
            0.0
        );
    }

    #[test]
    fn requests_without_a_peer_are_counted_as_such() {
        let guard = Guard::builder().build().unwrap();
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        assert!(guard.check(&parts).is_err());
        let samples = parse(&guard.prometheus());
        let reason = [("reason", "no_peer_address")];
        assert_eq!(value(&samples, "floodguard_refused_total", &reason), 1.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        let mut t = Text { out: &mut out };
        t.family("x_total", Kind::Counter, "Back\\slash and\nnewline.");
        let nasty = "a\"b\\c\nd} e=\"f\",";
        t.sample("x_total", &[("k", nasty), ("other", "")], 3u64);
        assert_eq!(
            out,
            "# HELP x_total Back\\\\slash and\\nnewline.\n# TYPE x_total counter\n\
             x_total{k=\"a\\\"b\\\\c\\nd} e=\\\"f\\\",\",other=\"\"} 3\n"
        );
        let samples = parse(&out);
        assert_eq!(samples[0].label("k"), Some(nasty));
        assert_eq!(samples[0].label("other"), Some(""));
    }

    #[test]
    fn special_floats_use_the_formats_spelling() {
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.25, 1e-9, 3.0] {
            v.write(&mut out);
            out.push(' ');
        }
        for v in [f32::NAN, f32::INFINITY, 87.79362f32] {
            v.write(&mut out);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf 0.25 0.000000001 3 NaN +Inf 87.79362 ");
    }

    #[test]
    fn gate_counters() {
        let gate = Gate::builder().build().unwrap();
        let text = gate.prometheus();
        let samples = parse(&text);
        assert_eq!(value(&samples, "floodguard_gate_accepted_total", &[]), 0.0);
        for reason in ["blocked", "per_ip", "per_prefix", "rate"] {
            let l = [("reason", reason)];
            assert_eq!(value(&samples, "floodguard_gate_refused_total", &l), 0.0);
        }
        assert_eq!(
            value(&samples, "floodguard_gate_open_connections", &[]),
            0.0
        );
        for name in [
            "floodguard_gate_tarpit_held_total",
            "floodguard_gate_tarpit_full_total",
            "floodguard_gate_tarpit_holding",
        ] {
            assert_eq!(value(&samples, name, &[]), 0.0, "{name}");
        }
        // Guard and gate share one buffer without clashing.
        let guard = Guard::builder().build().unwrap();
        let mut both = guard.prometheus();
        gate.write_prometheus(&mut both);
        parse(&both);
    }
}
