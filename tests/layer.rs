//! The Tower layer end to end: axum on 127.0.0.1, hyper clients bound to
//! different 127.x.y.z addresses.
#![cfg(all(feature = "tower", feature = "axum"))]

mod common;

use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::{Extension, Router};
use common::{get as fetch, serve, serve_without_peer};
use floodguard::http::{ClientIpConfig, Guard, GuardDecision, MissingPeer, Rule, Tarpit};
use floodguard::{Clock, ManualClock};

const MINUTE: Duration = Duration::from_secs(60);

async fn whoami(Extension(d): Extension<GuardDecision>) -> String {
    d.client_ip().map(|ip| ip.to_string()).unwrap_or_default()
}

fn app(guard: &Guard<impl Clock + Clone + 'static>) -> Router {
    Router::new()
        .route("/", get(|| async { "home" }))
        .route("/whoami", get(whoami))
        .route(
            "/login",
            post(|| async { "welcome" }).get(|| async { "login form" }),
        )
        .layer(guard.layer())
}

#[tokio::test]
async fn per_ip_limits_hold_for_each_source_address() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(3, MINUTE))
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    for _ in 0..3 {
        assert_eq!(fetch("127.0.0.2", addr, "/", &[]).await.status, 200);
    }
    assert_eq!(fetch("127.0.0.2", addr, "/", &[]).await.status, 429);
    // Another address has its own allowance meanwhile.
    assert_eq!(fetch("127.0.0.3", addr, "/", &[]).await.status, 200);
    let stats = guard.stats();
    assert_eq!((stats.admitted, stats.refused_rate_limit), (4, 1));
}

#[tokio::test]
async fn refusal_carries_exact_rate_limit_headers() {
    let clock = ManualClock::new();
    let guard = Guard::builder()
        .rule(
            Rule::per_ip("per-ip")
                .gcra(1, Duration::from_secs(10))
                .burst(2),
        )
        .clock(clock.clone())
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    assert_eq!(fetch("127.0.0.2", addr, "/", &[]).await.status, 200);
    assert_eq!(fetch("127.0.0.2", addr, "/", &[]).await.status, 200);
    clock.advance(Duration::from_millis(1500));
    let r = fetch("127.0.0.2", addr, "/", &[]).await;
    assert_eq!(r.status, 429);
    // The next unit frees at 10 s; 8.5 s from now, rounded up to 9.
    assert_eq!(r.header("retry-after"), Some("9"));
    assert_eq!(r.header("ratelimit"), Some("\"per-ip\";r=0;t=19"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-ip\";q=2;w=20"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.body, "Too Many Requests\n");
}

#[tokio::test]
async fn sub_second_waits_round_up_to_one_second() {
    let clock = ManualClock::new();
    let guard = Guard::builder()
        .rule(
            Rule::per_ip("fast")
                .gcra(10, Duration::from_secs(1))
                .burst(1),
        )
        .clock(clock.clone())
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    assert_eq!(fetch("127.0.0.2", addr, "/", &[]).await.status, 200);
    let r = fetch("127.0.0.2", addr, "/", &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_untrusted_peers_change_nothing() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(3, MINUTE))
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    for i in 0..3 {
        let xff = format!("203.0.113.{i}");
        let fwd = format!("for=198.51.100.{i}");
        let h = [
            ("x-forwarded-for", xff.as_str()),
            ("forwarded", fwd.as_str()),
            ("x-real-ip", xff.as_str()),
        ];
        let r = fetch("127.0.0.4", addr, "/whoami", &h).await;
        assert_eq!((r.status, r.body.as_str()), (200, "127.0.0.4"));
    }
    let h = [("x-forwarded-for", "203.0.113.99")];
    assert_eq!(fetch("127.0.0.4", addr, "/", &h).await.status, 429);
}

#[tokio::test]
async fn a_chain_of_trusted_proxies_resolves_to_the_client() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(2, MINUTE))
        .client_ip(
            ClientIpConfig::new()
                .trust("127.0.0.9".parse().unwrap())
                .trust("10.0.0.0/8".parse().unwrap()),
        )
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    // The client forged the leftmost entry; our proxies appended the rest.
    let h = [("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.1.2.3")];
    let r = fetch("127.0.0.9", addr, "/whoami", &h).await;
    assert_eq!(r.body, "203.0.113.7");
    assert_eq!(fetch("127.0.0.9", addr, "/", &h).await.status, 200);
    assert_eq!(fetch("127.0.0.9", addr, "/", &h).await.status, 429);
    // Another client behind the same proxies is counted apart.
    let other = [("x-forwarded-for", "203.0.113.8, 10.1.2.3")];
    assert_eq!(fetch("127.0.0.9", addr, "/", &other).await.status, 200);
    // A malformed header from the trusted proxy is counted and falls back
    // to the proxy's own address.
    let bad = [("x-forwarded-for", "203.0.113.9, not-an-ip")];
    let r = fetch("127.0.0.9", addr, "/whoami", &bad).await;
    assert_eq!(r.body, "127.0.0.9");
    assert_eq!(guard.stats().malformed_forwarding, 1);
}

#[tokio::test]
async fn a_second_rule_refusing_leaves_the_first_uncharged() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(3, MINUTE))
        .rule(
            Rule::per_ip("login")
                .path("/login")
                .sliding_window(1, MINUTE),
        )
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    assert_eq!(fetch("127.0.0.5", addr, "/login", &[]).await.status, 200);
    for _ in 0..3 {
        let r = fetch("127.0.0.5", addr, "/login", &[]).await;
        assert_eq!(r.status, 429);
        assert!(r.header("ratelimit").unwrap().starts_with("\"login\""));
    }
    // Only the first request was charged to per-ip: two more pass.
    assert_eq!(fetch("127.0.0.5", addr, "/", &[]).await.status, 200);
    assert_eq!(fetch("127.0.0.5", addr, "/", &[]).await.status, 200);
    assert_eq!(fetch("127.0.0.5", addr, "/", &[]).await.status, 429);
}

#[tokio::test]
async fn rules_scoped_by_method_apply_only_to_that_method() {
    let guard = Guard::builder()
        .rule(
            Rule::per_ip("login-post")
                .path("/login")
                .method(http::Method::POST)
                .sliding_window(1, MINUTE),
        )
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    for _ in 0..3 {
        assert_eq!(fetch("127.0.0.6", addr, "/login", &[]).await.status, 200);
    }
}

#[tokio::test]
async fn runtime_ban_and_unban() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(100, MINUTE))
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    assert_eq!(fetch("127.0.0.7", addr, "/", &[]).await.status, 200);
    let net = "127.0.0.7/32".parse().unwrap();
    assert!(guard.ban(net, MINUTE));
    let r = fetch("127.0.0.7", addr, "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (403, "Forbidden\n"));
    assert_eq!(fetch("127.0.0.8", addr, "/", &[]).await.status, 200);
    assert!(guard.unban(&net));
    assert_eq!(fetch("127.0.0.7", addr, "/", &[]).await.status, 200);
    assert_eq!(guard.stats().refused_blocked, 1);
}

#[tokio::test]
async fn bans_expire_on_the_guard_clock() {
    let clock = ManualClock::new();
    let guard = Guard::builder()
        .rule(Rule::global("all").sliding_window(100, MINUTE))
        .clock(clock.clone())
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    guard.ban("127.0.0.0/16".parse().unwrap(), Duration::from_secs(30));
    assert_eq!(fetch("127.0.3.4", addr, "/", &[]).await.status, 403);
    assert_eq!(guard.bans().len(), 1);
    clock.advance(Duration::from_secs(30));
    assert!(guard.bans().is_empty());
    assert_eq!(fetch("127.0.3.4", addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn safelist_skips_rules_and_blocklist_refuses() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(1, MINUTE))
        .safelist("127.0.1.0/24".parse().unwrap())
        .blocklist("127.0.2.0/24".parse().unwrap())
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    for _ in 0..3 {
        assert_eq!(fetch("127.0.1.1", addr, "/", &[]).await.status, 200);
    }
    assert_eq!(fetch("127.0.2.1", addr, "/", &[]).await.status, 403);
    let s = guard.stats();
    assert_eq!((s.safelisted, s.refused_blocked), (3, 1));
}

#[tokio::test]
async fn shadow_rules_count_but_never_refuse() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("strict").sliding_window(1, MINUTE).shadow())
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    for _ in 0..4 {
        assert_eq!(fetch("127.0.0.10", addr, "/", &[]).await.status, 200);
    }
    let rule = &guard.stats().rules[0];
    assert_eq!(
        (rule.name.as_str(), rule.shadow, rule.shadow_refusals),
        ("strict", true, 3)
    );
}

#[tokio::test]
async fn missing_peer_address_is_refused_unless_configured() {
    let rule = || Rule::per_ip("per-ip").sliding_window(10, MINUTE);
    let strict = Guard::builder().rule(rule()).build().unwrap();
    let addr = serve_without_peer(app(&strict)).await;
    assert_eq!(fetch("127.0.0.11", addr, "/", &[]).await.status, 500);
    assert_eq!(strict.stats().no_peer_address, 1);

    let lenient = Guard::builder()
        .rule(rule())
        .rule(Rule::global("ceiling").sliding_window(2, MINUTE))
        .on_missing_peer(MissingPeer::SkipAddressRules)
        .build()
        .unwrap();
    let addr = serve_without_peer(app(&lenient)).await;
    assert_eq!(fetch("127.0.0.11", addr, "/", &[]).await.status, 200);
    assert_eq!(fetch("127.0.0.11", addr, "/", &[]).await.status, 200);
    // Rules that need no address still hold.
    assert_eq!(fetch("127.0.0.11", addr, "/", &[]).await.status, 429);
}

#[tokio::test]
async fn header_rules_key_on_the_value_and_skip_requests_without_it() {
    let guard = Guard::builder()
        .rule(Rule::per_header("api-key", "X-Api-Key").sliding_window(1, MINUTE))
        .rate_limit_headers(true)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    let a = [("x-api-key", "alpha")];
    let r = fetch("127.0.0.12", addr, "/", &a).await;
    assert_eq!(r.status, 200);
    // At the start of a window, the count fully clears after two windows.
    assert_eq!(r.header("ratelimit"), Some("\"api-key\";r=0;t=120"));
    // The same key from another address is the same counter.
    assert_eq!(fetch("127.0.0.13", addr, "/", &a).await.status, 429);
    assert_eq!(
        fetch("127.0.0.13", addr, "/", &[("x-api-key", "beta")])
            .await
            .status,
        200
    );
    for _ in 0..3 {
        let r = fetch("127.0.0.13", addr, "/", &[]).await;
        assert_eq!((r.status, r.header("ratelimit")), (200, None));
    }
}

/// The layer without sockets: a request with a synthetic peer address.
mod synthetic_peers {
    use super::*;
    use floodguard::http::PeerAddr;
    use floodguard::ip::PrefixLengths;
    use tower::{Service, ServiceExt};

    async fn status_from(
        svc: &mut Router,
        peer: &str,
        headers: &[(&str, &str)],
    ) -> (u16, http::HeaderMap) {
        let mut req = http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap();
        // gRPC runs over HTTP/2 (the refusal takes its form only there).
        if headers
            .iter()
            .any(|(k, v)| *k == "content-type" && v.starts_with("application/grpc"))
        {
            *req.version_mut() = http::Version::HTTP_2;
        }
        for (k, v) in headers {
            let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            req.headers_mut().insert(name, v.parse().unwrap());
        }
        req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
        let res = ServiceExt::<http::Request<axum::body::Body>>::ready(svc)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap();
        (res.status().as_u16(), res.headers().clone())
    }

    #[tokio::test]
    async fn one_ipv6_64_is_one_client_and_mapped_ipv4_is_ipv4() {
        let guard = Guard::builder()
            .rule(Rule::per_prefix("per-net", PrefixLengths::SUBNET).sliding_window(3, MINUTE))
            .clock(ManualClock::new())
            .build()
            .unwrap();
        let mut svc = app(&guard);
        for host in ["1", "2", "ffff:1:2"] {
            let peer = format!("[2001:db8:0:7::{host}]:443");
            assert_eq!(status_from(&mut svc, &peer, &[]).await.0, 200);
        }
        assert_eq!(
            status_from(&mut svc, "[2001:db8:0:7:aaaa::9]:1", &[])
                .await
                .0,
            429
        );
        // The next /64 is another client.
        assert_eq!(
            status_from(&mut svc, "[2001:db8:0:8::1]:1", &[]).await.0,
            200
        );
        // IPv4-mapped IPv6 and IPv4 share the /24.
        for peer in [
            "[::ffff:192.0.2.1]:1",
            "192.0.2.2:1",
            "[::ffff:192.0.2.3]:1",
        ] {
            assert_eq!(status_from(&mut svc, peer, &[]).await.0, 200);
        }
        assert_eq!(status_from(&mut svc, "192.0.2.200:1", &[]).await.0, 429);
    }

    #[tokio::test]
    async fn ipv6_rotation_through_a_trusted_proxy_stays_one_key() {
        let guard = Guard::builder()
            .rule(Rule::per_prefix("per-net", PrefixLengths::SUBNET).sliding_window(2, MINUTE))
            .client_ip(ClientIpConfig::new().trust("::1".parse().unwrap()))
            .clock(ManualClock::new())
            .build()
            .unwrap();
        let mut svc = app(&guard);
        let h = |xff: &'static str| [("x-forwarded-for", xff)];
        assert_eq!(
            status_from(&mut svc, "[::1]:9", &h("2001:db8:1:2::a"))
                .await
                .0,
            200
        );
        assert_eq!(
            status_from(&mut svc, "[::1]:9", &h("2001:db8:1:2::b"))
                .await
                .0,
            200
        );
        assert_eq!(
            status_from(&mut svc, "[::1]:9", &h("2001:db8:1:2:ffff::c"))
                .await
                .0,
            429
        );
    }

    #[tokio::test]
    async fn many_rules_are_charged_all_or_none_too() {
        // More enforced rules than fit the on-stack array.
        let mut builder = Guard::builder().clock(ManualClock::new());
        for i in 0..11 {
            builder = builder.rule(Rule::per_ip(format!("r{i}")).sliding_window(3, MINUTE));
        }
        let guard = builder
            .rule(
                Rule::per_ip("strict")
                    .path("/whoami")
                    .sliding_window(1, MINUTE),
            )
            .build()
            .unwrap();
        let mut svc = app(&guard);
        let who = |p: &str| {
            let (mut parts, ()) = http::Request::get(p).body(()).unwrap().into_parts();
            parts
                .extensions
                .insert(PeerAddr("192.0.2.9:1".parse().unwrap()));
            parts
        };
        assert!(guard.check(&who("/whoami")).is_ok());
        for _ in 0..3 {
            let refusal = guard.check(&who("/whoami")).unwrap_err();
            assert_eq!(refusal.rule(), Some("strict"));
        }
        // Only the first request was charged to the eleven others.
        assert_eq!(status_from(&mut svc, "192.0.2.9:1", &[]).await.0, 200);
        assert_eq!(status_from(&mut svc, "192.0.2.9:1", &[]).await.0, 200);
        assert_eq!(status_from(&mut svc, "192.0.2.9:1", &[]).await.0, 429);
    }

    #[tokio::test]
    async fn grpc_requests_get_a_trailers_only_grpc_status() {
        let guard = Guard::builder()
            .rule(
                Rule::per_ip("per-ip")
                    .gcra(1, Duration::from_secs(2))
                    .burst(1),
            )
            .clock(ManualClock::new())
            .build()
            .unwrap();
        let mut svc = app(&guard);
        let grpc = [("content-type", "application/grpc+proto")];
        assert_eq!(status_from(&mut svc, "192.0.2.1:1", &grpc).await.0, 200);
        let (status, h) = status_from(&mut svc, "192.0.2.1:1", &grpc).await;
        assert_eq!(status, 200);
        assert_eq!(h["content-type"], "application/grpc+proto");
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(h["grpc-retry-pushback-ms"], "2000");
        assert_eq!(h["retry-after"], "2");
    }
}

#[test]
fn layer_and_service_are_clone_send_sync_and_share_one_state() {
    fn assert_traits<T: Clone + Send + Sync + 'static>(_: &T) {}
    let guard = Guard::builder()
        .rule(Rule::global("all").sliding_window(1, MINUTE))
        .build()
        .unwrap();
    let layer = guard.layer();
    assert_traits(&layer);
    let svc = tower::Layer::layer(&layer, Router::<()>::new());
    assert_traits(&svc);
    // Clones of the guard, the layer and the service count against one limit.
    let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    parts
        .extensions
        .insert(floodguard::http::PeerAddr("192.0.2.1:1".parse().unwrap()));
    assert!(guard.clone().check(&parts).is_ok());
    assert!(guard.check(&parts).is_err());
}

#[test]
fn bad_rules_are_named_in_the_error() {
    use floodguard::ConfigError;
    let err = Guard::builder()
        .rule(Rule::per_ip("per-ip").gcra(0, MINUTE))
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "rule `per-ip`: `rate` must be at least 1");
    let err = Guard::builder()
        .rule(Rule::per_ip("a").sliding_window(1, MINUTE))
        .rule(Rule::per_path("a").sliding_window(1, MINUTE))
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::DuplicateRule { rule: "a".into() });
    let err = Guard::builder()
        .rule(Rule::per_header("h", "bad header").sliding_window(1, MINUTE))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("not a valid header name"), "{err}");
    let err = Guard::builder()
        .rule(Rule::per_ip("has \"quotes\"").sliding_window(1, MINUTE))
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::BadRuleName { .. }));
    let err = Guard::builder()
        .rule(Rule::per_ip("none"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no algorithm chosen"), "{err}");
}

#[tokio::test]
async fn refused_http1_connections_are_closed_unless_configured() {
    use tokio::io::AsyncReadExt;
    for close in [true, false] {
        let guard = Guard::builder()
            .rule(Rule::per_ip("per-ip").sliding_window(1, MINUTE))
            .close_refused_connections(close)
            .build()
            .unwrap();
        let addr = serve(app(&guard)).await;
        let mut stream = common::connect_from("127.0.0.20", addr).await;
        let req = b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n";
        let mut text = String::new();
        for _ in 0..2 {
            text.push_str(&common::exchange_raw(&mut stream, req).await.to_lowercase());
        }
        let mut buf = [0u8; 1];
        assert!(text.contains("429 too many requests"), "{text}");
        assert_eq!(text.contains("connection: close"), close, "{text}");
        // Closed: the next read sees end of stream; kept: it would block.
        let next =
            tokio::time::timeout(std::time::Duration::from_millis(300), stream.read(&mut buf))
                .await;
        assert_eq!(matches!(next, Ok(Ok(0))), close);
    }
}

#[tokio::test]
async fn a_trusted_proxys_connection_is_kept_and_exempt_from_gate_caps() {
    use floodguard::http::AcceptVerdict;
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(1, MINUTE))
        .client_ip(ClientIpConfig::new().trust("127.0.0.30".parse().unwrap()))
        .build()
        .unwrap();
    assert_eq!(
        guard.accept_verdict("127.0.0.30".parse().unwrap()),
        AcceptVerdict::Exempt
    );
    assert_eq!(
        guard.accept_verdict("127.0.0.31".parse().unwrap()),
        AcceptVerdict::Normal
    );
    let addr = serve(app(&guard)).await;
    let mut stream = common::connect_from("127.0.0.30", addr).await;
    let req = b"GET / HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: 203.0.113.1\r\n\r\n";
    let mut text = String::new();
    for _ in 0..2 {
        text.push_str(&common::exchange_raw(&mut stream, req).await.to_lowercase());
    }
    assert!(text.contains("429 too many requests"), "{text}");
    // The refusal was for one client behind the proxy: the proxy's
    // connection stays open for the others.
    assert!(!text.contains("connection: close"), "{text}");
    let other = b"GET / HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: 203.0.113.2\r\n\r\n";
    let answer = common::exchange_raw(&mut stream, other).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_full_ban_list_still_renews_a_ban_it_holds() {
    let guard = Guard::builder()
        .rule(Rule::global("all").sliding_window(100, MINUTE))
        .max_bans(2)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let (host, net) = (
        "10.0.0.0/32".parse().unwrap(),
        "10.0.0.0/24".parse().unwrap(),
    );
    assert!(guard.ban(host, MINUTE));
    assert!(guard.ban(net, MINUTE));
    // Full, but renewing a ban already held takes no new place, even when a
    // longer banned prefix shares its network address.
    assert!(guard.ban(net, 2 * MINUTE));
    assert!(guard.ban(host, 2 * MINUTE));
    // A new ban in a full list takes the place of the one ending soonest.
    assert!(guard.ban("10.0.1.0/24".parse().unwrap(), 3 * MINUTE));
    let s = guard.stats();
    assert_eq!((s.bans, s.bans_evicted), (2, 1));
    assert!(guard.is_banned("10.0.1.7".parse().unwrap()));
}

#[tokio::test]
async fn a_blocked_clients_refusal_is_held_by_the_tarpit_up_to_its_cap() {
    let hold = Duration::from_secs(1);
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(1, MINUTE))
        .client_ip(ClientIpConfig::new().trust("127.0.9.9/32".parse().unwrap()))
        .tarpit(Tarpit::new(hold, 1))
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    const BANNED: &[(&str, &str)] = &[("x-forwarded-for", "2001:db8::66")];
    const CUSTOMER: &[(&str, &str)] = &[("x-forwarded-for", "192.0.2.8")];
    assert!(guard.ban("2001:db8::/64".parse().unwrap(), MINUTE));
    // Two refusals at once through the proxy: one place, so one is held
    // and the other goes out at once.
    let timed = |headers: &'static [(&str, &str)]| async move {
        let started = Instant::now();
        let r = fetch("127.0.9.9", addr, "/", headers).await;
        (r.status, started.elapsed())
    };
    let (a, b) = tokio::join!(timed(BANNED), timed(BANNED));
    let (mut waits, statuses) = ([a.1, b.1], [a.0, b.0]);
    waits.sort();
    assert_eq!(statuses, [403, 403]);
    assert!(waits[0] < hold, "one answered at once: {waits:?}");
    assert!(waits[1] >= hold, "one held: {waits:?}");
    let t = guard.stats().tarpit;
    assert_eq!((t.held, t.full, t.holding), (1, 1, 0));
    // A rate-limit refusal is never held: that client may be a customer.
    assert_eq!(timed(CUSTOMER).await.0, 200);
    let (status, waited) = timed(CUSTOMER).await;
    assert_eq!(status, 429);
    assert!(waited < hold, "{waited:?}");
    assert_eq!(guard.stats().tarpit.held, 1);
}

#[tokio::test]
async fn tarpit_off_answers_blocked_clients_at_once() {
    let guard = Guard::builder()
        .blocklist("127.0.2.0/24".parse().unwrap())
        .tarpit(Tarpit::off())
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    let started = Instant::now();
    assert_eq!(fetch("127.0.2.1", addr, "/", &[]).await.status, 403);
    assert!(started.elapsed() < Tarpit::default().hold());
    assert_eq!(guard.stats().tarpit, Default::default());
}
