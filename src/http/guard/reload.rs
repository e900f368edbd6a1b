//! Reloading a running guard: the next settings are checked in full
//! beside the ones in force, then swapped in at once. Bans, scores,
//! profiles, detection's baselines, the counters and the connections carry
//! on; rules that kept their name, key, quota and capacity keep their
//! counts. What sizes tables or runs tasks (the ban list's cap, the
//! tarpit, scoring's capacity and pace, overload protection, the session
//! cookie, and what was built beside the guard, such as the gate) cannot
//! change while it runs: a reload that changes one is refused whole,
//! naming it.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::http::guard::guard::Shared;
use crate::http::guard::live::{Live, Settings};
use crate::http::scoring::tuning::fixed_change;
use crate::http::{Guard, Overload, Scoring, SessionCookie, Tarpit};
use crate::{Clock, ConfigError};

/// Why [`Guard::reload`] refused a configuration. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new configuration is not valid.
    #[error("the new configuration is not valid, nothing was changed: {0}")]
    Invalid(#[from] ConfigError),
    /// The configuration changes something that cannot change while the
    /// guard runs.
    #[error(
        "`{field}` cannot change while the guard runs (restart to change it); nothing was changed"
    )]
    NeedsRestart {
        /// The setting, as the configuration file spells it
        /// (`scoring.capacity`, `overload`, `gate`).
        field: &'static str,
    },
}

/// What a guard was built with that a reload must leave as it is.
#[derive(Clone, Debug)]
pub(crate) struct Fixed {
    pub(crate) max_bans: usize,
    pub(crate) tarpit: Tarpit,
    pub(crate) scoring: Option<Scoring>,
    pub(crate) overload: Option<Overload>,
    pub(crate) session: Option<SessionCookie>,
    /// Sections built beside the guard from the same configuration (the
    /// gate, the Redis store): each one's name and a description to
    /// compare, none when the configuration has no such section. A guard
    /// built without a configuration lists none: every section absent.
    pub(crate) outside: Vec<(&'static str, Option<String>)>,
}

impl Fixed {
    /// The first setting of `next` that differs from `self`.
    fn change(&self, next: &Fixed) -> Option<&'static str> {
        if self.max_bans != next.max_bans {
            return Some("max_bans");
        }
        if self.tarpit != next.tarpit {
            return Some("tarpit");
        }
        match (&self.scoring, &next.scoring) {
            (None, None) => {}
            (Some(now), Some(next)) => {
                if let Some(field) = fixed_change(now, next) {
                    return Some(field);
                }
            }
            _ => return Some("scoring"),
        }
        match (&self.overload, &next.overload) {
            (None, None) => {}
            (Some(now), Some(next)) if now.same_settings(next) => {}
            _ => return Some("overload"),
        }
        if self.session != next.session {
            return Some("session");
        }
        let described = |list: &[(&'static str, Option<String>)], name: &str| {
            list.iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, d)| d.clone())
        };
        self.outside
            .iter()
            .chain(&next.outside)
            .map(|(n, _)| *n)
            .find(|name| described(&self.outside, name) != described(&next.outside, name))
    }
}

/// A configuration for a running guard: its settings and what must match.
pub(crate) struct Next {
    pub(crate) settings: Settings,
    pub(crate) fixed: Fixed,
}

impl<C: Clock + Clone> Guard<C> {
    /// Checks `next` against the guard in force and swaps it in, or
    /// changes nothing.
    pub(crate) fn apply(&self, mut next: Next) -> Result<(), ReloadError> {
        let s: &Shared<C> = &self.shared;
        // One reload at a time: each compiles against the version in force.
        let mut fixed = s.fixed.lock();
        if let Some(field) = fixed.change(&next.fixed) {
            return Err(ReloadError::NeedsRestart { field });
        }
        if let Some(scoring) = &next.fixed.scoring {
            scoring.ladder.validate()?;
            scoring.detection.validate()?;
        }
        let shedder_needs_route = s.shedder.as_ref().is_some_and(|sh| sh.needs_route());
        next.settings.store.clone_from(&s.rule_store);
        let current = s.live.load();
        let live = Live::compile(next.settings, &s.clock, shedder_needs_route, Some(&current))?;
        if let (Some(scorer), Some(scoring)) = (&s.scorer, &next.fixed.scoring) {
            scorer.retune(scoring);
        }
        s.live.store(Arc::new(live));
        *fixed = next.fixed;
        Ok(())
    }
}

/// The lock a reload holds while it checks and swaps.
pub(crate) type FixedLock = Mutex<Fixed>;
