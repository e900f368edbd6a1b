//! The console in a real browser: headless Chromium, driven over the
//! DevTools protocol, opens the console of a shop under a bounded flood
//! from many 127.x.y.z addresses (some with markup in their user agent),
//! sees the attack, shows the markup as text, lifts a ban with the page's
//! own button, and asks nothing of any other origin.
//!
//! Needs Debian's `chromium` (`scripts/test` installs it; or set
//! `CHROMIUM` to a browser binary). With `FLOODGUARD_CONSOLE_SCREENSHOT`
//! set to a path, the page is saved there as PNG (docs/console.png).
#![cfg(feature = "console")]

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::connect_from;
use floodguard::http::{Console, EventLog, Gate, Guard, Scoring, serve};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "browser-test-token-0123456789abcdef";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
/// The flood's user agents: a scripting tool, and markup that must reach
/// the page as text (a cluster is named by the user agent's first token).
const BOT_AGENTS: [&str; 4] = [
    "python-requests/2.32.3",
    "<script>window.__xss=1</script>",
    "<img src=x onerror=window.__xss=2>",
    "<img\tsrc=x\tonerror=window.__xss=3>",
];
/// A ban nobody floods from, for the unban button.
const MANUAL_BAN: &str = "203.0.113.0/24";

/// A shop behind a guard and its gate, and the console on another port.
async fn start() -> (Guard, SocketAddr, SocketAddr) {
    let events = EventLog::new(100);
    let guard = Guard::builder()
        .default_rules()
        .scoring(Scoring::new())
        .on_event(events.hook())
        .build()
        .unwrap();
    let gate = guard.gate().max_connections_per_ip(64).build().unwrap();
    let shop = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                "shop"
            }),
        )
        .layer(guard.layer());
    let listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let shop_addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, shop).into_future());
    let console = console_router(&guard, &gate, &events);
    let internal = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let console_addr = internal.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(internal, console).await });
    (guard, shop_addr, console_addr)
}

fn console_router(guard: &Guard, gate: &Gate, events: &EventLog) -> Router {
    Console::new(guard.clone())
        .token(TOKEN)
        .gate(gate)
        .events(events)
        .router()
        .unwrap()
}

/// One `GET /` from `from` with `ua`; errors (refused connections) are
/// part of a flood.
async fn hit(from: &str, to: SocketAddr, ua: &str, browser: bool) -> bool {
    let go = async {
        let stream = connect_from(from, to).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let mut req = hyper::Request::get("/").header("host", "shop.test");
        if browser {
            // What Firefox sends for a page, in its order.
            req = req
                .header("user-agent", ua)
                .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
                .header("accept-language", "en-GB,en;q=0.8")
                .header("accept-encoding", "gzip, deflate, br")
                .header("connection", "keep-alive")
                .header("upgrade-insecure-requests", "1")
                .header("sec-fetch-dest", "document")
                .header("sec-fetch-mode", "navigate")
                .header("sec-fetch-site", "none")
                .header("sec-fetch-user", "?1");
        } else {
            req = req.header("user-agent", ua).header("accept", "*/*");
        }
        let res = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .ok()?;
        let ok = res.status().is_success();
        res.into_body().collect().await.ok()?;
        Some(ok)
    };
    tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Customers: 40 browsers, about 150 requests a second, until `stop`.
fn customers(to: SocketAddr, stop: Arc<AtomicBool>) {
    for task in 0..3u32 {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut i = task;
            while !stop.load(Ordering::Relaxed) {
                let from = format!("127.0.1.{}", 1 + i % 40);
                hit(&from, to, FIREFOX, true).await;
                i += 3;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
}

/// The botnet: 2,000 addresses in 127.2.0.0/16, as fast as 12 tasks go,
/// until `stop` or a minute at most.
fn botnet(to: SocketAddr, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let end = Instant::now() + Duration::from_secs(60);
    for task in 0..12u32 {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        tokio::spawn(async move {
            let mut i = task;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let bot = i % 2_000;
                let from = format!("127.2.{}.{}", bot / 250, 1 + bot % 250);
                let ua = BOT_AGENTS[(i % 4) as usize];
                hit(&from, to, ua, false).await;
                sent.fetch_add(1, Ordering::Relaxed);
                i += 12;
            }
        });
    }
}

/// Headless Chromium with a DevTools websocket.
struct Browser {
    child: tokio::process::Child,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    /// Every event received, in order.
    events: Vec<Value>,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromium_path() -> String {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return p;
    }
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "chromium is not installed: run scripts/test (it installs Debian's `chromium`), or \
         `apt-get install -y chromium`, or set CHROMIUM to a Chromium binary"
    );
}

impl Browser {
    async fn launch() -> Browser {
        let profile = std::env::temp_dir().join(format!("fg-console-{}", std::process::id()));
        std::fs::create_dir_all(&profile).unwrap();
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        let mut cmd = tokio::process::Command::new(chromium_path());
        cmd.args([
            "--headless=new",
            "--remote-debugging-port=0",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1280,1300",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
        if root {
            // Chromium's sandbox refuses to run as root.
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("chromium starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited before listening");
        })
        .await
        .expect("chromium says where DevTools listens within 30 s");
        // Keep reading stderr so that chromium never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        Browser {
            child,
            ws,
            next_id: 0,
            events: Vec::new(),
            _profile: TempDir(profile),
        }
    }

    /// Calls `method`, on the page's `session` if given; returns the result.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let deadline = Duration::from_secs(30);
        tokio::time::timeout(deadline, async {
            loop {
                let m = self.ws.next().await.expect("DevTools open").unwrap();
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == json!(id) {
                    if let Some(e) = v.get("error") {
                        panic!("{method}: {e}");
                    }
                    return v["result"].clone();
                }
                if v.get("method").is_some() {
                    self.events.push(v);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method} answered within 30 s"))
    }

    /// Evaluates `expr` in the page; returns its value.
    async fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }
}

/// Decodes standard base64 (the screenshot).
fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_flood_as_text_and_lifts_a_ban() {
    let chromium = chromium_path();
    let (guard, shop, console) = start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));

    // Calm first, so that detection learns a baseline; then the flood.
    customers(shop, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    botnet(shop, Arc::clone(&stop), Arc::clone(&sent));
    let t0 = Instant::now();
    while !guard.under_attack() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no attack declared after {} flood requests: {:#?}",
            sent.load(Ordering::Relaxed),
            guard.snapshot().detection
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    guard.ban(MANUAL_BAN.parse().unwrap(), Duration::from_secs(3600));

    let mut b = Browser::launch().await;
    eprintln!("driving {chromium}");
    let target = b
        .call(None, "Target.createTarget", json!({"url": "about:blank"}))
        .await;
    let attached = b
        .call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await;
    let session = attached["sessionId"].as_str().unwrap().to_owned();
    let s = Some(session.as_str());
    b.call(s, "Network.enable", json!({})).await;
    b.call(s, "Page.enable", json!({})).await;
    b.call(s, "Runtime.enable", json!({})).await;
    let origin = format!("http://{console}");
    b.call(
        s,
        "Page.navigate",
        json!({"url": format!("{origin}/?token={TOKEN}")}),
    )
    .await;

    // The page shows the attack, a flagged cluster, an offender and the
    // markup from the user agents, as text.
    let ready = "(() => { const s = document.getElementById('status'); \
        const t = document.body ? document.body.textContent : ''; \
        const rows = (id) => document.querySelectorAll('#' + id + ' tbody td:not(.empty)').length; \
        return !!s && s.textContent === 'UNDER ATTACK' && rows('t-flagged') > 0 \
            && rows('t-offenders') > 0 && t.includes('<script>window.__xss=1') \
            && t.includes('<img') \
            && !!document.querySelector('button[data-unban=\"203.0.113.0/24\"]') \
            && !!document.querySelector('#t-events td.attack_started') \
            && document.querySelectorAll('#c-rate polyline').length > 0; })()";
    let t0 = Instant::now();
    loop {
        if b.eval(&session, ready).await == json!(true) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let text = b
                .eval(
                    &session,
                    "document.body ? document.body.innerText : 'no body'",
                )
                .await;
            panic!("the page did not show the attack in 30 s:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Markup from clients created no element and ran nothing.
    let safe = b
        .eval(
            &session,
            "JSON.stringify({scripts: document.querySelectorAll('script').length, \
             imgs: document.querySelectorAll('img').length, \
             xss: typeof window.__xss, \
             flagged: document.querySelector('#t-flagged tbody').textContent})",
        )
        .await;
    let safe: Value = serde_json::from_str(safe.as_str().unwrap()).unwrap();
    assert_eq!(safe["scripts"], 1, "only the console's own script: {safe}");
    assert_eq!(safe["imgs"], 0, "{safe}");
    assert_eq!(safe["xss"], "undefined", "{safe}");
    eprintln!(
        "flagged clusters as the page shows them: {}",
        safe["flagged"]
    );

    if let Ok(path) = std::env::var("FLOODGUARD_CONSOLE_SCREENSHOT") {
        // A few more seconds of flood on the charts first.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let shot = b
            .call(s, "Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64(shot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(&path, &png).unwrap();
        eprintln!("screenshot: {path} ({} bytes)", png.len());
    }

    // The page's unban button lifts the ban in the guard.
    let probe = "203.0.113.77".parse().unwrap();
    assert!(guard.is_banned(probe));
    b.eval(
        &session,
        "document.querySelector('button[data-unban=\"203.0.113.0/24\"]').click()",
    )
    .await;
    let t0 = Instant::now();
    while guard.is_banned(probe) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the unban button did not lift the ban"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    loop {
        let msg = b
            .eval(&session, "document.getElementById('msg').textContent")
            .await;
        if msg == json!("ban on 203.0.113.0/24 lifted") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "message: {msg}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every request the page made went to the console's own origin.
    b.call(s, "Runtime.evaluate", json!({"expression": "1"}))
        .await;
    let urls: Vec<String> = b
        .events
        .iter()
        .filter(|e| e["method"] == "Network.requestWillBeSent")
        .map(|e| e["params"]["request"]["url"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        urls.iter().any(|u| u.ends_with("?api=unban")),
        "the unban went through the network: {urls:?}"
    );
    let others: Vec<&String> = urls
        .iter()
        .filter(|u| !u.starts_with(&format!("{origin}/")))
        .collect();
    assert!(others.is_empty(), "requests to other origins: {others:?}");
    assert!(urls.len() >= 4, "{urls:?}");

    stop.store(true, Ordering::Relaxed);
    let _ = b.child.kill().await;
    eprintln!(
        "flood: {} requests; page requests: {}",
        sent.load(Ordering::Relaxed),
        urls.len()
    );
}
