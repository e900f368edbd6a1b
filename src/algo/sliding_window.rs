//! Two-window weighted counter (the "sliding window counter").
//!
//! Time is cut into windows of length `W` aligned to the clock (window `e`
//! spans `[e·W, (e+1)·W)`), so every key's windows start at the same instants
//! and a client cannot pick its own window start. Each key keeps the count of
//! the current window `cur` and of the previous one `prev`. At offset `x`
//! into the current window a request of cost `n` is admitted iff
//!
//! ```text
//! prev·(W − x)/W + cur + n ≤ L
//! ```
//!
//! evaluated exactly in integers as `(cur + n)·W + prev·(W − x) ≤ L·W`.
//! Refused requests are not counted.
//!
//! # Over-admission bound
//!
//! The estimate assumes the previous window's requests were spread evenly.
//! Exactly:
//!
//! * any aligned window admits at most `L` units;
//! * any interval of length `W` that starts at offset `y` (`0 ≤ y < W`) into
//!   window `e−1` admits at most `L + ⌊p·y/W⌋` units, where `p ≤ L` is what
//!   window `e−1` admitted. Hence never more than `2L − 1` units in any
//!   interval of length `W`, and the worst case is reached only when the
//!   previous window's traffic all came at its very end.
//!
//! Proof sketch: the interval holds at most `p` units from window `e−1`; the
//! last unit admitted in window `e` at offset `x ≤ y` satisfied
//! `cur·W ≤ L·W − p·(W − x) ≤ L·W − p·(W − y)`. Both bounds are checked by
//! property tests (`tests/algorithms.rs`), including that they are reached.
//!
//! # State layout (one `u64`)
//!
//! `[epoch: E bits][cur: C bits][prev: C bits]` where `C` is the smallest
//! width that holds `L + 1` and `E = 64 − 2C`, so small limits leave a long
//! epoch: `E ≥ 48` for `L < 255`, `E ≥ 24` for `L < 2^20 − 1`, `E ≥ 16` at
//! the largest limit. The epoch is the window index modulo `2^E`. A state
//! found a little *ahead* of the caller's time (up to
//! [`SlidingWindow::max_ahead`] windows: [`MAX_STALENESS`] (one second)
//! worth, at least three) is taken as current: another thread read the
//! clock a moment later and moved the key on, and a stale timestamp must
//! not wipe its counts. A window so short that a second's worth of windows
//! would exceed a quarter of the epoch range is refused
//! ([`ConfigError::WindowTooShort`]: below 61 µs at the largest limits,
//! 239 ns for `L < 2^20 − 1`, none for `L < 2^16 − 1`), so a caller up
//! to a second stale never overwrites newer state; one staler than that
//! may (its clock reading is then wrong, not late). An entry left
//! untouched for `k·2^E − max_ahead` to `k·2^E + 1` windows is misread (as
//! ahead, current or previous); any other age reads as expired. For
//! `L < 2^20 − 1` that first happens after 16 million idle windows.
//!
//! Time is kept in units of `2^s` ns, `s` the smallest shift that brings `W`
//! below 2^32, so every product fits in 64 bits. Windows of 2^32 ns (4.3 s)
//! or more are therefore rounded down to a multiple of `2^s` ns, by less than
//! one part in 2^31; [`SlidingWindow::window`] returns the window in force,
//! and the bounds above hold for it.

use super::Outcome;
use super::divide::Divider;
use crate::decision::Decision;
use crate::error::ConfigError;
use std::time::Duration;

/// A stored state up to this far ahead of the caller's time is read as
/// current (the caller's timestamp is stale: another thread read the clock
/// later and moved the key on)...
pub const MAX_STALENESS: Duration = Duration::from_secs(1);
/// ...and at least this many windows, whatever their length.
pub const MIN_AHEAD_WINDOWS: u64 = 3;

/// Windows are below 2^59 ns (18 years), so the longest wait reported (a
/// stale caller's lead of up to three windows, plus two) fits in a `u64`.
const MAX_WINDOW_NANOS: u64 = 1 << 59;

/// Largest limit a sliding window accepts: 24-bit counters, 16-bit epoch.
pub const MAX_LIMIT: u64 = (1 << 24) - 2;

// `check` relies on costs of 2^31 and more exceeding every limit.
const _: () = assert!(MAX_LIMIT < 1 << 31);

/// Sliding-window counter parameters; a pure state machine over one `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingWindow {
    limit: u64,
    window_nanos: u64,
    /// Time unit is `2^shift` ns.
    shift: u32,
    /// `2^shift`.
    unit_nanos: u64,
    /// Window length in time units, `< 2^32`.
    window: u64,
    /// Divides by `window`.
    per_window: Divider,
    count_bits: u32,
    count_mask: u64,
    epoch_mask: u64,
    /// `2^C`: one unit of `cur` in a packed state.
    cur_one: u64,
    /// `cur` below this takes the fast path in `check`: `2^C`, or 0 when
    /// `W = 1` (no fast path).
    fast_cur_end: u64,
    /// `W`, or 0 when `W = 1`: `check` reads an older state quickly only
    /// if the time left in the estimated window, less one, is below this
    /// (never for `W = 1`, where the estimate means nothing).
    quick_window: u64,
    /// `2^(2C)`: one epoch step in a packed state.
    epoch_one: u64,
    /// `−2^(2C)` (wrapping): minus one epoch step in a packed state.
    minus_epoch_one: u64,
    /// `max_ahead · 2^(2C)`: a state's counts less one epoch step fall
    /// below this iff it is up to `max_ahead` windows ahead.
    ahead_span: u64,
    /// `L·W`: the estimate's ceiling, scaled by `W`.
    cap: u64,
    /// States up to this many windows ahead are read as current.
    max_ahead: u64,
}

impl SlidingWindow {
    /// `limit` cost units per `window`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::algo::SlidingWindow;
    /// let sw = SlidingWindow::new(100, Duration::from_secs(60)).unwrap();
    /// assert_eq!(sw.limit(), 100);
    /// assert!(SlidingWindow::new(0, Duration::from_secs(1)).is_err());
    /// ```
    pub fn new(limit: u64, window: Duration) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::Zero { field: "limit" });
        }
        if limit > MAX_LIMIT {
            return Err(ConfigError::TooLarge {
                field: "limit",
                value: limit,
                max: MAX_LIMIT,
            });
        }
        let window_nanos = crate::clock::duration_nanos(window);
        if window_nanos == 0 {
            return Err(ConfigError::ZeroDuration { field: "window" });
        }
        if window_nanos >= MAX_WINDOW_NANOS {
            return Err(ConfigError::TooLarge {
                field: "window",
                value: window_nanos,
                max: MAX_WINDOW_NANOS - 1,
            });
        }
        let shift = (64 - window_nanos.leading_zeros()).saturating_sub(32);
        let count_bits = 64 - (limit + 1).leading_zeros();
        let epoch_bits = 64 - 2 * count_bits;
        let window_nanos = window_nanos >> shift << shift;
        // A stale caller must never be read as one long idle: a quarter of
        // the epoch range has to span `MAX_STALENESS`, else a state written
        // by a thread with a later clock reading would look expired to one
        // with an earlier reading, which would then overwrite it.
        let staleness = crate::clock::duration_nanos(MAX_STALENESS);
        let quarter = 1u64 << (epoch_bits - 2);
        let min_nanos = staleness.div_ceil(quarter);
        if window_nanos < min_nanos {
            return Err(ConfigError::WindowTooShort {
                window_nanos,
                limit,
                min_nanos,
            });
        }
        // Rounded up: a caller `MAX_STALENESS` late is that many windows
        // back at most.
        let max_ahead = staleness
            .div_ceil(window_nanos)
            .max(MIN_AHEAD_WINDOWS)
            .min(quarter);
        Ok(SlidingWindow {
            limit,
            // Rounded to whole time units: the window actually in force.
            window_nanos,
            shift,
            unit_nanos: 1 << shift,
            window: window_nanos >> shift,
            per_window: Divider::new(window_nanos >> shift),
            count_bits,
            count_mask: (1 << count_bits) - 1,
            epoch_mask: (1 << epoch_bits) - 1,
            cur_one: 1 << count_bits,
            fast_cur_end: if window_nanos >> shift == 1 {
                0
            } else {
                1 << count_bits
            },
            quick_window: if window_nanos >> shift == 1 {
                0
            } else {
                window_nanos >> shift
            },
            epoch_one: 1 << (2 * count_bits),
            minus_epoch_one: (1u64 << (2 * count_bits)).wrapping_neg(),
            ahead_span: max_ahead << (2 * count_bits),
            cap: limit * (window_nanos >> shift),
            max_ahead,
        })
    }

    /// The limit per window, in cost units.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How many windows ahead of the caller's time a stored state may be and
    /// still be read as current: [`MAX_STALENESS`] worth of windows, at least
    /// [`MIN_AHEAD_WINDOWS`] (never more than a quarter of the epoch range:
    /// shorter windows are refused).
    pub fn max_ahead(&self) -> u64 {
        self.max_ahead
    }

    /// The window length in force (rounded down to whole time units for
    /// windows of 2^32 ns or more; see the module docs).
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window_nanos)
    }

    fn pack(&self, epoch: u64, cur: u64, prev: u64) -> u64 {
        ((epoch & self.epoch_mask) << (2 * self.count_bits)) | (cur << self.count_bits) | prev
    }

    /// Splits `now` into (window index, offset in units) and reads the state
    /// as `(epoch, cur, prev)` for that window.
    #[inline]
    fn view(&self, state: Option<u64>, now: u64) -> View {
        self.view_at(state, now >> self.shift)
    }

    /// [`view`](Self::view) at `t`, in time units.
    #[inline]
    fn view_at(&self, state: Option<u64>, t: u64) -> View {
        let epoch = self.per_window.div(t);
        let offset = t - epoch * self.window;
        let Some(s) = state else {
            return View {
                epoch,
                offset,
                cur: 0,
                prev: 0,
                lead: 0,
            };
        };
        let stored = s >> (2 * self.count_bits);
        let cur = (s >> self.count_bits) & self.count_mask;
        let prev = s & self.count_mask;
        let behind = epoch.wrapping_sub(stored) & self.epoch_mask;
        if behind == 0 {
            View {
                epoch,
                offset,
                cur,
                prev,
                lead: 0,
            }
        } else if behind == 1 {
            View {
                epoch,
                offset,
                cur: 0,
                prev: cur,
                lead: 0,
            }
        } else if behind > self.epoch_mask - self.max_ahead {
            // The state is from a slightly later window than `now`: another
            // thread read the clock a moment after us and already moved the
            // key on. Decide as if at the start of that window. Anything
            // further "ahead" is an old state that wrapped around: expired.
            let ahead = self.epoch_mask + 1 - behind;
            View {
                epoch: epoch.wrapping_add(ahead),
                offset: 0,
                cur,
                prev,
                lead: ahead * self.window - offset,
            }
        } else {
            View {
                epoch,
                offset,
                cur: 0,
                prev: 0,
                lead: 0,
            }
        }
    }

    /// `(cur·W + prev·(W − x))`: the estimate scaled by `W`.
    #[inline]
    fn used(&self, v: &View) -> u64 {
        v.cur * self.window + v.prev * (self.window - v.offset)
    }

    /// Callers pass at most five windows, which fit: windows are < 2^59 ns.
    /// (A multiply by `2^s` rather than a shift: one register fewer.)
    #[inline(always)]
    fn units_to_nanos(&self, units: u64) -> u64 {
        units * self.unit_nanos
    }

    /// Time until the current count (`busy`: it is not zero) and `prev`
    /// have both fully decayed.
    #[inline(always)]
    fn reset_after(&self, v: &View, busy: bool) -> u64 {
        let to_end = v.lead + self.window - v.offset;
        let units = if busy {
            to_end + self.window
        } else if v.prev > 0 {
            to_end
        } else {
            0
        };
        self.units_to_nanos(units)
    }

    /// Units to wait until `cost` would fit, given a denial in view `v`.
    fn retry_units(&self, v: &View, cost: u64) -> u64 {
        let w = self.window;
        // Same window: the previous window's weight falls as x grows.
        if v.cur + cost <= self.limit && v.prev > 0 {
            let room = (self.limit - v.cur - cost) * w;
            let x = w - (room / v.prev).min(w);
            if x < w {
                return x - v.offset;
            }
        }
        // Next window: today's count becomes the previous one.
        let fits = ((self.limit - cost) * w).checked_div(v.cur).unwrap_or(w);
        let x = w - fits.min(w);
        (w - v.offset) + x
    }

    /// Decides a request of `cost` at `now` (ns) against `state` (`None` for
    /// a key with no state). Returns the decision and, if admitted, the new
    /// state to store.
    #[inline(always)]
    pub fn check(&self, state: Option<u64>, now: u64, cost: u64) -> Outcome {
        let t = now >> self.shift;
        if let Some(s) = state {
            // The window index or one more (checked below), without the
            // exact division's shift and range test.
            let epoch = self.per_window.estimate(t);
            // Subtracting the packed epoch (as `s + epoch·(−2^2C)`, an add
            // that needs no copy of `s`) leaves the counts iff the stored
            // epoch is `epoch mod 2^E`; a state `k` windows behind leaves
            // `−k·2^2C` plus its counts, one `k` ahead `k·2^2C` plus them.
            // So `cur` overflows its `C` bits unless the epochs match.
            let counts = s.wrapping_add(epoch.wrapping_mul(self.minus_epoch_one));
            let cur = counts >> self.count_bits;
            // `W − x`, in `[1, W]`, if `epoch` is right; in `(W, 2W]` if it
            // is one too many. Both lie below 2^33, so the wrapping
            // arithmetic yields them exactly for every `t`.
            let rest = (epoch + 1).wrapping_mul(self.window).wrapping_sub(t);
            // Fast path: a state from this very window (a hot key).
            // (`fast_cur_end` is 0 for `W = 1`, where the estimate means
            // nothing: always the general way.)
            if cur < self.fast_cur_end && rest <= self.window {
                let v = View {
                    epoch,
                    offset: self.window - rest,
                    cur,
                    prev: counts & self.count_mask,
                    lead: 0,
                };
                // An admitted `cur + cost` is at most `L`, so it fits its
                // field and the epoch is unchanged: this is
                // `pack(epoch, cur + cost, prev)`.
                return self.decide(v, state, t, cost, |_| s + cost * self.cur_one);
            }
            // A state from the window before or older: the usual case under
            // many keys, each seen now and then. Read here with the same
            // estimate, it skips the general way's exact division and its
            // branches on the state's age: about 4% off such a check at 1M
            // keys (`random_keys compare`). A state ahead of `t` (another
            // thread read a later clock) takes the general way.
            if rest.wrapping_sub(1) < self.quick_window
                && counts.wrapping_sub(self.epoch_one) >= self.ahead_span
            {
                // One window behind, `counts + 2^2C` is its counts, and its
                // `cur` (the low `C` bits of `cur` here) is now `prev`; any
                // other age has expired.
                let older = counts.wrapping_add(self.epoch_one);
                let prev = if older < self.epoch_one {
                    cur & self.count_mask
                } else {
                    0
                };
                // `s − counts` is the packed epoch, so this is
                // `pack(epoch, cur, prev)` without shifts.
                let packed_epoch = s.wrapping_sub(counts);
                let v = View {
                    epoch,
                    offset: self.window - rest,
                    cur: 0,
                    prev,
                    lead: 0,
                };
                return self.decide(v, state, t, cost, |cur| {
                    packed_epoch + cur * self.cur_one + prev
                });
            }
        }
        let v = self.view_at(state, t);
        self.decide(v, state, t, cost, |cur| self.pack(v.epoch, cur, v.prev))
    }

    /// Decides `cost` in view `v` (of `state` at `t`, in units); `pack`
    /// makes the state for the new current count.
    #[inline(always)]
    fn decide(
        &self,
        v: View,
        state: Option<u64>,
        t: u64,
        cost: u64,
        pack: impl FnOnce(u64) -> u64,
    ) -> Outcome {
        let used = self.used(&v);
        // `used < 2^57` (counts below 2^24, `W` below 2^32) and, with
        // `cost < 2^31`, `cost · W < 2^63`: the sum cannot overflow. Larger
        // costs exceed `MAX_LIMIT`, so this admits exactly what
        // `cost ≤ L && used + cost·W ≤ L·W` does, and a constant cost (the
        // usual 1) needs no test at all.
        if cost < 1 << 31 && used + cost * self.window <= self.cap {
            let after = used + cost * self.window;
            // `cur + cost` cannot overflow (both are below 2^C), and is
            // positive iff either is.
            let cur = v.cur + cost;
            let reset = self.reset_after(&v, cost > 0 || v.cur > 0);
            Outcome {
                decision: Decision::allow(self.limit, self.cap - after, self.window, reset),
                state: Some(pack(cur)),
            }
        } else {
            Outcome::unchanged(self.refuse(state, t, cost))
        }
    }

    /// The denial for `cost` at `t` (units): kept out of line, the admit
    /// path is the hot one. It reads the state again rather than take the
    /// admit path's view, which would then have to be built in memory first.
    #[cold]
    #[inline(never)]
    fn refuse(&self, state: Option<u64>, t: u64, cost: u64) -> Decision {
        let v = self.view_at(state, t);
        let remaining = (self.cap.saturating_sub(self.used(&v)), self.window);
        let reset = self.reset_after(&v, v.cur > 0);
        if cost > self.limit {
            return Decision::never(self.limit, remaining, reset);
        }
        // The sub-unit part of `now` already elapsed is not subtracted: at
        // most 2^shift ns late, never early.
        let retry = self.units_to_nanos(v.lead + self.retry_units(&v, cost));
        Decision::deny(self.limit, remaining, reset, retry)
    }

    /// Gives back `cost` charged earlier (used to undo a charge when a later
    /// rule of the same request refuses). Returns the new state.
    pub fn refund(&self, state: u64, now: u64, cost: u64) -> u64 {
        let v = self.view(Some(state), now);
        self.pack(
            v.epoch,
            v.cur.saturating_sub(cost),
            // If the window rolled over since the charge, it sits in `prev`.
            if v.cur == 0 {
                v.prev.saturating_sub(cost)
            } else {
                v.prev
            },
        )
    }

    /// How much the state still matters: the estimate scaled by `W`; 0 once
    /// both windows have passed (the entry carries no information).
    pub fn heat(&self, state: u64, now: u64) -> u64 {
        self.used(&self.view(Some(state), now))
    }
}

/// A state read for one instant: the window it counts in, the offset into
/// it, and the counts that apply there.
#[derive(Clone, Copy)]
struct View {
    epoch: u64,
    offset: u64,
    cur: u64,
    prev: u64,
    /// Units from the caller's `now` to the instant the view describes: 0,
    /// except for a stale caller judged at the start of a later window.
    lead: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn sw(limit: u64, secs: u64) -> SlidingWindow {
        SlidingWindow::new(limit, Duration::from_secs(secs)).unwrap()
    }

    #[test]
    fn admits_limit_per_window_then_weights_previous() {
        let s = sw(10, 10);
        let mut state = None;
        for i in 0..10 {
            let o = s.check(state, 0, 1);
            assert!(o.decision.is_allowed(), "request {i}");
            assert_eq!(o.decision.remaining(), 9 - i);
            state = o.state;
        }
        let denied = s.check(state, 0, 1);
        assert!(denied.decision.is_denied());
        // At the start of the next window the previous 10 still weigh 10.
        assert!(s.check(state, 10 * SEC, 1).decision.is_denied());
        // Half-way through, they weigh 5.
        let o = s.check(state, 15 * SEC, 5);
        assert!(o.decision.is_allowed());
        assert_eq!(o.decision.remaining(), 0);
        // Two windows later nothing is left.
        assert!(s.check(state, 20 * SEC, 10).decision.is_allowed());
    }

    #[test]
    fn retry_after_is_exact() {
        let s = sw(10, 10);
        let mut state = None;
        for _ in 0..10 {
            state = s.check(state, 0, 1).state;
        }
        let d = s.check(state, 0, 1).decision;
        // Admitted once prev·(W−x)/W ≤ 9, i.e. at x = 1 s into the next window.
        assert_eq!(d.retry_after(), Some(Duration::from_secs(11)));
        assert!(s.check(state, 11 * SEC - 1, 1).decision.is_denied());
        assert!(s.check(state, 11 * SEC, 1).decision.is_allowed());
    }

    #[test]
    fn cost_above_limit_is_never_admitted() {
        let s = sw(10, 1);
        let o = s.check(None, 0, 11);
        assert!(o.decision.exceeds_limit());
        assert!(o.state.is_none());
    }

    #[test]
    fn refund_undoes_charge_in_same_and_next_window() {
        let s = sw(10, 10);
        let st = s.check(None, 0, 3).state.unwrap();
        let back = s.refund(st, SEC, 3);
        assert_eq!(s.heat(back, SEC), 0);
        let back = s.refund(st, 11 * SEC, 3);
        assert_eq!(s.heat(back, 11 * SEC), 0);
    }

    #[test]
    fn a_timestamp_up_to_a_second_stale_never_resets_short_windows() {
        let s = SlidingWindow::new(5, Duration::from_micros(1)).unwrap();
        assert_eq!(s.max_ahead(), 1_000_000);
        let st = s.check(None, 10 * SEC, 5).state;
        let stale = s.check(st, 10 * SEC - 999_000_000, 1);
        assert!(
            stale.decision.is_denied(),
            "counts kept for a 0.999 s stale caller"
        );
    }

    #[test]
    fn state_from_a_later_window_is_not_reset() {
        let s = sw(2, 1);
        let st = s.check(None, 5 * SEC, 2).state.unwrap();
        // A thread with a stale timestamp from the previous window.
        let stale = 5 * SEC - SEC / 2;
        let d = s.check(Some(st), stale, 1).decision;
        assert!(d.is_denied());
        // Its wait counts from its own clock reading: through the rest of
        // its window, then as anyone in window 5 would wait (until x = 1/2
        // of window 6, where the 2 admitted weigh 1).
        let wait = d.retry_after().unwrap().as_nanos() as u64;
        assert_eq!(wait, SEC / 2 + SEC + SEC / 2);
        assert!(s.check(Some(st), stale + wait, 1).decision.is_allowed());
        assert!(s.check(Some(st), stale + wait - 1, 1).decision.is_denied());
    }

    #[test]
    fn long_idle_state_is_expired_not_ahead() {
        // Large limit: the shortest epoch (16 bits).
        let s = SlidingWindow::new(MAX_LIMIT, Duration::from_secs(1)).unwrap();
        let full = s.check(None, 0, MAX_LIMIT).state;
        for idle in [2, 3, 1 << 14, (1 << 15) + 7, (1 << 16) - 4] {
            let now = idle * SEC;
            let d = s.check(full, now, MAX_LIMIT).decision;
            assert!(d.is_allowed(), "idle {idle} windows");
        }
        // Within max_ahead of a wrap the old counts are (documented) misread.
        assert_eq!(s.max_ahead(), MIN_AHEAD_WINDOWS);
        assert!(s.check(full, ((1 << 16) - 1) * SEC, 1).decision.is_denied());
    }

    #[test]
    fn long_windows_are_rounded_to_whole_units() {
        let w = Duration::from_nanos((1 << 32) + 1);
        let s = SlidingWindow::new(100, w).unwrap();
        assert_eq!(s.window(), Duration::from_nanos(1 << 32));
        let s = SlidingWindow::new(100, Duration::from_secs(60)).unwrap();
        assert_eq!(
            s.window(),
            Duration::from_secs(60),
            "whole seconds are exact"
        );
    }

    #[test]
    fn long_windows_use_coarser_units() {
        let s = SlidingWindow::new(100, Duration::from_secs(3600)).unwrap();
        assert!(s.shift > 0);
        assert!(s.window < 1 << 32);
        let o = s.check(None, 7200 * SEC + 5, 100);
        assert!(o.decision.is_allowed());
        assert!(s.check(o.state, 7200 * SEC + 6, 1).decision.is_denied());
    }

    /// The algorithm written the plain way (exact `/`, one view for every
    /// case), as it stood before the fast path: `check` must match it field
    /// for field.
    mod reference {
        use super::*;

        pub(super) struct View {
            pub(super) epoch: u64,
            pub(super) offset: u64,
            pub(super) cur: u64,
            pub(super) prev: u64,
            pub(super) lead: u64,
        }

        pub(super) fn view(a: &SlidingWindow, state: Option<u64>, now: u64) -> View {
            let t = now >> a.shift;
            let epoch = t / a.window;
            let offset = t - epoch * a.window;
            let fresh = View {
                epoch,
                offset,
                cur: 0,
                prev: 0,
                lead: 0,
            };
            let Some(s) = state else {
                return fresh;
            };
            let stored = s >> (2 * a.count_bits);
            let cur = (s >> a.count_bits) & a.count_mask;
            let prev = s & a.count_mask;
            let behind = epoch.wrapping_sub(stored) & a.epoch_mask;
            if behind == 0 {
                View { cur, prev, ..fresh }
            } else if behind == 1 {
                View { prev: cur, ..fresh }
            } else if behind > a.epoch_mask - a.max_ahead {
                let ahead = a.epoch_mask + 1 - behind;
                View {
                    epoch: epoch.wrapping_add(ahead),
                    offset: 0,
                    cur,
                    prev,
                    lead: ahead * a.window - offset,
                }
            } else {
                fresh
            }
        }

        fn used(a: &SlidingWindow, v: &View) -> u64 {
            v.cur * a.window + v.prev * (a.window - v.offset)
        }

        fn reset_after(a: &SlidingWindow, v: &View, cur: u64) -> u64 {
            let to_end = v.lead + a.window - v.offset;
            let units = if cur > 0 {
                to_end + a.window
            } else if v.prev > 0 {
                to_end
            } else {
                0
            };
            units << a.shift
        }

        fn retry_units(a: &SlidingWindow, v: &View, cost: u64) -> u64 {
            let w = a.window;
            if v.cur + cost <= a.limit && v.prev > 0 {
                let room = (a.limit - v.cur - cost) * w;
                let x = w - (room / v.prev).min(w);
                if x < w {
                    return x - v.offset;
                }
            }
            let fits = ((a.limit - cost) * w).checked_div(v.cur).unwrap_or(w);
            let x = w - fits.min(w);
            (w - v.offset) + x
        }

        /// `(allowed, limit, room, unit, reset_after, retry_after)`, as
        /// [`Decision::parts`].
        pub(super) type Parts = (bool, u64, u64, u64, u64, u64);

        /// The decision's parts and the new state.
        pub(super) fn check(
            a: &SlidingWindow,
            state: Option<u64>,
            now: u64,
            cost: u64,
        ) -> (Parts, Option<u64>) {
            let v = view(a, state, now);
            let cap = a.limit * a.window;
            let used = used(a, &v);
            if cost <= a.limit && used + cost * a.window <= cap {
                let cur = v.cur + cost;
                let decision = (
                    true,
                    a.limit,
                    cap - used - cost * a.window,
                    a.window,
                    reset_after(a, &v, cur),
                    0,
                );
                return (decision, Some(a.pack(v.epoch, cur, v.prev)));
            }
            let room = cap.saturating_sub(used);
            let reset = reset_after(a, &v, v.cur);
            let retry = if cost > a.limit {
                u64::MAX
            } else {
                ((v.lead + retry_units(a, &v, cost)) << a.shift).max(1)
            };
            ((false, a.limit, room, a.window, reset, retry), None)
        }
    }

    fn same_as_reference(a: &SlidingWindow, state: Option<u64>, now: u64, cost: u64) {
        let o = a.check(state, now, cost);
        let want = reference::check(a, state, now, cost);
        assert_eq!(
            (o.decision.parts(), o.state),
            want,
            "limit {} window {:?} state {state:?} now {now} cost {cost}",
            a.limit(),
            a.window()
        );
    }

    /// Times and states around every boundary the fast path cares about:
    /// window edges (where the reciprocal's estimate can be one too many),
    /// the end of the clock, and states from this window, the previous
    /// ones, a little ahead, far ahead (wrapped) and garbage.
    #[test]
    fn matches_reference_at_the_edges() {
        let windows = [
            1u64,
            2,
            3,
            5,
            7,
            64,
            1000,
            999_999_937,
            1_000_000_000,
            (1 << 32) - 1,
            1 << 32,
            (1 << 32) + 1,
            60_000_000_000,
            MAX_WINDOW_NANOS - 1,
        ];
        for window in windows {
            for limit in [1, 2, 3, 10, 254, 255, 1 << 20, MAX_LIMIT] {
                let a = match SlidingWindow::new(limit, Duration::from_nanos(window)) {
                    Ok(a) => a,
                    Err(ConfigError::WindowTooShort { .. }) => continue,
                    Err(e) => panic!("{e}"),
                };
                let wn = a.window_nanos;
                let mut times = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 62, (1 << 62) - 1];
                for q in [1u64, 2, 7, 1 << 20, u64::MAX / wn - 1, u64::MAX / wn] {
                    let start = q.saturating_mul(wn);
                    for d in [0, 1, wn / 2, wn - 1] {
                        times.push(start.saturating_add(d));
                        times.push(start.saturating_sub(d));
                    }
                }
                for &now in &times {
                    let epoch = (now >> a.shift) / a.window;
                    let mut states = vec![None, Some(0), Some(u64::MAX), Some(a.epoch_mask)];
                    for back in [0, 1, 2, a.max_ahead, a.max_ahead + 1] {
                        for e in [epoch.wrapping_sub(back), epoch.wrapping_add(back)] {
                            for (cur, prev) in
                                [(0, 0), (1, 0), (0, 1), (limit, limit), (a.count_mask, 3)]
                            {
                                states.push(Some(a.pack(e, cur, prev)));
                            }
                        }
                    }
                    for &state in &states {
                        for cost in [0, 1, 2, limit, limit + 1, 1 << 31, 1 << 35, u64::MAX] {
                            same_as_reference(&a, state, now, cost);
                        }
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// Random quotas, times, states near the current window and costs.
        #[test]
        fn matches_reference(
            limit_bits in 0u32..24,
            limit_frac in proptest::prelude::any::<u64>(),
            window_bits in 0u32..59,
            window_frac in proptest::prelude::any::<u64>(),
            now in proptest::prelude::any::<u64>(),
            time_bits in 0u32..64,
            back in -5i64..5,
            cur_frac in proptest::prelude::any::<u64>(),
            prev_frac in proptest::prelude::any::<u64>(),
            raw in proptest::prelude::any::<u64>(),
            kind in 0u8..8,
            cost_kind in 0u8..6,
        ) {
            let limit = ((1u64 << limit_bits) + limit_frac % (1u64 << limit_bits)).min(MAX_LIMIT);
            let window = (1u64 << window_bits) + window_frac % (1u64 << window_bits);
            let a = match SlidingWindow::new(limit, Duration::from_nanos(window)) {
                Ok(a) => a,
                Err(ConfigError::WindowTooShort { min_nanos, .. }) => {
                    proptest::prop_assert!(window < min_nanos);
                    return Ok(());
                }
                Err(e) => panic!("{e}"),
            };
            // Times of every magnitude, not only near the end of the clock.
            let now = if time_bits == 63 { now } else { now >> (63 - time_bits) };
            let epoch = (now >> a.shift) / a.window;
            let state = match kind {
                0 => None,
                1 => Some(raw),
                _ => {
                    let e = epoch.wrapping_add_signed(back);
                    let cur = cur_frac % (a.count_mask + 1);
                    let prev = prev_frac % (a.count_mask + 1);
                    Some(a.pack(e, cur.min(if kind < 5 { limit } else { cur }), prev))
                }
            };
            let cost = match cost_kind {
                0 => 0,
                1 | 2 => 1,
                3 => 1 + cur_frac % limit,
                4 => limit + 1,
                // Of every magnitude.
                _ => raw >> (cur_frac % 64),
            };
            same_as_reference(&a, state, now, cost);
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = SlidingWindow::new(0, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("`limit`"));
        let e = SlidingWindow::new(1, Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("`window`"));
        let e = SlidingWindow::new(1, Duration::from_secs(u64::MAX)).unwrap_err();
        assert!(e.to_string().contains("`window`"));
        let e = SlidingWindow::new(MAX_LIMIT + 1, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("`limit`"));
        assert!(SlidingWindow::new(MAX_LIMIT, Duration::from_secs(1)).is_ok());
        let e = SlidingWindow::new(MAX_LIMIT, Duration::from_nanos(2)).unwrap_err();
        assert_eq!(
            e,
            ConfigError::WindowTooShort {
                window_nanos: 2,
                limit: MAX_LIMIT,
                min_nanos: 61_036
            }
        );
        assert!(e.to_string().contains("`window`"));
    }

    /// The shortest window each limit allows: a second's worth of windows
    /// fits in a quarter of the epoch range, and no shorter one is taken.
    #[test]
    fn the_shortest_window_still_holds_a_second_of_staleness() {
        for limit in [
            1,
            254,
            (1 << 16) - 2,
            (1 << 16) - 1,
            (1 << 20) - 2,
            MAX_LIMIT,
        ] {
            let min = match SlidingWindow::new(limit, Duration::from_nanos(1)) {
                Ok(_) => 1,
                Err(ConfigError::WindowTooShort { min_nanos, .. }) => min_nanos,
                Err(e) => panic!("{e}"),
            };
            assert!(limit < (1 << 16) - 1 || min > 1, "limit {limit}");
            let s = SlidingWindow::new(limit, Duration::from_nanos(min)).unwrap();
            assert!(s.max_ahead() * min >= SEC, "limit {limit}");
            if min > 1 {
                assert!(SlidingWindow::new(limit, Duration::from_nanos(min - 1)).is_err());
            }
        }
    }

    /// The fuzzer's finding: a limit of about 16M over windows of 1-2 ns
    /// (a 16-bit epoch, so three quarters of the range behind is 49,152
    /// windows), and callers up to 65 µs stale. A state written by a thread
    /// with a later reading looked expired to the stale caller, which reset
    /// it: 30.3M admitted where the bound was 15.66M. Such windows are now
    /// refused; at the shortest allowed one, a caller a whole second stale
    /// keeps the newer counts.
    #[test]
    fn a_stale_caller_never_overwrites_newer_state() {
        for window in [1, 2] {
            let e = SlidingWindow::new(MAX_LIMIT - 3, Duration::from_nanos(window));
            assert!(
                matches!(e, Err(ConfigError::WindowTooShort { .. })),
                "{e:?}"
            );
        }
        let s = SlidingWindow::new(MAX_LIMIT, Duration::from_nanos(61_036)).unwrap();
        let now = 1_000 * SEC;
        let full = s.check(None, now, MAX_LIMIT).state;
        for stale in [1, 61_036, SEC / 2, SEC - 61_036, SEC] {
            let d = s.check(full, now - stale, 1).decision;
            assert!(d.is_denied(), "{stale} ns stale");
        }
    }
}
