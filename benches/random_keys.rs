//! Checks over many live IPv6 keys in random order, the memory-bound case of
//! `keys_1m_random` in `benches/core.rs`, as one long run for `perf stat`
//! or `/proc/<pid>/smaps`: every check misses the caches, and with 4 KiB
//! pages the TLB as well.
//!
//! ```text
//! cargo bench --bench random_keys -- <contender> [checks] [keys]
//! contender: fg_gcra | fg_window | governor | baseline (key generation alone)
//!            | compare (all four in one process, alternated)
//! defaults: 20000000 checks over 1000000 keys, table at 1.6× the keys
//! ```
//!
//! Prints the time per check, wall and on CPU (the key generation included;
//! `baseline` measures it alone), the process's resident memory and how much of it is
//! backed by transparent huge pages (`AnonHugePages` in
//! `/proc/self/smaps_rollup`, Linux only).
//!
//! `compare` fills one limiter of each contender, then runs them in turn,
//! `checks / 10` checks each, for 10 rounds, and prints each one's median
//! on-CPU time per check and its median ratio to governor's in the same
//! round. Work on a shared machine comes and goes over seconds; contenders
//! measured one after the other (as criterion does) each see a different
//! share of it, while alternating every fraction of a second lets every
//! round compare like with like.
//!
//! A `harness = false` bench: the `--bench` flag cargo adds is ignored, and
//! with no arguments (a bare `cargo bench`) it prints its usage and exits.

use floodguard::KeyedLimiter;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
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

/// `checks` checks of random keys below `keys`, in the order that `seed`
/// picks: `(wall, on-CPU)` ns per check (on-CPU `None` off Linux).
fn time_checks(checks: u64, keys: u64, seed: u64, f: &Check<'_>) -> (f64, Option<f64>) {
    let mut order = seed;
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
    let on_cpu = cpu.zip(cpu_nanos()).map(|(a, b)| per((b - a) as f64));
    (per(wall), on_cpu)
}

/// Runs `checks` checks of random keys below `keys`, then prints the time
/// per check and the memory in use.
fn run(who: &str, checks: u64, keys: u64, f: impl Fn(&IpAddr) -> bool) {
    let (wall, on_cpu) = time_checks(checks, keys, 99, &f);
    print!("{who}: {wall:.1} ns per check (wall)");
    if let Some(cpu) = on_cpu {
        print!(", {cpu:.1} ns on CPU");
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

/// The benchmark's quotas: generous, so every check admits.
fn floodguard(window: bool, capacity: usize) -> KeyedLimiter<IpAddr> {
    let builder = KeyedLimiter::<IpAddr>::builder();
    let builder = if window {
        builder.sliding_window(16_000_000, Duration::from_millis(10))
    } else {
        builder
            .gcra(1_000_000_000, Duration::from_secs(1))
            .burst(1_000_000_000)
    };
    builder.capacity(capacity).build().expect("valid quota")
}

fn governor() -> DefaultKeyedRateLimiter<IpAddr> {
    let n = NonZeroU32::new(1_000_000_000).unwrap();
    RateLimiter::keyed(Quota::per_second(n).allow_burst(n))
}

const ROUNDS: u64 = 10;

/// The middle of `v` (the upper middle for an even length).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One contender's check.
type Check<'a> = dyn Fn(&IpAddr) -> bool + 'a;

/// All contenders in one process, alternated: see the module docs.
fn compare(checks: u64, keys: u64, capacity: usize) {
    let gcra = floodguard(false, capacity);
    let window = floodguard(true, capacity);
    let gov = governor();
    for i in 0..keys {
        let k = nth_v6(i);
        gcra.check(&k);
        window.check(&k);
        let _ = gov.check_key(&k);
    }
    let contenders: [(&str, &Check<'_>); 4] = [
        ("governor", &|k| gov.check_key(k).is_ok()),
        ("fg_gcra", &|k| gcra.check(k).is_allowed()),
        ("fg_window", &|k| window.check(k).is_allowed()),
        ("baseline", &|k| black_box(k).is_ipv6()),
    ];
    let per_round = (checks / ROUNDS).max(1);
    let mut times = vec![Vec::new(); contenders.len()];
    for round in 0..ROUNDS {
        for (i, (_, f)) in contenders.iter().enumerate() {
            let (wall, cpu) = time_checks(per_round, keys, round, *f);
            times[i].push(cpu.unwrap_or(wall));
        }
    }
    println!(
        "{ROUNDS} rounds of {per_round} checks each over {keys} keys, on-CPU ns per check (median):"
    );
    for (i, (who, _)) in contenders.iter().enumerate() {
        let ratios = times[i].iter().zip(&times[0]).map(|(t, g)| t / g).collect();
        println!(
            "{who:>10}: {:6.1} ns, {:.2}× governor (median of the rounds' ratios)",
            median(times[i].clone()),
            median(ratios)
        );
    }
    for (who, stats) in [("fg_gcra", gcra.stats()), ("fg_window", window.stats())] {
        eprintln!("{who}: {stats:?}");
    }
}

fn main() -> ExitCode {
    // Without the `--bench` that `cargo bench` adds.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let number = |i: usize, default: u64| args.get(i).map_or(Ok(default), |s| s.parse::<u64>());
    let (Some(who), Ok(checks), Ok(keys)) =
        (args.first(), number(1, 20_000_000), number(2, 1_000_000))
    else {
        eprintln!(
            "usage: random_keys <fg_gcra|fg_window|governor|baseline|compare> [checks] [keys]"
        );
        return if args.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    };
    let Ok(capacity) = usize::try_from(keys * 8 / 5) else {
        eprintln!("{keys} keys are too many for this machine");
        return ExitCode::FAILURE;
    };
    let fill = |f: &dyn Fn(&IpAddr)| (0..keys).for_each(|i| f(&nth_v6(i)));
    match who.as_str() {
        "fg_gcra" | "fg_window" => {
            let l = floodguard(who == "fg_window", capacity);
            fill(&|k| {
                l.check(k);
            });
            run(who, checks, keys, |k| l.check(k).is_allowed());
            eprintln!("{:?}", l.stats());
        }
        "governor" => {
            let l = governor();
            fill(&|k| {
                let _ = l.check_key(k);
            });
            run(who, checks, keys, |k| l.check_key(k).is_ok());
        }
        "baseline" => run(who, checks, keys, |k| black_box(k).is_ipv6()),
        "compare" => compare(checks, keys, capacity),
        _ => {
            eprintln!("unknown contender {who}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
