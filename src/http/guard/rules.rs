//! Rules: what a request is counted by, which requests a rule applies to,
//! and its quota.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, HeaderValue, Method};

use crate::http::guard::shared_rule::{RuleCounter, RuleFleet};
use crate::http::identify::facts::Facts;
use crate::ip::PrefixLengths;
use crate::{
    Clock, ConfigError, IpPrefix, KeyedLimiter, LimiterStats, Pending, Quota, SharedStats,
};

type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
type WhenFn = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// What a rule counts requests by.
#[derive(Clone)]
pub(crate) enum KeySpec {
    Ip,
    Prefix(PrefixLengths),
    Path,
    Method,
    /// The header's name, parsed once when the rule is made; the text
    /// given if it is not a header name (refused by `build()`).
    Header(Result<HeaderName, String>),
    Global,
    Custom(KeyFn),
}

/// One rate limit of a [`Guard`](crate::http::Guard): a key (what requests are
/// counted by), a scope (which requests it applies to), a quota, and
/// whether it is enforced or only observed (shadow mode).
///
/// ```
/// use std::time::Duration;
/// use http::Method;
/// use floodguard::http::Rule;
/// use floodguard::ip::PrefixLengths;
///
/// let rules = [
///     Rule::per_ip("per-ip").gcra(20, Duration::from_secs(1)).burst(40),
///     Rule::per_prefix("per-net", PrefixLengths::SUBNET).sliding_window(600, Duration::from_secs(10)),
///     Rule::per_ip("login")
///         .path("/login")
///         .method(Method::POST)
///         .sliding_window(5, Duration::from_secs(60)),
///     Rule::global("ceiling").gcra(5_000, Duration::from_secs(1)),
///     Rule::per_header("api-key", "x-api-key").sliding_window(1_000, Duration::from_secs(60)).shadow(),
/// ];
/// # let _ = rules;
/// ```
#[derive(Clone)]
#[must_use = "a rule does nothing until added to a guard"]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) key: KeySpec,
    pub(crate) quota: Quota,
    pub(crate) capacity: Option<usize>,
    pub(crate) cost: u64,
    pub(crate) shadow: bool,
    pub(crate) scope: Scope,
    /// The fleet the rule is counted by, joined by `compile` (set by
    /// `shared`, under feature `redis`, through `counted_by`).
    pub(crate) fleet: Option<Arc<dyn RuleFleet>>,
    /// Counted in the store the guard is given (a configuration file's
    /// `shared = true`), joined when the guard compiles the rule.
    pub(crate) in_store: bool,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("shadow", &self.shadow)
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

/// Which requests a rule applies to; all conditions must hold.
#[derive(Clone, Default)]
pub(crate) struct Scope {
    pub(crate) paths: Vec<String>,
    pub(crate) path_prefixes: Vec<String>,
    pub(crate) methods: Vec<Method>,
    pub(crate) when: Option<WhenFn>,
}

impl Scope {
    fn matches(&self, parts: &Parts, route: &str) -> bool {
        let path = parts.uri.path();
        (self.paths.is_empty() || self.paths.iter().any(|p| p == route || p == path))
            && (self.path_prefixes.is_empty()
                || self
                    .path_prefixes
                    .iter()
                    .any(|p| path.starts_with(p.as_str())))
            && (self.methods.is_empty()
                || self.methods.contains(&parts.method)
                // HEAD is GET without the body: servers (axum among them)
                // answer it with the GET handler, at the GET's cost.
                || (parts.method == Method::HEAD && self.methods.contains(&Method::GET)))
            && self.when.as_ref().is_none_or(|f| f(parts))
    }
}

impl Rule {
    pub(crate) fn new(name: impl Into<String>, key: KeySpec) -> Self {
        Rule {
            name: name.into(),
            key,
            quota: Quota::UNSET,
            capacity: None,
            cost: 1,
            shadow: false,
            scope: Scope::default(),
            fleet: None,
            in_store: false,
        }
    }

    /// Counts requests by client address (after trusted-proxy resolution,
    /// IPv4-mapped IPv6 as IPv4).
    pub fn per_ip(name: impl Into<String>) -> Self {
        Self::new(name, KeySpec::Ip)
    }

    /// Counts requests by the client's network: IPv4 and IPv6 prefix
    /// lengths from `lengths` (for example [`PrefixLengths::SUBNET`], /24
    /// and /64), so one host rotating through its IPv6 /64 stays one key.
    pub fn per_prefix(name: impl Into<String>, lengths: PrefixLengths) -> Self {
        Self::new(name, KeySpec::Prefix(lengths))
    }

    /// Counts requests by route: axum's matched route pattern when the
    /// `axum` feature is on and the layer sits on a `Router`, otherwise the
    /// URI path.
    pub fn per_path(name: impl Into<String>) -> Self {
        Self::new(name, KeySpec::Path)
    }

    /// Counts requests by HTTP method.
    pub fn per_method(name: impl Into<String>) -> Self {
        Self::new(name, KeySpec::Method)
    }

    /// Counts requests by the value of header `header` (for example an API
    /// key). Requests without the header are not counted by this rule.
    pub fn per_header(name: impl Into<String>, header: impl Into<String>) -> Self {
        let header = header.into();
        let parsed = HeaderName::try_from(header.as_str()).map_err(|_| header);
        Self::new(name, KeySpec::Header(parsed))
    }

    /// One counter for all requests it applies to: a ceiling for the
    /// service.
    pub fn global(name: impl Into<String>) -> Self {
        Self::new(name, KeySpec::Global)
    }

    /// Counts requests by a key the closure derives from the request; a
    /// request for which it returns `None` is not counted by this rule.
    pub fn per_key(
        name: impl Into<String>,
        key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self::new(name, KeySpec::Custom(Arc::new(key)))
    }

    /// The quota per key, burst included (replacing any set before).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// At most `limit` requests per `window` per key, sliding-window
    /// counter: sets [`Quota::sliding_window`].
    pub fn sliding_window(mut self, limit: u64, window: Duration) -> Self {
        self.quota = self.quota.switch_to(Quota::sliding_window(limit, window));
        self
    }

    /// `rate` requests per `period` per key on average, GCRA: sets
    /// [`Quota::gcra`].
    pub fn gcra(mut self, rate: u64, period: Duration) -> Self {
        self.quota = self.quota.switch_to(Quota::gcra(rate, period));
        self
    }

    /// GCRA only: requests a key may make at once after idling (defaults
    /// to `rate`; [`Quota::burst`]).
    pub fn burst(mut self, burst: u64) -> Self {
        self.quota = self.quota.burst(burst);
        self
    }

    /// Keys this rule tracks at once (16 bytes each); defaults to
    /// [`DEFAULT_CAPACITY`](crate::DEFAULT_CAPACITY), and to 1 for
    /// [`Rule::global`].
    pub fn capacity(mut self, keys: usize) -> Self {
        self.capacity = Some(keys);
        self
    }

    /// What one request costs against the quota (default 1).
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// Shadow mode: the rule counts and logs the requests it would refuse
    /// (see [`RuleStats::shadow_refusals`]) but never refuses one.
    pub fn shadow(mut self) -> Self {
        self.shadow = true;
        self
    }

    /// Applies only to requests for this route pattern or exact path; may
    /// be given several times (any matches).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.scope.paths.push(path.into());
        self
    }

    /// Applies only to paths starting with `prefix`; may be given several
    /// times (any matches).
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.scope.path_prefixes.push(prefix.into());
        self
    }

    /// Applies only to this method; may be given several times (any
    /// matches). `GET` covers `HEAD` too, which servers answer with the
    /// `GET` handler (axum does): a rule on `GET` cannot be dodged by
    /// asking for the head only.
    pub fn method(mut self, method: Method) -> Self {
        self.scope.methods.push(method);
        self
    }

    /// Applies only to requests for which `when` returns true.
    pub fn when(mut self, when: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        self.scope.when = Some(Arc::new(when));
        self
    }

    /// The rule's name, as shown in stats, logs and `RateLimit` headers.
    pub fn name(&self) -> &str {
        &self.name
    }

    #[cfg(test)]
    pub(crate) fn compile<C: Clock + Clone>(
        self,
        clock: &C,
    ) -> Result<CompiledRule<C>, ConfigError> {
        self.compile_after(clock, None)
    }

    /// Checks and compiles the rule. When `before` (the rule of the same
    /// name in the version a reload replaces) counted by the same key,
    /// quota, capacity and fleet, its counters carry on in this one.
    pub(crate) fn compile_after<C: Clock + Clone>(
        self,
        clock: &C,
        before: Option<&CompiledRule<C>>,
    ) -> Result<CompiledRule<C>, ConfigError> {
        let in_rule = |e: ConfigError| ConfigError::InRule {
            rule: self.name.clone(),
            source: Box::new(e),
        };
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err(ConfigError::BadRuleName { input: self.name });
        }
        if self.cost == 0 {
            return Err(in_rule(ConfigError::Zero { field: "cost" }));
        }
        if let KeySpec::Header(Err(input)) = &self.key {
            return Err(in_rule(ConfigError::BadHeaderName {
                field: "per_header",
                input: input.clone(),
            }));
        }
        let key = self.key;
        let default_capacity = match key {
            KeySpec::Global => 1,
            _ => crate::DEFAULT_CAPACITY,
        };
        let capacity = self.capacity.unwrap_or(default_capacity);
        let kept = before.filter(|b| {
            b.key.same_as(&key)
                && b.quota == self.quota
                && b.capacity == capacity
                && match (&b.fleet, &self.fleet) {
                    (None, None) => true,
                    (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                    _ => false,
                }
        });
        let counts = match kept {
            Some(b) => Arc::clone(&b.counts),
            None => {
                // A shared rule counts in its fleet; its own limiter only
                // carries the quota, so it gets the smallest table.
                let limiter = KeyedLimiter::<[u8]>::builder()
                    .quota(self.quota)
                    .capacity(if self.fleet.is_some() { 1 } else { capacity })
                    .clock(clock.clone())
                    .build()
                    .map_err(in_rule)?;
                let shared = match &self.fleet {
                    None => None,
                    Some(fleet) => Some(
                        fleet
                            .join(&self.name, self.quota, capacity)
                            .map_err(|reason| in_rule(ConfigError::SharedStore { reason }))?,
                    ),
                };
                Arc::new(Counts { limiter, shared })
            }
        };
        // The policy: the quota's limit, and its window (the sliding
        // window, or the time GCRA takes to refill a whole burst).
        let quota = self.quota.limit();
        let window_nanos = self.quota.window().as_nanos();
        let seconds = window_nanos.div_ceil(1_000_000_000).max(1);
        let policy = HeaderValue::from_str(&format!("\"{}\";q={quota};w={seconds}", self.name))
            .map_err(|_| ConfigError::BadRuleName {
                input: self.name.clone(),
            })?;
        Ok(CompiledRule {
            name: self.name.into(),
            key,
            scope: self.scope,
            cost: self.cost,
            shadow: self.shadow,
            quota: self.quota,
            capacity,
            fleet: self.fleet,
            counts,
            policy,
        })
    }
}

/// A rule ready to check requests, with its own limiter.
pub(crate) struct CompiledRule<C> {
    pub(crate) name: Arc<str>,
    key: KeySpec,
    scope: Scope,
    cost: u64,
    pub(crate) shadow: bool,
    /// What the counters were made for: a reload keeps them while these
    /// stay the same.
    quota: Quota,
    capacity: usize,
    fleet: Option<Arc<dyn RuleFleet>>,
    counts: Arc<Counts<C>>,
    /// Pre-formatted `RateLimit-Policy` value.
    pub(crate) policy: HeaderValue,
}

/// A rule's counters, shared by the versions of the rule a reload makes.
struct Counts<C> {
    limiter: KeyedLimiter<[u8], C>,
    /// Counts in the fleet instead of `limiter` when the rule is shared.
    shared: Option<Box<dyn RuleCounter>>,
}

impl KeySpec {
    /// Whether two keys count requests alike (closures only if they are
    /// the same closure).
    fn same_as(&self, other: &KeySpec) -> bool {
        match (self, other) {
            (KeySpec::Ip, KeySpec::Ip)
            | (KeySpec::Path, KeySpec::Path)
            | (KeySpec::Method, KeySpec::Method)
            | (KeySpec::Global, KeySpec::Global) => true,
            (KeySpec::Prefix(a), KeySpec::Prefix(b)) => a == b,
            (KeySpec::Header(a), KeySpec::Header(b)) => a == b,
            (KeySpec::Custom(a), KeySpec::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl<C: Clock> CompiledRule<C> {
    /// Whether the rule keys on or is scoped by the request's route.
    pub(crate) fn uses_route(&self) -> bool {
        matches!(self.key, KeySpec::Path) || !self.scope.paths.is_empty()
    }

    /// The check this request owes the rule (its cost times
    /// `cost_factor`), or `None` if the rule does not apply to it (out of
    /// scope, or no key: header absent, no address).
    pub(crate) fn pending(&self, facts: &Facts<'_>, cost_factor: u64) -> Option<Pending<'_>> {
        let (parts, client, route) = (facts.parts, facts.ip(), facts.route);
        if !self.scope.matches(parts, route) {
            return None;
        }
        let c = self.cost.saturating_mul(cost_factor);
        let charge = |key: &[u8]| self.charge(key, c);
        match &self.key {
            KeySpec::Ip => {
                let (buf, n) = ip_key(client?);
                charge(&buf[..n])
            }
            KeySpec::Prefix(lengths) => {
                let p = IpPrefix::of(client?, *lengths);
                let (mut buf, n) = ip_key(p.network());
                buf[n] = p.len();
                charge(&buf[..=n])
            }
            KeySpec::Path => charge(route.as_bytes()),
            KeySpec::Method => charge(parts.method.as_str().as_bytes()),
            KeySpec::Header(Ok(h)) => charge(parts.headers.get(h)?.as_bytes()),
            KeySpec::Header(Err(_)) => None,
            KeySpec::Global => charge(&[]),
            KeySpec::Custom(f) => charge(f(parts)?.as_bytes()),
        }
    }

    /// The check of `key`, in the fleet if the rule is shared.
    #[inline]
    fn charge(&self, key: &[u8], cost: u64) -> Option<Pending<'_>> {
        if let Some(shared) = &self.counts.shared {
            return shared.pending_n(key, cost);
        }
        Some(self.counts.limiter.pending_n(key, cost))
    }

    pub(crate) fn stats(&self) -> RuleStats {
        if let Some(shared) = &self.counts.shared {
            let st = shared.stats();
            let limiter = LimiterStats {
                admitted: st.checked - st.denied,
                denied: st.denied,
                evictions: st.evictions,
                occupancy: st.cached_keys,
                capacity: st.capacity,
            };
            return RuleStats {
                name: self.name.to_string(),
                shadow: self.shadow,
                shadow_refusals: if self.shadow { limiter.denied } else { 0 },
                limiter,
                shared: Some(st),
            };
        }
        let limiter = self.counts.limiter.stats();
        RuleStats {
            name: self.name.to_string(),
            shadow: self.shadow,
            // A shadow rule's limiter only ever sees its own checks, so
            // what it denied is exactly what it would have refused.
            shadow_refusals: if self.shadow { limiter.denied } else { 0 },
            limiter,
            shared: None,
        }
    }
}

/// An address as key bytes: family tag then the address, with one spare
/// byte for a prefix length.
fn ip_key(ip: IpAddr) -> ([u8; 18], usize) {
    let mut buf = [0u8; 18];
    match ip {
        IpAddr::V4(a) => {
            buf[0] = 4;
            buf[1..5].copy_from_slice(&a.octets());
            (buf, 5)
        }
        IpAddr::V6(a) => {
            buf[0] = 6;
            buf[1..17].copy_from_slice(&a.octets());
            (buf, 17)
        }
    }
}

/// One rule's counters.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleStats {
    /// The rule's name.
    pub name: String,
    /// Whether the rule runs in shadow mode.
    pub shadow: bool,
    /// Its limiter's counters. For an enforced rule, `denied` counts the
    /// requests it refused; for a shadow rule, those it would have refused.
    pub limiter: LimiterStats,
    /// Requests a shadow rule would have refused (0 for enforced rules).
    pub shadow_refusals: u64,
    /// The shared limiter's counters, for a rule counted in Redis
    /// ([`Rule::shared`], feature `redis`); always `None` without it.
    pub shared: Option<SharedStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, path: &str) -> Parts {
        http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn a_get_rule_covers_head_and_nothing_else() {
        let rule = Rule::per_ip("search").path("/search").method(Method::GET);
        let on = |m: Method| rule.scope.matches(&parts(m, "/search"), "/search");
        assert!(on(Method::GET));
        assert!(on(Method::HEAD));
        assert!(!on(Method::POST));
        assert!(!on(Method::OPTIONS));
        // A HEAD rule does not cover GET.
        let head = Rule::per_ip("head").method(Method::HEAD);
        assert!(!head.scope.matches(&parts(Method::GET, "/"), "/"));
        // A POST rule does not cover HEAD.
        let post = Rule::per_ip("post").method(Method::POST);
        assert!(!post.scope.matches(&parts(Method::HEAD, "/"), "/"));
    }

    /// A fleet counting in one local limiter, standing in for Redis; its
    /// `join` fails with the reason it holds, if any.
    struct LocalFleet(Option<&'static str>);

    struct LocalCounter(KeyedLimiter<[u8]>);

    impl RuleFleet for LocalFleet {
        fn join(
            &self,
            _: &str,
            quota: Quota,
            capacity: usize,
        ) -> Result<Box<dyn RuleCounter>, String> {
            if let Some(reason) = self.0 {
                return Err(reason.into());
            }
            let limiter = KeyedLimiter::<[u8]>::builder()
                .quota(quota)
                .capacity(capacity)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(Box::new(LocalCounter(limiter)))
        }
    }

    impl RuleCounter for LocalCounter {
        fn pending_n(&self, key: &[u8], cost: u64) -> Option<Pending<'_>> {
            Some(self.0.pending_n(key, cost))
        }

        fn stats(&self) -> SharedStats {
            let s = self.0.stats();
            SharedStats {
                checked: s.admitted + s.denied,
                denied: s.denied,
                cached_keys: s.occupancy,
                capacity: s.capacity,
                ..SharedStats::default()
            }
        }
    }

    #[test]
    fn a_rule_counted_by_a_fleet_checks_and_reports_there() {
        let clock = crate::ManualClock::new();
        let rule = Rule::per_ip("fleet")
            .sliding_window(2, Duration::from_secs(60))
            .counted_by(LocalFleet(None));
        let compiled = rule.compile(&clock).unwrap();
        let check = || {
            let pending = compiled.charge(b"k", 1).unwrap();
            crate::check_all(clock.now(), &[pending]).is_allowed()
        };
        assert_eq!([check(), check(), check()], [true, true, false]);
        // Counted in the fleet, not in the rule's own limiter.
        assert_eq!(compiled.counts.limiter.stats().admitted, 0);
        let st = compiled.stats();
        let shared = st.shared.unwrap();
        assert_eq!((shared.checked, shared.denied), (3, 1));
        assert_eq!((st.limiter.admitted, st.limiter.denied), (2, 1));
        assert_eq!(st.limiter.capacity, shared.capacity);
        // A rule of its own reports no shared counters.
        let own = Rule::per_ip("own").sliding_window(2, Duration::from_secs(60));
        assert_eq!(own.compile(&clock).unwrap().stats().shared, None);
        // A fleet that cannot count the rule fails the build, naming it.
        let down = Rule::per_ip("down")
            .sliding_window(2, Duration::from_secs(60))
            .counted_by(LocalFleet(Some("unreachable")));
        let Err(err) = down.compile(&clock) else {
            panic!("a rule its fleet refused compiled");
        };
        assert_eq!(
            err,
            ConfigError::InRule {
                rule: "down".into(),
                source: Box::new(ConfigError::SharedStore {
                    reason: "unreachable".into()
                })
            }
        );
    }

    #[test]
    fn the_policy_header_reads_the_quota() {
        let clock = crate::ManualClock::new();
        let compiled = |r: Rule| r.compile(&clock).unwrap();
        let second = Duration::from_secs(1);
        let q = Quota::gcra(20, second).burst(40);
        let by_value = compiled(Rule::per_ip("r").quota(q));
        let by_parts = compiled(Rule::per_ip("r").gcra(20, second).burst(40));
        assert_eq!(*by_value.counts.limiter.algorithm(), q.algorithm().unwrap());
        assert_eq!(*by_parts.counts.limiter.algorithm(), q.algorithm().unwrap());
        assert_eq!(by_value.policy, "\"r\";q=40;w=2");
        assert_eq!(by_parts.policy, "\"r\";q=40;w=2");
        let window = Rule::global("w").quota(Quota::sliding_window(600, Duration::from_secs(90)));
        assert_eq!(compiled(window).policy, "\"w\";q=600;w=90");
        // Under a second rounds up to one.
        let short = Rule::global("s").quota(Quota::gcra(10, Duration::from_millis(100)));
        assert_eq!(compiled(short).policy, "\"s\";q=10;w=1");
        let Err(err) = Rule::per_ip("none").burst(3).compile(&clock) else {
            panic!("a rule without an algorithm compiled");
        };
        assert_eq!(
            err,
            ConfigError::InRule {
                rule: "none".into(),
                source: Box::new(ConfigError::MissingAlgorithm)
            }
        );
    }
}
