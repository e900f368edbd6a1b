//! The gate's builder: caps, rates, deadlines, the budget and the verdict
//! hook, checked at `build`.

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use parking_lot::Mutex;

use crate::http::gate::gate::{
    Counters, DEFAULT_MAX_PER_IP, DEFAULT_NETWORK_CAPS, DEFAULT_NETWORK_RATE, DEFAULT_RATE,
    DEFAULT_SLOW_PENALTY, MAX_NETWORK_CAPS, Shared, VerdictFn,
};
use crate::http::gate::watch::{Epoch, default_budget};
use crate::http::tarpit::{Tarpit, TarpitState};
use crate::http::{AcceptVerdict, Deadlines, Gate};
use crate::ip::PrefixLengths;
use crate::{ConfigError, DEFAULT_CAPACITY, KeyedLimiter};
/// Builds a [`Gate`]; see [`Gate::builder`].
#[must_use = "a builder does nothing until `.build()`"]
pub struct GateBuilder {
    max_per_ip: u32,
    network_caps: Vec<(PrefixLengths, u32)>,
    rate: (u64, Duration, u64),
    network_rate: Option<(PrefixLengths, u64, Duration, u64)>,
    slow_penalty: Duration,
    deadlines: Deadlines,
    budget: Option<u64>,
    capacity: usize,
    verdict: Option<Box<VerdictFn>>,
    tarpit: Tarpit,
    answer_refusals: bool,
}

impl GateBuilder {
    /// The defaults; see [`Gate::builder`].
    pub(super) fn new() -> Self {
        GateBuilder {
            max_per_ip: DEFAULT_MAX_PER_IP,
            network_caps: DEFAULT_NETWORK_CAPS.to_vec(),
            rate: DEFAULT_RATE,
            network_rate: Some(DEFAULT_NETWORK_RATE),
            slow_penalty: DEFAULT_SLOW_PENALTY,
            deadlines: Deadlines::default(),
            budget: None,
            capacity: DEFAULT_CAPACITY,
            verdict: None,
            tarpit: Tarpit::default(),
            answer_refusals: false,
        }
    }

    /// How long a connection the verdict hook refuses is held open, unread,
    /// before its reset, and how many at most at once (each holds a file
    /// descriptor): [`Tarpit::default`] (one second, 1,024) unless set;
    /// [`Tarpit::off`] resets them at once. Connections refused for the
    /// caps or the new-connection rate are always reset at once: a
    /// browser opening one too many must learn it straight away.
    /// [`Guard::gate`](crate::http::Guard::gate) starts with the guard's tarpit.
    pub fn tarpit(mut self, tarpit: Tarpit) -> Self {
        self.tarpit = tarpit;
        self
    }

    /// At most `n` connections open at once from one address (default 16:
    /// a browser opens at most 6 per host over HTTP/1.1 and one over HTTP/2,
    /// so 16 leaves room for a few devices behind one NAT; raise it for
    /// audiences behind carrier-grade NAT). Fewer open connections also
    /// bound how many requests one address can have in flight at once.
    pub fn max_connections_per_ip(mut self, n: u32) -> Self {
        self.max_per_ip = n;
        self
    }

    /// At most `n` connections open at once from one network, the prefix of
    /// the address at `lengths`. Replaces the cap at the same lengths, or
    /// adds one (at most four). The defaults are 64 per
    /// `PrefixLengths::new(32, 64)` (an IPv6 /64, one subscriber; the IPv4
    /// side is the address) and 1,024 per `PrefixLengths::new(24, 48)`;
    /// [`no_network_limits`](Self::no_network_limits) removes them.
    pub fn max_connections_per_prefix(mut self, lengths: PrefixLengths, n: u32) -> Self {
        match self.network_caps.iter_mut().find(|(l, _)| *l == lengths) {
            Some(cap) => cap.1 = n,
            None => self.network_caps.push((lengths, n)),
        }
        self
    }

    /// At most `rate` new connections per `per` admitted from one address
    /// on average, `burst` at once (GCRA; default 20 a second, burst 40).
    /// Only admitted connections are charged.
    pub fn new_connections_per_ip(mut self, rate: u64, per: Duration, burst: u64) -> Self {
        self.rate = (rate, per, burst);
        self
    }

    /// At most `rate` new connections per `per` admitted from one network,
    /// the prefix at `lengths`, `burst` at once (GCRA; default 200 a
    /// second, burst 400, per IPv4 /24 or IPv6 /64: one IPv6 subscriber
    /// can take any number of addresses, so a per-address rate alone does
    /// not hold it).
    pub fn new_connections_per_prefix(
        mut self,
        lengths: PrefixLengths,
        rate: u64,
        per: Duration,
        burst: u64,
    ) -> Self {
        self.network_rate = Some((lengths, rate, per, burst));
        self
    }

    /// No network caps and no network rate: only per-address limits, for a
    /// gate behind something that already limits networks.
    pub fn no_network_limits(mut self) -> Self {
        self.network_caps.clear();
        self.network_rate = None;
        self
    }

    /// The request-head and keep-alive deadlines; see [`Deadlines`].
    pub fn deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// At most this many descriptors for connections: admitted ones and
    /// refusals the tarpit holds. Past half of it the [`Deadlines`] shrink,
    /// to a tenth at the budget; at the budget a new connection closes the
    /// connection that has waited longest for a request head, else the one
    /// idle longest (never one being served), and is refused when there is
    /// none, or while a tenth of the budget's worth of closed connections
    /// still wait for their server tasks to let go of them (so descriptors
    /// in use stay under 1.1 times the budget). Default: four fifths of the process's open-file limit
    /// (`RLIMIT_NOFILE`, read at [`build`](Self::build)) on Linux, so that
    /// open connections stay clear of `EMFILE` with room for files and
    /// upstream connections; 8,192 elsewhere.
    pub fn descriptor_budget(mut self, n: u64) -> Self {
        self.budget = Some(n);
        self
    }

    /// Answers connections refused for a cap, a rate, the slow penalty
    /// or the budget with a minimal HTTP/1.1 response (429 with
    /// `Retry-After: 1`; 503 for the budget) and a close, instead of a
    /// reset: a browser that opened one connection too many shows a page,
    /// not a network error. Off by default: it costs the server a
    /// `TIME_WAIT` per refusal, and a TLS or HTTP/2 client reads it as
    /// garbage (use it on plain-HTTP listeners). Banned and blocklisted
    /// addresses are always reset (after the tarpit's hold).
    pub fn answer_refusals(mut self, on: bool) -> Self {
        self.answer_refusals = on;
        self
    }

    /// How long an address waits before it may connect again once one of
    /// its connections was closed with a request head half sent (default
    /// 5 seconds; zero turns it off). Without it a slowloris client
    /// reconnects the moment it is closed. A connection that sent nothing
    /// (a browser's preconnect) earns no penalty.
    pub fn slow_penalty(mut self, d: Duration) -> Self {
        self.slow_penalty = d;
        self
    }

    /// Addresses the new-connection rates and the slow-client penalty
    /// track at once (16 bytes each; default [`DEFAULT_CAPACITY`]).
    pub fn capacity(mut self, keys: usize) -> Self {
        self.capacity = keys;
        self
    }

    /// A hook asked first about every connection's (canonical) address: it
    /// can refuse it (bans, block lists) or exempt it from every cap (safe
    /// lists). Called on the accept path, so it must be quick and must not
    /// block. If it panics, the panic is caught and counted
    /// ([`GateStats::verdict_panics`](crate::http::GateStats::verdict_panics)) and the connection is judged as
    /// [`AcceptVerdict::Normal`].
    pub fn verdict(mut self, f: impl Fn(IpAddr) -> AcceptVerdict + Send + Sync + 'static) -> Self {
        self.verdict = Some(Box::new(f));
        self
    }

    /// Checks every field and builds the gate. Zero caps and a zero budget
    /// are refused with [`ConfigError::Zero`], more than four network caps
    /// with [`ConfigError::TooLarge`]; the rates report their fields as
    /// [`KeyedLimiter`]'s builder does (`rate`, `period`, `burst`,
    /// `capacity`).
    pub fn build(self) -> Result<Gate, ConfigError> {
        if self.max_per_ip == 0 {
            return Err(ConfigError::Zero {
                field: "max_connections_per_ip",
            });
        }
        if self.network_caps.iter().any(|&(_, n)| n == 0) {
            return Err(ConfigError::Zero {
                field: "max_connections_per_prefix",
            });
        }
        if self.network_caps.len() > MAX_NETWORK_CAPS {
            return Err(ConfigError::TooLarge {
                field: "max_connections_per_prefix",
                value: self.network_caps.len() as u64,
                max: MAX_NETWORK_CAPS as u64,
            });
        }
        if self.budget == Some(0) {
            return Err(ConfigError::Zero {
                field: "descriptor_budget",
            });
        }
        let keys = self.capacity;
        let (rate, per, burst) = self.rate;
        let rate = gcra(rate, per, burst, keys)?;
        let network_rate = match self.network_rate {
            Some((lengths, rate, per, burst)) => Some((lengths, gcra(rate, per, burst, keys)?)),
            None => None,
        };
        let slow = if self.slow_penalty.is_zero() {
            None
        } else {
            Some(gcra(1, self.slow_penalty, 1, keys)?)
        };
        Ok(Gate {
            shared: Arc::new(Shared {
                max_per_ip: self.max_per_ip,
                network_caps: self.network_caps,
                rate,
                network_rate,
                slow,
                deadlines: self.deadlines,
                budget: self.budget.unwrap_or_else(default_budget),
                epoch: Epoch::new(),
                verdict: self.verdict,
                open: Mutex::default(),
                counters: Counters::default(),
                tarpit: TarpitState::new(self.tarpit),
                sweeping: AtomicBool::new(false),
                answer_refusals: self.answer_refusals,
            }),
        })
    }
}

fn gcra<K: Hash + Eq + Clone + Send + Sync + 'static>(
    rate: u64,
    per: Duration,
    burst: u64,
    keys: usize,
) -> Result<KeyedLimiter<K>, ConfigError> {
    KeyedLimiter::builder()
        .gcra(rate, per)
        .burst(burst)
        .capacity(keys)
        .build()
}

impl fmt::Debug for GateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateBuilder")
            .field("max_connections_per_ip", &self.max_per_ip)
            .field("max_connections_per_prefix", &self.network_caps)
            .field("new_connections_per_ip", &self.rate)
            .field("new_connections_per_prefix", &self.network_rate)
            .field("deadlines", &self.deadlines)
            .field("descriptor_budget", &self.budget)
            .field("slow_penalty", &self.slow_penalty)
            .field("capacity", &self.capacity)
            .field("verdict", &self.verdict.is_some())
            .field("tarpit", &self.tarpit)
            .finish()
    }
}
