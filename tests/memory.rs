//! Memory stays bounded whatever keys arrive. Alone in its own test binary
//! so that no other test's allocations move the process's RSS.

use floodguard::{KeyedLimiter, ManualClock};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

/// Resident set size of this process, from /proc (Linux).
fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn ten_million_distinct_keys_fit_in_a_100k_table() {
    const CAPACITY: usize = 100_000;
    const KEYS: u128 = 10_000_000;
    let Some(before) = rss_bytes() else {
        eprintln!("no /proc/self/status: skipping the RSS part");
        return;
    };
    let clock = ManualClock::new();
    let limiter = KeyedLimiter::<IpAddr>::builder()
        .sliding_window(50, Duration::from_secs(60))
        .capacity(CAPACITY)
        .clock(clock.clone())
        .build()
        .unwrap();
    let table = limiter.store().memory_bytes();
    assert_eq!(table, CAPACITY * 16);
    let built = rss_bytes().unwrap();

    // One attacker rotating through an IPv6 /64, and one hot client whose
    // limit must hold throughout.
    let hot: IpAddr = "203.0.113.5".parse().unwrap();
    let base: u128 = 0x2001_0db8_0bad_0000_0000_0000_0000_0000;
    for i in 0..KEYS {
        limiter.check(&IpAddr::V6(Ipv6Addr::from_bits(base + i)));
        if i % 1_000 == 0 {
            let d = limiter.check(&hot);
            assert_eq!(d.is_allowed(), i < 50_000, "hot key at {i}");
        }
        if i % 2_000_000 == 0 {
            clock.advance(Duration::from_millis(10));
        }
    }
    let after = rss_bytes().unwrap();
    let grown = after.saturating_sub(before);
    let stats = limiter.stats();
    eprintln!(
        "RSS {before} -> {built} (built) -> {after} bytes (flooded); table {table} bytes; {} evictions",
        stats.evictions
    );
    assert!(stats.occupancy <= stats.capacity);
    assert!(stats.evictions >= (KEYS as u64) - CAPACITY as u64 - 1);
    // 10M keys cost nothing beyond what building the limiter took...
    let flood = after.saturating_sub(built);
    assert!(
        flood <= 64 * 1024,
        "RSS grew by {flood} bytes during the flood"
    );
    // ...which is the table plus a constant (counters, allocator slack).
    assert!(
        grown <= table + 256 * 1024,
        "RSS grew by {grown} bytes for a {table}-byte table"
    );
}
