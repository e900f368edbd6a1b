//! The guard's counters and the snapshots it hands out.

use std::time::Duration;

use crate::http::guard::fleet::SharedBanStats;
use crate::http::guard::rules::RuleStats;
use crate::http::identify::session::SessionStats;
use crate::http::scoring::detect::DetectionSnapshot;
use crate::http::scoring::scorer::Offender;
use crate::http::tarpit::TarpitStats;
use crate::http::{LimitStats, ScoringStats};
use crate::{IpPrefix, Timestamp};

/// Counters of a [`Guard`], striped per thread.
#[derive(Clone, Copy)]
pub(super) enum GuardCount {
    Requests,
    Admitted,
    RefusedRate,
    RefusedBlocked,
    Safelisted,
    NoPeer,
    Malformed,
    BansEvicted,
    RefusedScore,
    RefusedChallenge,
    RefusedOverload,
    RefusedSuspect,
    SessionValid,
    SessionInvalid,
    SessionIssued,
    SessionNotReturned,
}
pub(super) const GUARD_COUNTS: usize = 16;

impl From<GuardCount> for usize {
    fn from(c: GuardCount) -> usize {
        c as usize
    }
}

/// Counters of wiring mistakes, apart from the request counters (a
/// stripe holds 16).
#[derive(Clone, Copy)]
pub(super) enum WiringCount {
    /// Forwarding headers from peers that are not trusted proxies.
    UntrustedForwarding,
    /// Warnings that such a peer forwards for many clients.
    ForgottenProxyWarnings,
}
pub(super) const WIRING_COUNTS: usize = 2;

impl From<WiringCount> for usize {
    fn from(c: WiringCount) -> usize {
        c as usize
    }
}
/// A snapshot of a [`Guard`](crate::http::Guard)'s counters.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardStats {
    /// Requests inspected.
    pub requests: u64,
    /// Requests passed to the service (safelisted ones included).
    pub admitted: u64,
    /// Requests refused by a rule (429 / `RESOURCE_EXHAUSTED`).
    pub refused_rate_limit: u64,
    /// Requests refused as blocklisted or banned (403 / `PERMISSION_DENIED`).
    pub refused_blocked: u64,
    /// Requests from safelisted clients.
    pub safelisted: u64,
    /// Requests without a peer address (refused or not, per
    /// [`MissingPeer`](crate::http::MissingPeer)).
    pub no_peer_address: u64,
    /// Requests from a trusted proxy whose forwarding header was unusable;
    /// they were keyed on the nearest trusted hop.
    pub malformed_forwarding: u64,
    /// Rate-limited requests from a peer that is not a trusted proxy which
    /// carried the forwarding header (ignored, as it should be: any client
    /// can write one). Many of them from one peer: a proxy you forgot to
    /// trust, whose clients all share its key.
    pub untrusted_forwarding: u64,
    /// Warnings that an untrusted peer forwards for many clients, so that
    /// they all share its address: a proxy you forgot to trust (at most
    /// one a minute).
    pub forgotten_proxy_warnings: u64,
    /// Runtime bans in force (expired ones may linger until the next ban).
    pub bans: usize,
    /// Bans lifted early to make room for a new one while
    /// [`GuardBuilder::max_bans`](crate::http::GuardBuilder::max_bans) unexpired bans were held (the one that
    /// would have ended soonest goes).
    pub bans_evicted: u64,
    /// Requests refused because their score reached the ban threshold (the
    /// client was banned with them).
    pub refused_score: u64,
    /// Requests answered with a challenge page.
    pub refused_challenge: u64,
    /// Requests held back (429) because their score asked for a challenge
    /// and no challenge hook is set; their clients are not banned.
    pub refused_suspect: u64,
    /// Requests shed by overload protection (503 / `UNAVAILABLE`).
    pub refused_overload: u64,
    /// Scoring's counters, when scoring is on.
    pub scoring: Option<ScoringStats>,
    /// The session cookie's counters, when [`GuardBuilder::session`](crate::http::GuardBuilder::session) is
    /// on.
    pub session: Option<SessionStats>,
    /// Each adaptive limit's counters (the service's first, then each
    /// route's), when overload protection is on.
    pub overload: Vec<LimitStats>,
    /// Each rule's counters: enforced rules, then shadow rules, each in
    /// the order they were added.
    pub rules: Vec<RuleStats>,
    /// Refusals held by the [`Tarpit`](crate::http::Tarpit).
    pub tarpit: TarpitStats,
    /// Shared bans' counters, when `GuardBuilder::share_bans` is on
    /// (features `tower` and `redis`; always `None` without `redis`).
    pub shared_bans: Option<SharedBanStats>,
}

/// Everything a guard can tell an operator at once: counters, the attack
/// state, the worst offenders and the bans in force.
///
/// With feature `serde` it is `Serialize`: durations and timestamps as
/// seconds (`f64`), timestamps on the guard's clock (compare them with
/// [`now`](Self::now)), networks as text, each ban as
/// `{"prefix": "192.0.2.7/32", "remaining": 59.5}`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// When it was taken, on the guard's clock.
    pub now: Timestamp,
    /// The counters.
    pub stats: GuardStats,
    /// What attack detection saw at its last tick (scoring on only).
    pub detection: Option<DetectionSnapshot>,
    /// Clients that reached the throttle threshold, highest score first.
    pub offenders: Vec<Offender>,
    /// Bans in force and the time each has left.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serialize::prefix_durations")
    )]
    pub bans: Vec<(IpPrefix, Duration)>,
}
