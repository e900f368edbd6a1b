//! A guard configured from a TOML file and reloaded while it serves, on
//! SIGHUP or when the file changes.
//!
//! ```text
//! cargo run --example reload --features axum,toml                  # a short self-test, then exit
//! cargo run --example reload --features axum,toml -- serve FILE    # serve on 127.0.0.1:3000 until Ctrl-C
//! ```
//!
//! With `serve`, edit FILE (start from `examples/floodguard.toml`) or send
//! `kill -HUP <pid>`: the new rules, lists and thresholds apply at once,
//! bans and scores stay. A file that does not read, or that changes what
//! needs a restart, is refused with the reason and the guard carries on.
//! The self-test does the same on a copy of the example file, from
//! loopback addresses 127.0.0.x.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::get;
use floodguard::config::GuardConfig;
use floodguard::http::Guard;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

/// Reads `file` and puts it in force; says what happened.
fn reload(guard: &Guard, file: &Path) {
    let outcome = GuardConfig::load(file)
        .map_err(|e| e.to_string())
        .and_then(|config| guard.reload(&config).map_err(|e| e.to_string()));
    match outcome {
        Ok(()) => println!("reloaded {}", file.display()),
        Err(reason) => println!("kept the configuration in force: {reason}"),
    }
}

/// Reloads on SIGHUP, and when the file's modification time changes
/// (polled twice a second: no watcher dependency, works on every file
/// system).
async fn watch(guard: Guard, file: PathBuf) {
    let modified = |f: &Path| std::fs::metadata(f).and_then(|m| m.modified()).ok();
    let mut seen: Option<SystemTime> = modified(&file);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("a SIGHUP handler");
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                println!("SIGHUP");
                reload(&guard, &file);
            }
            _ = tick.tick() => {
                let now = modified(&file);
                if now != seen {
                    seen = now;
                    reload(&guard, &file);
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve_forever = args.first().map(String::as_str) == Some("serve");
    let file = match args.get(1) {
        Some(f) => PathBuf::from(f),
        None => {
            // The self-test edits a copy of the example file.
            let copy = std::env::temp_dir().join(format!("floodguard-{}.toml", std::process::id()));
            std::fs::copy(
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/floodguard.toml"),
                &copy,
            )?;
            copy
        }
    };
    let config = GuardConfig::load(&file)?;
    let guard = Guard::builder().config(config.clone()).build()?;
    let gate = config.gate(&guard).build()?;
    let app = Router::new()
        .route("/", get(|| async { "home\n" }))
        .layer(guard.layer());
    let bind = if serve_forever {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:0"
    };
    let listener = gate.listen(TcpListener::bind(bind).await?);
    let addr = listener.local_addr()?;
    let server = tokio::spawn(floodguard::http::serve(listener, app).into_future());
    let watcher = tokio::spawn(watch(guard.clone(), file.clone()));
    if serve_forever {
        println!(
            "serving on http://{addr} with {}; edit it or `kill -HUP {}` to reload (Ctrl-C to stop)",
            file.display(),
            std::process::id()
        );
        server.await??;
        return Ok(());
    }

    println!("self-test against http://{addr} with {}\n", file.display());
    let before = served("127.0.0.2", addr, 30).await;
    println!("127.0.0.2, 30 requests at once: {before} served (burst 40)");

    // Tighten the per-address rule and block 127.0.0.3, in the file.
    let text = std::fs::read_to_string(&file)?
        .replacen(
            "rate = 20\nperiod = \"1s\"\nburst = 40",
            "rate = 2\nperiod = \"1s\"\nburst = 5",
            1,
        )
        .replacen("blocklist = []", "blocklist = [\"127.0.0.3\"]", 1);
    std::fs::write(&file, text)?;
    wait_for(|| {
        guard
            .stats()
            .rules
            .iter()
            .any(|r| r.name == "per-ip" && r.limiter.admitted == 0)
    })
    .await;
    let after = served("127.0.0.4", addr, 30).await;
    println!("127.0.0.4, 30 requests at once: {after} served (burst now 5)");
    println!(
        "127.0.0.3 now: {}",
        outcome(request("127.0.0.3", addr).await)
    );

    // A change that needs a restart is refused, and the guard carries on.
    let text = std::fs::read_to_string(&file)?.replacen("max_bans = 100000", "max_bans = 10", 1);
    std::fs::write(&file, text)?;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    println!(
        "127.0.0.3 still: {}",
        outcome(request("127.0.0.3", addr).await)
    );

    watcher.abort();
    server.abort();
    if args.get(1).is_none() {
        std::fs::remove_file(&file)?;
    }
    Ok(())
}

/// A request's status, or how it failed (the gate closes a blocklisted
/// address's connection at accept).
fn outcome(result: Result<u16, Box<dyn std::error::Error>>) -> String {
    match result {
        Ok(status) => status.to_string(),
        Err(_) => "connection closed at accept (blocklisted)".into(),
    }
}

/// How many of `n` requests from `from` were answered 200.
async fn served(from: &str, to: SocketAddr, n: u32) -> u32 {
    let mut served = 0;
    for _ in 0..n {
        if request(from, to).await.is_ok_and(|status| status == 200) {
            served += 1;
        }
    }
    served
}

/// Polls `done` for up to five seconds.
async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..50 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One GET / over a new connection from `from` (a loopback address); the
/// status.
async fn request(from: &str, to: SocketAddr) -> Result<u16, Box<dyn std::error::Error>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse()?, 0))?;
    let stream = socket.connect(to).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())?;
    let res = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await??;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}
