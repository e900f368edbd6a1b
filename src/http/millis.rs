//! Milliseconds on Tokio's clock, for times kept in atomic integers (the
//! gate's connection phases, overload's route idleness).

use tokio::time::Instant;

/// Milliseconds from `origin` to `now` (zero before it). Whole seconds and
/// milliseconds: no 128-bit arithmetic on a request's way through.
pub(crate) fn millis_since(origin: Instant, now: Instant) -> u64 {
    let d = now.saturating_duration_since(origin);
    d.as_secs()
        .saturating_mul(1_000)
        .saturating_add(u64::from(d.subsec_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn whole_milliseconds_and_zero_before_the_origin() {
        let o = Instant::now();
        assert_eq!(millis_since(o, o + Duration::from_micros(2_999)), 2);
        assert_eq!(
            millis_since(o, o + Duration::from_secs(5) + Duration::from_millis(7)),
            5_007
        );
        assert_eq!(millis_since(o + Duration::from_secs(1), o), 0);
    }
}
