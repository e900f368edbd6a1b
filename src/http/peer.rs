//! Where the layer finds the TCP peer address of a request.

use std::net::SocketAddr;

use http::Extensions;

use super::gate::GateConnectInfo;
use super::wire::WireHead;

/// The TCP peer address of a request, as a request extension.
///
/// The layer looks for, in order: this type; a [`GateConnectInfo`];
/// axum's `ConnectInfo<GateConnectInfo>` and `ConnectInfo<SocketAddr>`
/// (feature `axum`, set by `into_make_service_with_connect_info::<_>()`
/// over the [`Gate`](super::gate::Gate)'s listener, the latter also over
/// axum's own); tonic's `TcpConnectInfo` (feature `tonic`, set by tonic's
/// server). Insert this or [`GatedStream::connect_info`] yourself when
/// serving with plain hyper.
///
/// [`GatedStream::connect_info`]: super::gate::GatedStream::connect_info
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address from whichever extension the server set.
pub(crate) fn peer_addr(ext: &Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(a)) = ext.get::<PeerAddr>() {
        return Some(*a);
    }
    if let Some(info) = ext.get::<GateConnectInfo>() {
        return Some(info.peer_addr());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(info)) =
        ext.get::<axum::extract::ConnectInfo<GateConnectInfo>>()
    {
        return Some(info.peer_addr());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(a)) = ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*a);
    }
    #[cfg(feature = "tonic")]
    if let Some(info) = ext.get::<tonic::transport::server::TcpConnectInfo>() {
        return info.remote_addr();
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

/// The route a request matched: axum's route pattern if known, else the
/// path.
pub(crate) fn route(parts: &http::request::Parts) -> &str {
    #[cfg(feature = "axum")]
    if let Some(m) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return m.as_str();
    }
    parts.uri.path()
}
