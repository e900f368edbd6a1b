//! Wiring mistakes a newcomer makes, each answered with a message that
//! names the fix: at build, at the first request, or in the counters.
#![cfg(all(feature = "tower", feature = "axum"))]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{get as fetch, serve, serve_without_peer};
use floodguard::ConfigError;
use floodguard::http::{ClientIpConfig, Guard, PeerAddr, Rule};

fn app(guard: &Guard) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(guard.layer())
}

/// Forgetting the connect info: a debug build's 500 says how to fix it.
#[tokio::test]
async fn a_server_without_connect_info_gets_a_500_that_names_the_fix() {
    let guard = Guard::builder().default_rules().build().unwrap();
    let addr = serve_without_peer(app(&guard)).await;
    let reply = fetch("127.0.0.11", addr, "/", &[]).await;
    assert_eq!(reply.status, 500);
    assert!(reply.body.starts_with("Internal Server Error"));
    assert!(
        reply.body.contains("floodguard::http::serve"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("into_make_service_with_connect_info"));
    assert_eq!(guard.stats().no_peer_address, 1);
}

/// Trusting every address as a proxy lets any client pick its own key:
/// refused at build unless asked for.
#[test]
fn trusting_every_address_is_refused_unless_asked_for() {
    for everyone in ["0.0.0.0/0", "::/0"] {
        let config = || ClientIpConfig::new().trust(everyone.parse().unwrap());
        let err = Guard::builder().client_ip(config()).build().unwrap_err();
        assert_eq!(
            err,
            ConfigError::TrustsEveryone {
                prefix: everyone.to_string()
            }
        );
        assert!(err.to_string().contains("allow_trusting_everyone"));
        let guard = Guard::builder()
            .client_ip(config().allow_trusting_everyone())
            .build();
        assert!(guard.is_ok());
    }
    // A real proxy network is fine.
    let lb = ClientIpConfig::new().trust("10.0.0.0/8".parse().unwrap());
    assert!(Guard::builder().client_ip(lb).build().is_ok());
}

/// A load balancer nobody told the guard about: its clients all share its
/// address and are refused together. Counted, and warned about once,
/// naming the fix.
#[test]
fn a_forgotten_proxy_is_counted_and_warned_about_once() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(10, Duration::from_secs(60)))
        .build()
        .unwrap();
    let lb: SocketAddr = "10.0.0.2:40000".parse().unwrap();
    for i in 0..100 {
        let (mut parts, ()) = http::Request::get("/")
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .body(())
            .unwrap()
            .into_parts();
        parts.extensions.insert(PeerAddr(lb));
        // Not trusted: keyed on the load balancer, as it must be, so its
        // clients share 10 a minute.
        assert_eq!(guard.check(&parts).is_ok(), i < 10);
    }
    let s = guard.stats();
    assert_eq!(s.untrusted_forwarding, 90);
    assert_eq!(s.forgotten_proxy_warnings, 1);

    // One client writing its own header is not a proxy.
    let guard = Guard::builder().default_rules().build().unwrap();
    let me: SocketAddr = "192.0.2.9:40000".parse().unwrap();
    for _ in 0..30 {
        let (mut parts, ()) = http::Request::get("/")
            .header("x-forwarded-for", "203.0.113.1")
            .body(())
            .unwrap()
            .into_parts();
        parts.extensions.insert(PeerAddr(me));
        let _ = guard.check(&parts);
    }
    let s = guard.stats();
    assert_eq!(s.refused_rate_limit, 0);
    assert_eq!(s.untrusted_forwarding, 0);
    assert_eq!(s.forgotten_proxy_warnings, 0);
}

/// Served the right way, none of the above fires.
#[tokio::test]
async fn the_right_wiring_raises_nothing() {
    let guard = Guard::builder().default_rules().build().unwrap();
    let addr = serve(app(&guard)).await;
    assert_eq!(fetch("127.0.0.11", addr, "/", &[]).await.status, 200);
    let s = guard.stats();
    assert_eq!(
        (
            s.no_peer_address,
            s.untrusted_forwarding,
            s.forgotten_proxy_warnings
        ),
        (0, 0, 0)
    );
}
