//! Configuration as data: the example file, error paths, round trips, and
//! reloading a running guard (with traffic in flight).
#![cfg(all(feature = "tower", feature = "toml"))]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use floodguard::config::{ConfigFileError, GuardConfig};
use floodguard::http::{Guard, Overload, PeerAddr, RefusalKind, ReloadError, Rule, Scoring};
use floodguard::{ConfigError, ManualClock};
use http::request::Parts;

const EXAMPLE: &str = include_str!("../examples/floodguard.toml");

fn request(ip: IpAddr, path: &str, user_agent: &str) -> Parts {
    let (mut parts, ()) = http::Request::get(path)
        .header("host", "shop.example")
        .header("user-agent", user_agent)
        .header("accept", "text/html")
        .body(())
        .unwrap()
        .into_parts();
    parts
        .extensions
        .insert(PeerAddr(SocketAddr::new(ip, 40_000)));
    parts
}

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// A fixed mix: people browsing, a few hammering clients, one /24 of bots,
/// over 20 simulated seconds; every decision as text.
fn decisions(guard: &Guard<ManualClock>, clock: &ManualClock) -> Vec<String> {
    let mut out = Vec::new();
    for step in 0..20_000u32 {
        clock.advance(Duration::from_millis(1));
        let (ip, ua): (IpAddr, &str) = match step % 10 {
            // 40 people, a request every 400 ms each.
            0..=1 => ([198, 51, 100, (step / 10 % 40) as u8].into(), BROWSER),
            // Three hammering clients.
            2..=5 => ([203, 0, 113, (step % 3) as u8].into(), "curl/8.5.0"),
            // A /24 of bots, each new address a few times.
            _ => (
                [192, 0, 2, (step / 7 % 250) as u8].into(),
                "python-requests/2.31",
            ),
        };
        let result = guard.check(&request(ip, "/products", ua));
        out.push(match result {
            Ok(d) => format!("ok {:?} {:?}", d.rule(), d.score().map(|s| s.to_string())),
            Err(r) => format!("refused {:?} {:?}", r.kind(), r.rule()),
        });
    }
    out
}

#[test]
fn the_example_file_is_the_recommended_configuration() {
    let file = GuardConfig::from_toml(EXAMPLE).unwrap();
    // The same values, field by field.
    assert_eq!(
        file.to_toml().unwrap(),
        GuardConfig::recommended().to_toml().unwrap()
    );
    // And the same behaviour as the builder it stands for, on one trace.
    let by_builder = ManualClock::new();
    let a = Guard::builder()
        .clock(by_builder.clone())
        .default_rules()
        .scoring(Scoring::new())
        .overload(Overload::gradient2())
        .build()
        .unwrap();
    let by_file = ManualClock::new();
    let b = Guard::builder()
        .clock(by_file.clone())
        .config(file.clone())
        .build()
        .unwrap();
    let (da, db) = (decisions(&a, &by_builder), decisions(&b, &by_file));
    let refused = da.iter().filter(|d| d.starts_with("refused")).count();
    assert!(
        refused > 1_000,
        "the trace must exercise the limits: {refused}"
    );
    assert!(da.iter().any(|d| d.starts_with("ok")));
    assert_eq!(da, db);
    assert_eq!(a.stats().rules, b.stats().rules);
    // The gate section is the gate's defaults.
    assert_eq!(file.gate, Some(Default::default()));
}

fn field_error(text: &str) -> (String, Option<usize>, String) {
    match GuardConfig::from_toml(text).unwrap_err() {
        ConfigFileError::Field {
            path,
            line,
            message,
        } => (path, line, message),
        other => panic!("not a field error: {other}"),
    }
}

#[test]
fn a_bad_field_is_named_by_its_path_and_line() {
    let rules = "[[rules]]\nname = \"a\"\nkey = \"ip\"\nlimit = 5\nwindow = \"1s\"\n\
                 [[rules]]\nname = \"b\"\nkey = \"ip\"\nlimit = 5\nwindow = \"1s\"\n\
                 [[rules]]\nname = \"c\"\nkey = \"ip\"\nlimit = 5\nwindow = ";
    let (path, line, message) = field_error(&format!("{rules}\"ten seconds\"\n"));
    assert_eq!((path.as_str(), line), ("rules[2].window", Some(15)));
    assert!(
        message.contains("ten seconds") || message.contains("unit"),
        "{message}"
    );
    let (path, _, message) = field_error(&format!("{rules}\"0s\"\n"));
    assert_eq!(path, "rules[2].window");
    assert!(message.contains("more than zero"), "{message}");
    // A typo is refused, not ignored.
    let (path, line, message) = field_error("[scoring.ladder]\nthrottel = 50.0\n");
    assert_eq!((path.as_str(), line), ("scoring.ladder.throttel", Some(2)));
    assert!(message.contains("unknown field"), "{message}");
    let (path, _, _) = field_error("blocklist = [\"192.0.2.0/33\"]\n");
    assert_eq!(path, "blocklist[0]");
    let (path, _, message) =
        field_error("[[rules]]\nname = \"n\"\nkey = \"prefix\"\nlimit = 1\nwindow = \"1s\"\n");
    assert_eq!(path, "rules[0]");
    assert!(message.contains("needs `prefix"), "{message}");
    let (path, _, message) = field_error("[session]\nkey = \"abc\"\n");
    assert_eq!(path, "session");
    assert!(message.contains("32 hexadecimal digits"), "{message}");
    let (path, line, _) = field_error("tls = yes\n");
    assert_eq!((path.as_str(), line), ("", Some(1)));
    let display = GuardConfig::from_toml("[gate]\nmax_connections_per_ip = -1\n")
        .unwrap_err()
        .to_string();
    assert!(
        display.starts_with("gate.max_connections_per_ip (line 2): "),
        "{display}"
    );
    let missing = GuardConfig::load("/nonexistent/floodguard.toml").unwrap_err();
    assert!(matches!(missing, ConfigFileError::Read { .. }), "{missing}");
}

#[test]
fn every_field_round_trips_and_hooks_are_refused() {
    let text = r#"
        max_bans = 500
        missing_peer = "skip_address_rules"
        tls = true
        rate_limit_headers = true
        close_refused_connections = false
        safelist = ["10.0.0.0/8"]
        blocklist = ["192.0.2.0/24", "2001:db8::/32"]
        [client_ip]
        trust = ["172.16.0.0/12"]
        header = "x-real-ip"
        [tarpit]
        hold = "250ms"
        max_held = 10
        [[rules]]
        name = "login"
        key = "header"
        header = "x-api-key"
        limit = 5
        window = "1m"
        capacity = 1000
        cost = 2
        shadow = true
        paths = ["/login"]
        path_prefixes = ["/api/"]
        methods = ["POST", "PUT"]
        [scoring]
        half_life = "2m"
        capacity = 1024
        [scoring.ladder]
        shadow_ban = true
        [overload]
        algorithm = { aimd = { backoff = 0.8, tolerance = 2.0, long_window = 600 } }
        queue = { capacity = 64, timeout = "1s" }
        per_route = true
        [session]
        key = "000102030405060708090a0b0c0d0e0f"
        same_site = "strict"
        secure = true
        [gate]
        network_limits = false
        descriptor_budget = 4096
        deadlines = { head = "off", keep_alive = "20s" }
        tarpit = { hold = "0s", max_held = 0 }
    "#;
    let config = GuardConfig::from_toml(text).unwrap();
    let written = config.to_toml().unwrap();
    let again = GuardConfig::from_toml(&written).unwrap();
    assert_eq!(again.to_toml().unwrap(), written);
    assert!(written.contains("head = \"off\""), "{written}");
    assert!(written.contains("max_bans = 500"), "{written}");
    // It builds, and a gate builds from it.
    let guard = Guard::builder().config(config.clone()).build().unwrap();
    assert_eq!(guard.stats().rules[0].name, "login");
    assert!(config.gate(&guard).build().is_ok());
    // A rule keyed by code cannot be written.
    let mut coded = GuardConfig::default();
    coded.rules.push(
        Rule::per_key("tenant", |p| p.uri.host().map(str::to_owned))
            .sliding_window(5, Duration::from_secs(1)),
    );
    let err = coded.to_toml().unwrap_err();
    assert!(err.to_string().contains("closure"), "{err}");
}

fn counting_config(per_ip: u64) -> GuardConfig {
    GuardConfig::from_toml(&format!(
        r#"
        [[rules]]
        name = "count"
        key = "global"
        limit = 10000000
        window = "1h"
        [[rules]]
        name = "per-ip"
        key = "ip"
        rate = {per_ip}
        period = "1s"
        [[rules]]
        name = "tight"
        key = "header"
        header = "x-tight"
        limit = 1
        window = "1h"
        "#
    ))
    .unwrap()
}

#[test]
fn a_reload_swaps_rules_and_lists_and_keeps_what_did_not_change() {
    let clock = ManualClock::new();
    let config = counting_config(3);
    let guard = Guard::builder()
        .clock(clock.clone())
        .config(config)
        .build()
        .unwrap();
    let ip: IpAddr = [198, 51, 100, 7].into();
    let ask = || guard.check(&request(ip, "/", BROWSER));
    assert!((0..3).all(|_| ask().is_ok()));
    assert_eq!(ask().unwrap_err().rule(), Some("per-ip"));
    guard.ban("203.0.113.9".parse().unwrap(), Duration::from_secs(600));

    // A higher per-ip rate: that rule starts afresh, `count` keeps counting.
    let mut next = counting_config(10);
    next.blocklist.push("198.51.100.0/24".parse().unwrap());
    guard.reload(&next).unwrap();
    assert_eq!(ask().unwrap_err().kind(), RefusalKind::Blocked);
    next.blocklist.clear();
    guard.reload(&next).unwrap();
    assert!((0..10).all(|_| ask().is_ok()));
    assert!(ask().is_err());
    let stats = guard.stats();
    let count = stats.rules.iter().find(|r| r.name == "count").unwrap();
    // 3 before, 10 after the second reload: one counter all along. The
    // blocked request never reached the rules, and the refused ones were
    // charged nowhere (all or none).
    assert_eq!(count.limiter.admitted, 3 + 10);
    assert_eq!(count.limiter.denied, 0);
    // The ban made before the reloads is still in force.
    assert!(guard.is_banned("203.0.113.9".parse().unwrap()));

    // A rule removed is gone; a new rule counts.
    let mut fewer = counting_config(10);
    fewer.rules.truncate(1);
    guard.reload(&fewer).unwrap();
    assert!((0..50).all(|_| ask().is_ok()));
    assert_eq!(guard.stats().rules.len(), 1);
}

#[test]
fn a_reload_that_cannot_apply_changes_nothing_and_says_why() {
    let clock = ManualClock::new();
    let mut config = GuardConfig::from_toml(EXAMPLE).unwrap();
    let guard = Guard::builder()
        .clock(clock.clone())
        .config(config.clone())
        .build()
        .unwrap();
    let needs_restart = |c: &GuardConfig| match guard.reload(c) {
        Err(ReloadError::NeedsRestart { field }) => field,
        other => panic!("expected a restart to be asked for: {other:?}"),
    };
    let mut c = config.clone();
    c.max_bans = 5;
    assert_eq!(needs_restart(&c), "max_bans");
    let mut c = config.clone();
    c.scoring = None;
    assert_eq!(needs_restart(&c), "scoring");
    let mut c = config.clone();
    c.scoring = Some(Scoring::new().capacity(1024));
    assert_eq!(needs_restart(&c), "scoring.capacity");
    let mut c = config.clone();
    c.overload = Some(Overload::aimd());
    assert_eq!(needs_restart(&c), "overload");
    let mut c = config.clone();
    c.gate.as_mut().unwrap().max_connections_per_ip = 4;
    assert_eq!(needs_restart(&c), "gate");
    let message = guard.reload(&c).unwrap_err().to_string();
    assert!(
        message.contains("`gate` cannot change while the guard runs"),
        "{message}"
    );

    // A guard built without a configuration has no gate section: a file
    // without one reloads, a file with one asks for a restart.
    let built = Guard::builder()
        .clock(clock.clone())
        .default_rules()
        .scoring(Scoring::new())
        .overload(Overload::gradient2())
        .build()
        .unwrap();
    let mut gateless = GuardConfig::recommended();
    gateless.gate = None;
    built.reload(&gateless).unwrap();
    assert_eq!(
        built.reload(&GuardConfig::recommended()),
        Err(ReloadError::NeedsRestart { field: "gate" })
    );

    // An invalid one is refused whole: the first rule's new limit is not
    // applied either.
    let mut c = config.clone();
    c.rules[0] = Rule::per_ip("per-ip").gcra(1, Duration::from_secs(60));
    c.rules[1] = Rule::per_ip("per-ip").gcra(1, Duration::from_secs(60));
    let err = guard.reload(&c).unwrap_err();
    assert_eq!(
        err,
        ReloadError::Invalid(ConfigError::DuplicateRule {
            rule: "per-ip".into()
        })
    );
    let ip: IpAddr = [198, 51, 100, 8].into();
    assert!((0..10).all(|_| guard.check(&request(ip, "/", BROWSER)).is_ok()));

    // Weights and the ladder are live: throttle nobody, then everyone
    // with a tool user agent.
    let scoring = config.scoring.as_mut().unwrap();
    let mut ladder = floodguard::http::Ladder::default();
    ladder.throttle = 5.0;
    ladder.act_evidence = 0.0;
    *scoring = Scoring::new().ladder(ladder);
    guard.reload(&config).unwrap();
    let tool: IpAddr = [203, 0, 113, 50].into();
    let d = guard.check(&request(tool, "/", "curl/8.5.0")).unwrap();
    assert_eq!(
        d.score().map(|s| s.score() >= 5.0),
        Some(true),
        "{:?}",
        d.score()
    );
    let stats = guard.stats().scoring.unwrap();
    assert!(stats.throttled >= 1, "{stats:?}");
}

/// 100,000 requests from four threads while another reloads between two
/// configurations as fast as it can: every request is decided (admitted or
/// refused) exactly once, and the counting rule, unchanged across reloads,
/// saw each admitted request once.
#[test]
fn reloading_under_load_loses_and_double_charges_nothing() {
    const THREADS: u32 = 4;
    const EACH: u32 = 25_000;
    let clock = ManualClock::new();
    let guard = Guard::builder()
        .clock(clock.clone())
        .config(counting_config(100_000))
        .scoring(Scoring::new())
        .build()
        .unwrap();
    guard.ban("203.0.113.0/24".parse().unwrap(), Duration::from_secs(3600));
    // A client with a score: refused five times by the tight rule.
    let pushy: IpAddr = [192, 0, 2, 1].into();
    for _ in 0..6 {
        let mut parts = request(pushy, "/", BROWSER);
        parts.headers.insert("x-tight", "1".parse().unwrap());
        let _ = guard.check(&parts);
    }
    let score_of = |g: &Guard<ManualClock>| {
        g.snapshot()
            .offenders
            .iter()
            .find(|o| o.client.contains(pushy))
            .map(|o| o.report.score())
    };
    let before = score_of(&guard).expect("the pushy client has a score");
    let sent_before = guard.stats().requests;
    let done = Arc::new(AtomicBool::new(false));
    let reloads = Arc::new(AtomicU64::new(0));
    let reloader = {
        let (guard, done, reloads) = (guard.clone(), Arc::clone(&done), Arc::clone(&reloads));
        std::thread::spawn(move || {
            let configs = [counting_config(100_000), counting_config(200_000)];
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let mut c = configs[i % 2].clone();
                c.scoring = Some(Scoring::new());
                guard.reload(&c).unwrap();
                reloads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let guard = guard.clone();
            std::thread::spawn(move || {
                let (mut ok, mut refused) = (0u64, 0u64);
                for n in 0..EACH {
                    let ip: IpAddr = [198, 18, t as u8, (n % 200) as u8].into();
                    match guard.check(&request(ip, "/", BROWSER)) {
                        Ok(_) => ok += 1,
                        Err(_) => refused += 1,
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for w in workers {
        let (o, r) = w.join().unwrap();
        ok += o;
        refused += r;
    }
    done.store(true, Ordering::Relaxed);
    reloader.join().unwrap();
    let sent = u64::from(THREADS * EACH);
    assert_eq!(ok + refused, sent, "every request decided once");
    let stats = guard.stats();
    assert_eq!(stats.requests, sent + sent_before);
    assert_eq!(stats.admitted, ok + 1);
    let count = stats.rules.iter().find(|r| r.name == "count").unwrap();
    // The pushy client's one admitted request, and each admitted one.
    assert_eq!(count.limiter.admitted, ok + 1, "charged once each");
    assert_eq!(count.limiter.denied, 0);
    assert!(reloads.load(Ordering::Relaxed) > 10, "reloads happened");
    // The ban and the scores survived every reload.
    assert!(guard.is_banned("203.0.113.77".parse().unwrap()));
    assert_eq!(score_of(&guard), Some(before));
}

/// The same over real sockets, through the layer: keep-alive clients on
/// eight loopback addresses send 100,000 requests while the guard is
/// reloaded every millisecond. Every request gets an answer, and the
/// counting rule charged each served one once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_a_serving_guard_loses_no_request() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    const CLIENTS: u8 = 8;
    const EACH: u32 = 12_500;
    let guard = Guard::builder()
        .config(counting_config(100_000))
        .scoring(Scoring::new())
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .layer(guard.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gated = guard.gate().build().unwrap().listen(listener);
    tokio::spawn(floodguard::http::serve(gated, app).into_future());
    let done = Arc::new(AtomicBool::new(false));
    let reloader = {
        let (guard, done) = (guard.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut reloads = 0u32;
            while !done.load(Ordering::Relaxed) {
                let mut c = counting_config(100_000 + u64::from(reloads % 2));
                c.scoring = Some(Scoring::new());
                guard.reload(&c).unwrap();
                reloads += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            reloads
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket
                    .bind(SocketAddr::from(([127, 0, 1, 10 + i], 0)))
                    .unwrap();
                let stream = socket.connect(addr).await.unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut statuses = [0u32; 2];
                for _ in 0..EACH {
                    let req = http::Request::get("/")
                        .header("host", "shop.example")
                        .header("user-agent", BROWSER)
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let res = send.send_request(req).await.unwrap();
                    statuses[usize::from(res.status() != 200)] += 1;
                    res.into_body().collect().await.unwrap();
                }
                statuses
            })
        })
        .collect();
    let (mut served, mut refused) = (0u64, 0u64);
    for c in clients {
        let [ok, not] = c.await.unwrap();
        served += u64::from(ok);
        refused += u64::from(not);
    }
    done.store(true, Ordering::Relaxed);
    let reloads = reloader.await.unwrap();
    let sent = u64::from(CLIENTS) * u64::from(EACH);
    assert_eq!(served + refused, sent, "every request answered");
    assert_eq!(refused, 0, "nothing near a limit was refused");
    let stats = guard.stats();
    let count = stats.rules.iter().find(|r| r.name == "count").unwrap();
    assert_eq!(count.limiter.admitted, served, "charged once each");
    assert!(reloads > 20, "{reloads} reloads");
    eprintln!("{sent} requests over sockets, {reloads} reloads meanwhile");
}
