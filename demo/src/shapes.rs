//! The traffic shapes floodguard was not tuned on (issue 17, item 6):
//! crowds of people (a newsletter's flash crowd the shop can carry and one
//! it cannot, steady growth, a small site's ten shoppers joined by forty),
//! clients that are not browsers (API clients, command-line tools and text
//! browsers replaying real captured heads), and botnets that vary their
//! headers, spoof a browser badly, or send a real browser's exact head.
//!
//! The people are legitimate: they are recorded as shoppers (`Legit`),
//! counted in every legitimate figure, and a guard that declares an attack
//! on them raises a false alarm. The 200 shoppers (10 on the small site)
//! browse throughout, as in every scenario; what this module starts joins
//! them at the phase's start.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::Scenario;
use crate::heads::{Head, Heads};
use crate::http1::Conn;
use crate::traffic::{self, Legit, Recorder, Rng, Unit, nap, v4};

/// The newsletter's newcomers: the 200 shoppers become 2,000.
const CROWD: u32 = 1_800;
/// Growth's newcomers: the 200 shoppers become 1,000.
const GROWTH: u32 = 800;
/// The small site's shoppers, and how many join at the phase's start.
pub const SMALL_SITE: (u32, u32) = (10, 40);
/// Share of a newcomer's page views that are searches, in percent: the
/// flash crowd the shop carries searches less than the shoppers (15% of
/// their requests, 18% of their page views), the one past the shop's
/// capacity much more; growth in between.
const CROWD_SEARCH: u64 = 3;
const OVERLOAD_SEARCH: u64 = 35;
const GROWTH_SEARCH: u64 = 10;
/// Non-browser clients of each kind in the mixed-clients scenario.
const MIXED_PER_KIND: u32 = 40;
/// The mixed clients' pause between requests (ms): a person's pace.
const MIXED_PAUSE: (u64, u64) = (1_000, 10_000);
/// Bots of each botnet, and each one's pause between searches (ms).
const DIVERSE_BOTS: u32 = 3_000;
const DIVERSE_PAUSE: (u64, u64) = (250, 750);
const SPOOFED_BOTS: u32 = 2_000;
const PERFECT_BOTS: u32 = 2_000;
const BROWSER_BOT_PAUSE: (u64, u64) = (1_000, 2_000);
/// The fewest distinct real header sets the diverse botnet draws from.
const DIVERSE_HEADS: usize = 12;
/// The captured Chromium's client name in `index.tsv`.
const CHROMIUM: &str = "chromium";

/// Ids of the legitimate clients this module starts (`Sample::shopper`),
/// apart from the shoppers' 0..256.
const NEWCOMER_IDS: u32 = 1_000;
const MIXED_IDS: u32 = 10_000;

/// One run's phase and where its traffic goes.
pub struct Shape {
    pub shop: SocketAddr,
    pub rec: Arc<Recorder>,
    /// The phase's start, the attack's end (bots stop) and the run's end
    /// (people stop).
    pub start: Instant,
    pub attack_stop: Instant,
    pub stop: Instant,
    /// How long newcomers take to arrive (flash crowds, growth).
    pub ramp: Duration,
}

impl Scenario {
    /// Whether the scenario replays captured heads (`tests/data/heads`).
    pub fn needs_heads(self) -> bool {
        matches!(
            self,
            Scenario::MixedClients
                | Scenario::DiverseBotnet
                | Scenario::SpoofedBrowser
                | Scenario::PerfectBrowser
        )
    }

    /// Whether the scenario has no attack at all: every client is
    /// legitimate, and any attack the guard declares is a false alarm.
    pub fn all_legit(self) -> bool {
        matches!(
            self,
            Scenario::FlashCrowd
                | Scenario::FlashCrowdOverload
                | Scenario::Growth
                | Scenario::SmallSite
                | Scenario::MixedClients
        )
    }
}

/// The traffic of `scenario` that is not one of the original six attacks,
/// ready to start (`Plan::start`): checked up front, so that a missing
/// capture fails the run before any shop starts.
pub enum Plan {
    /// Newcomers browsing like the shoppers: how many, over the ramp, with
    /// this share of searches (percent).
    Newcomers { count: u32, search: u64 },
    /// The small site's forty joining at once.
    Join,
    /// API clients, command-line tools and text browsers, each replaying
    /// one captured head.
    Mixed(Vec<(Head, Kind)>),
    /// Bots replaying one of these heads each, varied or not, searching
    /// with this pause (ms).
    Bots {
        heads: Vec<Head>,
        count: u32,
        vary: bool,
        pause: (u64, u64),
        /// Bot `k` adds a session cookie to its head (the perfect browser:
        /// cookies as the shop's shoppers carry them).
        cookie: bool,
        /// Third octet of the bots' addresses.
        net: u32,
    },
}

/// What a mixed client is, and so which pages it asks for and whether it
/// keeps its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP library in a program (an API client): products and searches,
    /// keep-alive.
    Api,
    /// A command-line tool: one request per run, a new connection each.
    Cli,
    /// A text browser: pages and searches, keep-alive if its head allows.
    Text,
}

impl Plan {
    /// The plan of `scenario` (`None` for the original six), with the
    /// captured heads it replays.
    pub fn of(scenario: Scenario, heads: Option<&Heads>) -> Result<Option<Plan>, String> {
        let heads = || heads.ok_or_else(|| format!("{}: no captured heads", scenario.name()));
        Ok(Some(match scenario {
            Scenario::FlashCrowd => Plan::Newcomers {
                count: CROWD,
                search: CROWD_SEARCH,
            },
            Scenario::FlashCrowdOverload => Plan::Newcomers {
                count: CROWD,
                search: OVERLOAD_SEARCH,
            },
            Scenario::Growth => Plan::Newcomers {
                count: GROWTH,
                search: GROWTH_SEARCH,
            },
            Scenario::SmallSite => Plan::Join,
            Scenario::MixedClients => {
                let heads = heads()?;
                let mut clients = Vec::new();
                for (family, kind) in [
                    ("library", Kind::Api),
                    ("tool", Kind::Cli),
                    ("text-browser", Kind::Text),
                ] {
                    // The shop is plain HTTP on a name that is not
                    // localhost: the `plain` captures.
                    let of_family = heads.select(&[family], None, "plain");
                    if of_family.is_empty() {
                        return Err(format!("no captured {family} heads"));
                    }
                    clients.extend(of_family.into_iter().map(|h| (h, kind)));
                }
                Plan::Mixed(clients)
            }
            Scenario::DiverseBotnet => {
                let tools = heads()?.select(&["tool", "library"], None, "plain");
                if tools.len() < DIVERSE_HEADS {
                    return Err(format!(
                        "diverse-botnet needs {DIVERSE_HEADS} distinct tool and library heads, \
                         {} captured",
                        tools.len()
                    ));
                }
                Plan::Bots {
                    heads: tools,
                    count: DIVERSE_BOTS,
                    vary: true,
                    pause: DIVERSE_PAUSE,
                    cookie: false,
                    net: 11,
                }
            }
            Scenario::SpoofedBrowser => {
                // Chromium's own document head over localhost (a secure
                // context: client hints and Sec-Fetch-*), but a User-Agent
                // claiming Windows while `sec-ch-ua-platform` says Linux.
                let chromium = heads()?.find(CHROMIUM, "document", "localhost")?;
                let ua = chromium
                    .header("user-agent")
                    .ok_or("Chromium sent no User-Agent")?;
                let platform = chromium
                    .header("sec-ch-ua-platform")
                    .ok_or("Chromium sent no sec-ch-ua-platform")?;
                if !ua.contains("(X11; Linux x86_64)") || platform != "\"Linux\"" {
                    return Err(format!(
                        "spoofed-browser expects a Linux Chromium capture, not {ua:?} with \
                         platform {platform}"
                    ));
                }
                let windows = ua.replace("(X11; Linux x86_64)", "(Windows NT 10.0; Win64; x64)");
                let spoofed = chromium
                    .with_header("user-agent", &windows)
                    .ok_or("no User-Agent to replace")?;
                Plan::Bots {
                    heads: vec![spoofed],
                    count: SPOOFED_BOTS,
                    vary: false,
                    pause: BROWSER_BOT_PAUSE,
                    cookie: false,
                    net: 12,
                }
            }
            Scenario::PerfectBrowser => Plan::Bots {
                heads: vec![heads()?.find(CHROMIUM, "document", "localhost")?],
                count: PERFECT_BOTS,
                vary: false,
                pause: BROWSER_BOT_PAUSE,
                cookie: true,
                net: 13,
            },
            _ => return Ok(None),
        }))
    }

    /// A few requests of the plan as they go on the wire to a shop on
    /// `port` (`--show`): what its clients send, byte for byte.
    pub fn show(&self, port: u16) -> Vec<Vec<u8>> {
        let mut rng = Rng::new(7);
        match self {
            Plan::Join => vec![traffic::browser_request("/", "GET", SMALL_SITE.0)],
            Plan::Newcomers { .. } => vec![
                chrome("/", false, None),
                chrome("/static/app.css", true, Some(1)),
                chrome("/product/7", false, Some(1)),
            ],
            Plan::Mixed(heads) => heads
                .iter()
                .map(|(h, _)| h.render("/product/7", port))
                .collect(),
            Plan::Bots {
                heads,
                vary,
                cookie,
                ..
            } => heads
                .iter()
                .take(3)
                .flat_map(|h| {
                    let h = if *cookie {
                        h.with_cookie("session=b0000001; consent=1")
                    } else {
                        h.clone()
                    };
                    (0..if *vary { 2 } else { 1 }).map(move |_| h.clone())
                })
                .map(|h| {
                    if *vary {
                        h.render_varied("/search?q=deal1", port, &mut rng)
                    } else {
                        h.render("/search?q=deal1", port)
                    }
                })
                .collect(),
        }
    }

    /// Starts the plan's traffic: bots and mixed clients on `rt` (the
    /// attackers' runtime), newcomers too (they are as many as a botnet;
    /// the shoppers' runtime keeps its one thread for the shoppers).
    pub fn start(&self, set: &mut JoinSet<()>, rt: &tokio::runtime::Handle, s: &Shape) {
        let people = (s.start, s.stop);
        match self {
            Plan::Newcomers { count, search } => {
                for n in 0..*count {
                    // Evenly over the ramp; 16 /16s, each newcomer in a /24
                    // of its own.
                    let join = s.start + s.ramp.mul_f64(f64::from(n) / f64::from(*count));
                    let from = v4(50 + n % 16, (n / 16) % 256, 1 + n / 4096);
                    let client =
                        Legit::new(NEWCOMER_IDS + n, from, s.shop, &s.rec).keeping_cookies();
                    set.spawn_on(newcomer(client, n, *search, (join, s.stop)), rt);
                }
            }
            Plan::Join => {
                let (first, more) = SMALL_SITE;
                traffic::shoppers(set, s.shop, &s.rec, first..first + more, people);
            }
            Plan::Mixed(heads) => {
                for n in 0..MIXED_PER_KIND * 3 {
                    // Each kind's heads in turn.
                    let kind = [Kind::Api, Kind::Cli, Kind::Text][(n % 3) as usize];
                    let of_kind: Vec<&Head> = heads
                        .iter()
                        .filter(|(_, k)| *k == kind)
                        .map(|(h, _)| h)
                        .collect();
                    let head = of_kind[(n / 3) as usize % of_kind.len()].clone();
                    let from = v4(78 + n % 8, n / 8, 1);
                    let client = Legit::new(MIXED_IDS + n, from, s.shop, &s.rec);
                    let port = s.shop.port();
                    set.spawn_on(replayer(client, head, kind, (n, port), people), rt);
                }
            }
            Plan::Bots {
                heads,
                count,
                vary,
                pause,
                cookie,
                net,
            } => {
                for k in 0..*count {
                    // 100 /16s, no network holds two bots.
                    let from = v4(100 + k % 100, k / 100, *net);
                    let head = &heads[k as usize % heads.len()];
                    let head = if *cookie {
                        head.with_cookie(&format!("session=b{k:07x}; consent=1"))
                    } else {
                        head.clone()
                    };
                    let bot = Bot {
                        from,
                        head,
                        vary: *vary,
                        pause: *pause,
                    };
                    let rec = Arc::clone(&s.rec);
                    set.spawn_on(bot.run(s.shop, rec, k, s.attack_stop), rt);
                }
            }
        }
    }
}

/// A synthetic desktop Chrome's request as the shoppers send it
/// (`traffic::browser_request`'s header set and order), for a newcomer: a
/// page (`style` false) or the stylesheet it links (`style` true, Chrome's
/// order for a subresource). Before the shop has given it a session
/// (`session` `None`), its page is a navigation from elsewhere (the
/// newsletter): `Sec-Fetch-Site: none`, no Referer, no Cookie.
fn chrome(path: &str, style: bool, session: Option<u32>) -> Vec<u8> {
    const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const HINTS: &str =
        "sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\nsec-ch-ua-mobile: ?0\r\n";
    let cookie = session.map_or(String::new(), |s| {
        format!("Cookie: session=s{s:08x}; consent=1\r\n")
    });
    let tail =
        "Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-GB,en;q=0.9,de;q=0.8\r\n";
    let r = if style {
        format!(
            "GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive\r\n\
             sec-ch-ua-platform: \"Linux\"\r\nUser-Agent: {UA}\r\n{HINTS}\
             Accept: text/css,*/*;q=0.1\r\nSec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: no-cors\r\n\
             Sec-Fetch-Dest: style\r\nReferer: http://shop.test/\r\n{tail}{cookie}\r\n"
        )
    } else {
        let (site, referer) = if session.is_some() {
            ("same-origin", "Referer: http://shop.test/\r\n")
        } else {
            ("none", "")
        };
        format!(
            "GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive\r\n{HINTS}\
             sec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\nUser-Agent: {UA}\r\n\
             Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
             Sec-Fetch-Site: {site}\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\n\
             {referer}{tail}{cookie}\r\n"
        )
    };
    r.into_bytes()
}

/// A newcomer's page view: `search` percent searches, the rest the home
/// page (a third) and products. Path and route.
fn newcomer_page(rng: &mut Rng, search: u64) -> (String, &'static str) {
    let r = rng.below(100);
    if r < search {
        (format!("/search?q=offer+{}", rng.below(50)), "/search")
    } else if r < search + (100 - search) / 3 {
        ("/".into(), "/")
    } else {
        (format!("/product/{}", rng.below(2_000)), "/product/{id}")
    }
}

/// A newcomer: arrives at `join`, then browses like a shopper until `stop`
/// (keep-alive; a page, then its stylesheet on a visit's first page and
/// now and then after, as a browser's cache lets it; 0.3 to 1.5 s of
/// thought between pages; a quarter of pages end a visit). The shop's
/// session cookie goes with every request after its first page.
async fn newcomer(mut client: Legit, n: u32, search: u64, (join, stop): (Instant, Instant)) {
    tokio::time::sleep_until(join.into()).await;
    let mut rng = Rng::new(0xc0_0d + u64::from(n));
    let mut session = None;
    let mut new_visit = true;
    while Instant::now() < stop {
        let (path, route) = newcomer_page(&mut rng, search);
        let outcome = client.request(&chrome(&path, false, session), route).await;
        if matches!(outcome, traffic::Outcome::Status(200..300)) {
            session.get_or_insert(0x0100_0000 + n);
        }
        if (new_visit || rng.below(4) == 0) && Instant::now() < stop {
            let css = chrome("/static/app.css", true, session);
            client.request(&css, "/static/app.css").await;
        }
        new_visit = rng.below(4) == 0;
        if new_visit {
            client.hang_up();
        }
        nap(rng.millis(300, 1_500), stop).await;
    }
}

/// A mixed client: replays its captured `head` (target and Host value
/// rewritten, the rest byte-exact) at a person's pace until `stop`.
async fn replayer(
    mut client: Legit,
    head: Head,
    kind: Kind,
    (n, port): (u32, u16),
    (start, stop): (Instant, Instant),
) {
    tokio::time::sleep_until(start.into()).await;
    let mut rng = Rng::new(0x313 + u64::from(n));
    // Spread over the first pause.
    nap(rng.millis(0, MIXED_PAUSE.1), stop).await;
    while Instant::now() < stop {
        let r = rng.below(100);
        let (target, route) = match kind {
            Kind::Api | Kind::Text if r < 25 => {
                (format!("/search?q=cable+{}", rng.below(50)), "/search")
            }
            Kind::Cli | Kind::Text if r < 55 => ("/".into(), "/"),
            _ => (format!("/product/{}", rng.below(2_000)), "/product/{id}"),
        };
        client.request(&head.render(&target, port), route).await;
        if kind == Kind::Cli || head.closes() {
            client.hang_up();
        }
        nap(rng.millis(MIXED_PAUSE.0, MIXED_PAUSE.1), stop).await;
    }
}

/// A bot of a botnet that replays one captured head on the search route.
struct Bot {
    from: IpAddr,
    head: Head,
    /// A random extra header and casing per request (`Head::render_varied`).
    vary: bool,
    pause: (u64, u64),
}

impl Bot {
    /// Searches until `stop`, keep-alive unless its head closes.
    async fn run(self, shop: SocketAddr, rec: Arc<Recorder>, k: u32, stop: Instant) {
        let mut rng = Rng::new(0xb0b + u64::from(k));
        nap(rng.millis(0, 1_000), stop).await;
        let closes = self.head.closes();
        let mut conn: Option<Conn> = None;
        while Instant::now() < stop {
            let target = format!("/search?q=deal{}", rng.below(10_000));
            let request = if self.vary {
                self.head.render_varied(&target, shop.port(), &mut rng)
            } else {
                self.head.render(&target, shop.port())
            };
            let status =
                traffic::attack_exchange_status(&mut conn, self.from, shop, &request).await;
            rec.attack(self.from, Unit::of(status));
            if closes {
                conn = None;
            }
            nap(rng.millis(self.pause.0, self.pause.1), stop).await;
        }
    }
}
