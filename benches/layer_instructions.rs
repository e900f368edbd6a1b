//! Runs N browser requests through an axum `Router` in-process, bare or
//! behind the whole floodguard layer, for instruction counting under
//! `valgrind --tool=callgrind` (a figure that does not drift with machine
//! load). `scripts/layer_instructions.sh` runs each mode at two N and
//! prints instructions per request and the layer's share.
//!
//! ```text
//! cargo bench --features axum --bench layer_instructions -- <mode> <n>
//! mode: bare  (the router alone)
//!       full  (default rules + Scoring::default() + Overload::default().per_route())
//! ```
//!
//! Each request is a `GET /hello` (a constant string) with the dozen
//! headers of a Chrome navigation and its peer address in `ConnectInfo`,
//! as `axum::serve` with `into_make_service_with_connect_info` gives it,
//! called on a current-thread Tokio runtime. Requests rotate over 4,096
//! clients, each in a /24 of its own, so that no rule's burst is reached:
//! every request is admitted and nothing is shed.
//!
//! A `harness = false` bench: the `--bench` flag cargo adds is ignored, and
//! with no arguments (a bare `cargo bench`) it prints its usage and exits.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use floodguard::http::{Guard, Overload, Scoring};
use http::{HeaderMap, HeaderName, HeaderValue};
use tower::{Service, ServiceExt};

/// A Chrome navigation's headers, in Chrome's order.
const CHROME: [(&str, &str); 13] = [
    ("host", "shop.test"),
    ("connection", "keep-alive"),
    (
        "sec-ch-ua",
        "\"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"",
    ),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", "\"Windows\""),
    ("upgrade-insecure-requests", "1"),
    (
        "user-agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8",
    ),
    ("sec-fetch-site", "none"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-dest", "document"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("accept-language", "en-US,en;q=0.9"),
];

/// Clients the requests rotate over.
const CLIENTS: u32 = 4096;

fn main() -> ExitCode {
    // Without the `--bench` that `cargo bench` adds.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(mode), Some(Ok(n))) = (args.first(), args.get(1).map(|s| s.parse::<u64>())) else {
        eprintln!(
            "usage: layer_instructions <bare|full> <n>\n\
             (scripts/layer_instructions.sh runs it under callgrind)"
        );
        return if args.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let router = Router::new().route("/hello", get(|| async { "hello\n" }));
    let (app, guard) = match mode.as_str() {
        "bare" => (router, None),
        "full" => {
            // Built inside the runtime, as a server builds it.
            let guard = rt.block_on(async {
                Guard::builder()
                    .default_rules()
                    .scoring(Scoring::default())
                    .overload(Overload::default().per_route())
                    .build()
                    .expect("valid configuration")
            });
            (router.layer(guard.layer()), Some(guard))
        }
        other => {
            eprintln!("unknown mode {other:?}");
            return ExitCode::FAILURE;
        }
    };
    // As `axum::serve` does (through `into_make_service*`): handlers become
    // routes once, not on every request.
    let mut app: Router = app.with_state(());
    let mut headers = HeaderMap::new();
    for (name, value) in CHROME {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let peers: Vec<SocketAddr> = (0..CLIENTS)
        .map(|i| SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 40_000)))
        .collect();
    let ok = rt.block_on(async {
        let mut ok = 0u64;
        for i in 0..n {
            let mut req = http::Request::get("/hello").body(Body::empty()).unwrap();
            *req.headers_mut() = headers.clone();
            req.extensions_mut()
                .insert(ConnectInfo(peers[(i % u64::from(CLIENTS)) as usize]));
            let svc = ServiceExt::<http::Request<Body>>::ready(&mut app)
                .await
                .expect("router is always ready");
            let res = svc.call(req).await.expect("infallible");
            ok += u64::from(res.status() == http::StatusCode::OK);
        }
        ok
    });
    println!("{mode}: {ok} of {n} served");
    if let Some(guard) = guard {
        let s = guard.stats();
        eprintln!(
            "admitted {}, refused {} (rate) {} (blocked) {} (overload), under attack: {}",
            s.admitted,
            s.refused_rate_limit,
            s.refused_blocked,
            s.refused_overload,
            guard.under_attack()
        );
    }
    if ok == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
