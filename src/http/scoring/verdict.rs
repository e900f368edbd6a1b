//! Scoring's verdict on a request, which the guard applies: serve it
//! (charged at a cost factor, with a standing for overload admission),
//! challenge it, hold it back, or ban its client. Scoring counts its own
//! statistics here; the guard counts only its refusals.
//!
//! A scored client's standing for overload admission runs from −2 to +2.
//!
//! By its record: one step down for a suspicious score (the throttle
//! threshold or more), and for a newcomer while the service is in
//! trouble (under attack or shedding, and no good exchange from
//! before nor a valid session cookie: the attack's most likely member,
//! as scoring's no-history points say); one up for a clean score
//! (under 10: a known-good client, or a browser without misbehaviour
//! while calm) of a client seen before (a good exchange, or a valid
//! session cookie returned) that came before the current busy period
//! (see below).
//!
//! By its pace: one down for a heavy user (several requests a second,
//! sustained), one up for a light one (about two a second or less, as
//! a person browses) seen before, that came before the busy period.
//!
//! Neither the score nor the volume of a client's first requests says
//! much: every new browser scores clean and looks light, as a crowd
//! arriving all at once shows. When the service is full, the light,
//! clean users it knows go first, and a crowd of newcomers last but for
//! the heavy and the suspicious. A client that came during a busy
//! period (the request rate raised, or the service degraded: a crowd,
//! a sale, an attack) is not lifted above the crowd it came with until
//! that period ends, however well it behaves: a crowd past capacity
//! cannot push out the customers it found there.

use std::net::IpAddr;

use crate::Timestamp;
use crate::http::ChallengePage;
use crate::http::identify::facts::Facts;
use crate::http::scoring::assessment::Assessment;
use crate::http::scoring::ladder::Action;
use crate::http::scoring::scorer::{BanOrder, HEAVY_VOLUME, LIGHT_VOLUME, ScoreCount, Scorer};

/// Scores below this rank a client up for overload admission.
const CLEAN_SCORE: f32 = 10.0;

/// What scoring made of a request.
pub(crate) enum Verdict {
    /// Serve it: charge the rate rules `cost` times; `standing` ranks the
    /// client for overload admission.
    Serve { cost: u64, standing: i8 },
    /// Ban the client (the guard records the ban) and refuse the request.
    Ban(BanOrder),
    /// Hold the request back without a ban (no challenge hook).
    Hold,
    /// Answer with the challenge hook's page.
    Challenge(Box<ChallengePage>),
}

impl Scorer {
    /// The ladder's verdict on an assessed request.
    pub(crate) fn judge(&self, a: &Assessment, facts: &Facts<'_>, ip: IpAddr) -> Verdict {
        let (parts, now) = (facts.parts, facts.now);
        let serve = |cost| Verdict::Serve {
            cost,
            standing: self.standing(a),
        };
        let ladder = &a.tuning.ladder;
        if a.action >= Action::Throttle {
            self.note_offender(a, now);
        }
        let throttle = || {
            if ladder.shadow_throttle {
                self.counters.add(ScoreCount::ShadowThrottles, 1);
                serve(1)
            } else {
                self.counters.add(ScoreCount::Throttled, 1);
                serve(ladder.throttle_factor)
            }
        };
        match a.action {
            Action::Allow => serve(1),
            Action::Throttle => throttle(),
            Action::Ban => match self.ban_order(a, now) {
                Some(order) => Verdict::Ban(order),
                None => serve(1),
            },
            Action::Challenge => {
                if ladder.shadow_challenge {
                    self.counters.add(ScoreCount::ShadowChallenges, 1);
                    return serve(1);
                }
                let Some(hook) = &self.challenge else {
                    // Without a hook, a newcomer of a surging cluster, at a
                    // pace no rate rule would stop, is held back. Any other
                    // client is throttled, so that its own behaviour (the
                    // rate rules' refusals, the service's 404s) takes it
                    // on to a ban or back down.
                    if !a.flagged_newcomer() || a.volume >= HEAVY_VOLUME {
                        return throttle();
                    }
                    self.detector.count_refusal();
                    self.counters.add(ScoreCount::Held, 1);
                    return Verdict::Hold;
                };
                self.detector.count_refusal();
                if hook.verify(parts, ip) {
                    self.counters.add(ScoreCount::ChallengesPassed, 1);
                    return serve(1);
                }
                self.counters.add(ScoreCount::Challenged, 1);
                Verdict::Challenge(Box::new(hook.issue(parts, ip)))
            }
        }
    }

    /// A request the rate rules refused: counts it for detection and, when
    /// the refusal was the client's own pressure (`pressure`: not only its
    /// throttled cost), scores it; the ban order when that takes the client
    /// to a ban.
    pub(crate) fn rate_refused(
        &self,
        a: Option<&Assessment>,
        pressure: bool,
        now: Timestamp,
    ) -> Option<BanOrder> {
        self.detector.count_refusal();
        let a = a.filter(|_| pressure)?;
        let after = self.refused(a, now);
        if after.action == Action::Ban {
            self.ban_order(&after, now)
        } else {
            None
        }
    }

    /// A ban for a client at the ban threshold; `None` when bans are only
    /// observed (shadow mode) and the request goes on.
    fn ban_order(&self, a: &Assessment, now: Timestamp) -> Option<BanOrder> {
        let order = self.ban(a, now)?;
        self.detector.count_refusal();
        Some(order)
    }

    /// The client's standing for overload admission (see the module
    /// documentation).
    fn standing(&self, a: &Assessment) -> i8 {
        let throttle = a.tuning.ladder.throttle;
        let score = a.report.score();
        let heavy = a.volume >= HEAVY_VOLUME;
        let seen = a.seen() && a.came_before_the_rush();
        // A heavy user's clean record (earned in its first moments, before
        // its volume showed) does not lift it.
        let by_score = if a.flagged_newcomer() {
            -2
        } else if score >= throttle || a.newcomer_in_trouble() {
            -1
        } else if score < CLEAN_SCORE && seen && !heavy {
            1
        } else {
            0
        };
        let by_volume = if heavy {
            -1
        } else if a.volume < LIGHT_VOLUME && seen {
            1
        } else {
            0
        };
        (by_score + by_volume).max(-2)
    }
}
