//! Shared limits against a real redis-server started by the test itself:
//! several instances, one limit; Redis killed and restarted; scripts
//! flushed.
#![cfg(all(feature = "redis", feature = "tower"))]

#[path = "common/redis_server.rs"]
mod redis_server;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use floodguard::http::{Guard, PeerAddr, Rule};
use floodguard::redis::{BreakerState, Mode, OnFailure, RedisStore, SharedLimiter, StoreError};
use redis_server::RedisServer;

fn store(server: &RedisServer, namespace: &str) -> RedisStore {
    RedisStore::builder(server.url())
        .namespace(namespace)
        .timeout(Duration::from_millis(100))
        .retry_every(Duration::from_millis(200))
        .build()
        .unwrap()
}

fn limiter(store: &RedisStore, name: &str, limit: u64, mode: Mode) -> SharedLimiter<str> {
    SharedLimiter::<str>::builder(name)
        .sliding_window(limit, Duration::from_secs(60))
        .mode(mode)
        .build(store)
        .unwrap()
}

/// Waits (bounded) until every near-cache sees `n` instances in the
/// registry, so shares are computed for the whole fleet.
async fn until_fleet_of(limiters: &[SharedLimiter<str>], n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while limiters.iter().any(|l| l.stats().instances != n) {
        assert!(
            Instant::now() < deadline,
            "registry never showed {n} instances"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_strict_instances_admit_exactly_the_limit() {
    let server = RedisServer::start();
    let limiters: Vec<_> = (0..3)
        .map(|_| limiter(&store(&server, "strict"), "api", 300, Mode::Strict))
        .collect();
    let tasks: Vec<_> = limiters
        .iter()
        .cloned()
        .map(|l| {
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..200 {
                    admitted += u64::from(l.check("client-1").await.is_allowed());
                }
                admitted
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 300, "strict mode is exact across instances");
    for l in &limiters {
        assert_eq!(l.stats().fallback, 0);
        assert_eq!(
            l.check_now("x", 1),
            None,
            "strict checks must wait for Redis"
        );
    }
    // Another key has its own count.
    assert!(limiters[0].check("client-2").await.is_allowed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_near_cached_instances_stay_within_the_documented_bound() {
    let server = RedisServer::start();
    let limit = 300;
    let limiters: Vec<_> = (0..3)
        .map(|_| limiter(&store(&server, "near"), "api", limit, Mode::near_cache()))
        .collect();
    until_fleet_of(&limiters, 3).await;
    // Each instance checks one key every 0.5 ms for 0.6 s: 3 × 1200
    // requests, four times the limit, with many syncs in between.
    let tasks: Vec<_> = limiters
        .iter()
        .cloned()
        .map(|l| {
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..1200 {
                    admitted += u64::from(l.check_now("client-1", 1).unwrap().is_allowed());
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                admitted
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    // The documented bound: (I − 1) × sync_after over; a share refused at
    // the very end may leave a few units unused.
    let bound = limit + 2 * floodguard::redis::DEFAULT_SYNC_AFTER;
    assert!(total <= bound, "admitted {total} of {limit}, bound {bound}");
    eprintln!("near-cache: 3 instances admitted {total} for a limit of {limit}");
    assert!(total >= limit - 3, "admitted only {total} of {limit}");
    for l in &limiters {
        l.flush().await;
        let s = l.stats();
        assert!(s.sync_rounds > 0 && s.pushed_keys > 0, "{s:?}");
        assert_eq!(s.fallback, 0);
    }
    // Redis holds the fleet's count: a strict limiter of the same name sees
    // no room left.
    let strict = limiter(&store(&server, "near"), "api", limit, Mode::Strict);
    assert!(strict.check("client-1").await.is_denied());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_guards_sharing_a_rule_enforce_one_limit() {
    let server = RedisServer::start();
    let guards: Vec<_> = (0..3)
        .map(|_| {
            Guard::builder()
                .rule(
                    Rule::per_ip("per-ip")
                        .sliding_window(30, Duration::from_secs(60))
                        .shared(&store(&server, "guards")),
                )
                .build()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while guards
        .iter()
        .any(|g| g.stats().rules[0].shared.unwrap().instances != 3)
    {
        assert!(Instant::now() < deadline, "registry never showed 3 guards");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = || {
        let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(PeerAddr("192.0.2.44:5000".parse().unwrap()));
        parts
    };
    // A load balancer spreading one client's 150 requests round-robin.
    let mut admitted = 0;
    for i in 0..150 {
        admitted += u64::from(guards[i % 3].check(&request()).is_ok());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A limit of 30 shared by 3: shares of 10, at most 2 × 10 over.
    assert!((27..=50).contains(&admitted), "admitted {admitted} of 30");
    eprintln!("guards: 3 instances admitted {admitted} for a limit of 30");
    let stats = guards[0].stats().rules[0].shared.unwrap();
    assert!(stats.redis_available && stats.pushed_keys > 0, "{stats:?}");
    // The rule's capacity is its near-cache's.
    assert!(stats.capacity >= floodguard::DEFAULT_CAPACITY, "{stats:?}");
    assert_eq!(guards[0].stats().rules[0].limiter.capacity, stats.capacity);
    let text = guards[0].prometheus();
    assert!(
        text.contains("floodguard_shared_rule_instances{rule=\"per-ip\"} 3\n"),
        "{text}"
    );
    assert!(text.contains("floodguard_shared_rule_redis_available{rule=\"per-ip\"} 1\n"));
    // Another client is untouched.
    let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    parts
        .extensions
        .insert(PeerAddr("192.0.2.45:5000".parse().unwrap()));
    assert!(guards[1].check(&parts).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_fails_open_within_the_timeout_and_recovers() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let store = RedisStore::builder(server.url())
        .namespace("outage")
        .timeout(timeout)
        .retry_every(Duration::from_millis(200))
        .on_failure(OnFailure::Local)
        .build()
        .unwrap();
    let strict = limiter(&store, "strict", 1_000, Mode::Strict);
    let near = limiter(&store, "near", 1_000, Mode::near_cache());
    assert!(strict.check("a").await.is_allowed());
    assert!(near.check("a").await.is_allowed());

    server.kill();
    // Every check is decided within the timeout (plus scheduling slack),
    // and admitted by the local fallback.
    let outage = Instant::now();
    for _ in 0..50 {
        let started = Instant::now();
        assert!(strict.check("a").await.is_allowed());
        assert!(near.check("a").await.is_allowed());
        assert!(started.elapsed() < timeout + Duration::from_millis(150));
    }
    assert_ne!(store.stats().breaker, BreakerState::Closed);
    assert!(!store.is_available());
    assert!(strict.stats().fallback > 0 && near.stats().fallback > 0);
    // The breaker spares Redis: a handful of calls, not one per check.
    let tried = store.stats().calls;
    assert!(tried < 20, "{tried} calls while Redis was down");
    assert!(outage.elapsed() < Duration::from_secs(3));

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store.is_available() {
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?}",
            store.stats()
        );
        let _ = strict.check("a").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fallback = strict.stats().fallback;
    assert!(strict.check("b").await.is_allowed());
    assert_eq!(strict.stats().fallback, fallback, "back on Redis");
    assert_eq!(store.stats().breaker_opened, 1);
    // The near-cache syncs again.
    let rounds = near.stats().sync_rounds;
    assert!(near.check("c").await.is_allowed());
    let deadline = Instant::now() + Duration::from_secs(2);
    while near.stats().sync_rounds == rounds {
        assert!(Instant::now() < deadline, "near-cache never synced again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_fails_closed_when_told_to() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .namespace("closed")
        .timeout(Duration::from_millis(100))
        .retry_every(Duration::from_secs(2))
        .on_failure(OnFailure::Refuse)
        .build()
        .unwrap();
    let strict = limiter(&store, "strict", 1_000, Mode::Strict);
    assert!(strict.check("a").await.is_allowed());
    drop(server);
    for _ in 0..5 {
        let d = strict.check("a").await;
        assert!(d.is_denied());
        let retry = d.retry_after().unwrap();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(2),
            "{retry:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_flush_is_recovered_from() {
    let server = RedisServer::start();
    let store = store(&server, "flush");
    let strict = limiter(&store, "strict", 3, Mode::Strict);
    assert!(strict.check("k").await.is_allowed());
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(strict.check("k").await.is_allowed());
    assert!(strict.check("k").await.is_allowed());
    assert!(
        strict.check("k").await.is_denied(),
        "the count survived the flush"
    );
    assert_eq!(strict.stats().fallback, 0);
    assert_eq!(store.stats().errors, 0);
}

/// A near-cache with no periodic round during a test.
fn near_cache_never_synced() -> Mode {
    Mode::NearCache {
        sync_every: Duration::from_secs(3600),
        sync_after: 16,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_near_cached_limiter_pushes_its_pending_counts() {
    let server = RedisServer::start();
    let store = store(&server, "drop");
    // Room for every poll below: a strict check spends a unit.
    let limit = 1_000;
    let strict = limiter(&store, "api", limit, Mode::Strict);
    // Connects, so that the store's own tasks are all running below.
    assert!(strict.check("warm-up").await.is_allowed());
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();

    let near = limiter(&store, "api", limit, near_cache_never_synced());
    let clone = near.clone();
    // 10 units: below the key's share of 16, so no check asks for a sync.
    let n = 10;
    for _ in 0..n {
        assert!(near.check_now("k", 1).unwrap().is_allowed());
    }
    assert_eq!(
        near.stats().sync_rounds,
        0,
        "nothing pushed before the drop"
    );
    drop(near);
    // A clone still holds the limiter: nothing is pushed yet.
    assert_eq!(clone.stats().sync_rounds, 0);
    drop(clone);

    // A strict check sees the fleet's count, its own unit included.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut checks = 0;
    loop {
        let d = strict.check("k").await;
        checks += 1;
        if d.remaining() == limit - n - checks {
            break;
        }
        assert_eq!(d.remaining(), limit - checks, "a partial push?");
        assert!(
            Instant::now() < deadline,
            "the dropped limiter's {n} units never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.stats().dropped_unflushed, 0);
    // Both the sync task and the final push are gone.
    let deadline = Instant::now() + Duration::from_secs(2);
    while metrics.num_alive_tasks() > tasks_before {
        assert!(
            Instant::now() < deadline,
            "{} tasks alive, {tasks_before} before the limiter",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Dropped after its runtime shut down, a near-cached limiter cannot push:
/// the loss is counted. Needs no Redis (nothing is sent).
#[test]
fn a_limiter_dropped_after_its_runtime_counts_what_it_lost() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (store, near, strict) = runtime.block_on(async {
        let store = RedisStore::builder("redis://127.0.0.1:1/")
            .namespace("lost")
            .build()
            .unwrap();
        let near = limiter(&store, "api", 100, near_cache_never_synced());
        for key in ["a", "b", "b"] {
            assert!(near.check_now(key, 2).unwrap().is_allowed());
        }
        let strict = limiter(&store, "api", 100, Mode::Strict);
        (store, near, strict)
    });
    drop(runtime);
    assert_eq!(near.stats().sync_rounds, 0);
    // Strict limiters have nothing pending.
    drop(strict);
    assert_eq!(store.stats().dropped_unflushed, 0);
    drop(near);
    assert_eq!(store.stats().dropped_unflushed, 6);
}

#[tokio::test]
async fn bad_configuration_is_named() {
    let bad = RedisStore::builder("redis://127.0.0.1:1/")
        .namespace("a{b}")
        .build()
        .unwrap_err();
    assert!(
        matches!(
            bad,
            StoreError::BadName {
                field: "namespace",
                ..
            }
        ),
        "{bad}"
    );
    let bad = RedisStore::builder("not a url").build().unwrap_err();
    assert!(matches!(bad, StoreError::Url(_)), "{bad}");
    let bad = RedisStore::builder("redis://127.0.0.1:1/")
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(bad.to_string(), "`timeout` must be a positive duration");
    let store = RedisStore::builder("redis://127.0.0.1:1/").build().unwrap();
    let bad = SharedLimiter::<IpAddr>::builder("x")
        .build(&store)
        .unwrap_err();
    assert!(bad.to_string().contains("no algorithm chosen"), "{bad}");
    let bad = SharedLimiter::<IpAddr>::builder("x")
        .sliding_window(10, Duration::from_secs(1))
        .burst(3)
        .build(&store)
        .unwrap_err();
    assert!(matches!(bad, StoreError::Config(_)), "{bad}");
    let bad = Guard::builder()
        .rule(
            Rule::per_ip("has:colon")
                .sliding_window(10, Duration::from_secs(1))
                .shared(&store),
        )
        .build()
        .unwrap_err();
    assert!(bad.to_string().contains("has:colon"), "{bad}");
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let err = RedisStore::builder("redis://127.0.0.1:1/")
        .build()
        .unwrap_err();
    assert!(matches!(err, StoreError::NoRuntime), "{err}");
}
