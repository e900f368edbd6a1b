//! Property tests of the algorithms against their documented bounds and
//! against plain reference models, on arbitrary arrival sequences.

use floodguard::algo::{Gcra, SlidingWindow};
use proptest::prelude::*;
use std::time::Duration;

/// An arrival: gap since the previous one (ns) and cost.
fn arrivals(max_gap: u64, max_cost: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0..max_gap, 1..=max_cost), 1..300)
}

/// Runs a sliding window over arrivals; returns admitted (time, cost).
fn run_window(sw: &SlidingWindow, arrivals: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut state = None;
    let mut now = 0;
    let mut admitted = Vec::new();
    for &(gap, cost) in arrivals {
        now += gap;
        let out = sw.check(state, now, cost);
        if out.decision.is_allowed() {
            admitted.push((now, cost));
            state = out.state.or(state);
        }
    }
    admitted
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Aligned windows admit at most L; any interval (t − W, t] admits at
    /// most L + ⌊p·x/W⌋ where x is t's offset in its window and p what the
    /// previous window admitted; so never 2L or more.
    #[test]
    fn sliding_window_never_exceeds_its_bound(
        limit in 1u64..20,
        window in 1u64..2_000,
        seq in arrivals(400, 3),
    ) {
        let sw = SlidingWindow::new(limit, Duration::from_nanos(window)).unwrap();
        let admitted = run_window(&sw, &seq);
        let in_window = |e: u64| -> u64 {
            admitted.iter().filter(|(t, _)| t / window == e).map(|(_, c)| c).sum()
        };
        for &(t, _) in &admitted {
            let e = t / window;
            prop_assert!(in_window(e) <= limit);
            let x = t % window;
            let p = if e == 0 { 0 } else { in_window(e - 1) };
            let sliding: u64 = admitted
                .iter()
                .filter(|(s, _)| *s <= t && *s + window > t)
                .map(|(_, c)| c)
                .sum();
            prop_assert!(sliding <= limit + p * x / window,
                "{sliding} admitted in (t − W, {t}], bound {}", limit + p * x / window);
            prop_assert!(sliding < 2 * limit);
        }
    }

    /// A denial's retry_after is exact: one nanosecond earlier is still
    /// denied, at retry_after the same request is admitted.
    #[test]
    fn sliding_window_retry_after_is_exact(
        limit in 1u64..20,
        window in 1u64..2_000,
        seq in arrivals(400, 3),
        cost in 1u64..4,
    ) {
        let sw = SlidingWindow::new(limit, Duration::from_nanos(window)).unwrap();
        let mut state = None;
        let mut now = 0;
        for &(gap, c) in &seq {
            now += gap;
            let out = sw.check(state, now, c);
            state = out.state.or(state);
        }
        let d = sw.check(state, now, cost).decision;
        if d.is_denied() && !d.exceeds_limit() {
            let wait = d.retry_after().unwrap().as_nanos() as u64;
            prop_assert!(wait > 0);
            prop_assert!(sw.check(state, now + wait - 1, cost).decision.is_denied());
            prop_assert!(sw.check(state, now + wait, cost).decision.is_allowed());
        }
        if cost > limit {
            prop_assert!(d.exceeds_limit());
        }
    }

    /// GCRA admits exactly what a textbook token bucket admits, with the
    /// same remaining, reset and retry figures.
    #[test]
    fn gcra_matches_reference_model(
        rate in 1u64..50,
        period in 50u64..5_000,
        burst in 1u64..20,
        seq in arrivals(300, 4),
    ) {
        let g = Gcra::new(rate, Duration::from_nanos(period), burst).unwrap();
        let model = TokenBucket::new(rate, period, burst);
        let mut state = None;
        let mut tat_model: u128 = 0;
        let mut now = 0u64;
        for &(gap, cost) in &seq {
            now += gap;
            let got = g.check(state, now, cost);
            let want = model.check(&mut tat_model, u128::from(now), u128::from(cost));
            prop_assert_eq!(got.decision.is_allowed(), want.allowed);
            prop_assert_eq!(u128::from(got.decision.remaining()), want.remaining);
            prop_assert_eq!(got.decision.reset_after().as_nanos(), want.reset);
            if !want.allowed && !got.decision.exceeds_limit() {
                prop_assert_eq!(got.decision.retry_after().unwrap().as_nanos(), want.retry);
            }
            state = got.state.or(state);
        }
    }

    /// Over any interval [a, b], GCRA admits at most burst + (b − a)/T.
    #[test]
    fn gcra_never_exceeds_rate_plus_burst(
        rate in 1u64..50,
        period in 50u64..5_000,
        burst in 1u64..20,
        seq in arrivals(300, 2),
    ) {
        let g = Gcra::new(rate, Duration::from_nanos(period), burst).unwrap();
        let t = g.interval().as_nanos() as u64;
        let mut state = None;
        let mut now = 0;
        let mut admitted = Vec::new();
        for &(gap, cost) in &seq {
            now += gap;
            let out = g.check(state, now, cost);
            if out.decision.is_allowed() {
                admitted.push((now, cost));
                state = out.state;
            }
        }
        for (i, &(a, _)) in admitted.iter().enumerate() {
            let mut sum = 0;
            for &(b, c) in &admitted[i..] {
                sum += c;
                prop_assert!(sum <= burst + (b - a) / t, "{sum} in [{a}, {b}]");
            }
        }
    }
}

/// The sliding window's worst case is reached: L at the very end of a
/// window, then ⌊L·x/W⌋ more at offset x of the next.
#[test]
fn sliding_window_bound_is_tight() {
    let (limit, window) = (10u64, 1_000u64);
    let sw = SlidingWindow::new(limit, Duration::from_nanos(window)).unwrap();
    let mut state = None;
    for _ in 0..limit {
        let out = sw.check(state, window - 1, 1);
        assert!(out.decision.is_allowed());
        state = out.state;
    }
    let x = window - 1;
    let mut more = 0;
    loop {
        let out = sw.check(state, window + x, 1);
        if out.decision.is_denied() {
            break;
        }
        more += 1;
        state = out.state;
    }
    assert_eq!(more, limit * x / window);
    assert_eq!(
        limit + more,
        2 * limit - 1,
        "2L − 1 within one window length"
    );
}

/// Textbook virtual-scheduling GCRA in u128, written independently of the
/// packed implementation.
struct TokenBucket {
    interval: u128,
    tolerance: u128,
    burst: u128,
}

struct ModelDecision {
    allowed: bool,
    remaining: u128,
    reset: u128,
    retry: u128,
}

impl TokenBucket {
    fn new(rate: u64, period: u64, burst: u64) -> Self {
        let interval = u128::from(period).div_ceil(u128::from(rate));
        TokenBucket {
            interval,
            tolerance: interval * u128::from(burst),
            burst: u128::from(burst),
        }
    }

    fn check(&self, tat: &mut u128, now: u128, cost: u128) -> ModelDecision {
        let start = (*tat).max(now);
        let new_tat = start + cost * self.interval;
        if cost <= self.burst && new_tat - now <= self.tolerance {
            *tat = new_tat;
            ModelDecision {
                allowed: true,
                remaining: (self.tolerance - (new_tat - now)) / self.interval,
                reset: new_tat - now,
                retry: 0,
            }
        } else {
            ModelDecision {
                allowed: false,
                remaining: (self.tolerance - (start - now)) / self.interval,
                reset: start - now,
                retry: new_tat - now - self.tolerance,
            }
        }
    }
}
