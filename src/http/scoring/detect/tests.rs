//! Attack detection on a manual clock.

use std::net::IpAddr;
use std::time::Duration;

use http::Version;

use super::config::*;
use super::detector::*;
use super::events::*;
use crate::Timestamp;
use crate::http::identify::cluster::Cluster;
use crate::http::identify::look::UaDetails;
use crate::http::{UaFamily, ua_family};

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// Twelve tools' user agents, as a diverse botnet sends them.
const TOOLS: [&str; 12] = [
    "curl/7.88.1",
    "Wget/1.21.3",
    "python-requests/2.34.2",
    "python-httpx/0.29.0",
    "Python-urllib/3.11",
    "Python/3.11 aiohttp/3.14.5",
    "node",
    "axios/1.21.1",
    "got (https://github.com/sindresorhus/got)",
    "Java-http-client/17.0.15",
    "Go-http-client/1.1",
    "okhttp/3.13.1",
];

fn cluster(ua: &str, headers: u32) -> Cluster {
    let family = ua_family(ua.as_bytes());
    Cluster::fine(
        family,
        &UaDetails::of(ua.as_bytes(), family),
        Version::HTTP_11,
        headers,
    )
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_nanos(ms * 1_000_000)
}

/// A population: `(user agent, first address, clients, requests a
/// second each, route)`; clients are numbered from the address up.
#[derive(Clone, Copy)]
struct Crowd {
    ua: &'static str,
    net: u8,
    clients: u32,
    rate: f64,
    route: &'static str,
}

fn shoppers(clients: u32) -> Crowd {
    Crowd {
        ua: CHROME,
        net: 20,
        clients,
        rate: 1.0,
        route: "/product/{id}",
    }
}

/// `people`, and `clients` of each of the twelve `TOOLS`, each tool in
/// its own network from `net` on, at `rate` requests a second each to
/// `route`.
fn with_tools(people: Crowd, net: u8, clients: u32, rate: f64, route: &'static str) -> Vec<Crowd> {
    let tools = TOOLS.iter().enumerate().map(|(i, ua)| Crowd {
        ua,
        net: net + i as u8,
        clients,
        rate,
        route,
    });
    std::iter::once(people).chain(tools).collect()
}

/// The service: how long an answer takes and whether requests are
/// shed, given the offered rate.
type Service = fn(f64) -> (Duration, bool);

fn fast(_: f64) -> (Duration, bool) {
    (Duration::from_millis(5), false)
}

/// A service that carries 500 requests a second, and sheds past it.
fn capacity_500(rate: f64) -> (Duration, bool) {
    (Duration::from_millis(5), rate > 500.0)
}

struct Run {
    d: Detector,
    events: Vec<(u64, Event)>,
    seen: std::collections::HashSet<IpAddr>,
    /// Fractional requests owed per crowd.
    owed: Vec<f64>,
    next: Vec<u32>,
}

impl Run {
    fn new() -> Run {
        Run {
            d: Detector::new(Detection::default(), at(0)).unwrap(),
            events: Vec::new(),
            seen: Default::default(),
            owed: Vec::new(),
            next: Vec::new(),
        }
    }

    /// Drives `crowds` for `[from, to)` ms in 10 ms steps; each crowd's
    /// clients take turns.
    fn drive(&mut self, from: u64, to: u64, crowds: &[Crowd], service: Service) {
        self.owed.resize(crowds.len(), 0.0);
        self.next.resize(crowds.len(), 0);
        let total: f64 = crowds.iter().map(|c| c.rate * f64::from(c.clients)).sum();
        let mut t = from;
        while t < to {
            for (i, c) in crowds.iter().enumerate() {
                self.owed[i] += c.rate * f64::from(c.clients) / 100.0;
                while self.owed[i] >= 1.0 {
                    self.owed[i] -= 1.0;
                    let k = self.next[i] % c.clients.max(1);
                    self.next[i] = self.next[i].wrapping_add(1);
                    let ip = IpAddr::from([c.net, (k >> 16) as u8, (k >> 8) as u8, k as u8]);
                    let family = ua_family(c.ua.as_bytes());
                    let s = Sighting {
                        cluster: cluster(c.ua, 0b111),
                        cluster_ids: cluster(c.ua, 0b111).ids(),
                        ip,
                        site: site(ip),
                        route: c.route,
                        route_hash: self.d.route_hash(c.route),
                        new_client: self.seen.insert(ip),
                        suspect: family != UaFamily::Browser,
                    };
                    let events = self.d.observe(at(t), &s);
                    self.events.extend(events.into_iter().map(|e| (t, e)));
                    let (latency, shed) = service(total);
                    if shed && k % 2 == 0 {
                        self.d.count_shed();
                    } else {
                        self.d.observe_answer(latency, false);
                    }
                }
            }
            t += 10;
        }
    }

    fn started(&self) -> Option<u64> {
        self.events
            .iter()
            .find_map(|(t, e)| matches!(e, Event::AttackStarted { .. }).then_some(*t))
    }

    fn ended(&self) -> Option<u64> {
        self.events
            .iter()
            .find_map(|(t, e)| matches!(e, Event::AttackEnded { .. }).then_some(*t))
    }
}

#[test]
fn a_flash_crowd_the_service_carries_is_no_attack() {
    let mut r = Run::new();
    r.drive(0, 20_000, &[shoppers(200)], fast);
    // Ten times as many people within 10 s, then steady.
    for step in 1..=10 {
        let n = 200 + 180 * step;
        let from = 20_000 + u64::from(step - 1) * 1_000;
        r.drive(from, from + 1_000, &[shoppers(n)], fast);
    }
    r.drive(30_000, 60_000, &[shoppers(2_000)], fast);
    assert_eq!(r.started(), None, "{:?}", r.events);
    assert!(r.d.calm());
    // The baseline followed the crowd.
    let snap = r.d.snapshot();
    assert!(snap.baseline_rate > 1_000.0, "{snap:?}");
}

#[test]
fn growth_and_a_small_site_joined_by_more_are_no_attack() {
    let mut r = Run::new();
    // ×5 over 60 s.
    r.drive(0, 10_000, &[shoppers(100)], fast);
    for s in 0..60 {
        let from = 10_000 + s * 1_000;
        r.drive(
            from,
            from + 1_000,
            &[shoppers(100 + 400 * s as u32 / 60)],
            fast,
        );
    }
    assert_eq!(r.started(), None, "{:?}", r.events);
    // 10 people, and 40 more at once.
    let mut r = Run::new();
    r.drive(0, 20_000, &[shoppers(10)], fast);
    r.drive(20_000, 60_000, &[shoppers(50)], fast);
    assert_eq!(r.started(), None, "{:?}", r.events);
}

#[test]
fn a_page_load_a_lone_client_or_a_single_shed_is_no_surge() {
    let mut r = Run::new();
    let quiet = shoppers(5);
    r.drive(0, 10_000, &[quiet], fast);
    // One client fetches a page and 40 assets within 100 ms.
    let page = Crowd {
        ua: CHROME,
        net: 30,
        clients: 1,
        rate: 400.0,
        route: "/static/app.css",
    };
    r.drive(10_000, 10_100, &[quiet, page], fast);
    r.drive(10_100, 20_000, &[quiet], fast);
    // One shed request: newcomers rank lower at once, but it is no
    // overload once the tick judges it.
    r.d.count_shed();
    assert!(r.d.degraded() && !r.d.calm());
    r.drive(20_000, 25_000, &[quiet], fast);
    assert!(!r.d.degraded() && r.d.calm());
    assert_eq!(r.started(), None, "{:?}", r.events);
    assert!(r.d.snapshot().flagged_classes.is_empty());
}

#[test]
fn mixed_clients_at_a_human_pace_raise_nothing() {
    let mut r = Run::new();
    let crowds = with_tools(shoppers(100), 40, 3, 0.2, "/api/items");
    r.drive(0, 60_000, &crowds, fast);
    assert_eq!(r.started(), None, "{:?}", r.events);
}

#[test]
fn a_diverse_botnet_is_detected_within_two_seconds_with_its_clusters_and_route() {
    let mut r = Run::new();
    r.drive(0, 20_000, &[shoppers(200)], capacity_500);
    // 3,000 bots, 250 for each of twelve tools, 2 searches a second.
    let crowds = with_tools(shoppers(200), 100, 250, 2.0, "/search");
    r.drive(20_000, 30_000, &crowds, capacity_500);
    let started = r.started().expect("detected");
    assert!(
        started - 20_000 <= 2_000,
        "detected after {} ms",
        started - 20_000
    );
    let snap = r.d.snapshot();
    // Every tool's requests fall in a flagged cluster (the family-wide
    // one of tools, or each product's), and the shoppers' do not.
    for ua in TOOLS {
        assert!(r.d.cluster_flagged(cluster(ua, 0b111).ids()), "{ua}");
    }
    assert!(
        snap.flagged_classes
            .iter()
            .all(|s| s.key.family() == UaFamily::Tool),
        "{:?}",
        snap.flagged_classes
    );
    assert!(!r.d.cluster_flagged(cluster(CHROME, 0b111).ids()));
    assert_eq!(snap.flagged_routes.len(), 1, "{:?}", snap.flagged_routes);
    assert_eq!(snap.flagged_routes[0].key, "/search");
    assert!(r.d.route_flagged(r.d.route_hash("/search")));
    assert!(!r.d.route_flagged(r.d.route_hash("/product/{id}")));
    // It says so in words.
    let text = r
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::ClassFlagged(_)))
        .map(|(_, e)| e.to_string())
        .unwrap();
    assert!(text.contains("new clients"), "{text}");
    // The bots stop: the attack ends after the cooldown.
    r.drive(30_000, 45_000, &[shoppers(200)], capacity_500);
    assert!(r.ended().is_some() && !r.d.under_attack());
}

#[test]
fn a_crowd_past_capacity_is_an_attack_that_ends_once_it_is_steady() {
    let mut r = Run::new();
    r.drive(0, 20_000, &[shoppers(200)], capacity_500);
    // 2,000 people within 10 s, past what the service carries.
    for step in 1..=10 {
        let n = 200 + 180 * step;
        let from = 20_000 + u64::from(step - 1) * 1_000;
        r.drive(from, from + 1_000, &[shoppers(n)], capacity_500);
    }
    assert!(
        r.started().is_some(),
        "an overload with a surge is declared"
    );
    r.drive(30_000, 90_000, &[shoppers(2_000)], capacity_500);
    let ended = r.ended().expect("the attack ends once the crowd is steady");
    assert!(ended <= 30_000 + 60_000, "ended at {ended} ms");
    assert!(!r.d.under_attack());
    // Still shedding: not calm, though no attack.
    assert!(r.d.degraded() && !r.d.calm());
    assert!(r.d.snapshot().flagged_classes.is_empty());
}

#[test]
fn a_busy_period_lasts_while_the_crowd_sheds_and_ends_after_the_cooldown() {
    let mut r = Run::new();
    r.drive(0, 20_000, &[shoppers(200)], capacity_500);
    assert_eq!(r.d.busy_stamp(), 0, "at ease");
    r.drive(20_000, 22_000, &[shoppers(2_000)], capacity_500);
    let crowd = r.d.busy_stamp();
    assert_ne!(crowd, 0, "a crowd past capacity begins a busy period");
    // The same period while it sheds, the attack's end included.
    r.drive(22_000, 90_000, &[shoppers(2_000)], capacity_500);
    assert!(r.ended().is_some());
    assert_eq!(r.d.busy_stamp(), crowd);
    // The crowd leaves: at ease again after the cooldown.
    r.drive(90_000, 95_000, &[shoppers(200)], capacity_500);
    assert_eq!(r.d.busy_stamp(), crowd, "within the cooldown");
    r.drive(95_000, 110_000, &[shoppers(200)], capacity_500);
    assert_eq!(r.d.busy_stamp(), 0);
    // A new crowd is another period.
    r.drive(110_000, 112_000, &[shoppers(2_000)], capacity_500);
    assert_ne!(r.d.busy_stamp(), 0);
    assert_ne!(r.d.busy_stamp(), crowd);
}

#[test]
fn a_slow_service_without_more_traffic_is_degraded_not_attacked() {
    let mut r = Run::new();
    r.drive(0, 10_000, &[shoppers(100)], fast);
    fn slow(_: f64) -> (Duration, bool) {
        (Duration::from_millis(400), false)
    }
    r.drive(10_000, 20_000, &[shoppers(100)], slow);
    assert_eq!(r.started(), None);
    assert!(r.d.degraded() && !r.d.calm());
    // With a surge on top, it is an attack.
    r.drive(20_000, 23_000, &[shoppers(400)], slow);
    assert!(matches!(
        r.events
            .iter()
            .find(|(_, e)| matches!(e, Event::AttackStarted { .. })),
        Some((
            _,
            Event::AttackStarted {
                cause: AttackCause::Latency,
                ..
            }
        ))
    ));
}

#[test]
fn a_single_address_flood_of_refusals_is_a_suspect_surge() {
    let mut r = Run::new();
    r.drive(0, 10_000, &[shoppers(100)], fast);
    for t in (10_000..12_000).step_by(10) {
        for _ in 0..10 {
            let s = Sighting {
                cluster: cluster(CHROME, 0b111),
                cluster_ids: cluster(CHROME, 0b111).ids(),
                ip: IpAddr::from([66, 6, 6, 6]),
                site: site(IpAddr::from([66, 6, 6, 6])),
                route: "/search",
                route_hash: r.d.route_hash("/search"),
                new_client: false,
                suspect: false,
            };
            r.d.observe(at(t), &s);
            r.d.count_refusal();
        }
        r.drive(t, t + 10, &[shoppers(100)], fast);
    }
    assert!(r.d.under_attack(), "{:?}", r.events);
    // One client is not a surging cluster or network.
    assert!(r.d.snapshot().flagged_classes.is_empty());
    assert!(r.d.snapshot().flagged_prefixes.is_empty());
}

#[test]
fn remote_flags_hold_until_they_expire_and_stay_bounded() {
    let d = Detector::new(Detection::default(), at(0)).unwrap();
    let bots = cluster("python-requests/2.32", 0b111);
    let shop = cluster(CHROME, 0b111);
    let ids = |c: Cluster| c.ids();
    assert!(!d.cluster_flagged_at(ids(bots), at(0)));
    assert!(d.flag_remote_class(bots.id(), at(5_000), at(0)));
    assert!(d.cluster_flagged_at(ids(bots), at(4_999)));
    assert!(!d.cluster_flagged_at(ids(shop), at(1_000)));
    // Remote flags are not the local attack's: no event, no snapshot.
    assert!(!d.cluster_flagged(ids(bots)) && !d.under_attack());
    assert!(d.snapshot().flagged_classes.is_empty());
    // A later end extends the flag, an earlier one does not shorten it.
    assert!(d.flag_remote_class(bots.id(), at(8_000), at(1_000)));
    assert!(d.flag_remote_class(bots.id(), at(2_000), at(1_000)));
    assert!(d.cluster_flagged_at(ids(bots), at(7_999)));
    assert!(!d.cluster_flagged_at(ids(bots), at(8_000)));
    // Bounded: every place taken by an unexpired flag refuses more.
    for class in 1..MAX_FLAGGED as u64 {
        assert!(d.flag_remote_class(class << 1, at(10_000), at(0)));
    }
    assert!(!d.flag_remote_class(shop.id(), at(10_000), at(0)));
    // An expired place is reused.
    assert!(d.flag_remote_class(shop.id(), at(20_000), at(9_000)));
    assert!(d.cluster_flagged_at(ids(shop), at(9_500)));
    assert!(!d.cluster_flagged_at(ids(bots), at(9_500)));
}

#[test]
fn bad_tuning_is_refused_with_the_field_named() {
    let bad = |f: fn(&mut Detection)| {
        let mut d = Detection::default();
        f(&mut d);
        Detector::new(d, at(0)).err().unwrap().to_string()
    };
    assert!(bad(|d| d.tick = Duration::from_millis(1)).contains("tick"));
    assert!(bad(|d| d.window = Duration::from_millis(20)).contains("window"));
    assert!(bad(|d| d.rate_margin = 0.5).contains("rate_margin"));
    assert!(bad(|d| d.surge_share = 0.0).contains("surge_share"));
    assert!(bad(|d| d.top_k = 0).contains("top_k"));
    assert!(bad(|d| d.significance = f64::NAN).contains("significance"));
    assert!(bad(|d| d.latency_objective = Duration::ZERO).contains("latency_objective"));
}
