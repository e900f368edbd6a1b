//! Runs N hot-key checks of one contender, for instruction counting under
//! `valgrind --tool=callgrind` (a figure that does not drift with machine
//! load). `scripts/instructions.sh` runs it at two N and prints instructions
//! per check.
//!
//! ```text
//! cargo run --release --example instructions -- <contender> <n>
//! contender: fg_gcra | fg_window | fg_gcra_tsc | fg_gcra_at | fg_window_at | governor
//!            | baseline (the loop alone)
//! (fg_* use floodguard's default clock; fg_gcra_tsc the exact TSC clock;
//! *_at pass a time already read)
//! ```

use floodguard::{KeyedLimiter, MonotonicClock, Timestamp};
use governor::{Quota, RateLimiter};
use std::hint::black_box;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(who), Some(Ok(n))) = (args.get(1), args.get(2).map(|s| s.parse::<u64>())) else {
        eprintln!(
            "usage: instructions <fg_gcra|fg_window|fg_gcra_tsc|fg_gcra_at|fg_window_at|governor|baseline> <n>"
        );
        return ExitCode::FAILURE;
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
        other => {
            eprintln!("unknown contender {other:?}");
            return ExitCode::FAILURE;
        }
    }
    println!("{who}: {admitted} of {n} admitted");
    ExitCode::SUCCESS
}
