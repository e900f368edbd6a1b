//! Client scoring and attack detection, scenario by scenario, on a manual
//! clock: a population of shoppers browses, then an attack from the flood
//! harness's catalogue joins them. Requests go through the real layer in
//! front of a service that answers like the harness's shop.
#![cfg(feature = "tower")]

#[path = "common/world.rs"]
mod world;

use fastrand::Rng;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use floodguard::http::{
    Action, Challenge, ChallengePage, ClientIpConfig, Event, Ladder, PeerAddr, Scoring, Signal,
    Weights,
};
use http::request::Parts;
use http::{Request, StatusCode, Version};
use world::World;

const STEP: Duration = Duration::from_millis(10);
const PROXY: [u8; 4] = [127, 77, 0, 1];

/// A request as one kind of client sends it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Desktop Chrome, the harness's shoppers.
    Shopper,
    /// A scripting library.
    ToolBot,
    /// Claims Chrome, sends what bots send.
    MimicBot,
    /// The single-address flood tool.
    Flood,
}

fn request(kind: Kind, path: &str, from: IpAddr, xff: Option<String>) -> Request<String> {
    let mut b = Request::builder().uri(path).header("host", "shop.test");
    b = match kind {
        Kind::Shopper => b
            .header("connection", "keep-alive")
            .header("sec-ch-ua", "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"")
            .header("sec-ch-ua-mobile", "?0")
            .header("sec-ch-ua-platform", "\"Linux\"")
            .header("upgrade-insecure-requests", "1")
            .header(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            )
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .header("sec-fetch-site", "same-origin")
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-user", "?1")
            .header("sec-fetch-dest", "document")
            .header("referer", "http://shop.test/")
            .header("accept-encoding", "gzip, deflate, br, zstd")
            .header("accept-language", "en-GB,en;q=0.9")
            .header("cookie", "session=abc"),
        Kind::ToolBot => b
            .header("user-agent", "python-requests/2.32.3")
            .header("accept-encoding", "gzip, deflate")
            .header("accept", "*/*")
            .header("connection", "keep-alive"),
        Kind::MimicBot => b
            .version(Version::HTTP_10)
            .header(
                "user-agent",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            )
            .header("accept", "*/*")
            .header("accept-encoding", "identity"),
        Kind::Flood => b.header("user-agent", "flood/1.0"),
    };
    if let Some(xff) = xff {
        b = b.header("x-forwarded-for", xff);
    }
    let mut req = b.body(String::new()).unwrap();
    req.extensions_mut()
        .insert(PeerAddr(SocketAddr::new(from, 40_000)));
    req
}

/// The shop: 404 for unknown paths, 200 otherwise.
fn shop(req: &Request<String>) -> StatusCode {
    let found = ["/", "/search", "/product", "/static/app.css"]
        .iter()
        .any(|p| req.uri().path() == *p);
    if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// A world behind the trusted proxy, with `scoring`.
fn world(scoring: Scoring) -> World {
    World::new(
        scoring,
        ClientIpConfig::new().trust(IpAddr::from(PROXY).into()),
        shop,
    )
}

fn shopper(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 20, (i / 250) as u8, (i % 250) as u8 + 1))
}

fn bot(k: u32, mimic: bool) -> IpAddr {
    let first = if mimic { 150 } else { 100 };
    IpAddr::V4(Ipv4Addr::new(
        127,
        (first + k % 100) as u8,
        (k / 100) as u8,
        9,
    ))
}

/// Tallies of a run.
#[derive(Default, Debug)]
struct Tally {
    legit: u64,
    legit_ok: u64,
    attack: u64,
    attack_ok: u64,
    /// Attack requests admitted after the attack was detected.
    attack_after_detection: u64,
    attack_ok_after_detection: u64,
}

/// Shoppers browse for `calm`, then `attack` joins them for `attack_for`.
/// Each shopper views a page every 0.3 to 1.5 s.
async fn run(
    w: &World,
    shoppers: u32,
    calm: Duration,
    attack_for: Duration,
    mut attack: impl FnMut(&World, Duration, &mut Rng) -> Vec<Request<String>>,
) -> Tally {
    let mut rng = Rng::with_seed(7);
    let mut next: Vec<Duration> = (0..shoppers)
        .map(|_| Duration::from_millis(rng.u64(..500)))
        .collect();
    let mut t = Tally::default();
    let end = calm + attack_for;
    while w.now() < end {
        let now = w.now();
        for (i, due) in next.iter_mut().enumerate() {
            if *due <= now {
                let path = ["/", "/product", "/search", "/static/app.css"][rng.u64(..4) as usize];
                let (status, _) = w
                    .send(request(Kind::Shopper, path, shopper(i as u32), None))
                    .await;
                if now >= calm {
                    t.legit += 1;
                    t.legit_ok += u64::from(status.is_success());
                }
                *due = now + Duration::from_millis(300 + rng.u64(..1200));
            }
        }
        if now >= calm {
            for req in attack(w, now - calm, &mut rng) {
                let (status, _) = w.send(req).await;
                t.attack += 1;
                t.attack_ok += u64::from(status.is_success());
                if w.guard.under_attack() {
                    t.attack_after_detection += 1;
                    t.attack_ok_after_detection += u64::from(status.is_success());
                }
            }
        }
        w.clock.advance(STEP);
    }
    t
}

/// A botnet of `n` addresses, each sending one search every 1 to 2 s.
fn botnet(n: u32, kind: Kind) -> impl FnMut(&World, Duration, &mut Rng) -> Vec<Request<String>> {
    let mut next: Vec<Option<Duration>> = vec![None; n as usize];
    move |_, t, rng| {
        let mut out = Vec::new();
        for (k, due) in next.iter_mut().enumerate() {
            let d = *due.get_or_insert_with(|| Duration::from_millis(rng.u64(..1000)));
            if d <= t {
                let from = bot(k as u32, kind == Kind::MimicBot);
                out.push(request(kind, "/search", from, None));
                *due = Some(t + Duration::from_millis(1000 + rng.u64(..1000)));
            }
        }
        out
    }
}

fn no_shopper_banned(w: &World) {
    let banned: Vec<_> = w
        .events(|e| matches!(e, Event::ClientBanned { .. }))
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::ClientBanned { client, .. } => Some(client),
            _ => None,
        })
        .filter(|c| c.to_string().starts_with("127.20."))
        .collect();
    assert!(banned.is_empty(), "shoppers banned: {banned:?}");
}

async fn botnet_scenario(kind: Kind) {
    let w = world(Scoring::default());
    let calm = Duration::from_secs(5);
    let t = run(&w, 200, calm, Duration::from_secs(8), botnet(3000, kind)).await;
    let started = w.events(|e| matches!(e, Event::AttackStarted { .. }));
    assert_eq!(started.len(), 1, "{:?}", w.events(|_| true));
    let detected_after = started[0].0 - calm;
    assert!(
        detected_after <= Duration::from_secs(2),
        "{detected_after:?}"
    );
    assert!(
        !w.events(|e| matches!(e, Event::ClassFlagged(_))).is_empty(),
        "no class flagged"
    );
    let snap = w.guard.snapshot();
    let d = snap.detection.expect("scoring on");
    assert!(d.under_attack);
    assert!(!d.flagged_classes.is_empty());
    no_shopper_banned(&w);
    let legit = t.legit_ok as f64 / t.legit as f64;
    assert!(legit >= 0.99, "{t:?}");
    let admitted = t.attack_ok_after_detection as f64 / t.attack_after_detection as f64;
    assert!(admitted <= 0.05, "{t:?}");
    assert!(
        snap.stats.scoring.as_ref().unwrap().banned > 1000,
        "{:?}",
        snap.stats
    );
    // The worst offenders are bots, and say why.
    let top = &snap.offenders[0];
    assert!(!top.client.to_string().starts_with("127.20."));
    assert!(top.report.signals().any(|(s, _)| s == Signal::ClassSurge));
}

#[tokio::test]
async fn tool_botnet_is_detected_flagged_and_banned_sparing_shoppers() {
    botnet_scenario(Kind::ToolBot).await;
}

#[tokio::test]
async fn browser_mimicking_botnet_is_detected_flagged_and_banned() {
    botnet_scenario(Kind::MimicBot).await;
}

#[tokio::test]
async fn single_address_flood_is_banned_within_a_second() {
    let w = world(Scoring::default());
    let flooder = IpAddr::V4(Ipv4Addr::new(127, 66, 6, 6));
    let calm = Duration::from_secs(3);
    let t = run(&w, 100, calm, Duration::from_secs(4), |_, _, _| {
        (0..10)
            .map(|_| request(Kind::Flood, "/search", flooder, None))
            .collect()
    })
    .await;
    let bans = w.events(|e| matches!(e, Event::ClientBanned { .. }));
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert!(bans[0].0 - calm < Duration::from_secs(1), "{:?}", bans[0].0);
    assert!(w.guard.is_banned(flooder));
    no_shopper_banned(&w);
    assert_eq!(t.legit_ok, t.legit, "{t:?}");
}

#[tokio::test]
async fn ipv6_rotation_bans_the_whole_slash_64() {
    let w = world(Scoring::default());
    let proxy = IpAddr::from(PROXY);
    let calm = Duration::from_secs(3);
    let t = run(&w, 100, calm, Duration::from_secs(3), |_, _, rng| {
        (0..10)
            .map(|_| {
                let xff = format!(
                    "2001:db8:dead:beef:{:x}:{:x}:{:x}:{:x}",
                    rng.u64(..65_536),
                    rng.u64(..65_536),
                    rng.u64(..65_536),
                    rng.u64(..65_536)
                );
                request(Kind::Flood, "/search", proxy, Some(xff))
            })
            .collect()
    })
    .await;
    let bans = w.guard.bans();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].0.to_string(), "2001:db8:dead:beef::/64");
    // What got through is the /64's burst on the per-subscriber rule.
    assert!(t.attack_ok <= 100, "{t:?}");
    no_shopper_banned(&w);
}

#[tokio::test]
async fn scanner_of_missing_paths_is_banned_and_bans_escalate() {
    let w = world(Scoring::default());
    let scanner = IpAddr::V4(Ipv4Addr::new(127, 44, 0, 4));
    let mut statuses = Vec::new();
    for i in 0..20 {
        let path = format!("/wp-admin/{i}.php");
        let (s, _) = w.send(request(Kind::Shopper, &path, scanner, None)).await;
        statuses.push(s.as_u16());
        w.clock.advance(Duration::from_millis(200));
    }
    assert!(
        statuses.contains(&404) && statuses.ends_with(&[403]),
        "{statuses:?}"
    );
    let (_, e) = w.events(|e| matches!(e, Event::ClientBanned { .. }))[0].clone();
    let Event::ClientBanned {
        duration,
        report,
        offences,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(offences, 0);
    assert!((54..=66).contains(&duration.as_secs()), "{duration:?}");
    assert_eq!(report.top_signal(), Some(Signal::NotFoundScanning));
    // Back after the ban, scanning again: the second ban is four times as long.
    w.clock.advance(Duration::from_secs(70));
    for i in 0..40 {
        let path = format!("/.env{i}");
        w.send(request(Kind::Shopper, &path, scanner, None)).await;
        w.clock.advance(Duration::from_millis(200));
    }
    let bans = w.events(|e| matches!(e, Event::ClientBanned { .. }));
    assert_eq!(bans.len(), 2);
    let Event::ClientBanned {
        duration, offences, ..
    } = bans[1].1
    else {
        unreachable!()
    };
    assert_eq!(offences, 1);
    assert!((216..=264).contains(&duration.as_secs()), "{duration:?}");
}

struct Knock;
impl Challenge for Knock {
    fn verify(&self, parts: &Parts, _: IpAddr) -> bool {
        parts.headers.contains_key("x-solved")
    }
    fn issue(&self, _: &Parts, _: IpAddr) -> ChallengePage {
        ChallengePage::new("<p>solve me</p>")
    }
}

#[tokio::test]
async fn challenge_hook_gates_mid_scores_and_solved_requests_pass() {
    let w = world(Scoring::new().challenge(Knock));
    let client = IpAddr::V4(Ipv4Addr::new(127, 45, 0, 5));
    let anonymous = |path: &str, solved: bool| {
        let mut req = request(Kind::Flood, path, client, None);
        req.headers_mut().remove("user-agent");
        if solved {
            req.headers_mut().insert("x-solved", "1".parse().unwrap());
        }
        req
    };
    // No user agent (20), no Accept (9), no history (5): 34. Each 404 adds
    // 6, so the fifth missing path lifts the client to 64: a challenge.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let (s, _) = w.send(anonymous(&format!("/nope{i}"), false)).await;
        statuses.push(s.as_u16());
    }
    assert_eq!(statuses, [404, 404, 404, 404, 404, 403]);
    assert_eq!(w.guard.stats().refused_challenge, 1);
    let (status, decision) = w.send(anonymous("/", true)).await;
    assert_eq!(status, StatusCode::OK);
    let d = decision.unwrap();
    assert_eq!(d.action(), Some(Action::Challenge));
    assert!((60.0..80.0).contains(&d.score().unwrap().score()));
    let stats = w.guard.stats();
    assert_eq!(stats.refused_challenge, 1);
    assert_eq!(stats.scoring.unwrap().challenges_passed, 1);
}

#[tokio::test]
async fn shadow_ban_reports_once_and_bans_nobody() {
    let mut ladder = Ladder::default();
    ladder.shadow_ban = true;
    let w = world(Scoring::new().ladder(ladder));
    let flooder = IpAddr::V4(Ipv4Addr::new(127, 66, 6, 7));
    let mut ok = 0;
    for _ in 0..200 {
        let (s, _) = w.send(request(Kind::Flood, "/", flooder, None)).await;
        ok += u32::from(s.is_success());
        w.clock.advance(Duration::from_millis(2));
    }
    assert!(w.guard.bans().is_empty());
    let events = w.events(|e| matches!(e, Event::ClientBanned { shadow: true, .. }));
    assert_eq!(events.len(), 1, "{events:?}");
    let s = w.guard.stats().scoring.unwrap();
    assert!(s.shadow_bans > 1 && s.banned == 0, "{s:?}");
    // The rate rules still apply.
    assert!(ok < 100, "{ok}");
}

#[tokio::test]
async fn calm_traffic_raises_no_alarm_and_known_shoppers_score_low() {
    let w = world(Scoring::default());
    let t = run(
        &w,
        200,
        Duration::from_secs(4),
        Duration::from_secs(6),
        |_, _, _| Vec::new(),
    )
    .await;
    assert!(w.events(|_| true).is_empty(), "{:?}", w.events(|_| true));
    assert_eq!(t.legit_ok, t.legit);
    let (_, d) = w.send(request(Kind::Shopper, "/", shopper(3), None)).await;
    let d = d.unwrap();
    assert_eq!(d.action(), Some(Action::Allow));
    assert_eq!(d.score().unwrap().score(), 0.0);
    assert!(
        d.score()
            .unwrap()
            .signals()
            .any(|(s, _)| s == Signal::KnownGood)
    );
}

#[tokio::test]
async fn a_throttle_never_climbs_to_a_ban_by_itself() {
    // A ladder that throttles this client for its look alone (29) for good.
    let mut weights = Weights::default();
    weights.known_good = 0.0;
    weights.success_credit = 0.0;
    let mut ladder = Ladder::default();
    ladder.throttle = 25.0;
    let w = world(Scoring::new().weights(weights).ladder(ladder));
    let client = IpAddr::V4(Ipv4Addr::new(127, 46, 0, 6));
    let anonymous = |path: &str| {
        let mut req = request(Kind::Flood, path, client, None);
        req.headers_mut().remove("user-agent");
        req
    };
    let (mut ok, mut refused) = (0, 0);
    // Ten a second for 30 s: half what the per-IP rule allows, twice what
    // it allows at the throttled cost.
    for _ in 0..300 {
        let (s, d) = w.send(anonymous("/")).await;
        match s {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(d.unwrap().action(), Some(Action::Throttle));
            }
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("{other}"),
        }
        w.clock.advance(Duration::from_millis(100));
    }
    assert!(ok > 100 && refused > 50, "{ok} {refused}");
    assert!(!w.guard.is_banned(client));
    assert!(w.events(|_| true).is_empty());
}
