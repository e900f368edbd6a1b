//! What scoring counts and reports: its counters, the refusals and
//! sheds it feeds to attack detection, and the detection state.

use std::time::Duration;

use crate::Timestamp;
use crate::http::DetectionSnapshot;
use crate::http::scoring::scorer::{ScoreCount, Scorer};

/// Counters of client scoring.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScoringStats {
    /// Requests charged at the throttle factor.
    pub throttled: u64,
    /// Requests answered with a challenge page.
    pub challenged: u64,
    /// Requests that carried a solved challenge and were served.
    pub challenges_passed: u64,
    /// Requests held back (429, no ban) at the challenge threshold without
    /// a challenge hook.
    pub held: u64,
    /// Clients banned by their score.
    pub banned: u64,
    /// Throttles only observed (shadow mode).
    pub shadow_throttles: u64,
    /// Challenges only observed (shadow mode).
    pub shadow_challenges: u64,
    /// Bans only observed (shadow mode).
    pub shadow_bans: u64,
    /// Requests that arrived while the service was under attack.
    pub under_attack_requests: u64,
    /// Clients remembered now.
    pub clients: usize,
    /// Client records dropped to make room.
    pub client_evictions: u64,
}

impl Scorer {
    /// Scoring's counters now.
    pub(crate) fn stats(&self) -> ScoringStats {
        let n = |w| self.counters.sum(w);
        ScoringStats {
            throttled: n(ScoreCount::Throttled),
            challenged: n(ScoreCount::Challenged),
            challenges_passed: n(ScoreCount::ChallengesPassed),
            held: n(ScoreCount::Held),
            banned: n(ScoreCount::Banned),
            shadow_throttles: n(ScoreCount::ShadowThrottles),
            shadow_challenges: n(ScoreCount::ShadowChallenges),
            shadow_bans: n(ScoreCount::ShadowBans),
            under_attack_requests: n(ScoreCount::UnderAttackRequests),
            clients: self.clients_held(),
            client_evictions: self.client_evictions(),
        }
    }

    /// A blocked or banned client was refused (at accept or per request).
    pub(crate) fn blocked(&self) {
        self.detector.count_refused();
    }

    /// A request was shed by overload protection.
    pub(crate) fn shed(&self) {
        self.detector.count_shed();
    }

    /// Whether attack detection holds the service under attack.
    pub(crate) fn under_attack(&self) -> bool {
        self.detector.under_attack()
    }

    /// Flags a class another instance of the fleet flagged, until `until`;
    /// false when detection has no place left for it.
    pub(crate) fn flag_remote_class(&self, class: u64, until: Timestamp, now: Timestamp) -> bool {
        self.detector.flag_remote_class(class, until, now)
    }

    /// How long a class flagged here stays flagged across the fleet: the
    /// ladder's first ban.
    pub(crate) fn class_ttl(&self) -> Duration {
        self.ladder().ban_base
    }

    /// Attack detection's state now.
    pub(crate) fn detection(&self) -> DetectionSnapshot {
        self.detector.snapshot()
    }
}
