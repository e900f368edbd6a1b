//! The gate's configuration as data: its caps, rates, deadlines and
//! budget, for a gate built from a [`GuardConfig`](crate::config::GuardConfig).

use std::time::Duration;

use crate::http::gate::gate::{
    DEFAULT_MAX_PER_IP, DEFAULT_NETWORK_CAPS, DEFAULT_NETWORK_RATE, DEFAULT_RATE,
    DEFAULT_SLOW_PENALTY,
};
use crate::http::{Deadlines, GateBuilder, Tarpit};
use crate::ip::PrefixLengths;

/// The [`Gate`](crate::http::Gate)'s settings as data, each field one
/// [`GateBuilder`] method; the defaults are the builder's. Used as the
/// `[gate]` section of a [`GuardConfig`](crate::config::GuardConfig).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct GateConfig {
    /// [`GateBuilder::max_connections_per_ip`]: 16.
    pub max_connections_per_ip: u32,
    /// [`GateBuilder::max_connections_per_prefix`], at most four: 64 per
    /// IPv6 /64 (the IPv4 address), 1,024 per IPv4 /24 or IPv6 /48.
    pub max_connections_per_prefix: Vec<PrefixCap>,
    /// [`GateBuilder::new_connections_per_ip`]: 20 a second, burst 40.
    pub new_connections_per_ip: ConnectionRate,
    /// [`GateBuilder::new_connections_per_prefix`]: 200 a second, burst
    /// 400, per IPv4 /24 or IPv6 /64.
    pub new_connections_per_prefix: PrefixRate,
    /// False is [`GateBuilder::no_network_limits`]: no network caps and no
    /// network rate, whatever the two fields above say.
    pub network_limits: bool,
    /// [`GateBuilder::deadlines`].
    pub deadlines: Deadlines,
    /// [`GateBuilder::descriptor_budget`]; none: four fifths of the
    /// open-file limit.
    pub descriptor_budget: Option<u64>,
    /// [`GateBuilder::answer_refusals`]: off.
    pub answer_refusals: bool,
    /// [`GateBuilder::slow_penalty`]: 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub slow_penalty: Duration,
    /// [`GateBuilder::capacity`].
    pub capacity: usize,
    /// [`GateBuilder::tarpit`]; none: the guard's.
    pub tarpit: Option<Tarpit>,
}

/// A cap on connections open at once from one network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct PrefixCap {
    /// The network: the prefix lengths of an address.
    pub prefix: PrefixLengths,
    /// Connections open at once.
    pub max: u32,
}

/// New connections admitted per address: `rate` per `period`, `burst` at
/// once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct ConnectionRate {
    /// Connections per period on average.
    pub rate: u64,
    /// The period.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub period: Duration,
    /// Connections at once.
    pub burst: u64,
}

/// New connections admitted per network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct PrefixRate {
    /// The network: the prefix lengths of an address.
    pub prefix: PrefixLengths,
    /// Connections per period on average.
    pub rate: u64,
    /// The period.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub period: Duration,
    /// Connections at once.
    pub burst: u64,
}

impl Default for GateConfig {
    fn default() -> Self {
        let (rate, period, burst) = DEFAULT_RATE;
        let (prefix, net_rate, net_period, net_burst) = DEFAULT_NETWORK_RATE;
        GateConfig {
            max_connections_per_ip: DEFAULT_MAX_PER_IP,
            max_connections_per_prefix: DEFAULT_NETWORK_CAPS
                .iter()
                .map(|&(prefix, max)| PrefixCap { prefix, max })
                .collect(),
            new_connections_per_ip: ConnectionRate {
                rate,
                period,
                burst,
            },
            new_connections_per_prefix: PrefixRate {
                prefix,
                rate: net_rate,
                period: net_period,
                burst: net_burst,
            },
            network_limits: true,
            deadlines: Deadlines::default(),
            descriptor_budget: None,
            answer_refusals: false,
            slow_penalty: DEFAULT_SLOW_PENALTY,
            capacity: crate::DEFAULT_CAPACITY,
            tarpit: None,
        }
    }
}

impl GateConfig {
    /// Sets every field on `builder` (for instance
    /// [`Guard::gate`](crate::http::Guard::gate)'s); `build()` checks them.
    pub fn apply(&self, builder: GateBuilder) -> GateBuilder {
        let r = self.new_connections_per_ip;
        let n = self.new_connections_per_prefix;
        let mut b = builder
            .no_network_limits()
            .max_connections_per_ip(self.max_connections_per_ip)
            .new_connections_per_ip(r.rate, r.period, r.burst)
            .deadlines(self.deadlines)
            .answer_refusals(self.answer_refusals)
            .slow_penalty(self.slow_penalty)
            .capacity(self.capacity);
        if self.network_limits {
            for cap in &self.max_connections_per_prefix {
                b = b.max_connections_per_prefix(cap.prefix, cap.max);
            }
            b = b.new_connections_per_prefix(n.prefix, n.rate, n.period, n.burst);
        }
        if let Some(budget) = self.descriptor_budget {
            b = b.descriptor_budget(budget);
        }
        if let Some(tarpit) = self.tarpit {
            b = b.tarpit(tarpit);
        }
        b
    }
}
