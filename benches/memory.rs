//! Resident memory per tracked key: floodguard against governor, with one
//! million random IPv6 client addresses (what one host rotating through its
//! /64, or a botnet, produces).
//!
//! ```text
//! cargo bench --bench memory [-- KEYS]
//! ```
//!
//! Each contender runs in a child process of its own (this program runs
//! itself again), so one's allocations do not colour the other's RSS.
//! floodguard is sized at the documented 1.6× headroom; its memory is fixed
//! at build time and the same for any number of keys, while governor's map
//! grows with every new key until `retain_recent` is called.
//!
//! A `harness = false` bench: the `--bench` flag cargo adds is ignored, so a
//! bare `cargo bench` runs the default (1M keys, a few seconds).

use floodguard::KeyedLimiter;
use governor::{Quota, RateLimiter};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::process::{Command, ExitCode};
use std::time::Duration;

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn keys(n: usize) -> impl Iterator<Item = IpAddr> {
    let mut rng = fastrand::Rng::with_seed(1);
    (0..n).map(move |_| {
        // Random host bits, inside one /64.
        let host = rng.u64(..);
        IpAddr::V6(Ipv6Addr::from_bits(
            (0x2001_0db8_0bad_0001u128 << 64) | u128::from(host),
        ))
    })
}

/// Runs one contender in this process; prints "RSS-growth tracked capacity",
/// measured while the limiter is still alive.
fn child(which: &str, n: usize) -> ExitCode {
    let before = rss_bytes();
    let grown = || rss_bytes().saturating_sub(before);
    match which {
        "floodguard" => {
            let l = KeyedLimiter::<IpAddr>::builder()
                .sliding_window(100, Duration::from_secs(60))
                .capacity(n * 8 / 5)
                .build()
                .expect("valid quota");
            keys(n).for_each(|k| {
                l.check(&k);
            });
            let s = l.stats();
            let tracked = s.occupancy;
            println!("{} {tracked} {}", grown(), s.capacity);
        }
        "governor" => {
            let q = Quota::per_minute(NonZeroU32::new(100).unwrap());
            let l = RateLimiter::keyed(q);
            keys(n).for_each(|k| {
                let _ = l.check_key(&k);
            });
            println!("{} {} {}", grown(), l.len(), l.len());
        }
        _ => return ExitCode::FAILURE,
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // Without the `--bench` that `cargo bench` adds.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let (Some(which), Some(n)) = (args.get(1), args.get(2)) {
        if args[0] == "--child" {
            return child(which, n.parse().unwrap_or(1_000_000));
        }
    }
    let n: usize = match args.first().map(|s| s.parse()) {
        None => 1_000_000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("usage: memory [KEYS]");
            return ExitCode::FAILURE;
        }
    };
    let exe = std::env::current_exe().expect("own path");
    println!("{n} random IPv6 keys from one /64\n");
    println!(
        "{:<11} {:>12} {:>10} {:>10} {:>13}",
        "", "RSS growth", "tracked", "capacity", "bytes/key"
    );
    let mut per_key = Vec::new();
    for which in ["floodguard", "governor"] {
        let out = Command::new(&exe)
            .args(["--child", which, &n.to_string()])
            .output()
            .expect("run child");
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<u64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [grown, tracked, capacity] = f[..] else {
            eprintln!("{which} failed: {}", String::from_utf8_lossy(&out.stderr));
            return ExitCode::FAILURE;
        };
        let bytes = grown as f64 / tracked.max(1) as f64;
        per_key.push(bytes);
        println!(
            "{which:<11} {:>10.1} MB {tracked:>10} {capacity:>10} {bytes:>13.1}",
            grown as f64 / 1e6
        );
    }
    println!(
        "\nfloodguard / governor bytes per key: {:.2}×",
        per_key[0] / per_key[1]
    );
    ExitCode::SUCCESS
}
