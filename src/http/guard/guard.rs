//! The guard: its shared state (rules, lists, bans, counters, scoring,
//! overload), the ban operations, and the counters and snapshots it hands
//! out.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use crate::http::gate::{AcceptVerdict, Gate, GateBuilder};
use crate::http::guard::ban_list::{BanList, Inserted};
use crate::http::guard::fleet::{BanTarget, FleetLink};
use crate::http::guard::forgotten_proxy::ForgottenProxy;
use crate::http::guard::live::{Live, Settings};
use crate::http::guard::notice::Notice;
use crate::http::guard::refusal_hook::RefusalHook;
use crate::http::guard::reload::FixedLock;
use crate::http::guard::rules::CompiledRule;
use crate::http::guard::shared_rule::RuleFleet;
use crate::http::guard::stats::{GUARD_COUNTS, GuardCount, WIRING_COUNTS, WiringCount};
use crate::http::identify::session::{Session, SessionStats};
use crate::http::overload::shedder::Shedder;
use crate::http::scoring::scorer::Scorer;
use crate::http::tarpit::{Held, Tarpit, TarpitState};
use crate::http::{DEFAULT_MAX_BANS, GuardBuilder, GuardStats, Snapshot};
use crate::ip::canonical;
use crate::stats::Striped;
use crate::{Clock, CoarseClock, IpPrefix, Timestamp};

pub(super) struct Shared<C> {
    pub(super) clock: C,
    /// The rules, lists and switches a reload swaps.
    pub(super) live: ArcSwap<Live<C>>,
    /// The store rules marked `shared` in a configuration count in, for
    /// the versions reloads make.
    pub(super) rule_store: Option<Arc<dyn RuleFleet>>,
    pub(super) bans: RwLock<BanList>,
    pub(super) ban_count: AtomicUsize,
    pub(super) max_bans: usize,
    /// What the guard was built with that a reload leaves as it is.
    pub(super) fixed: FixedLock,
    pub(super) tarpit: TarpitState,
    pub(super) counters: Striped<GUARD_COUNTS>,
    pub(super) wiring: Striped<WIRING_COUNTS>,
    /// When the missing-peer error was last logged, in clock nanoseconds + 1.
    pub(super) no_peer_notice: Notice,
    pub(super) proxy_notice: Notice,
    pub(super) forgotten_proxy: ForgottenProxy,
    pub(super) refusal_hook: Option<RefusalHook>,
    pub(super) scorer: Option<Scorer>,
    pub(super) shedder: Option<Shedder>,
    pub(super) session: Option<Session>,
    /// Where bans and lifts go to be published to the fleet.
    pub(super) fleet: Option<Arc<dyn FleetLink>>,
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
impl<C: Clock> BanTarget for Shared<C> {
    fn apply_ban(&self, prefix: IpPrefix, remaining: Duration, extend_only: bool) -> bool {
        self.insert_ban(prefix, remaining, self.clock.now(), extend_only)
    }

    fn apply_lift(&self, prefix: &IpPrefix) -> bool {
        let now = self.clock.now();
        self.remove_ban(prefix).is_some_and(|until| until > now)
    }

    fn apply_class(&self, class: u64, remaining: Duration) -> bool {
        let now = self.clock.now();
        let until = now.saturating_add(remaining);
        self.scorer
            .as_ref()
            .is_some_and(|sc| sc.flag_remote_class(class, until, now))
    }
}

/// The shared state behind [`GuardLayer`](crate::http::GuardLayer): rules, trusted proxies, lists,
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
    pub(super) shared: Arc<Shared<C>>,
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
        let s = self.shared.live.load();
        f.debug_struct("Guard")
            .field(
                "enforced",
                &s.enforced.iter().map(|r| &*r.name).collect::<Vec<_>>(),
            )
            .field(
                "shadow",
                &s.shadow.iter().map(|r| &*r.name).collect::<Vec<_>>(),
            )
            .field("safelist", &s.admission.safelist.len())
            .field("blocklist", &s.admission.blocklist.len())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Starts a builder on the default [`CoarseClock`].
    pub fn builder() -> GuardBuilder {
        GuardBuilder {
            clock: CoarseClock::new(),
            settings: Settings::default(),
            max_bans: DEFAULT_MAX_BANS,
            outside: Vec::new(),
            tarpit: Tarpit::default(),
            scoring: None,
            on_event: None,
            overload: None,
            session: None,
            refusal_hook: None,
            fleet: None,
        }
    }
}

impl<C: Clock> Guard<C> {
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
            tracing::info!(
                client = %prefix,
                duration_ms = duration.as_millis() as u64,
                reason = "manual",
                "floodguard: banned"
            );
        }
        banned
    }

    /// Puts a ban in the list (scoring's bans are reported as events) and,
    /// with shared bans, queues it for the fleet.
    pub(super) fn record_ban(&self, prefix: IpPrefix, duration: Duration, now: Timestamp) -> bool {
        // Claimed before it is in force, so that reconciling shared bans
        // never lifts it, even while it waits to be published.
        if let Some(fleet) = &self.shared.fleet {
            fleet.claim(&prefix);
        }
        let recorded = self.shared.insert_ban(prefix, duration, now, false);
        if let (true, Some(fleet)) = (recorded, &self.shared.fleet) {
            fleet.banned(prefix, duration);
        }
        recorded
    }

    /// Lifts the ban on exactly `prefix`; returns whether there was one.
    /// With [shared bans](GuardBuilder::share_bans), the lift is published
    /// to the fleet either way.
    pub fn unban(&self, prefix: &IpPrefix) -> bool {
        let lifted = self.shared.remove_ban(prefix).is_some();
        if lifted {
            tracing::info!(client = %prefix, reason = "manual", "floodguard: ban lifted");
        }
        if let Some(fleet) = &self.shared.fleet {
            fleet.lifted(*prefix);
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
        let live = s.live.load();
        let ip = canonical(ip);
        if live.admission.safelist.contains(ip) || live.admission.client_ip.trusted().contains(ip) {
            AcceptVerdict::Exempt
        } else if live.admission.blocklist.contains(ip) || self.is_banned(ip) {
            if let Some(sc) = &s.scorer {
                sc.blocked();
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
            untrusted_forwarding: s.wiring.sum(WiringCount::UntrustedForwarding),
            forgotten_proxy_warnings: s.wiring.sum(WiringCount::ForgottenProxyWarnings),
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
            scoring: s.scorer.as_ref().map(Scorer::stats),
            rules: s.live.load().rules().map(CompiledRule::stats).collect(),
            tarpit: s.tarpit.stats(),
            shared_bans: s.fleet.as_ref().map(|f| f.stats()),
        }
    }

    /// A request shed by overload protection, at once or after waiting.
    pub(crate) fn count_shed(&self) {
        let s = &*self.shared;
        s.counters.add(GuardCount::RefusedOverload, 1);
        if let Some(sc) = &s.scorer {
            sc.shed();
        }
    }

    /// A request that waited for a place got one.
    pub(crate) fn count_waited_admitted(&self) {
        self.shared.counters.add(GuardCount::Admitted, 1);
    }

    /// The user's hook for HTTP refusals, if set.
    pub(crate) fn refusal_hook(&self) -> Option<&RefusalHook> {
        self.shared.refusal_hook.as_ref()
    }

    /// A place to hold a blocked client's refusal, and for how long.
    pub(crate) fn hold_refusal(&self) -> Option<(Duration, Held)> {
        self.shared.tarpit.hold()
    }

    /// Counters, attack state, worst offenders and bans, at once.
    pub fn snapshot(&self) -> Snapshot {
        let s = &*self.shared;
        Snapshot {
            now: s.clock.now(),
            stats: self.stats(),
            detection: s.scorer.as_ref().map(Scorer::detection),
            offenders: s.scorer.as_ref().map_or_else(Vec::new, Scorer::offenders),
            bans: self.bans(),
        }
    }

    /// What attack detection saw at its last tick (scoring on only).
    #[cfg(feature = "console")]
    pub(crate) fn detection(&self) -> Option<crate::http::DetectionSnapshot> {
        self.shared.scorer.as_ref().map(Scorer::detection)
    }

    /// Whether scoring's attack detection holds the service under attack.
    pub fn under_attack(&self) -> bool {
        self.shared
            .scorer
            .as_ref()
            .is_some_and(Scorer::under_attack)
    }

    pub(super) fn banned_at(&self, ip: IpAddr, now: Timestamp) -> bool {
        let s = &*self.shared;
        s.ban_count.load(Ordering::Acquire) != 0
            && s.bans.read().get(ip).is_some_and(|(_, until)| *until > now)
    }
}
