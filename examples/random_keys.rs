//! Checks over many live IPv6 keys in random order, the memory-bound case of
//! `keys_1m_random` in `benches/core.rs`, as one long run for `perf stat`
//! or `/proc/<pid>/smaps`: every check misses the caches, and with 4 KiB
//! pages the TLB as well.
//!
//! ```text
//! cargo run --release --example random_keys -- <contender> [checks] [keys]
//! contender: fg_gcra | fg_window | governor | baseline (key generation alone)
//! defaults: 20000000 checks over 1000000 keys, table at 1.6× the keys
//! ```
//!
//! Prints the time per check, wall and on CPU (the key generation included;
//! `baseline` measures it alone), the process's resident memory and how much of it is
//! backed by transparent huge pages (`AnonHugePages` in
//! `/proc/self/smaps_rollup`, Linux only).

use floodguard::KeyedLimiter;
use governor::{Quota, RateLimiter};
use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// splitmix64, as in the benchmark.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The benchmark's `nth_v6`: key `i`, computed rather than stored so that
/// no key array competes with the table for cache and TLB.
fn nth_v6(i: u64) -> IpAddr {
    let hi = mix(i);
    let lo = mix(i.wrapping_add(0x9E37_79B9_7F4A_7C15));
    IpAddr::V6(Ipv6Addr::from_bits((u128::from(hi) << 64) | u128::from(lo)))
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`,
/// Linux): unlike wall time, not inflated by other work on a shared machine.
fn cpu_nanos() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Runs `checks` checks of random keys below `keys`, then prints the time
/// per check and the memory in use.
fn run(who: &str, checks: u64, keys: u64, f: impl Fn(&IpAddr) -> bool) {
    let mut order = 99u64;
    let cpu = cpu_nanos();
    let start = Instant::now();
    let mut allowed = 0u64;
    for _ in 0..checks {
        allowed += u64::from(f(&nth_v6(mix(order) % keys)));
        order = order.wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    let wall = start.elapsed().as_nanos() as f64;
    black_box(allowed);
    let per = |ns: f64| ns / checks as f64;
    print!("{who}: {:.1} ns per check (wall)", per(wall));
    if let (Some(a), Some(b)) = (cpu, cpu_nanos()) {
        print!(", {:.1} ns on CPU", per((b - a) as f64));
    }
    println!(", {checks} checks over {keys} keys");
    if let (Some(rss), Some(huge)) = (smaps_kb("Rss:"), smaps_kb("AnonHugePages:")) {
        println!(
            "RSS {} MB, of which AnonHugePages {} MB",
            rss / 1024,
            huge / 1024
        );
    }
}

/// A `kB` field summed over `/proc/self/smaps_rollup`.
fn smaps_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: u64| args.get(i).map_or(Ok(default), |s| s.parse::<u64>());
    let (Some(who), Ok(checks), Ok(keys)) =
        (args.get(1), number(2, 20_000_000), number(3, 1_000_000))
    else {
        eprintln!("usage: random_keys <fg_gcra|fg_window|governor|baseline> [checks] [keys]");
        return ExitCode::FAILURE;
    };
    let capacity = usize::try_from(keys * 8 / 5).expect("fits");
    let fill = |f: &dyn Fn(&IpAddr)| (0..keys).for_each(|i| f(&nth_v6(i)));
    match who.as_str() {
        "fg_gcra" | "fg_window" => {
            let builder = KeyedLimiter::<IpAddr>::builder();
            // The benchmark's quotas: generous, so every check admits.
            let builder = if who == "fg_gcra" {
                builder
                    .gcra(1_000_000_000, Duration::from_secs(1))
                    .burst(1_000_000_000)
            } else {
                builder.sliding_window(16_000_000, Duration::from_millis(10))
            };
            let l = builder.capacity(capacity).build().expect("valid quota");
            fill(&|k| {
                l.check(k);
            });
            run(who, checks, keys, |k| l.check(k).is_allowed());
            eprintln!("{:?}", l.stats());
        }
        "governor" => {
            let n = NonZeroU32::new(1_000_000_000).unwrap();
            let l = RateLimiter::keyed(Quota::per_second(n).allow_burst(n));
            fill(&|k| {
                let _ = l.check_key(k);
            });
            run(who, checks, keys, |k| l.check_key(k).is_ok());
        }
        "baseline" => run(who, checks, keys, |k| black_box(k).is_ipv6()),
        _ => {
            eprintln!("unknown contender {who}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
