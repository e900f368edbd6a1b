//! floodguard in front of an axum service: per-address and per-network
//! limits, a stricter rule on the login route, a global ceiling, and the
//! connection gate.
//!
//! ```text
//! cargo run --example axum --features axum            # a short self-test, then exit
//! cargo run --example axum --features axum -- serve   # serve on 127.0.0.1:3000 until Ctrl-C
//! ```
//!
//! The self-test sends requests from several loopback addresses
//! (127.0.0.x) and prints what each one got.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Extension, Router};
use floodguard::http::{Guard, GuardDecision, Rule};
use floodguard::ip::PrefixLengths;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

fn guard() -> Result<Guard, floodguard::ConfigError> {
    Guard::builder()
        // Each address: 10 a second on average, 20 at once.
        .rule(
            Rule::per_ip("per-ip")
                .gcra(10, Duration::from_secs(1))
                .burst(20),
        )
        // Each IPv4 /24 and IPv6 /64: one host rotating through its /64 is
        // one client.
        .rule(
            Rule::per_prefix("per-net", PrefixLengths::SUBNET)
                .gcra(100, Duration::from_secs(1))
                .burst(200),
        )
        // Password guessing: 5 login attempts a minute per address.
        .rule(
            Rule::per_ip("login")
                .path("/login")
                .method(http::Method::POST)
                .sliding_window(5, Duration::from_secs(60)),
        )
        // What the service can take in all.
        .rule(Rule::global("ceiling").gcra(2_000, Duration::from_secs(1)))
        .build()
}

fn app(guard: &Guard) -> Router {
    Router::new()
        .route("/", get(|| async { "home\n" }))
        .route("/login", post(|| async { "welcome\n" }))
        .route(
            "/whoami",
            get(|Extension(d): Extension<GuardDecision>| async move {
                format!(
                    "{:?} via {:?}\n",
                    d.client_ip(),
                    d.client().map(|c| c.source)
                )
            }),
        )
        .layer(guard.layer())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve_forever = std::env::args().nth(1).as_deref() == Some("serve");
    let guard = guard()?;
    let gate = guard
        .gate()
        .max_connections_per_ip(8)
        .new_connections_per_ip(20, Duration::from_secs(1), 40)
        .build()?;
    let bind = if serve_forever {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:0"
    };
    let listener = gate.listen(TcpListener::bind(bind).await?);
    let addr = listener.local_addr()?;
    // Through the gate, with hyper's header timeout, handlers and the layer
    // given the connection's address.
    let server = tokio::spawn(floodguard::http::serve(listener, app(&guard)).into_future());
    if serve_forever {
        println!("serving on http://{addr} (Ctrl-C to stop)");
        server.await??;
        return Ok(());
    }

    println!("self-test against http://{addr}\n");
    for attempt in 1..=7 {
        let (status, _) = request("127.0.0.2", addr, "POST", "/login").await?;
        println!("127.0.0.2 POST /login attempt {attempt}: {status}");
    }
    let (status, body) = request("127.0.0.3", addr, "GET", "/whoami").await?;
    println!("127.0.0.3 GET /whoami: {status} {}", body.trim());
    let mut got = [0u32; 2];
    for _ in 0..30 {
        let (status, _) = request("127.0.0.4", addr, "GET", "/").await?;
        got[usize::from(status != 200)] += 1;
    }
    println!(
        "127.0.0.4 GET / x30 at once: {} served, {} refused (burst 20)",
        got[0], got[1]
    );
    guard.ban("127.0.0.5".parse()?, Duration::from_secs(60));
    match request("127.0.0.5", addr, "GET", "/").await {
        Ok((status, _)) => println!("127.0.0.5 after a ban: {status}"),
        Err(e) => println!("127.0.0.5 after a ban: connection closed at accept ({e})"),
    }

    let s = guard.stats();
    println!(
        "\nguard: {} requests, {} admitted, {} refused by rules, {} blocked",
        s.requests, s.admitted, s.refused_rate_limit, s.refused_blocked
    );
    for r in &s.rules {
        println!(
            "  rule {:<8} admitted {:>3} denied {:>3}",
            r.name, r.limiter.admitted, r.limiter.denied
        );
    }
    let g = gate.stats();
    println!(
        "gate: {} accepted, {} refused as banned",
        g.accepted, g.refused_banned
    );
    server.abort();
    Ok(())
}

/// One request over a new connection from `from` (a loopback address).
async fn request(
    from: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse()?, 0))?;
    let stream = socket.connect(to).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())?;
    let res = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await??;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
