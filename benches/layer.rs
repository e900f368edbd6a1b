//! What the Tower layer costs per request, without sockets: an axum
//! `Router` with one constant route, bare and behind floodguard or
//! tower_governor (same GCRA quota, peer address from `ConnectInfo`),
//! called in-process. The difference to `bare` is the middleware's own cost,
//! which `benches/http_bench.rs` sets against a whole HTTP exchange.
//!
//! The `fingerprint` group measures what client scoring will add per
//! request: a fingerprint and its anomalies for a Chrome navigation of 18
//! headers (with the gate's wire head, and order-free without it), the
//! user-agent family alone (a hit in the user-agent cache, as every
//! request after a client's first is; a miss runs the automaton, about
//! 240 ns here), and the gate's scan of that request's head.
//!
//! The `scoring` group is the whole layer serving a Chrome navigation (18
//! headers) with the default rules, without and with client scoring (the
//! `Scoring` defaults: fingerprint, anomalies, client and network scores,
//! detection counting) and overload protection (a place in the adaptive
//! limit and a latency sample per request), from one client and from
//! 4,096 rotating clients.
//!
//! `cargo bench --bench layer --all-features`

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use floodguard::http::{
    Fingerprint, Guard, HeadScanner, Overload, Rule, Scan, Scoring, anomalies, ua_family,
};
use tower::Service;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;

fn router() -> Router {
    Router::new().route("/hello", get(|| async { "hello\n" }))
}

fn floodguard(per: Duration, burst: u64) -> Router {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").gcra(1, per).burst(burst))
        .close_refused_connections(false)
        .build()
        .unwrap();
    router().layer(guard.layer())
}

fn tower_governor(per: Duration, burst: u32) -> Router {
    let config = GovernorConfigBuilder::default()
        .key_extractor(PeerIpKeyExtractor)
        .period(per)
        .burst_size(burst)
        .finish()
        .unwrap();
    router().layer(GovernorLayer::new(Arc::new(config)))
}

/// One request through `svc`, polled to completion on this thread (every
/// service here answers without waiting). Returns the status.
fn call(svc: &mut Router, peer: SocketAddr) -> u16 {
    call_with(svc, peer, &http::HeaderMap::new())
}

fn layer(c: &mut Criterion) {
    let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    // One a nanosecond: no benchmark loop can exhaust it.
    let never = (Duration::from_nanos(1), 1_000_000);
    let always = (Duration::from_secs(3600), 1);
    let mut contenders = [
        ("admit/bare", router(), 200),
        ("admit/floodguard", floodguard(never.0, never.1), 200),
        // The layer's fixed cost: no rule to check.
        (
            "admit/floodguard_no_rules",
            router().layer(Guard::builder().build().unwrap().layer()),
            200,
        ),
        (
            "admit/tower_governor",
            tower_governor(never.0, never.1 as u32),
            200,
        ),
        ("refuse/floodguard", floodguard(always.0, always.1), 429),
        (
            "refuse/tower_governor",
            tower_governor(always.0, always.1 as u32),
            429,
        ),
    ];
    let mut g = c.benchmark_group("layer");
    {
        let guard = Guard::builder()
            .rule(Rule::per_ip("per-ip").gcra(1, never.0).burst(never.1))
            .build()
            .unwrap();
        let (mut parts, ()) = http::Request::get("/hello").body(()).unwrap().into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        // The decision alone, without Tower or axum around it.
        g.bench_function("guard_check", |b| {
            b.iter(|| guard.check(black_box(&parts)).is_ok())
        });
    }
    for (name, svc, status) in &mut contenders {
        // The first request of the refusing quotas is admitted.
        call(svc, peer);
        assert_eq!(call(svc, peer), *status, "{name}");
        g.bench_function(*name, |b| b.iter(|| call(svc, black_box(peer))));
    }
    g.finish();
}

/// A Chrome 124 navigation: 18 headers in Chrome's order and casing.
const CHROME_HEADERS: [(&str, &str); 18] = [
    ("Host", "shop.test"),
    ("Connection", "keep-alive"),
    ("Cache-Control", "max-age=0"),
    (
        "sec-ch-ua",
        "\"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"",
    ),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", "\"Windows\""),
    ("Upgrade-Insecure-Requests", "1"),
    (
        "User-Agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8",
    ),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-User", "?1"),
    ("Sec-Fetch-Dest", "document"),
    ("Referer", "https://shop.test/"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Cookie", "session=0123456789abcdef; cart=3"),
    ("Priority", "u=0, i"),
];

fn fingerprint(c: &mut Criterion) {
    let mut head = String::from("GET /search?q=shoes HTTP/1.1\r\n");
    let mut req = http::Request::get("/search?q=shoes");
    for (name, value) in CHROME_HEADERS {
        head.push_str(&format!("{name}: {value}\r\n"));
        req = req.header(name, value);
    }
    head.push_str("\r\n");
    let (parts, ()) = req.body(()).unwrap().into_parts();
    let Scan::Done(wire) = HeadScanner::new().feed(head.as_bytes()) else {
        panic!("the Chrome head does not scan");
    };
    let ua = CHROME_HEADERS[7].1.as_bytes();
    assert!(anomalies(&parts, ua_family(ua)).is_empty());

    let mut g = c.benchmark_group("fingerprint");
    g.bench_function("of+anomalies/chrome_wire", |b| {
        b.iter(|| {
            let fp = Fingerprint::of(black_box(&parts), Some(black_box(&wire)));
            (fp.class(), anomalies(black_box(&parts), fp.ua_family()))
        })
    });
    g.bench_function("of+anomalies/chrome_order_free", |b| {
        b.iter(|| {
            let fp = Fingerprint::of(black_box(&parts), None);
            (fp.class(), anomalies(black_box(&parts), fp.ua_family()))
        })
    });
    g.bench_function("ua_family/chrome", |b| b.iter(|| ua_family(black_box(ua))));
    g.bench_function("scan_head/chrome", |b| {
        b.iter(|| HeadScanner::new().feed(black_box(head.as_bytes())))
    });
    g.finish();
}

/// One request with `headers` from `peer` through `svc`, polled to
/// completion on this thread. Returns the status.
fn call_with(svc: &mut Router, peer: SocketAddr, headers: &http::HeaderMap) -> u16 {
    let mut req = http::Request::get("/hello").body(Body::empty()).unwrap();
    *req.headers_mut() = headers.clone();
    req.extensions_mut().insert(ConnectInfo(peer));
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(Service::call(svc, req));
    loop {
        if let Poll::Ready(res) = fut.as_mut().poll(&mut cx) {
            return res.unwrap().status().as_u16();
        }
    }
}

fn scoring(c: &mut Criterion) {
    let mut headers = http::HeaderMap::new();
    for (name, value) in CHROME_HEADERS {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_static(value),
        );
    }
    // Limits no benchmark loop can reach: the cost of admitting.
    let rules = || {
        Guard::builder()
            .rule(
                Rule::per_ip("per-ip")
                    .gcra(1, Duration::from_nanos(1))
                    .burst(1_000_000),
            )
            .close_refused_connections(false)
    };
    let overload = || Overload::default().limits(100, 4, 1_000);
    let mut contenders = [
        (
            "rules_only",
            router().layer(rules().build().unwrap().layer()),
        ),
        (
            "rules_and_scoring",
            router().layer(rules().scoring(Scoring::new()).build().unwrap().layer()),
        ),
        (
            "rules_and_overload",
            router().layer(rules().overload(overload()).build().unwrap().layer()),
        ),
        (
            "rules_scoring_and_overload",
            router().layer(
                rules()
                    .scoring(Scoring::new())
                    .overload(overload())
                    .build()
                    .unwrap()
                    .layer(),
            ),
        ),
    ];
    let peers: Vec<SocketAddr> = (0..4096u32)
        .map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 4000)))
        .collect();
    let mut g = c.benchmark_group("scoring");
    for (name, svc) in &mut contenders {
        assert_eq!(call_with(svc, peers[0], &headers), 200, "{name}");
        g.bench_function(format!("{name}/one_client"), |b| {
            b.iter(|| call_with(svc, black_box(peers[0]), &headers))
        });
        let mut i = 0;
        g.bench_function(format!("{name}/4096_clients"), |b| {
            b.iter(|| {
                i = (i + 1) % peers.len();
                call_with(svc, black_box(peers[i]), &headers)
            })
        });
    }
    g.finish();
}

/// A request's cost with 1,000 and with 100,000 bans held (one /32 each,
/// none covering the client), and a new ban in a full list of each size:
/// the list's lock must not cost more as it fills.
fn bans(c: &mut Criterion) {
    let mut g = c.benchmark_group("bans");
    let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    for held in [1_000u32, 100_000] {
        let guard = Guard::builder()
            .rule(
                Rule::per_ip("per-ip")
                    .gcra(1, Duration::from_nanos(1))
                    .burst(1_000_000),
            )
            .max_bans(held as usize)
            .close_refused_connections(false)
            .build()
            .unwrap();
        let ban = |i: u32| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            guard.ban(std::net::IpAddr::V4(ip).into(), Duration::from_secs(3600))
        };
        for i in 0..held {
            ban(i);
        }
        let mut svc = router().layer(guard.layer());
        g.bench_function(format!("request/{held}_held"), |b| {
            b.iter(|| black_box(call(&mut svc, peer)))
        });
        let mut next = held;
        g.bench_function(format!("ban_into_full_list/{held}_held"), |b| {
            b.iter(|| {
                next += 1;
                black_box(ban(next))
            })
        });
        assert_eq!(guard.stats().bans, held as usize);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = layer, fingerprint, scoring, bans
}
criterion_main!(benches);
