//! Runs N hot-key checks of one contender, for instruction counting under
//! `valgrind --tool=callgrind` (a figure that does not drift with machine
//! load). `scripts/instructions.sh` runs it at two N and prints instructions
//! per check.
//!
//! ```text
//! cargo bench --bench instructions -- <contender> <n>
//! contender: fg_gcra | fg_window | fg_gcra_tsc | fg_gcra_at | fg_window_at | governor
//!            | baseline (the loop alone)
//! (fg_* use floodguard's default clock; fg_gcra_tsc the exact TSC clock;
//! *_at pass a time already read)
//! with `--features redis`: near_cache (a shared limiter's near-cache
//! check, with a redis-server of its own behind it)
//! ```
//!
//! A `harness = false` bench: the `--bench` flag cargo adds is ignored, and
//! with no arguments (a bare `cargo bench`) it prints its usage and exits.

use floodguard::{KeyedLimiter, MonotonicClock, Timestamp};
use governor::{Quota, RateLimiter};
use std::hint::black_box;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    // Without the `--bench` that `cargo bench` adds.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(who), Some(Ok(n))) = (args.first(), args.get(1).map(|s| s.parse::<u64>())) else {
        eprintln!(
            "usage: instructions <fg_gcra|fg_window|fg_gcra_tsc|fg_gcra_at|fg_window_at|governor|baseline> <n>\n\
             (scripts/instructions.sh runs it under callgrind)"
        );
        return if args.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    };
    let ip: IpAddr = "203.0.113.9".parse().unwrap();
    let gcra = || {
        KeyedLimiter::<IpAddr>::builder()
            .gcra(100_000_000, Duration::from_secs(1))
            .burst(100_000_000)
            .capacity(1024)
            .build()
            .unwrap()
    };
    let window = || {
        KeyedLimiter::<IpAddr>::builder()
            .sliding_window(16_000_000, Duration::from_secs(1))
            .capacity(1024)
            .build()
            .unwrap()
    };
    let mut admitted = 0u64;
    match who.as_str() {
        "fg_gcra" | "fg_window" => {
            let l = if who == "fg_gcra" { gcra() } else { window() };
            for _ in 0..n {
                admitted += u64::from(l.check(black_box(&ip)).is_allowed());
            }
        }
        "fg_gcra_tsc" => {
            let l = KeyedLimiter::<IpAddr>::builder()
                .gcra(100_000_000, Duration::from_secs(1))
                .burst(100_000_000)
                .capacity(1024)
                .clock(MonotonicClock)
                .build()
                .unwrap();
            for _ in 0..n {
                admitted += u64::from(l.check(black_box(&ip)).is_allowed());
            }
        }
        "fg_gcra_at" | "fg_window_at" => {
            let l = if who == "fg_gcra_at" {
                gcra()
            } else {
                window()
            };
            for i in 0..n {
                let now = Timestamp::from_nanos(1_000_000 + i);
                admitted += u64::from(l.check_at(black_box(&ip), now).is_allowed());
            }
        }
        "baseline" => {
            // The loop alone, with the same black_box and sum as the others,
            // so its count can be subtracted.
            for i in 0..n {
                let ip = black_box(&ip);
                admitted += u64::from(ip.is_ipv4() ^ (i == u64::MAX));
            }
        }
        "governor" => {
            let q = NonZeroU32::new(100_000_000).unwrap();
            let l = RateLimiter::keyed(Quota::per_second(q).allow_burst(q));
            for _ in 0..n {
                admitted += u64::from(l.check_key(black_box(&ip)).is_ok());
            }
        }
        #[cfg(feature = "redis")]
        "near_cache" => admitted = near_cache(ip, n),
        other => {
            eprintln!("unknown contender {other:?}");
            return ExitCode::FAILURE;
        }
    }
    println!("{who}: {admitted} of {n} admitted");
    ExitCode::SUCCESS
}

#[cfg(feature = "redis")]
#[path = "../tests/common/redis_server.rs"]
mod redis_server;

/// Hot-key near-cache checks with the same quota as `fg_gcra`. The largest
/// share keeps syncs to one per 65,535 checks, so the count is the check's
/// own (the sync's instructions, on the runtime's threads, are counted too
/// and spread over those checks).
#[cfg(feature = "redis")]
fn near_cache(ip: IpAddr, n: u64) -> u64 {
    use floodguard::redis::{Mode, RedisStore, SharedLimiter};
    let server = redis_server::RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    // Valgrind runs the client fifty times slower: a generous timeout.
    let store = RedisStore::builder(server.url())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mode = Mode::NearCache {
        sync_every: Duration::from_secs(3600),
        sync_after: 65_535,
    };
    let l = SharedLimiter::<IpAddr>::builder("instructions")
        .gcra(100_000_000, Duration::from_secs(1))
        .burst(100_000_000)
        .mode(mode)
        .build(&store)
        .unwrap();
    let mut admitted = 0;
    // A sync before the share runs out, so the count is the admit path's;
    // the inner loop is the other contenders' loop.
    let mut left = n;
    while left > 0 {
        let run = left.min(60_000);
        for _ in 0..run {
            admitted += u64::from(
                l.check_now(black_box(&ip), 1)
                    .is_some_and(|d| d.is_allowed()),
            );
        }
        rt.block_on(l.flush());
        left -= run;
    }
    admitted
}
