//! A rule in a configuration file:
//!
//! ```toml
//! [[rules]]
//! name = "login"
//! key = "ip"                # ip, prefix, path, method, header or global
//! rate = 5                  # GCRA: rate, period, burst;
//! period = "1m"             # a sliding window: limit, window
//! burst = 3
//! paths = ["/login"]
//! methods = ["POST"]
//! ```
//!
//! `key = "prefix"` takes `prefix = { v4 = 24, v6 = 48 }`, `key =
//! "header"` takes `header = "x-api-key"`; `shared = true` counts the rule
//! across the fleet in the `[redis]` store (feature `redis`). Rules keyed or scoped by a
//! closure are code, and cannot be written to a file.

use std::time::Duration;

use http::{HeaderName, Method};
use serde::{Deserialize, Serialize};

use crate::Quota;
use crate::http::Rule;
use crate::http::guard::rules::KeySpec;
use crate::ip::PrefixLengths;
use crate::quota_form::QuotaFields;

/// What a rule counts requests by, as a file names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Key {
    Ip,
    Prefix,
    Path,
    Method,
    Header,
    Global,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleForm {
    name: String,
    key: Key,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<PrefixLengths>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::serde_duration::nonzero_option"
    )]
    window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::serde_duration::nonzero_option"
    )]
    period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capacity: Option<usize>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    cost: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    shadow: bool,
    /// Counted across the fleet in the `[redis]` store.
    #[serde(default, skip_serializing_if = "is_false")]
    shared: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    path_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    methods: Vec<String>,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

fn is_false(b: &bool) -> bool {
    !b
}

impl TryFrom<RuleForm> for Rule {
    type Error = String;

    fn try_from(f: RuleForm) -> Result<Rule, String> {
        let needs = |what: &str, given: bool, key: &str| match given {
            true => Err(format!("`{what}` is only for key = \"{key}\"")),
            false => Ok(()),
        };
        if f.key != Key::Prefix {
            needs("prefix", f.prefix.is_some(), "prefix")?;
        }
        if f.key != Key::Header {
            needs("header", f.header.is_some(), "header")?;
        }
        let key = match f.key {
            Key::Ip => KeySpec::Ip,
            Key::Prefix => KeySpec::Prefix(
                f.prefix
                    .ok_or("key = \"prefix\" needs `prefix = { v4 = .., v6 = .. }`")?,
            ),
            Key::Path => KeySpec::Path,
            Key::Method => KeySpec::Method,
            Key::Header => {
                let header = f
                    .header
                    .ok_or("key = \"header\" needs `header = \"name\"`")?;
                KeySpec::Header(HeaderName::try_from(header.as_str()).map_err(|_| header))
            }
            Key::Global => KeySpec::Global,
        };
        let quota = Quota::try_from(QuotaFields {
            limit: f.limit,
            window: f.window,
            rate: f.rate,
            period: f.period,
            burst: f.burst,
        })?;
        let mut rule = Rule::new(f.name, key).quota(quota).cost(f.cost);
        rule.capacity = f.capacity;
        rule.shadow = f.shadow;
        rule.in_store = f.shared;
        rule.scope.paths = f.paths;
        rule.scope.path_prefixes = f.path_prefixes;
        for m in f.methods {
            let method = Method::from_bytes(m.as_bytes())
                .map_err(|_| format!("`{m}` is not an HTTP method"))?;
            rule.scope.methods.push(method);
        }
        Ok(rule)
    }
}

impl TryFrom<&Rule> for RuleForm {
    type Error = String;

    fn try_from(r: &Rule) -> Result<RuleForm, String> {
        let code = |what: &str| {
            format!(
                "rule `{}`: its {what} is a closure, which a file cannot hold",
                r.name
            )
        };
        if r.scope.when.is_some() {
            return Err(code("`when` condition"));
        }
        let (key, prefix, header) = match &r.key {
            KeySpec::Ip => (Key::Ip, None, None),
            KeySpec::Prefix(p) => (Key::Prefix, Some(*p), None),
            KeySpec::Path => (Key::Path, None, None),
            KeySpec::Method => (Key::Method, None, None),
            KeySpec::Header(Ok(h)) => (Key::Header, None, Some(h.as_str().to_owned())),
            KeySpec::Header(Err(text)) => (Key::Header, None, Some(text.clone())),
            KeySpec::Global => (Key::Global, None, None),
            KeySpec::Custom(_) => return Err(code("key")),
        };
        let q = QuotaFields::try_from(r.quota).map_err(|e| format!("rule `{}`: {e}", r.name))?;
        Ok(RuleForm {
            name: r.name.clone(),
            key,
            prefix,
            header,
            limit: q.limit,
            window: q.window,
            rate: q.rate,
            period: q.period,
            burst: q.burst,
            capacity: r.capacity,
            cost: r.cost,
            shadow: r.shadow,
            shared: r.in_store || r.fleet.is_some(),
            paths: r.scope.paths.clone(),
            path_prefixes: r.scope.path_prefixes.clone(),
            methods: r.scope.methods.iter().map(|m| m.to_string()).collect(),
        })
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RuleForm::try_from(self)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Rule::try_from(RuleForm::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
