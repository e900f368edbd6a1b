//! The seam a fleet of shared bans plugs into (the Redis one is
//! [`GuardBuilder::share_bans`](crate::http::GuardBuilder::share_bans)).
//!
//! The guard owns these traits; a fleet implements them. A fleet is given
//! to the builder as a [`BanFleet`], which `build` joins once, with the
//! guard's clock and `max_bans` as they ended up, so the builder's methods
//! go in any order. Joining gives the guard a [`FleetLink`], where its own
//! bans, lifts and flagged classes go, and a start, called once the guard
//! exists with a [`GuardHandle`] through which the fleet applies what
//! other members publish.
//!
//! The seam is always built; its one fleet, Redis, only with feature
//! `redis`, so without it nothing here is called.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::IpPrefix;
use crate::http::GuardBuilder;

/// How long a class flagged by a guard without scoring (so without a
/// ladder to take the first ban's length from) stays flagged elsewhere.
pub(crate) const DEFAULT_CLASS_TTL: Duration = Duration::from_secs(60);

impl<C> GuardBuilder<C> {
    /// Shares the guard's bans with `fleet`, joined by `build` whatever the
    /// clock and `max_bans` are by then: what `share_bans` (feature
    /// `redis`) plugs Redis in with.
    pub(crate) fn ban_fleet(mut self, fleet: impl BanFleet) -> Self {
        self.fleet = Some(Box::new(fleet));
        self
    }
}

/// A fleet of guards sharing bans, as the builder holds it until `build`.
pub(crate) trait BanFleet: Send + Sync + 'static {
    /// Joins the fleet as one guard holding at most `max_bans` bans; called
    /// once, by `build`, before the guard exists. `Err` carries why the
    /// guard cannot join (it names the builder method), and `build` fails
    /// with it as [`ConfigError::SharedStore`](crate::ConfigError::SharedStore).
    fn join(self: Box<Self>, max_bans: usize) -> Result<Joined, String>;
}

/// A guard's membership of a fleet: [`BanFleet::join`]'s answer.
pub(crate) struct Joined {
    /// Where the guard's own changes go.
    pub(crate) link: Arc<dyn FleetLink>,
    /// Starts the fleet's work for this guard, once the guard exists:
    /// applying what other members publish through the handle, and
    /// publishing flagged classes to last the given time elsewhere.
    pub(crate) start: Box<dyn FnOnce(GuardHandle, Duration) + Send>,
}

/// One guard's link to its fleet.
///
/// What an implementation must guarantee:
///
/// * The change methods run on the request path, on any thread and while
///   the fleet applies changes through the handle: they never wait (for
///   the network or a full queue) and never call back into the guard; a
///   change that cannot be queued is dropped and counted in
///   [`SharedBanStats::dropped`].
/// * [`claim`](Self::claim) comes before the guard records a ban of its
///   own, [`banned`](Self::banned) after: from the claim on, nothing the
///   fleet does on its own (such as reconciling with the fleet's state on
///   reconnecting) lifts that prefix until the guard's ban is published.
/// * What other members publish is applied only through the
///   [`GuardHandle`], and never published again.
/// * The fleet's work ends once the guard is dropped
///   ([`GuardHandle::upgrade`] gives `None`), and holds nothing that keeps
///   the guard alive: the guard holds its link, not the other way round.
pub(crate) trait FleetLink: Send + Sync + 'static {
    /// The guard is about to record a ban of `prefix` of its own.
    fn claim(&self, prefix: &IpPrefix);
    /// The guard recorded a ban of `prefix` for `ttl`: publish it.
    fn banned(&self, prefix: IpPrefix, ttl: Duration);
    /// The guard lifted the ban on exactly `prefix`, or was asked to:
    /// publish the lift.
    fn lifted(&self, prefix: IpPrefix);
    /// Attack detection flagged fingerprint class `class`: publish it.
    fn class_flagged(&self, class: u64);
    /// The counters, for [`GuardStats::shared_bans`](crate::http::GuardStats::shared_bans).
    fn stats(&self) -> SharedBanStats;
}

/// What a fleet does to a guard: applies what other members published,
/// without publishing it again. The guard's state implements it.
pub(crate) trait BanTarget: Send + Sync {
    /// Bans `prefix` for `remaining` (only lengthening an existing ban when
    /// `extend_only`); false when it was not recorded.
    fn apply_ban(&self, prefix: IpPrefix, remaining: Duration, extend_only: bool) -> bool;
    /// Lifts the ban on exactly `prefix`; whether one was in force.
    fn apply_lift(&self, prefix: &IpPrefix) -> bool;
    /// Flags fingerprint class `class` for `remaining`; false without
    /// scoring or with every place taken.
    fn apply_class(&self, class: u64, remaining: Duration) -> bool;
}

/// A guard as its fleet holds it: weakly, whatever the guard's clock, so
/// that the fleet's work ends with the guard.
#[derive(Clone)]
pub(crate) struct GuardHandle {
    target: Weak<dyn BanTarget>,
}

impl GuardHandle {
    pub(crate) fn new(target: Weak<dyn BanTarget>) -> Self {
        GuardHandle { target }
    }

    /// The guard, while it exists.
    pub(crate) fn upgrade(&self) -> Option<Arc<dyn BanTarget>> {
        self.target.upgrade()
    }

    /// Whether the guard was dropped.
    pub(crate) fn is_dropped(&self) -> bool {
        self.target.strong_count() == 0
    }
}

impl std::fmt::Debug for GuardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardHandle")
            .field("dropped", &self.is_dropped())
            .finish()
    }
}

/// Counters of a guard's shared bans, in
/// [`GuardStats::shared_bans`](crate::http::GuardStats::shared_bans).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedBanStats {
    /// Bans, lifts and flagged classes this guard published.
    pub published: u64,
    /// Messages from other instances applied.
    pub received: u64,
    /// Bans and flagged classes loaded from Redis on (re)connecting.
    pub loaded: u64,
    /// Pages of the ban set read on (re)connecting: the bans in force are
    /// read 1,000 at a time, so no reply from Redis is unbounded.
    pub load_pages: u64,
    /// Bans lifted on reconnecting because another instance lifted them
    /// while this guard's subscriber was cut off: bans this guard learned
    /// from Redis or wrote to it itself, in force here, and no longer in
    /// Redis's set.
    pub reconciled_lifts: u64,
    /// Changes not published because the publisher's queue (4096) was full.
    pub dropped: u64,
    /// Calls to Redis that failed (a publication is retried until it is
    /// made or has expired; each failed try counts), and pub/sub
    /// connections that failed or were lost.
    pub errors: u64,
    /// Messages and stored entries from Redis that did not parse or were
    /// out of bounds, ignored.
    pub rejected: u64,
    /// Whether the subscriber is connected and listening now.
    pub subscribed: bool,
}
