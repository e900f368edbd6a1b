//! The file forms of the builder-style configuration types that hold
//! private fields or hooks: client IP, scoring, overload and the session
//! cookie. Each is written field by field; a hook (code) cannot be written
//! and is refused with a message naming it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::IpPrefix;
use crate::http::overload::config::WaitQueue;
use crate::http::{
    ClientIpConfig, Detection, ForwardedHeader, Ladder, LimitAlgorithm, Overload, SameSite,
    Scoring, SessionCookie, Weights,
};
use crate::ip::PrefixLengths;

#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ClientIpForm {
    trust: Vec<IpPrefix>,
    header: ForwardedHeader,
    allow_trusting_everyone: bool,
}

impl Default for ClientIpForm {
    fn default() -> Self {
        ClientIpForm::from(&ClientIpConfig::new())
    }
}

impl From<&ClientIpConfig> for ClientIpForm {
    fn from(c: &ClientIpConfig) -> Self {
        let mut trust: Vec<IpPrefix> = c.trusted().iter().copied().collect();
        trust.sort();
        ClientIpForm {
            trust,
            header: c.header,
            allow_trusting_everyone: c.everyone_allowed,
        }
    }
}

/// `trust = ["10.0.0.0/8"]`, `header = "x-forwarded-for"` (or `forwarded`,
/// `x-real-ip`), `allow_trusting_everyone = false`.
impl Serialize for ClientIpConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ClientIpForm::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClientIpConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = ClientIpForm::deserialize(d)?;
        let mut c = ClientIpConfig::new().trust_all(f.trust).header(f.header);
        if f.allow_trusting_everyone {
            c = c.allow_trusting_everyone();
        }
        Ok(c)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ScoringForm {
    #[serde(with = "crate::serde_duration::nonzero")]
    half_life: Duration,
    capacity: usize,
    weights: Weights,
    ladder: Ladder,
    detection: Detection,
}

impl Default for ScoringForm {
    fn default() -> Self {
        let s = Scoring::new();
        ScoringForm {
            half_life: s.half_life,
            capacity: s.capacity,
            weights: s.weights,
            ladder: s.ladder,
            detection: s.detection,
        }
    }
}

/// `half_life`, `capacity`, and the `weights`, `ladder` and `detection`
/// tables. A challenge hook is code: add it with
/// [`Scoring::challenge`] after loading.
impl Serialize for Scoring {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.challenge.is_some() {
            return Err(serde::ser::Error::custom(
                "scoring's challenge hook is code, which a file cannot hold",
            ));
        }
        ScoringForm {
            half_life: self.half_life,
            capacity: self.capacity,
            weights: self.weights,
            ladder: self.ladder,
            detection: self.detection,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Scoring {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = ScoringForm::deserialize(d)?;
        Ok(Scoring::new()
            .half_life(f.half_life)
            .capacity(f.capacity)
            .weights(f.weights)
            .ladder(f.ladder)
            .detection(f.detection))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct OverloadForm {
    algorithm: LimitAlgorithm,
    initial: u32,
    min: u32,
    max: u32,
    routes: Vec<String>,
    per_route: bool,
    #[serde(with = "humantime_serde")]
    route_idle: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<QueueForm>,
    #[serde(with = "humantime_serde")]
    latency_floor: Duration,
}

/// The waiting room: most requests waiting at once, and longest wait.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueForm {
    capacity: usize,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
}

impl From<&Overload> for OverloadForm {
    fn from(o: &Overload) -> Self {
        OverloadForm {
            algorithm: o.algorithm,
            initial: o.initial,
            min: o.min,
            max: o.max,
            routes: o.routes.clone(),
            per_route: o.every_route,
            route_idle: o.route_idle,
            queue: o.queue.map(|q| QueueForm {
                capacity: q.capacity,
                timeout: q.timeout,
            }),
            latency_floor: o.latency_floor,
        }
    }
}

impl Default for OverloadForm {
    fn default() -> Self {
        OverloadForm::from(&Overload::default())
    }
}

/// `algorithm` (`{ gradient2 = { .. } }` or `{ aimd = { .. } }`),
/// `initial`, `min`, `max`, `routes`, `per_route`, `route_idle`, `queue =
/// { capacity, timeout }` and `latency_floor`. A criticality hook is code:
/// add it with [`Overload::criticality`] after loading.
impl Serialize for Overload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.criticality.is_some() {
            return Err(serde::ser::Error::custom(
                "overload's criticality hook is code, which a file cannot hold",
            ));
        }
        OverloadForm::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Overload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = OverloadForm::deserialize(d)?;
        let mut o = Overload::default()
            .algorithm(f.algorithm)
            .limits(f.initial, f.min, f.max)
            .route_idle(f.route_idle)
            .latency_floor(f.latency_floor);
        o.routes = f.routes;
        o.every_route = f.per_route;
        o.queue = f.queue.map(|q| WaitQueue {
            capacity: q.capacity,
            timeout: q.timeout,
        });
        Ok(o)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionForm {
    /// 32 hexadecimal digits.
    key: String,
    #[serde(default = "default_cookie_name")]
    name: String,
    #[serde(default = "default_max_age", with = "crate::serde_duration::nonzero")]
    max_age: Duration,
    #[serde(default)]
    secure: bool,
    #[serde(default)]
    same_site: SameSite,
    #[serde(default = "default_bind")]
    bind: PrefixLengths,
}

fn default_cookie_name() -> String {
    SessionCookie::new([0; 16]).name
}

fn default_max_age() -> Duration {
    SessionCookie::new([0; 16]).max_age
}

fn default_bind() -> PrefixLengths {
    SessionCookie::new([0; 16]).bind
}

/// `key` (32 hex digits: keep the file secret), `name`, `max_age`,
/// `secure`, `same_site` (`lax`, `strict`, `none`) and `bind`.
impl Serialize for SessionCookie {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SessionForm {
            key: crate::hex16::encode(&self.key),
            name: self.name.clone(),
            max_age: self.max_age,
            secure: self.secure,
            same_site: self.same_site,
            bind: self.bind,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SessionCookie {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = SessionForm::deserialize(d)?;
        let key = crate::hex16::key_field("key", &f.key).map_err(serde::de::Error::custom)?;
        Ok(SessionCookie::new(key)
            .name(f.name)
            .max_age(f.max_age)
            .secure(f.secure)
            .same_site(f.same_site)
            .bind(f.bind))
    }
}
