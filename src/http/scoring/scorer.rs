//! The scoring state of a guard: client and network scores, the detector,
//! the challenge hook, events and the worst offenders seen.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::StatusCode;
use parking_lot::Mutex;

use super::assessment::{Assessment, Look, Watch};
use super::challenge::Challenge;
use super::detect::{Detector, Event, Sighting, site};
use super::ladder::{Action, ScoreReport, Signal};
use super::log::{BanWave, log_event};
use super::profile::ProfileTable;
use super::tuning::Tuning;
use crate::http::identify::facts::Facts;
use crate::http::identify::fingerprint::{Anomaly, RequestLook};
use crate::http::identify::session::Presented;
use crate::http::{Scoring, UaFamily};
use crate::ip::PrefixLengths;
use crate::stats::Striped;
use crate::{ConfigError, IpPrefix, ScoreChange, ScoreRecord, ScoreTable, Timestamp};

/// How many offenders a snapshot lists at most.
pub(crate) const MAX_OFFENDERS: usize = 32;

/// Counters of the scorer, striped per thread.
#[derive(Clone, Copy)]
pub(crate) enum ScoreCount {
    Throttled,
    Challenged,
    ChallengesPassed,
    Banned,
    ShadowThrottles,
    ShadowChallenges,
    ShadowBans,
    UnderAttackRequests,
    Held,
}
pub(crate) const SCORE_COUNTS: usize = 9;

impl From<ScoreCount> for usize {
    fn from(c: ScoreCount) -> usize {
        c as usize
    }
}

/// A client that reached at least the throttle threshold.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Offender {
    /// The client: an IPv4 address or an IPv6 /64.
    pub client: IpPrefix,
    /// Its highest score and the signals behind it.
    pub report: ScoreReport,
    /// What the ladder did at that score.
    pub action: Action,
    /// When, on the guard's clock.
    pub at: Timestamp,
}

/// A ban the guard should put in place.
pub(crate) struct BanOrder {
    pub(crate) client: IpPrefix,
    pub(crate) duration: Duration,
}

pub(crate) type EventHook = Arc<dyn Fn(&Event) + Send + Sync>;

pub(crate) struct Scorer {
    /// Weights and ladder, swapped whole by a reload.
    tuning: ArcSwap<Tuning>,
    clients: ScoreTable,
    sites: ScoreTable,
    /// Requests per client, decaying: how hard each one uses the service.
    volume: ScoreTable,
    /// Which routes each client asked for.
    profiles: ProfileTable,
    pub(crate) detector: Detector,
    pub(crate) challenge: Option<Arc<dyn Challenge>>,
    on_event: Option<EventHook>,
    pub(crate) counters: Striped<SCORE_COUNTS>,
    offenders: Mutex<Vec<Offender>>,
    ban_wave: BanWave,
    jitter: ahash::RandomState,
}

/// Half-life of the request volume a client is ranked by under overload:
/// one point per request, so a steady `r` requests a second holds
/// `r × 2 / ln 2 ≈ 2.9 r` points (capped at 100), reached within a few
/// seconds: a client that starts hammering shows within about a second.
pub(crate) const VOLUME_HALF_LIFE: Duration = Duration::from_secs(2);

/// Volume from which a client ranks lower under overload: about four
/// requests a second, sustained; several times what a person browsing
/// sends, and a fifth of the default per-address limit.
pub(crate) const HEAVY_VOLUME: f32 = 12.0;

/// Volume under which a client ranks higher under overload: about 1.4
/// requests a second, sustained, as a person browses.
pub(crate) const LIGHT_VOLUME: f32 = 4.0;

/// Tags of stored behaviour: what last added to it.
pub(super) const TAG_RATE: u8 = 1;
pub(super) const TAG_ERRORS: u8 = 2;
pub(super) const TAG_NOT_FOUND: u8 = 3;

pub(super) fn behaviour_signal(tag: u8) -> Signal {
    match tag {
        TAG_ERRORS => Signal::ErrorResponses,
        TAG_NOT_FOUND => Signal::NotFoundScanning,
        _ => Signal::RatePressure,
    }
}

/// Subscriber-level key of a client: IPv4 address, IPv6 /64 (one host or
/// home, however many addresses it rotates through).
pub(super) fn subscriber(ip: IpAddr) -> IpPrefix {
    IpPrefix::of(ip, PrefixLengths::new(32, 64).expect("valid lengths"))
}

impl Scorer {
    /// Weights and ladder in force, copied (a few dozen bytes).
    pub(super) fn tuning(&self) -> Tuning {
        **self.tuning.load()
    }

    pub(super) fn set_tuning(&self, tuning: Tuning) {
        self.tuning.store(Arc::new(tuning));
    }

    pub(crate) fn new(
        config: Scoring,
        on_event: Option<EventHook>,
        now: Timestamp,
    ) -> Result<Self, ConfigError> {
        config.ladder.validate()?;
        let sites = (config.capacity / 4).max(4);
        Ok(Scorer {
            tuning: ArcSwap::from_pointee(Tuning {
                weights: config.weights,
                ladder: config.ladder,
            }),
            clients: ScoreTable::new(config.capacity, config.half_life)?,
            sites: ScoreTable::new(sites, config.half_life)?,
            volume: ScoreTable::new(config.capacity, VOLUME_HALF_LIFE)?,
            profiles: ProfileTable::new(config.capacity)?,
            detector: Detector::new(config.detection, now)?,
            challenge: config.challenge,
            on_event,
            counters: Striped::default(),
            offenders: Mutex::new(Vec::with_capacity(MAX_OFFENDERS)),
            ban_wave: BanWave::default(),
            jitter: ahash::RandomState::new(),
        })
    }

    /// Scores a request from `ip` to its path, secure if it says so itself,
    /// and picks the ladder's action.
    #[cfg(test)]
    pub(crate) fn assess_request(
        &self,
        parts: &http::request::Parts,
        ip: IpAddr,
        now: Timestamp,
    ) -> Assessment {
        let mut facts = Facts::new(parts, now);
        facts.route = parts.uri.path();
        let seen = facts.read_look(false, |_| false);
        self.assess(&facts, ip, &seen)
    }

    /// Scores a request from `ip` that looks as `seen`, and picks the
    /// ladder's action.
    pub(crate) fn assess(&self, facts: &Facts<'_>, ip: IpAddr, seen: &RequestLook) -> Assessment {
        let now = facts.now;
        // One version of the weights and ladder for this request, kept in
        // its assessment for the verdict and the answer.
        let t = self.tuning();
        let w = &t.weights;
        let family = seen.ua.family;
        let client = subscriber(ip);
        let client_key = self.clients.hash(&client);
        let site = site(ip);
        let site_key = self.sites.hash(&site);
        let route_hash = self.detector.route_hash(facts.route);
        let busy_stamp = self.detector.busy_stamp();
        let (before, profile) =
            self.profiles
                .visit(client_key, route_hash, facts.session, busy_stamp, now);
        let session_valid = facts.session == Some(Presented::Valid);
        // A missing user agent is the automated-client signal's; client
        // hints or a header order that contradict the user agent are the
        // inconsistency signal's: none counts twice.
        let found = seen.anomalies;
        let hints = found.contains(Anomaly::ClientHintsMismatch);
        let order = found.contains(Anomaly::HeaderOrderMismatch);
        let mismatch = hints || order;
        let n = (found.len()
            - usize::from(found.contains(Anomaly::EmptyUserAgent))
            - usize::from(hints)
            - usize::from(order)) as f32;
        let automated = match family {
            UaFamily::Tool => w.tool_user_agent,
            UaFamily::Empty => w.empty_user_agent,
            _ => 0.0,
        };
        let ids = seen.cluster.ids();
        let events = self.detector.observe(
            now,
            &Sighting {
                cluster: seen.cluster,
                cluster_ids: ids,
                ip,
                site,
                route: facts.route,
                route_hash,
                new_client: before.is_none() && !session_valid,
                suspect: automated > 0.0 || n > 0.0 || mismatch,
            },
        );
        self.emit_all(events, now);
        if self.detector.under_attack() {
            self.counters.add(ScoreCount::UnderAttackRequests, 1);
        }
        // A degraded service counts as trouble for new clients' scores from
        // the moment it shows, before a tick declares an attack.
        let under_attack = !self.detector.calm();
        let record = self.clients.get_hashed(client_key, now);
        // Not known good yet: a bot may have had a page or two served
        // before the attack was seen.
        // A valid session cookie says the client was here before, whatever
        // its record (forgotten, or kept under another address of its /64).
        let newcomer = record.is_none_or(|r| r.good < t.ladder.known_good_after) && !session_valid;
        let volume = self
            .volume
            .update_hashed(client_key, now, ScoreChange::points(1.0))
            .score;
        // The network's score holds its members' behaviour, this client's
        // included; the signal is about the others.
        let others = self
            .sites
            .get_hashed(site_key, now)
            .map_or(0.0, |r| r.score)
            - record.map_or(0.0, |r| r.score);
        // Asking only for a route that surged in the attack, again and
        // again, and never for a page or an asset: a route mix no browser
        // makes. A browser's claim caps it below a ban by itself.
        let route_mix = match profile.single_route() {
            Some(requests) if requests >= 2 && self.detector.route_flagged(route_hash) => {
                let cap = if family == UaFamily::Browser {
                    w.route_mix_cap_browser
                } else {
                    w.route_mix_cap
                };
                (w.route_mix * f32::from(requests - 1)).min(cap)
            }
            _ => 0.0,
        };
        let look = Look {
            anomalies: (n * w.anomaly).min(w.anomaly_cap),
            inconsistency: if hints { w.inconsistency } else { 0.0 }
                + if order { w.header_order } else { 0.0 },
            automated,
            route_mix,
            session_invalid: if facts.session == Some(Presented::Invalid) {
                w.session_invalid
            } else {
                0.0
            },
            session_not_returned: if profile.session_misses() >= 3 {
                w.session_not_returned
            } else {
                0.0
            },
            class_surge: if newcomer && self.detector.cluster_flagged_at(ids, now) {
                w.class_surge
            } else {
                0.0
            },
            hot_prefix: if self.detector.site_flagged(site) {
                w.hot_prefix
            } else {
                w.hot_prefix * others.max(0.0) / 100.0
            },
            under_attack,
            people_like: matches!(family, UaFamily::Browser | UaFamily::Other) && found.is_empty(),
            session_valid,
        };
        let report = Self::report(&t, record, &look);
        Assessment {
            client,
            client_key,
            site_key,
            volume,
            record,
            look,
            fingerprint: seen.fingerprint,
            cluster: seen.cluster,
            profile,
            busy_stamp,
            report,
            action: Self::action(&t, record, &look, &report),
            tuning: t,
            session_unreturned_news: profile.session_misses() >= 3
                && before.is_some_and(|b| b.session_misses() == 2),
        }
    }

    /// The client's own evidence: its stored behaviour and what its own
    /// requests show (anomalies, inconsistency, automation, route mix,
    /// what it did with the session cookie); not what its cluster or
    /// network did.
    fn evidence(record: Option<ScoreRecord>, look: &Look) -> f32 {
        record.map_or(0.0, |r| r.score)
            + look.anomalies
            + look.inconsistency
            + look.automated
            + look.route_mix
            + look.session_invalid
            + look.session_not_returned
    }

    /// The ladder's action at `report`'s score, held back to what the
    /// client's own evidence supports: guilt is per client, and a cluster
    /// or network alone never bans, throttles or holds anyone. An invalid
    /// session cookie is evidence enough to act on, never toward a ban: a
    /// browser that moved to another network presents one too, until its
    /// next answer brings it a new one.
    fn action(
        t: &Tuning,
        record: Option<ScoreRecord>,
        look: &Look,
        report: &ScoreReport,
    ) -> Action {
        let evidence = Self::evidence(record, look);
        let l = &t.ladder;
        match l.action(report.score()) {
            Action::Ban if evidence - look.session_invalid < l.ban_evidence => {
                if evidence < l.act_evidence {
                    Action::Allow
                } else {
                    Action::Challenge
                }
            }
            a if a > Action::Allow && evidence < l.act_evidence => Action::Allow,
            a => a,
        }
    }

    /// The score of a client with `record` making a request that looks
    /// like `look`.
    fn report(t: &Tuning, record: Option<ScoreRecord>, look: &Look) -> ScoreReport {
        let w = &t.weights;
        let mut r = ScoreReport::default();
        let good = record.map_or(0, |r| r.good);
        if let Some(rec) = record {
            // Stored behaviour is one number; it is reported under the kind
            // of misbehaviour that last added to it.
            r.add(behaviour_signal(rec.tag), rec.score);
        }
        r.add(Signal::HeaderAnomalies, look.anomalies);
        r.add(Signal::Inconsistency, look.inconsistency);
        r.add(Signal::AutomatedClient, look.automated);
        r.add(Signal::RouteMix, look.route_mix);
        r.add(Signal::SessionInvalid, look.session_invalid);
        r.add(Signal::SessionNotReturned, look.session_not_returned);
        r.add(Signal::ClassSurge, look.class_surge);
        r.add(Signal::HotPrefix, look.hot_prefix);
        if good < t.ladder.known_good_after {
            let p = if look.under_attack {
                w.no_history_under_attack
            } else {
                w.no_history
            };
            r.add(Signal::NoHistory, p);
        } else {
            r.add(Signal::KnownGood, w.known_good);
        }
        r.finish()
    }

    /// A rate rule refused the request: the client's behaviour score
    /// grows. Returns the new assessment (its action may now be a ban).
    pub(crate) fn refused(&self, a: &Assessment, now: Timestamp) -> Assessment {
        let points = a.tuning.weights.rate_refusal;
        let change = ScoreChange {
            points,
            tag: TAG_RATE,
            ..ScoreChange::default()
        };
        let record = self.clients.update_hashed(a.client_key, now, change);
        self.sites.update_hashed(a.site_key, now, change);
        let report = Self::report(&a.tuning, Some(record), &a.look);
        Assessment {
            record: Some(record),
            report,
            action: Self::action(&a.tuning, Some(record), &a.look, &report),
            ..*a
        }
    }

    /// The service answered an admitted request with `status` after
    /// `latency`.
    pub(crate) fn answered(
        &self,
        a: &Watch,
        status: StatusCode,
        latency: Duration,
        now: Timestamp,
    ) {
        let error = status.is_client_error() || status.is_server_error();
        self.detector.observe_answer(latency, error);
        let w = &a.answer;
        let (points, good, tag) = if status.is_success() || status.is_redirection() {
            // Good standing is earned at a person's pace only: an attacker
            // cannot build it by hammering. While calm, by any client; in
            // trouble (under attack, or degraded), only by requests that
            // look like a person's browser from a client that asked for
            // more than one route, so that newcomers who behave like people
            // earn it during an attack too, and a bot aimed at one route
            // does not.
            let light = a.volume < LIGHT_VOLUME;
            let good = light && (self.detector.calm() || a.people_like);
            (-w.success_credit, good, 0)
        } else if status == StatusCode::NOT_FOUND {
            (w.not_found, false, TAG_NOT_FOUND)
        } else if error {
            (w.error_response, false, TAG_ERRORS)
        } else {
            return;
        };
        let change = ScoreChange {
            points,
            good,
            tag,
            ..ScoreChange::default()
        };
        self.clients.update_hashed(a.client_key, now, change);
        if points > 0.0 {
            self.sites
                .update_hashed(a.site_key, now, ScoreChange::points(points));
        }
    }

    /// The session cookie was sent in the answer to a request of the
    /// client `a` watches.
    pub(crate) fn session_issued(&self, a: &Watch, now: Timestamp) {
        self.profiles.session_issued(a.client_key, now);
    }

    /// The ban for an assessment whose action is [`Action::Ban`]: records
    /// the offence, reports it, and returns what to ban unless the ban is
    /// in shadow mode.
    pub(crate) fn ban(&self, a: &Assessment, now: Timestamp) -> Option<BanOrder> {
        let offences = a.record.map_or(0, |r| r.offences);
        let unit = (self.jitter.hash_one((now, a.client_key)) >> 40) as f32 / (1u64 << 24) as f32;
        let duration = a.tuning.ladder.ban_duration(offences, unit);
        let shadow = a.tuning.ladder.shadow_ban;
        self.clients.update_hashed(
            a.client_key,
            now,
            ScoreChange {
                offence: true,
                ..ScoreChange::default()
            },
        );
        self.note_offender(a, now);
        if shadow {
            self.counters.add(ScoreCount::ShadowBans, 1);
            // Every request of a client over the threshold would be
            // banned; its first time is the news.
            if offences > 0 {
                return None;
            }
        } else {
            self.counters.add(ScoreCount::Banned, 1);
        }
        self.emit(
            Event::ClientBanned {
                client: a.client,
                duration,
                report: a.report,
                offences,
                shadow,
            },
            now,
        );
        (!shadow).then_some(BanOrder {
            client: a.client,
            duration,
        })
    }

    /// Keeps the worst offenders seen: one place per client, the lowest
    /// score leaving first when full.
    pub(crate) fn note_offender(&self, a: &Assessment, now: Timestamp) {
        let o = Offender {
            client: a.client,
            report: a.report,
            action: a.action,
            at: now,
        };
        let mut list = self.offenders.lock();
        if let Some(e) = list.iter_mut().find(|e| e.client == o.client) {
            if o.report.score() >= e.report.score() || o.action >= e.action {
                *e = o;
            }
        } else if list.len() < MAX_OFFENDERS {
            list.push(o);
        } else if let Some(e) = list
            .iter_mut()
            .min_by(|x, y| x.report.score().total_cmp(&y.report.score()))
            .filter(|e| e.report.score() < o.report.score())
        {
            *e = o;
        }
    }

    /// Client records held now.
    pub(crate) fn clients_held(&self) -> usize {
        self.clients.occupancy()
    }

    /// Client records dropped to make room.
    pub(crate) fn client_evictions(&self) -> u64 {
        self.clients.evictions()
    }

    /// The worst offenders, highest score first.
    pub(crate) fn offenders(&self) -> Vec<Offender> {
        let mut list = self.offenders.lock().clone();
        list.sort_by(|x, y| y.report.score().total_cmp(&x.report.score()));
        list
    }

    fn emit_all(&self, events: Vec<Event>, now: Timestamp) {
        for e in events {
            self.emit(e, now);
        }
        self.ban_wave.flush_due(now);
    }

    pub(crate) fn emit(&self, e: Event, now: Timestamp) {
        log_event(&e, &self.ban_wave, now);
        if let Some(hook) = &self.on_event {
            hook(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::request::Parts;

    use super::*;
    use crate::http::PeerAddr;
    use crate::http::identify::fingerprint::look;
    use crate::http::identify::wire::WireHead;

    const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    fn scorer() -> Scorer {
        Scorer::new(Scoring::default(), None, Timestamp::ZERO).unwrap()
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    fn parts(version: http::Version, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::get("/").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut p, ()) = b.body(()).unwrap().into_parts();
        p.extensions
            .insert(PeerAddr("192.0.2.1:1".parse().unwrap()));
        p
    }

    fn browser() -> Parts {
        parts(
            http::Version::HTTP_11,
            &[
                ("host", "shop.test"),
                ("user-agent", CHROME),
                ("accept", "text/html"),
                ("accept-language", "en"),
                ("accept-encoding", "gzip, br"),
                ("sec-fetch-mode", "navigate"),
            ],
        )
    }

    fn points(r: &ScoreReport, signal: Signal) -> f32 {
        r.signals()
            .find(|(s, _)| *s == signal)
            .map_or(0.0, |(_, p)| p)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_browser_scores_only_no_history() {
        let sc = scorer();
        let a = sc.assess_request(&browser(), ip("192.0.2.1"), at(0));
        assert_eq!(a.report.score(), 5.0);
        assert_eq!(points(&a.report, Signal::NoHistory), 5.0);
        assert_eq!(a.action, Action::Allow);
    }

    #[test]
    fn header_anomalies_count_each_up_to_the_cap() {
        let sc = scorer();
        // HTTP/1.0, no Host, no Accept, no Accept-Language, no compression,
        // no Sec-Fetch: six anomalies, capped at 35.
        let p = parts(http::Version::HTTP_10, &[("user-agent", CHROME)]);
        let a = sc.assess_request(&p, ip("192.0.2.1"), at(0));
        assert_eq!(points(&a.report, Signal::HeaderAnomalies), 35.0);
        let p = parts(
            http::Version::HTTP_11,
            &[
                ("host", "h"),
                ("user-agent", "curl/8.5.0"),
                ("accept", "*/*"),
            ],
        );
        let a = sc.assess_request(&p, ip("192.0.2.2"), at(0));
        assert_eq!(points(&a.report, Signal::HeaderAnomalies), 0.0);
        assert_eq!(points(&a.report, Signal::AutomatedClient), 10.0);
    }

    #[test]
    fn a_missing_user_agent_counts_once() {
        let sc = scorer();
        let p = parts(http::Version::HTTP_11, &[("host", "h"), ("accept", "*/*")]);
        let a = sc.assess_request(&p, ip("192.0.2.1"), at(0));
        assert_eq!(points(&a.report, Signal::AutomatedClient), 20.0);
        assert_eq!(points(&a.report, Signal::HeaderAnomalies), 0.0);
    }

    #[test]
    fn refusals_build_rate_pressure_to_a_ban() {
        let sc = scorer();
        let mut a = sc.assess_request(&browser(), ip("192.0.2.1"), at(0));
        for _ in 0..7 {
            a = sc.refused(&a, at(0));
        }
        assert_eq!(points(&a.report, Signal::RatePressure), 70.0);
        assert_eq!(a.action, Action::Challenge);
        a = sc.refused(&a, at(0));
        assert_eq!(a.action, Action::Ban);
        let order = sc.ban(&a, at(0)).unwrap();
        assert_eq!(order.client.to_string(), "192.0.2.1/32");
        // The offence is remembered for the next ban.
        let again = sc.assess_request(&browser(), ip("192.0.2.1"), at(1));
        assert_eq!(again.record.unwrap().offences, 1);
    }

    #[test]
    fn error_answers_grow_only_while_they_dominate() {
        let sc = scorer();
        let a = sc.assess_request(&browser(), ip("192.0.2.1"), at(0));
        let answer = |status: u16| {
            let status = StatusCode::from_u16(status).unwrap();
            sc.answered(&a.watch(), status, Duration::ZERO, at(0));
        };
        // One error in four answers: the score stays at 0.
        for _ in 0..10 {
            answer(500);
            for _ in 0..3 {
                answer(200);
            }
        }
        let r = sc.assess_request(&browser(), ip("192.0.2.1"), at(0));
        assert_eq!(points(&r.report, Signal::ErrorResponses), 0.0);
        assert_eq!(points(&r.report, Signal::KnownGood), -20.0);
        for _ in 0..5 {
            answer(503);
        }
        let r = sc.assess_request(&browser(), ip("192.0.2.1"), at(0));
        assert_eq!(points(&r.report, Signal::ErrorResponses), 15.0);
        answer(404);
        let r = sc.assess_request(&browser(), ip("192.0.2.1"), at(0));
        assert_eq!(points(&r.report, Signal::NotFoundScanning), 21.0);
    }

    #[test]
    fn neighbours_misbehaving_make_a_prefix_hot_but_not_oneself() {
        let sc = scorer();
        let bad = sc.assess_request(&browser(), ip("192.0.2.66"), at(0));
        let mut a = bad;
        for _ in 0..5 {
            a = sc.refused(&a, at(0));
        }
        // The client's own behaviour is not counted again as its network's.
        let me = sc.assess_request(&browser(), ip("192.0.2.66"), at(0));
        assert_eq!(points(&me.report, Signal::HotPrefix), 0.0);
        // A neighbour in the same /24 gets 20 × 50 / 100.
        let n = sc.assess_request(&browser(), ip("192.0.2.7"), at(0));
        assert_eq!(points(&n.report, Signal::HotPrefix), 10.0);
        // Another network does not.
        let far = sc.assess_request(&browser(), ip("198.51.100.7"), at(0));
        assert_eq!(points(&far.report, Signal::HotPrefix), 0.0);
    }

    #[test]
    fn behaviour_decays_with_the_half_life() {
        let sc = scorer();
        let mut a = sc.assess_request(&browser(), ip("192.0.2.1"), at(0));
        for _ in 0..4 {
            a = sc.refused(&a, at(0));
        }
        let later = sc.assess_request(&browser(), ip("192.0.2.1"), at(60_000));
        assert_eq!(points(&later.report, Signal::RatePressure), 20.0);
    }

    #[test]
    fn offenders_keep_the_worst_per_client_within_bounds() {
        let sc = scorer();
        for i in 0..100u32 {
            // Each in a network of its own: no neighbour makes it hot.
            let ip = IpAddr::from([10, i as u8, 0, 1]);
            let mut a = sc.assess_request(&browser(), ip, at(0));
            for _ in 0..(i % 9) {
                a = sc.refused(&a, at(0));
            }
            sc.note_offender(&a, at(0));
        }
        let list = sc.offenders();
        assert_eq!(list.len(), MAX_OFFENDERS);
        assert!(
            list.windows(2)
                .all(|w| w[0].report.score() >= w[1].report.score())
        );
        assert_eq!(list[0].report.score(), 85.0);
    }

    fn with_headers(path: &str, headers: &[(&str, &str)], ip: &str) -> Parts {
        let mut b = http::Request::get(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut p, ()) = b.body(()).unwrap().into_parts();
        p.extensions
            .insert(PeerAddr(SocketAddr::new(ip.parse().unwrap(), 1)));
        p
    }

    const CHROME_HEADERS: [(&str, &str); 7] = [
        ("host", "shop.test"),
        (
            "sec-ch-ua",
            "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
        ),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("user-agent", CHROME),
        ("accept", "text/html"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en"),
    ];

    fn chrome(path: &str, ip: &str) -> Parts {
        with_headers(path, &CHROME_HEADERS, ip)
    }

    /// Chrome's headers with a Windows user agent: the hints say Linux.
    fn spoofed(path: &str, ip: &str) -> Parts {
        let mut h = CHROME_HEADERS;
        h[3] = ("user-agent", CHROME_WINDOWS);
        with_headers(path, &h, ip)
    }

    fn tool(path: &str, ip: &str) -> Parts {
        with_headers(
            path,
            &[
                ("host", "shop.test"),
                ("user-agent", "curl/8.5.0"),
                ("accept", "*/*"),
            ],
            ip,
        )
    }

    const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    /// A scorer under attack with the clusters of `flagged` and the route
    /// `/search` flagged.
    fn under_attack(flagged: &[Parts]) -> Scorer {
        let sc = scorer();
        let ids: Vec<u64> = flagged
            .iter()
            .flat_map(|p| {
                let c = look(p, None, false, true).cluster;
                c.ids()
            })
            .collect();
        sc.detector
            .force_attack(&ids, &[sc.detector.route_hash("/search")]);
        sc
    }

    #[test]
    fn a_browser_of_a_flagged_cluster_is_only_ranked_low_never_banned() {
        let sc = under_attack(&[chrome("/", "192.0.2.1")]);
        for i in 0..10 {
            let a = sc.assess_request(
                &chrome("/search", "198.51.100.7"),
                ip("198.51.100.7"),
                at(i * 500),
            );
            assert_eq!(points(&a.report, Signal::ClassSurge), 40.0);
            assert!(a.flagged_newcomer() && a.newcomer_in_trouble());
            // Its own evidence is a route mix alone, capped for a browser:
            // held back at most, never banned.
            assert!(
                a.action <= Action::Challenge,
                "{}: {:?}",
                a.report,
                a.action
            );
            if i < 2 {
                assert_eq!(a.action, Action::Allow, "{}", a.report);
            }
        }
        // One that asks for pages and assets is not even held.
        for (i, path) in ["/", "/static/app.css", "/search", "/product/1"]
            .iter()
            .enumerate()
        {
            let a = sc.assess_request(
                &chrome(path, "198.51.100.8"),
                ip("198.51.100.8"),
                at(i as u64),
            );
            assert_eq!(a.action, Action::Allow, "{path}: {}", a.report);
            assert_eq!(points(&a.report, Signal::RouteMix), 0.0);
        }
    }

    #[test]
    fn a_tool_of_a_flagged_cluster_is_held_then_banned_on_its_own_route_mix() {
        let sc = under_attack(&[tool("/", "192.0.2.1")]);
        let actions: Vec<Action> = (0..4)
            .map(|i| {
                sc.assess_request(
                    &tool("/search", "203.0.113.9"),
                    ip("203.0.113.9"),
                    at(i * 500),
                )
                .action
            })
            .collect();
        assert_eq!(
            actions,
            [
                Action::Challenge,
                Action::Challenge,
                Action::Challenge,
                Action::Ban
            ]
        );
        let a = sc.assess_request(
            &tool("/search", "203.0.113.9"),
            ip("203.0.113.9"),
            at(2_000),
        );
        let top: Vec<Signal> = a.report.signals().map(|(s, _)| s).collect();
        assert!(
            top.contains(&Signal::RouteMix) && top.contains(&Signal::ClassSurge),
            "{}",
            a.report
        );
        // The same tool on routes that did not surge is only held.
        for i in 0..6 {
            let path = if i % 2 == 0 { "/api/a" } else { "/api/b" };
            let a = sc.assess_request(&tool(path, "203.0.113.10"), ip("203.0.113.10"), at(i));
            assert_eq!(a.action, Action::Challenge, "{}", a.report);
        }
    }

    #[test]
    fn a_spoofed_browser_is_held_at_once_and_banned_once_its_route_mix_shows() {
        let sc = under_attack(&[spoofed("/", "192.0.2.1")]);
        let a = sc.assess_request(
            &spoofed("/search", "203.0.113.20"),
            ip("203.0.113.20"),
            at(0),
        );
        assert_eq!(points(&a.report, Signal::Inconsistency), 25.0);
        assert_eq!(a.action, Action::Challenge, "{}", a.report);
        let a = sc.assess_request(
            &spoofed("/search", "203.0.113.20"),
            ip("203.0.113.20"),
            at(500),
        );
        assert_eq!(a.action, Action::Ban, "{}", a.report);
        // Outside an attack the inconsistency alone does nothing.
        let calm = scorer();
        let a = calm.assess_request(
            &spoofed("/search", "203.0.113.21"),
            ip("203.0.113.21"),
            at(0),
        );
        assert_eq!(a.action, Action::Allow, "{}", a.report);
    }

    #[test]
    fn a_header_order_that_does_not_fit_the_browser_is_an_inconsistency() {
        use crate::http::identify::wire::{HeadScanner, Scan};
        let sc = scorer();
        // python-requests' order under Chrome's user agent.
        let head = format!(
            "GET /search HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: {CHROME}\r\n\
             Accept-Encoding: gzip, br\r\nAccept: text/html\r\nConnection: keep-alive\r\n\
             Accept-Language: en\r\n\r\n"
        );
        let Scan::Done(wire) = HeadScanner::new().feed(head.as_bytes()) else {
            panic!("a whole head");
        };
        let assess = |parts: &Parts, who: &str, direct: bool| {
            assess_with(&sc, parts, ip(who), Some(wire), direct, None, at(0))
        };
        let a = assess(&chrome("/search", "203.0.113.30"), "203.0.113.30", true);
        assert_eq!(points(&a.report, Signal::Inconsistency), 25.0);
        // Counted once: not among the header anomalies too.
        assert_eq!(points(&a.report, Signal::HeaderAnomalies), 0.0);
        // Enough own evidence to act on, not to ban by itself.
        assert_eq!(Scorer::evidence(None, &a.look), 25.0);
        // With contradicting client hints as well: ban evidence.
        let a = assess(&spoofed("/search", "203.0.113.31"), "203.0.113.31", true);
        assert_eq!(points(&a.report, Signal::Inconsistency), 50.0);
        assert!(Scorer::evidence(None, &a.look) >= sc.ladder().ban_evidence);
        // Behind a trusted proxy the order is the proxy's: not judged.
        let a = assess(&chrome("/search", "203.0.113.32"), "203.0.113.32", false);
        assert_eq!(points(&a.report, Signal::Inconsistency), 0.0);
        // Chrome's own order fits.
        let own = format!(
            "GET /search HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive\r\n\
             User-Agent: {CHROME}\r\nAccept: text/html\r\nAccept-Encoding: gzip, br\r\n\
             Accept-Language: en\r\n\r\n"
        );
        let Scan::Done(own) = HeadScanner::new().feed(own.as_bytes()) else {
            panic!("a whole head");
        };
        let a = assess_with(
            &sc,
            &chrome("/search", "203.0.113.33"),
            ip("203.0.113.33"),
            Some(own),
            true,
            None,
            at(0),
        );
        assert_eq!(points(&a.report, Signal::Inconsistency), 0.0);
    }

    #[test]
    fn known_good_clients_of_a_flagged_cluster_carry_no_surge_points() {
        let sc = scorer();
        let me = ip("192.0.2.5");
        for i in 0..3 {
            let a = sc.assess_request(&chrome("/", "192.0.2.5"), me, at(i * 2_000));
            sc.answered(&a.watch(), StatusCode::OK, Duration::ZERO, at(i * 2_000));
        }
        let ids = {
            let c = look(&chrome("/", "192.0.2.5"), None, false, true).cluster;
            c.ids()
        };
        sc.detector.force_attack(&ids, &[]);
        let a = sc.assess_request(&chrome("/", "192.0.2.5"), me, at(7_000));
        assert_eq!(points(&a.report, Signal::ClassSurge), 0.0);
        assert_eq!(points(&a.report, Signal::KnownGood), -20.0);
        assert!(!a.flagged_newcomer());
    }

    #[test]
    fn newcomers_earn_good_standing_during_an_attack_by_browsing_like_people() {
        let sc = under_attack(&[]);
        let me = ip("198.51.100.30");
        // One route only: a good answer earns nothing in trouble.
        let a = sc.assess_request(&chrome("/search", "198.51.100.30"), me, at(0));
        sc.answered(&a.watch(), StatusCode::OK, Duration::ZERO, at(0));
        assert_eq!(
            sc.assess_request(&chrome("/", "198.51.100.30"), me, at(1_000))
                .good(),
            0
        );
        // Pages and assets, at a person's pace: it does.
        for (i, path) in ["/static/app.css", "/product/2", "/"].iter().enumerate() {
            let t = at(2_000 + i as u64 * 2_000);
            let a = sc.assess_request(&chrome(path, "198.51.100.30"), me, t);
            sc.answered(&a.watch(), StatusCode::OK, Duration::ZERO, t);
        }
        assert!(
            sc.assess_request(&chrome("/", "198.51.100.30"), me, at(9_000))
                .good()
                >= 3
        );
        // A tool does not, whatever it asks for.
        let bot = ip("203.0.113.31");
        for (i, path) in ["/", "/static/app.css", "/product/2"].iter().enumerate() {
            let t = at(i as u64 * 2_000);
            let a = sc.assess_request(&tool(path, "203.0.113.31"), bot, t);
            sc.answered(&a.watch(), StatusCode::OK, Duration::ZERO, t);
        }
        assert_eq!(
            sc.assess_request(&tool("/", "203.0.113.31"), bot, at(9_000))
                .good(),
            0
        );
    }

    fn with_session(sc: &Scorer, p: &Parts, ip: IpAddr, session: Presented, t: u64) -> Assessment {
        assess_with(sc, p, ip, None, true, Some(session), at(t))
    }

    /// Scores a request to its path with the given wire head, directness
    /// and session cookie, on a plain-HTTP origin.
    fn assess_with(
        sc: &Scorer,
        parts: &Parts,
        ip: IpAddr,
        wire: Option<WireHead>,
        direct: bool,
        session: Option<Presented>,
        now: Timestamp,
    ) -> Assessment {
        let mut facts = Facts::new(parts, now);
        facts.route = parts.uri.path();
        facts.session = session;
        let seen = look(parts, wire.as_ref(), false, direct);
        sc.assess(&facts, ip, &seen)
    }

    #[test]
    fn a_valid_session_is_no_newcomer_in_an_attack() {
        let sc = under_attack(&[chrome("/", "192.0.2.1")]);
        let me = ip("198.51.100.40");
        let a = with_session(&sc, &chrome("/", "198.51.100.40"), me, Presented::Valid, 0);
        assert_eq!(points(&a.report, Signal::ClassSurge), 0.0);
        assert!(!a.flagged_newcomer() && !a.newcomer_in_trouble() && a.seen());
        // Without it, the same client is the attack's likely member.
        let b = with_session(
            &sc,
            &chrome("/", "198.51.100.41"),
            ip("198.51.100.41"),
            Presented::Absent,
            0,
        );
        assert_eq!(points(&b.report, Signal::ClassSurge), 40.0);
        assert!(b.flagged_newcomer() && b.newcomer_in_trouble() && !b.seen());
    }

    #[test]
    fn an_invalid_session_throttles_but_never_bans_even_in_a_surge() {
        let calm = scorer();
        let a = with_session(
            &calm,
            &chrome("/", "198.51.100.50"),
            ip("198.51.100.50"),
            Presented::Invalid,
            0,
        );
        assert_eq!(points(&a.report, Signal::SessionInvalid), 35.0);
        assert_eq!(a.action, Action::Throttle, "{}", a.report);
        // A newcomer of a surging cluster: 35 + 15 + 40 reach the ban
        // score, but the cookie is no ban evidence.
        let sc = under_attack(&[chrome("/", "192.0.2.1")]);
        let a = with_session(
            &sc,
            &chrome("/", "198.51.100.51"),
            ip("198.51.100.51"),
            Presented::Invalid,
            0,
        );
        assert!(a.report.score() >= sc.ladder().ban, "{}", a.report);
        assert_eq!(a.action, Action::Challenge, "{}", a.report);
        // With its own ban evidence (a tool, a route mix) it may be banned.
        let sc = under_attack(&[tool("/", "192.0.2.1")]);
        let actions: Vec<Action> = (0..4)
            .map(|i| {
                with_session(
                    &sc,
                    &tool("/search", "203.0.113.60"),
                    ip("203.0.113.60"),
                    Presented::Invalid,
                    i * 500,
                )
                .action
            })
            .collect();
        assert_eq!(actions.last(), Some(&Action::Ban));
    }
}
