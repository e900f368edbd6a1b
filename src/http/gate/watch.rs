//! The gate's watch over the connections it admitted: where each one is in
//! its request cycle, the deadlines that follow from that, and the
//! descriptor budget that tightens them.
//!
//! A connection moves through four phases as its bytes pass the
//! [`GatedStream`](crate::http::GatedStream):
//!
//! * *fresh*: accepted, its first request head not yet complete;
//! * *request*: a head is complete and its response has not started (the
//!   request is being served), or the connection is not HTTP/1 and has
//!   passed its handshake, or was upgraded (WebSocket);
//! * *idle*: a response has started; waiting for the next head (keep-alive);
//! * *next*: the next head is arriving.
//!
//! A head must be complete within [`Deadlines`]' head time of its start,
//! extended by the bytes received at the minimum rate; an idle connection
//! is closed after the keep-alive time without a byte either way. As the
//! open connections pass half the descriptor budget every deadline shrinks,
//! to a tenth at the budget. At the budget a new connection closes the
//! connection that has waited longest for a head, else the one idle
//! longest. Nothing ever closes a connection in the request phase.
//!
//! The tracker reads heads, not bodies: any write the server makes ends
//! the request phase (a pipelined response can start in the middle of a
//! write), so a pipelined request whose answer takes longer than the
//! keep-alive time may be closed. Browsers do not pipeline. Over TLS or
//! HTTP/2 it sees only up to the handshake; a request body is never
//! timed (the server's own body timeouts apply).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::task::{Context, Waker};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::http::Deadlines;
use crate::http::millis::millis_since;

/// Where a connection is in its request cycle; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Fresh,
    Request,
    Idle,
    Next,
    /// Closed by the gate; the stream fails its next read or write.
    Killed,
    /// The stream was dropped.
    Closed,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Fresh,
        Phase::Request,
        Phase::Idle,
        Phase::Next,
        Phase::Killed,
        Phase::Closed,
    ];

    /// Waiting for a head: the phases a slow client sits in.
    fn awaits_head(self) -> bool {
        matches!(self, Phase::Fresh | Phase::Next)
    }
}

/// Phase in the top 3 bits, milliseconds since the watches' epoch (when
/// the phase began) in the other 61: 73 million years, so a stamp never
/// wraps.
pub(super) const PHASE_SHIFT: u32 = 61;
pub(super) const STAMP_MASK: u64 = (1 << PHASE_SHIFT) - 1;

pub(super) fn pack(phase: Phase, stamp: u64) -> u64 {
    (phase as u64) << PHASE_SHIFT | (stamp & STAMP_MASK)
}

pub(super) fn unpack(word: u64) -> (Phase, u64) {
    let phase = Phase::ALL[(word >> PHASE_SHIFT) as usize % Phase::ALL.len()];
    (phase, word & STAMP_MASK)
}

/// One admitted connection as the gate watches it; shared by its stream and
/// the gate's registry.
#[derive(Debug)]
pub(crate) struct Watch {
    pub(super) state: AtomicU64,
    /// Bytes of the unfinished head so far, for the minimum rate.
    head_bytes: AtomicU32,
    /// The connection task's waker, to deliver a close to a stream that
    /// waits for bytes.
    waker: Mutex<Option<Waker>>,
    ip: IpAddr,
}

impl Watch {
    pub(crate) fn new(ip: IpAddr, now: u64) -> Self {
        Watch {
            state: AtomicU64::new(pack(Phase::Fresh, now)),
            head_bytes: AtomicU32::new(0),
            waker: Mutex::new(None),
            ip,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        unpack(self.state.load(Acquire)).0
    }

    /// Moves to `phase` stamped `now`, unless the gate closed the
    /// connection meanwhile (that stays). `head_bytes` starts the new
    /// phase's count.
    pub(crate) fn enter(&self, phase: Phase, now: u64, head_bytes: u32) {
        self.head_bytes.store(head_bytes, Relaxed);
        let _ = self.state.fetch_update(AcqRel, Acquire, |w| {
            matches!(
                unpack(w).0,
                Phase::Fresh | Phase::Request | Phase::Idle | Phase::Next
            )
            .then_some(pack(phase, now))
        });
    }

    /// Counts `n` more bytes of the head under way.
    pub(crate) fn add_head_bytes(&self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let _ = self
            .head_bytes
            .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_add(n)));
    }

    /// Whether the gate has closed this connection; otherwise keeps
    /// `cx`'s waker so that a close wakes the task.
    pub(crate) fn killed_or_register(&self, cx: &Context<'_>) -> bool {
        if self.phase() == Phase::Killed {
            return true;
        }
        {
            let mut w = self.waker.lock();
            match w.as_ref() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        // A close between the check and the registration found no waker.
        self.phase() == Phase::Killed
    }

    /// The stream is gone. Returns whether the gate had closed it.
    pub(crate) fn close(&self) -> bool {
        let before = self.state.swap(pack(Phase::Closed, 0), AcqRel);
        unpack(before).0 == Phase::Killed
    }

    /// Closes the connection if it is still in the state `seen`; returns
    /// whether it did, and then wakes its task.
    fn kill(&self, seen: u64) -> bool {
        if self
            .state
            .compare_exchange(seen, pack(Phase::Killed, 0), AcqRel, Acquire)
            .is_err()
        {
            return false;
        }
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
        true
    }
}

/// Why the gate closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Its head did not arrive in time.
    HeadTimeout,
    /// Idle past the keep-alive time.
    Idle,
    /// Closed to make room under the descriptor budget.
    Budget,
}

/// A connection the gate closed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kill {
    pub(crate) why: Closed,
    pub(crate) ip: IpAddr,
    /// It had sent part of a head and not finished it: the slowloris
    /// signature, which earns its address the slow-client penalty. A
    /// connection that sent nothing may be a browser's preconnect.
    pub(crate) partial_head: bool,
}

/// The admitted connections being watched: a slab, and the worst of them
/// ordered for closing when the budget is full.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    slots: Vec<Option<Arc<Watch>>>,
    free: Vec<usize>,
    /// Candidates for closing, best candidate last, with the state each
    /// was in when listed: one still in that state is closed.
    victims: Vec<(Arc<Watch>, u64)>,
    listed_at: Option<u64>,
}

/// The shortest time between two listings of victims at accept.
pub(super) const RELIST_MS: u64 = 10;

impl Registry {
    pub(crate) fn insert(&mut self, watch: Arc<Watch>) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(watch);
                i
            }
            None => {
                self.slots.push(Some(watch));
                self.slots.len() - 1
            }
        }
    }

    pub(crate) fn remove(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = None;
            self.free.push(i);
        }
    }

    /// Closes every watched connection past its deadline under
    /// `deadlines` shrunk by `factor`; returns them.
    pub(crate) fn sweep(&mut self, now: u64, deadlines: &Deadlines, factor: f64) -> Vec<Kill> {
        let mut kills = Vec::new();
        for w in self.slots.iter().flatten() {
            let seen = w.state.load(Acquire);
            let (phase, stamp) = unpack(seen);
            let allowance = match phase {
                Phase::Fresh | Phase::Next => deadlines.head_allowance(w.head_bytes.load(Relaxed)),
                Phase::Idle => deadlines.keep_alive,
                _ => None,
            };
            let Some(allowance) = allowance else { continue };
            let allowed = (allowance.as_millis() as f64 * factor) as u64;
            if now.saturating_sub(stamp) > allowed {
                let why = if phase == Phase::Idle {
                    Closed::Idle
                } else {
                    Closed::HeadTimeout
                };
                if let Some(k) = kill(w, seen, why) {
                    kills.push(k);
                }
            }
        }
        kills
    }

    /// Closes the connection that has waited longest for a head, else the
    /// one idle longest; `None` when every connection is being served.
    pub(crate) fn evict(&mut self, now: u64) -> Option<Kill> {
        loop {
            if let Some((w, seen)) = self.victims.pop() {
                if let Some(k) = kill(&w, seen, Closed::Budget) {
                    return Some(k);
                }
                continue;
            }
            if self.listed_at.is_some_and(|t| now < t + RELIST_MS) {
                return None;
            }
            self.list_victims(now);
            if self.victims.is_empty() {
                return None;
            }
        }
    }

    /// Lists the connections that may be closed for room: waiting for a
    /// head before idle ones, and within each the oldest first.
    fn list_victims(&mut self, now: u64) {
        self.listed_at = Some(now);
        self.victims.clear();
        for w in self.slots.iter().flatten() {
            let seen = w.state.load(Acquire);
            if matches!(unpack(seen).0, Phase::Fresh | Phase::Next | Phase::Idle) {
                self.victims.push((Arc::clone(w), seen));
            }
        }
        // Best candidate last, for `pop`.
        self.victims.sort_unstable_by_key(|&(_, seen)| {
            let (phase, stamp) = unpack(seen);
            std::cmp::Reverse((phase == Phase::Idle, stamp))
        });
    }

    /// Connections being watched.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

fn kill(w: &Watch, seen: u64, why: Closed) -> Option<Kill> {
    let phase = unpack(seen).0;
    let partial_head = phase.awaits_head() && w.head_bytes.load(Relaxed) > 0;
    w.kill(seen).then_some(Kill {
        why,
        ip: w.ip,
        partial_head,
    })
}

/// How much the deadlines shrink with `used` of `budget` descriptors in
/// use: not at all up to half, then linearly to a tenth at the budget.
pub(crate) fn tightening(used: u64, budget: u64) -> f64 {
    let p = used as f64 / budget.max(1) as f64;
    if p <= 0.5 {
        1.0
    } else {
        1.0 - 0.9 * ((p - 0.5) / 0.5).min(1.0)
    }
}

/// Milliseconds on the watches' clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    pub(crate) fn new() -> Self {
        Epoch(Instant::now())
    }

    pub(crate) fn now(&self) -> u64 {
        millis_since(self.0, Instant::now())
    }
}

/// The descriptor budget when none is set: four fifths of the process's
/// open-file limit, leaving the rest for files, upstream connections and
/// the tarpit's holds.
pub(crate) fn default_budget() -> u64 {
    nofile_limit().map_or(FALLBACK_BUDGET, |n| (n / 5 * 4).max(64))
}

/// Where the open-file limit cannot be read.
const FALLBACK_BUDGET: u64 = 8_192;

#[cfg(target_os = "linux")]
fn nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a pointer to a live,
    // properly aligned value, and reads nothing else.
    #[allow(unsafe_code)]
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

#[cfg(not(target_os = "linux"))]
fn nofile_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::http::gate::tracker::{HeadEnd, Kind, Tracker, is_token};

    fn ip() -> IpAddr {
        "192.0.2.7".parse().unwrap()
    }

    fn watch_at(now: u64) -> Arc<Watch> {
        Arc::new(Watch::new(ip(), now))
    }

    #[test]
    fn a_head_ends_at_its_empty_line_however_the_reads_split_it() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
        for split in 0..head.len() {
            let mut end = HeadEnd::default();
            let (a, b) = head.split_at(split);
            assert!(
                !end.feed(a) || split == head.len(),
                "ended early at {split}"
            );
            assert!(
                end.feed(b) || split == head.len(),
                "missed the end at {split}"
            );
        }
        // Byte by byte, the end is the last byte.
        let mut end = HeadEnd::default();
        let ends: Vec<bool> = head.iter().map(|b| end.feed(&[*b])).collect();
        assert_eq!(ends.iter().position(|&e| e), Some(head.len() - 1));
    }

    #[test]
    fn bare_line_feeds_end_a_head_and_leading_empty_lines_do_not() {
        assert!(HeadEnd::default().feed(b"GET / HTTP/1.0\nHost: a\n\n"));
        // httparse skips empty lines before the request line.
        assert!(!HeadEnd::default().feed(b"\r\n\r\n\r\n"));
        let mut end = HeadEnd::default();
        assert!(!end.feed(b"\r\n\r\nGET / HTTP/1.1\r\n"));
        assert!(end.feed(b"\r\n"));
        // A slowloris line a second never ends it.
        let mut end = HeadEnd::default();
        assert!(!end.feed(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        for i in 0..100 {
            assert!(!end.feed(format!("X-a-{i}: b\r\n").as_bytes()));
        }
    }

    #[test]
    fn a_keep_alive_cycle_moves_through_every_phase() {
        let epoch = Epoch::new();
        let w = watch_at(epoch.now());
        let mut t = Tracker::new(Arc::clone(&w), epoch);
        t.on_read(b"GET / HTTP/1.1\r\nHost: a\r\n");
        assert_eq!(w.phase(), Phase::Fresh);
        assert_eq!(w.head_bytes.load(Relaxed), 25);
        t.on_read(b"\r\n");
        assert_eq!(w.phase(), Phase::Request);
        t.on_write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(w.phase(), Phase::Idle);
        t.on_read(b"GET /b HTTP/1.1\r\n");
        assert_eq!(w.phase(), Phase::Next);
        t.on_read(b"Host: a\r\n\r\n");
        assert_eq!(w.phase(), Phase::Request);
        // 100 Continue keeps the request phase for the body.
        t.on_write(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(w.phase(), Phase::Request);
        // A body read in the request phase changes nothing.
        t.on_read(b"{\"a\":1}");
        assert_eq!(w.phase(), Phase::Request);
        t.on_write(b"HTTP/1.1 201 Created\r\n\r\n");
        assert_eq!(w.phase(), Phase::Idle);
        // A pipelined head completes while the last response is still
        // being written: the next write is body bytes, and still ends the
        // request phase (no write buys an untracked connection).
        t.on_read(b"GET /c HTTP/1.1\r\n\r\n");
        assert_eq!(w.phase(), Phase::Request);
        t.on_write(b"...the rest of the last body...");
        assert_eq!(w.phase(), Phase::Idle);
        t.on_read(b"GET /d HTTP/1.1\r\n");
        assert_eq!(w.phase(), Phase::Next);
    }

    #[test]
    fn a_made_up_method_is_followed_as_http1() {
        // Answered by the server like any request: classing it as opaque
        // would leave the rest of the connection untracked.
        let epoch = Epoch::new();
        let w = watch_at(0);
        let mut t = Tracker::new(Arc::clone(&w), epoch);
        t.on_read(b"1GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        t.on_write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        t.on_read(b"GET / HTTP/1.1\r\n");
        assert_eq!(w.phase(), Phase::Next, "the next head is on the clock");
        assert!(is_token(b'~') && !is_token(0x16) && !is_token(b' ') && !is_token(b'('));
    }

    #[test]
    fn upgrades_tls_and_http2_are_left_alone_after_their_start() {
        let epoch = Epoch::new();
        // WebSocket: after the 101 nothing moves.
        let w = watch_at(0);
        let mut t = Tracker::new(Arc::clone(&w), epoch);
        t.on_read(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        t.on_write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        t.on_read(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o']);
        t.on_write(&[0x81, 0x02, b'h', b'i']);
        assert_eq!(w.phase(), Phase::Request);
        // TLS: watched until the server's first answer.
        let w = watch_at(0);
        let mut t = Tracker::new(Arc::clone(&w), epoch);
        t.on_read(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        assert_eq!((w.phase(), w.head_bytes.load(Relaxed)), (Phase::Fresh, 5));
        t.on_write(&[0x16, 0x03, 0x03]);
        t.on_read(&[0x17; 40]);
        t.on_write(&[0x17; 40]);
        assert_eq!(w.phase(), Phase::Request);
        // HTTP/2 with prior knowledge: the preface looks like a head, and
        // the first frame out is no HTTP/1 response.
        let w = watch_at(0);
        let mut t = Tracker::new(Arc::clone(&w), epoch);
        t.on_write(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS before any byte in
        assert_eq!(w.phase(), Phase::Fresh);
        t.on_read(b"PRI * HTT");
        t.on_read(b"P/2.0\r\n\r\nSM\r\n\r\n");
        t.on_write(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
        t.on_read(&[0, 0, 5, 1, 4, 0, 0, 0, 1, 0x82, 0x84, 0x86, 0x41, 0x8a]);
        assert_eq!(w.phase(), Phase::Request);
        assert_eq!(t.kind, Kind::Done);
    }

    #[test]
    fn the_sweep_closes_late_heads_and_idle_connections_only() {
        let d = Deadlines::default()
            .head(Duration::from_secs(10))
            .min_rate(500, Duration::from_secs(30))
            .keep_alive(Duration::from_secs(60));
        // Past 2^40 ms of process age, stamps still compare right.
        let t0 = (1u64 << 40) + 12_345;
        let mut r = Registry::default();
        let silent = watch_at(t0);
        let trickling = watch_at(t0);
        trickling.add_head_bytes(1_000); // two more seconds
        let serving = watch_at(t0);
        serving.enter(Phase::Request, t0, 0);
        let idle = watch_at(t0);
        idle.enter(Phase::Idle, t0, 0);
        for w in [&silent, &trickling, &serving, &idle] {
            r.insert(Arc::clone(w));
        }
        assert!(r.sweep(t0 + 10_000, &d, 1.0).is_empty());
        let kills = r.sweep(t0 + 10_001, &d, 1.0);
        assert_eq!(kills.len(), 1);
        assert_eq!(kills[0].why, Closed::HeadTimeout);
        assert!(!kills[0].partial_head, "it sent nothing");
        assert_eq!(silent.phase(), Phase::Killed);
        let kills = r.sweep(t0 + 12_001, &d, 1.0);
        assert_eq!((kills.len(), kills[0].partial_head), (1, true));
        assert_eq!(trickling.phase(), Phase::Killed);
        // At the budget, a tenth of each deadline.
        let kills = r.sweep(t0 + 6_001, &d, 0.1);
        assert_eq!(kills.len(), 1);
        assert_eq!(kills[0].why, Closed::Idle);
        assert!(r.sweep(u64::MAX >> 3, &d, 1.0).is_empty(), "being served");
        assert_eq!(serving.phase(), Phase::Request);
    }

    #[test]
    fn eviction_takes_the_oldest_waiting_for_a_head_then_the_longest_idle() {
        let mut r = Registry::default();
        let t0 = (1u64 << 32) + 7;
        let idle_old = watch_at(t0);
        idle_old.enter(Phase::Idle, t0, 0);
        let serving = watch_at(t0);
        serving.enter(Phase::Request, t0, 0);
        let fresh_new = watch_at(t0 + 500);
        let fresh_old = watch_at(t0 + 100);
        let idle_new = watch_at(t0);
        idle_new.enter(Phase::Idle, t0 + 50, 0);
        for w in [&idle_old, &serving, &fresh_new, &fresh_old, &idle_new] {
            r.insert(Arc::clone(w));
        }
        for (i, expected) in [&fresh_old, &fresh_new, &idle_old, &idle_new]
            .iter()
            .enumerate()
        {
            let kill = r.evict(t0 + 1_000).unwrap();
            assert_eq!(kill.why, Closed::Budget);
            assert_eq!(expected.phase(), Phase::Killed, "eviction {i}");
        }
        assert_eq!(serving.phase(), Phase::Request);
        assert!(r.evict(t0 + 2_000).is_none(), "never one being served");
    }

    #[test]
    fn a_connection_that_moved_on_is_not_closed_by_a_stale_listing() {
        let mut r = Registry::default();
        let w = watch_at(0);
        r.insert(Arc::clone(&w));
        r.list_victims(0);
        // Its head completes after the listing.
        w.enter(Phase::Request, 5, 0);
        assert!(r.evict(5).is_none());
        assert_eq!(w.phase(), Phase::Request);
        // A closed stream is not closed again.
        let w = watch_at(0);
        r.insert(Arc::clone(&w));
        r.list_victims(100);
        assert!(!w.close());
        assert!(r.evict(100).is_none());
    }

    #[test]
    fn deadlines_tighten_past_half_the_budget() {
        assert_eq!(tightening(0, 100), 1.0);
        assert_eq!(tightening(50, 100), 1.0);
        assert!((tightening(75, 100) - 0.55).abs() < 1e-9);
        assert!((tightening(100, 100) - 0.1).abs() < 1e-9);
        assert!((tightening(1_000, 100) - 0.1).abs() < 1e-9);
        assert_eq!(tightening(0, 0), 1.0);
    }

    #[test]
    fn the_minimum_rate_extends_a_head_up_to_its_cap() {
        let d = Deadlines::default();
        assert_eq!(d.head_allowance(0), Some(Duration::from_secs(10)));
        assert_eq!(d.head_allowance(2_500), Some(Duration::from_secs(15)));
        assert_eq!(d.head_allowance(u32::MAX), Some(Duration::from_secs(30)));
        assert_eq!(Deadlines::off().head_allowance(100), None);
        let flat = Deadlines::default().min_rate(0, Duration::ZERO);
        assert_eq!(flat.head_allowance(1 << 20), Some(Duration::from_secs(10)));
    }

    #[test]
    fn packed_stamps_round_trip_at_any_age() {
        for stamp in [0, 1 << 32, (1 << 40) + 3, STAMP_MASK] {
            for phase in Phase::ALL {
                assert_eq!(unpack(pack(phase, stamp)), (phase, stamp));
            }
        }
    }

    #[test]
    fn the_default_budget_is_four_fifths_of_the_open_file_limit() {
        let b = default_budget();
        match nofile_limit() {
            Some(n) => assert_eq!(b, (n / 5 * 4).max(64)),
            None => assert_eq!(b, FALLBACK_BUDGET),
        }
    }
}
