//! The metrics route end to end: axum on 127.0.0.1 with the guard's layer,
//! a few requests from loopback addresses, then a scrape.
#![cfg(all(feature = "tower", feature = "axum"))]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{get as fetch, serve};
use floodguard::http::{
    Guard, PROMETHEUS_CONTENT_TYPE, Rule, metrics_handler, metrics_handler_with_gate,
};
use tokio::net::TcpListener;

const MINUTE: Duration = Duration::from_secs(60);

/// The value of the one sample written exactly as `series` (name and
/// labels), e.g. `floodguard_refused_total{reason="rate_limit"}`.
fn sample(text: &str, series: &str) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{series} in\n{text}");
    found[0]
}

fn guard() -> Guard {
    Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(2, MINUTE))
        .rule(Rule::global("would-be").sliding_window(1, MINUTE).shadow())
        .build()
        .unwrap()
}

#[tokio::test]
async fn scrape_in_front_of_the_guard_reflects_the_requests() {
    let guard = guard();
    let app = Router::new()
        .route("/", get(|| async { "home" }))
        .layer(guard.layer())
        .route("/metrics", metrics_handler(guard.clone()));
    let addr = serve(app).await;
    for _ in 0..3 {
        fetch("127.0.0.2", addr, "/", &[]).await;
    }
    assert_eq!(fetch("127.0.0.3", addr, "/", &[]).await.status, 200);

    // Scraped from the limited address, twice: the route is not guarded.
    for _ in 0..2 {
        let r = fetch("127.0.0.2", addr, "/metrics", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(PROMETHEUS_CONTENT_TYPE));
        let t = &r.body;
        assert_eq!(sample(t, "floodguard_requests_total"), 4.0);
        assert_eq!(sample(t, "floodguard_admitted_total"), 3.0);
        assert_eq!(
            sample(t, "floodguard_refused_total{reason=\"rate_limit\"}"),
            1.0
        );
        assert_eq!(
            sample(t, "floodguard_refused_total{reason=\"blocked\"}"),
            0.0
        );
        assert_eq!(
            sample(
                t,
                "floodguard_rule_denied_total{rule=\"per-ip\",shadow=\"false\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                t,
                "floodguard_rule_denied_total{rule=\"would-be\",shadow=\"true\"}"
            ),
            2.0
        );
        assert_eq!(
            sample(t, "floodguard_rule_keys{rule=\"per-ip\",shadow=\"false\"}"),
            2.0
        );
        assert!(t.contains("# TYPE floodguard_refused_total counter\n"));
        assert!(
            !t.contains("floodguard_under_attack"),
            "no scoring, no detection"
        );
    }
}

#[tokio::test]
async fn scrape_behind_the_guard_is_a_request_like_any_other() {
    let guard = guard();
    let app = Router::new()
        .route("/", get(|| async { "home" }))
        .route("/metrics", metrics_handler(guard.clone()))
        .layer(guard.layer());
    let addr = serve(app).await;
    fetch("127.0.0.2", addr, "/", &[]).await;
    let r = fetch("127.0.0.2", addr, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    // The scrape was counted before its own text was written.
    assert_eq!(sample(&r.body, "floodguard_requests_total"), 2.0);
    assert_eq!(sample(&r.body, "floodguard_admitted_total"), 2.0);
    // And is limited: the address has used its two.
    assert_eq!(fetch("127.0.0.2", addr, "/metrics", &[]).await.status, 429);
}

#[tokio::test]
async fn gate_counters_come_with_the_guards() {
    let guard = guard();
    let gate = guard.gate().max_connections_per_ip(16).build().unwrap();
    let app = Router::new()
        .route("/", get(|| async { "home" }))
        .layer(guard.layer())
        .route(
            "/metrics",
            metrics_handler_with_gate(guard.clone(), gate.clone()),
        );
    let listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener.into_axum(), make).await.unwrap() });
    assert_eq!(fetch("127.0.0.2", addr, "/", &[]).await.status, 200);
    let r = fetch("127.0.0.4", addr, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(sample(&r.body, "floodguard_requests_total"), 1.0);
    // This connection and the one before it (each exchange has its own).
    assert_eq!(sample(&r.body, "floodguard_gate_accepted_total"), 2.0);
    assert_eq!(
        sample(&r.body, "floodguard_gate_refused_total{reason=\"per_ip\"}"),
        0.0
    );
}
