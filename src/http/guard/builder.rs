//! The guard's builder: rules, lists, client IP, scoring, overload, the
//! session cookie and the tarpit, checked at `build`.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

use crate::http::guard::ban_list::BanList;
use crate::http::guard::fleet::{BanFleet, BanTarget, DEFAULT_CLASS_TTL, FleetLink, GuardHandle};
use crate::http::guard::forgotten_proxy::ForgottenProxy;
use crate::http::guard::guard::Shared;
use crate::http::guard::live::{Live, Settings};
use crate::http::guard::notice::Notice;
use crate::http::guard::refusal_hook::{RefusalHook, RefusalInfo, RefusalResponse};
use crate::http::guard::reload::Fixed;
use crate::http::guard::rules::Rule;
use crate::http::identify::client_ip::ClientIpConfig;
use crate::http::identify::session::SessionCookie;
use crate::http::overload::shedder::Shedder;
use crate::http::scoring::detect::Event;
use crate::http::scoring::scorer::{EventHook, Scorer};
use crate::http::tarpit::{Tarpit, TarpitState};
use crate::http::{Guard, Overload, Scoring};
use crate::stats::Striped;
use crate::{Clock, CoarseClock, ConfigError, IpPrefix};

/// What to do with a request that carries no peer address (the server was
/// not set up to record one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
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

/// Builds a [`Guard`]; see [`Guard::builder`].
#[must_use = "a builder does nothing until `.build()`"]
pub struct GuardBuilder<C = CoarseClock> {
    pub(super) clock: C,
    /// What a reload can change later.
    pub(crate) settings: Settings,
    pub(crate) max_bans: usize,
    /// Sections built beside the guard from the same configuration, for
    /// reloads to compare (see `guard::reload`).
    pub(crate) outside: Vec<(&'static str, Option<String>)>,
    pub(crate) tarpit: Tarpit,
    pub(crate) scoring: Option<Scoring>,
    pub(super) on_event: Option<EventHook>,
    pub(crate) overload: Option<Overload>,
    pub(crate) session: Option<SessionCookie>,
    pub(super) refusal_hook: Option<RefusalHook>,
    /// The fleet to share bans with, joined by `build` (set by
    /// `share_bans`, under feature `redis`, through `ban_fleet`).
    pub(super) fleet: Option<Box<dyn BanFleet>>,
}

impl<C> std::fmt::Debug for GuardBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardBuilder")
            .field("rules", &self.settings.rules.len())
            .field("rule_store", &self.settings.store.is_some())
            .field("client_ip", &self.settings.admission.client_ip)
            .field("max_bans", &self.max_bans)
            .field("missing_peer", &self.settings.admission.missing_peer)
            .field("tls", &self.settings.admission.tls)
            .field("scoring", &self.scoring.is_some())
            .field("overload", &self.overload.is_some())
            .field("session", &self.session.is_some())
            .field("shares_bans", &self.fleet.is_some())
            .finish_non_exhaustive()
    }
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

    /// Shapes the HTTP refusals the layer sends (429, 403, 500, 503): the
    /// hook gets each refusal's kind, rule, wait and request, and returns
    /// the body (and optionally a status and headers) to send instead of
    /// floodguard's plain text, or `None` to keep it. `Retry-After`,
    /// `RateLimit`, `RateLimit-Policy`, `Cache-Control: no-store` and
    /// `Connection: close` stay floodguard's. gRPC refusals (statuses in
    /// headers) and challenge pages are not shaped.
    ///
    /// ```
    /// use floodguard::http::{Guard, RefusalKind, RefusalResponse};
    /// use http::{HeaderValue, header::CONTENT_TYPE};
    ///
    /// let guard = Guard::builder()
    ///     .default_rules()
    ///     .on_refusal(|r| {
    ///         let secs = r.retry_after.map_or(0, |d| d.as_secs().max(1));
    ///         (r.kind == RefusalKind::RateLimited).then(|| {
    ///             RefusalResponse::new(format!(r#"{{"error":"rate_limited","retry_after":{secs}}}"#))
    ///                 .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
    ///         })
    ///     })
    ///     .build()?;
    /// # let _ = guard;
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn on_refusal(
        mut self,
        hook: impl Fn(&RefusalInfo<'_>) -> Option<RefusalResponse> + Send + Sync + 'static,
    ) -> Self {
        self.refusal_hook = Some(Arc::new(hook));
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
    /// in [`GuardStats::session`](crate::http::GuardStats::session).
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
        self.settings.rules.push(rule);
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
        self.settings.rules.extend(rules);
        self
    }

    /// How the client address is found: trusted proxies and the
    /// forwarding header they set. By default nobody is trusted and the
    /// peer address is the client.
    pub fn client_ip(mut self, config: ClientIpConfig) -> Self {
        self.settings.admission.client_ip = config;
        self
    }

    /// Clients in `prefix` skip every rule (and the gate's caps).
    pub fn safelist(mut self, prefix: IpPrefix) -> Self {
        self.settings.admission.safelist.insert(prefix);
        self
    }

    /// Clients in `prefix` are refused with 403 (and closed at accept by the
    /// gate).
    pub fn blocklist(mut self, prefix: IpPrefix) -> Self {
        self.settings.admission.blocklist.insert(prefix);
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
        self.settings.admission.tls = on;
        self
    }

    /// What to do with requests that carry no peer address.
    pub fn on_missing_peer(mut self, policy: MissingPeer) -> Self {
        self.settings.admission.missing_peer = policy;
        self
    }

    /// Also send `RateLimit` and `RateLimit-Policy` headers on admitted
    /// responses (refusals always carry them). Off by default.
    pub fn rate_limit_headers(mut self, on: bool) -> Self {
        self.settings.admission.headers_on_success = on;
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
        self.settings.admission.close_refused = on;
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
    /// tests. `build` needs it `'static` (every clock of this crate is; a
    /// borrowed `&C` is not), as shared bans hand the guard to background
    /// tasks.
    pub fn clock<C2: Clock + Clone>(self, clock: C2) -> GuardBuilder<C2> {
        GuardBuilder {
            clock,
            settings: self.settings,
            max_bans: self.max_bans,
            outside: self.outside,
            tarpit: self.tarpit,
            scoring: self.scoring,
            on_event: self.on_event,
            overload: self.overload,
            session: self.session,
            refusal_hook: self.refusal_hook,
            fleet: self.fleet,
        }
    }
}

impl<C: Clock + Clone + 'static> GuardBuilder<C> {
    /// Checks every rule and builds the guard; the error names the rule
    /// and field.
    pub fn build(self) -> Result<Guard<C>, ConfigError> {
        if self.max_bans == 0 {
            return Err(ConfigError::Zero { field: "max_bans" });
        }
        let fixed = Fixed {
            max_bans: self.max_bans,
            tarpit: self.tarpit,
            scoring: self.scoring.clone(),
            overload: self.overload.clone(),
            session: self.session.clone(),
            outside: self.outside,
        };
        let shedder = self.overload.map(Shedder::new).transpose()?;
        let shedder_needs_route = shedder.as_ref().is_some_and(Shedder::needs_route);
        let rule_store = self.settings.store.clone();
        let live = Live::compile(self.settings, &self.clock, shedder_needs_route, None)?;
        let now = self.clock.now();
        let session = self.session.map(|c| c.compile(now)).transpose()?;
        let (on_event, fleet, start) = match self.fleet {
            None => (self.on_event, None, None),
            Some(fleet) => {
                let joined = fleet
                    .join(self.max_bans)
                    .map_err(|reason| ConfigError::SharedStore { reason })?;
                (
                    Some(publish_classes(&joined.link, self.on_event)),
                    Some(joined.link),
                    Some(joined.start),
                )
            }
        };
        let scorer = match self.scoring {
            Some(config) => Some(Scorer::new(config, on_event, self.clock.now())?),
            None => None,
        };
        let shared = Arc::new(Shared {
            clock: self.clock,
            live: ArcSwap::from_pointee(live),
            rule_store,
            bans: RwLock::new(BanList::new(self.max_bans)),
            ban_count: AtomicUsize::new(0),
            max_bans: self.max_bans,
            fixed: Mutex::new(fixed),
            tarpit: TarpitState::new(self.tarpit),
            counters: Striped::default(),
            wiring: Striped::default(),
            no_peer_notice: Notice::default(),
            proxy_notice: Notice::default(),
            forgotten_proxy: ForgottenProxy::default(),
            refusal_hook: self.refusal_hook,
            scorer,
            shedder,
            session,
            fleet,
        });
        if let Some(start) = start {
            let class_ttl = shared
                .scorer
                .as_ref()
                .map_or(DEFAULT_CLASS_TTL, Scorer::class_ttl);
            let target: std::sync::Weak<dyn BanTarget> = Arc::downgrade(&shared) as _;
            start(GuardHandle::new(target), class_ttl);
        }
        Ok(Guard { shared })
    }
}

/// Wraps the guard's event hook (if any) so that the classes attack
/// detection flags go to the fleet too.
fn publish_classes(fleet: &Arc<dyn FleetLink>, user: Option<EventHook>) -> EventHook {
    let fleet = Arc::clone(fleet);
    Arc::new(move |e: &Event| {
        if let Event::ClassFlagged(share) = e {
            fleet.class_flagged(share.key.id());
        }
        if let Some(hook) = &user {
            hook(e);
        }
    })
}
