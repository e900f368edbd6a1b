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
//!    connections open at once from one address, and optionally at most
//!    [`max_connections_per_prefix`](GateBuilder::max_connections_per_prefix)
//!    from one network;
//! 3. at most [`new_connections_per_ip`](GateBuilder::new_connections_per_ip)
//!    new connections admitted per address over time (GCRA, bounded table).
//!
//! A refused connection is closed with a reset (`SO_LINGER` 0, so no
//! `TIME_WAIT` piles up on the server), counted in [`GateStats`] and logged
//! at `debug`. One the verdict hook refuses (a banned or blocklisted
//! address) is first held open, unread, for the [`Tarpit`]'s hold (one
//! second by default, at most 1,024 at once): a flood tool that reconnects
//! the moment it is reset would otherwise keep the server accepting and
//! resetting as fast as it can. An admitted one becomes a [`GatedStream`] that holds its
//! place in the counts until it is dropped.
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
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use parking_lot::Mutex;

use super::tarpit::{Tarpit, TarpitState, TarpitStats};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use super::wire::{HeadScanner, Scan, WireHead};
use crate::ip::{PrefixLengths, canonical};
use crate::{ConfigError, DEFAULT_CAPACITY, IpPrefix, KeyedLimiter};

/// Concurrent connections from one address when not configured.
const DEFAULT_MAX_PER_IP: u32 = 16;
/// New connections per second from one address when not configured.
const DEFAULT_RATE: (u64, Duration, u64) = (20, Duration::from_secs(1), 40);
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
    per_prefix: Option<(PrefixLengths, u32)>,
    rate: KeyedLimiter<IpAddr>,
    verdict: Option<Box<VerdictFn>>,
    open: Mutex<OpenCounts>,
    counters: Counters,
    tarpit: TarpitState,
}

/// Open connections per address and per prefix. Entries are removed when
/// they reach zero, so the maps hold only peers with a connection open.
#[derive(Default)]
struct OpenCounts {
    ips: HashMap<IpAddr, u32, ahash::RandomState>,
    prefixes: HashMap<IpPrefix, u32, ahash::RandomState>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused_banned: AtomicU64,
    refused_per_ip: AtomicU64,
    refused_per_prefix: AtomicU64,
    refused_rate: AtomicU64,
    open: AtomicU64,
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
    /// Refused because the address's network had its maximum open.
    pub refused_per_prefix: u64,
    /// Refused by the new-connection rate.
    pub refused_rate: u64,
    /// Admitted connections open now (streams not yet dropped).
    pub open: u64,
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
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Banned => "refused by verdict",
            Refusal::PerIp => "too many connections from address",
            Refusal::PerPrefix => "too many connections from network",
            Refusal::Rate => "new connections too fast",
        }
    }
}

impl Gate {
    /// Starts a builder with the defaults: 16 connections open per address,
    /// no per-network cap, 20 new connections a second per address with a
    /// burst of 40, no verdict hook, the default [`Tarpit`].
    pub fn builder() -> GateBuilder {
        GateBuilder {
            max_per_ip: DEFAULT_MAX_PER_IP,
            per_prefix: None,
            rate: DEFAULT_RATE,
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
            open: c.open.load(Relaxed),
            verdict_panics: c.verdict_panics.load(Relaxed),
            tarpit: self.shared.tarpit.stats(),
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("Gate")
            .field("max_connections_per_ip", &s.max_per_ip)
            .field("max_connections_per_prefix", &s.per_prefix)
            .field("new_connections_per_ip", s.rate.algorithm())
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
        let counted = match verdict {
            AcceptVerdict::Refuse => return Err(Refusal::Banned),
            AcceptVerdict::Exempt => None,
            AcceptVerdict::Normal => {
                let prefix = self
                    .per_prefix
                    .map(|(lengths, max)| (IpPrefix::of(ip, lengths), max));
                // One lock for the check and the increment, so two listeners
                // sharing the gate cannot both take the last place.
                let mut open = self.open.lock();
                if open.ips.get(&ip).is_some_and(|&n| n >= self.max_per_ip) {
                    return Err(Refusal::PerIp);
                }
                if let Some((p, max)) = prefix {
                    if open.prefixes.get(&p).is_some_and(|&n| n >= max) {
                        return Err(Refusal::PerPrefix);
                    }
                }
                // Charged last: a connection refused for the caps does not
                // spend the address's rate.
                if self.rate.check(&ip).is_denied() {
                    return Err(Refusal::Rate);
                }
                *open.ips.entry(ip).or_insert(0) += 1;
                if let Some((p, _)) = prefix {
                    *open.prefixes.entry(p).or_insert(0) += 1;
                }
                Some((ip, prefix.map(|(p, _)| p)))
            }
        };
        self.counters.accepted.fetch_add(1, Relaxed);
        self.counters.open.fetch_add(1, Relaxed);
        Ok(Slot {
            shared: Arc::clone(self),
            counted,
        })
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
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// An admitted connection's place in the counts, given back on drop.
struct Slot {
    shared: Arc<Shared>,
    /// The address and network counted; `None` for an exempt connection.
    counted: Option<(IpAddr, Option<IpPrefix>)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((ip, prefix)) = self.counted {
            let mut open = self.shared.open.lock();
            release(&mut open.ips, ip);
            if let Some(p) = prefix {
                release(&mut open.prefixes, p);
            }
        }
        self.shared.counters.open.fetch_sub(1, Relaxed);
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
    per_prefix: Option<(PrefixLengths, u32)>,
    rate: (u64, Duration, u64),
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
    /// the address at `lengths` (default: no such cap).
    pub fn max_connections_per_prefix(mut self, lengths: PrefixLengths, n: u32) -> Self {
        self.per_prefix = Some((lengths, n));
        self
    }

    /// At most `rate` new connections per `per` admitted from one address
    /// on average, `burst` at once (GCRA; default 20 a second, burst 40).
    /// Only admitted connections are charged.
    pub fn new_connections_per_ip(mut self, rate: u64, per: Duration, burst: u64) -> Self {
        self.rate = (rate, per, burst);
        self
    }

    /// Addresses the new-connection rate tracks at once (16 bytes each;
    /// default [`DEFAULT_CAPACITY`]).
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

    /// Checks every field and builds the gate. Zero caps are refused with
    /// [`ConfigError::Zero`]; the rate reports its fields as
    /// [`KeyedLimiter`]'s builder does (`rate`, `period`, `burst`,
    /// `capacity`).
    pub fn build(self) -> Result<Gate, ConfigError> {
        if self.max_per_ip == 0 {
            return Err(ConfigError::Zero {
                field: "max_connections_per_ip",
            });
        }
        if let Some((_, 0)) = self.per_prefix {
            return Err(ConfigError::Zero {
                field: "max_connections_per_prefix",
            });
        }
        let (rate, per, burst) = self.rate;
        let rate = KeyedLimiter::<IpAddr>::builder()
            .gcra(rate, per)
            .burst(burst)
            .capacity(self.capacity)
            .build()?;
        Ok(Gate {
            shared: Arc::new(Shared {
                max_per_ip: self.max_per_ip,
                per_prefix: self.per_prefix,
                rate,
                verdict: self.verdict,
                open: Mutex::default(),
                counters: Counters::default(),
                tarpit: TarpitState::new(self.tarpit),
            }),
        })
    }
}

impl fmt::Debug for GateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateBuilder")
            .field("max_connections_per_ip", &self.max_per_ip)
            .field("max_connections_per_prefix", &self.per_prefix)
            .field("new_connections_per_ip", &self.rate)
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
        loop {
            if let Some(sleep) = self.backoff.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.backoff = None;
            }
            match ready!(self.listener.poll_accept(cx)) {
                Ok((stream, peer)) => match self.gate.shared.admit(canonical(peer.ip())) {
                    Ok(slot) => {
                        return Poll::Ready((GatedStream::new(stream, peer, slot), peer));
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
        let held = match why {
            Refusal::Banned => self.gate.shared.tarpit.hold(),
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
    /// keeps its [`WireHead`] for [`connect_info`](Self::connect_info);
    /// then it stops looking. Nothing is consumed or changed.
    pub struct GatedStream {
        #[pin]
        inner: TcpStream,
        peer: SocketAddr,
        // `None` once the first head is read, or given up on.
        scanner: Option<HeadScanner>,
        head: Arc<OnceLock<WireHead>>,
        _slot: Slot,
    }
}

impl GatedStream {
    fn new(inner: TcpStream, peer: SocketAddr, slot: Slot) -> Self {
        GatedStream {
            inner,
            peer,
            scanner: Some(HeadScanner::new()),
            head: Arc::new(OnceLock::new()),
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
        let this = self.project();
        if this.scanner.is_none() {
            return this.inner.poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let res = ready!(this.inner.poll_read(cx, buf));
        if res.is_ok() {
            // Before returning: the server parses these bytes only after
            // this read, so the head is known by the time it dispatches.
            let read = buf.filled().get(before..).unwrap_or_default();
            scan(this.scanner, this.head, read);
        }
        Poll::Ready(res)
    }
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
        self.project().inner.poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
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
}
