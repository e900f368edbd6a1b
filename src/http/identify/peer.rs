//! Where the layer finds the TCP peer address of a request.

use std::net::SocketAddr;

use http::Extensions;

use crate::http::identify::connect_info::GateConnectInfo;
use crate::http::identify::wire::WireHead;

/// The TCP peer address of a request, as a request extension.
///
/// The layer looks for, in order: this type; a [`GateConnectInfo`];
/// axum's `ConnectInfo<GateConnectInfo>` and `ConnectInfo<SocketAddr>`
/// (feature `axum`, set by `into_make_service_with_connect_info::<_>()`
/// over the [`Gate`](crate::http::Gate)'s listener, the latter also over
/// axum's own); tonic's `TcpConnectInfo` (feature `tonic`, set by tonic's
/// server). Insert this or [`GatedStream::connect_info`] yourself when
/// serving with plain hyper.
///
/// [`GatedStream::connect_info`]: crate::http::GatedStream::connect_info
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// A request's TCP peer address (from whichever extension the server
/// set), and what finding it showed about where the connection's wire head
/// is.
#[derive(Clone, Copy)]
pub(crate) struct Peer<'a> {
    pub(crate) addr: SocketAddr,
    wire: WireAt<'a>,
}

#[derive(Clone, Copy)]
enum WireAt<'a> {
    /// In this gate connection info, the first that [`wire_head`] looks at.
    Info(&'a GateConnectInfo),
    /// Nowhere: the lookup passed every extension that could hold it
    /// (only axum's connect info comes after the gate's).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    Nowhere,
    /// Not looked for (the address came before the gate's extensions).
    Unknown,
}

impl Peer<'_> {
    /// [`wire_head`] of the same extensions, without looking again at
    /// what finding the peer already looked at.
    pub(crate) fn wire_head(&self, ext: &Extensions) -> Option<WireHead> {
        match self.wire {
            WireAt::Info(info) => info.wire_head(),
            WireAt::Nowhere => None,
            WireAt::Unknown => wire_head(ext),
        }
    }
}

/// The peer address from whichever extension the server set, with where
/// the wire head is.
pub(crate) fn peer(ext: &Extensions) -> Option<Peer<'_>> {
    if let Some(PeerAddr(a)) = ext.get::<PeerAddr>() {
        return Some(Peer {
            addr: *a,
            wire: WireAt::Unknown,
        });
    }
    if let Some(info) = ext.get::<GateConnectInfo>() {
        return Some(Peer {
            addr: info.peer_addr(),
            wire: WireAt::Info(info),
        });
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(info)) =
        ext.get::<axum::extract::ConnectInfo<GateConnectInfo>>()
    {
        return Some(Peer {
            addr: info.peer_addr(),
            wire: WireAt::Info(info),
        });
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(a)) = ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(Peer {
            addr: *a,
            wire: WireAt::Nowhere,
        });
    }
    #[cfg(feature = "tonic")]
    if let Some(info) = ext.get::<tonic::transport::server::TcpConnectInfo>() {
        return info.remote_addr().map(|addr| Peer {
            addr,
            wire: WireAt::Nowhere,
        });
    }
    None
}

/// The first request head of the request's connection, from whichever
/// [`GateConnectInfo`] the server set.
pub(crate) fn wire_head(ext: &Extensions) -> Option<WireHead> {
    if let Some(info) = ext.get::<GateConnectInfo>() {
        return info.wire_head();
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(info)) =
        ext.get::<axum::extract::ConnectInfo<GateConnectInfo>>()
    {
        return info.wire_head();
    }
    None
}

/// The route a request matched, and whether it matched one of the
/// application's routes: axum's route pattern (`MatchedPath`, one of a
/// bounded set) if known, else the path the client chose.
pub(crate) fn route(parts: &http::request::Parts) -> (&str, bool) {
    #[cfg(feature = "axum")]
    if let Some(m) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return (m.as_str(), true);
    }
    (parts.uri.path(), false)
}
