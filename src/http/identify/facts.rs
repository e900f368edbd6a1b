//! A request's facts, read once at the front of the guard's pipeline and
//! handed to the rules, scoring and overload instead of the raw request:
//! the peer and the client address (whichever transport recorded them),
//! the route, the session cookie, and how the request is built.
//!
//! The pipeline fills them in stages, cheapest first, so that a request
//! refused early (no peer, a banned client) costs no header pass: the
//! client first, then the route and the cookie, then the look (only with
//! scoring on), which scoring takes as the request's look.

use std::net::IpAddr;

use http::request::Parts;

use crate::Timestamp;
use crate::http::identify::client_ip::ClientIp;
use crate::http::identify::fingerprint::{RequestLook, look, secure_by_itself};
use crate::http::identify::peer::{Peer, peer, route};
use crate::http::identify::session::Presented;

/// What the guard knows about one request.
pub(crate) struct Facts<'a> {
    /// The request itself, for header-keyed rules and the user's closures
    /// (custom keys, criticality, the challenge hook).
    pub(crate) parts: &'a Parts,
    /// When the request was decided, on the guard's clock.
    pub(crate) now: Timestamp,
    /// The TCP peer, from whichever connect info the server recorded.
    pub(crate) peer: Option<Peer<'a>>,
    /// The client address and where it came from; `None` without a peer.
    pub(crate) client: Option<ClientIp>,
    /// The route: axum's matched pattern, else the path; empty when no
    /// rule, scoring or route limit needs it.
    pub(crate) route: &'a str,
    /// Whether `route` is one of the application's routes (a bounded set)
    /// rather than a path the client chose.
    pub(crate) route_matched: bool,
    /// What the request showed of the session cookie, when sessions are on
    /// and the request is not gRPC.
    pub(crate) session: Option<Presented>,
}

impl<'a> Facts<'a> {
    /// The first facts: the request, the time and the peer.
    pub(crate) fn new(parts: &'a Parts, now: Timestamp) -> Self {
        Facts {
            parts,
            now,
            peer: peer(&parts.extensions),
            client: None,
            route: "",
            route_matched: false,
            session: None,
        }
    }

    /// The client's address, when known.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        self.client.map(|c| c.ip)
    }

    /// Reads the route.
    pub(crate) fn read_route(&mut self) {
        (self.route, self.route_matched) = route(self.parts);
    }

    /// How the request is built (fingerprint, anomalies, cluster, user
    /// agent), read only with scoring on. `tls`: the server terminates
    /// TLS; `trusted`: whether an address is a trusted proxy.
    pub(crate) fn read_look(&mut self, tls: bool, trusted: impl Fn(IpAddr) -> bool) -> RequestLook {
        let parts = self.parts;
        let peer = self.peer.as_ref();
        let wire = peer.and_then(|p| p.wire_head(&parts.extensions));
        let from_proxy = peer.is_some_and(|p| trusted(p.addr.ip()));
        // A secure origin, where browsers send `Sec-Fetch-*` and client
        // hints: TLS here, the request says so itself (an `https` scheme,
        // a `localhost` host), or a trusted proxy says
        // `X-Forwarded-Proto: https`.
        let secure = tls
            || secure_by_itself(parts)
            || (from_proxy
                && parts
                    .headers
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")));
        // Behind a trusted proxy the wire head is the proxy's, whatever
        // client it forwards.
        let direct = wire.is_some() && peer.is_some() && !from_proxy;
        look(parts, wire.as_ref(), secure, direct)
    }
}

/// Whether the request says it is gRPC (`application/grpc…`, any HTTP
/// version): such clients keep no cookies.
pub(crate) fn claims_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
