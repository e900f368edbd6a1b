//! A configuration file's `[redis]` section: two instances built from one
//! file count a `shared = true` rule together, share bans, and keep doing
//! so across a reload.
#![cfg(all(feature = "redis", feature = "toml"))]

#[path = "common/redis_server.rs"]
mod redis_server;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use floodguard::ConfigError;
use floodguard::config::GuardConfig;
use floodguard::http::{Guard, PeerAddr};
use redis_server::RedisServer;

fn config(url: &str, per_ip: u64) -> GuardConfig {
    GuardConfig::from_toml(&format!(
        r#"
        [[rules]]
        name = "per-ip"
        key = "ip"
        limit = {per_ip}
        window = "1m"
        shared = true
        [redis]
        share_bans = true
        [redis.store]
        url = "{url}"
        namespace = "config-test"
        timeout = "500ms"
        secret = "000102030405060708090a0b0c0d0e0f"
        "#
    ))
    .unwrap()
}

fn ask(guard: &Guard, ip: IpAddr) -> bool {
    let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    parts.extensions.insert(PeerAddr(SocketAddr::new(ip, 1)));
    guard.check(&parts).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_built_from_one_file_share_rules_and_bans() {
    let server = RedisServer::start();
    let file = config(&server.url(), 10);
    // The section reads back as written.
    let text = file.to_toml().unwrap();
    assert!(
        text.contains("shared = true") && text.contains("share_bans = true"),
        "{text}"
    );
    assert_eq!(
        GuardConfig::from_toml(&text).unwrap().to_toml().unwrap(),
        text
    );
    // Logs of the configuration never show the secret.
    let shown = format!("{file:?}");
    assert!(shown.contains("secret: Some(\"…\")"), "{shown}");
    assert!(!shown.contains("[0, 1, 2, 3"), "{shown}");
    // A new secret is a new store: it needs a restart.
    let mut resecret = file.clone();
    let other = text.replace("000102030405060708090a0b0c0d0e0f", &"f".repeat(32));
    resecret.redis = GuardConfig::from_toml(&other).unwrap().redis;

    let build = |c: GuardConfig| {
        let store = c.redis_store().unwrap().expect("a [redis] section");
        Guard::builder()
            .config_with_store(c, &store)
            .build()
            .unwrap()
    };
    let (a, b) = (build(file.clone()), build(file.clone()));
    let ip: IpAddr = [198, 51, 100, 9].into();
    // Ten between both instances, counted in Redis (near-cached: allow the
    // cache's slack, then the fleet's count holds).
    let mut admitted = 0;
    for i in 0..40 {
        let g = if i % 2 == 0 { &a } else { &b };
        admitted += u32::from(ask(g, ip));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        (10..=14).contains(&admitted),
        "{admitted} admitted of a shared 10"
    );
    assert!(a.stats().rules[0].shared.is_some());

    // A reload that keeps the section keeps counting there; one that
    // changes it needs a restart.
    a.reload(&config(&server.url(), 10)).unwrap();
    assert!(!ask(&a, ip), "the fleet's count carried over");
    let moved = config("redis://127.0.0.1:1/", 10);
    assert!(a.reload(&moved).is_err());
    let err = a.reload(&resecret).unwrap_err();
    assert!(err.to_string().contains("`redis` cannot change"), "{err}");

    // Bans reach the other instance.
    a.ban("203.0.113.5".parse().unwrap(), Duration::from_secs(60));
    let start = Instant::now();
    while !b.is_banned("203.0.113.5".parse().unwrap()) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the ban did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A shared rule without a store is refused at build, naming the fix.
    let err = Guard::builder().config(file).build().unwrap_err();
    assert!(
        matches!(&err, ConfigError::InRule { rule, .. } if rule == "per-ip")
            && err.to_string().contains("config_with_store"),
        "{err}"
    );
}
