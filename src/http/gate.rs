//! The connection gate: a listener wrapper that refuses connections at
//! accept time, before a byte is read.
//!
//! A flood that opens thousands of connections costs a server memory and
//! file descriptors long before any request reaches a rate limiter. The
//! [`Gate`] decides on the peer address alone, right after `accept`:
//!
//! 1. the [verdict hook](GateBuilder::verdict) (bans, block and safe lists)
//!    may refuse the address or exempt it from every cap below;
//! 2. at most [`max_connections_per_ip`](GateBuilder::max_connections_per_ip)
//!    connections open at once from one address, and at most
//!    [`max_connections_per_prefix`](GateBuilder::max_connections_per_prefix)
//!    from one network (by default 64 per IPv6 /64, 1,024 per IPv4 /24 or
//!    IPv6 /48);
//! 3. an address whose connection was closed with a head half sent (the
//!    slowloris signature, below) waits out the
//!    [`slow_penalty`](GateBuilder::slow_penalty) before it connects again;
//! 4. at most [`new_connections_per_ip`](GateBuilder::new_connections_per_ip)
//!    new connections admitted per address, and
//!    [`new_connections_per_prefix`](GateBuilder::new_connections_per_prefix)
//!    per network, over time (GCRA, bounded tables);
//! 5. the [descriptor budget](GateBuilder::descriptor_budget): at the
//!    budget a new connection closes the connection that has waited
//!    longest for its request head, else the one idle longest, and is
//!    refused only when every open connection is being served.
//!
//! Once admitted, a connection is held to [`Deadlines`]: its request head
//! must arrive within 10 seconds (more if it arrives at 500 bytes a second
//! or faster, up to 30), and a keep-alive connection idle for 60 seconds is
//! closed. As open connections pass half the budget the deadlines shrink,
//! to a tenth at the budget. A sweep every quarter second enforces them.
//! Nothing the gate does ever closes a connection whose request head is
//! complete and whose response has not started. The gate follows HTTP/1.x
//! heads and responses; over TLS or HTTP/2 it sees only up to the
//! handshake (the server's own timeouts apply after it;
//! [`serve`](super::serve) sets hyper's header timeout).
//!
//! A refused connection is closed with a reset (`SO_LINGER` 0, so no
//! `TIME_WAIT` piles up on the server), counted in [`GateStats`] and logged
//! at `debug`; a connection the gate closes later is counted by reason.
//! One the verdict hook refuses (a banned or blocklisted
//! address) is first held open, unread, for the [`Tarpit`]'s hold (one
//! second by default, at most 1,024 at once): a flood tool that reconnects
//! the moment it is reset would otherwise keep the server accepting and
//! resetting as fast as it can; the tarpit never holds more than the
//! budget leaves free. An admitted one becomes a [`GatedStream`] that holds
//! its place in the counts until it is dropped.
//!
//! Each [`GatedStream`] also reads the first request head of its
//! connection as it passes through, without consuming or changing a byte,
//! and keeps its header names in wire order and casing (a [`WireHead`]);
//! [`GateConnectInfo`] hands it to handlers for
//! [`Fingerprint`](super::Fingerprint)s.
//!
//! ```no_run
//! use std::time::Duration;
//! use floodguard::http::gate::Gate;
//! use tokio::io::AsyncWriteExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let gate = Gate::builder()
//!     .max_connections_per_ip(16)
//!     .new_connections_per_ip(10, Duration::from_secs(1), 20)
//!     .build()?;
//! let mut listener = gate.listen(tokio::net::TcpListener::bind("0.0.0.0:8080").await?);
//! loop {
//!     let (mut stream, peer) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let _ = stream.write_all(format!("hello {peer}\n").as_bytes()).await;
//!         // Dropping the stream frees its place in the per-address counts.
//!     });
//! }
//! # }
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::Hash;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use parking_lot::Mutex;

use super::tarpit::{Tarpit, TarpitState, TarpitStats};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

pub use super::watch::Deadlines;
use super::watch::{Closed, Epoch, Kill, Registry, Tracker, Watch, default_budget, tightening};
use super::wire::{HeadScanner, Scan, WireHead};
use crate::ip::{PrefixLengths, canonical};
use crate::{ConfigError, DEFAULT_CAPACITY, IpPrefix, KeyedLimiter};

/// Concurrent connections from one address when not configured.
const DEFAULT_MAX_PER_IP: u32 = 16;
/// New connections per second from one address when not configured.
const DEFAULT_RATE: (u64, Duration, u64) = (20, Duration::from_secs(1), 40);
/// Connection caps per network when not configured: 64 per IPv6 /64 (one
/// subscriber's devices; the IPv4 side is the address itself, already
/// capped tighter), and 1,024 per IPv4 /24 or IPv6 /48 (a site or a
/// carrier's NAT pool, whose many people each count against their own
/// address's cap first).
const DEFAULT_NETWORK_CAPS: [(PrefixLengths, u32); 2] = [
    (PrefixLengths::HOST_V4_SUBNET_V6, 64),
    (PrefixLengths::SUBNET_V4_SITE_V6, 1_024),
];
/// New connections per second from one IPv4 /24 or IPv6 /64 when not
/// configured: ten times one address's, so that a NAT pool's people pass.
const DEFAULT_NETWORK_RATE: (PrefixLengths, u64, Duration, u64) =
    (PrefixLengths::SUBNET, 200, Duration::from_secs(1), 400);
/// Most network caps a gate takes.
const MAX_NETWORK_CAPS: usize = 4;
/// How long an address whose connection was closed mid-head waits before
/// it may connect again, when not configured.
const DEFAULT_SLOW_PENALTY: Duration = Duration::from_secs(5);
/// How often the deadlines are enforced.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Pause after an accept error such as `EMFILE`, so the loop does not spin
/// while the process is out of descriptors.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// What the [verdict hook](GateBuilder::verdict) says about an address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AcceptVerdict {
    /// Apply the gate's caps.
    #[default]
    Normal,
    /// Admit without applying or counting against any cap (safelisted
    /// addresses, a load balancer in front).
    Exempt,
    /// Refuse (banned or blocklisted).
    Refuse,
}

type VerdictFn = dyn Fn(IpAddr) -> AcceptVerdict + Send + Sync;

/// Refuses connections at accept time by peer address; see the
/// [module documentation](self).
///
/// Cheap to clone: clones share counts, limiter and stats, so one gate can
/// guard several listeners with shared caps.
///
/// ```
/// use floodguard::ConfigError;
/// use floodguard::http::gate::Gate;
/// let err = Gate::builder().max_connections_per_ip(0).build().unwrap_err();
/// assert_eq!(err, ConfigError::Zero { field: "max_connections_per_ip" });
/// let gate = Gate::builder().build()?;
/// assert_eq!(gate.stats().accepted, 0);
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Gate {
    shared: Arc<Shared>,
}

struct Shared {
    max_per_ip: u32,
    network_caps: Vec<(PrefixLengths, u32)>,
    rate: KeyedLimiter<IpAddr>,
    network_rate: Option<(PrefixLengths, KeyedLimiter<IpPrefix>)>,
    /// Addresses serving the slow-client penalty: one unit per penalty
    /// period, spent when one of their connections is closed mid-head.
    slow: Option<KeyedLimiter<IpAddr>>,
    deadlines: Deadlines,
    budget: u64,
    epoch: Epoch,
    verdict: Option<Box<VerdictFn>>,
    open: Mutex<Open>,
    counters: Counters,
    tarpit: TarpitState,
    sweeping: AtomicBool,
}

/// Open connections per address and per network, and the watched ones.
/// Count entries are removed when they reach zero, so the maps hold only
/// peers with a connection open.
#[derive(Default)]
struct Open {
    ips: HashMap<IpAddr, u32, ahash::RandomState>,
    /// Keyed by the cap's index too: two caps may share a length.
    prefixes: HashMap<(u8, IpPrefix), u32, ahash::RandomState>,
    watched: Registry,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused_banned: AtomicU64,
    refused_per_ip: AtomicU64,
    refused_per_prefix: AtomicU64,
    refused_rate: AtomicU64,
    refused_network_rate: AtomicU64,
    refused_slow: AtomicU64,
    refused_budget: AtomicU64,
    closed_head_timeout: AtomicU64,
    closed_idle: AtomicU64,
    closed_budget: AtomicU64,
    open: AtomicU64,
    /// Closed by the gate, their streams not yet dropped.
    dying: AtomicU64,
    verdict_panics: AtomicU64,
}

/// A snapshot of a [`Gate`]'s counters since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateStats {
    /// Connections admitted (exempt ones included).
    pub accepted: u64,
    /// Refused by the verdict hook ([`AcceptVerdict::Refuse`]).
    pub refused_banned: u64,
    /// Refused because the address had its maximum of connections open.
    pub refused_per_ip: u64,
    /// Refused because one of the address's networks had its maximum open.
    pub refused_per_prefix: u64,
    /// Refused by the address's new-connection rate.
    pub refused_rate: u64,
    /// Refused by the network's new-connection rate.
    pub refused_network_rate: u64,
    /// Refused because the address serves the slow-client penalty.
    pub refused_slow: u64,
    /// Refused at the descriptor budget with every open connection being
    /// served.
    pub refused_budget: u64,
    /// Closed for a request head not complete by its deadline.
    pub closed_head_timeout: u64,
    /// Closed after the keep-alive time idle.
    pub closed_idle: u64,
    /// Closed to make room for a new connection at the budget.
    pub closed_budget: u64,
    /// Admitted connections open now (streams not yet dropped).
    pub open: u64,
    /// The descriptor budget.
    pub budget: u64,
    /// Times the verdict hook panicked; the connection was then judged as
    /// [`AcceptVerdict::Normal`] (the caps apply) and the accept loop went
    /// on.
    pub verdict_panics: u64,
    /// Refused connections held open by the [`Tarpit`] before their reset.
    pub tarpit: TarpitStats,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    Banned,
    PerIp,
    PerPrefix,
    Rate,
    NetworkRate,
    Slow,
    Budget,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Banned => "refused by verdict",
            Refusal::PerIp => "too many connections from address",
            Refusal::PerPrefix => "too many connections from network",
            Refusal::Rate => "new connections too fast",
            Refusal::NetworkRate => "new connections from network too fast",
            Refusal::Slow => "address sent a slow request head",
            Refusal::Budget => "descriptor budget spent on requests being served",
        }
    }
}

impl Gate {
    /// Starts a builder with the defaults: 16 connections open per address,
    /// 64 per IPv6 /64 and 1,024 per IPv4 /24 or IPv6 /48; 20 new
    /// connections a second per address (burst 40) and 200 per IPv4 /24 or
    /// IPv6 /64 (burst 400); the default [`Deadlines`]; a descriptor budget
    /// of four fifths of the open-file limit; a 5-second slow-client
    /// penalty; no verdict hook; the default [`Tarpit`].
    pub fn builder() -> GateBuilder {
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
        }
    }

    /// Wraps `listener`: its [`accept`](GatedListener::accept) only returns
    /// connections the gate admits.
    pub fn listen(&self, listener: TcpListener) -> GatedListener {
        GatedListener {
            listener,
            gate: self.clone(),
            backoff: None,
        }
    }

    /// Counters since the gate was built.
    pub fn stats(&self) -> GateStats {
        let c = &self.shared.counters;
        GateStats {
            accepted: c.accepted.load(Relaxed),
            refused_banned: c.refused_banned.load(Relaxed),
            refused_per_ip: c.refused_per_ip.load(Relaxed),
            refused_per_prefix: c.refused_per_prefix.load(Relaxed),
            refused_rate: c.refused_rate.load(Relaxed),
            refused_network_rate: c.refused_network_rate.load(Relaxed),
            refused_slow: c.refused_slow.load(Relaxed),
            refused_budget: c.refused_budget.load(Relaxed),
            closed_head_timeout: c.closed_head_timeout.load(Relaxed),
            closed_idle: c.closed_idle.load(Relaxed),
            closed_budget: c.closed_budget.load(Relaxed),
            open: c.open.load(Relaxed),
            budget: self.shared.budget,
            verdict_panics: c.verdict_panics.load(Relaxed),
            tarpit: self.shared.tarpit.stats(),
        }
    }

    /// The deadlines the gate holds connections to.
    pub fn deadlines(&self) -> Deadlines {
        self.shared.deadlines
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("Gate")
            .field("max_connections_per_ip", &s.max_per_ip)
            .field("max_connections_per_prefix", &s.network_caps)
            .field("new_connections_per_ip", s.rate.algorithm())
            .field(
                "new_connections_per_prefix",
                &s.network_rate.as_ref().map(|(l, r)| (l, r.algorithm())),
            )
            .field("deadlines", &s.deadlines)
            .field("descriptor_budget", &s.budget)
            .field("verdict", &s.verdict.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Shared {
    /// Decides on one connection from `ip` (canonical) and, if admitted,
    /// takes its place in the counts.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let verdict = self
            .verdict
            .as_ref()
            .map_or(AcceptVerdict::Normal, |f| self.ask(f, ip));
        let watched = match verdict {
            AcceptVerdict::Refuse => return Err(Refusal::Banned),
            AcceptVerdict::Exempt => None,
            AcceptVerdict::Normal => Some(self.admit_counted(ip)?),
        };
        self.counters.accepted.fetch_add(1, Relaxed);
        self.counters.open.fetch_add(1, Relaxed);
        Ok(Slot {
            shared: Arc::clone(self),
            watched,
        })
    }

    /// The caps, the penalty, the rates and the budget, in that order; on
    /// admission the connection's counts and watch.
    fn admit_counted(&self, ip: IpAddr) -> Result<Counted, Refusal> {
        let mut prefixes = [None; MAX_NETWORK_CAPS];
        for (i, &(lengths, _)) in self.network_caps.iter().enumerate() {
            prefixes[i] = Some((i as u8, IpPrefix::of(ip, lengths)));
        }
        // One lock for the checks and the increments, so two listeners
        // sharing the gate cannot both take the last place.
        let mut open = self.open.lock();
        if open.ips.get(&ip).is_some_and(|&n| n >= self.max_per_ip) {
            return Err(Refusal::PerIp);
        }
        for (key, &(_, max)) in prefixes.iter().flatten().zip(&self.network_caps) {
            if open.prefixes.get(key).is_some_and(|&n| n >= max) {
                return Err(Refusal::PerPrefix);
            }
        }
        if let Some(slow) = &self.slow {
            if slow.peek_at(&ip, 1, slow.now()).is_denied() {
                return Err(Refusal::Slow);
            }
        }
        // Charged after the caps: a connection refused for them does not
        // spend the rates.
        if self.rate.check(&ip).is_denied() {
            return Err(Refusal::Rate);
        }
        if let Some((lengths, rate)) = &self.network_rate {
            if rate.check(&IpPrefix::of(ip, *lengths)).is_denied() {
                return Err(Refusal::NetworkRate);
            }
        }
        let now = self.epoch.now();
        if self.used() >= self.budget {
            // A closed connection keeps its descriptor until its server
            // task drops it, later on a starved runtime: past a tenth of
            // the budget in that state, newcomers wait rather than push
            // the descriptors in use further past the budget.
            if self.counters.dying.load(Relaxed) >= (self.budget / 10).max(1) {
                return Err(Refusal::Budget);
            }
            match open.watched.evict(now) {
                Some(kill) => self.closed(kill),
                None => return Err(Refusal::Budget),
            }
        }
        *open.ips.entry(ip).or_insert(0) += 1;
        for key in prefixes.iter().flatten() {
            *open.prefixes.entry(*key).or_insert(0) += 1;
        }
        let watch = Arc::new(Watch::new(ip, now));
        let index = open.watched.insert(Arc::clone(&watch));
        Ok(Counted {
            ip,
            prefixes,
            index,
            watch,
        })
    }

    /// Descriptors the gate's connections hold: admitted ones not yet
    /// closed, and refusals the tarpit holds.
    fn used(&self) -> u64 {
        let c = &self.counters;
        c.open.load(Relaxed).saturating_sub(c.dying.load(Relaxed)) + self.tarpit.holding() as u64
    }

    /// Counts a connection the gate closed, and puts an address that
    /// left a head half sent in the penalty box.
    fn closed(&self, kill: Kill) {
        let c = &self.counters;
        c.dying.fetch_add(1, Relaxed);
        let counter = match kill.why {
            Closed::HeadTimeout => &c.closed_head_timeout,
            Closed::Idle => &c.closed_idle,
            Closed::Budget => &c.closed_budget,
        };
        counter.fetch_add(1, Relaxed);
        if kill.partial_head {
            if let Some(slow) = &self.slow {
                let _ = slow.check(&kill.ip);
            }
        }
        tracing::debug!(peer = %kill.ip, reason = ?kill.why, "connection closed by the gate");
    }

    /// Closes every connection past its deadline.
    fn sweep(&self) {
        let factor = tightening(self.used(), self.budget);
        let now = self.epoch.now();
        let kills = self.open.lock().watched.sweep(now, &self.deadlines, factor);
        for kill in kills {
            self.closed(kill);
        }
    }

    /// Starts the sweep once per gate, on the runtime of the first
    /// listener polled; it stops when the gate is dropped.
    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Relaxed) {
            return;
        }
        let shared = Arc::downgrade(self);
        tokio::spawn(sweep_loop(shared));
    }

    /// The verdict hook's answer for `ip`. A hook that panics must not
    /// take the accept loop (and every later connection) with it: its
    /// panic is counted and logged, and the connection judged as any other.
    fn ask(&self, hook: &VerdictFn, ip: IpAddr) -> AcceptVerdict {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(ip))) {
            Ok(v) => v,
            Err(_) => {
                let n = self.counters.verdict_panics.fetch_add(1, Relaxed);
                // The first, then one in a thousand: a hook that always
                // panics does not flood the log.
                if n % 1_000 == 0 {
                    tracing::error!(
                        peer = %ip,
                        panics = n + 1,
                        "the gate's verdict hook panicked; the connection is judged without it"
                    );
                }
                AcceptVerdict::Normal
            }
        }
    }

    fn count_refusal(&self, why: Refusal) {
        let c = &self.counters;
        let counter = match why {
            Refusal::Banned => &c.refused_banned,
            Refusal::PerIp => &c.refused_per_ip,
            Refusal::PerPrefix => &c.refused_per_prefix,
            Refusal::Rate => &c.refused_rate,
            Refusal::NetworkRate => &c.refused_network_rate,
            Refusal::Slow => &c.refused_slow,
            Refusal::Budget => &c.refused_budget,
        };
        counter.fetch_add(1, Relaxed);
    }
}

async fn sweep_loop(shared: Weak<Shared>) {
    // A runtime shut down drops this task: the next listener polled, on
    // whatever runtime, starts the sweep again.
    struct Restart(Weak<Shared>);
    impl Drop for Restart {
        fn drop(&mut self) {
            if let Some(shared) = self.0.upgrade() {
                shared.sweeping.store(false, Relaxed);
            }
        }
    }
    let _restart = Restart(Weak::clone(&shared));
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.sweep();
    }
}

/// An admitted connection's place in the counts, given back on drop.
struct Slot {
    shared: Arc<Shared>,
    /// `None` for an exempt connection.
    watched: Option<Counted>,
}

/// What a counted connection holds: its address's and networks' places
/// and its watch.
struct Counted {
    ip: IpAddr,
    prefixes: [Option<(u8, IpPrefix)>; MAX_NETWORK_CAPS],
    index: usize,
    watch: Arc<Watch>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let c = &self.shared.counters;
        if let Some(counted) = &self.watched {
            let mut open = self.shared.open.lock();
            release(&mut open.ips, counted.ip);
            for key in counted.prefixes.iter().flatten() {
                release(&mut open.prefixes, *key);
            }
            open.watched.remove(counted.index);
            if counted.watch.close() {
                c.dying.fetch_sub(1, Relaxed);
            }
        }
        c.open.fetch_sub(1, Relaxed);
    }
}

/// Decrements `key`, removing it at zero; gives memory back once a burst of
/// connections has gone, so the maps stay in proportion to what is open.
fn release<K: Hash + Eq>(map: &mut HashMap<K, u32, ahash::RandomState>, key: K) {
    if let Entry::Occupied(mut e) = map.entry(key) {
        if *e.get() <= 1 {
            e.remove();
        } else {
            *e.get_mut() -= 1;
        }
    }
    if map.capacity() > 1024 && map.len() < map.capacity() / 8 {
        map.shrink_to(map.len() * 2);
    }
}

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
}

impl GateBuilder {
    /// How long a connection the verdict hook refuses is held open, unread,
    /// before its reset, and how many at most at once (each holds a file
    /// descriptor): [`Tarpit::default`] (one second, 1,024) unless set;
    /// [`Tarpit::off`] resets them at once. Connections refused for the
    /// caps or the new-connection rate are always reset at once: a
    /// browser opening one too many must learn it straight away.
    /// [`Guard::gate`](super::Guard::gate) starts with the guard's tarpit.
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
    /// ([`GateStats::verdict_panics`]) and the connection is judged as
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

/// A [`TcpListener`] behind a [`Gate`]; made by [`Gate::listen`].
///
/// With feature `axum` it is an [`axum::serve::Listener`]; with feature
/// `tonic`, [`into_incoming`](Self::into_incoming) makes it a stream for
/// tonic's `serve_with_incoming`.
pub struct GatedListener {
    listener: TcpListener,
    gate: Gate,
    /// Set after an accept error; no accept until it fires.
    backoff: Option<Pin<Box<Sleep>>>,
}

impl GatedListener {
    /// The next connection the gate admits, with its peer address (as the
    /// socket reports it, not canonicalised).
    ///
    /// Refused connections are closed here and never returned. Accept
    /// errors do not end the loop either: connection errors are skipped,
    /// others (such as `EMFILE`) are logged at `warn` and retried after
    /// 10 ms, as axum's `serve` does. The `Result` is kept for errors a
    /// later version may report; this one never returns `Err`.
    ///
    /// Cancel safe: dropping the future loses no admitted connection.
    pub async fn accept(&mut self) -> io::Result<(GatedStream, SocketAddr)> {
        Ok(poll_fn(|cx| self.poll_admitted(cx)).await)
    }

    /// Polls for the next admitted connection; see [`accept`](Self::accept).
    pub fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(GatedStream, SocketAddr)>> {
        self.poll_admitted(cx).map(Ok)
    }

    fn poll_admitted(&mut self, cx: &mut Context<'_>) -> Poll<(GatedStream, SocketAddr)> {
        // Each trip round the loop goes through `TcpListener::poll_accept`,
        // which spends tokio's cooperative budget: a flood of refused
        // connections makes this return `Pending` now and then instead of
        // starving the worker thread.
        self.gate.shared.start_sweeping();
        loop {
            if let Some(sleep) = self.backoff.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.backoff = None;
            }
            match ready!(self.listener.poll_accept(cx)) {
                Ok((stream, peer)) => match self.gate.shared.admit(canonical(peer.ip())) {
                    Ok(slot) => {
                        let stream = GatedStream::new(stream, peer, slot, self.gate.shared.epoch);
                        return Poll::Ready((stream, peer));
                    }
                    Err(why) => self.refuse(stream, peer, why),
                },
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "connection failed before accept");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept error; retrying in 10 ms");
                    self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_BACKOFF)));
                }
            }
        }
    }

    fn refuse(&self, stream: TcpStream, peer: SocketAddr, why: Refusal) {
        // Linger 0: closing sends a reset and leaves no TIME_WAIT behind.
        // Failure only costs the TIME_WAIT, so it is ignored.
        // Counted first, so the stats never lag what the client saw.
        self.gate.shared.count_refusal(why);
        tracing::debug!(%peer, reason = why.as_str(), "connection refused");
        // Held only while the budget has room: a held refusal keeps its
        // descriptor.
        let shared = &self.gate.shared;
        let held = match why {
            Refusal::Banned if shared.used() < shared.budget => shared.tarpit.hold(),
            _ => None,
        };
        if let Some((hold, place)) = held {
            // Unread until the reset; the place is given back with it.
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                let _ = stream.set_zero_linger();
                drop((stream, place));
            });
            return;
        }
        let _ = stream.set_zero_linger();
        drop(stream);
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The gate deciding for this listener.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The wrapped listener.
    pub fn get_ref(&self) -> &TcpListener {
        &self.listener
    }
}

impl fmt::Debug for GatedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedListener")
            .field("listener", &self.listener)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

pin_project! {
    /// A connection the [`Gate`] admitted: a [`TcpStream`] that gives its
    /// place in the per-address and per-network counts back when dropped,
    /// however the connection ends.
    ///
    /// It reads the connection's first request head as it passes through
    /// [`poll_read`](AsyncRead::poll_read), before the server sees it, and
    /// keeps its [`WireHead`] for [`connect_info`](Self::connect_info).
    /// Nothing is consumed or changed. It also follows each request head
    /// and response for the gate's [`Deadlines`]: once the gate has closed
    /// the connection, reads and writes fail with
    /// [`io::ErrorKind::TimedOut`] and the server drops it.
    pub struct GatedStream {
        #[pin]
        inner: TcpStream,
        peer: SocketAddr,
        // `None` once the first head is read, or given up on.
        scanner: Option<HeadScanner>,
        head: Arc<OnceLock<WireHead>>,
        // `None` for an exempt connection.
        tracker: Option<Tracker>,
        _slot: Slot,
    }
}

impl GatedStream {
    fn new(inner: TcpStream, peer: SocketAddr, slot: Slot, epoch: Epoch) -> Self {
        let tracker = slot
            .watched
            .as_ref()
            .map(|c| Tracker::new(Arc::clone(&c.watch), epoch));
        GatedStream {
            inner,
            peer,
            scanner: Some(HeadScanner::new()),
            head: Arc::new(OnceLock::new()),
            tracker,
            _slot: slot,
        }
    }

    /// The peer's address as accepted (not canonicalised).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The TCP stream, for socket options such as `set_nodelay`.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// The TCP stream, mutably.
    pub fn get_mut(&mut self) -> &mut TcpStream {
        &mut self.inner
    }

    /// The peer address and the first request head of this connection,
    /// for the request extensions: axum's `ConnectInfo` makes it with
    /// `into_make_service_with_connect_info::<GateConnectInfo>()`; with
    /// plain hyper, insert it into each request yourself.
    pub fn connect_info(&self) -> GateConnectInfo {
        GateConnectInfo {
            peer: self.peer,
            head: Arc::clone(&self.head),
        }
    }
}

/// Scans the bytes a read just added; drops the scanner once the head is
/// complete or hopeless, so later reads cost one branch.
fn scan(scanner: &mut Option<HeadScanner>, head: &OnceLock<WireHead>, read: &[u8]) {
    let Some(s) = scanner else { return };
    // End of stream: no head will come.
    if read.is_empty() {
        *scanner = None;
        return;
    }
    match s.feed(read) {
        Scan::NeedMore => {}
        Scan::Done(wire) => {
            let _ = head.set(wire);
            *scanner = None;
        }
        Scan::GaveUp => *scanner = None,
    }
}

impl fmt::Debug for GatedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedStream")
            .field("inner", &self.inner)
            .field("peer", &self.peer)
            .field("head", &self.head.get())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for GatedStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let Some(tracker) = this.tracker else {
            return read_and_scan(this.inner, this.scanner, this.head, cx, buf);
        };
        if tracker.killed() {
            return Poll::Ready(Err(closed_by_gate(&this.inner)));
        }
        let before = buf.filled().len();
        match read_and_scan(this.inner.as_mut(), this.scanner, this.head, cx, buf) {
            Poll::Pending => {
                if tracker.killed_or_register(cx) {
                    return Poll::Ready(Err(closed_by_gate(&this.inner)));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                tracker.on_read(buf.filled().get(before..).unwrap_or_default());
                Poll::Ready(Ok(()))
            }
            err => err,
        }
    }
}

/// Reads, and scans the bytes read for the first head's wire facts.
#[inline]
fn read_and_scan(
    inner: Pin<&mut TcpStream>,
    scanner: &mut Option<HeadScanner>,
    head: &OnceLock<WireHead>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if scanner.is_none() {
        return inner.poll_read(cx, buf);
    }
    let before = buf.filled().len();
    let res = ready!(inner.poll_read(cx, buf));
    if res.is_ok() {
        // Before returning: the server parses these bytes only after
        // this read, so the head is known by the time it dispatches.
        let read = buf.filled().get(before..).unwrap_or_default();
        scan(scanner, head, read);
    }
    Poll::Ready(res)
}

/// The error a stream the gate closed returns; the reset spares the
/// server a `TIME_WAIT`.
fn closed_by_gate(stream: &TcpStream) -> io::Error {
    let _ = stream.set_zero_linger();
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection closed by the gate (request head deadline, keep-alive time or descriptor budget)",
    )
}

/// The connection a request came on: its peer address and, once read, its
/// first request head in wire order and casing; made by
/// [`GatedStream::connect_info`].
///
/// With feature `axum` it is axum connect info over a [`GatedListener`]:
///
/// ```no_run
/// use axum::{Router, extract::ConnectInfo, routing::get};
/// use floodguard::http::GateConnectInfo;
/// use floodguard::http::gate::Gate;
///
/// # #[cfg(feature = "axum")]
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let gate = Gate::builder().build()?;
/// let listener = gate.listen(tokio::net::TcpListener::bind("0.0.0.0:3000").await?);
/// let app = Router::new().route(
///     "/",
///     get(|ConnectInfo(conn): ConnectInfo<GateConnectInfo>| async move {
///         format!("{} {:?}", conn.peer_addr(), conn.wire_head())
///     }),
/// );
/// axum::serve(listener, app.into_make_service_with_connect_info::<GateConnectInfo>()).await?;
/// # Ok(())
/// # }
/// ```
///
/// The layer finds the peer address in it, and
/// [`Fingerprint::from_parts`](super::Fingerprint::from_parts) the head.
#[derive(Clone, Debug)]
pub struct GateConnectInfo {
    peer: SocketAddr,
    head: Arc<OnceLock<WireHead>>,
}

impl GateConnectInfo {
    /// The peer's address as accepted (not canonicalised).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The connection's first request head, once the stream has read all
    /// of it; `None` before that, and for good if it was not an HTTP/1.x
    /// head (HTTP/2, TLS) or was over the scanner's limits. Set before the
    /// server parses that request, so its handler always sees it; later
    /// requests on the connection see the first one's.
    pub fn wire_head(&self) -> Option<WireHead> {
        self.head.get().copied()
    }
}

impl AsyncWrite for GatedStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        let Some(tracker) = this.tracker else {
            return this.inner.poll_write(cx, buf);
        };
        if tracker.killed() {
            return Poll::Ready(Err(closed_by_gate(&this.inner)));
        }
        let res = this.inner.as_mut().poll_write(cx, buf);
        watch_write(tracker, cx, &this.inner, res, |n| buf.get(..n))
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        let Some(tracker) = this.tracker else {
            return this.inner.poll_write_vectored(cx, bufs);
        };
        if tracker.killed() {
            return Poll::Ready(Err(closed_by_gate(&this.inner)));
        }
        let res = this.inner.as_mut().poll_write_vectored(cx, bufs);
        // The start of a response is in the first slice with bytes.
        let first = bufs.iter().find(|b| !b.is_empty());
        watch_write(tracker, cx, &this.inner, res, |n| {
            first.map(|b| &b[..n.min(b.len())])
        })
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// After a write: tells the tracker what went out, or keeps the waker of
/// a write that must wait, so that a close by the gate reaches it.
#[inline]
fn watch_write<'a>(
    tracker: &mut Tracker,
    cx: &Context<'_>,
    stream: &TcpStream,
    res: Poll<io::Result<usize>>,
    written: impl FnOnce(usize) -> Option<&'a [u8]>,
) -> Poll<io::Result<usize>> {
    match res {
        Poll::Pending if tracker.killed_or_register(cx) => Poll::Ready(Err(closed_by_gate(stream))),
        Poll::Ready(Ok(n)) => {
            tracker.on_write(written(n).unwrap_or_default());
            Poll::Ready(Ok(n))
        }
        other => other,
    }
}

#[cfg(feature = "axum")]
mod axum_support {
    use super::{GateConnectInfo, GatedListener, GatedStream};
    use axum::extract::connect_info::Connected;
    use axum::serve::{IncomingStream, Listener, ListenerExt, TapIo};
    use std::io;
    use std::net::SocketAddr;

    impl Connected<IncomingStream<'_, GatedListener>> for GateConnectInfo {
        fn connect_info(stream: IncomingStream<'_, GatedListener>) -> Self {
            stream.io().connect_info()
        }
    }

    /// Also over `gated.tap_io(...)`, which a stream option such as
    /// `set_nodelay` needs.
    impl<F> Connected<IncomingStream<'_, TapIo<GatedListener, F>>> for GateConnectInfo
    where
        F: FnMut(&mut GatedStream) + Send + 'static,
    {
        fn connect_info(stream: IncomingStream<'_, TapIo<GatedListener, F>>) -> Self {
            stream.io().connect_info()
        }
    }

    /// A [`GatedListener`] as axum serves it with
    /// `ConnectInfo<SocketAddr>`; see [`GatedListener::into_axum`].
    pub type AxumListener = TapIo<GatedListener, fn(&mut GatedStream)>;

    impl Listener for GatedListener {
        type Io = GatedStream;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (GatedStream, SocketAddr) {
            std::future::poll_fn(|cx| self.poll_admitted(cx)).await
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.listener.local_addr()
        }
    }

    fn untouched(_: &mut GatedStream) {}

    impl GatedListener {
        /// The listener for `axum::serve` with
        /// `into_make_service_with_connect_info::<SocketAddr>()`.
        ///
        /// axum implements `Connected` for `SocketAddr` only over its own
        /// `TcpListener` and over [`TapIo`], and the orphan rule keeps this
        /// crate from adding the impl for `GatedListener`; so this wraps
        /// the listener in a `TapIo` that leaves each stream untouched.
        /// `gated.tap_io(|s| ...)` does the same with a tap of your own.
        /// Plain `axum::serve(gated, router)` needs no wrapper.
        ///
        /// ```no_run
        /// use std::net::SocketAddr;
        /// use axum::{Router, extract::ConnectInfo, routing::get};
        /// use floodguard::http::gate::Gate;
        ///
        /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
        /// let gate = Gate::builder().max_connections_per_ip(32).build()?;
        /// let listener = gate.listen(tokio::net::TcpListener::bind("0.0.0.0:3000").await?);
        /// let app = Router::new().route(
        ///     "/",
        ///     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        /// );
        /// axum::serve(
        ///     listener.into_axum(),
        ///     app.into_make_service_with_connect_info::<SocketAddr>(),
        /// )
        /// .await?;
        /// # Ok(())
        /// # }
        /// ```
        pub fn into_axum(self) -> AxumListener {
            self.tap_io(untouched as fn(&mut GatedStream))
        }
    }
}

#[cfg(feature = "axum")]
pub use axum_support::AxumListener;

#[cfg(feature = "tonic")]
mod tonic_support {
    use super::{GatedListener, GatedStream};
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tonic::transport::server::{Connected, TcpConnectInfo};

    impl Connected for GatedStream {
        type ConnectInfo = TcpConnectInfo;

        fn connect_info(&self) -> TcpConnectInfo {
            TcpConnectInfo {
                local_addr: self.inner.local_addr().ok(),
                remote_addr: Some(self.peer),
            }
        }
    }

    /// The admitted connections of a [`GatedListener`] as a stream, for
    /// tonic's `serve_with_incoming`; made by
    /// [`GatedListener::into_incoming`]. Never ends and never yields `Err`
    /// (see [`GatedListener::accept`]).
    #[derive(Debug)]
    pub struct Incoming {
        listener: GatedListener,
    }

    impl GatedListener {
        /// The admitted connections as a stream, for tonic's
        /// `Server::serve_with_incoming`. Request handlers find tonic's
        /// `TcpConnectInfo` in the request extensions, as with tonic's own
        /// listener.
        ///
        /// ```no_run
        /// use floodguard::http::gate::Gate;
        ///
        /// # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
        /// let gate = Gate::builder().build()?;
        /// let listener = gate.listen(tokio::net::TcpListener::bind("[::]:50051").await?);
        /// tonic::transport::Server::builder()
        ///     .add_routes(routes)
        ///     .serve_with_incoming(listener.into_incoming())
        ///     .await?;
        /// # Ok(())
        /// # }
        /// ```
        pub fn into_incoming(self) -> Incoming {
            Incoming { listener: self }
        }
    }

    impl Incoming {
        /// The listener back.
        pub fn into_inner(self) -> GatedListener {
            self.listener
        }
    }

    impl futures_core::Stream for Incoming {
        type Item = io::Result<GatedStream>;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.get_mut()
                .listener
                .poll_admitted(cx)
                .map(|(stream, _)| Some(Ok(stream)))
        }
    }
}

#[cfg(feature = "tonic")]
pub use tonic_support::Incoming;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpSocket;

    async fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(format!("{src}:0").parse().unwrap()).unwrap();
        s.connect(dst).await.unwrap()
    }

    #[tokio::test]
    async fn open_counts_are_empty_after_every_stream_drops() {
        let gate = Gate::builder()
            .max_connections_per_ip(2)
            .no_network_limits()
            .max_connections_per_prefix(PrefixLengths::SUBNET, 3)
            .build()
            .unwrap();
        let mut listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut admitted = Vec::new();
        // Two from .21, one from .22 fill the /24; a third from .21 and one
        // from .23 are refused and leave nothing behind.
        for src in [
            "127.0.0.21",
            "127.0.0.21",
            "127.0.0.22",
            "127.0.0.21",
            "127.0.0.23",
        ] {
            clients.push(connect_from(src, addr).await);
        }
        let accept = async {
            for _ in 0..3 {
                admitted.push(listener.accept().await.unwrap().0);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), accept)
            .await
            .unwrap();
        {
            let open = gate.shared.open.lock();
            assert_eq!(open.ips.len(), 2);
            assert_eq!(open.ips[&"127.0.0.21".parse::<IpAddr>().unwrap()], 2);
            assert_eq!(open.prefixes.len(), 1);
            assert_eq!(gate.stats().open, 3);
        }
        // The refusals happen inside `accept`, which then waits.
        let waited = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(waited.is_err(), "nothing more to admit");
        let s = gate.stats();
        assert_eq!((s.refused_per_ip, s.refused_per_prefix), (1, 1));
        // A place freed on the network goes to the next one in.
        drop(admitted.pop());
        clients.push(connect_from("127.0.0.24", addr).await);
        let (last, peer) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.24");
        let s = gate.stats();
        assert_eq!(
            (s.accepted, s.refused_per_ip, s.refused_per_prefix),
            (4, 1, 1)
        );
        drop(last);
        drop(admitted);
        let open = gate.shared.open.lock();
        assert!(open.ips.is_empty(), "{:?}", open.ips);
        assert!(open.prefixes.is_empty(), "{:?}", open.prefixes);
        assert_eq!(open.watched.len(), 0, "no connection watched");
        assert_eq!(gate.stats().open, 0);
    }

    #[tokio::test]
    async fn the_wire_head_is_set_by_the_read_that_completes_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let gate = Gate::builder().build().unwrap();
        let mut listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let mut client = connect_from("127.0.0.25", addr).await;
        let (mut stream, _) = listener.accept().await.unwrap();
        let info = stream.connect_info();
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\nbody";
        let want = match HeadScanner::new().feed(head) {
            Scan::Done(w) => w,
            other => panic!("{other:?}"),
        };
        let mut got = Vec::new();
        for piece in head.chunks(9) {
            assert_eq!(info.wire_head(), None, "after {} bytes", got.len());
            client.write_all(piece).await.unwrap();
            let mut buf = vec![0u8; piece.len()];
            stream.read_exact(&mut buf).await.unwrap();
            got.extend_from_slice(&buf);
            // Known as soon as the read holding the empty line returns.
            let complete = got.len() >= head.len() - b"body".len();
            assert_eq!(
                info.wire_head().is_some(),
                complete,
                "after {} bytes",
                got.len()
            );
        }
        // Passed through untouched; the scanner is gone.
        assert_eq!(got, head);
        assert_eq!(info.wire_head(), Some(want));
        assert!(stream.scanner.is_none());
        assert_eq!(info.peer_addr(), stream.peer_addr());
    }

    #[tokio::test]
    async fn end_of_stream_or_garbage_stops_the_scan() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let gate = Gate::builder().build().unwrap();
        let mut listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        for bytes in [&b"GET / HTTP/1.1\r\n"[..], b"\x16\x03\x01 not http"] {
            let mut client = connect_from("127.0.0.26", addr).await;
            let (mut stream, _) = listener.accept().await.unwrap();
            client.write_all(bytes).await.unwrap();
            drop(client);
            let mut all = Vec::new();
            stream.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, bytes);
            assert!(stream.scanner.is_none());
            assert_eq!(stream.connect_info().wire_head(), None);
        }
    }

    #[test]
    fn release_removes_zero_entries_and_shrinks() {
        let mut m: HashMap<u32, u32, ahash::RandomState> = HashMap::default();
        for k in 0..5000 {
            m.insert(k, 1);
        }
        m.insert(7, 2);
        for k in 0..5000 {
            release(&mut m, k);
        }
        assert_eq!(m.len(), 1);
        assert_eq!(m[&7], 1);
        assert!(m.capacity() < 1024, "{}", m.capacity());
        release(&mut m, 7);
        assert!(m.is_empty());
    }

    #[test]
    fn builder_rejects_zero_limits() {
        let zero = |b: GateBuilder| b.build().unwrap_err();
        assert_eq!(
            zero(Gate::builder().max_connections_per_prefix(PrefixLengths::SUBNET, 0)),
            ConfigError::Zero {
                field: "max_connections_per_prefix"
            }
        );
        assert_eq!(
            zero(Gate::builder().new_connections_per_ip(0, Duration::from_secs(1), 1)),
            ConfigError::Zero { field: "rate" }
        );
        assert_eq!(
            zero(Gate::builder().capacity(0)),
            ConfigError::Zero { field: "capacity" }
        );
    }

    fn v6(net: u16, host: u32) -> IpAddr {
        IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001,
            0xdb8,
            net,
            0,
            0,
            0,
            (host >> 16) as u16,
            host as u16,
        ))
    }

    #[test]
    fn one_ipv6_network_holds_64_connections_by_default_however_many_addresses() {
        let gate = Gate::builder().build().unwrap();
        let mut slots: Vec<Slot> = (0..64)
            .map(|h| gate.shared.admit(v6(1, h)).ok().unwrap())
            .collect();
        assert!(matches!(
            gate.shared.admit(v6(1, 64)),
            Err(Refusal::PerPrefix)
        ));
        // The next /64 of the same /48 has its own 64.
        slots.push(gate.shared.admit(v6(2, 0)).ok().unwrap());
        // A place freed goes to the next address of the network.
        drop(slots.swap_remove(0));
        assert!(gate.shared.admit(v6(1, 1_000)).is_ok());
    }

    #[test]
    fn one_ipv4_slash_24_holds_1024_and_one_ipv6_slash_48_too() {
        let gate = Gate::builder()
            .max_connections_per_ip(1_000)
            .no_network_limits()
            .max_connections_per_prefix(PrefixLengths::SUBNET_V4_SITE_V6, 3)
            .build()
            .unwrap();
        // Three /64s of one /48 (2001:db8:7::/48).
        let in_48 = |n: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, n, 0, 0, 0, 1));
        let _held: Vec<Slot> = (0..3)
            .map(|n| gate.shared.admit(in_48(n)).ok().unwrap())
            .collect();
        assert!(matches!(
            gate.shared.admit(in_48(9)),
            Err(Refusal::PerPrefix)
        ));
        assert!(gate.shared.admit(v6(8, 1)).is_ok(), "another /48");
        // The default caps; the network rate out of the way.
        let defaults = Gate::builder()
            .max_connections_per_ip(2_000)
            .new_connections_per_prefix(PrefixLengths::SUBNET, 5_000, Duration::from_secs(1), 5_000)
            .build()
            .unwrap();
        let v4 = |h: u32| IpAddr::from([198, 51, 100, (h % 250) as u8]);
        let _held: Vec<Slot> = (0..1_024)
            .map(|h| defaults.shared.admit(v4(h)).ok().unwrap())
            .collect();
        assert!(matches!(
            defaults.shared.admit(v4(7)),
            Err(Refusal::PerPrefix)
        ));
    }

    #[test]
    fn new_connections_from_one_ipv6_network_are_rate_limited_by_default() {
        let gate = Gate::builder().build().unwrap();
        // Each connection from a new address of the same /64, closed at once.
        let admitted = (0..1_000)
            .take_while(|&h| gate.shared.admit(v6(3, h)).is_ok())
            .count();
        // The burst of 400, give or take what refilled meanwhile.
        assert!((400..420).contains(&admitted), "{admitted}");
        assert!(matches!(
            gate.shared.admit(v6(3, 5_000)),
            Err(Refusal::NetworkRate)
        ));
        assert!(
            gate.shared.admit(v6(4, 0)).is_ok(),
            "another /64 is not charged"
        );
    }

    #[test]
    fn builder_refuses_a_zero_budget_and_a_fifth_network_cap() {
        let err = Gate::builder().descriptor_budget(0).build().unwrap_err();
        assert_eq!(
            err,
            ConfigError::Zero {
                field: "descriptor_budget"
            }
        );
        let mut b = Gate::builder();
        for len in 20..23 {
            b = b.max_connections_per_prefix(PrefixLengths::new(len, 64).unwrap(), 10);
        }
        assert!(matches!(
            b.build().unwrap_err(),
            ConfigError::TooLarge {
                field: "max_connections_per_prefix",
                value: 5,
                max: 4
            }
        ));
        // Setting a default's lengths again replaces it.
        let gate = Gate::builder()
            .max_connections_per_prefix(PrefixLengths::HOST_V4_SUBNET_V6, 2)
            .build()
            .unwrap();
        let _a = gate.shared.admit(v6(5, 1)).ok().unwrap();
        let _b = gate.shared.admit(v6(5, 2)).ok().unwrap();
        assert!(matches!(
            gate.shared.admit(v6(5, 3)),
            Err(Refusal::PerPrefix)
        ));
    }

    #[test]
    fn the_tarpit_holds_nothing_the_budget_has_no_room_for() {
        let gate = Gate::builder().descriptor_budget(2).build().unwrap();
        let _a = gate.shared.admit(v6(6, 1)).ok().unwrap();
        assert!(gate.shared.used() < gate.shared.budget);
        let _b = gate.shared.admit(v6(6, 2)).ok().unwrap();
        assert_eq!(gate.shared.used(), gate.shared.budget);
        // Both wait for a head: the third closes the older and comes in.
        let _c = gate.shared.admit(v6(6, 3)).ok().unwrap();
        assert_eq!(gate.stats().closed_budget, 1);
        assert_eq!(gate.shared.used(), 2, "the closed one no longer counts");
    }

    #[test]
    fn the_sweep_starts_again_on_a_new_runtime_when_its_runtime_is_gone() {
        let gate = Gate::builder().build().unwrap();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = runtime();
        first.block_on(async {
            gate.shared.start_sweeping();
            tokio::task::yield_now().await;
        });
        assert!(gate.shared.sweeping.load(Relaxed));
        drop(first);
        assert!(!gate.shared.sweeping.load(Relaxed), "its task was dropped");
        runtime().block_on(async {
            gate.shared.start_sweeping();
            tokio::task::yield_now().await;
            assert!(gate.shared.sweeping.load(Relaxed));
        });
    }

    #[test]
    fn closed_connections_not_yet_dropped_hold_newcomers_back_past_a_tenth_of_the_budget() {
        let gate = Gate::builder().descriptor_budget(20).build().unwrap();
        let mut held: Vec<Slot> = (0..20)
            .map(|h| gate.shared.admit(v6(7, h)).ok().unwrap())
            .collect();
        // Two closed for room (a tenth of 20), their streams not dropped.
        held.push(gate.shared.admit(v6(8, 1)).ok().unwrap());
        held.push(gate.shared.admit(v6(8, 2)).ok().unwrap());
        assert!(matches!(gate.shared.admit(v6(8, 3)), Err(Refusal::Budget)));
        // The server lets go of one: room again.
        held.remove(0);
        assert!(gate.shared.admit(v6(8, 4)).is_ok());
    }
}
