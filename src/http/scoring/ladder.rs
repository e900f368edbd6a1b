//! Client scoring: how a request looks and how its client behaves, as a
//! score from 0 to 100, and what the guard does at each score.
//!
//! A request's score is the sum of three parts, capped at 100:
//!
//! * **behaviour**, kept per client (an IPv4 address or an IPv6 /64) in a
//!   bounded [`ScoreTable`](crate::ScoreTable), decaying with a half-life:
//!   refusals by the rate rules, error answers, 404s; good answers take
//!   points away;
//! * **look**, from this request alone: header anomalies and an automated
//!   user agent;
//! * **context**: the request's fingerprint class is surging during an
//!   attack, its network is hot, the client has no history (or a good one).
//!
//! The [`Ladder`] maps the score to an action. Every signal's weight is in
//! [`Weights`], with the reason for its default.

use std::fmt;
use std::time::Duration;

/// Something that moves a client's score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Signal {
    /// The client's requests were refused by the rate rules at their
    /// normal cost (a refusal caused only by a throttle does not count).
    RatePressure,
    /// The service answered the client with errors (4xx other than 404, 5xx).
    ErrorResponses,
    /// The client asks for paths that do not exist (404s), as scanners do.
    NotFoundScanning,
    /// The request's headers are not what its kind of client sends
    /// (HTTP/1.0, no Host, a browser without Accept-Language).
    HeaderAnomalies,
    /// The request contradicts its own user agent: client hints naming
    /// another system or version, or hints from a browser that has none;
    /// or a header order and casing that browser does not write.
    Inconsistency,
    /// The user agent is a scripting tool or library, or missing.
    AutomatedClient,
    /// The client asks only for a route that surged in the attack, again
    /// and again, never for a page or an asset: a route mix no browser
    /// makes.
    RouteMix,
    /// The client is new, and its cluster surged during an attack.
    ClassSurge,
    /// The client's network is misbehaving or surging.
    HotPrefix,
    /// The client is not known good yet: fewer than
    /// [`Ladder::known_good_after`] good exchanges.
    NoHistory,
    /// The client had good exchanges before; takes points away.
    KnownGood,
    /// The request carried a session cookie that is not the client's:
    /// forged, expired, or issued to another network (one cookie shared
    /// across many addresses).
    SessionInvalid,
    /// The client was sent the session cookie and keeps coming back
    /// without it, as browsers do not.
    SessionNotReturned,
}

impl Signal {
    /// Every signal, in declaration order.
    pub const ALL: [Signal; 13] = [
        Signal::RatePressure,
        Signal::ErrorResponses,
        Signal::NotFoundScanning,
        Signal::HeaderAnomalies,
        Signal::Inconsistency,
        Signal::AutomatedClient,
        Signal::RouteMix,
        Signal::ClassSurge,
        Signal::HotPrefix,
        Signal::NoHistory,
        Signal::KnownGood,
        Signal::SessionInvalid,
        Signal::SessionNotReturned,
    ];

    /// A short snake_case name, as in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Signal::RatePressure => "rate_pressure",
            Signal::ErrorResponses => "error_responses",
            Signal::NotFoundScanning => "not_found_scanning",
            Signal::HeaderAnomalies => "header_anomalies",
            Signal::Inconsistency => "inconsistency",
            Signal::RouteMix => "route_mix",
            Signal::AutomatedClient => "automated_client",
            Signal::ClassSurge => "class_surge",
            Signal::HotPrefix => "hot_prefix",
            Signal::NoHistory => "no_history",
            Signal::KnownGood => "known_good",
            Signal::SessionInvalid => "session_invalid",
            Signal::SessionNotReturned => "session_not_returned",
        }
    }

    /// What the signal means, in a few words for an operator.
    pub fn describe(self) -> &'static str {
        match self {
            Signal::RatePressure => "refused by the rate rules",
            Signal::ErrorResponses => "answered with errors",
            Signal::NotFoundScanning => "asks for pages that do not exist (404s)",
            Signal::HeaderAnomalies => "headers unlike its kind of client",
            Signal::Inconsistency => "contradicts its own user agent",
            Signal::AutomatedClient => "a scripting tool, or no user agent",
            Signal::RouteMix => "hammers one surging route, never a page",
            Signal::ClassSurge => "new, in a cluster that surged in the attack",
            Signal::HotPrefix => "its network misbehaves or surges",
            Signal::NoHistory => "not known good yet",
            Signal::KnownGood => "known good: good exchanges before",
            Signal::SessionInvalid => "a session cookie not its own",
            Signal::SessionNotReturned => "does not return the session cookie",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Points each signal is worth. Behaviour points are added per event to the
/// client's decaying score; look and context points count for the request
/// at hand only.
///
/// The defaults are set so that no single look can reach the throttle
/// threshold (a curl user or an odd browser is not punished for what it
/// is), and that what a client's cluster or network did never acts on it
/// alone: the ladder acts only on a client's own evidence (its behaviour,
/// anomalies, inconsistency, automation, route mix, session cookie; see
/// [`Ladder::ban_evidence`]). Context (a surging cluster, a hot network, no
/// history during an attack) adds to it, and ranks newcomers low in
/// overload shedding.
///
/// ```
/// use floodguard::http::Weights;
/// let mut w = Weights::default();
/// w.not_found = 10.0; // this site has no dead links: scanners stand out
/// # let _ = w;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Weights {
    /// Per request refused by a rate rule: 10. Eight refusals within a
    /// half-life reach a ban; a client that touches a limit now and then,
    /// and backs off, stays far below it.
    pub rate_refusal: f32,
    /// Per 4xx (not 404, not floodguard's own refusals) or 5xx answer: 3.
    /// With `success_credit` 1 the score only climbs while more than a
    /// quarter of a client's answers are errors.
    pub error_response: f32,
    /// Per 404: 6. Fourteen missing paths in a half-life reach a ban;
    /// a browser following one dead link does not.
    pub not_found: f32,
    /// Taken away per 2xx/3xx answer: 1.
    pub success_credit: f32,
    /// Per header anomaly: 9, at most `anomaly_cap` (35) in all. Real
    /// browsers have none; the cap keeps looks alone under the throttle
    /// threshold.
    pub anomaly: f32,
    /// The most header anomalies can add: 35.
    pub anomaly_cap: f32,
    /// A scripting tool or library as user agent: 10. Many are legitimate
    /// (monitors, API clients), so it only tips the balance together with
    /// other signals.
    pub tool_user_agent: f32,
    /// No user agent at all: 20. Every browser and almost every library
    /// sends one.
    pub empty_user_agent: f32,
    /// Client hints contradicting the user agent
    /// ([`Anomaly::ClientHintsMismatch`](crate::http::Anomaly::ClientHintsMismatch)):
    /// 25. A browser does not do this; a script that copied one browser's
    /// headers and another's user agent does.
    pub inconsistency: f32,
    /// A header order or casing that does not fit the browser the user
    /// agent claims
    /// ([`Anomaly::HeaderOrderMismatch`](crate::http::Anomaly::HeaderOrderMismatch)):
    /// 25, reported as [`Signal::Inconsistency`] too. Own evidence enough
    /// to act on, not to ban by itself; with contradicting client hints as
    /// well (a copied head under another user agent), enough for a ban.
    pub header_order: f32,
    /// Per request after the first, while every request of the client went
    /// to one route and that route surged in the attack: 8, up to
    /// `route_mix_cap` (24) ...
    pub route_mix: f32,
    /// ... the most it adds for a client that does not claim a browser:
    /// 24. With an automated user agent that is enough own evidence for
    /// a ban (see [`Ladder::ban_evidence`]).
    pub route_mix_cap: f32,
    /// ... and for one that claims a browser: 24 too, under the ban
    /// evidence: a browser whose cached assets are not fetched again may
    /// look like this, so it is held, not banned, for its route mix alone.
    pub route_mix_cap_browser: f32,
    /// The client is new (no good exchange yet) and its cluster is flagged
    /// as surging during an attack: 40. Context, not evidence: with
    /// evidence of its own (an automated user agent and a route mix,
    /// anomalies) a newcomer of a surging cluster reaches a ban; without,
    /// it is only ranked low under overload.
    pub class_surge: f32,
    /// The client's network (IPv4 /24, IPv6 /48) is flagged as surging
    /// (20), or its other members misbehave: 20 × their behaviour score /
    /// 100. Not enough to act on alone; a neighbour of a bad client is not
    /// punished for it.
    pub hot_prefix: f32,
    /// Not known good yet, while the service is calm: 5.
    pub no_history: f32,
    /// Not known good yet, during an attack (or while overload protection
    /// sheds, from the first shed request, before the detector declares
    /// the attack): 15. New clients are the attack's most likely members
    /// (a bot may have had a page or two served before the attack was
    /// detected); known ones are preferred.
    pub no_history_under_attack: f32,
    /// At least [`Ladder::known_good_after`] good exchanges: −20.
    pub known_good: f32,
    /// A [session cookie](crate::http::SessionCookie) that is not the client's:
    /// forged, expired, or issued to another network: 35. Own evidence that
    /// acts (a new client that presents one is throttled: 35 + 5 of no
    /// history reach the throttle threshold) but never counts toward a
    /// ban, however much context joins it: a browser that moved to another
    /// network presents its old cookie once, and gets a new one with its
    /// next answer; a bot sharing one cookie across its addresses keeps
    /// presenting it.
    pub session_invalid: f32,
    /// The session cookie was sent and the client came back without it at
    /// least three times, a second or more after: 6. Own evidence, under
    /// [`Ladder::act_evidence`] by itself (a curl user, an API client is
    /// not punished for keeping no cookies), that adds to any other.
    pub session_not_returned: f32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            rate_refusal: 10.0,
            error_response: 3.0,
            not_found: 6.0,
            success_credit: 1.0,
            anomaly: 9.0,
            anomaly_cap: 35.0,
            tool_user_agent: 10.0,
            empty_user_agent: 20.0,
            inconsistency: 25.0,
            header_order: 25.0,
            route_mix: 8.0,
            route_mix_cap: 24.0,
            route_mix_cap_browser: 24.0,
            class_surge: 40.0,
            hot_prefix: 20.0,
            no_history: 5.0,
            no_history_under_attack: 15.0,
            known_good: -20.0,
            session_invalid: 35.0,
            session_not_returned: 6.0,
        }
    }
}

/// What the guard does with a request at a given score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Action {
    /// Serve it under the normal rules.
    Allow,
    /// Charge the rate rules [`Ladder::throttle_factor`] times the cost.
    Throttle,
    /// Answer with the challenge hook's page unless the request carries a
    /// solved challenge. Without a hook: hold back a newcomer of a cluster
    /// surging in an attack that sends at a pace no rate rule would stop
    /// (refuse the request with 429, `Retry-After: 1`, without a ban);
    /// throttle any other client, so that its own behaviour (the rate
    /// rules' refusals, the service's 404s) takes it on to a ban or back
    /// down.
    Challenge,
    /// Refuse it with 403 and ban the client.
    Ban,
}

impl Action {
    /// A short snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Throttle => "throttle",
            Action::Challenge => "challenge",
            Action::Ban => "ban",
        }
    }
}

/// Thresholds from score to [`Action`], and how bans escalate
/// (fail2ban-style: `ban_base × ban_factor^offences`, capped at
/// `ban_max`, with ± `ban_jitter` so banned bots do not all return at
/// once).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Ladder {
    /// Score from which requests are throttled: 40.
    pub throttle: f32,
    /// Score from which requests are challenged: 60.
    pub challenge: f32,
    /// Score from which the client is banned: 80 ...
    pub ban: f32,
    /// ... if its own evidence (behaviour, anomalies, inconsistency,
    /// automation, route mix, a session cookie not returned: the score
    /// without its cluster's, network's and history's points, nor an
    /// invalid session cookie's) is at least this: 30. With less, a ban score
    /// challenges (or, without a challenge hook, holds the request) instead.
    pub ban_evidence: f32,
    /// No action at all (throttle, challenge, hold) without this much own
    /// evidence: 10. A client that looks and behaves like a browser is at
    /// most ranked low under overload, whatever its cluster did.
    pub act_evidence: f32,
    /// Cost multiplier on the rate rules for throttled requests: 4.
    pub throttle_factor: u64,
    /// First ban: 60 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub ban_base: Duration,
    /// Each further offence multiplies the ban by this: 4.
    pub ban_factor: u32,
    /// Longest ban: 1 h.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub ban_max: Duration,
    /// Relative jitter on ban durations: 0.1 (± 10%).
    pub ban_jitter: f32,
    /// Good exchanges after which a client is known good: 3. Good
    /// exchanges count only while the service is calm (not under attack,
    /// and overload protection not shedding), so this reads:
    /// served well several times before the attack began (one is not
    /// enough: a bot's first request before the attack is detected is
    /// served too).
    pub known_good_after: u8,
    /// Throttle only as an observation: counted and logged, not applied.
    pub shadow_throttle: bool,
    /// Challenge only as an observation.
    pub shadow_challenge: bool,
    /// Ban only as an observation: counted and logged, nobody is banned.
    pub shadow_ban: bool,
}

impl Default for Ladder {
    fn default() -> Self {
        Ladder {
            throttle: 40.0,
            challenge: 60.0,
            ban: 80.0,
            ban_evidence: 30.0,
            act_evidence: 10.0,
            throttle_factor: 4,
            ban_base: Duration::from_secs(60),
            ban_factor: 4,
            ban_max: Duration::from_secs(3600),
            ban_jitter: 0.1,
            known_good_after: 3,
            shadow_throttle: false,
            shadow_challenge: false,
            shadow_ban: false,
        }
    }
}

impl Ladder {
    /// The action for `score`.
    pub fn action(&self, score: f32) -> Action {
        if score >= self.ban {
            Action::Ban
        } else if score >= self.challenge {
            Action::Challenge
        } else if score >= self.throttle {
            Action::Throttle
        } else {
            Action::Allow
        }
    }

    /// Whether `action` is only observed.
    pub fn is_shadow(&self, action: Action) -> bool {
        match action {
            Action::Allow => false,
            Action::Throttle => self.shadow_throttle,
            Action::Challenge => self.shadow_challenge,
            Action::Ban => self.shadow_ban,
        }
    }

    /// How long the ban for a client with `offences` earlier offences
    /// lasts; `unit` in [0, 1) picks the jitter. Saturates at
    /// `Duration::MAX` (a `ban_max` of `Duration::MAX` bans for good).
    pub fn ban_duration(&self, offences: u8, unit: f32) -> Duration {
        let factor = f64::from(self.ban_factor).powi(i32::from(offences));
        let base = self.ban_base.as_secs_f64() * factor;
        let capped = base.min(self.ban_max.as_secs_f64());
        let jitter =
            1.0 + f64::from(self.ban_jitter) * (2.0 * f64::from(unit).clamp(0.0, 1.0) - 1.0);
        Duration::try_from_secs_f64((capped * jitter).max(0.001)).unwrap_or(Duration::MAX)
    }

    pub(crate) fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError;
        let ordered = 0.0 < self.throttle
            && self.throttle <= self.challenge
            && self.challenge <= self.ban
            && self.ban <= 100.0;
        if !ordered {
            return Err(ConfigError::BadLadder {
                throttle: self.throttle.to_string(),
                challenge: self.challenge.to_string(),
                ban: self.ban.to_string(),
            });
        }
        for (field, v) in [
            ("ban_evidence", self.ban_evidence),
            ("act_evidence", self.act_evidence),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(ConfigError::OutOfRange {
                    field,
                    value: v.to_string(),
                    range: "0 or more",
                });
            }
        }
        if self.throttle_factor == 0 {
            return Err(ConfigError::Zero {
                field: "throttle_factor",
            });
        }
        if self.ban_base.is_zero() {
            return Err(ConfigError::ZeroDuration { field: "ban_base" });
        }
        if !(0.0..1.0).contains(&self.ban_jitter) {
            return Err(ConfigError::OutOfRange {
                field: "ban_jitter",
                value: self.ban_jitter.to_string(),
                range: "[0, 1)",
            });
        }
        Ok(())
    }
}

/// The most signals a [`ScoreReport`] lists.
const REPORTED: usize = 4;

/// A request's score and the signals that made it, largest first.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScoreReport {
    score: f32,
    parts: [(Option<Signal>, f32); REPORTED],
}

impl ScoreReport {
    /// The score, 0 to 100.
    pub fn score(&self) -> f32 {
        self.score
    }

    /// The signals that contributed most, with their points, largest in
    /// size first (a negative one, such as [`Signal::KnownGood`], counts
    /// by its size).
    pub fn signals(&self) -> impl Iterator<Item = (Signal, f32)> + '_ {
        self.parts.iter().filter_map(|&(s, p)| s.map(|s| (s, p)))
    }

    /// The largest contributor, if any.
    pub fn top_signal(&self) -> Option<Signal> {
        self.parts[0].0
    }

    /// Adds `points` for `signal`; keeps the largest by magnitude.
    pub(crate) fn add(&mut self, signal: Signal, points: f32) {
        if points == 0.0 {
            return;
        }
        self.score += points;
        let mut item = (Some(signal), points);
        for slot in &mut self.parts {
            let replace = match slot.0 {
                None => true,
                Some(_) => item.1.abs() > slot.1.abs(),
            };
            if replace {
                std::mem::swap(slot, &mut item);
                if item.0.is_none() {
                    break;
                }
            }
        }
    }

    /// Caps the score to 0..=100 once every part is in.
    pub(crate) fn finish(mut self) -> Self {
        self.score = self.score.clamp(0.0, 100.0);
        self
    }
}

impl fmt::Display for ScoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.0}", self.score)?;
        let mut first = true;
        for (s, p) in self.signals() {
            f.write_str(if first { " (" } else { ", " })?;
            first = false;
            write!(f, "{s} {p:+.0}")?;
        }
        if !first {
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_maps_scores_to_actions() {
        let l = Ladder::default();
        assert_eq!(l.action(0.0), Action::Allow);
        assert_eq!(l.action(39.9), Action::Allow);
        assert_eq!(l.action(40.0), Action::Throttle);
        assert_eq!(l.action(60.0), Action::Challenge);
        assert_eq!(l.action(80.0), Action::Ban);
        assert_eq!(l.action(100.0), Action::Ban);
    }

    #[test]
    fn bans_escalate_and_cap_with_jitter() {
        let l = Ladder::default();
        assert_eq!(l.ban_duration(0, 0.5), Duration::from_secs(60));
        assert_eq!(l.ban_duration(1, 0.5), Duration::from_secs(240));
        assert_eq!(l.ban_duration(2, 0.5), Duration::from_secs(960));
        assert_eq!(l.ban_duration(3, 0.5), Duration::from_secs(3600));
        assert_eq!(l.ban_duration(200, 0.5), Duration::from_secs(3600));
        let low = l.ban_duration(0, 0.0).as_secs_f64();
        let high = l.ban_duration(0, 0.999).as_secs_f64();
        assert!((53.9..54.1).contains(&low) && (65.9..66.0).contains(&high));
    }

    #[test]
    fn a_ban_max_of_duration_max_saturates_instead_of_panicking() {
        let l = Ladder {
            ban_max: Duration::MAX,
            ..Ladder::default()
        };
        assert!(l.validate().is_ok());
        // 60 s × 4^17 with 10% jitter up is past what a Duration holds in
        // f64 seconds only at the far end; every offence count must work.
        for offences in 0..=u8::MAX {
            for unit in [0.0, 0.5, 0.999, 1.0] {
                let d = l.ban_duration(offences, unit);
                assert!(d >= Duration::from_secs(53), "{offences} {unit} {d:?}");
            }
        }
        assert_eq!(l.ban_duration(u8::MAX, 0.999), Duration::MAX);
    }

    #[test]
    fn ladder_validation_names_the_problem() {
        assert!(Ladder::default().validate().is_ok());
        let l = Ladder {
            challenge: 90.0,
            ..Ladder::default()
        };
        assert!(l.validate().unwrap_err().to_string().contains("throttle"));
        let l = Ladder {
            ban_jitter: 1.5,
            ..Ladder::default()
        };
        assert!(l.validate().unwrap_err().to_string().contains("ban_jitter"));
    }

    #[test]
    fn report_keeps_the_largest_signals() {
        let mut r = ScoreReport::default();
        r.add(Signal::NoHistory, 5.0);
        r.add(Signal::ClassSurge, 60.0);
        r.add(Signal::AutomatedClient, 10.0);
        r.add(Signal::KnownGood, -20.0);
        r.add(Signal::HotPrefix, 2.0);
        let r = r.finish();
        assert_eq!(r.score(), 57.0);
        let names: Vec<_> = r.signals().map(|(s, _)| s).collect();
        assert_eq!(
            names,
            [
                Signal::ClassSurge,
                Signal::KnownGood,
                Signal::AutomatedClient,
                Signal::NoHistory
            ]
        );
        assert_eq!(
            r.to_string(),
            "57 (class_surge +60, known_good -20, automated_client +10, no_history +5)"
        );
    }
}
