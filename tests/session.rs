//! The session cookie end to end: axum on 127.0.0.1, hyper clients bound
//! to different 127.x.y.z addresses, the guard on a manual clock.
#![cfg(all(feature = "tower", feature = "axum"))]

mod common;

use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use common::{Reply, get as fetch, serve};
use floodguard::http::{Guard, GuardDecision, Rule, Scoring, SessionCookie, Signal, Tarpit};
use floodguard::{Clock, ManualClock};

const KEY: [u8; 16] = *b"session test key";

const CHROME: [(&str, &str); 5] = [
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("accept-language", "en-GB,en;q=0.9"),
    ("connection", "keep-alive"),
];

const CURL: [(&str, &str); 2] = [("user-agent", "curl/8.5.0"), ("accept", "*/*")];

/// What the guard made of the request: its action, then each signal's
/// points.
async fn verdict(Extension(d): Extension<GuardDecision>) -> String {
    let mut out = format!("{:?}", d.action().unwrap());
    for (s, p) in d.score().unwrap().signals() {
        out.push_str(&format!(" {s}={p}"));
    }
    out
}

fn app(guard: &Guard<impl Clock + Clone + 'static>) -> Router {
    Router::new()
        .route("/", get(verdict))
        .route(
            "/missing",
            get(|| async { (http::StatusCode::NOT_FOUND, "") }),
        )
        .layer(guard.layer())
}

fn guard(clock: &ManualClock, session: bool) -> Guard<ManualClock> {
    let mut b = Guard::builder()
        .default_rules()
        .rule(Rule::per_ip("tight").sliding_window(30, Duration::from_secs(60)))
        .scoring(Scoring::new())
        .tarpit(Tarpit::off());
    if session {
        b = b.session(SessionCookie::new(KEY));
    }
    b.clock(clock.clone()).build().unwrap()
}

/// The `name=value` part of a reply's `Set-Cookie`, if it has one.
fn cookie_of(r: &Reply) -> Option<String> {
    let set = r.header("set-cookie")?;
    Some(set.split(';').next().unwrap().to_owned())
}

fn with_cookie<'a>(headers: &[(&'a str, &'a str)], cookie: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut h = headers.to_vec();
    h.push(("cookie", cookie));
    h
}

fn points(body: &str, signal: Signal) -> f32 {
    let key = format!("{}=", signal.name());
    body.split(' ')
        .find_map(|w| w.strip_prefix(&key))
        .map_or(0.0, |p| p.parse().unwrap())
}

#[tokio::test]
async fn a_returned_cookie_is_valid_and_a_shared_one_is_not() {
    let clock = ManualClock::new();
    let guard = guard(&clock, true);
    let addr = serve(app(&guard)).await;

    // The first answer carries the cookie.
    let first = fetch("127.0.0.2", addr, "/", &CHROME).await;
    assert_eq!(first.status, 200);
    let set = first.header("set-cookie").unwrap();
    assert!(set.starts_with("__fg="), "{set}");
    assert!(
        set.contains("; HttpOnly") && set.contains("; SameSite=Lax"),
        "{set}"
    );
    let cookie = cookie_of(&first).unwrap();
    let s = guard.stats().session.unwrap();
    assert_eq!((s.issued, s.valid, s.invalid), (1, 0, 0));

    // Returned, it is accepted, counted, and not sent again.
    clock.advance(Duration::from_secs(5));
    let again = fetch("127.0.0.2", addr, "/", &with_cookie(&CHROME, &cookie)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("set-cookie"), None);
    assert_eq!(points(&again.body, Signal::SessionInvalid), 0.0);
    let s = guard.stats().session.unwrap();
    assert_eq!((s.issued, s.valid, s.invalid), (1, 1, 0));

    // The same cookie from another address is not that client's: own
    // evidence that throttles a new client, and it is sent one of its own.
    let shared = fetch("127.0.0.3", addr, "/", &with_cookie(&CHROME, &cookie)).await;
    assert_eq!(shared.status, 200);
    assert_eq!(points(&shared.body, Signal::SessionInvalid), 35.0);
    assert!(shared.body.starts_with("Throttle"), "{}", shared.body);
    let own = cookie_of(&shared).unwrap();
    assert_ne!(own, cookie);
    let s = guard.stats().session.unwrap();
    assert_eq!((s.issued, s.valid, s.invalid), (2, 1, 1));
    // Its own cookie is good from then on.
    let fixed = fetch("127.0.0.3", addr, "/", &with_cookie(&CHROME, &own)).await;
    assert!(fixed.body.starts_with("Allow"), "{}", fixed.body);
    assert_eq!(guard.stats().session.unwrap().valid, 2);

    // A forged value is invalid too.
    let forged = fetch("127.0.0.2", addr, "/", &with_cookie(&CHROME, "__fg=00ff")).await;
    assert_eq!(points(&forged.body, Signal::SessionInvalid), 35.0);
    assert_eq!(guard.stats().session.unwrap().invalid, 2);
}

#[tokio::test]
async fn a_client_that_never_returns_it_gets_modest_evidence_only() {
    let clock = ManualClock::new();
    let guard = guard(&clock, true);
    let addr = serve(app(&guard)).await;
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let r = fetch("127.0.0.4", addr, "/", &CURL).await;
        // Served every time, and sent the cookie every time.
        assert_eq!(r.status, 200);
        assert!(r.header("set-cookie").is_some());
        bodies.push(r.body);
        clock.advance(Duration::from_secs(2));
    }
    // Sent at the first answer; misses at the 2nd, 3rd and 4th request.
    for b in &bodies[..3] {
        assert_eq!(points(b, Signal::SessionNotReturned), 0.0, "{b}");
    }
    for b in &bodies[3..] {
        assert_eq!(points(b, Signal::SessionNotReturned), 6.0, "{b}");
        // With a tool's user agent it still does nothing by itself.
        assert!(b.starts_with("Allow"), "{b}");
    }
    let s = guard.stats().session.unwrap();
    assert_eq!((s.issued, s.not_returned, s.valid, s.invalid), (6, 1, 0, 0));
    assert_eq!(guard.stats().scoring.unwrap().throttled, 0);
}

#[tokio::test]
async fn refusals_errors_and_grpc_get_no_cookie() {
    let clock = ManualClock::new();
    let guard = Guard::builder()
        .rule(Rule::per_ip("one").sliding_window(2, Duration::from_secs(60)))
        .session(SessionCookie::new(KEY))
        .tarpit(Tarpit::off())
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "home" }))
        .route(
            "/missing",
            get(|| async { (http::StatusCode::NOT_FOUND, "") }),
        )
        .layer(guard.layer());
    let addr = serve(app).await;
    let grpc = fetch(
        "127.0.0.5",
        addr,
        "/",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!((grpc.status, grpc.header("set-cookie")), (200, None));
    let missing = fetch("127.0.0.5", addr, "/missing", &[]).await;
    assert_eq!((missing.status, missing.header("set-cookie")), (404, None));
    let refused = fetch("127.0.0.5", addr, "/", &[]).await;
    assert_eq!((refused.status, refused.header("set-cookie")), (429, None));
    // Without scoring the cookie is still set and checked.
    let ok = fetch("127.0.0.6", addr, "/", &[]).await;
    let cookie = cookie_of(&ok).unwrap();
    fetch("127.0.0.6", addr, "/", &[("cookie", &cookie)]).await;
    let s = guard.stats().session.unwrap();
    assert_eq!((s.issued, s.valid, s.invalid), (1, 1, 0));
}

#[tokio::test]
async fn with_sessions_off_no_cookie_is_set() {
    let clock = ManualClock::new();
    let guard = guard(&clock, false);
    let addr = serve(app(&guard)).await;
    for _ in 0..3 {
        let r = fetch("127.0.0.7", addr, "/", &CHROME).await;
        assert_eq!((r.status, r.header("set-cookie")), (200, None));
        clock.advance(Duration::from_secs(2));
    }
    let r = fetch("127.0.0.7", addr, "/", &with_cookie(&CHROME, "__fg=00ff")).await;
    assert_eq!(points(&r.body, Signal::SessionInvalid), 0.0);
    assert_eq!(guard.stats().session, None);
}
