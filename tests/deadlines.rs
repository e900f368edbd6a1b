//! The gate's deadlines and descriptor budget, and `serve`, over real
//! sockets on 127.0.0.0/8 with short deadlines (the gate sweeps four times
//! a second, so each waits well under a second past its deadline).
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use floodguard::http::{Deadlines, Gate, GateBuilder};
use floodguard::http::{GateConnectInfo, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::time::{sleep, timeout};

/// Longest any single step may take.
const BOUND: Duration = Duration::from_secs(10);
const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n";

async fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    timeout(BOUND, socket.connect(dst)).await.unwrap().unwrap()
}

/// Serves `app` through a gate built from `gate`; the gate and the address.
async fn shop(gate: GateBuilder, app: Router) -> (Gate, SocketAddr) {
    let gate = gate.build().unwrap();
    let listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app).into_future());
    (gate, addr)
}

fn hello() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

/// Sends `head` and reads the answer's status line; `None` if the
/// connection was closed or reset first.
async fn status(stream: &mut TcpStream, head: &[u8]) -> Option<String> {
    stream.write_all(head).await.ok()?;
    let mut buf = vec![0u8; 1024];
    let n = timeout(BOUND, stream.read(&mut buf)).await.unwrap().ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines().next().map(str::to_owned)
}

/// Whether the server closed (or reset) the connection within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An error page (hyper's 408) before the close.
            Ok(Ok(_)) => {}
        }
    }
}

fn short(head_ms: u64) -> Deadlines {
    Deadlines::default()
        .head(Duration::from_millis(head_ms))
        .min_rate(0, Duration::ZERO)
        .keep_alive(Duration::from_millis(400))
}

#[tokio::test]
async fn a_head_not_complete_in_time_is_closed_and_its_address_waits_out_the_penalty() {
    let gate = Gate::builder()
        .deadlines(short(300))
        .slow_penalty(Duration::from_secs(30));
    let (gate, addr) = shop(gate, hello()).await;
    let mut slow = connect_from("127.0.40.1", addr).await;
    let began = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut slow, BOUND).await);
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    let s = gate.stats();
    assert_eq!(
        (s.closed_head_timeout, s.closed_idle, s.closed_budget),
        (1, 0, 0)
    );
    // It left a head half sent: its address may not connect for a while.
    let mut again = connect_from("127.0.40.1", addr).await;
    assert_eq!(status(&mut again, HEAD).await, None);
    assert_eq!(gate.stats().refused_slow, 1);
    // Everyone else is served.
    let mut other = connect_from("127.0.40.2", addr).await;
    assert_eq!(
        status(&mut other, HEAD).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
}

#[tokio::test]
async fn a_connection_that_sent_nothing_is_closed_without_a_penalty() {
    let (gate, addr) = shop(Gate::builder().deadlines(short(200)), hello()).await;
    // A browser's preconnect that was never used.
    let mut quiet = connect_from("127.0.41.1", addr).await;
    assert!(closed_within(&mut quiet, BOUND).await);
    let mut next = connect_from("127.0.41.1", addr).await;
    assert_eq!(
        status(&mut next, HEAD).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let s = gate.stats();
    assert_eq!((s.closed_head_timeout, s.refused_slow), (1, 0));
}

#[tokio::test]
async fn a_request_being_served_outlives_every_deadline_and_idle_keep_alive_is_closed() {
    let app = Router::new().route(
        "/",
        get(|| async {
            sleep(Duration::from_millis(1_200)).await;
            "slow page"
        }),
    );
    let (gate, addr) = shop(Gate::builder().deadlines(short(200)), app).await;
    let mut client = connect_from("127.0.42.1", addr).await;
    assert_eq!(
        status(&mut client, HEAD).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    // The same connection again: a kept-alive connection's next head.
    assert_eq!(
        status(&mut client, HEAD).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert_eq!(gate.stats().closed_head_timeout, 0);
    // Then idle past the keep-alive time.
    let began = Instant::now();
    assert!(closed_within(&mut client, BOUND).await);
    assert!(began.elapsed() >= Duration::from_millis(400));
    let s = gate.stats();
    assert_eq!(
        (s.closed_idle, s.closed_head_timeout, s.closed_budget),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn a_head_arriving_at_the_minimum_rate_gets_more_time_and_a_trickle_does_not() {
    let deadlines = Deadlines::default()
        .head(Duration::from_millis(300))
        .min_rate(200, Duration::from_secs(5));
    let (gate, addr) = shop(Gate::builder().deadlines(deadlines), hello()).await;
    // 40 bytes every 100 ms (400 bytes a second) for about 1.2 s.
    let mut steady = connect_from("127.0.43.1", addr).await;
    steady
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n")
        .await
        .unwrap();
    for i in 0..12 {
        sleep(Duration::from_millis(100)).await;
        let line = format!("X-Pad-{i:02}: {}\r\n", "a".repeat(27));
        steady.write_all(line.as_bytes()).await.unwrap();
    }
    assert_eq!(
        status(&mut steady, b"\r\n").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    // 2 bytes every 100 ms: 20 bytes a second.
    let mut trickle = connect_from("127.0.43.2", addr).await;
    let began = Instant::now();
    let mut closed = false;
    for _ in 0..50 {
        if trickle.write_all(b"X-").await.is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut trickle, Duration::from_millis(100)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "the trickle was never closed");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(gate.stats().closed_head_timeout, 1);
}

#[tokio::test]
async fn at_the_budget_a_newcomer_closes_the_connection_waiting_longest_for_its_head() {
    let gate = Gate::builder()
        .deadlines(Deadlines::off())
        .descriptor_budget(4);
    let (gate, addr) = shop(gate, hello()).await;
    let mut slow = Vec::new();
    for i in 1..=4 {
        let mut s = connect_from(&format!("127.0.44.{i}"), addr).await;
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        slow.push(s);
        sleep(Duration::from_millis(50)).await;
    }
    // Let the gate see each head start.
    sleep(Duration::from_millis(100)).await;
    let mut visitor = connect_from("127.0.44.9", addr).await;
    assert_eq!(
        status(&mut visitor, HEAD).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert!(
        closed_within(&mut slow[0], BOUND).await,
        "the oldest was closed"
    );
    for s in &mut slow[1..] {
        assert!(!closed_within(s, Duration::from_millis(100)).await);
    }
    let s = gate.stats();
    assert_eq!((s.closed_budget, s.refused_budget), (1, 0));
    // The visitor's kept-alive connection is idle now: a head-less one
    // still goes first.
    let mut second = connect_from("127.0.44.10", addr).await;
    assert_eq!(
        status(&mut second, HEAD).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert!(closed_within(&mut slow[1], BOUND).await);
    assert_eq!(
        status(&mut visitor, HEAD).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
}

#[tokio::test]
async fn at_the_budget_with_every_connection_being_served_a_newcomer_is_refused() {
    let release = Arc::new(Notify::new());
    let wait = Arc::clone(&release);
    let app = Router::new().route(
        "/",
        get(move || {
            let wait = Arc::clone(&wait);
            async move {
                wait.notified().await;
                "done"
            }
        }),
    );
    let gate = Gate::builder().deadlines(short(100)).descriptor_budget(2);
    let (gate, addr) = shop(gate, app).await;
    let mut busy = Vec::new();
    for i in 1..=2 {
        let mut s = connect_from(&format!("127.0.45.{i}"), addr).await;
        s.write_all(HEAD).await.unwrap();
        busy.push(s);
    }
    // Past every deadline, still being served.
    sleep(Duration::from_millis(600)).await;
    let mut late = connect_from("127.0.45.9", addr).await;
    assert_eq!(status(&mut late, HEAD).await, None);
    let s = gate.stats();
    assert_eq!(
        (s.refused_budget, s.closed_budget, s.closed_head_timeout),
        (1, 0, 0)
    );
    release.notify_waiters();
    for s in &mut busy {
        assert_eq!(status(s, b"").await.as_deref(), Some("HTTP/1.1 200 OK"));
    }
}

#[tokio::test]
async fn serve_sets_hypers_header_timeout_behind_the_gate() {
    let gate = Gate::builder().deadlines(Deadlines::off()).build().unwrap();
    let listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let server = serve(listener, hello()).header_read_timeout(Duration::from_millis(300));
    tokio::spawn(server.into_future());
    let mut slow = connect_from("127.0.46.1", addr).await;
    slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let began = Instant::now();
    assert!(closed_within(&mut slow, BOUND).await);
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(
        gate.stats().closed_head_timeout,
        0,
        "hyper closed it, not the gate"
    );
}

#[tokio::test]
async fn serve_gives_handlers_both_connect_infos_and_shuts_down_gracefully() {
    let app = Router::new().route(
        "/",
        get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>,
             ConnectInfo(conn): ConnectInfo<GateConnectInfo>| async move {
                sleep(Duration::from_millis(300)).await;
                let head = conn.wire_head().map(|h| h.header_count());
                format!("{} {} {head:?}", peer.ip(), conn.peer_addr().ip())
            },
        ),
    );
    let gate = Gate::builder().build().unwrap();
    let listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(Notify::new());
    let signal = Arc::clone(&stop);
    let server = tokio::spawn(
        serve(listener, app)
            .with_graceful_shutdown(async move { signal.notified().await })
            .into_future(),
    );
    let mut client = connect_from("127.0.47.1", addr).await;
    client.write_all(HEAD).await.unwrap();
    // Shut down while the request is being served: it still completes.
    sleep(Duration::from_millis(100)).await;
    stop.notify_one();
    let mut answer = String::new();
    timeout(BOUND, client.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.ends_with("127.0.47.1 127.0.47.1 Some(1)"),
        "{answer}"
    );
    timeout(BOUND, server).await.unwrap().unwrap().unwrap();
}
