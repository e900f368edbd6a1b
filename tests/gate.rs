//! The connection gate over real sockets on 127.0.0.0/8: clients bind
//! distinct loopback addresses so each test plays several peers.
#![cfg(feature = "tower")]

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use floodguard::http::Tarpit;
use floodguard::http::{AcceptVerdict, Gate, GatedStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Longest any single step may take.
const BOUND: Duration = Duration::from_secs(10);

async fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    timeout(BOUND, socket.connect(dst))
        .await
        .expect("connect timed out")
        .unwrap()
}

/// Accepts through `gate` in the background: each admitted stream is sent
/// `ok` and handed to the test, which holds it open until it drops it.
async fn serve(
    gate: &Gate,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(GatedStream, SocketAddr)>,
) {
    let mut listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, peer) = listener.accept().await.unwrap();
            stream.write_all(b"ok").await.unwrap();
            if tx.send((stream, peer)).is_err() {
                break;
            }
        }
    });
    (addr, rx)
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Admitted,
    Refused,
}

/// Admitted connections hear `ok`; refused ones are reset without a byte.
async fn outcome(client: &mut TcpStream) -> Outcome {
    let mut buf = [0u8; 2];
    match timeout(BOUND, client.read_exact(&mut buf))
        .await
        .expect("neither admitted nor refused in time")
    {
        Ok(_) => {
            assert_eq!(&buf, b"ok");
            Outcome::Admitted
        }
        // SO_LINGER 0 on the refused socket: a reset, not a FIN.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Outcome::Refused,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

async fn admitted(
    rx: &mut mpsc::UnboundedReceiver<(GatedStream, SocketAddr)>,
) -> (GatedStream, SocketAddr) {
    timeout(BOUND, rx.recv())
        .await
        .expect("server stream")
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn per_ip_cap_refuses_the_extra_connection_and_frees_places_on_drop() {
    let gate = Gate::builder().max_connections_per_ip(2).build().unwrap();
    let (addr, mut rx) = serve(&gate).await;

    let mut a1 = connect_from("127.0.0.2", addr).await;
    assert_eq!(outcome(&mut a1).await, Outcome::Admitted);
    let (s1, peer1) = admitted(&mut rx).await;
    assert_eq!(peer1.ip(), ip("127.0.0.2"));
    assert_eq!(s1.peer_addr(), peer1);
    assert_eq!(s1.local_addr().unwrap(), addr);
    let mut a2 = connect_from("127.0.0.2", addr).await;
    assert_eq!(outcome(&mut a2).await, Outcome::Admitted);
    let _s2 = admitted(&mut rx).await;

    let mut a3 = connect_from("127.0.0.2", addr).await;
    assert_eq!(outcome(&mut a3).await, Outcome::Refused);

    let mut b = connect_from("127.0.0.3", addr).await;
    assert_eq!(outcome(&mut b).await, Outcome::Admitted);
    let (_s3, peer3) = admitted(&mut rx).await;
    assert_eq!(peer3.ip(), ip("127.0.0.3"));

    let s = gate.stats();
    assert_eq!((s.accepted, s.refused_per_ip, s.open), (3, 1, 3));

    // Closing one of the first two gives its place back.
    drop(s1);
    drop(a1);
    assert_eq!(gate.stats().open, 2);
    let mut a4 = connect_from("127.0.0.2", addr).await;
    assert_eq!(outcome(&mut a4).await, Outcome::Admitted);
    let _s4 = admitted(&mut rx).await;
    let s = gate.stats();
    assert_eq!((s.accepted, s.refused_per_ip, s.open), (4, 1, 3));
}

#[tokio::test]
async fn per_prefix_cap_counts_the_network() {
    let lengths = floodguard::ip::PrefixLengths::new(24, 64).unwrap();
    let gate = Gate::builder()
        .max_connections_per_prefix(lengths, 2)
        .build()
        .unwrap();
    let (addr, mut rx) = serve(&gate).await;
    let mut held = Vec::new();
    for src in ["127.0.0.9", "127.0.0.10"] {
        let mut c = connect_from(src, addr).await;
        assert_eq!(outcome(&mut c).await, Outcome::Admitted);
        held.push((c, admitted(&mut rx).await));
    }
    let mut c = connect_from("127.0.0.11", addr).await;
    assert_eq!(outcome(&mut c).await, Outcome::Refused);
    assert_eq!(gate.stats().refused_per_prefix, 1);
    held.pop();
    let mut c = connect_from("127.0.0.11", addr).await;
    assert_eq!(outcome(&mut c).await, Outcome::Admitted);
}

#[tokio::test]
async fn verdict_refuses_before_reading_and_exempts_from_caps() {
    let gate = Gate::builder()
        .max_connections_per_ip(1)
        .verdict(|ip| match ip.to_string().as_str() {
            "127.0.0.6" => AcceptVerdict::Refuse,
            "127.0.0.7" => AcceptVerdict::Exempt,
            _ => AcceptVerdict::Normal,
        })
        .build()
        .unwrap();
    let (addr, mut rx) = serve(&gate).await;

    let mut banned = connect_from("127.0.0.6", addr).await;
    // The request may or may not be written before the reset arrives;
    // either way nothing reads it.
    let _ = banned.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(outcome(&mut banned).await, Outcome::Refused);
    assert_eq!(gate.stats().refused_banned, 1);

    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.7", addr).await;
        assert_eq!(outcome(&mut c).await, Outcome::Admitted);
        held.push((c, admitted(&mut rx).await));
    }
    // The cap still holds for everyone else.
    let mut n1 = connect_from("127.0.0.8", addr).await;
    assert_eq!(outcome(&mut n1).await, Outcome::Admitted);
    let _n1 = admitted(&mut rx).await;
    let mut n2 = connect_from("127.0.0.8", addr).await;
    assert_eq!(outcome(&mut n2).await, Outcome::Refused);

    let s = gate.stats();
    assert_eq!(
        (s.accepted, s.open, s.refused_banned, s.refused_per_ip),
        (4, 4, 1, 1)
    );
}

#[tokio::test]
async fn a_panicking_verdict_hook_does_not_stop_the_accept_loop() {
    let gate = Gate::builder()
        .max_connections_per_ip(1)
        .verdict(|ip| {
            assert_ne!(ip.to_string(), "127.0.0.9", "the hook's own bug");
            AcceptVerdict::Normal
        })
        .build()
        .unwrap();
    let (addr, mut rx) = serve(&gate).await;
    // The hook panics for this address: judged without it (the caps
    // apply), counted, and the loop goes on.
    let mut first = connect_from("127.0.0.9", addr).await;
    assert_eq!(outcome(&mut first).await, Outcome::Admitted);
    let _first = admitted(&mut rx).await;
    let mut second = connect_from("127.0.0.9", addr).await;
    assert_eq!(outcome(&mut second).await, Outcome::Refused);
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.10", addr).await;
        assert_eq!(outcome(&mut c).await, Outcome::Admitted);
        drop(admitted(&mut rx).await);
    }
    let s = gate.stats();
    assert_eq!((s.verdict_panics, s.accepted, s.refused_per_ip), (2, 4, 1));
}

#[tokio::test]
async fn new_connection_rate_refuses_the_third_rapid_connection() {
    let gate = Gate::builder()
        .new_connections_per_ip(1, Duration::from_secs(10), 2)
        .build()
        .unwrap();
    let (addr, mut rx) = serve(&gate).await;
    for _ in 0..2 {
        let mut c = connect_from("127.0.0.4", addr).await;
        assert_eq!(outcome(&mut c).await, Outcome::Admitted);
        // Closed at once: the refusal below is the rate, not a cap.
        drop(admitted(&mut rx).await);
    }
    let mut c = connect_from("127.0.0.4", addr).await;
    assert_eq!(outcome(&mut c).await, Outcome::Refused);
    let mut other = connect_from("127.0.0.14", addr).await;
    assert_eq!(outcome(&mut other).await, Outcome::Admitted);
    let s = gate.stats();
    assert_eq!((s.accepted, s.refused_rate, s.refused_per_ip), (3, 1, 0));
}

#[cfg(feature = "axum")]
mod axum_serve {
    use super::*;
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::get;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;

    async fn get_from(
        sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    ) -> (StatusCode, String) {
        let req = Request::get("/")
            .header(header::HOST, "localhost")
            .body(Empty::new())
            .unwrap();
        let resp = timeout(BOUND, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status();
        let body = timeout(BOUND, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn handlers_see_the_client_address_and_the_cap_applies() {
        let gate = Gate::builder().max_connections_per_ip(1).build().unwrap();
        let listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let server = tokio::spawn(async move {
            axum::serve(
                listener.into_axum(),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });

        let stream = connect_from("127.0.0.5", addr).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        assert_eq!(
            get_from(&mut sender).await,
            (StatusCode::OK, "127.0.0.5".into())
        );

        // The kept-alive connection holds .5's only place.
        let mut second = connect_from("127.0.0.5", addr).await;
        let mut buf = [0u8; 1];
        let read = timeout(BOUND, second.read(&mut buf)).await.unwrap();
        assert_eq!(read.unwrap_err().kind(), ErrorKind::ConnectionReset);
        assert_eq!(gate.stats().refused_per_ip, 1);
        assert_eq!(get_from(&mut sender).await.1, "127.0.0.5");
        server.abort();
    }

    #[tokio::test]
    async fn serves_without_connect_info_too() {
        let gate = Gate::builder().build().unwrap();
        let listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "hi" }));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let stream = connect_from("127.0.0.15", addr).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        assert_eq!(get_from(&mut sender).await, (StatusCode::OK, "hi".into()));
        server.abort();
    }
}

#[cfg(feature = "tonic")]
mod tonic_serve {
    use super::*;
    use axum::body::Bytes;
    use axum::http::{Request, header};
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use tonic::transport::server::TcpConnectInfo;

    #[tokio::test]
    async fn tonic_serves_the_gated_stream_with_tcp_connect_info() {
        let gate = Gate::builder().build().unwrap();
        let listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(
                |axum::Extension(info): axum::Extension<TcpConnectInfo>| async move {
                    format!(
                        "{} {}",
                        info.remote_addr().unwrap().ip(),
                        info.local_addr().unwrap()
                    )
                },
            ),
        );
        let server = tokio::spawn(async move {
            let mut builder = tonic::transport::Server::builder().accept_http1(true);
            builder
                .add_routes(tonic::service::Routes::from(app))
                .serve_with_incoming(listener.into_incoming())
                .await
        });
        let stream = connect_from("127.0.0.12", addr).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/")
            .header(header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = timeout(BOUND, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let body = timeout(BOUND, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(body, format!("127.0.0.12 {addr}").as_bytes());
        assert_eq!(gate.stats().accepted, 1);
        server.abort();
    }
}

#[tokio::test]
async fn the_tarpit_holds_refused_connections_before_their_reset() {
    let hold = Duration::from_millis(800);
    let gate = Gate::builder()
        .max_connections_per_ip(1)
        .verdict(|ip| match ip.to_string().as_str() {
            "127.0.0.6" => AcceptVerdict::Refuse,
            _ => AcceptVerdict::Normal,
        })
        .tarpit(Tarpit::new(hold, 1))
        .build()
        .unwrap();
    let (addr, mut rx) = serve(&gate).await;
    let timed = async |from: &str| {
        let mut c = connect_from(from, addr).await;
        let started = Instant::now();
        (outcome(&mut c).await, started.elapsed())
    };
    // Two banned connections at once: one place, so one is held, unread,
    // until its reset, and the other is reset at once.
    let (a, b) = tokio::join!(timed("127.0.0.6"), timed("127.0.0.6"));
    assert_eq!((a.0, b.0), (Outcome::Refused, Outcome::Refused));
    let (quick, slow) = (a.1.min(b.1), a.1.max(b.1));
    assert!(quick < hold && slow >= hold, "{quick:?} {slow:?}");
    let t = gate.stats().tarpit;
    assert_eq!((t.held, t.full, t.holding), (1, 1, 0));
    // A connection over the per-address cap is reset at once, never held.
    let mut first = connect_from("127.0.0.8", addr).await;
    assert_eq!(outcome(&mut first).await, Outcome::Admitted);
    let _first = admitted(&mut rx).await;
    let (outcome, waited) = timed("127.0.0.8").await;
    assert_eq!(outcome, Outcome::Refused);
    assert!(waited < hold, "{waited:?}");
    assert_eq!(gate.stats().tarpit.held, 1);
}

#[tokio::test]
async fn an_over_cap_refusal_can_answer_429_instead_of_a_reset() {
    let gate = Gate::builder()
        .max_connections_per_ip(1)
        .answer_refusals(true)
        .build()
        .unwrap();
    let (addr, mut rx) = serve(&gate).await;
    let mut first = connect_from("127.0.0.31", addr).await;
    assert_eq!(outcome(&mut first).await, Outcome::Admitted);
    let _held = admitted(&mut rx).await;

    let mut extra = connect_from("127.0.0.31", addr).await;
    let mut answer = String::new();
    timeout(BOUND, extra.read_to_string(&mut answer))
        .await
        .expect("answer timed out")
        .expect("an answer and a close, not a reset");
    assert!(
        answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("Retry-After: 1\r\n"));
    assert!(answer.contains("Connection: close\r\n"));
    assert_eq!(gate.stats().refused_per_ip, 1);

    // A banned address is still reset, answered nothing.
    let gate = Gate::builder()
        .answer_refusals(true)
        .tarpit(Tarpit::off())
        .verdict(|_| AcceptVerdict::Refuse)
        .build()
        .unwrap();
    let (addr, _rx) = serve(&gate).await;
    let mut banned = connect_from("127.0.0.32", addr).await;
    assert_eq!(outcome(&mut banned).await, Outcome::Refused);
}
