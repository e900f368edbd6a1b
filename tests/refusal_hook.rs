//! The refusal hook shapes HTTP refusals; the headers floodguard owes the
//! client stay right.
#![cfg(all(feature = "tower", feature = "axum"))]

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{get as fetch, serve};
use floodguard::http::{Guard, RefusalKind, RefusalResponse, Rule};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};

fn app(guard: &Guard) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(guard.layer())
}

#[tokio::test]
async fn a_json_429_keeps_retry_after_and_ratelimit() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(1, Duration::from_secs(60)))
        .on_refusal(|r| {
            let rule = r.rule.unwrap_or("-").to_string();
            let wait = r.retry_after.map_or(0, |d| d.as_secs());
            let path = r.request.map_or("?", |p| p.uri.path()).to_string();
            (r.kind == RefusalKind::RateLimited).then(|| {
                RefusalResponse::new(format!(
                    r#"{{"error":"rate_limited","rule":"{rule}","wait":{wait},"path":"{path}"}}"#
                ))
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                // A hook cannot break what floodguard owes the client.
                .header(http::header::RETRY_AFTER, HeaderValue::from_static("0"))
            })
        })
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    assert_eq!(fetch("127.0.0.21", addr, "/", &[]).await.status, 200);
    let r = fetch("127.0.0.21", addr, "/", &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.body
            .starts_with(r#"{"error":"rate_limited","rule":"per-ip","wait":"#),
        "{}",
        r.body
    );
    assert!(r.body.ends_with(r#""path":"/"}"#));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // floodguard's wait, not the hook's 0.
    assert!(retry >= 59, "{retry}");
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with("\"per-ip\";r=0;t=")
    );
    assert!(r.header("ratelimit-policy").is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn a_blocked_client_can_get_a_branded_page_with_another_status() {
    let guard = Guard::builder()
        .blocklist("127.0.0.0/8".parse().unwrap())
        .on_refusal(|r| {
            (r.kind == RefusalKind::Blocked)
                .then(|| RefusalResponse::new("<h1>Not here</h1>").status(StatusCode::NOT_FOUND))
        })
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    let r = fetch("127.0.0.22", addr, "/", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "<h1>Not here</h1>");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(guard.stats().refused_blocked, 1);
}

#[tokio::test]
async fn a_hook_that_declines_keeps_the_plain_refusal() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(1, Duration::from_secs(60)))
        .on_refusal(|_| None)
        .build()
        .unwrap();
    let addr = serve(app(&guard)).await;
    fetch("127.0.0.23", addr, "/", &[]).await;
    let r = fetch("127.0.0.23", addr, "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (429, "Too Many Requests\n"));
}
