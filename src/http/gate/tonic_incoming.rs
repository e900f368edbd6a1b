//! The gated listener as tonic serves it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{GatedListener, GatedStream};

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
pub struct GatedIncoming {
    listener: GatedListener,
}

impl GatedListener {
    /// The admitted connections as a stream, for tonic's
    /// `Server::serve_with_incoming`. Request handlers find tonic's
    /// `TcpConnectInfo` in the request extensions, as with tonic's own
    /// listener.
    ///
    /// ```no_run
    /// use floodguard::http::Gate;
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
    pub fn into_incoming(self) -> GatedIncoming {
        GatedIncoming { listener: self }
    }
}

impl GatedIncoming {
    /// The listener back.
    pub fn into_inner(self) -> GatedListener {
        self.listener
    }
}

impl futures_core::Stream for GatedIncoming {
    type Item = io::Result<GatedStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .listener
            .poll_admitted(cx)
            .map(|(stream, _)| Some(Ok(stream)))
    }
}
