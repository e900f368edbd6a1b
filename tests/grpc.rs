//! The Tower layer in front of tonic, end to end: a hand-written
//! `helloworld.Greeter` served on 127.0.0.1 (over floodguard's gate, or
//! tonic's own listener), real tonic clients bound to different 127.x.y.z
//! addresses.
#![cfg(all(feature = "tower", feature = "tonic"))]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use floodguard::http::Gate;
use floodguard::http::{Guard, GuardDecision, Rule};
use floodguard::{Clock, ManualClock};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codegen::{BoxFuture, tokio_stream};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Code, Status};

/// Bound on each test's exchanges.
const TIMEOUT: Duration = Duration::from_secs(10);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

#[path = "../examples/greeter/mod.rs"]
mod greeter;
use greeter::{GreeterClient, GreeterServer, HelloReply, HelloRequest};

/// Answers with the client address the guard resolved and the peer address
/// tonic recorded, as `"<guard's> <tonic's>"`.
fn say_hello(req: tonic::Request<HelloRequest>) -> BoxFuture<tonic::Response<HelloReply>, Status> {
    Box::pin(async move {
        let guard_saw = req
            .extensions()
            .get::<GuardDecision>()
            .and_then(GuardDecision::client_ip);
        let tonic_saw = req.remote_addr().map(|a| a.ip());
        let show = |ip: Option<IpAddr>| ip.map_or_else(|| "none".to_owned(), |ip| ip.to_string());
        let message = format!("{} {}", show(guard_saw), show(tonic_saw));
        Ok(tonic::Response::new(HelloReply { message }))
    })
}

/// A Greeter client whose calls are bounded by [`TIMEOUT`].
struct Client(GreeterClient);

impl Client {
    fn new(channel: Channel) -> Self {
        Client(GreeterClient::new(channel))
    }

    /// One `SayHello`; the reply's message.
    async fn hello(&mut self) -> Result<String, Status> {
        let res = tokio::time::timeout(TIMEOUT, self.0.say_hello("test"))
            .await
            .expect("call timed out");
        res.map(|r| r.into_inner().message)
    }

    /// The status of a call that must fail.
    async fn refused(&mut self) -> Status {
        match self.hello().await {
            Ok(m) => panic!("expected a refusal, got {m:?}"),
            Err(status) => status,
        }
    }
}

fn meta<'a>(status: &'a Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).map(|v| v.to_str().unwrap())
}

// --- servers and clients -------------------------------------------------

/// A server running in the background; shut down gracefully by
/// [`shutdown`](Self::shutdown), aborted if dropped.
struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    fn spawn<F>(addr: SocketAddr, serve: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        TestServer {
            addr,
            stop: Some(stop),
            task: tokio::spawn(serve(stopped)),
        }
    }

    /// Stops accepting, waits for open connections to finish (drop the
    /// clients first) and checks the server ended cleanly.
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = &mut self.task;
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("server did not shut down")
            .unwrap()
            .unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gate `serve_gated` uses: it asks the guard about each connection.
fn gate_for<C: Clock + Clone + 'static>(guard: &Guard<C>) -> Gate {
    let g = guard.clone();
    Gate::builder()
        .verdict(move |ip| g.accept_verdict(ip))
        .build()
        .unwrap()
}

/// Serves the Greeter behind `guard`'s layer on 127.0.0.1, over `gate`
/// with `serve_with_incoming`.
async fn serve_gated<C: Clock + Clone + 'static>(guard: &Guard<C>, gate: &Gate) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = gate.listen(listener).into_incoming();
    let router = Server::builder()
        .layer(guard.layer())
        .add_service(GreeterServer::new(say_hello));
    TestServer::spawn(addr, move |stopped| {
        router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        })
    })
}

/// Serves the Greeter behind `guard`'s layer on tonic's own listener.
async fn serve_plain<C: Clock + Clone + 'static>(guard: &Guard<C>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .layer(guard.layer())
        .add_service(GreeterServer::new(say_hello));
    TestServer::spawn(addr, move |stopped| {
        router.serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = stopped.await;
        })
    })
}

/// A client whose connection to `server` comes from `from` (a 127.x.y.z
/// address): the connector binds the socket before connecting.
async fn client_from(from: &str, server: &TestServer) -> Client {
    let src: IpAddr = from.parse().unwrap();
    let to = server.addr;
    let connector = tower::service_fn(move |_: Uri| async move {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(src, 0))?;
        let stream = socket.connect(to).await?;
        Ok::<_, std::io::Error>(TokioIo::new(stream))
    });
    let endpoint = Endpoint::from_shared(format!("http://{to}")).unwrap();
    let channel = tokio::time::timeout(TIMEOUT, endpoint.connect_with_connector(connector))
        .await
        .expect("connect timed out")
        .unwrap();
    Client::new(channel)
}

/// A client connecting the usual way (`Endpoint::connect`, from 127.0.0.1).
async fn client(server: &TestServer) -> Client {
    let endpoint = Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
    let channel = tokio::time::timeout(TIMEOUT, endpoint.connect())
        .await
        .expect("connect timed out")
        .unwrap();
    Client::new(channel)
}

/// 5 calls a second per address, burst 5, on a clock that only moves when
/// told to.
fn per_ip_guard(clock: &ManualClock) -> Guard<ManualClock> {
    Guard::builder()
        .rule(Rule::per_ip("per-ip").gcra(5, SECOND).burst(5))
        .clock(clock.clone())
        .build()
        .unwrap()
}

// --- tests ---------------------------------------------------------------

#[tokio::test]
async fn per_ip_limit_is_resource_exhausted_with_retry_metadata() {
    let clock = ManualClock::new();
    let guard = per_ip_guard(&clock);
    let gate = gate_for(&guard);
    let server = serve_gated(&guard, &gate).await;
    let mut c = client(&server).await;
    for _ in 0..5 {
        // The guard keyed on the gate's peer address, as tonic recorded it.
        assert_eq!(c.hello().await.unwrap(), "127.0.0.1 127.0.0.1");
    }
    let status = c.refused().await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "rate limit exceeded");
    // One call frees every 200 ms; the clock has not moved.
    assert_eq!(meta(&status, "grpc-retry-pushback-ms"), Some("200"));
    assert_eq!(meta(&status, "retry-after"), Some("1"));
    assert_eq!(meta(&status, "ratelimit"), Some("\"per-ip\";r=0;t=1"));
    assert_eq!(
        meta(&status, "ratelimit-policy"),
        Some("\"per-ip\";q=5;w=1")
    );
    // The refusal left the connection usable: after the pushback the same
    // channel is served again, once.
    clock.advance(Duration::from_millis(200));
    assert!(c.hello().await.is_ok());
    assert_eq!(c.refused().await.code(), Code::ResourceExhausted);

    let s = guard.stats();
    assert_eq!((s.requests, s.admitted, s.refused_rate_limit), (8, 6, 2));
    assert_eq!(s.no_peer_address, 0);
    assert_eq!(
        gate.stats().accepted,
        1,
        "one HTTP/2 connection for every call"
    );
    drop(c);
    server.shutdown().await;
    assert_eq!(gate.stats().open, 0);
}

#[tokio::test]
async fn each_source_address_has_its_own_allowance() {
    let clock = ManualClock::new();
    let guard = per_ip_guard(&clock);
    let server = serve_gated(&guard, &gate_for(&guard)).await;
    let mut a = client_from("127.0.0.2", &server).await;
    let mut b = client_from("127.0.0.3", &server).await;
    for _ in 0..5 {
        assert_eq!(a.hello().await.unwrap(), "127.0.0.2 127.0.0.2");
    }
    assert_eq!(a.refused().await.code(), Code::ResourceExhausted);
    // .3 is untouched by .2's exhaustion.
    for _ in 0..5 {
        assert_eq!(b.hello().await.unwrap(), "127.0.0.3 127.0.0.3");
    }
    assert_eq!(b.refused().await.code(), Code::ResourceExhausted);
    // A second connection from .2 shares .2's (spent) allowance.
    let mut a2 = client_from("127.0.0.2", &server).await;
    assert_eq!(a2.refused().await.code(), Code::ResourceExhausted);

    let per_ip = &guard.stats().rules[0];
    assert_eq!((per_ip.limiter.admitted, per_ip.limiter.denied), (10, 3));
    assert_eq!(per_ip.limiter.occupancy, 2);
    drop((a, a2, b));
    server.shutdown().await;
}

#[tokio::test]
async fn a_global_ceiling_spans_addresses() {
    let clock = ManualClock::new();
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(10, MINUTE))
        .rule(Rule::global("ceiling").sliding_window(4, MINUTE))
        .clock(clock.clone())
        .build()
        .unwrap();
    let server = serve_gated(&guard, &gate_for(&guard)).await;
    let mut a = client_from("127.0.0.4", &server).await;
    let mut b = client_from("127.0.0.5", &server).await;
    for _ in 0..2 {
        assert!(a.hello().await.is_ok());
        assert!(b.hello().await.is_ok());
    }
    let mut c = client_from("127.0.0.6", &server).await;
    let status = c.refused().await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    // The metadata names the rule that refused.
    assert!(
        meta(&status, "ratelimit")
            .unwrap()
            .starts_with("\"ceiling\";r=0;"),
        "{status:?}"
    );
    assert_eq!(
        meta(&status, "ratelimit-policy"),
        Some("\"ceiling\";q=4;w=60")
    );
    drop((a, b, c));
    server.shutdown().await;
}

#[tokio::test]
async fn a_banned_client_is_permission_denied_until_unbanned() {
    let clock = ManualClock::new();
    let guard = per_ip_guard(&clock);
    let server = serve_gated(&guard, &gate_for(&guard)).await;
    let mut banned = client_from("127.0.0.7", &server).await;
    let mut other = client_from("127.0.0.8", &server).await;
    assert!(banned.hello().await.is_ok());

    // Banned while its connection is open: the gate has already admitted
    // it, so the layer answers each call.
    assert!(guard.ban("127.0.0.7".parse().unwrap(), MINUTE));
    for _ in 0..3 {
        let status = banned.refused().await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(status.message(), "client blocked");
        assert_eq!(meta(&status, "retry-after"), None);
        assert_eq!(meta(&status, "grpc-retry-pushback-ms"), None);
    }
    assert!(other.hello().await.is_ok(), "bans are per address");

    assert!(guard.unban(&"127.0.0.7".parse().unwrap()));
    assert_eq!(banned.hello().await.unwrap(), "127.0.0.7 127.0.0.7");

    // A ban that runs out on the guard's clock lifts itself.
    assert!(guard.ban("127.0.0.7".parse().unwrap(), SECOND));
    assert_eq!(banned.refused().await.code(), Code::PermissionDenied);
    clock.advance(SECOND);
    assert!(banned.hello().await.is_ok());

    let s = guard.stats();
    assert_eq!(s.refused_blocked, 4);
    assert_eq!(
        s.refused_rate_limit, 0,
        "refusing a banned client spends no allowance"
    );
    assert_eq!(s.rules[0].limiter.admitted, 4);
    drop((banned, other));
    server.shutdown().await;
}

#[tokio::test]
async fn the_gate_turns_banned_addresses_away_at_accept() {
    let guard = per_ip_guard(&ManualClock::new());
    let gate = gate_for(&guard);
    let server = serve_gated(&guard, &gate).await;
    assert!(guard.ban("127.0.0.9".parse().unwrap(), MINUTE));

    // The TCP handshake completes in the kernel; the gate takes the
    // connection at accept and, banned, holds it unread for the tarpit's
    // second before resetting it, so the call never reaches the layer.
    let src: IpAddr = "127.0.0.9".parse().unwrap();
    let to = server.addr;
    let connector = tower::service_fn(move |_: Uri| async move {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(src, 0))?;
        Ok::<_, std::io::Error>(TokioIo::new(socket.connect(to).await?))
    });
    let channel = Endpoint::from_shared(format!("http://{to}"))
        .unwrap()
        .connect_with_connector_lazy(connector);
    let status = Client::new(channel).refused().await;
    // A reset before the client has sent anything is `Unavailable`; once
    // its request is written (the tarpit lets it), a transport error.
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown),
        "{status:?}"
    );
    assert_eq!(gate.stats().tarpit.held, 1);
    // The gate counts the refusal just after the reset goes out.
    let counted = async {
        while gate.stats().refused_banned == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, counted)
        .await
        .expect("refusal not counted");
    assert_eq!(guard.stats().requests, 0);

    let mut ok = client_from("127.0.0.10", &server).await;
    assert!(ok.hello().await.is_ok());
    drop(ok);
    server.shutdown().await;
}

#[tokio::test]
async fn tonics_own_listener_records_the_peer_too() {
    let clock = ManualClock::new();
    let guard = per_ip_guard(&clock);
    let server = serve_plain(&guard).await;
    let mut a = client_from("127.0.0.11", &server).await;
    let mut b = client_from("127.0.0.12", &server).await;
    for _ in 0..5 {
        assert_eq!(a.hello().await.unwrap(), "127.0.0.11 127.0.0.11");
    }
    let status = a.refused().await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(meta(&status, "grpc-retry-pushback-ms"), Some("200"));
    assert_eq!(meta(&status, "retry-after"), Some("1"));
    assert_eq!(b.hello().await.unwrap(), "127.0.0.12 127.0.0.12");
    assert_eq!(guard.stats().no_peer_address, 0);
    drop((a, b));
    server.shutdown().await;
}

#[tokio::test]
async fn no_peer_address_is_internal() {
    // A transport with no TCP peer (an in-memory pipe): tonic records no
    // TcpConnectInfo, so the guard cannot key the call and refuses it.
    let guard = per_ip_guard(&ManualClock::new());
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let incoming = tokio_stream::StreamExt::chain(
        tokio_stream::once(Ok::<_, std::io::Error>(server_io)),
        tokio_stream::pending(),
    );
    let router = Server::builder()
        .layer(guard.layer())
        .add_service(GreeterServer::new(say_hello));
    let server = TestServer::spawn("127.0.0.1:0".parse().unwrap(), move |stopped| {
        router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        })
    });
    let client_io = Arc::new(Mutex::new(Some(client_io)));
    let connector = tower::service_fn(move |_: Uri| {
        let io = client_io.lock().unwrap().take();
        async move {
            io.map(TokioIo::new)
                .ok_or_else(|| std::io::Error::other("pipe used"))
        }
    });
    let channel = Endpoint::from_static("http://in-memory")
        .connect_with_connector(connector)
        .await
        .unwrap();
    let mut c = Client::new(channel);
    let status = c.refused().await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(status.message(), "server cannot identify the client");
    assert_eq!(guard.stats().no_peer_address, 1);
    drop(c);
    server.shutdown().await;
}
