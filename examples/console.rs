//! A small shop with floodguard's live console on a second, internal
//! address.
//!
//! ```text
//! cargo run --release --example console --features console
//! cargo run --release --example console --features console -- --flood 30
//! ```
//!
//! It prints the console's URL with its token (set `CONSOLE_TOKEN` to
//! choose it; else one is drawn at random). With `--flood SECONDS` it also
//! floods itself for that long, from loopback addresses only (customers
//! from 127.0.1.0/24, a botnet from 127.2.0.0/16, some with markup in
//! their user agent), so that the console has an attack to show; and it
//! measures how long the console takes to answer during the flood: the
//! page, and the state the page polls each second.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use floodguard::http::{Console, EventLog, Guard, Scoring, serve};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const BOTS: [&str; 3] = [
    "python-requests/2.32.3",
    "<script>alert(1)</script>",
    "Go-http-client/1.1",
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flood = args
        .iter()
        .position(|a| a == "--flood")
        .map(|i| Duration::from_secs(args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(30)));
    let token = match std::env::var("CONSOLE_TOKEN") {
        Ok(t) => t,
        Err(_) => {
            let mut b = [0u8; 16];
            getrandom::fill(&mut b)?;
            b.iter().map(|b| format!("{b:02x}")).collect()
        }
    };

    // The latest events (attack started, clusters flagged, bans) for the
    // console to list.
    let events = EventLog::new(100);
    let guard = Guard::builder()
        .default_rules()
        .scoring(Scoring::new())
        .on_event(events.hook())
        .build()?;
    let gate = guard.gate().max_connections_per_ip(64).build()?;
    let shop = Router::new()
        .route(
            "/",
            get(|| async {
                // A page that takes a little work.
                tokio::time::sleep(Duration::from_millis(2)).await;
                "welcome to the shop"
            }),
        )
        .layer(guard.layer());
    let public = gate.listen(TcpListener::bind("127.0.0.1:0").await?);
    let shop_addr = public.local_addr()?;
    tokio::spawn(serve(public, shop).into_future());

    // The console: an internal address, never the public one.
    let console = Console::new(guard.clone())
        .token(token.clone())
        .gate(&gate)
        .events(&events)
        .router()?;
    let internal = TcpListener::bind("127.0.0.1:0").await?;
    let console_addr = internal.local_addr()?;
    tokio::spawn(async move { axum::serve(internal, console).await });

    println!("shop:    http://{shop_addr}/");
    println!("console: http://{console_addr}/?token={token}");

    let Some(flood) = flood else {
        println!(
            "(Ctrl-C to stop; --flood SECONDS floods the shop so the console has an attack to show)"
        );
        tokio::signal::ctrl_c().await?;
        return Ok(());
    };

    let stop = Arc::new(AtomicBool::new(false));
    for task in 0..6u32 {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut i = task;
            while !stop.load(Ordering::Relaxed) {
                let from = format!("127.0.1.{}", 1 + i % 40);
                let _ = get_page(&from, shop_addr, "/", FIREFOX, None).await;
                i += 6;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    println!(
        "calm traffic for 4 s, then the flood for {} s",
        flood.as_secs()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    for task in 0..12u32 {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut i = task;
            while !stop.load(Ordering::Relaxed) {
                let bot = i % 5_000;
                let from = format!("127.2.{}.{}", bot / 250, 1 + bot % 250);
                let _ = get_page(&from, shop_addr, "/", BOTS[(i % 3) as usize], None).await;
                i += 12;
            }
        });
    }

    // The operator's view during the flood, twice a second.
    let cookie = sign_in(console_addr, &token).await?;
    let (mut page, mut state) = (Vec::new(), Vec::new());
    let (mut page_bytes, mut state_bytes) = (0, 0);
    let end = Instant::now() + flood;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The page as a browser loads it: the HTML, then its script and
        // style; then one poll of the state.
        let t = Instant::now();
        page_bytes = 0;
        for query in ["/", "/?js", "/?css"] {
            page_bytes += console_get(console_addr, query, &cookie).await?;
        }
        page.push(t.elapsed());
        let t = Instant::now();
        state_bytes = console_get(console_addr, "/?api=state", &cookie).await?;
        state.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let s = guard.stats();
    println!(
        "flood over: {} requests, {} refused, {} bans, under attack: {}",
        s.requests,
        s.requests - s.admitted,
        s.bans,
        guard.under_attack()
    );
    for (what, times, bytes) in [
        ("page (html+js+css)", &mut page, page_bytes),
        ("state (json)", &mut state, state_bytes),
    ] {
        times.sort();
        let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
        println!(
            "console {what}: {} loads during the flood, median {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} bytes",
            times.len(),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
            bytes
        );
    }
    Ok(())
}

/// One authenticated console request; the body's size.
async fn console_get(
    console: SocketAddr,
    query: &str,
    cookie: &str,
) -> Result<usize, Box<dyn std::error::Error>> {
    let (status, body) = get_page("127.0.0.1", console, query, FIREFOX, Some(cookie)).await?;
    if status != 200 {
        return Err(format!("console {query}: {status}").into());
    }
    Ok(body.len())
}

/// Exchanges the token for the console's session cookie.
async fn sign_in(console: SocketAddr, token: &str) -> Result<String, Box<dyn std::error::Error>> {
    let stream = connect("127.0.0.1", console).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("/?token={token}"))
        .header("host", console.to_string())
        .body(Empty::<Bytes>::new())?;
    let res = sender.send_request(req).await?;
    let cookie = res
        .headers()
        .get("set-cookie")
        .ok_or("no session cookie")?
        .to_str()?;
    Ok(cookie.split(';').next().unwrap_or_default().to_owned())
}

/// `GET path` on a new connection from the loopback address `from`.
async fn get_page(
    from: &str,
    to: SocketAddr,
    path: &str,
    ua: &str,
    cookie: Option<&str>,
) -> Result<(u16, Bytes), Box<dyn std::error::Error>> {
    let go = async {
        let stream = connect(from, to).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::get(path)
            .header("host", to.to_string())
            .header("user-agent", ua)
            .header("accept", "*/*");
        if ua == FIREFOX {
            req = req
                .header("accept-language", "en")
                .header("accept-encoding", "gzip");
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let res = sender
            .send_request(req.body(Empty::<Bytes>::new())?)
            .await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok::<_, Box<dyn std::error::Error>>((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .map_err(|_| "timed out")?
}

async fn connect(from: &str, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse().expect("an address"), 0))?;
    socket.connect(to).await
}
