//! The connection facts the gate hands to the server: the peer address
//! and the first request head.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::http::identify::wire::WireHead;
/// The connection a request came on: its peer address and, once read, its
/// first request head in wire order and casing; made by
/// [`GatedStream::connect_info`](crate::http::GatedStream::connect_info).
///
/// With feature `axum` it is axum connect info over a [`GatedListener`](crate::http::GatedListener):
///
/// ```no_run
/// use axum::{Router, extract::ConnectInfo, routing::get};
/// use floodguard::http::GateConnectInfo;
/// use floodguard::http::Gate;
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
/// [`Fingerprint::from_parts`](crate::http::Fingerprint::from_parts) the head.
#[derive(Clone, Debug)]
pub struct GateConnectInfo {
    peer: SocketAddr,
    head: Arc<OnceLock<WireHead>>,
}

impl GateConnectInfo {
    pub(crate) fn new(peer: SocketAddr, head: Arc<OnceLock<WireHead>>) -> Self {
        GateConnectInfo { peer, head }
    }

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
