//! The keyed limiter and its table under concurrency, eviction pressure and
//! composition.

use floodguard::{Clock, KeyedLimiter, ManualClock, check_all};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const THREADS: usize = 8;

fn window(limit: u64, capacity: usize, clock: &ManualClock) -> KeyedLimiter<u64, ManualClock> {
    KeyedLimiter::<u64>::builder()
        .sliding_window(limit, Duration::from_secs(60))
        .capacity(capacity)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn gcra(burst: u64, capacity: usize, clock: &ManualClock) -> KeyedLimiter<u64, ManualClock> {
    KeyedLimiter::<u64>::builder()
        .gcra(1, Duration::from_secs(3600))
        .burst(burst)
        .capacity(capacity)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Runs `f` on `THREADS` threads released at the same instant; returns how
/// many of its calls returned true.
fn hammer(per_thread: usize, f: &(dyn Fn(usize, usize) -> bool + Sync)) -> u64 {
    let start = Barrier::new(THREADS);
    let count = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (start, count) = (&start, &count);
            s.spawn(move || {
                start.wait();
                let mut mine = 0;
                for i in 0..per_thread {
                    mine += u64::from(f(t, i));
                }
                count.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    count.into_inner()
}

#[test]
fn threads_on_one_key_never_admit_more_than_the_limit() {
    let clock = ManualClock::new();
    for limiter in [window(1_000, 1024, &clock), gcra(1_000, 1024, &clock)] {
        // The first request of the key races its insertion too.
        let admitted = hammer(5_000, &|_, _| limiter.check(&42).is_allowed());
        assert_eq!(admitted, 1_000);
        let s = limiter.stats();
        assert_eq!(s.admitted, 1_000);
        assert_eq!(s.denied, THREADS as u64 * 5_000 - 1_000);
        assert_eq!(s.occupancy, 1, "the key was inserted exactly once");
    }
}

#[test]
fn racing_inserts_of_many_keys_keep_one_entry_each() {
    let clock = ManualClock::new();
    let limiter = window(3, 1 << 16, &clock);
    // Every thread walks the same 2,000 new keys, so each insert races.
    let admitted = hammer(2_000 * 4, &|_, i| {
        limiter.check(&((i / 4) as u64)).is_allowed()
    });
    assert_eq!(admitted, 2_000 * 3);
    assert_eq!(limiter.stats().occupancy, 2_000);
}

#[test]
fn contended_inserts_into_a_small_table_lose_no_count() {
    let clock = ManualClock::new();
    // 100 keys in 256 buckets: every thread inserts every key at once, so
    // bucket locks are fought over, yet each key must end up exactly once
    // with exactly its limit admitted.
    let limiter = window(50, 1024, &clock);
    let admitted = hammer(100 * 60, &|t, i| {
        limiter.check(&(((i + t * 13) % 100) as u64)).is_allowed()
    });
    let s = limiter.stats();
    assert_eq!(s.evictions, 0);
    assert_eq!(s.occupancy, 100);
    assert_eq!(admitted, 100 * 50);
}

#[test]
fn two_choice_table_keeps_nearly_every_key_at_60_percent_load() {
    let clock = ManualClock::new();
    let limiter = window(10, 100_000, &clock);
    for k in 0..60_000u64 {
        assert!(limiter.check(&k).is_allowed());
    }
    let s = limiter.stats();
    // A single choice evicts ~6% of keys at this load, always-first ~1%.
    assert!(s.evictions < 300, "{} evictions at 60% load", s.evictions);
    // Every key that was not evicted still has its count.
    let kept = (0..60_000u64)
        .filter(|k| limiter.peek_at(k, 0, clock.now()).remaining() == 9)
        .count();
    assert_eq!(kept as u64, 60_000 - s.evictions);
}

#[test]
fn a_flood_of_new_keys_never_evicts_the_hot_key() {
    let clock = ManualClock::new();
    for limiter in [window(100, 64, &clock), gcra(100, 64, &clock)] {
        let hot = u64::MAX;
        for _ in 0..100 {
            assert!(limiter.check(&hot).is_allowed());
        }
        for k in 0..100_000u64 {
            limiter.check(&k);
            if k % 1_000 == 0 {
                assert!(
                    limiter.check(&hot).is_denied(),
                    "hot key forgotten after {k} new keys"
                );
            }
        }
        assert!(limiter.stats().evictions > 99_000);
        assert!(limiter.stats().occupancy <= 64);
    }
}

#[test]
fn expired_entries_are_reused_before_live_ones_are_evicted() {
    let clock = ManualClock::new();
    let limiter = window(5, 64, &clock);
    for k in 0..1_000u64 {
        limiter.check(&k);
    }
    assert_eq!(limiter.stats().occupancy, 64);
    let evicted = limiter.stats().evictions;
    // Two windows later every entry is stale: new keys reuse them. (A
    // quarter of the capacity, so no two-bucket pair fills with new keys.)
    clock.advance(Duration::from_secs(120));
    for k in 1_000..1_016u64 {
        limiter.check(&k);
    }
    assert_eq!(limiter.stats().evictions, evicted);
    assert_eq!(limiter.store().reclaimed(), 16);
}

#[test]
fn concurrent_composite_checks_charge_all_or_none() {
    let clock = ManualClock::new();
    let wide = window(1_000_000, 1024, &clock);
    let narrow = gcra(500, 1024, &clock);
    let now = clock.now();
    // Threads use different narrow keys per parity, the same wide key.
    let admitted = hammer(2_000, &|t, _| {
        let narrow_key = (t % 2) as u64;
        check_all(now, &[wide.pending(&7), narrow.pending(&narrow_key)]).is_allowed()
    });
    assert_eq!(admitted, 2 * 500);
    // The wide limiter was charged exactly for the admitted requests.
    let remaining = wide.peek_at(&7, 0, now).remaining();
    assert_eq!(remaining, 1_000_000 - admitted);
}

#[test]
fn clock_moving_back_a_little_does_not_reset_a_key() {
    let clock = ManualClock::new();
    let limiter = window(2, 64, &clock);
    clock.advance(Duration::from_secs(60));
    assert!(limiter.check(&1).is_allowed());
    assert!(limiter.check(&1).is_allowed());
    // A thread holding a timestamp from just before the window rolled over.
    let stale = floodguard::Timestamp::from_nanos(clock.now().as_nanos() - 1);
    assert!(limiter.check_at(&1, stale).is_denied());
}
