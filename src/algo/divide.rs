//! Division by a divisor fixed at build time, as a multiply and a shift.
//!
//! A 64-bit `div` is the slowest instruction on the admit path (tens of
//! cycles); every limiter divides by the same window or interval on every
//! check, so the reciprocal is computed once. With `S = 64 + k`,
//! `k = max(⌈log2 d⌉ − 2, 0)` and `M = ⌈2^S / d⌉`, `⌊t·M / 2^S⌋ = ⌊t / d⌋` for every
//! `t < 2^62`: writing `M·d = 2^S + e` with `0 ≤ e < d`, the error term
//! `t·e / (d·2^S)` stays below `1/d` because `t·d < 2^S`. Larger `t` (a
//! clock 146 years past its origin) falls back to `div`.
//!
//! [`Divider::estimate`] is cheaper still, one multiply and no test, for
//! callers that can check its answer: with `R = ⌈2^64 / d⌉` (`d ≥ 2`),
//! `R·d = 2^64 + e` with `0 ≤ e < d`, so
//! `t·R / 2^64 = t/d + t·e / (d·2^64)` where the error term lies in
//! `[0, 1)` for every `t < 2^64`: `⌊t·R / 2^64⌋` is `⌊t / d⌋` or one more.

/// `t / d` for a fixed `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Divider {
    d: u64,
    magic: u64,
    /// `k = S − 64`.
    shift: u32,
    /// Numerators below this take the multiply; 0 when `d = 1` (whose
    /// `M = 2^64` does not fit), so every numerator takes `div` then.
    fast_below: u64,
    /// `R = ⌈2^64 / d⌉` for [`Divider::estimate`]; 0 when `d = 1`.
    rough: u64,
}

const LIMIT: u64 = 1 << 62;

impl Divider {
    /// A divider for `d ≥ 1`.
    pub(crate) fn new(d: u64) -> Self {
        assert!(d > 0, "Divider::new(0)");
        let k = (64 - (d - 1).leading_zeros()).saturating_sub(2);
        let magic = (1u128 << (64 + k)).div_ceil(u128::from(d));
        Divider {
            d,
            // Below 2^64 for every d > 1.
            magic: magic.min(u128::from(u64::MAX)) as u64,
            shift: k,
            fast_below: if d == 1 { 0 } else { LIMIT },
            // At most 2^63 for d ≥ 2.
            rough: if d == 1 {
                0
            } else {
                (1u128 << 64).div_ceil(u128::from(d)) as u64
            },
        }
    }

    /// `⌊t / d⌋` or `⌊t / d⌋ + 1`, for any `t`, if `d ≥ 2` (see the module
    /// docs); meaningless for `d = 1`. The caller checks which.
    #[inline(always)]
    pub(crate) fn estimate(&self, t: u64) -> u64 {
        ((u128::from(t) * u128::from(self.rough)) >> 64) as u64
    }

    /// `⌊t / d⌋`.
    #[inline(always)]
    pub(crate) fn div(&self, t: u64) -> u64 {
        if t < self.fast_below {
            let high = ((u128::from(t) * u128::from(self.magic)) >> 64) as u64;
            high >> self.shift
        } else {
            self.div_slow(t)
        }
    }

    /// The `div` fallback, out of line so the multiply is the fall-through.
    #[cold]
    #[inline(never)]
    fn div_slow(&self, t: u64) -> u64 {
        t / self.d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edges() {
        for d in [
            1u64,
            2,
            3,
            4,
            5,
            7,
            1000,
            1 << 31,
            (1 << 32) - 1,
            1 << 40,
            LIMIT - 1,
        ] {
            let div = Divider::new(d);
            for t in [0, 1, d - 1, d, d + 1, 2 * d - 1, LIMIT - 1, LIMIT, u64::MAX] {
                assert_eq!(div.div(t), t / d, "{t} / {d}");
            }
        }
    }

    #[test]
    fn estimate_edges() {
        for d in [
            2u64,
            3,
            4,
            5,
            7,
            1000,
            1_000_000_000,
            (1 << 32) - 1,
            1 << 40,
            u64::MAX,
        ] {
            let div = Divider::new(d);
            for t in [
                0,
                1,
                d - 1,
                d,
                d.saturating_add(1),
                d.saturating_mul(2) - 1,
                LIMIT,
                u64::MAX - d,
                u64::MAX - 1,
                u64::MAX,
            ] {
                let q = t / d;
                let e = div.estimate(t);
                assert!(e == q || e == q + 1, "{t} / {d}: {e}");
            }
        }
    }

    proptest! {
        #[test]
        fn estimate_is_exact_or_one_more(d in 2u64..u64::MAX, t in 0u64..u64::MAX) {
            let (q, e) = (t / d, Divider::new(d).estimate(t));
            prop_assert!(e == q || e == q + 1);
        }

        #[test]
        fn estimate_for_window_sized_divisors(d in 2u64..(1 << 33), t in 0u64..u64::MAX) {
            let (q, e) = (t / d, Divider::new(d).estimate(t));
            prop_assert!(e == q || e == q + 1);
        }

        #[test]
        fn matches_hardware_division(d in 1u64..u64::MAX, t in 0u64..u64::MAX) {
            prop_assert_eq!(Divider::new(d).div(t), t / d);
        }

        #[test]
        fn matches_for_window_sized_divisors(d in 1u64..(1 << 33), t in 0u64..(1 << 62)) {
            prop_assert_eq!(Divider::new(d).div(t), t / d);
        }
    }
}
