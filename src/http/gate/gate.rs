//! The gate's admission policy: the verdict hook, the per-address and
//! per-network caps and rates, the slow penalty and the descriptor budget,
//! and the counts each admitted connection holds until it is dropped.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::http::gate::watch::{Closed, Epoch, Kill, Registry, Watch, tightening};
use crate::http::tarpit::{TarpitState, TarpitStats};
use crate::http::{Deadlines, GateBuilder, GatedListener};
use crate::ip::PrefixLengths;
use crate::{IpPrefix, KeyedLimiter};

/// Concurrent connections from one address when not configured.
pub(crate) const DEFAULT_MAX_PER_IP: u32 = 16;
/// New connections per second from one address when not configured.
pub(crate) const DEFAULT_RATE: (u64, Duration, u64) = (20, Duration::from_secs(1), 40);
/// Connection caps per network when not configured: 64 per IPv6 /64 (one
/// subscriber's devices; the IPv4 side is the address itself, already
/// capped tighter), and 1,024 per IPv4 /24 or IPv6 /48 (a site or a
/// carrier's NAT pool, whose many people each count against their own
/// address's cap first).
pub(crate) const DEFAULT_NETWORK_CAPS: [(PrefixLengths, u32); 2] = [
    (PrefixLengths::HOST_V4_SUBNET_V6, 64),
    (PrefixLengths::SUBNET_V4_SITE_V6, 1_024),
];
/// New connections per second from one IPv4 /24 or IPv6 /64 when not
/// configured: ten times one address's, so that a NAT pool's people pass.
pub(crate) const DEFAULT_NETWORK_RATE: (PrefixLengths, u64, Duration, u64) =
    (PrefixLengths::SUBNET, 200, Duration::from_secs(1), 400);
/// Most network caps a gate takes.
pub(super) const MAX_NETWORK_CAPS: usize = 4;
/// How long an address whose connection was closed mid-head waits before
/// it may connect again, when not configured.
pub(crate) const DEFAULT_SLOW_PENALTY: Duration = Duration::from_secs(5);
/// How often the deadlines are enforced.
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Pause after an accept error such as `EMFILE`, so the loop does not spin
/// while the process is out of descriptors.
pub(super) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

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

pub(super) type VerdictFn = dyn Fn(IpAddr) -> AcceptVerdict + Send + Sync;

/// Refuses connections at accept time by peer address.
///
/// A flood that opens thousands of connections costs a server memory and
/// file descriptors long before any request reaches a rate limiter. The
/// [`Gate`] decides on the peer address alone, right after `accept`:
///
/// 1. the [verdict hook](GateBuilder::verdict) (bans, block and safe lists)
///    may refuse the address or exempt it from every cap below;
/// 2. at most [`max_connections_per_ip`](GateBuilder::max_connections_per_ip)
///    connections open at once from one address, and at most
///    [`max_connections_per_prefix`](GateBuilder::max_connections_per_prefix)
///    from one network (by default 64 per IPv6 /64, 1,024 per IPv4 /24 or
///    IPv6 /48);
/// 3. an address whose connection was closed with a head half sent (the
///    slowloris signature, below) waits out the
///    [`slow_penalty`](GateBuilder::slow_penalty) before it connects again;
/// 4. at most [`new_connections_per_ip`](GateBuilder::new_connections_per_ip)
///    new connections admitted per address, and
///    [`new_connections_per_prefix`](GateBuilder::new_connections_per_prefix)
///    per network, over time (GCRA, bounded tables);
/// 5. the [descriptor budget](GateBuilder::descriptor_budget): at the
///    budget a new connection closes the connection that has waited
///    longest for its request head, else the one idle longest, and is
///    refused only when every open connection is being served.
///
/// Once admitted, a connection is held to [`Deadlines`]: its request head
/// must arrive within 10 seconds (more if it arrives at 500 bytes a second
/// or faster, up to 30), and a keep-alive connection idle for 60 seconds is
/// closed. As open connections pass half the budget the deadlines shrink,
/// to a tenth at the budget. A sweep every quarter second enforces them.
/// Nothing the gate does ever closes a connection whose request head is
/// complete and whose response has not started. The gate follows HTTP/1.x
/// heads and responses; over TLS or HTTP/2 it sees only up to the
/// handshake (the server's own timeouts apply after it;
/// [`serve`](crate::http::gate::serve) sets hyper's header timeout).
///
/// A refused connection is closed with a reset (`SO_LINGER` 0, so no
/// `TIME_WAIT` piles up on the server), counted in [`GateStats`] and logged
/// at `debug`; a connection the gate closes later is counted by reason.
/// One the verdict hook refuses (a banned or blocklisted
/// address) is first held open, unread, for the [`Tarpit`](crate::http::Tarpit)'s hold (one
/// second by default, at most 1,024 at once): a flood tool that reconnects
/// the moment it is reset would otherwise keep the server accepting and
/// resetting as fast as it can; the tarpit never holds more than the
/// budget leaves free. An admitted one becomes a [`GatedStream`](crate::http::GatedStream) that holds
/// its place in the counts until it is dropped.
///
/// Each [`GatedStream`](crate::http::GatedStream) also reads the first request head of its
/// connection as it passes through, without consuming or changing a byte,
/// and keeps its header names in wire order and casing (a [`WireHead`](crate::http::WireHead));
/// [`GateConnectInfo`](crate::http::GateConnectInfo) hands it to handlers for
/// [`Fingerprint`](crate::http::Fingerprint)s.
///
/// ```no_run
/// use std::time::Duration;
/// use floodguard::http::Gate;
/// use tokio::io::AsyncWriteExt;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let gate = Gate::builder()
///     .max_connections_per_ip(16)
///     .new_connections_per_ip(10, Duration::from_secs(1), 20)
///     .build()?;
/// let mut listener = gate.listen(tokio::net::TcpListener::bind("0.0.0.0:8080").await?);
/// loop {
///     let (mut stream, peer) = listener.accept().await?;
///     tokio::spawn(async move {
///         let _ = stream.write_all(format!("hello {peer}\n").as_bytes()).await;
///         // Dropping the stream frees its place in the per-address counts.
///     });
/// }
/// # }
/// ```
///
///
/// Cheap to clone: clones share counts, limiter and stats, so one gate can
/// guard several listeners with shared caps.
///
/// ```
/// use floodguard::ConfigError;
/// use floodguard::http::Gate;
/// let err = Gate::builder().max_connections_per_ip(0).build().unwrap_err();
/// assert_eq!(err, ConfigError::Zero { field: "max_connections_per_ip" });
/// let gate = Gate::builder().build()?;
/// assert_eq!(gate.stats().accepted, 0);
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Gate {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) max_per_ip: u32,
    pub(super) network_caps: Vec<(PrefixLengths, u32)>,
    pub(super) rate: KeyedLimiter<IpAddr>,
    pub(super) network_rate: Option<(PrefixLengths, KeyedLimiter<IpPrefix>)>,
    /// Addresses serving the slow-client penalty: one unit per penalty
    /// period, spent when one of their connections is closed mid-head.
    pub(super) slow: Option<KeyedLimiter<IpAddr>>,
    pub(super) deadlines: Deadlines,
    pub(super) budget: u64,
    pub(super) epoch: Epoch,
    pub(super) verdict: Option<Box<VerdictFn>>,
    pub(super) open: Mutex<Open>,
    pub(super) counters: Counters,
    pub(super) tarpit: TarpitState,
    pub(super) sweeping: AtomicBool,
    /// Over-cap refusals get a minimal HTTP answer instead of a reset.
    pub(super) answer_refusals: bool,
}

/// Open connections per address and per network, and the watched ones.
/// Count entries are removed when they reach zero, so the maps hold only
/// peers with a connection open.
#[derive(Default)]
pub(super) struct Open {
    pub(super) ips: HashMap<IpAddr, u32, ahash::RandomState>,
    /// Keyed by the cap's index too: two caps may share a length.
    pub(super) prefixes: HashMap<(u8, IpPrefix), u32, ahash::RandomState>,
    pub(super) watched: Registry,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) accepted: AtomicU64,
    pub(super) refused_banned: AtomicU64,
    pub(super) refused_per_ip: AtomicU64,
    pub(super) refused_per_prefix: AtomicU64,
    pub(super) refused_rate: AtomicU64,
    pub(super) refused_network_rate: AtomicU64,
    pub(super) refused_slow: AtomicU64,
    pub(super) refused_budget: AtomicU64,
    pub(super) closed_head_timeout: AtomicU64,
    pub(super) closed_idle: AtomicU64,
    pub(super) closed_budget: AtomicU64,
    pub(super) open: AtomicU64,
    /// Closed by the gate, their streams not yet dropped.
    pub(super) dying: AtomicU64,
    pub(super) verdict_panics: AtomicU64,
}

/// A snapshot of a [`Gate`]'s counters since it was built.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
    /// Refused connections held open by the [`Tarpit`](crate::http::Tarpit) before their reset.
    pub tarpit: TarpitStats,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Turned {
    Banned,
    PerIp,
    PerPrefix,
    Rate,
    NetworkRate,
    Slow,
    Budget,
}

impl Turned {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Turned::Banned => "refused by verdict",
            Turned::PerIp => "too many connections from address",
            Turned::PerPrefix => "too many connections from network",
            Turned::Rate => "new connections too fast",
            Turned::NetworkRate => "new connections from network too fast",
            Turned::Slow => "address sent a slow request head",
            Turned::Budget => "descriptor budget spent on requests being served",
        }
    }
}

impl Gate {
    /// Starts a builder with the defaults: 16 connections open per address,
    /// 64 per IPv6 /64 and 1,024 per IPv4 /24 or IPv6 /48; 20 new
    /// connections a second per address (burst 40) and 200 per IPv4 /24 or
    /// IPv6 /64 (burst 400); the default [`Deadlines`]; a descriptor budget
    /// of four fifths of the open-file limit; a 5-second slow-client
    /// penalty; no verdict hook; the default [`Tarpit`](crate::http::Tarpit).
    pub fn builder() -> GateBuilder {
        GateBuilder::new()
    }

    /// Wraps `listener`: its [`accept`](GatedListener::accept) only returns
    /// connections the gate admits.
    pub fn listen(&self, listener: TcpListener) -> GatedListener {
        GatedListener::new(listener, self.clone())
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
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Turned> {
        let verdict = self
            .verdict
            .as_ref()
            .map_or(AcceptVerdict::Normal, |f| self.ask(f, ip));
        let watched = match verdict {
            AcceptVerdict::Refuse => return Err(Turned::Banned),
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
    pub(super) fn admit_counted(&self, ip: IpAddr) -> Result<Counted, Turned> {
        let mut prefixes = [None; MAX_NETWORK_CAPS];
        for (i, &(lengths, _)) in self.network_caps.iter().enumerate() {
            prefixes[i] = Some((i as u8, IpPrefix::of(ip, lengths)));
        }
        // One lock for the checks and the increments, so two listeners
        // sharing the gate cannot both take the last place.
        let mut open = self.open.lock();
        if open.ips.get(&ip).is_some_and(|&n| n >= self.max_per_ip) {
            return Err(Turned::PerIp);
        }
        for (key, &(_, max)) in prefixes.iter().flatten().zip(&self.network_caps) {
            if open.prefixes.get(key).is_some_and(|&n| n >= max) {
                return Err(Turned::PerPrefix);
            }
        }
        if let Some(slow) = &self.slow {
            if slow.peek_at(&ip, 1, slow.now()).is_denied() {
                return Err(Turned::Slow);
            }
        }
        // Charged after the caps: a connection refused for them does not
        // spend the rates.
        if self.rate.check(&ip).is_denied() {
            return Err(Turned::Rate);
        }
        if let Some((lengths, rate)) = &self.network_rate {
            if rate.check(&IpPrefix::of(ip, *lengths)).is_denied() {
                return Err(Turned::NetworkRate);
            }
        }
        let now = self.epoch.now();
        if self.used() >= self.budget {
            // A closed connection keeps its descriptor until its server
            // task drops it, later on a starved runtime: past a tenth of
            // the budget in that state, newcomers wait rather than push
            // the descriptors in use further past the budget.
            if self.counters.dying.load(Relaxed) >= (self.budget / 10).max(1) {
                return Err(Turned::Budget);
            }
            match open.watched.evict(now) {
                Some(kill) => self.closed(kill),
                None => return Err(Turned::Budget),
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
    pub(super) fn used(&self) -> u64 {
        let c = &self.counters;
        c.open.load(Relaxed).saturating_sub(c.dying.load(Relaxed)) + self.tarpit.holding() as u64
    }

    /// Counts a connection the gate closed, and puts an address that
    /// left a head half sent in the penalty box.
    pub(super) fn closed(&self, kill: Kill) {
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
    pub(super) fn sweep(&self) {
        let factor = tightening(self.used(), self.budget);
        let now = self.epoch.now();
        let kills = self.open.lock().watched.sweep(now, &self.deadlines, factor);
        for kill in kills {
            self.closed(kill);
        }
    }

    /// Starts the sweep once per gate, on the runtime of the first
    /// listener polled; it stops when the gate is dropped.
    pub(super) fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Relaxed) {
            return;
        }
        let shared = Arc::downgrade(self);
        tokio::spawn(sweep_loop(shared));
    }

    /// The verdict hook's answer for `ip`. A hook that panics must not
    /// take the accept loop (and every later connection) with it: its
    /// panic is counted and logged, and the connection judged as any other.
    pub(super) fn ask(&self, hook: &VerdictFn, ip: IpAddr) -> AcceptVerdict {
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

    pub(super) fn count_refusal(&self, why: Turned) {
        let c = &self.counters;
        let counter = match why {
            Turned::Banned => &c.refused_banned,
            Turned::PerIp => &c.refused_per_ip,
            Turned::PerPrefix => &c.refused_per_prefix,
            Turned::Rate => &c.refused_rate,
            Turned::NetworkRate => &c.refused_network_rate,
            Turned::Slow => &c.refused_slow,
            Turned::Budget => &c.refused_budget,
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
pub(super) struct Slot {
    pub(super) shared: Arc<Shared>,
    /// `None` for an exempt connection.
    pub(super) watched: Option<Counted>,
}

/// What a counted connection holds: its address's and networks' places
/// and its watch.
pub(super) struct Counted {
    pub(super) ip: IpAddr,
    pub(super) prefixes: [Option<(u8, IpPrefix)>; MAX_NETWORK_CAPS],
    pub(super) index: usize,
    pub(super) watch: Arc<Watch>,
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
pub(super) fn release<K: Hash + Eq>(map: &mut HashMap<K, u32, ahash::RandomState>, key: K) {
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::net::{TcpSocket, TcpStream};

    use super::*;
    use crate::ConfigError;
    use crate::http::identify::wire::{HeadScanner, Scan};

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
            Err(Turned::PerPrefix)
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
            Err(Turned::PerPrefix)
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
            Err(Turned::PerPrefix)
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
            Err(Turned::NetworkRate)
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
            Err(Turned::PerPrefix)
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
        assert!(matches!(gate.shared.admit(v6(8, 3)), Err(Turned::Budget)));
        // The server lets go of one: room again.
        held.remove(0);
        assert!(gate.shared.admit(v6(8, 4)).is_ok());
    }
}
