//! Serving an axum router through the gate in one call, with hyper's
//! header timeout set.

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::{Pin, pin};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::sync::watch;
use tower_service::Service;

use crate::http::gate::listener::GatedListener;

/// hyper's own limit on reading a request head, behind the gate's
/// [`Deadlines`](crate::http::Deadlines) (which it matches by default):
/// it also holds for what the gate cannot follow.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on the connections `listener`'s gate admits: the
/// protected way to run an axum app.
///
/// Each request carries the connection's facts as axum connect info, both
/// `ConnectInfo<`[`GateConnectInfo`](crate::http::GateConnectInfo)`>` (the peer
/// and its wire head, which the guard's layer reads) and
/// `ConnectInfo<SocketAddr>`, so handlers and the layer find the peer with
/// nothing more to wire. hyper gets a timer and a
/// [header read timeout](HEADER_READ_TIMEOUT), which `axum::serve` leaves
/// unset; HTTP/1 upgrades (WebSocket) work. HTTP/2 is served when axum's
/// `http2` feature is on.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use floodguard::http::{Guard, serve};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let guard = Guard::builder().default_rules().build()?;
/// let app = Router::new().route("/", get(|| async { "hello" })).layer(guard.layer());
/// let gate = guard.gate().build()?;
/// let listener = gate.listen(tokio::net::TcpListener::bind("0.0.0.0:3000").await?);
/// serve(listener, app).await?;
/// # Ok(())
/// # }
/// ```
pub fn serve(listener: GatedListener, router: Router) -> Serve {
    Serve {
        listener,
        router,
        header_read_timeout: HEADER_READ_TIMEOUT,
    }
}

/// The future [`serve`] returns; await it (it runs until an accept error
/// it cannot get past, which the gate's listener never reports).
#[must_use = "a server does nothing until awaited"]
pub struct Serve {
    listener: GatedListener,
    router: Router,
    header_read_timeout: Duration,
}

impl Serve {
    /// hyper's limit on reading one request head (default
    /// [`HEADER_READ_TIMEOUT`]).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Stops accepting when `signal` completes, lets the connections open
    /// finish their requests, and then completes.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }

    async fn run(self, signal: impl Future<Output = ()> + Send) -> io::Result<()> {
        let Serve {
            mut listener,
            router,
            header_read_timeout,
        } = self;
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        // Connections watch `stop_rx`'s senders: dropping `stop_tx` asks them
        // to shut down; `done_tx` closes once the last of them has.
        let (stop_tx, stop_rx) = watch::channel(());
        let (done_tx, done_rx) = watch::channel(());
        let mut signal = pin!(signal);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                () = &mut signal => break,
            };
            let info = ConnectInfo(stream.connect_info());
            let router = router.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(info.clone());
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move { Ok::<_, Infallible>(router.call(req).await.unwrap_or_else(|e| match e {})) }
            });
            let builder = builder.clone();
            let stop_rx = stop_rx.clone();
            let done_rx = done_rx.clone();
            tokio::spawn(async move {
                let mut conn =
                    pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
                let mut stop = pin!(stop_rx_closed(stop_rx));
                let mut stopping = false;
                loop {
                    tokio::select! {
                        result = conn.as_mut() => {
                            if let Err(e) = result {
                                tracing::trace!(%peer, error = %e, "connection ended with an error");
                            }
                            break;
                        }
                        () = &mut stop, if !stopping => {
                            stopping = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
                drop(done_rx);
            });
        }
        drop(stop_tx);
        drop(done_rx);
        done_tx.closed().await;
        Ok(())
    }
}

/// Completes when the server drops its sender (shutdown).
async fn stop_rx_closed(mut rx: watch::Receiver<()>) {
    while rx.changed().await.is_ok() {}
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run(std::future::pending()))
    }
}

/// [`Serve`] with a shutdown signal; made by
/// [`Serve::with_graceful_shutdown`].
#[must_use = "a server does nothing until awaited"]
pub struct WithGracefulShutdown<F> {
    serve: Serve,
    signal: F,
}

impl<F> IntoFuture for WithGracefulShutdown<F>
where
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.serve.run(self.signal))
    }
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("header_read_timeout", &self.header_read_timeout)
            .finish_non_exhaustive()
    }
}

impl<F> std::fmt::Debug for WithGracefulShutdown<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}
