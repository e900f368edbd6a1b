//! The shared state of the layer: rules, lists, bans, counters, and the
//! decision for one request.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use http::request::Parts;
use parking_lot::RwLock;

use crate::http::gate::{AcceptVerdict, Gate, GateBuilder};
use crate::http::guard::ban_list::{BanList, Inserted};
use crate::http::guard::rules::{CompiledRule, Rule, RuleStats};
use crate::http::identify::client_ip::{ClientIp, ClientIpConfig, IpSource};
use crate::http::identify::fingerprint::Fingerprint;
use crate::http::identify::fingerprint::secure_by_itself;
use crate::http::identify::look::Cluster;
use crate::http::identify::peer::{peer, route};
use crate::http::identify::session::{Presented, Session, SessionCookie, SessionStats};
use crate::http::overload::shedder::{Place, Shedder};
use crate::http::scoring::challenge::ChallengePage;
use crate::http::scoring::detect::{DetectionSnapshot, Event};
use crate::http::scoring::ladder::{Action, ScoreReport};
use crate::http::scoring::scorer::{
    Assessment, EventHook, HEAVY_VOLUME, LIGHT_VOLUME, Offender, ScoreCount, Scorer, Scoring,
    Target, Watch,
};
use crate::http::service::layer::GuardLayer;
use crate::http::service::refusal::{RefusalKind, claims_grpc};
use crate::http::tarpit::{Held, Tarpit, TarpitState, TarpitStats};
use crate::http::{LimitStats, Overload};
use crate::ip::canonical;
use crate::stats::Striped;
use crate::{
    Clock, CoarseClock, CompositeDecision, ConfigError, Decision, IpPrefix, Pending, PrefixSet,
    Timestamp, check_all,
};

/// Enforced rules whose checks fit on the stack; more use the heap.
const INLINE_RULES: usize = 8;

/// Scores below this rank a client up for overload admission.
const CLEAN_SCORE: f32 = 10.0;

/// What to do with a request that carries no peer address (the server was
/// not set up to record one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingPeer {
    /// Refuse it with 500 (gRPC `INTERNAL`) and log how to fix the setup,
    /// rather than silently counting every client in one shared bucket.
    #[default]
    Refuse,
    /// Serve it, skipping the address rules, lists and bans (the other
    /// rules still apply). For services that really have no address, such
    /// as ones behind a Unix socket.
    SkipAddressRules,
}

/// Default cap on runtime bans held at once.
pub const DEFAULT_MAX_BANS: usize = 100_000;

/// How often the missing-peer setup error is logged at most.
const NO_PEER_LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters of a [`Guard`], striped per thread.
#[derive(Clone, Copy)]
enum GuardCount {
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
const GUARD_COUNTS: usize = 16;

impl From<GuardCount> for usize {
    fn from(c: GuardCount) -> usize {
        c as usize
    }
}

/// What the score ladder made of a request.
enum Step {
    /// Go on to the rate rules, charged this many times.
    Go(u64),
    /// The client was banned.
    Banned,
    /// Held back without a ban (no challenge hook).
    Held,
    /// Answer with the challenge hook's page.
    Challenged(Box<ChallengePage>),
}

/// The decision for one request, put into the request's extensions for
/// handlers to read.
///
/// ```
/// use axum::Extension;
/// use floodguard::http::GuardDecision;
///
/// async fn handler(Extension(d): Extension<GuardDecision>) -> String {
///     format!("{:?} has {:?} left", d.client_ip(), d.decision().map(|d| d.remaining()))
/// }
/// # let _ = handler;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GuardDecision {
    client: Option<ClientIp>,
    safelisted: bool,
    binding: Option<(Arc<str>, Decision)>,
    score: Option<(ScoreReport, Action, Fingerprint, Cluster)>,
}

impl GuardDecision {
    /// The resolved client address and where it came from; `None` when the
    /// request had no peer address and [`MissingPeer::SkipAddressRules`] let
    /// it through.
    pub fn client(&self) -> Option<&ClientIp> {
        self.client.as_ref()
    }

    /// The resolved client address.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client.map(|c| c.ip)
    }

    /// Whether the client is safelisted (no rule was checked).
    pub fn is_safelisted(&self) -> bool {
        self.safelisted
    }

    /// The enforced rule with the least allowance left, if any applied.
    pub fn rule(&self) -> Option<&str> {
        self.binding.as_ref().map(|(n, _)| &**n)
    }

    /// That rule's decision (remaining, reset).
    pub fn decision(&self) -> Option<&Decision> {
        self.binding.as_ref().map(|(_, d)| d)
    }

    /// The client's score and the signals behind it, when scoring is on.
    pub fn score(&self) -> Option<&ScoreReport> {
        self.score.as_ref().map(|(r, _, _, _)| r)
    }

    /// What the ladder did at that score (a request that reached
    /// [`Action::Ban`] is only served when bans are in shadow mode).
    pub fn action(&self) -> Option<Action> {
        self.score.as_ref().map(|(_, a, _, _)| *a)
    }

    /// The request's fingerprint, when scoring is on.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        self.score.as_ref().map(|(_, _, f, _)| f)
    }

    /// The request's cluster (what attack detection groups it by), when
    /// scoring is on.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.score.as_ref().map(|(_, _, _, c)| c)
    }
}

// A score is a float, but never NaN: equality is total.
impl Eq for GuardDecision {}

/// A rule's decision ready to become `RateLimit` headers.
#[derive(Clone, Debug)]
pub(crate) struct RateInfo {
    pub(crate) rule: Arc<str>,
    pub(crate) policy: HeaderValue,
    pub(crate) decision: Decision,
}

/// The outcome of [`Guard::inspect`].
// Made and taken apart once per request: boxing the larger variant would
// cost an allocation for every admitted request instead of a few bytes
// moved.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inspection {
    /// Serve; `headers` when rate-limit headers go on successful responses;
    /// `watch` when scoring watches the answer; `permit` the request's place
    /// in an overload limit; `at` the time the request was decided at, on
    /// the guard's clock; `session` the client address to send a session
    /// cookie for, if the answer is a success.
    Pass {
        decision: GuardDecision,
        headers: Option<RateInfo>,
        watch: Option<Watch>,
        permit: Option<Place>,
        at: Timestamp,
        session: Option<IpAddr>,
    },
    /// Answer with a refusal (or a challenge `page`); `close` the
    /// connection after it (HTTP/1).
    Refuse {
        kind: RefusalKind,
        rate: Option<RateInfo>,
        close: bool,
        page: Option<Box<ChallengePage>>,
    },
}

impl Inspection {
    fn refuse(kind: RefusalKind, close: bool) -> Self {
        Inspection::Refuse {
            kind,
            rate: None,
            close,
            page: None,
        }
    }
}

/// A refusal from [`Guard::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    kind: RefusalKind,
    rate: Option<(Arc<str>, Decision)>,
}

impl Refusal {
    /// Why the request was refused.
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// For a rate-limit refusal, the refusing rule with the longest wait.
    pub fn rule(&self) -> Option<&str> {
        self.rate.as_ref().map(|(n, _)| &**n)
    }

    /// That rule's decision (retry-after, reset).
    pub fn decision(&self) -> Option<&Decision> {
        self.rate.as_ref().map(|(_, d)| d)
    }
}

/// A snapshot of a [`Guard`]'s counters.
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
    /// [`MissingPeer`]).
    pub no_peer_address: u64,
    /// Requests from a trusted proxy whose forwarding header was unusable;
    /// they were keyed on the nearest trusted hop.
    pub malformed_forwarding: u64,
    /// Runtime bans in force (expired ones may linger until the next ban).
    pub bans: usize,
    /// Bans lifted early to make room for a new one while
    /// [`GuardBuilder::max_bans`] unexpired bans were held (the one that
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
    /// The session cookie's counters, when [`GuardBuilder::session`] is
    /// on.
    pub session: Option<SessionStats>,
    /// Each adaptive limit's counters (the service's first, then each
    /// route's), when overload protection is on.
    pub overload: Vec<LimitStats>,
    /// Each rule's counters: enforced rules, then shadow rules, each in
    /// the order they were added.
    pub rules: Vec<RuleStats>,
    /// Refusals held by the [`Tarpit`].
    pub tarpit: TarpitStats,
    /// Shared bans' counters, when [`GuardBuilder::share_bans`] is on.
    #[cfg(feature = "redis")]
    pub shared_bans: Option<crate::redis::SharedBanStats>,
}

/// Counters of client scoring.
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

/// Everything a guard can tell an operator at once: counters, the attack
/// state, the worst offenders and the bans in force.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The counters.
    pub stats: GuardStats,
    /// What attack detection saw at its last tick (scoring on only).
    pub detection: Option<DetectionSnapshot>,
    /// Clients that reached the throttle threshold, highest score first.
    pub offenders: Vec<Offender>,
    /// Bans in force and the time each has left.
    pub bans: Vec<(IpPrefix, Duration)>,
}

struct Shared<C> {
    clock: C,
    enforced: Vec<CompiledRule<C>>,
    shadow: Vec<CompiledRule<C>>,
    /// Whether any rule keys on or is scoped by the route.
    needs_route: bool,
    client_ip: ClientIpConfig,
    safelist: PrefixSet,
    blocklist: PrefixSet,
    bans: RwLock<BanList>,
    ban_count: AtomicUsize,
    max_bans: usize,
    missing_peer: MissingPeer,
    headers_on_success: bool,
    close_refused: bool,
    /// The server terminates TLS itself.
    tls: bool,
    tarpit: TarpitState,
    counters: Striped<GUARD_COUNTS>,
    /// When the missing-peer error was last logged, in clock nanoseconds + 1.
    no_peer_logged: AtomicU64,
    scorer: Option<Scorer>,
    shedder: Option<Shedder>,
    session: Option<Session>,
    /// Where bans and lifts go to be published to the fleet.
    #[cfg(feature = "redis")]
    shared_bans: Option<crate::redis::bans::BanSink>,
}

impl<C> Shared<C> {
    /// Puts a ban in the list, replacing any ban of the same prefix (or,
    /// with `extend_only`, keeping it if it ends later). When the list is
    /// full, the ban that would end soonest is lifted to make room
    /// (counted; logged once per thousand). O(log n) under the lock.
    fn insert_ban(
        &self,
        prefix: IpPrefix,
        duration: Duration,
        now: Timestamp,
        extend_only: bool,
    ) -> bool {
        let until = now.saturating_add(duration);
        let mut bans = self.bans.write();
        let inserted = bans.insert(prefix, until, now, extend_only);
        self.ban_count.store(bans.len(), Ordering::Release);
        drop(bans);
        if let Inserted::Evicted(lifted) = inserted {
            let n = self.counters.sum(GuardCount::BansEvicted);
            self.counters.add(GuardCount::BansEvicted, 1);
            if n % 1_000 == 0 {
                tracing::warn!(
                    %prefix,
                    %lifted,
                    max = self.max_bans,
                    evicted = n + 1,
                    "floodguard: ban list full, the ban ending soonest lifted early"
                );
            }
        }
        true
    }

    /// Removes the ban on exactly `prefix`; when it ended, if there was one.
    fn remove_ban(&self, prefix: &IpPrefix) -> Option<Timestamp> {
        let mut bans = self.bans.write();
        let until = bans.remove(prefix);
        self.ban_count.store(bans.len(), Ordering::Release);
        until
    }
}

/// Shared bans apply what other instances publish through these, without
/// publishing it again.
#[cfg(feature = "redis")]
impl<C: Clock + 'static> crate::redis::bans::BanTarget for Shared<C> {
    fn apply_ban(&self, prefix: IpPrefix, remaining: Duration, extend_only: bool) -> bool {
        self.insert_ban(prefix, remaining, self.clock.now(), extend_only)
    }

    fn apply_lift(&self, prefix: &IpPrefix) -> bool {
        let now = self.clock.now();
        self.remove_ban(prefix).is_some_and(|until| until > now)
    }

    fn apply_class(&self, class: u64, remaining: Duration) -> bool {
        let now = self.clock.now();
        self.scorer.as_ref().is_some_and(|sc| {
            sc.detector
                .flag_remote_class(class, now.saturating_add(remaining), now)
        })
    }
}

/// Turns a guard's state into what shared bans' subscriber holds: made
/// where the clock is known to be `'static`.
#[cfg(feature = "redis")]
type ToBanTarget<C> =
    fn(std::sync::Weak<Shared<C>>) -> std::sync::Weak<dyn crate::redis::bans::BanTarget>;

/// The shared state behind [`GuardLayer`]: rules, trusted proxies, lists,
/// bans and counters. Cheap to clone; every clone (and every service the
/// layer makes) shares one state.
///
/// ```
/// use std::time::Duration;
/// use floodguard::http::{ClientIpConfig, Guard, Rule};
/// use floodguard::ip::PrefixLengths;
///
/// let guard = Guard::builder()
///     .rule(Rule::per_ip("per-ip").gcra(20, Duration::from_secs(1)).burst(40))
///     .rule(Rule::per_prefix("per-net", PrefixLengths::SUBNET).gcra(200, Duration::from_secs(1)))
///     .client_ip(ClientIpConfig::new().trust("10.0.0.0/8".parse()?))
///     .blocklist("192.0.2.0/24".parse()?)
///     .build()?;
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(guard.layer());
/// guard.ban("198.51.100.7".parse()?, Duration::from_secs(600));
/// assert!(guard.is_banned("198.51.100.7".parse().unwrap()));
/// # let _ = app;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
pub struct Guard<C = CoarseClock> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for Guard<C> {
    fn clone(&self) -> Self {
        Guard {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> std::fmt::Debug for Guard<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.shared;
        f.debug_struct("Guard")
            .field(
                "enforced",
                &s.enforced.iter().map(|r| &*r.name).collect::<Vec<_>>(),
            )
            .field(
                "shadow",
                &s.shadow.iter().map(|r| &*r.name).collect::<Vec<_>>(),
            )
            .field("safelist", &s.safelist.len())
            .field("blocklist", &s.blocklist.len())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Starts a builder on the default [`CoarseClock`].
    pub fn builder() -> GuardBuilder {
        GuardBuilder {
            clock: CoarseClock::new(),
            rules: Vec::new(),
            client_ip: ClientIpConfig::new(),
            safelist: PrefixSet::new(),
            blocklist: PrefixSet::new(),
            max_bans: DEFAULT_MAX_BANS,
            missing_peer: MissingPeer::default(),
            headers_on_success: false,
            close_refused: true,
            tls: false,
            tarpit: Tarpit::default(),
            scoring: None,
            on_event: None,
            overload: None,
            session: None,
            #[cfg(feature = "redis")]
            share_bans: None,
        }
    }
}

impl<C: Clock> Guard<C> {
    /// A Tower layer that guards the service it wraps with this state.
    pub fn layer(&self) -> GuardLayer<C> {
        GuardLayer::new(self.clone())
    }

    /// The current time on the guard's clock.
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Bans `prefix` (a single address is a /32 or /128 prefix) for
    /// `duration`, replacing any ban of the same prefix. Banned clients are
    /// refused with 403 by the layer and closed at accept by the gate.
    /// Returns true: the ban is always recorded. When
    /// [`GuardBuilder::max_bans`] unexpired bans are already held, the one
    /// that would end soonest is lifted to make room (counted in
    /// [`GuardStats::bans_evicted`]); each ban costs O(log n) under the
    /// list's lock, however full it is.
    pub fn ban(&self, prefix: IpPrefix, duration: Duration) -> bool {
        let banned = self.record_ban(prefix, duration, self.shared.clock.now());
        if banned {
            tracing::info!(%prefix, ?duration, "floodguard: banned");
        }
        banned
    }

    /// Puts a ban in the list (scoring's bans are reported as events) and,
    /// with shared bans, queues it for the fleet.
    fn record_ban(&self, prefix: IpPrefix, duration: Duration, now: Timestamp) -> bool {
        // Claimed before it is in force, so that reconciling shared bans
        // never lifts it, even while it waits to be published.
        #[cfg(feature = "redis")]
        if let Some(sink) = &self.shared.shared_bans {
            sink.claim(&prefix);
        }
        let recorded = self.shared.insert_ban(prefix, duration, now, false);
        #[cfg(feature = "redis")]
        if let (true, Some(sink)) = (recorded, &self.shared.shared_bans) {
            sink.banned(prefix, duration);
        }
        recorded
    }

    /// Lifts the ban on exactly `prefix`; returns whether there was one.
    /// With [shared bans](GuardBuilder::share_bans), the lift is published
    /// to the fleet either way.
    pub fn unban(&self, prefix: &IpPrefix) -> bool {
        let lifted = self.shared.remove_ban(prefix).is_some();
        if lifted {
            tracing::info!(%prefix, "floodguard: ban lifted");
        }
        #[cfg(feature = "redis")]
        if let Some(sink) = &self.shared.shared_bans {
            sink.lifted(*prefix);
        }
        lifted
    }

    /// Whether `ip` falls in an unexpired ban.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.banned_at(ip, self.shared.clock.now())
    }

    /// The bans in force and the time each has left.
    pub fn bans(&self) -> Vec<(IpPrefix, Duration)> {
        let now = self.shared.clock.now();
        self.shared
            .bans
            .read()
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(p, until)| (*p, until.saturating_duration_since(now)))
            .collect()
    }

    /// What the connection gate should do with a connection from `ip`:
    /// refuse it if blocklisted or banned; exempt it from the gate's caps if
    /// safelisted or a trusted proxy (whose connections carry many clients,
    /// each limited by the layer on its own address).
    pub fn accept_verdict(&self, ip: IpAddr) -> AcceptVerdict {
        let s = &*self.shared;
        let ip = canonical(ip);
        if s.safelist.contains(ip) || s.client_ip.trusted().contains(ip) {
            AcceptVerdict::Exempt
        } else if s.blocklist.contains(ip) || self.is_banned(ip) {
            if let Some(sc) = &s.scorer {
                sc.detector.count_refused();
            }
            AcceptVerdict::Refuse
        } else {
            AcceptVerdict::Normal
        }
    }

    /// A [`Gate`](crate::http::Gate) builder wired to this guard: it closes
    /// blocklisted and banned addresses at accept and lets safelisted ones
    /// past its caps.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::net::SocketAddr;
    /// use std::time::Duration;
    /// use floodguard::http::{Guard, Rule};
    ///
    /// let guard = Guard::builder()
    ///     .rule(Rule::per_ip("per-ip").gcra(20, Duration::from_secs(1)))
    ///     .build()?;
    /// let gate = guard.gate().max_connections_per_ip(16).build()?;
    /// let app = axum::Router::new()
    ///     .route("/", axum::routing::get(|| async { "hello" }))
    ///     .layer(guard.layer());
    /// let listener = gate.listen(tokio::net::TcpListener::bind("127.0.0.1:8080").await?);
    /// axum::serve(listener.into_axum(), app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn gate(&self) -> GateBuilder
    where
        C: 'static,
    {
        let guard = self.clone();
        Gate::builder()
            .tarpit(self.shared.tarpit.config())
            .verdict(move |ip| guard.accept_verdict(ip))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> GuardStats {
        let s = &*self.shared;
        let c = |w| s.counters.sum(w);
        GuardStats {
            requests: c(GuardCount::Requests),
            admitted: c(GuardCount::Admitted),
            refused_rate_limit: c(GuardCount::RefusedRate),
            refused_blocked: c(GuardCount::RefusedBlocked),
            safelisted: c(GuardCount::Safelisted),
            no_peer_address: c(GuardCount::NoPeer),
            malformed_forwarding: c(GuardCount::Malformed),
            bans: s.ban_count.load(Ordering::Acquire),
            bans_evicted: c(GuardCount::BansEvicted),
            refused_score: c(GuardCount::RefusedScore),
            refused_challenge: c(GuardCount::RefusedChallenge),
            refused_suspect: c(GuardCount::RefusedSuspect),
            refused_overload: c(GuardCount::RefusedOverload),
            overload: s.shedder.as_ref().map_or_else(Vec::new, Shedder::stats),
            session: s.session.as_ref().map(|_| SessionStats {
                valid: c(GuardCount::SessionValid),
                invalid: c(GuardCount::SessionInvalid),
                issued: c(GuardCount::SessionIssued),
                not_returned: c(GuardCount::SessionNotReturned),
            }),
            scoring: s.scorer.as_ref().map(|sc| {
                let n = |w| sc.counters.sum(w);
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
                    clients: sc.clients_held(),
                    client_evictions: sc.client_evictions(),
                }
            }),
            rules: s
                .enforced
                .iter()
                .chain(&s.shadow)
                .map(CompiledRule::stats)
                .collect(),
            tarpit: s.tarpit.stats(),
            #[cfg(feature = "redis")]
            shared_bans: s.shared_bans.as_ref().map(|b| b.stats()),
        }
    }

    /// A request shed by overload protection, at once or after waiting.
    pub(crate) fn count_shed(&self) {
        let s = &*self.shared;
        s.counters.add(GuardCount::RefusedOverload, 1);
        if let Some(sc) = &s.scorer {
            sc.detector.count_shed();
        }
    }

    /// A request that waited for a place got one.
    pub(crate) fn count_waited_admitted(&self) {
        self.shared.counters.add(GuardCount::Admitted, 1);
    }

    /// A place to hold a blocked client's refusal, and for how long.
    pub(crate) fn hold_refusal(&self) -> Option<(Duration, Held)> {
        self.shared.tarpit.hold()
    }

    /// Counters, attack state, worst offenders and bans, at once.
    pub fn snapshot(&self) -> Snapshot {
        let s = &*self.shared;
        Snapshot {
            stats: self.stats(),
            detection: s.scorer.as_ref().map(|sc| sc.detector.snapshot()),
            offenders: s.scorer.as_ref().map_or_else(Vec::new, Scorer::offenders),
            bans: self.bans(),
        }
    }

    /// Whether scoring's attack detection holds the service under attack.
    pub fn under_attack(&self) -> bool {
        self.shared
            .scorer
            .as_ref()
            .is_some_and(|sc| sc.detector.under_attack())
    }

    fn banned_at(&self, ip: IpAddr, now: Timestamp) -> bool {
        let s = &*self.shared;
        s.ban_count.load(Ordering::Acquire) != 0
            && s.bans.read().get(ip).is_some_and(|(_, until)| *until > now)
    }

    /// Decides one request as the layer would (and charges it the same),
    /// for servers that are not Tower services, or to test a configuration.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::http::{Guard, PeerAddr, RefusalKind, Rule};
    ///
    /// let guard = Guard::builder()
    ///     .rule(Rule::per_ip("per-ip").sliding_window(1, Duration::from_secs(60)))
    ///     .build()?;
    /// let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    /// parts.extensions.insert(PeerAddr("192.0.2.1:4000".parse().unwrap()));
    /// assert!(guard.check(&parts).is_ok());
    /// let refusal = guard.check(&parts).unwrap_err();
    /// assert_eq!(refusal.kind(), RefusalKind::RateLimited);
    /// assert_eq!(refusal.rule(), Some("per-ip"));
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn check(&self, parts: &Parts) -> Result<GuardDecision, Refusal> {
        match self.inspect(parts, false) {
            Inspection::Pass { decision, .. } => Ok(decision),
            Inspection::Refuse { kind, rate, .. } => Err(Refusal {
                kind,
                rate: rate.map(|r| (r.rule, r.decision)),
            }),
        }
    }

    /// Decides one request: resolve the client, apply lists and bans, then
    /// charge every enforced rule that applies, all or none; then, for the
    /// layer (`admit`), take a place in the overload limit.
    pub(crate) fn inspect(&self, parts: &Parts, admit: bool) -> Inspection {
        let s = &*self.shared;
        s.counters.add(GuardCount::Requests, 1);
        let now = s.clock.now();
        let peer = peer(&parts.extensions);
        let client = match peer {
            Some(peer) => {
                let c = s.client_ip.resolve(peer.addr.ip(), &parts.headers);
                if c.malformed {
                    s.counters.add(GuardCount::Malformed, 1);
                }
                Some(c)
            }
            None => {
                s.counters.add(GuardCount::NoPeer, 1);
                if s.missing_peer == MissingPeer::Refuse {
                    self.log_missing_peer(now);
                    return Inspection::refuse(RefusalKind::NoPeerAddress, false);
                }
                None
            }
        };
        // Only a connection that is the client's own is closed after a
        // refusal: one from a trusted proxy carries other clients too.
        let close = s.close_refused && client.is_some_and(|c| c.source == IpSource::Peer);
        if let Some(c) = client {
            if s.safelist.contains(c.ip) {
                s.counters.add(GuardCount::Safelisted, 1);
                s.counters.add(GuardCount::Admitted, 1);
                let decision = GuardDecision {
                    client,
                    safelisted: true,
                    binding: None,
                    score: None,
                };
                return Inspection::Pass {
                    decision,
                    headers: None,
                    watch: None,
                    permit: None,
                    at: now,
                    session: None,
                };
            }
            if s.blocklist.contains(c.ip) || self.banned_at(c.ip, now) {
                s.counters.add(GuardCount::RefusedBlocked, 1);
                if let Some(sc) = &s.scorer {
                    sc.detector.count_refused();
                }
                return Inspection::refuse(RefusalKind::Blocked, close);
            }
        }
        // gRPC clients keep no cookies: sessions leave them alone.
        let presented = match (&s.session, client) {
            (Some(session), Some(c)) if !claims_grpc(&parts.headers) => {
                let p = session.check(&parts.headers, c.ip, now);
                match p {
                    Presented::Valid => s.counters.add(GuardCount::SessionValid, 1),
                    Presented::Invalid => s.counters.add(GuardCount::SessionInvalid, 1),
                    Presented::Absent => {}
                }
                Some(p)
            }
            _ => None,
        };
        let mut cost_factor = 1;
        let route = if s.needs_route || s.scorer.is_some() {
            route(parts)
        } else {
            ""
        };
        let assessment = match (&s.scorer, client) {
            (Some(sc), Some(c)) => {
                let wire = peer.and_then(|p| p.wire_head(&parts.extensions));
                let secure = self.secure(parts, peer.map(|p| p.addr.ip()));
                // Behind a trusted proxy the wire head is the proxy's,
                // whatever client it forwards.
                let direct = wire.is_some()
                    && peer.is_some_and(|p| !s.client_ip.trusted().contains(p.addr.ip()));
                let target = Target {
                    route,
                    secure,
                    direct,
                    session: presented,
                };
                let a = sc.assess_with_wire(parts, c.ip, wire, target, now);
                if a.session_unreturned_news {
                    s.counters.add(GuardCount::SessionNotReturned, 1);
                }
                match self.climb_ladder(sc, &a, parts, c.ip, now) {
                    Step::Go(factor) => cost_factor = factor,
                    Step::Banned => return Inspection::refuse(RefusalKind::Blocked, close),
                    Step::Held => return Inspection::refuse(RefusalKind::Suspect, close),
                    Step::Challenged(page) => {
                        return Inspection::Refuse {
                            kind: RefusalKind::Challenged,
                            rate: None,
                            close: false,
                            page: Some(page),
                        };
                    }
                }
                Some(a)
            }
            _ => None,
        };
        let ip = client.map(|c| c.ip);
        let n = s.enforced.len();
        let (verdict, binding) = if n <= INLINE_RULES {
            let mut checks = [Pending::PLACEHOLDER; INLINE_RULES];
            let mut owners = [0; INLINE_RULES];
            let (checks, owners) = (&mut checks[..n], &mut owners[..n]);
            self.charge_enforced(parts, ip, route, cost_factor, now, checks, owners)
        } else {
            let (mut checks, mut owners) = (vec![Pending::PLACEHOLDER; n], vec![0; n]);
            self.charge_enforced(parts, ip, route, cost_factor, now, &mut checks, &mut owners)
        };
        let rate_info = |i: usize| {
            let rule = &s.enforced[i];
            RateInfo {
                rule: Arc::clone(&rule.name),
                policy: rule.policy.clone(),
                decision: verdict.decision,
            }
        };
        if !verdict.is_allowed() {
            // A throttled request refused only because of its throttled
            // cost is not pressure of its own: counting it would let a
            // throttle climb by itself to a ban.
            let pressure = cost_factor == 1 || !self.admits_at_normal_cost(parts, ip, route, now);
            if let Some(sc) = &s.scorer {
                sc.detector.count_refusal();
            }
            if let (Some(sc), Some(a), true) = (&s.scorer, &assessment, pressure) {
                let after = sc.refused(a, now);
                if after.action == Action::Ban && self.score_ban(sc, &after, now) {
                    return Inspection::refuse(RefusalKind::Blocked, close);
                }
            }
            s.counters.add(GuardCount::RefusedRate, 1);
            return Inspection::Refuse {
                kind: RefusalKind::RateLimited,
                rate: binding.map(rate_info),
                close,
                page: None,
            };
        }
        if !s.shadow.is_empty() {
            self.observe_shadow_rules(parts, ip, route, now);
        }
        let permit = match (&s.shedder, admit) {
            (Some(shedder), true) => {
                let standing = assessment.as_ref().map_or(0, |a| self.standing(a));
                let route = if s.needs_route { route } else { "" };
                match shedder.acquire(parts, route, standing) {
                    Ok(place) => Some(place),
                    Err(_) => {
                        self.count_shed();
                        return Inspection::refuse(RefusalKind::Overloaded, false);
                    }
                }
            }
            _ => None,
        };
        // A waiting request is counted when its wait ends.
        if !matches!(permit, Some(Place::Wait(_))) {
            s.counters.add(GuardCount::Admitted, 1);
        }
        let decision = GuardDecision {
            client,
            safelisted: false,
            binding: binding.map(|i| (Arc::clone(&s.enforced[i].name), verdict.decision)),
            score: assessment
                .as_ref()
                .map(|a| (a.report, a.action, a.fingerprint, a.cluster)),
        };
        Inspection::Pass {
            decision,
            headers: binding.filter(|_| s.headers_on_success).map(rate_info),
            watch: assessment.as_ref().map(Assessment::watch),
            permit,
            at: now,
            session: client
                .filter(|_| matches!(presented, Some(Presented::Absent | Presented::Invalid)))
                .map(|c| c.ip),
        }
    }

    /// The session cookie for a client at `ip` whose request, decided at
    /// `at`, was answered with a success; marks it sent in the client's
    /// profile when scoring watched the request.
    pub(crate) fn issue_session(
        &self,
        ip: IpAddr,
        at: Timestamp,
        watch: Option<&Watch>,
    ) -> Option<HeaderValue> {
        let s = &*self.shared;
        let session = s.session.as_ref()?;
        s.counters.add(GuardCount::SessionIssued, 1);
        if let (Some(sc), Some(w)) = (&s.scorer, watch) {
            sc.session_issued(w, at);
        }
        Some(session.set_cookie(ip, at))
    }

    /// A scored client's standing for overload admission, from −2 to +2.
    ///
    /// By its record: one step down for a suspicious score (the throttle
    /// threshold or more), and for a newcomer while the service is in
    /// trouble (under attack or shedding, and no good exchange from
    /// before nor a valid session cookie: the attack's most likely member,
    /// as scoring's no-history points say); one up for a clean score
    /// (under 10: a known-good client, or a browser without misbehaviour
    /// while calm) of a client seen before (a good exchange, or a valid
    /// session cookie returned) that came before the current busy period
    /// (see below).
    ///
    /// By its pace: one down for a heavy user (several requests a second,
    /// sustained), one up for a light one (about two a second or less, as
    /// a person browses) seen before, that came before the busy period.
    ///
    /// Neither the score nor the volume of a client's first requests says
    /// much: every new browser scores clean and looks light, as a crowd
    /// arriving all at once shows. When the service is full, the light,
    /// clean users it knows go first, and a crowd of newcomers last but for
    /// the heavy and the suspicious. A client that came during a busy
    /// period (the request rate raised, or the service degraded: a crowd,
    /// a sale, an attack) is not lifted above the crowd it came with until
    /// that period ends, however well it behaves: a crowd past capacity
    /// cannot push out the customers it found there.
    fn standing(&self, a: &Assessment) -> i8 {
        let throttle = self
            .shared
            .scorer
            .as_ref()
            .map_or(f32::MAX, |sc| sc.ladder.throttle);
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

    /// Applies the ladder's action for a scored request.
    fn climb_ladder(
        &self,
        sc: &Scorer,
        a: &Assessment,
        parts: &Parts,
        ip: IpAddr,
        now: Timestamp,
    ) -> Step {
        let ladder = &sc.ladder;
        if a.action >= Action::Throttle {
            sc.note_offender(a, now);
        }
        let throttle = || {
            if ladder.shadow_throttle {
                sc.counters.add(ScoreCount::ShadowThrottles, 1);
                Step::Go(1)
            } else {
                sc.counters.add(ScoreCount::Throttled, 1);
                Step::Go(ladder.throttle_factor)
            }
        };
        match a.action {
            Action::Allow => Step::Go(1),
            Action::Throttle => throttle(),
            Action::Ban => {
                if self.score_ban(sc, a, now) {
                    Step::Banned
                } else {
                    Step::Go(1)
                }
            }
            Action::Challenge => {
                if ladder.shadow_challenge {
                    sc.counters.add(ScoreCount::ShadowChallenges, 1);
                    return Step::Go(1);
                }
                let Some(hook) = &sc.challenge else {
                    // Without a hook, a newcomer of a surging cluster, at a
                    // pace no rate rule would stop, is held back. Any other
                    // client is throttled, so that its own behaviour (the
                    // rate rules' refusals, the service's 404s) takes it
                    // on to a ban or back down.
                    if !a.flagged_newcomer() || a.volume >= HEAVY_VOLUME {
                        return throttle();
                    }
                    sc.detector.count_refusal();
                    sc.counters.add(ScoreCount::Held, 1);
                    self.shared.counters.add(GuardCount::RefusedSuspect, 1);
                    return Step::Held;
                };
                sc.detector.count_refusal();
                if hook.verify(parts, ip) {
                    sc.counters.add(ScoreCount::ChallengesPassed, 1);
                    return Step::Go(1);
                }
                sc.counters.add(ScoreCount::Challenged, 1);
                self.shared.counters.add(GuardCount::RefusedChallenge, 1);
                Step::Challenged(Box::new(hook.issue(parts, ip)))
            }
        }
    }

    /// Whether a request reached a secure origin, where browsers send
    /// `Sec-Fetch-*` and client hints: the server terminates TLS
    /// ([`GuardBuilder::tls`]), the request says so itself (an `https`
    /// scheme, a `localhost` host), or a trusted proxy in front says
    /// `X-Forwarded-Proto: https`.
    fn secure(&self, parts: &Parts, peer: Option<IpAddr>) -> bool {
        let s = &*self.shared;
        s.tls
            || secure_by_itself(parts)
            || (peer.is_some_and(|p| s.client_ip.trusted().contains(p))
                && parts
                    .headers
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")))
    }

    /// Bans the client of a request that reached the ban threshold; false
    /// when the ban is only observed (shadow mode) and the request goes on.
    fn score_ban(&self, sc: &Scorer, a: &Assessment, now: Timestamp) -> bool {
        let Some(order) = sc.ban(a, now) else {
            return false;
        };
        sc.detector.count_refusal();
        self.record_ban(order.client, order.duration, now);
        self.shared.counters.add(GuardCount::RefusedScore, 1);
        true
    }

    /// The service answered a request that scoring assessed.
    pub(crate) fn answered(&self, a: &Watch, status: http::StatusCode, started: Timestamp) {
        if let Some(sc) = &self.shared.scorer {
            let now = self.shared.clock.now();
            sc.answered(a, status, now.saturating_duration_since(started), now);
        }
    }

    /// Writes the checks the enforced rules that apply to this request owe
    /// into `checks` (and each one's rule index into `owners`), runs them
    /// all or none, and returns the verdict with the binding rule's index.
    #[allow(clippy::too_many_arguments)]
    fn charge_enforced<'g>(
        &'g self,
        parts: &Parts,
        ip: Option<IpAddr>,
        route: &str,
        cost_factor: u64,
        now: Timestamp,
        checks: &mut [Pending<'g>],
        owners: &mut [usize],
    ) -> (CompositeDecision, Option<usize>) {
        let mut len = 0;
        for (i, rule) in self.shared.enforced.iter().enumerate() {
            if let Some(p) = rule.pending(parts, ip, route, cost_factor) {
                checks[len] = p;
                owners[len] = i;
                len += 1;
            }
        }
        let verdict = check_all(now, &checks[..len]);
        (verdict, verdict.index.map(|k| owners[k]))
    }

    /// Whether every enforced rule would admit the request at its normal
    /// cost now (peeked: nothing charged or counted).
    fn admits_at_normal_cost(
        &self,
        parts: &Parts,
        ip: Option<IpAddr>,
        route: &str,
        now: Timestamp,
    ) -> bool {
        self.shared
            .enforced
            .iter()
            .filter_map(|r| r.pending(parts, ip, route, 1))
            .all(|p| p.would_admit(now))
    }

    /// Charges each shadow rule on its own; its limiter counts what it
    /// would have refused.
    fn observe_shadow_rules(&self, parts: &Parts, ip: Option<IpAddr>, route: &str, now: Timestamp) {
        for rule in &self.shared.shadow {
            if let Some(p) = rule.pending(parts, ip, route, 1) {
                if !check_all(now, &[p]).is_allowed() {
                    tracing::debug!(rule = &*rule.name, client = ?ip, "floodguard: shadow rule would refuse");
                }
            }
        }
    }

    fn log_missing_peer(&self, now: Timestamp) {
        let last = &self.shared.no_peer_logged;
        let prev = last.load(Ordering::Relaxed);
        let due = prev == 0
            || now.as_nanos().saturating_sub(prev - 1) >= NO_PEER_LOG_EVERY.as_nanos() as u64;
        if due
            && last
                .compare_exchange(
                    prev,
                    now.as_nanos() + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::error!(
                "floodguard: request has no peer address, refused with 500. Serve axum with \
                 `into_make_service_with_connect_info::<SocketAddr>()` (or over floodguard's Gate), \
                 serve tonic with its own server or `serve_with_incoming` over the Gate, or insert a \
                 `floodguard::http::PeerAddr` extension; to serve such requests anyway, set \
                 `.on_missing_peer(MissingPeer::SkipAddressRules)`"
            );
        }
    }
}

/// Builds a [`Guard`]; see [`Guard::builder`].
#[must_use = "a builder does nothing until `.build()`"]
pub struct GuardBuilder<C = CoarseClock> {
    clock: C,
    rules: Vec<Rule>,
    client_ip: ClientIpConfig,
    safelist: PrefixSet,
    blocklist: PrefixSet,
    max_bans: usize,
    missing_peer: MissingPeer,
    headers_on_success: bool,
    close_refused: bool,
    tls: bool,
    tarpit: Tarpit,
    scoring: Option<Scoring>,
    on_event: Option<EventHook>,
    overload: Option<Overload>,
    session: Option<SessionCookie>,
    /// Shared bans: the store, and the conversion set by `share_bans` (lost
    /// by `clock`, which changes the clock's type).
    #[cfg(feature = "redis")]
    share_bans: Option<(crate::redis::bans::Setup, Option<ToBanTarget<C>>)>,
}

impl<C: Clock + Clone> GuardBuilder<C> {
    /// Turns on overload protection: an adaptive concurrency limit around
    /// the inner service that sheds the lowest-priority requests first
    /// (with scoring on, suspicious clients before unknown ones before
    /// clean ones). Applies to the layer only; [`Guard::check`] does not
    /// take places in the limit.
    pub fn overload(mut self, overload: Overload) -> Self {
        self.overload = Some(overload);
        self
    }

    /// Turns on client scoring and attack detection: each request is
    /// fingerprinted and scored from how it looks and how its client
    /// behaves, and the [`Ladder`](crate::http::Ladder) throttles, challenges or
    /// bans by score. See [`Scoring`] for the knobs.
    pub fn scoring(mut self, scoring: Scoring) -> Self {
        self.scoring = Some(scoring);
        self
    }

    /// Calls `hook` with every [`Event`] (attack started or ended, class or
    /// network flagged, client banned), on the request path that caused it:
    /// keep it quick (hand the event to a channel to do more). Events are
    /// also logged with `tracing`.
    pub fn on_event(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(hook));
        self
    }

    /// Turns on the session cookie (off by default; APIs do not need it):
    /// the layer sets a signed cookie, bound to the client's network, on
    /// successful answers to requests that did not carry a valid one, and
    /// checks it on every request. Sending a valid one back is evidence of
    /// a browser session: with [scoring](Self::scoring) on, the client
    /// ranks as known under overload and is never a newcomer of a surging
    /// cluster. One that is forged, expired or from another network
    /// ([`Weights::session_invalid`](crate::http::Weights::session_invalid)),
    /// and never sending it back
    /// ([`Weights::session_not_returned`](crate::http::Weights::session_not_returned)),
    /// are the client's own evidence. gRPC requests are left alone, and
    /// [`Guard::check`] checks the cookie but cannot set one. Counters are
    /// in [`GuardStats::session`].
    ///
    /// ```
    /// use floodguard::http::{Guard, Scoring, SessionCookie};
    ///
    /// // Draw the key once, keep it in the configuration, share it across
    /// // the fleet: a new key voids every cookie.
    /// let key = *b"an example key!!";
    /// let guard = Guard::builder()
    ///     .default_rules()
    ///     .scoring(Scoring::new())
    ///     .session(SessionCookie::new(key).secure(true))
    ///     .build()?;
    /// assert_eq!(guard.stats().session.map(|s| s.issued), Some(0));
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn session(mut self, cookie: SessionCookie) -> Self {
        self.session = Some(cookie);
        self
    }

    /// Adds a rule. A request is checked against every rule that applies to
    /// it and charged on all enforced ones or none.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Adds the rules floodguard recommends before you know your traffic,
    /// one per scale of network, each ten times the one below it at most:
    ///
    /// | rule | key | average | at once |
    /// |---|---|---:|---:|
    /// | `per-ip` | the address | 20/s | 40 |
    /// | `per-subscriber` | IPv4 address, IPv6 /64 (one host or home) | 40/s | 80 |
    /// | `per-site` | IPv4 /24, IPv6 /48 (one office or provider block) | 200/s | 400 |
    ///
    /// One host rotating through its IPv6 /64 is one subscriber; a NAT or
    /// office network still has room.
    ///
    /// ```
    /// use floodguard::http::Guard;
    /// let guard = Guard::builder().default_rules().build()?;
    /// let names: Vec<String> = guard.stats().rules.into_iter().map(|r| r.name).collect();
    /// assert_eq!(names, ["per-ip", "per-subscriber", "per-site"]);
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn default_rules(self) -> Self {
        use crate::ip::PrefixLengths;
        let second = Duration::from_secs(1);
        let subscriber = PrefixLengths::new(32, 64).expect("valid lengths");
        let site = PrefixLengths::new(24, 48).expect("valid lengths");
        self.rule(Rule::per_ip("per-ip").gcra(20, second).burst(40))
            .rule(
                Rule::per_prefix("per-subscriber", subscriber)
                    .gcra(40, second)
                    .burst(80),
            )
            .rule(
                Rule::per_prefix("per-site", site)
                    .gcra(200, second)
                    .burst(400),
            )
    }

    /// Adds several rules.
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.rules.extend(rules);
        self
    }

    /// How the client address is found: trusted proxies and the
    /// forwarding header they set. By default nobody is trusted and the
    /// peer address is the client.
    pub fn client_ip(mut self, config: ClientIpConfig) -> Self {
        self.client_ip = config;
        self
    }

    /// Clients in `prefix` skip every rule (and the gate's caps).
    pub fn safelist(mut self, prefix: IpPrefix) -> Self {
        self.safelist.insert(prefix);
        self
    }

    /// Clients in `prefix` are refused with 403 (and closed at accept by the
    /// gate).
    pub fn blocklist(mut self, prefix: IpPrefix) -> Self {
        self.blocklist.insert(prefix);
        self
    }

    /// Cap on runtime bans held at once (default [`DEFAULT_MAX_BANS`]), so a
    /// ban-happy policy cannot grow memory without bound. A new ban in a
    /// full list takes the place of the one that would end soonest.
    pub fn max_bans(mut self, max: usize) -> Self {
        self.max_bans = max;
        self
    }

    /// Says that the server terminates TLS itself, so every request
    /// reached a secure origin. Browsers send `Sec-Fetch-*` and client hints
    /// only to secure origins, and scoring checks for them only there; it
    /// also counts as secure a request to `localhost`, one with an `https`
    /// scheme (HTTP/2 and 3 carry it), and one a trusted proxy
    /// ([`ClientIpConfig::trust`]) marks `X-Forwarded-Proto: https`. Off by
    /// default: over plain HTTP a browser sends neither and is still a
    /// browser.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// What to do with requests that carry no peer address.
    pub fn on_missing_peer(mut self, policy: MissingPeer) -> Self {
        self.missing_peer = policy;
        self
    }

    /// Also send `RateLimit` and `RateLimit-Policy` headers on admitted
    /// responses (refusals always carry them). Off by default.
    pub fn rate_limit_headers(mut self, on: bool) -> Self {
        self.headers_on_success = on;
        self
    }

    /// Whether an HTTP/1 connection is closed after a rate-limit, block or
    /// hold-back refusal (`Connection: close`), when the connection is the refused
    /// client's own (not a trusted proxy's). On by default: a client that keeps
    /// sending on a connection after a 429 is flooding, and must then
    /// reconnect, where the [`Gate`](crate::http::Gate)'s new-connection rate
    /// turns it away before a byte is read, for far less than an HTTP
    /// exchange. A refused client must wait `Retry-After` anyway. HTTP/2
    /// connections are never closed for one stream's refusal.
    pub fn close_refused_connections(mut self, on: bool) -> Self {
        self.close_refused = on;
        self
    }

    /// How long refusals of blocked clients are held before they are sent,
    /// and how many at most at once: [`Tarpit::default`] (one second, 1,024)
    /// unless set; [`Tarpit::off`] sends them at once. A flood tool waits for
    /// each answer, so a held refusal slows each of its connections to one
    /// request per hold, where no connection can be closed (a trusted
    /// proxy's, HTTP/2). Holding needs Tokio's timer, as axum and tonic
    /// servers have.
    pub fn tarpit(mut self, tarpit: Tarpit) -> Self {
        self.tarpit = tarpit;
        self
    }

    /// Uses another clock, such as a [`ManualClock`](crate::ManualClock) in
    /// tests.
    pub fn clock<C2: Clock + Clone>(self, clock: C2) -> GuardBuilder<C2> {
        GuardBuilder {
            clock,
            rules: self.rules,
            client_ip: self.client_ip,
            safelist: self.safelist,
            blocklist: self.blocklist,
            max_bans: self.max_bans,
            missing_peer: self.missing_peer,
            headers_on_success: self.headers_on_success,
            close_refused: self.close_refused,
            tls: self.tls,
            tarpit: self.tarpit,
            scoring: self.scoring,
            on_event: self.on_event,
            overload: self.overload,
            session: self.session,
            #[cfg(feature = "redis")]
            share_bans: self.share_bans.map(|(setup, _)| (setup, None)),
        }
    }

    /// Checks every rule and builds the guard; the error names the rule
    /// and field.
    pub fn build(self) -> Result<Guard<C>, ConfigError> {
        if self.max_bans == 0 {
            return Err(ConfigError::Zero { field: "max_bans" });
        }
        let (mut enforced, mut shadow) = (Vec::new(), Vec::new());
        for rule in self.rules {
            if enforced
                .iter()
                .chain(&shadow)
                .any(|r: &CompiledRule<C>| *r.name == *rule.name())
            {
                return Err(ConfigError::DuplicateRule {
                    rule: rule.name().to_owned(),
                });
            }
            let compiled = rule.compile(&self.clock)?;
            if compiled.shadow {
                shadow.push(compiled);
            } else {
                enforced.push(compiled);
            }
        }
        let shedder = self.overload.map(Shedder::new).transpose()?;
        let now = self.clock.now();
        let session = self.session.map(|c| c.compile(now)).transpose()?;
        let needs_route = enforced.iter().chain(&shadow).any(CompiledRule::uses_route)
            || shedder.as_ref().is_some_and(Shedder::needs_route);
        #[cfg(feature = "redis")]
        let (on_event, sink, start) = match self.share_bans {
            None => (self.on_event, None, None),
            Some((setup, to_target)) => {
                let misuse = |reason: &str| ConfigError::SharedStore {
                    reason: format!("`share_bans` {reason}"),
                };
                let Some(to_target) = to_target else {
                    return Err(misuse("was called before `.clock(..)`: call it after"));
                };
                let Some((sink, starter)) = setup.open(self.max_bans) else {
                    return Err(misuse("needs the guard built inside a Tokio runtime"));
                };
                (
                    Some(sink.event_hook(self.on_event)),
                    Some(sink),
                    Some((starter, to_target)),
                )
            }
        };
        #[cfg(not(feature = "redis"))]
        let on_event = self.on_event;
        let scorer = match self.scoring {
            Some(config) => Some(Scorer::new(config, on_event, self.clock.now())?),
            None => None,
        };
        let shared = Arc::new(Shared {
            needs_route,
            clock: self.clock,
            enforced,
            shadow,
            client_ip: self.client_ip,
            safelist: self.safelist,
            blocklist: self.blocklist,
            bans: RwLock::new(BanList::new(self.max_bans)),
            ban_count: AtomicUsize::new(0),
            max_bans: self.max_bans,
            missing_peer: self.missing_peer,
            headers_on_success: self.headers_on_success,
            close_refused: self.close_refused,
            tls: self.tls,
            tarpit: TarpitState::new(self.tarpit),
            counters: Striped::default(),
            no_peer_logged: AtomicU64::new(0),
            scorer,
            shedder,
            session,
            #[cfg(feature = "redis")]
            shared_bans: sink,
        });
        #[cfg(feature = "redis")]
        if let Some((starter, to_target)) = start {
            let class_ttl = shared
                .scorer
                .as_ref()
                .map_or(crate::redis::bans::DEFAULT_CLASS_TTL, |sc| {
                    sc.ladder.ban_base
                });
            starter.start(to_target(Arc::downgrade(&shared)), class_ttl);
        }
        Ok(Guard { shared })
    }
}

#[cfg(feature = "redis")]
impl<C: Clock + Clone + 'static> GuardBuilder<C> {
    /// Shares this guard's bans with every instance of the fleet through
    /// `store` (features `tower` and `redis`): each ban it records (by
    /// [`Guard::ban`] or by scoring) and each [`Guard::unban`] is published,
    /// and every guard sharing bans on a store of the same namespace applies
    /// it, within a round trip to Redis. Fingerprint classes that attack
    /// detection flags are shared too, for the ladder's first ban length
    /// (60 s without scoring), so the other instances score their requests
    /// as surging.
    ///
    /// Nothing waits for Redis: changes are published by a background task,
    /// and a second task listens on a pub/sub connection of its own. On each
    /// connection it first loads the bans in force, so a guard started
    /// later, or cut off from Redis for a while, catches up. While Redis is
    /// unreachable each guard keeps its own bans and retries about every
    /// second. Both tasks stop when the guard is dropped. The key and
    /// message layout is in [`redis`](crate::redis#shared-bans); the
    /// counters are in [`GuardStats::shared_bans`].
    ///
    /// Call it inside a Tokio runtime, after [`clock`](Self::clock) if you
    /// use one: `build` refuses otherwise.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use floodguard::http::Guard;
    /// use floodguard::redis::RedisStore;
    ///
    /// let store = RedisStore::builder("redis://127.0.0.1:6379/").namespace("shop").build()?;
    /// let guard = Guard::builder().default_rules().share_bans(&store).build()?;
    /// // Refused by every instance of "shop" within a second or so.
    /// guard.ban("198.51.100.7".parse()?, Duration::from_secs(600));
    /// # Ok(()) }
    /// ```
    pub fn share_bans(mut self, store: &crate::redis::RedisStore) -> Self {
        fn to_target<C: Clock + 'static>(
            shared: std::sync::Weak<Shared<C>>,
        ) -> std::sync::Weak<dyn crate::redis::bans::BanTarget> {
            shared
        }
        self.share_bans = Some((crate::redis::bans::Setup::new(store), Some(to_target::<C>)));
        self
    }
}
