//! Who sends what: legitimate shoppers and the attack scenarios. Every
//! loop stops at the run's deadline; every connect and exchange has a
//! timeout; all traffic goes to the shop on 127.0.0.1.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::JoinSet;

use crate::Scenario;
use crate::http1::{self, Conn, Scored};
use crate::shop::PROXY;

/// Width of a timeline bucket.
pub const BUCKET: Duration = Duration::from_millis(100);
/// A legitimate request slower than this counts as failed.
const LEGIT_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// An attack exchange is abandoned after this.
pub const ATTACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How many legitimate shoppers, and bots in the botnets.
pub const SHOPPERS: u32 = 200;
pub const BOTS: u32 = 5_000;
const FLOOD_CONNECTIONS: u32 = 64;
const SLOW_ADDRESSES: u32 = 30;
const SLOW_PER_ADDRESS: u32 = 300;
/// The wide slowloris: this many addresses, one slow connection each, each
/// address in a /24 of its own (and, over IPv6, all in one /64).
pub const SLOW_WIDE: u32 = 9_000;
/// The /64 the IPv6 slowloris comes from, routed to loopback by the
/// harness (`main::route_v6_loopback`).
pub const SLOW_V6_NET: &str = "fd00:f1::";
/// A fresh visitor every this long, each from an address never seen.
const FRESH_EVERY: Duration = Duration::from_millis(200);
/// How long a fresh visitor waits for its first answer.
pub const FRESH_TIMEOUT: Duration = Duration::from_secs(5);
/// The search overload's crowd offers this many times the search
/// route's measured capacity.
const OVERLOAD_FACTOR: f64 = 5.0;
/// Mean pause between one crowd member's searches (`overload_client`).
const OVERLOAD_THINK: Duration = Duration::from_millis(100);
/// The crowd when the capacity is unknown, and its bounds.
const OVERLOAD_CLIENTS: (u32, u32, u32) = (500, 20, 5_000);

/// Connections of the capacity calibration (`calibrate`).
const CALIBRATION_CONNECTIONS: u32 = 16;

/// How a legitimate request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// An answer with this status.
    Status(u16),
    /// No answer within `LEGIT_TIMEOUT` (or no connection within
    /// `CONNECT_TIMEOUT`).
    Timeout,
    /// The connection could not be made.
    ConnectFailed,
    /// The connection broke (reset, closed) before an answer.
    Broken,
}

impl Outcome {
    /// A short name for tables: the status, or what went wrong.
    pub fn name(self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Timeout => "timeout".into(),
            Outcome::ConnectFailed => "connect".into(),
            Outcome::Broken => "broken".into(),
        }
    }
}

impl Outcome {
    /// Refused by a defence: 429 (rate limit), 403 (ban, block,
    /// challenge) or 503 (shed).
    pub fn refused(self) -> bool {
        matches!(self, Outcome::Status(429 | 403 | 503))
    }
}

/// One legitimate request: which shopper sent it to which route, when it
/// started (since the run began), how long it took, how it ended, and
/// what the guard's scoring did with it (served requests only, from the
/// shop's `x-fg-action`).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub shopper: u32,
    pub route: &'static str,
    pub at: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    pub ok: bool,
    pub action: Option<Scored>,
}

/// How one attack unit (a request, or a slow connection's second) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A 2xx (a slow connection still open).
    Served,
    /// Refused: 429, 403 or 503, or the connection refused or closed.
    Refused,
    /// Neither: a timeout or another status.
    Failed,
}

impl Unit {
    /// The unit an attack exchange's result (`attack_exchange_status`)
    /// makes: no connection is a refusal (the gate's), a broken or timed
    /// out exchange a failure.
    pub fn of(status: Option<Option<u16>>) -> Unit {
        match status {
            Some(Some(200..300)) => Unit::Served,
            Some(Some(429 | 403 | 503)) | None => Unit::Refused,
            Some(_) => Unit::Failed,
        }
    }
}

/// One attacking client's record (an address; the rotating IPv6 attack's
/// /64), for the bots' confusion counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct BotRecord {
    pub units: u64,
    pub served: u64,
    pub refused: u64,
    /// Refusals since its last served unit (or since it began).
    pub refused_since_served: u64,
    /// When its last served unit ended, since the run began.
    pub last_served: Option<Duration>,
}

/// What a run's traffic recorded.
pub struct Recorder {
    pub start: Instant,
    /// `start` in Unix milliseconds, to place the shop's events.
    pub start_unix_ms: u64,
    pub legit: Mutex<Vec<Sample>>,
    /// Per bucket: attack units sent, and admitted (a 2xx; for slow
    /// connections, a connection-second held open).
    pub attack_sent: Vec<AtomicU64>,
    pub attack_admitted: Vec<AtomicU64>,
    /// Per bucket: searches answered with a 2xx (attack and shoppers), by
    /// when the answer came.
    pub search_served: Vec<AtomicU64>,
    /// Round trips (ms) of attack requests answered 503 (shed), as the
    /// client on loopback saw them.
    pub shed_round_trips: Mutex<Vec<f64>>,
    /// Every legitimate client's address and id (`Sample::shopper`).
    pub legit_clients: Mutex<HashMap<IpAddr, u32>>,
    /// Every attacking client's record, by address (`bot_key`).
    pub bots: Mutex<HashMap<IpAddr, BotRecord>>,
    /// Fresh visitors: when each came (since `start`), and how long its
    /// first answer took (`None`: none within `FRESH_TIMEOUT`).
    pub fresh: Mutex<Vec<(Duration, Option<Duration>)>>,
}

impl Recorder {
    pub fn new(run: Duration) -> Arc<Self> {
        let buckets = (run.as_millis() / BUCKET.as_millis()) as usize + 20;
        Arc::new(Recorder {
            start: Instant::now(),
            start_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            legit: Mutex::new(Vec::with_capacity(4096)),
            attack_sent: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            attack_admitted: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            search_served: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            shed_round_trips: Mutex::new(Vec::with_capacity(16_384)),
            legit_clients: Mutex::new(HashMap::new()),
            bots: Mutex::new(HashMap::new()),
            fresh: Mutex::new(Vec::new()),
        })
    }

    fn bucket(&self, at: Instant) -> usize {
        let i = (at.duration_since(self.start).as_millis() / BUCKET.as_millis()) as usize;
        i.min(self.attack_sent.len() - 1)
    }

    /// An attack unit from `from` just ended as `unit`.
    pub fn attack(&self, from: IpAddr, unit: Unit) {
        let now = Instant::now();
        let b = self.bucket(now);
        self.attack_sent[b].fetch_add(1, Ordering::Relaxed);
        if unit == Unit::Served {
            self.attack_admitted[b].fetch_add(1, Ordering::Relaxed);
        }
        let mut bots = self.bots.lock();
        let r = bots.entry(bot_key(from)).or_default();
        r.units += 1;
        match unit {
            Unit::Served => {
                r.served += 1;
                r.refused_since_served = 0;
                r.last_served = Some(now.duration_since(self.start));
            }
            Unit::Refused => {
                r.refused += 1;
                r.refused_since_served += 1;
            }
            Unit::Failed => {}
        }
    }

    /// A legitimate client `id` sends from `from`.
    pub fn legit_client(&self, id: u32, from: IpAddr) {
        self.legit_clients.lock().insert(from, id);
    }

    /// Records a legitimate request that began at `began`.
    pub fn legit(
        &self,
        sample: (u32, &'static str),
        began: Instant,
        reply: (Outcome, Option<Scored>),
    ) {
        let (shopper, route) = sample;
        let (outcome, action) = reply;
        let ok = matches!(outcome, Outcome::Status(200..300));
        if ok && route == "/search" {
            self.search_served();
        }
        self.legit.lock().push(Sample {
            shopper,
            route,
            at: began.duration_since(self.start),
            latency: began.elapsed(),
            outcome,
            ok,
            action,
        });
    }

    /// A search was answered with a 2xx just now.
    fn search_served(&self) {
        let b = self.bucket(Instant::now());
        self.search_served[b].fetch_add(1, Ordering::Relaxed);
    }
}

/// The key of an attacking client: its address; an IPv6 address's /64
/// (the rotating attack draws from one).
pub fn bot_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (!0u128 << 64)).into()),
        v4 => v4,
    }
}

/// Sleeps `d`, but never past `stop`, so every task ends at the deadline.
pub async fn nap(d: Duration, stop: Instant) {
    tokio::time::sleep(d.min(stop.saturating_duration_since(Instant::now()))).await;
}

/// A seeded random source: runs are repeatable.
#[derive(Clone)]
pub struct Rng(fastrand::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(fastrand::Rng::with_seed(seed))
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n)
    }

    /// Uniform in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.0.u64(lo..hi))
    }

    /// A random word of `lo..hi` letters and digits.
    pub fn word(&mut self, lo: usize, hi: usize) -> String {
        let n = self.0.usize(lo..hi);
        (0..n).map(|_| self.0.alphanumeric()).collect()
    }
}

pub fn v4(a: u32, b: u32, c: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a as u8, b as u8, c as u8))
}

/// A desktop Chrome's request, headers in Chrome's order and casing.
pub fn browser_request(path: &str, method: &str, session: u32) -> Vec<u8> {
    let body = if method == "POST" {
        "user=alice&password=correct-horse"
    } else {
        ""
    };
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive\r\n\
         sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\nsec-ch-ua-mobile: ?0\r\n\
         sec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
         Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
         Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\n\
         Referer: http://shop.test/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\nCookie: session=s{session:08x}; consent=1\r\n"
    );
    if !body.is_empty() {
        r.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// A page view of a shopper: mostly products, some searches. Returns the
/// path, the method and the route (the shop's route pattern).
fn shopper_path(rng: &mut Rng) -> (String, &'static str, &'static str) {
    match rng.below(100) {
        0..25 => ("/".into(), "GET", "/"),
        25..65 => (
            format!("/product/{}", rng.below(2_000)),
            "GET",
            "/product/{id}",
        ),
        65..80 => (
            format!("/search?q=shoes+{}", rng.below(50)),
            "GET",
            "/search",
        ),
        80..95 => ("/static/app.css".into(), "GET", "/static/app.css"),
        _ => ("/login".into(), "POST", "/login"),
    }
}

/// Starts the legitimate shoppers `ids` (at most 256: shopper `i` sends
/// from 127.20.`i`.1) at `start`: each from its own address, keep-alive, a
/// think time of 0.3 to 1.5 s between page views, until `stop`.
pub fn shoppers(
    set: &mut JoinSet<()>,
    shop: SocketAddr,
    rec: &Arc<Recorder>,
    ids: std::ops::Range<u32>,
    (start, stop): (Instant, Instant),
) {
    for i in ids {
        let mut client = Legit::new(i, v4(20, i, 1), shop, rec).keeping_cookies();
        set.spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut rng = Rng::new(u64::from(i) + 1);
            nap(rng.millis(0, 500), stop).await;
            while Instant::now() < stop {
                let (path, method, route) = shopper_path(&mut rng);
                let request = browser_request(&path, method, i);
                client.request(&request, route).await;
                // A quarter of page views end a visit: the next one comes
                // on a new connection, as a new tab or visitor would.
                if rng.below(4) == 0 {
                    client.hang_up();
                }
                nap(rng.millis(300, 1_500), stop).await;
            }
        });
    }
}

/// A legitimate client: its id and address, its keep-alive connection to
/// the shop, where its requests are recorded, and, for a browser, its
/// cookie jar.
pub struct Legit {
    id: u32,
    from: IpAddr,
    shop: SocketAddr,
    rec: Arc<Recorder>,
    conn: Option<Conn>,
    jar: Option<Jar>,
}

/// A browser's cookie jar, one cookie deep: the last `name=value` the shop
/// set (floodguard's session cookie, with `--session`), sent back in the
/// request's `Cookie` header. Without one set, requests go out unchanged.
#[derive(Default)]
struct Jar(Option<String>);

impl Jar {
    /// `request` with the held cookie added: at the end of its `Cookie`
    /// header, where Chrome puts a newer cookie, or in a `Cookie` header of
    /// its own at the end of the head.
    fn apply<'r>(&self, request: &'r [u8]) -> std::borrow::Cow<'r, [u8]> {
        let Some(cookie) = &self.0 else {
            return request.into();
        };
        let Some(end) = find(request, b"\r\n\r\n") else {
            return request.into();
        };
        let head = &request[..end];
        let mut out = Vec::with_capacity(request.len() + cookie.len() + 12);
        match find(head, b"\r\nCookie: ") {
            Some(at) => {
                let eol = at + 2 + find(&head[at + 2..], b"\r\n").unwrap_or(head.len() - at - 2);
                out.extend_from_slice(&request[..eol]);
                out.extend_from_slice(b"; ");
                out.extend_from_slice(cookie.as_bytes());
                out.extend_from_slice(&request[eol..]);
            }
            None => {
                out.extend_from_slice(&request[..end + 2]);
                out.extend_from_slice(b"Cookie: ");
                out.extend_from_slice(cookie.as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&request[end + 2..]);
            }
        }
        out.into()
    }

    /// Keeps the cookie a response set.
    fn keep(&mut self, set: Option<String>) {
        if let Some(c) = set {
            self.0 = Some(c);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Legit {
    /// Client `id` sending from `from` (registered as legitimate now).
    pub fn new(id: u32, from: IpAddr, shop: SocketAddr, rec: &Arc<Recorder>) -> Legit {
        rec.legit_client(id, from);
        Legit {
            id,
            from,
            shop,
            rec: Arc::clone(rec),
            conn: None,
            jar: None,
        }
    }

    /// Keeps the cookies the shop sets and sends them back, as a browser
    /// does (API clients and tools keep none).
    pub fn keeping_cookies(mut self) -> Legit {
        self.jar = Some(Jar::default());
        self
    }

    /// Sends `request` (to `route`, the shop's route pattern) on the
    /// client's connection, reconnecting if needed, and records it.
    pub async fn request(&mut self, request: &[u8], route: &'static str) -> Outcome {
        let began = Instant::now();
        let request = match &self.jar {
            Some(jar) => jar.apply(request),
            None => request.into(),
        };
        let (outcome, scored, set_cookie) =
            legit_exchange(&mut self.conn, self.from, self.shop, &request).await;
        if let Some(jar) = &mut self.jar {
            jar.keep(set_cookie);
        }
        self.rec.legit((self.id, route), began, (outcome, scored));
        outcome
    }

    /// Closes the connection: the next request opens a new one.
    pub fn hang_up(&mut self) {
        self.conn = None;
    }
}

/// One exchange on the shopper's connection, reconnecting if needed.
async fn legit_exchange(
    conn: &mut Option<Conn>,
    from: IpAddr,
    shop: SocketAddr,
    request: &[u8],
) -> (Outcome, Option<Scored>, Option<String>) {
    let failed = |e: std::io::Error, connecting: bool| match e.kind() {
        std::io::ErrorKind::TimedOut => Outcome::Timeout,
        _ if connecting => Outcome::ConnectFailed,
        _ => Outcome::Broken,
    };
    if conn.is_none() {
        match http1::connect(from, shop, CONNECT_TIMEOUT).await {
            Ok(c) => *conn = Some(c),
            Err(e) => return (failed(e, true), None, None),
        }
    }
    let c = conn.as_mut().expect("just connected");
    match c.exchange(request, LEGIT_TIMEOUT).await {
        Ok(reply) => {
            if reply.closing {
                *conn = None;
            }
            (
                Outcome::Status(reply.status),
                reply.action,
                reply.set_cookie,
            )
        }
        Err(e) => {
            *conn = None;
            (failed(e, false), None, None)
        }
    }
}

/// Starts `scenario`'s attack traffic on `rt` (a runtime of its own, so
/// the attackers' tasks never queue ahead of the shoppers' and distort
/// their latencies), all stopping at `stop`. `search_capacity` (searches
/// a second) sizes the search overload's crowd.
pub fn attack(
    set: &mut JoinSet<()>,
    rt: &tokio::runtime::Handle,
    (scenario, search_capacity): (Scenario, Option<f64>),
    (shop, shop_v6_port): (SocketAddr, u16),
    rec: &Arc<Recorder>,
    stop: Instant,
) {
    match scenario {
        Scenario::SingleFlood => {
            for w in 0..FLOOD_CONNECTIONS {
                let rec = Arc::clone(rec);
                set.spawn_on(flood_worker(v4(66, 6, 6), shop, rec, stop, w, None), rt);
            }
        }
        Scenario::Ipv6Rotation => {
            for w in 0..FLOOD_CONNECTIONS {
                let rec = Arc::clone(rec);
                let proxy: IpAddr = PROXY.parse().expect("address");
                set.spawn_on(flood_worker(proxy, shop, rec, stop, w, Some(w)), rt);
            }
        }
        Scenario::Botnet | Scenario::MimicBotnet => {
            let mimic = scenario == Scenario::MimicBotnet;
            for k in 0..BOTS {
                let rec = Arc::clone(rec);
                // 100 /16s, 50 /24s in each: no network holds two bots.
                let from = if mimic {
                    v4(150 + k % 100, k / 100, 9)
                } else {
                    v4(100 + k % 100, k / 100, 7)
                };
                set.spawn_on(bot(from, shop, rec, stop, k, mimic), rt);
            }
        }
        Scenario::Slowloris => {
            for a in 0..SLOW_ADDRESSES {
                for c in 0..SLOW_PER_ADDRESS {
                    let rec = Arc::clone(rec);
                    let from = v4(88, 0, a + 1);
                    set.spawn_on(slow_client(from, shop, rec, stop, c, false), rt);
                }
            }
        }
        Scenario::SlowlorisWide => {
            for k in 0..SLOW_WIDE {
                let rec = Arc::clone(rec);
                let from = v4(100 + k / 256, k % 256, 9);
                set.spawn_on(slow_client(from, shop, rec, stop, k, true), rt);
            }
        }
        Scenario::SlowlorisV6 => {
            let net: std::net::Ipv6Addr = SLOW_V6_NET.parse().expect("address");
            let shop_v6 = SocketAddr::new("::1".parse().expect("address"), shop_v6_port);
            let mut rng = Rng::new(0x5106);
            for k in 0..SLOW_WIDE {
                let rec = Arc::clone(rec);
                let host = u128::from(rng.below(u64::MAX)) | 1;
                let from = IpAddr::V6((u128::from(net) | host).into());
                set.spawn_on(slow_client(from, shop_v6, rec, stop, k, true), rt);
            }
        }
        Scenario::SearchOverload => {
            for k in 0..overload_clients(search_capacity) {
                let rec = Arc::clone(rec);
                let from = v4(30 + k % 20, k / 20, 2);
                set.spawn_on(overload_client(from, shop, rec, stop, k), rt);
            }
        }
        // The traffic shapes floodguard was not tuned on start in
        // `shapes::start`.
        _ => {}
    }
}

/// As fast as it can on one keep-alive connection, reconnecting when
/// refused; `rotate` sends a random address of one IPv6 /64 in
/// X-Forwarded-For (through the trusted proxy address).
async fn flood_worker(
    from: IpAddr,
    shop: SocketAddr,
    rec: Arc<Recorder>,
    stop: Instant,
    worker: u32,
    rotate: Option<u32>,
) {
    let mut rng = Rng::new(0xf100d + u64::from(worker));
    let mut conn: Option<Conn> = None;
    while Instant::now() < stop {
        let xff = rotate.map(|_| {
            format!(
                "X-Forwarded-For: 2001:db8:dead:beef:{:x}:{:x}:{:x}:{:x}\r\n",
                rng.below(65_536),
                rng.below(65_536),
                rng.below(65_536),
                rng.below(65_536)
            )
        });
        let request = format!(
            "GET /search?q=flood{} HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: flood/1.0\r\n{}\r\n",
            rng.below(1_000),
            xff.unwrap_or_default()
        );
        let status = attack_exchange_status(&mut conn, from, shop, request.as_bytes()).await;
        // The rotating attack's client is its /64 (`bot_key`).
        let client = match rotate {
            Some(_) => "2001:db8:dead:beef::".parse().expect("address"),
            None => from,
        };
        rec.attack(client, Unit::of(status));
        if status.is_none() {
            // Refused at connect: do not spin.
            nap(Duration::from_millis(10), stop).await;
        }
    }
}

/// One attack exchange: `Some(true)` for a 2xx, `Some(false)` for a
/// refusal or a broken exchange, `None` when it could not even connect.
async fn attack_exchange(
    conn: &mut Option<Conn>,
    from: IpAddr,
    shop: SocketAddr,
    request: &[u8],
) -> Option<bool> {
    attack_exchange_status(conn, from, shop, request)
        .await
        .map(|s| s.is_some_and(|s| (200..300).contains(&s)))
}

/// One attack exchange: `Some(Some(status))` for an answer, `Some(None)`
/// for a broken exchange, `None` when it could not even connect.
pub async fn attack_exchange_status(
    conn: &mut Option<Conn>,
    from: IpAddr,
    shop: SocketAddr,
    request: &[u8],
) -> Option<Option<u16>> {
    if conn.is_none() {
        *conn = Some(http1::connect(from, shop, CONNECT_TIMEOUT).await.ok()?);
    }
    let c = conn.as_mut().expect("just connected");
    match c.exchange(request, ATTACK_TIMEOUT).await {
        Ok(reply) => {
            if reply.closing {
                *conn = None;
            }
            Some(Some(reply.status))
        }
        Err(_) => {
            *conn = None;
            Some(None)
        }
    }
}

/// A bot: one search every 1.5 s or so, under any per-address limit; all
/// of them together far above what search can serve. Plain bots look like
/// a scripting library; mimics claim a browser but send what real bots do
/// (no Accept-Language, odd Accept-Encoding, no sec-fetch headers, no
/// cookies, a third of them HTTP/1.0).
async fn bot(
    from: IpAddr,
    shop: SocketAddr,
    rec: Arc<Recorder>,
    stop: Instant,
    k: u32,
    mimic: bool,
) {
    let mut rng = Rng::new(0xb07 + u64::from(k));
    nap(rng.millis(0, 1_000), stop).await;
    let http10 = mimic && k % 3 == 0;
    let mut conn: Option<Conn> = None;
    while Instant::now() < stop {
        let q = rng.below(10_000);
        let request = if !mimic {
            format!(
                "GET /search?q=deal{q} HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: python-requests/2.32.3\r\n\
                 Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
            )
        } else {
            let version = if http10 { "1.0" } else { "1.1" };
            format!(
                "GET /search?q=deal{q} HTTP/{version}\r\nHost: shop.test\r\n\
                 User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n\
                 Accept: */*\r\nAccept-Encoding: identity\r\n\r\n"
            )
        };
        let status = attack_exchange_status(&mut conn, from, shop, request.as_bytes()).await;
        rec.attack(from, Unit::of(status));
        if http10 {
            conn = None;
        }
        nap(rng.millis(1_000, 2_000), stop).await;
    }
}

/// Slowloris: opens a connection and sends a header line a second, never
/// finishing the request. Each second a connection is still open counts as
/// one admitted unit; a refused or closed one as a sent unit only. With
/// `reconnect`, a connection the server closes is opened again straight
/// away, and a refused one a second later, as a slowloris tool keeps its
/// count of sockets (retrying a refusal faster would make it a SYN flood,
/// which the kernel's SYN cookies and not the service answer).
async fn slow_client(
    from: IpAddr,
    shop: SocketAddr,
    rec: Arc<Recorder>,
    stop: Instant,
    c: u32,
    reconnect: bool,
) {
    let mut rng = Rng::new(0x510 + u64::from(c));
    nap(rng.millis(0, 1_000), stop).await;
    while Instant::now() < stop {
        let Ok(mut conn) = http1::connect(from, shop, CONNECT_TIMEOUT).await else {
            rec.attack(from, Unit::Refused);
            if !reconnect {
                return;
            }
            nap(Duration::from_secs(1), stop).await;
            continue;
        };
        let mut open = conn
            .send_raw(b"GET / HTTP/1.1\r\nHost: shop.test\r\n")
            .await
            .is_ok();
        while Instant::now() < stop {
            open = open && !conn.closed_by_peer().await;
            rec.attack(from, if open { Unit::Served } else { Unit::Refused });
            if !open {
                break;
            }
            nap(Duration::from_secs(1), stop).await;
            open = conn
                .send_raw(format!("X-Pad-{c}: {}\r\n", rng.below(1000)).as_bytes())
                .await
                .is_ok();
        }
        if !reconnect {
            return;
        }
    }
}

/// Fresh visitors from `start` to `stop`: every `FRESH_EVERY` a browser
/// from an address never seen before asks for the home page on a new
/// connection; each one's time to its first answer (the status line)
/// is recorded.
pub fn fresh_visitors(set: &mut JoinSet<()>, shop: SocketAddr, rec: &Arc<Recorder>, stop: Instant) {
    let rec = Arc::clone(rec);
    set.spawn(async move {
        let mut visitors = JoinSet::new();
        let mut i = 0u32;
        while Instant::now() < stop {
            let rec = Arc::clone(&rec);
            let from = v4(250, i / 250, i % 250 + 1);
            visitors.spawn(async move {
                let began = Instant::now();
                let request = browser_request("/", "GET", 300_000 + i);
                let answered = tokio::time::timeout(FRESH_TIMEOUT, async {
                    let mut conn = http1::connect(from, shop, FRESH_TIMEOUT).await.ok()?;
                    conn.exchange(&request, FRESH_TIMEOUT).await.ok()
                })
                .await
                .ok()
                .flatten()
                .map(|_| began.elapsed());
                rec.fresh
                    .lock()
                    .push((began.duration_since(rec.start), answered));
            });
            i += 1;
            nap(FRESH_EVERY, stop).await;
        }
        while visitors.join_next().await.is_some() {}
    });
}

/// How many `overload_client`s offer `OVERLOAD_FACTOR` times `capacity`
/// (searches a second): each sends about one search per `OVERLOAD_THINK`.
fn overload_clients(capacity: Option<f64>) -> u32 {
    let (unknown, least, most) = OVERLOAD_CLIENTS;
    capacity.map_or(unknown, |c| {
        let n = (OVERLOAD_FACTOR * c * OVERLOAD_THINK.as_secs_f64()).ceil();
        (n.min(f64::from(most)) as u32).max(least)
    })
}

/// Legitimate-looking search traffic from many addresses, each under any
/// per-address limit (ten a second), together about `OVERLOAD_FACTOR`
/// times what search can serve (`overload_clients`).
async fn overload_client(
    from: IpAddr,
    shop: SocketAddr,
    rec: Arc<Recorder>,
    stop: Instant,
    k: u32,
) {
    let mut rng = Rng::new(0x5ea + u64::from(k));
    nap(rng.millis(0, 200), stop).await;
    let mut conn: Option<Conn> = None;
    while Instant::now() < stop {
        let request = browser_request(
            &format!("/search?q=sale+{}", rng.below(100)),
            "GET",
            100_000 + k,
        );
        let began = Instant::now();
        let status = attack_exchange_status(&mut conn, from, shop, &request).await;
        let admitted = matches!(status, Some(Some(200..300)));
        if admitted {
            rec.search_served();
        } else if status == Some(Some(503)) {
            let ms = began.elapsed().as_secs_f64() * 1e3;
            rec.shed_round_trips.lock().push(ms);
        }
        rec.attack(from, Unit::of(status));
        let think = OVERLOAD_THINK.as_millis() as u64;
        nap(rng.millis(think / 2, think * 3 / 2), stop).await;
    }
}

/// The search route's capacity, measured before a run on the shop's
/// undefended calibration port (same process, same runtime and blocking
/// pool, no guard): `CALIBRATION_CONNECTIONS` keep-alive connections
/// search back to back for `run`; searches answered per second. Nothing
/// else runs meanwhile, so this is what the route can serve on this
/// machine at most.
pub async fn calibrate(shop: SocketAddr, run: Duration) -> f64 {
    let stop = Instant::now() + run;
    let mut set = JoinSet::new();
    for c in 0..CALIBRATION_CONNECTIONS {
        set.spawn(async move {
            let from = v4(40, c, 1);
            let mut rng = Rng::new(0xca1 + u64::from(c));
            let mut conn: Option<Conn> = None;
            let mut served = 0u64;
            while Instant::now() < stop {
                let path = format!("/search?q=calibrate+{}", rng.below(100));
                let request = browser_request(&path, "GET", 200_000 + c);
                if attack_exchange(&mut conn, from, shop, &request).await == Some(true)
                    && Instant::now() <= stop
                {
                    served += 1;
                }
            }
            served
        });
    }
    let mut served = 0;
    while let Some(n) = set.join_next().await {
        served += n.unwrap_or(0);
    }
    served as f64 / run.as_secs_f64()
}
