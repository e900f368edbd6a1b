//! What a reload swaps: the rules, how the client address is found, the
//! lists and the per-request switches. The guard holds them behind one
//! atomic pointer: a request loads it once and is decided wholly under one
//! version, and a reload builds the next version beside it, checks all of
//! it, then swaps it in. Rules that kept their name, key, quota and
//! capacity keep their counters across the swap.

use std::sync::Arc;

use crate::http::MissingPeer;
use crate::http::guard::rules::{CompiledRule, Rule};
use crate::http::guard::shared_rule::RuleFleet;
use crate::http::identify::client_ip::ClientIpConfig;
use crate::{Clock, ConfigError, PrefixSet};

/// The settings of a guard that can change while it runs, as given.
#[derive(Clone, Default)]
pub(crate) struct Settings {
    pub(crate) rules: Vec<Rule>,
    /// The store that rules marked `in_store` count in.
    pub(crate) store: Option<Arc<dyn RuleFleet>>,
    pub(crate) admission: Admission,
}

/// How a request's client is found, the lists it is checked against and
/// how its refusals are shaped: taken as given, kept as they are.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    pub(crate) client_ip: ClientIpConfig,
    pub(crate) safelist: PrefixSet,
    pub(crate) blocklist: PrefixSet,
    pub(crate) missing_peer: MissingPeer,
    pub(crate) headers_on_success: bool,
    pub(crate) close_refused: bool,
    /// The server terminates TLS itself.
    pub(crate) tls: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            client_ip: ClientIpConfig::new(),
            safelist: PrefixSet::new(),
            blocklist: PrefixSet::new(),
            missing_peer: MissingPeer::default(),
            headers_on_success: false,
            close_refused: true,
            tls: false,
        }
    }
}

/// The same settings, checked and compiled: what requests are decided by.
pub(crate) struct Live<C> {
    pub(crate) enforced: Vec<CompiledRule<C>>,
    pub(crate) shadow: Vec<CompiledRule<C>>,
    /// Whether any rule (or the overload limit) keys on or is scoped by
    /// the route.
    pub(crate) needs_route: bool,
    pub(crate) admission: Admission,
}

impl<C: Clock + Clone> Live<C> {
    /// Checks `settings` and compiles them. A rule that `previous` holds
    /// under the same name, key, quota and capacity keeps its counters.
    /// `shedder_needs_route` says whether the overload limit reads the
    /// route.
    pub(crate) fn compile(
        settings: Settings,
        clock: &C,
        shedder_needs_route: bool,
        previous: Option<&Live<C>>,
    ) -> Result<Self, ConfigError> {
        settings.admission.client_ip.validate()?;
        let (mut enforced, mut shadow) = (Vec::new(), Vec::new());
        for mut rule in settings.rules {
            if rule.in_store && rule.fleet.is_none() {
                let Some(store) = &settings.store else {
                    return Err(ConfigError::InRule {
                        rule: rule.name,
                        source: Box::new(ConfigError::SharedStore {
                            reason: "marked `shared`, but the guard was given no store \
                                     (build it with `GuardBuilder::config_with_store`)"
                                .into(),
                        }),
                    });
                };
                rule.fleet = Some(Arc::clone(store));
            }
            if enforced
                .iter()
                .chain(&shadow)
                .any(|r: &CompiledRule<C>| *r.name == *rule.name())
            {
                return Err(ConfigError::DuplicateRule {
                    rule: rule.name().to_owned(),
                });
            }
            let before = previous.and_then(|p| p.rule(rule.name()));
            let compiled = rule.compile_after(clock, before)?;
            if compiled.shadow {
                shadow.push(compiled);
            } else {
                enforced.push(compiled);
            }
        }
        let needs_route =
            enforced.iter().chain(&shadow).any(CompiledRule::uses_route) || shedder_needs_route;
        Ok(Live {
            enforced,
            shadow,
            needs_route,
            admission: settings.admission,
        })
    }
}

impl<C> Live<C> {
    /// Every rule, enforced ones first.
    pub(crate) fn rules(&self) -> impl Iterator<Item = &CompiledRule<C>> {
        self.enforced.iter().chain(&self.shadow)
    }

    /// The rule named `name`, if any.
    fn rule(&self, name: &str) -> Option<&CompiledRule<C>> {
        self.rules().find(|r| *r.name == *name)
    }
}
