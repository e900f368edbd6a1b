//! The cost of a shared check: near-cache and strict mode against a local
//! `KeyedLimiter` and governor, side by side in one run, with a real
//! redis-server on loopback started by the bench itself.
//!
//! Run: `cargo bench --bench redis --features redis`. Compare within a
//! group; quote ratios (the machine is shared and noisy).

#[path = "../tests/common/addresses.rs"]
mod addresses;
#[path = "../tests/common/redis_server.rs"]
mod redis_server;

use criterion::{Criterion, criterion_group, criterion_main};
use floodguard::KeyedLimiter;
use floodguard::redis::{Mode, RedisStore, SharedLimiter};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::Duration;

/// About a billion a second: hot loops keep admitting.
const RATE: u64 = 1_000_000_000;

fn shared(store: &RedisStore, name: &str, mode: Mode) -> SharedLimiter<IpAddr> {
    SharedLimiter::builder(name)
        .gcra(RATE, Duration::from_secs(1))
        .burst(RATE)
        .mode(mode)
        .build(store)
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let server = redis_server::RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(async {
        RedisStore::builder(server.url())
            .namespace("bench")
            .build()
            .unwrap()
    });
    let near = rt.block_on(async { shared(&store, "near", Mode::near_cache()) });
    let strict = rt.block_on(async { shared(&store, "strict", Mode::Strict) });
    let local = KeyedLimiter::<IpAddr>::builder()
        .gcra(RATE, Duration::from_secs(1))
        .burst(RATE)
        .build()
        .unwrap();
    let n = NonZeroU32::new(RATE as u32).unwrap();
    let gov: DefaultKeyedRateLimiter<IpAddr> =
        RateLimiter::keyed(Quota::per_second(n).allow_burst(n));

    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    // The largest share: a hot key syncs every 65,535 admissions, so the
    // figure is the check's own cost; `near_cache_default` (shares of 16)
    // includes the sync work a hot key causes on this 2-core machine.
    let near_wide = rt.block_on(async {
        shared(
            &store,
            "near-wide",
            Mode::NearCache {
                sync_every: floodguard::redis::DEFAULT_SYNC_EVERY,
                sync_after: 65_535,
            },
        )
    });
    let mut g = c.benchmark_group("shared_hot_key");
    g.bench_function("local", |b| b.iter(|| local.check(black_box(&ip))));
    g.bench_function("governor", |b| b.iter(|| gov.check_key(black_box(&ip))));
    g.bench_function("near_cache", |b| {
        b.iter(|| near_wide.check_now(black_box(&ip), 1))
    });
    g.bench_function("near_cache_default", |b| {
        b.iter(|| near.check_now(black_box(&ip), 1))
    });
    g.finish();

    // A key over its limit (one an hour): the attacker's path.
    let hour = Duration::from_secs(3600);
    let local_over = KeyedLimiter::<IpAddr>::builder()
        .gcra(1, hour)
        .build()
        .unwrap();
    let gov_over: DefaultKeyedRateLimiter<IpAddr> =
        RateLimiter::keyed(Quota::per_hour(NonZeroU32::MIN));
    let near_over = rt.block_on(async {
        let l = SharedLimiter::builder("near-over")
            .gcra(1, hour)
            .build(&store)
            .unwrap();
        // Spend the allowance and let Redis say so.
        l.check_now(&ip, 1);
        l.check_now(&ip, 1);
        l.flush().await;
        assert!(l.check_now(&ip, 1).unwrap().is_denied());
        l
    });
    local_over.check(&ip);
    let _ = gov_over.check_key(&ip);
    let mut g = c.benchmark_group("shared_over_limit");
    g.bench_function("local", |b| b.iter(|| local_over.check(black_box(&ip))));
    g.bench_function("governor", |b| {
        b.iter(|| gov_over.check_key(black_box(&ip)))
    });
    g.bench_function("near_cache", |b| {
        b.iter(|| near_over.check_now(black_box(&ip), 1))
    });
    g.finish();

    let keys = addresses::scattered(10_000);
    let mut g = c.benchmark_group("shared_10k_keys");
    let mut i = 0;
    g.bench_function("local", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            local.check(black_box(&keys[i]))
        })
    });
    g.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            gov.check_key(black_box(&keys[i]))
        })
    });
    g.bench_function("near_cache", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            near_wide.check_now(black_box(&keys[i]), 1)
        })
    });
    // Shares of 16: each key here is checked about 5,000 times a second,
    // so most checks find their share spent and refuse until the next
    // sync, and the syncs (10k keys each) run on the other core.
    g.bench_function("near_cache_default", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            near.check_now(black_box(&keys[i]), 1)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("shared_round_trip");
    g.bench_function("strict", |b| {
        b.iter(|| rt.block_on(strict.check(black_box(&ip))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
