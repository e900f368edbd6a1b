//! Fuzzes the rate-limiting state machines in `floodguard::algo` against
//! their documented guarantees.
//!
//! An input is one configuration plus a sequence of requests. The target
//! drives the state machine the way a store does (it keeps the returned state
//! when there is one) and panics at the first broken invariant.
//!
//! Time is cumulative, so requests normally arrive in order. A `Tick::Stale`
//! step instead presents a timestamp a little before the latest one, as a
//! thread that read the clock just before another one would. Such a step is
//! still checked for self-consistency, but its admission is left out of the
//! interval bounds: where the algorithm books it depends on the stored state
//! (the sliding window may book it at the start of a later window), so it has
//! no well-defined time. Dropping admissions from the log keeps every upper
//! bound sound, since a subset of the admissions obeys any bound the whole set
//! does.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use floodguard::Decision;
use floodguard::algo::{Gcra, SlidingWindow};
use libfuzzer_sys::fuzz_target;

/// Longest request sequence run; keeps the per-input checks cheap.
const MAX_STEPS: usize = 512;

/// The sliding window's packed epoch is the window index modulo 2^E (E the
/// epoch width), and a state up to `max_ahead()` windows ahead of `now` is
/// read as current. So, as its docs state, a state left untouched for
/// `k·2^E − max_ahead` to `k·2^E + 1` windows is misread. Such states are
/// forgotten before use here (a documented limit, not a finding), with this
/// many windows of margin; any other idle time must read as expired.
const ALIASING_SLACK: u64 = 2;

/// Timestamps stay at or below this: GCRA only promises a TAT that fits in a
/// `u64` for times below 2^62 ns.
const TIME_LIMIT: u64 = (1 << 62) - 1;

#[derive(Arbitrary, Debug)]
struct Input {
    config: Config,
    /// Clock reading before the first step, masked below 2^61 ns.
    start: u64,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Config {
    SlidingWindow {
        limit: Count,
        window: Span,
    },
    Gcra {
        rate: Count,
        period: Span,
        burst: Count,
    },
}

/// A count from 0 to 2^25 − 1, spread over magnitudes so that small values
/// are as likely as the wide counter layouts (and a bit beyond
/// `SLIDING_WINDOW_MAX_LIMIT`, so rejected configurations occur too).
#[derive(Arbitrary, Debug)]
struct Count {
    value: u32,
    scale: u8,
}

impl Count {
    fn get(&self) -> u64 {
        u64::from(self.value & ((1 << 25) - 1)) >> (self.scale % 26)
    }
}

/// A span from 0 to 2^33 − 1 ns (about 8.6 s), spread over magnitudes so that
/// nanosecond windows are as likely as second-long ones. Spans of 2^32 ns and
/// more make the sliding window count time in 2-ns units.
#[derive(Arbitrary, Debug)]
struct Span {
    value: u64,
    scale: u8,
}

impl Span {
    fn nanos(&self) -> u64 {
        (self.value & ((1 << 33) - 1)) >> (self.scale % 34)
    }
}

#[derive(Arbitrary, Debug)]
struct Step {
    tick: Tick,
    cost: Cost,
    /// Refund the cost right after an admission, as `check_all` does when a
    /// later limiter refuses the same request.
    refund: bool,
}

#[derive(Arbitrary, Debug)]
enum Tick {
    /// The clock moves on by this span (possibly zero).
    Forward(Span),
    /// The clock moves on by 2^k ns (up to ~18 years), so that a key can sit
    /// idle long enough for a packed epoch to wrap around.
    Idle(u8),
    /// The clock moves to the next multiple of the window (or GCRA interval),
    /// nudged by this many ns, but never backwards: the sliding window's
    /// worst cases sit right at window edges, which random spans rarely hit.
    Edge(i8),
    /// A timestamp this many ns before the latest one; the clock stays put.
    Stale(u16),
}

#[derive(Arbitrary, Debug)]
enum Cost {
    /// An absolute cost.
    Units(u8),
    /// `k/64` of the limit (or burst): wide limits fill up in a few steps,
    /// and costs above the limit are common.
    Share(u8),
}

impl Cost {
    fn units(&self, limit: u64) -> u64 {
        match *self {
            Cost::Units(n) => u64::from(n),
            Cost::Share(k) => limit * u64::from(k) / 64,
        }
    }
}

struct Clock {
    /// The latest timestamp handed out.
    latest: u64,
    /// Spacing of `Tick::Edge` targets.
    unit: u64,
}

impl Clock {
    fn new(start: u64, unit: u64) -> Self {
        Clock {
            latest: start & ((1 << 61) - 1),
            unit,
        }
    }

    /// Returns the step's timestamp and whether it is stale (before the
    /// latest one).
    fn tick(&mut self, tick: &Tick) -> (u64, bool) {
        let forward = match *tick {
            Tick::Forward(ref span) => span.nanos(),
            Tick::Idle(k) => 1 << (k % 60),
            Tick::Edge(nudge) => {
                let edge = (self.latest / self.unit + 1) * self.unit;
                let target = edge.saturating_add_signed(i64::from(nudge));
                target.saturating_sub(self.latest)
            }
            Tick::Stale(back) => {
                let t = self.latest.saturating_sub(u64::from(back));
                return (t, t < self.latest);
            }
        };
        self.latest = self.latest.saturating_add(forward).min(TIME_LIMIT);
        (self.latest, false)
    }
}

fuzz_target!(|input: Input| {
    let steps = &input.steps[..input.steps.len().min(MAX_STEPS)];
    match input.config {
        Config::SlidingWindow { limit, window } => {
            sliding_window(limit.get(), window.nanos(), input.start, steps)
        }
        Config::Gcra {
            rate,
            period,
            burst,
        } => gcra(rate.get(), period.nanos(), burst.get(), input.start, steps),
    }
});

fn sliding_window(limit: u64, window: u64, start: u64, steps: &[Step]) {
    let Ok(sw) = SlidingWindow::new(limit, Duration::from_nanos(window)) else {
        return;
    };
    // The window in force: long windows are rounded to whole time units, and
    // the documented bounds hold for that window.
    let window = sw.window().as_nanos() as u64;
    let mut clock = Clock::new(start, window);
    // Below 2^32 ns the algorithm counts time in nanoseconds: its windows are
    // exactly the configured ones and `retry_after` is exact. Longer windows
    // use coarser units and may round.
    let ns_units = window < 1 << 32;
    // (time, cost) of in-order admissions that were not refunded, in time
    // order.
    let mut log: Vec<(u64, u64)> = Vec::new();
    // Whether `log` still holds everything the state counts, so that the
    // documented estimate can be recomputed from it.
    let mut exact = ns_units;
    // Per the state layout in the module docs the epoch is 64 − 2C bits wide,
    // C being the width of L + 1; see `ALIASING_SLACK`.
    let epoch_bits = 64 - 2 * (u64::BITS - (limit + 1).leading_zeros());
    let wrap = 1u64 << epoch_bits;
    let mut written = 0;
    let mut state = None;
    for (i, step) in steps.iter().enumerate() {
        let (now, stale) = clock.tick(&step.tick);
        // Idle windows, counted as the algorithm counts them.
        let elapsed = (now / window).saturating_sub(written / window);
        let idle = elapsed % wrap;
        if idle + sw.max_ahead() + ALIASING_SLACK >= wrap || (idle <= 1 && elapsed >= wrap) {
            state = None;
        }
        let cost = step.cost.units(limit);
        let out = sw.check(state, now, cost);
        let d = out.decision;
        // Formatted only when an assertion fails.
        let before = state;
        let ctx = move || format!("step {i}: check({before:?}, {now}, {cost}) -> {out:?}");

        assert_eq!(d.limit(), limit, "{}", ctx());
        assert!(d.remaining() <= limit, "remaining above limit; {}", ctx());
        assert_eq!(d.exceeds_limit(), cost > limit, "{}", ctx());
        assert_eq!(d.is_allowed(), out.state.is_some(), "{}", ctx());
        if exact && !stale {
            let expected = estimate_admits(&log, now, cost, limit, window);
            assert_eq!(
                d.is_allowed(),
                expected,
                "differs from the estimate; {}",
                ctx()
            );
        }

        // `remaining` is exact: that many more units fit right now, one more
        // does not. A stale step may see a state from a later window, judged
        // at that window's start where the previous window still weighs in
        // full: it can be over-full (remaining 0, yet even cost 0 is denied),
        // so only the upper half holds there.
        let current = out.state.or(before);
        let r = d.remaining();
        assert!(
            stale || sw.check(current, now, r).decision.is_allowed(),
            "`remaining` units do not fit; {}",
            ctx()
        );
        assert!(
            r == limit || sw.check(current, now, r + 1).decision.is_denied(),
            "more than `remaining` units fit; {}",
            ctx()
        );

        if let Some(charged) = out.state {
            assert_eq!(d.retry_after(), None, "{}", ctx());
            let new = if step.refund {
                let back = sw.refund(charged, now, cost);
                let heat_before = before.map_or(0, |s| sw.heat(s, now));
                assert_eq!(sw.heat(back, now), heat_before, "refund; {}", ctx());
                back
            } else {
                if stale {
                    exact = false;
                } else {
                    log.push((now, cost));
                }
                charged
            };
            state = Some(new);
            // A stale caller books into the stored (later) window, so the
            // state's epoch is that of the latest write, not of `now`.
            written = if stale { written.max(now) } else { now };
        } else if d.exceeds_limit() {
            assert_eq!(d.retry_after(), Some(Duration::MAX), "{}", ctx());
        } else {
            let wait = d.retry_after().expect("a denial has a retry_after");
            assert!(!wait.is_zero(), "{}", ctx());
            // Exact for stale callers too: a state from a later window is
            // judged at that window's start, and the wait includes the lead.
            if ns_units {
                let wait = u64::try_from(wait.as_nanos()).expect("finite wait");
                let at = now + wait;
                assert!(
                    sw.check(before, at, cost).decision.is_allowed(),
                    "denied again after retry_after; {}",
                    ctx()
                );
                assert!(
                    sw.check(before, at - 1, cost).decision.is_denied(),
                    "retry_after is not the shortest wait; {}",
                    ctx()
                );
            }
        }
    }
    check_window_bounds(&log, limit, window);
}

/// The sliding-window rule as the module docs state it, computed from the
/// admissions themselves: admit iff `(cur + n)·W + prev·(W − x) ≤ L·W`, where
/// `cur` and `prev` are the units admitted in the current and previous
/// aligned windows and `x` is the offset of `now` into the current one.
fn estimate_admits(log: &[(u64, u64)], now: u64, cost: u64, limit: u64, window: u64) -> bool {
    let epoch = now / window;
    let (mut cur, mut prev) = (0u128, 0u128);
    // The log is in time order and ends at or before `now`.
    for &(t, c) in log.iter().rev() {
        match epoch - t / window {
            0 => cur += u128::from(c),
            1 => prev += u128::from(c),
            _ => break,
        }
    }
    let (w, x) = (u128::from(window), u128::from(now % window));
    (cur + u128::from(cost)) * w + prev * (w - x) <= u128::from(limit) * w
}

/// The documented over-admission bounds: at most `limit` units in any aligned
/// window `[e·W, (e+1)·W)`, at most `2·limit − 1` in any span of `W` ns.
fn check_window_bounds(log: &[(u64, u64)], limit: u64, window: u64) {
    // The log is in time order, so each aligned window is one run.
    for run in log.chunk_by(|a, b| a.0 / window == b.0 / window) {
        let total: u64 = run.iter().map(|&(_, c)| c).sum();
        assert!(
            total <= limit,
            "{total} units admitted in window {} (limit {limit}): {run:?}",
            run[0].0 / window
        );
    }
    // The busiest span of length W can be taken to start at an admission;
    // slide its end along with its start.
    let (mut end, mut total) = (0, 0u64);
    for (i, &(start, cost)) in log.iter().enumerate() {
        while end < log.len() && log[end].0 - start < window {
            total += log[end].1;
            end += 1;
        }
        assert!(
            total < 2 * limit,
            "{total} units admitted in [{start}, {start} + {window}) (limit {limit}): {:?}",
            &log[i..end]
        );
        total -= cost;
    }
}

fn gcra(rate: u64, period: u64, burst: u64, start: u64, steps: &[Step]) {
    let Ok(g) = Gcra::new(rate, Duration::from_nanos(period), burst) else {
        return;
    };
    let mut model = Bucket::new(rate, period, burst);
    assert_eq!(g.interval(), nanos(model.interval));
    let mut clock = Clock::new(start, count(model.interval));
    // (time, cost) of in-order admissions that were not refunded.
    let mut log: Vec<(u64, u64)> = Vec::new();
    let mut state = None;
    for (i, step) in steps.iter().enumerate() {
        let (now, stale) = clock.tick(&step.tick);
        let cost = step.cost.units(burst);
        let out = g.check(state, now, cost);
        // Formatted only when an assertion fails.
        let before = state;
        let ctx = move || format!("step {i}: check({before:?}, {now}, {cost}) -> {out:?}");

        // Stale steps are compared too: the model takes max(TAT, t) as well.
        assert_eq!(
            Observed::from(out.decision),
            model.check(now, cost),
            "{}",
            ctx()
        );
        assert_eq!(out.decision.is_allowed(), out.state.is_some(), "{}", ctx());
        if let Some(charged) = out.state {
            let new = if step.refund {
                let back = g.refund(charged, now, cost);
                model.refund(now, cost);
                let heat_before = before.map_or(0, |s| g.heat(s, now));
                assert_eq!(g.heat(back, now), heat_before, "refund; {}", ctx());
                back
            } else {
                if !stale {
                    log.push((now, cost));
                }
                charged
            };
            state = Some(new);
        }
        // The state is documented to be the TAT itself.
        assert_eq!(
            state.map(u128::from),
            model.tat,
            "state is not the TAT; {}",
            ctx()
        );
    }
    check_bucket_bound(&log, burst, model.interval);
}

/// Textbook GCRA (virtual scheduling) in `u128`, so nothing can overflow or
/// saturate.
struct Bucket {
    burst: u64,
    /// Emission interval T = ⌈period / rate⌉.
    interval: u128,
    /// burst · T.
    tolerance: u128,
    /// Theoretical arrival time; `None` for a fresh key.
    tat: Option<u128>,
}

impl Bucket {
    fn new(rate: u64, period: u64, burst: u64) -> Self {
        let interval = u128::from(period).div_ceil(u128::from(rate));
        Bucket {
            burst,
            interval,
            tolerance: u128::from(burst) * interval,
            tat: None,
        }
    }

    /// Admits `cost` at `now` iff max(TAT, t) + n·T − t ≤ burst·T, and then
    /// moves TAT to max(TAT, t) + n·T.
    fn check(&mut self, now: u64, cost: u64) -> Observed {
        let t = u128::from(now);
        let n = u128::from(cost);
        let start = self.tat.map_or(t, |tat| tat.max(t));
        let backlog = start - t;
        let spare = self.tolerance.saturating_sub(backlog) / self.interval;
        let mut seen = Observed {
            allowed: false,
            exceeds_limit: false,
            limit: self.burst,
            remaining: count(spare),
            reset_after: nanos(backlog),
            retry_after: None,
        };
        let after = backlog + n * self.interval;
        if cost > self.burst {
            seen.exceeds_limit = true;
            seen.retry_after = Some(Duration::MAX);
        } else if after <= self.tolerance {
            self.tat = Some(start + n * self.interval);
            seen.allowed = true;
            seen.remaining = count((self.tolerance - after) / self.interval);
            seen.reset_after = nanos(after);
        } else {
            // The earliest t' with TAT + n·T − t' ≤ burst·T.
            seen.retry_after = Some(nanos(after - self.tolerance));
        }
        seen
    }

    /// Gives back `cost` tokens: TAT moves back by n·T, but never before
    /// `now` (a full bucket holds no more).
    fn refund(&mut self, now: u64, cost: u64) {
        if let Some(tat) = self.tat {
            let back = tat.saturating_sub(u128::from(cost) * self.interval);
            self.tat = Some(back.max(u128::from(now)));
        }
    }
}

/// Every admission raises the TAT by at least n·T (from max(TAT, t) ≥ TAT)
/// and leaves it at most t + burst·T. So if admissions in a closed span
/// [a, b] total N units, the TAT after the last of them is both ≥ a + N·T and
/// ≤ b + burst·T: N ≤ burst + (b − a)/T, and since N is an integer,
/// N ≤ burst + ⌊(b − a)/T⌋ with no rounding slack. (Refunds only follow their
/// own admission, and the pair leaves the TAT at max(TAT, t), so they keep
/// this.) With prefix sums S this reads S_j·T − t_j ≤ burst·T + S_{i−1}·T − t_i
/// for all i ≤ j, so one pass with a running minimum checks every span.
fn check_bucket_bound(log: &[(u64, u64)], burst: u64, interval: u128) {
    let t_int = i128::try_from(interval).expect("interval fits");
    let allowance = i128::from(burst) * t_int;
    // Units admitted before the current entry.
    let mut before = 0i128;
    // Smallest S_{i−1}·T − t_i so far, with the S_{i−1} and t_i behind it.
    let mut best: Option<(i128, i128, u64)> = None;
    for &(t, cost) in log {
        let key = before * t_int - i128::from(t);
        if best.is_none_or(|(m, _, _)| key < m) {
            best = Some((key, before, t));
        }
        before += i128::from(cost);
        let (m, base, from) = best.expect("set above");
        assert!(
            before * t_int - i128::from(t) <= allowance + m,
            "{} units admitted in [{from}, {t}] ns; at most {burst} + ({t} − {from})/{interval}",
            before - base
        );
    }
}

/// The observable fields of a `Decision`, so that a whole decision can be
/// compared to the model's in one assertion.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    allowed: bool,
    exceeds_limit: bool,
    limit: u64,
    remaining: u64,
    reset_after: Duration,
    retry_after: Option<Duration>,
}

impl From<Decision> for Observed {
    fn from(d: Decision) -> Self {
        Observed {
            allowed: d.is_allowed(),
            exceeds_limit: d.exceeds_limit(),
            limit: d.limit(),
            remaining: d.remaining(),
            reset_after: d.reset_after(),
            retry_after: d.retry_after(),
        }
    }
}

fn count(n: u128) -> u64 {
    u64::try_from(n).expect("count fits in u64")
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).expect("nanoseconds fit in u64"))
}
