//! Internals the cargo-fuzz targets in `fuzz/` drive directly: overload
//! admission and its waiting room, the session cookie, and client
//! profiles. Not part of the API: hidden from the docs, and may change at
//! any time.

// Hidden drivers for the fuzz targets, not API: no Debug to keep up.
#![allow(missing_debug_implementations)]

use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use http::request::Parts;
use http::{HeaderMap, HeaderValue};

use crate::http::identify::facts::Facts;
pub use crate::http::identify::forwarded::MAX_HOPS;
pub use crate::http::identify::forwarded::{Hop, parse_forwarded, parse_x_forwarded_for};
use crate::http::identify::session::{self, Presented, SessionCookie};
pub use crate::http::identify::wire::{MAX_HEAD_BYTES, MAX_HEADER_LINES};
use crate::http::overload::shedder;
use crate::http::scoring::profile;
use crate::http::{LimitStats, Overload, Priority};
use crate::{ConfigError, Timestamp};

/// A guard's overload state: its adaptive limits and waiting rooms.
pub struct Shedder(shedder::Shedder);

/// A place in a limit, now or after a wait.
pub enum Place {
    /// Taken.
    Now(Permit),
    /// Waiting in the limit's room.
    Wait(Ticket),
}

/// A request's place in a limit; given back when answered or dropped.
pub struct Permit(shedder::Permit);

/// A request waiting for a place.
pub struct Ticket(shedder::Ticket);

impl Shedder {
    /// Overload protection as a guard builds it.
    pub fn new(config: Overload) -> Result<Self, ConfigError> {
        shedder::Shedder::new(config).map(Shedder)
    }

    /// Admits a request on `route` from a client of `standing` (−2 to
    /// +2), makes it wait, or sheds it (`Err`, with its priority). Needs a
    /// Tokio runtime with time enabled: a wait has a deadline.
    pub fn acquire(&self, parts: &Parts, route: &str, standing: i8) -> Result<Place, Priority> {
        let mut facts = Facts::new(parts, Timestamp::from_nanos(0));
        facts.route = route;
        facts.route_matched = crate::http::identify::peer::route(parts).1;
        self.0.acquire(&facts, standing).map(|p| match p {
            shedder::Place::Now(p) => Place::Now(Permit(p)),
            shedder::Place::Wait(t) => Place::Wait(Ticket(t)),
        })
    }

    /// Every limit's counters, the service's first.
    pub fn stats(&self) -> Vec<LimitStats> {
        self.0.stats()
    }
}

impl Permit {
    /// The answer came: the latency sample (on Tokio's clock) adapts the
    /// limit, and the place is given back.
    pub fn answered(self) -> Duration {
        self.0.answered()
    }
}

impl Ticket {
    /// The place, once given (`Some`), or `None` when the wait timed out or
    /// the request was turned away for a higher priority.
    pub fn poll_place(&mut self, cx: &mut Context<'_>) -> Poll<Option<Permit>> {
        self.0.poll_place(cx).map(|p| p.map(Permit))
    }
}

/// A [`SessionCookie`] ready for requests.
pub struct Session(session::Session);

impl Session {
    /// The cookie's settings checked, with `base` the guard clock's reading
    /// now.
    pub fn new(cookie: SessionCookie, base: Timestamp) -> Result<Self, ConfigError> {
        cookie.compile(base).map(Session)
    }

    /// The `Set-Cookie` header a guard sends a client at `ip`.
    pub fn set_cookie(&self, ip: IpAddr, now: Timestamp) -> HeaderValue {
        self.0.set_cookie(ip, now)
    }

    /// What the `Cookie` headers show for a client at `ip`: `None`, no
    /// cookie of the name; `Some(valid)` otherwise.
    pub fn check(&self, headers: &HeaderMap, ip: IpAddr, now: Timestamp) -> Option<bool> {
        match self.0.check(headers, ip, now) {
            Presented::Absent => None,
            Presented::Valid => Some(true),
            Presented::Invalid => Some(false),
        }
    }
}

/// One client's profile as scoring reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// One bit per route bucket seen.
    pub routes: u16,
    /// Requests seen, saturating at 255.
    pub requests: u8,
    /// The session cookie was sent.
    pub issued: bool,
    /// Requests without the cookie since, up to 3.
    pub session_misses: u8,
    /// The busy period it came in.
    pub joined: u8,
}

impl From<profile::Profile> for Profile {
    fn from(p: profile::Profile) -> Self {
        Profile {
            routes: p.routes,
            requests: p.requests,
            issued: p.session & 0x80 != 0,
            session_misses: p.session_misses(),
            joined: p.joined,
        }
    }
}

/// Client profiles, one word each.
pub struct ProfileTable(profile::ProfileTable);

impl ProfileTable {
    /// A table for `capacity` clients.
    pub fn new(capacity: usize) -> Result<Self, ConfigError> {
        profile::ProfileTable::new(capacity).map(ProfileTable)
    }

    /// A request of client `key` to the route hashed `route_hash`, showing
    /// the session cookie (`None`: not looked at; `Some(None)`: absent;
    /// `Some(Some(valid))`), in busy period `busy_stamp`: the profile
    /// before (`None`: new or forgotten) and after.
    pub fn visit(
        &self,
        key: u64,
        route_hash: u64,
        session: Option<Option<bool>>,
        busy_stamp: u8,
        now: Timestamp,
    ) -> (Option<Profile>, Profile) {
        let session = session.map(|s| match s {
            None => Presented::Absent,
            Some(true) => Presented::Valid,
            Some(false) => Presented::Invalid,
        });
        let (before, after) = self.0.visit(key, route_hash, session, busy_stamp, now);
        (before.map(Profile::from), after.into())
    }

    /// The session cookie was sent to client `key`.
    pub fn session_issued(&self, key: u64, now: Timestamp) {
        self.0.session_issued(key, now);
    }

    /// The bit `route_hash` sets in [`Profile::routes`].
    pub fn route_bit(route_hash: u64) -> u16 {
        profile::route_bit(route_hash)
    }
}

/// The gate's stream path: a connection's bytes through its deadline
/// tracker, in order (`true`: the client's, as the stream reads them;
/// `false`: the server's, as it writes them). Returns whether the tracker
/// ended in the request phase (a head complete, no answer since), and
/// whether it stopped following the connection (an upgrade, HTTP/2, or a
/// handshake that was not HTTP/1).
pub fn gate_stream(events: &[(bool, &[u8])]) -> (bool, bool) {
    crate::http::gate::tracker::drive(events)
}
