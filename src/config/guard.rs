//! The guard's whole configuration as one value: what a builder takes,
//! without the hooks (which are code), plus the gate's section. Builds a
//! guard, and reloads a running one.

use crate::config::GateConfig;
use crate::http::guard::live::{Admission, Settings};
use crate::http::guard::reload::{Fixed, Next};
use crate::http::{
    ClientIpConfig, DEFAULT_MAX_BANS, GateBuilder, Guard, GuardBuilder, MissingPeer, Overload,
    ReloadError, Rule, Scoring, SessionCookie, Tarpit,
};
use crate::{Clock, IpPrefix};

/// A guard's configuration as data: every setting of [`GuardBuilder`]
/// except the hooks (event, refusal, challenge, criticality and custom rule
/// keys, which are code), and the gate's. With feature `serde` it reads
/// from and writes to files (see [`GuardConfig::from_toml`] with `toml`),
/// and [`Guard::reload`] puts a new one in force while the guard runs.
///
/// The defaults are [`Guard::builder`]'s: no rules, no scoring, no
/// overload protection, no gate section.
///
/// ```
/// use floodguard::config::GuardConfig;
/// use floodguard::http::Guard;
///
/// let mut config = GuardConfig::recommended();
/// config.tls = true;
/// let guard = Guard::builder()
///     .config(config.clone())
///     .on_event(|e| eprintln!("floodguard: {e}"))
///     .build()?;
/// // Later, with a new limit and without a restart:
/// config.rules[0] = config.rules[0].clone().gcra(30, std::time::Duration::from_secs(1)).burst(60);
/// guard.reload(&config)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct GuardConfig {
    /// [`GuardBuilder::max_bans`]. Fixed while the guard runs.
    pub max_bans: usize,
    /// [`GuardBuilder::on_missing_peer`].
    pub missing_peer: MissingPeer,
    /// [`GuardBuilder::tls`].
    pub tls: bool,
    /// [`GuardBuilder::rate_limit_headers`].
    pub rate_limit_headers: bool,
    /// [`GuardBuilder::close_refused_connections`].
    pub close_refused_connections: bool,
    /// [`GuardBuilder::safelist`].
    pub safelist: Vec<IpPrefix>,
    /// [`GuardBuilder::blocklist`].
    pub blocklist: Vec<IpPrefix>,
    /// [`GuardBuilder::client_ip`].
    pub client_ip: ClientIpConfig,
    /// [`GuardBuilder::tarpit`]. Fixed while the guard runs.
    pub tarpit: Tarpit,
    /// [`GuardBuilder::rule`], in order.
    pub rules: Vec<Rule>,
    /// [`GuardBuilder::scoring`]; weights, ladder and detection thresholds
    /// can change while the guard runs, the rest is fixed.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub scoring: Option<Scoring>,
    /// [`GuardBuilder::overload`]. Fixed while the guard runs.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub overload: Option<Overload>,
    /// [`GuardBuilder::session`]. Fixed while the guard runs.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub session: Option<SessionCookie>,
    /// The gate's settings, for [`GuardConfig::gate`]. Fixed while the
    /// guard runs.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub gate: Option<GateConfig>,
    /// The Redis store the guard shares bans and `shared` rules through
    /// (feature `redis`), for [`GuardConfig::redis_store`] and
    /// [`GuardBuilder::config_with_store`]. Fixed while the guard runs.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub redis: Option<crate::config::RedisConfig>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        let settings = Admission::default();
        GuardConfig {
            max_bans: DEFAULT_MAX_BANS,
            missing_peer: settings.missing_peer,
            tls: settings.tls,
            rate_limit_headers: settings.headers_on_success,
            close_refused_connections: settings.close_refused,
            safelist: Vec::new(),
            blocklist: Vec::new(),
            client_ip: settings.client_ip,
            tarpit: Tarpit::default(),
            rules: Vec::new(),
            scoring: None,
            overload: None,
            session: None,
            gate: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }
}

impl GuardConfig {
    /// What floodguard recommends before you know your traffic:
    /// [`GuardBuilder::default_rules`], [`Scoring::new`],
    /// [`Overload::gradient2`] and the gate's defaults. The example file
    /// `examples/floodguard.toml` in the repository is this configuration.
    pub fn recommended() -> Self {
        GuardConfig {
            rules: Guard::builder().default_rules().settings.rules,
            scoring: Some(Scoring::new()),
            overload: Some(Overload::gradient2()),
            gate: Some(GateConfig::default()),
            ..GuardConfig::default()
        }
    }

    /// A [`Gate`](crate::http::Gate) builder wired to `guard` (see
    /// [`Guard::gate`]) with the `[gate]` section's settings, or the gate's
    /// defaults without one.
    pub fn gate<C: Clock + Clone + 'static>(&self, guard: &Guard<C>) -> GateBuilder {
        match &self.gate {
            Some(gate) => gate.apply(guard.gate()),
            None => guard.gate(),
        }
    }

    /// The configuration as a guard takes it: what a reload can change,
    /// and what must stay. The one mapping from the file's fields to the
    /// guard's, for building and for reloading alike.
    fn next(&self) -> Next {
        Next {
            settings: self.settings(),
            fixed: Fixed {
                max_bans: self.max_bans,
                tarpit: self.tarpit,
                scoring: self.scoring.clone(),
                overload: self.overload.clone(),
                session: self.session.clone(),
                outside: self.outside(),
            },
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            rules: self.rules.clone(),
            store: None,
            admission: Admission {
                client_ip: self.client_ip.clone(),
                safelist: self.safelist.iter().copied().collect(),
                blocklist: self.blocklist.iter().copied().collect(),
                missing_peer: self.missing_peer,
                headers_on_success: self.rate_limit_headers,
                close_refused: self.close_refused_connections,
                tls: self.tls,
            },
        }
    }

    /// The sections built beside the guard, described for reloads.
    fn outside(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("gate", self.gate.as_ref().map(|g| format!("{g:?}"))),
            // The store's Debug hides its secret; a new secret needs a
            // restart all the same.
            #[cfg(feature = "redis")]
            (
                "redis",
                self.redis
                    .as_ref()
                    .map(|r| format!("{r:?} {:?}", r.store.secret_key())),
            ),
        ]
    }
}

impl<C: Clock + Clone> GuardBuilder<C> {
    /// Takes every setting from `config`, replacing what was set before
    /// (rules included); the hooks and the clock stay. Add hooks before or
    /// after, then `build()`.
    pub fn config(mut self, config: GuardConfig) -> Self {
        let Next { settings, fixed } = config.next();
        let store = self.settings.store.take();
        self.settings = settings;
        self.settings.store = store;
        self.outside = fixed.outside;
        self.max_bans = fixed.max_bans;
        self.tarpit = fixed.tarpit;
        self.scoring = fixed.scoring;
        self.overload = fixed.overload;
        self.session = fixed.session;
        self
    }
}

impl<C: Clock + Clone> Guard<C> {
    /// Puts `config` in force without a restart: the rules, the lists, the
    /// client-IP setup (trusted proxies, header), the per-request switches
    /// (`tls`, `missing_peer`, `rate_limit_headers`,
    /// `close_refused_connections`) and scoring's weights, ladder and
    /// detection thresholds. Bans, scores, profiles, detection's baselines,
    /// counters and open connections carry on; a rule that keeps its name,
    /// key, quota and capacity keeps its counts (one whose quota changed
    /// starts afresh). Requests in flight finish under the version they
    /// started with: none is lost, none charged twice.
    ///
    /// The hooks the guard was built with stay.
    ///
    /// # Errors
    ///
    /// Nothing changes when the result is an error:
    /// [`ReloadError::Invalid`] when `config` would not build, and
    /// [`ReloadError::NeedsRestart`] naming the first setting that cannot
    /// change while the guard runs: `max_bans`, `tarpit`, turning scoring
    /// on or off, `scoring.capacity`, `scoring.half_life`, detection's
    /// `tick`, `window`, `warmup` and `top_k`, `overload`, `session`,
    /// `gate` and `redis` (a guard built without a configuration has no
    /// gate or redis section, so a file with one asks for a restart).
    pub fn reload(&self, config: &GuardConfig) -> Result<(), ReloadError> {
        self.apply(config.next())
    }
}
