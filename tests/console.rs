//! The console and the JSON view end to end: axum on 127.0.0.1, a guard
//! with a few requests and a ban, and a hyper client that signs in,
//! reads the page and the state, and lifts the ban (or is refused).
#![cfg(feature = "console")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{TIMEOUT, connect_from, get as fetch, serve};
use floodguard::http::{Console, Guard, Rule, Scoring, json_handler, json_handler_with_gate};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

const TOKEN: &str = "console-test-token-0123456789";
const HOUR: Duration = Duration::from_secs(3600);

fn guard() -> Guard {
    Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(3, Duration::from_secs(60)))
        .rule(
            Rule::global("would-be")
                .sliding_window(1, Duration::from_secs(60))
                .shadow(),
        )
        .scoring(Scoring::new())
        .build()
        .unwrap()
}

/// A shop guarded by `guard`, and its console on another listener.
async fn shop_and_console(guard: &Guard) -> (SocketAddr, SocketAddr) {
    let shop = Router::new()
        .route("/", get(|| async { "shop" }))
        .layer(guard.layer());
    let console = Console::new(guard.clone()).token(TOKEN).router().unwrap();
    (serve(shop).await, serve(console).await)
}

/// Sends `method path` with `headers` and `body` from 127.0.0.1.
async fn call(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> common::Reply {
    call_from("127.0.0.1", to, method, path, headers, body).await
}

/// [`call`] from another loopback address.
async fn call_from(
    from: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> common::Reply {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", to.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    tokio::time::timeout(TIMEOUT, async {
        let stream = connect_from(from, to).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let res = sender.send_request(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        common::Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
    .await
    .expect("exchange timed out")
}

/// Signs in with the token; returns the `Cookie` header to send.
async fn sign_in(console: SocketAddr) -> String {
    let r = call(console, "GET", &format!("/?token={TOKEN}"), &[], "").await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("?"));
    let set = r.header("set-cookie").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn an_address_guessing_tokens_is_barred_and_others_are_not() {
    let (_, console) = shop_and_console(&guard()).await;
    let wrong = "not-the-console-token-at-all";
    // Ten wrong tokens, as sign-ins and as bearer tokens: each a 401.
    for i in 0..10 {
        let r = if i % 2 == 0 {
            call(console, "GET", &format!("/?token={wrong}{i}"), &[], "").await
        } else {
            let bearer = format!("Bearer {wrong}{i}");
            call(
                console,
                "GET",
                "/?api=state",
                &[("authorization", &bearer)],
                "",
            )
            .await
        };
        assert_eq!(r.status, 401, "guess {i}: {}", r.body);
    }
    // Then the address is barred, the right token too, with a wait.
    let r = call(console, "GET", &format!("/?token={TOKEN}"), &[], "").await;
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=120).contains(&wait), "{wait}");
    let bearer = format!("Bearer {TOKEN}");
    let r = call(
        console,
        "GET",
        "/?api=state",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, 429);
    // Another address signs in as usual.
    let r = call_from(
        "127.0.0.2",
        console,
        "GET",
        &format!("/?token={TOKEN}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    // A page load without any token is not a guess: never barred.
    let r = call(console, "GET", "/", &[], "").await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn the_page_needs_the_token_and_carries_its_security_headers() {
    let guard = guard();
    let (_, console) = shop_and_console(&guard).await;
    // No token, a wrong one, a forged cookie: 401, saying what to do.
    for (path, headers) in [
        ("/", vec![]),
        ("/?api=state", vec![]),
        ("/?js", vec![]),
        ("/?token=console-test-token-0123456780", vec![]),
        ("/", vec![("cookie", "floodguard_console=00.ff.00")]),
        (
            "/?api=state",
            vec![("authorization", "Bearer wrong-token-0123456789")],
        ),
    ] {
        let r = call(console, "GET", path, &headers, "").await;
        assert_eq!(r.status, 401, "{path} {headers:?}");
        assert!(r.body.contains("token"), "{}", r.body);
        assert!(r.header("set-cookie").is_none());
    }
    let cookie = sign_in(console).await;
    let page = call(console, "GET", "/", &[("cookie", &cookie)], "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.body.contains("<script src=\"?js\""));
    // No inline script, no other origin.
    assert!(!page.body.contains("<script>"));
    let js = call(console, "GET", "/?js", &[("cookie", &cookie)], "").await;
    let css = call(console, "GET", "/?css", &[("cookie", &cookie)], "").await;
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(
        !js.body.contains("innerHTML"),
        "data is written as text only"
    );
    let size = page.body.len() + js.body.len() + css.body.len();
    assert!(size < 100_000, "the console is {size} bytes");
    // Unknown queries: 404.
    let r = call(console, "GET", "/?nothing", &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn the_state_shows_the_guard() {
    let guard = guard();
    let (shop, console) = shop_and_console(&guard).await;
    for _ in 0..5 {
        fetch("127.0.0.9", shop, "/", &[("user-agent", "curl/8.5.0")]).await;
    }
    guard.ban("192.0.2.0/24".parse().unwrap(), HOUR);
    let cookie = sign_in(console).await;
    let r = call(console, "GET", "/?api=state", &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let stats = &v["snapshot"]["stats"];
    assert_eq!(stats["requests"], 5);
    assert_eq!(stats["admitted"], 3);
    assert_eq!(stats["refused_rate_limit"], 2);
    assert_eq!(stats["rules"][0]["name"], "per-ip");
    assert_eq!(stats["rules"][1]["shadow"], true);
    // The shadow rule judges the admitted requests: one of three passes.
    assert_eq!(stats["rules"][1]["shadow_refusals"], 2);
    assert_eq!(v["snapshot"]["bans"][0]["prefix"], "192.0.2.0/24");
    let left = v["snapshot"]["bans"][0]["remaining"].as_f64().unwrap();
    assert!((3590.0..=3600.0).contains(&left), "{left}");
    assert_eq!(v["bans_total"], 1);
    assert!(["calm", "degraded", "under_attack"].contains(&v["status"].as_str().unwrap()));
    assert!(!v["why"].as_array().unwrap().is_empty());
    assert_eq!(v["csrf"].as_str().unwrap().len(), 32);
    assert!(v["gate"].is_null());
    assert!(v["history"]["t"].is_array());
    // A program with the token as a bearer: the same state, no CSRF value.
    let bearer = format!("Bearer {TOKEN}");
    let r = call(
        console,
        "GET",
        "/?api=state",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["csrf"].is_null());
    assert_eq!(v["snapshot"]["stats"]["requests"], 5);
}

#[tokio::test]
async fn unban_needs_the_csrf_value_from_this_origin() {
    let guard = guard();
    let (_, console) = shop_and_console(&guard).await;
    let banned = "198.51.100.7".parse().unwrap();
    guard.ban("198.51.100.7/32".parse().unwrap(), HOUR);
    let cookie = sign_in(console).await;
    let state = call(console, "GET", "/?api=state", &[("cookie", &cookie)], "").await;
    let v: serde_json::Value = serde_json::from_str(&state.body).unwrap();
    let csrf = v["csrf"].as_str().unwrap().to_owned();
    let origin = format!("http://{console}");

    // No session, no CSRF header, a wrong one, another site: refused, and
    // the ban stays.
    let tries: [(u16, Vec<(&str, &str)>); 4] = [
        (401, vec![("x-floodguard-csrf", &csrf)]),
        (403, vec![("cookie", &cookie), ("origin", &origin)]),
        (
            403,
            vec![
                ("cookie", &cookie),
                ("x-floodguard-csrf", "0123456789abcdef0123456789abcdef"),
            ],
        ),
        (
            403,
            vec![
                ("cookie", &cookie),
                ("x-floodguard-csrf", &csrf),
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
    ];
    for (status, headers) in tries {
        let r = call(console, "POST", "/?api=unban", &headers, "198.51.100.7").await;
        assert_eq!(r.status, status, "{headers:?}: {}", r.body);
        assert!(guard.is_banned(banned));
    }
    let r = call(
        console,
        "POST",
        "/?api=unban",
        &[("cookie", &cookie), ("x-floodguard-csrf", "")],
        "198.51.100.7",
    )
    .await;
    assert!(r.body.contains("X-Floodguard-Csrf"), "{}", r.body);

    // The page's own request: lifted.
    let ok = [
        ("cookie", cookie.as_str()),
        ("x-floodguard-csrf", csrf.as_str()),
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    let r = call(console, "POST", "/?api=unban", &ok, "198.51.100.7").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"prefix": "198.51.100.7/32", "lifted": true})
    );
    assert!(!guard.is_banned(banned));

    // Ban from the console, then a malformed body.
    let r = call(console, "POST", "/?api=ban", &ok, "203.0.113.0/24 120").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(guard.is_banned("203.0.113.9".parse().unwrap()));
    let r = call(console, "POST", "/?api=ban", &ok, "not-a-prefix 120").await;
    assert_eq!(r.status, 400);
    // GET cannot act.
    let r = call(console, "GET", "/?api=unban", &ok, "").await;
    assert_eq!(r.status, 404);
}

#[test]
fn a_missing_or_short_token_is_a_configuration_error() {
    let guard = guard();
    let e = Console::new(guard.clone()).router::<()>().unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");
    for bad in ["", "short", "has spaces in it, 0123456789"] {
        let e = Console::new(guard.clone())
            .token(bad)
            .router::<()>()
            .unwrap_err();
        assert!(e.to_string().contains("16 to 256"), "{e}");
    }
}

#[tokio::test]
async fn the_json_view_serves_the_snapshot() {
    let guard = guard();
    let gate = guard.gate().build().unwrap();
    let app = Router::new()
        .route("/", get(|| async { "shop" }))
        .layer(guard.layer())
        .route("/guard.json", json_handler(guard.clone()))
        .route("/all.json", json_handler_with_gate(guard.clone(), gate));
    let addr = serve(app).await;
    for _ in 0..4 {
        fetch("127.0.0.5", addr, "/", &[]).await;
    }
    guard.ban("192.0.2.7".parse().unwrap(), HOUR);
    let r = fetch("127.0.0.6", addr, "/guard.json", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["stats"]["requests"], 4);
    assert_eq!(v["stats"]["refused_rate_limit"], 1);
    assert_eq!(v["bans"][0]["prefix"], "192.0.2.7/32");
    assert!(v["now"].as_f64().unwrap() >= 0.0);
    assert!(v["detection"].is_object());
    assert!(v.get("gate").is_none());
    let r = fetch("127.0.0.6", addr, "/all.json", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["gate"]["accepted"], 0);
    assert_eq!(v["stats"]["requests"], 4);
}
