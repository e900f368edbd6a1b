//! The service under attack: a small axum shop, run in its own process
//! (the harness re-executes itself with `--serve <defence>`) so that its
//! CPU time and peak memory are measured alone.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::Html;
use axum::routing::{get, post};
use floodguard::http::{
    ClientIpConfig, Event, EventLog, Guard, GuardBuilder, GuardDecision, Overload, Rule, Scoring,
    SessionCookie, Weights,
};
use tokio::io::AsyncBufReadExt;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;

use crate::Defence;

/// The load generator's proxy address: the IPv6-rotation attack sends its
/// X-Forwarded-For through it, and defences that read forwarding headers
/// trust it, as a deployment behind a load balancer would.
pub const PROXY: &str = "127.77.0.1";

/// Work units of one search; about a millisecond of CPU here.
const SEARCH_WORK: u32 = 60_000;

/// The catalogue's product names, built once.
fn catalogue() -> Arc<Vec<String>> {
    Arc::new(
        (0..2_000)
            .map(|i| format!("product {i} colour {}", i % 17))
            .collect(),
    )
}

async fn home() -> Html<String> {
    page("Home", 20)
}

async fn product(Path(id): Path<u32>) -> Html<String> {
    page(&format!("Product {id}"), 5)
}

/// Search: scans the catalogue and scores every entry, a stand-in for a
/// query the database cannot answer from an index. This is the route an
/// attacker who has studied the shop goes for. The scan runs on Tokio's
/// blocking pool, as CPU-heavy work in an async service should (and as a
/// database query waits outside the runtime): the runtime's workers stay
/// free to read requests and answer cheap pages, and searches queue where
/// their latency shows.
async fn search(
    Query(q): Query<std::collections::HashMap<String, String>>,
    catalogue: Arc<Vec<String>>,
) -> Html<String> {
    let term = q.get("q").cloned().unwrap_or_default();
    let scan = tokio::task::spawn_blocking(move || {
        let mut best = 0u64;
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for round in 0..SEARCH_WORK / catalogue.len() as u32 {
            for name in catalogue.iter() {
                for b in name.bytes().chain(term.bytes()) {
                    hash = (hash ^ u64::from(b) ^ u64::from(round)).wrapping_mul(0x100_0000_01b3);
                }
                best = best.max(hash >> 48);
            }
        }
        format!("Results for {term} ({best})")
    });
    let title = scan.await.unwrap_or_else(|_| "Results".to_owned());
    page(&title, 10)
}

async fn login() -> &'static str {
    "welcome back\n"
}

async fn asset() -> &'static str {
    "body{font-family:sans-serif}\n"
}

fn page(title: &str, rows: usize) -> Html<String> {
    use std::fmt::Write;
    let mut html = format!("<!doctype html><title>{title}</title><ul>");
    for i in 0..rows {
        let _ = write!(html, "<li><a href=\"/product/{i}\">Product {i}</a></li>");
    }
    html.push_str("</ul>");
    Html(html)
}

fn shop() -> Router {
    let catalogue = catalogue();
    Router::new()
        .route("/", get(home))
        .route("/product/{id}", get(product))
        .route("/search", get(move |q| search(q, catalogue.clone())))
        .route("/login", post(login))
        .route("/static/app.css", get(asset))
}

/// floodguard as documented for this shop ("tuned"): the defaults, plus a
/// per-address budget and a global ceiling on the expensive search route,
/// and a login rule.
pub fn tuned_guard(tweaks: ShopTweaks) -> Guard {
    let second = Duration::from_secs(1);
    defaults(tweaks)
        .rule(
            Rule::per_ip("search-ip")
                .path("/search")
                .gcra(2, second)
                .burst(6),
        )
        .rule(
            Rule::global("search-all")
                .path("/search")
                .gcra(600, second)
                .burst(100),
        )
        .rule(
            Rule::per_ip("login")
                .path("/login")
                .sliding_window(10, Duration::from_secs(60)),
        )
        .build()
        .expect("valid configuration")
}

/// floodguard's defaults: the default rules, scoring and overload
/// protection, the proxy trusted; its events go to the harness. With
/// `--session`, the session cookie too.
fn defaults(tweaks: ShopTweaks) -> GuardBuilder {
    let b = Guard::builder()
        .default_rules()
        .scoring(Scoring::default().weights(tweaks.weights()))
        .overload(tweaks.apply(Overload::default().per_route()))
        .on_event(report_event)
        .client_ip(ClientIpConfig::new().trust(PROXY.parse().expect("address")));
    if tweaks.session {
        // A fixed key: the shop is a test rig, and runs stay comparable.
        b.session(SessionCookie::new(*b"flood shop key!!"))
    } else {
        b
    }
}

/// The harness's changes to the floodguard rows: overload protection, to
/// trace what a limit or a waiting room costs and buys, and the session
/// cookie.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShopTweaks {
    /// `--overload-limit N`: every limit pinned at `N`.
    pub limit: Option<u32>,
    /// `--overload-queue CAPACITY,MS`: a waiting room (`Overload::queue`).
    pub queue: Option<(usize, Duration)>,
    /// `--session`: the session cookie on (`GuardBuilder::session`).
    pub session: bool,
    /// `--without a,b`: these scoring signals weigh nothing (bits of
    /// [`SIGNALS`]), to measure what each contributes.
    pub without: u8,
    /// `--console PORT:TOKEN`: the shop's live console on 127.0.0.1:PORT,
    /// behind TOKEN (32 hex digits).
    pub console: Option<(u16, u128)>,
}

/// Zeroes one signal's weights.
type Zero = fn(&mut Weights);

/// The signals `--without` can switch off, and the weights each zeroes.
pub const SIGNALS: [(&str, Zero); 7] = [
    ("header-order", |w| w.header_order = 0.0),
    ("client-hints", |w| w.inconsistency = 0.0),
    ("anomalies", |w| w.anomaly = 0.0),
    ("automation", |w| {
        w.tool_user_agent = 0.0;
        w.empty_user_agent = 0.0;
    }),
    ("route-mix", |w| w.route_mix = 0.0),
    ("class-surge", |w| w.class_surge = 0.0),
    ("session", |w| {
        w.session_invalid = 0.0;
        w.session_not_returned = 0.0;
    }),
];

impl ShopTweaks {
    /// The default weights less the signals `--without` names.
    fn weights(self) -> Weights {
        let mut w = Weights::default();
        for (i, (_, zero)) in SIGNALS.iter().enumerate() {
            if self.without & (1 << i) != 0 {
                zero(&mut w);
            }
        }
        w
    }

    fn apply(self, mut o: Overload) -> Overload {
        if let Some(n) = self.limit {
            o = o.limits(n, n, n);
        }
        if let Some((capacity, timeout)) = self.queue {
            o = o.queue(capacity, timeout);
        }
        o
    }
}

fn default_guard(tweaks: ShopTweaks) -> Guard {
    defaults(tweaks).build().expect("valid configuration")
}

/// The latest events, for `--console`'s page.
static EVENTS: LazyLock<EventLog> = LazyLock::new(|| EventLog::new(100));

/// Tells the harness about an event, on standard output:
/// `EVENT <unix ms> <kind> <client or -> <text>`; and keeps it for the
/// console.
fn report_event(e: &Event) {
    EVENTS.record(e);
    let (kind, client) = match e {
        Event::AttackStarted { .. } => ("attack-started", String::from("-")),
        Event::AttackEnded { .. } => ("attack-ended", "-".into()),
        Event::ClassFlagged(_) => ("class-flagged", "-".into()),
        Event::PrefixFlagged(s) => ("prefix-flagged", s.key.to_string()),
        Event::ClientBanned { client, .. } => ("client-banned", client.to_string()),
        _ => ("other", "-".into()),
    };
    println!("EVENT {} {kind} {client} {e}", unix_ms());
}

/// How often the shop reports its overload limits.
const LIMIT_EVERY: Duration = Duration::from_millis(100);

/// Tells the harness where each overload limit stands, on standard output:
/// `LIMIT <unix ms> <route or -> <limit> <in_flight> <shed_total> <admitted>`
/// for every limit (`-` is the service's own), every `LIMIT_EVERY`.
async fn report_limits(guard: Guard) {
    let mut tick = tokio::time::interval(LIMIT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ms = unix_ms();
        let mut out = String::new();
        for l in guard.stats().overload {
            out.push_str(&format!(
                "LIMIT {ms} {} {} {} {} {}\n",
                l.route.as_deref().unwrap_or("-"),
                l.limit,
                l.in_flight,
                l.shed_total(),
                l.admitted
            ));
        }
        print!("{out}");
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// How long the shop took over each request it answered 503 (shed by
/// overload protection), from the outermost layer's call to the response:
/// the guard's whole decision and the refusal, without hyper's reading of
/// the request head and writing of the answer.
#[derive(Clone, Default)]
struct ShedTimes(Arc<parking_lot::Mutex<Vec<u64>>>);

impl ShedTimes {
    /// Wraps `app` so that its 503 answers are timed.
    fn around(&self, app: Router) -> Router {
        let times = self.clone();
        app.layer(tower::layer::layer_fn(move |inner| Timed {
            inner,
            times: times.clone(),
        }))
    }

    /// `SHED <count> <p50 ns> <p90 ns> <p99 ns> <max ns>`, for the harness.
    fn summary(&self) -> String {
        let mut v = self.0.lock().clone();
        v.sort_unstable();
        let q = |q: f64| {
            if v.is_empty() {
                0
            } else {
                v[((v.len() - 1) as f64 * q).round() as usize]
            }
        };
        format!(
            "SHED {} {} {} {} {}",
            v.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            v.last().copied().unwrap_or(0)
        )
    }
}

#[derive(Clone)]
struct Timed<S> {
    inner: S,
    times: ShedTimes,
}

impl<S, B> tower::Service<axum::http::Request<B>> for Timed<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::response::Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let began = std::time::Instant::now();
        let fut = self.inner.call(req);
        let times = self.times.clone();
        Box::pin(async move {
            let res = fut.await?;
            if res.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE {
                let ns = began.elapsed().as_nanos() as u64;
                times.0.lock().push(ns);
            }
            Ok(res)
        })
    }
}

/// Serves the shop behind `defence` on 127.0.0.1, and the bare shop (no
/// defence, for the harness's capacity calibration) on a second port;
/// prints `PORT <shop> <calibration>`, and stops when standard input
/// closes (the harness ends the run), printing a `SHED` summary
/// (`ShedTimes::summary`).
pub fn serve(defence: Defence, tweaks: ShopTweaks) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // A listen backlog as deep as the kernel allows by default
        // (somaxconn, 4096), as a production server sets it: with tokio's
        // 1024, a botnet's connection storm overflows the accept queue and
        // the kernel drops shoppers' SYNs too, which costs them a one-second
        // retransmission whatever the defence does.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(4096)?;
        // The same shop on [::1], for attacks over IPv6.
        let socket = tokio::net::TcpSocket::new_v6()?;
        socket.bind(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)))?;
        let listener_v6 = socket.listen(4096)?;
        let calibration =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        println!(
            "PORT {} {} {}",
            listener.local_addr()?.port(),
            calibration.local_addr()?.port(),
            listener_v6.local_addr()?.port()
        );
        tokio::spawn(async move {
            let _ = serve_plain(calibration, shop()).await;
        });
        let app = shop();
        let shed_times = ShedTimes::default();
        // The guard, for the session counters at the end.
        let built = Arc::new(std::sync::OnceLock::<Guard>::new());
        let built_here = Arc::clone(&built);
        let timer = shed_times.clone();
        let server = async move {
            match defence {
                Defence::None => {
                    tokio::spawn(serve_plain(listener_v6, app.clone()));
                    serve_plain(listener, app).await
                }
                Defence::TowerGovernor => {
                    let config = GovernorConfigBuilder::default()
                        .key_extractor(PeerIpKeyExtractor)
                        .per_millisecond(50)
                        .burst_size(40)
                        .finish()
                        .expect("valid quota");
                    let app = app.layer(GovernorLayer::new(Arc::new(config)));
                    tokio::spawn(serve_plain(listener_v6, app.clone()));
                    serve_plain(listener, app).await
                }
                Defence::Floodguard | Defence::FloodguardTuned => {
                    let guard = if defence == Defence::Floodguard {
                        default_guard(tweaks)
                    } else {
                        tuned_guard(tweaks)
                    };
                    let gate = guard.gate().build()?;
                    if let Some((port, token)) = tweaks.console {
                        open_console(&guard, &gate, port, token).await;
                    }
                    let _ = built_here.set(guard.clone());
                    tokio::spawn(report_limits(guard.clone()));
                    let app = app.layer(axum::middleware::from_fn(report_action));
                    let app = timer.around(app.layer(guard.layer()));
                    // As the README shows: through the gate, with hyper's
                    // header timeout, the connect info carrying each
                    // connection's wire fingerprint. Both listeners share
                    // the gate's caps and budget.
                    tokio::spawn(floodguard::http::serve(gate.listen(listener_v6), app.clone()).into_future());
                    floodguard::http::serve(gate.listen(listener), app).await?;
                    Ok(())
                }
            }
        };
        let r = tokio::select! {
            r = server => r,
            () = stdin_closed() => Ok(()),
        };
        println!("{}", shed_times.summary());
        if let Some(s) = built.get().and_then(|g| g.stats().session) {
            eprintln!(
                "shop: session cookies: {} valid, {} invalid, {} issued, {} clients not returning them",
                s.valid, s.invalid, s.issued, s.not_returned
            );
        }
        r.map_err(|e| -> Box<dyn std::error::Error> { e })
    })
}

/// Serves the guard's live console on 127.0.0.1:`port` (an internal
/// address: never the shop's), behind `token`. The harness runs one shop
/// after another on the same port; a shop that cannot bind it says so and
/// runs without.
async fn open_console(guard: &Guard, gate: &floodguard::http::Gate, port: u16, token: u128) {
    let console = floodguard::http::Console::new(guard.clone())
        .token(format!("{token:032x}"))
        .gate(gate)
        .events(&EVENTS)
        .router();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await;
    match (console, listener) {
        (Ok(console), Ok(listener)) => {
            tokio::spawn(async move { axum::serve(listener, console).await });
        }
        (Err(e), _) => eprintln!("shop: no console: {e}"),
        (_, Err(e)) => eprintln!("shop: no console on 127.0.0.1:{port}: {e}"),
    }
}

/// Inside the guard: tells the client what scoring did with its request
/// (`x-fg-action: allow | throttle | challenge | ban`, from the
/// [`GuardDecision`] the guard leaves in the request's extensions), so that
/// the load generator can count the legitimate clients the guard throttled
/// or challenged. Refused requests never get here; their status says why.
async fn report_action(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let action = req
        .extensions()
        .get::<GuardDecision>()
        .and_then(GuardDecision::action);
    let mut res = next.run(req).await;
    if let Some(a) = action {
        res.headers_mut().insert(
            "x-fg-action",
            axum::http::HeaderValue::from_static(a.name()),
        );
    }
    res
}

async fn serve_plain(
    listener: tokio::net::TcpListener,
    app: Router,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, make).await?;
    Ok(())
}

async fn stdin_closed() {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {}
}
