//! The gated listener as axum serves it.

use std::io;
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener, ListenerExt, TapIo};

use super::{GatedListener, GatedStream};
use crate::http::GateConnectInfo;

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
    ///
    /// Prefer [`serve`](crate::http::serve), which does all of this and
    /// sets hyper's header timeout. Plain `axum::serve(gated, router)`
    /// compiles but gives requests no peer address: the guard then refuses
    /// them with 500 and logs how to fix it. With
    /// `into_make_service_with_connect_info::<GateConnectInfo>()` the gated
    /// listener needs no wrapper.
    ///
    /// ```no_run
    /// use std::net::SocketAddr;
    /// use axum::{Router, extract::ConnectInfo, routing::get};
    /// use floodguard::http::Gate;
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
