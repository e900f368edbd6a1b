//! What detection tells the operator: events (attack started or ended,
//! class or network flagged, client banned), their causes, and the
//! snapshot of the last tick.

use std::fmt;
use std::time::Duration;

use crate::http::Cluster;
use crate::{IpPrefix, Timestamp};

/// Why an attack was declared.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttackCause {
    /// Traffic surged while the service's latency was past its objective
    /// ("slow but up").
    Latency,
    /// Traffic surged while overload protection shed requests: the
    /// service is at its limit.
    Overload,
    /// Traffic surged that does not look like people: automated user
    /// agents or header anomalies, or a large share refused or failing.
    SuspectSurge,
}

/// Something the guard wants the operator to know, delivered to the
/// callback set with [`GuardBuilder::on_event`](crate::http::GuardBuilder::on_event)
/// and logged with `tracing`. `Display` says it in words.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The service came under attack.
    AttackStarted {
        /// What tipped it.
        cause: AttackCause,
        /// Requests a second over the window.
        rate: f64,
        /// The rate's baseline.
        baseline_rate: f64,
        /// The service's mean latency over the window.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serialize::secs"))]
        latency: Duration,
        /// The latency's baseline.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serialize::secs"))]
        baseline_latency: Duration,
        /// Share of the window's requests that look automated or
        /// anomalous, and its baseline.
        suspect_share: (f64, f64),
        /// Share of the window's requests refused by the guard (rules,
        /// bans, scores), and shed by overload protection.
        refused_share: (f64, f64),
    },
    /// The attack is over: no degraded or suspect surge for
    /// [`Detection::cooldown`](crate::http::Detection::cooldown).
    AttackEnded {
        /// How long it lasted.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serialize::secs"))]
        lasted: Duration,
    },
    /// A cluster surged during the attack; its newcomers are suspect
    /// ([`Weights::class_surge`](crate::http::Weights::class_surge)), and rank
    /// low in overload shedding.
    ClassFlagged(Share<Cluster>),
    /// A network (IPv4 /24, IPv6 /48) surged during the attack.
    PrefixFlagged(Share<IpPrefix>),
    /// A route surged during the attack: clients that ask for nothing
    /// else are suspect.
    RouteFlagged(Share<String>),
    /// A client was banned (or, in shadow mode, would have been).
    ClientBanned {
        /// The banned client: an IPv4 address or an IPv6 /64.
        client: IpPrefix,
        /// For how long.
        #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serialize::secs"))]
        duration: Duration,
        /// Its score and the signals behind it.
        report: crate::http::ScoreReport,
        /// Its offences before this one.
        offences: u8,
        /// Only observed: the ladder's ban is in shadow mode.
        shadow: bool,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::AttackStarted {
                cause,
                rate,
                baseline_rate,
                latency,
                baseline_latency,
                suspect_share,
                refused_share,
            } => {
                let why = match cause {
                    AttackCause::Latency => "traffic surged and the service slowed down",
                    AttackCause::Overload => "traffic surged past what the service can serve",
                    AttackCause::SuspectSurge => "traffic that does not look like people surged",
                };
                write!(
                    f,
                    "attack started: {why}: {rate:.0} req/s against {baseline_rate:.0}, \
                     latency {} ms against {} ms, {:.0}% automated or anomalous \
                     ({:.0}% before), {:.0}% refused, {:.0}% shed",
                    latency.as_millis(),
                    baseline_latency.as_millis(),
                    suspect_share.0 * 100.0,
                    suspect_share.1 * 100.0,
                    refused_share.0 * 100.0,
                    refused_share.1 * 100.0
                )
            }
            Event::AttackEnded { lasted } => {
                write!(f, "attack ended after {:.1} s", lasted.as_secs_f64())
            }
            Event::ClassFlagged(s) => write!(f, "cluster flagged: {}: {s}", s.key),
            Event::PrefixFlagged(s) => write!(f, "network flagged: {}: {s}", s.key),
            Event::RouteFlagged(s) => write!(f, "route flagged: {}: {s}", s.key),
            Event::ClientBanned {
                client,
                duration,
                report,
                offences,
                shadow,
            } => write!(
                f,
                "{}{client} banned for {} s (offence {}): score {report}",
                if *shadow { "[shadow] " } else { "" },
                duration.as_secs(),
                u32::from(*offences) + 1
            ),
        }
    }
}

/// A cluster's, network's or route's share of requests, now and before
/// the attack.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share<K> {
    /// The cluster, network or route.
    pub key: K,
    /// Requests counted for it over the window (an overestimate by at most
    /// the sketch's error).
    pub requests: u64,
    /// Clients new to the guard it brought over the window (clusters only;
    /// 0 for networks and routes).
    pub new_clients: u64,
    /// Its share of the window's requests.
    pub share: f64,
    /// Its share in the baseline (before the attack).
    pub baseline_share: f64,
}

impl<K> fmt::Display for Share<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1}% of requests ({:.1}% before), {} requests",
            self.share * 100.0,
            self.baseline_share * 100.0,
            self.requests
        )?;
        if self.new_clients > 0 {
            write!(f, " from {} new clients", self.new_clients)?;
        }
        f.write_str(" in the last second")
    }
}

/// What the detector saw at its last tick; rates and shares are over the
/// window (about the last second).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DetectionSnapshot {
    /// Whether the service is under attack.
    pub under_attack: bool,
    /// Since when, on the guard's clock.
    pub attack_since: Option<Timestamp>,
    /// Whether the service is degraded (latency past its objective, or
    /// shedding), attack or not.
    pub degraded: bool,
    /// Requests a second.
    pub rate: f64,
    /// The rate's baseline.
    pub baseline_rate: f64,
    /// The service's mean latency.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serialize::secs"))]
    pub latency: Duration,
    /// The latency's baseline.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serialize::secs"))]
    pub baseline_latency: Duration,
    /// Share of requests that look automated or anomalous, and its
    /// baseline.
    pub suspect_share: f64,
    /// The suspect share's baseline.
    pub baseline_suspect_share: f64,
    /// Share of requests refused by the guard or answered with an error.
    pub bad_share: f64,
    /// Clusters flagged in this attack.
    pub flagged_classes: Vec<Share<Cluster>>,
    /// Networks flagged in this attack.
    pub flagged_prefixes: Vec<Share<IpPrefix>>,
    /// Routes flagged in this attack.
    pub flagged_routes: Vec<Share<String>>,
    /// The busiest clusters.
    pub top_classes: Vec<Share<Cluster>>,
    /// The busiest IPv4 /24 and IPv6 /48 networks.
    pub top_prefixes: Vec<Share<IpPrefix>>,
    /// The busiest IPv4 /16 and IPv6 /32 networks.
    pub top_networks: Vec<Share<IpPrefix>>,
    /// The busiest routes.
    pub top_routes: Vec<Share<String>>,
}
