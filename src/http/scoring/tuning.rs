//! What a reload may change in scoring while it runs: the weights, the
//! ladder and detection's thresholds. Scores, profiles, baselines and the
//! attack state carry on; what sizes or paces the tables (the capacity,
//! the half-life, detection's tick, window, warm-up and sketch size)
//! cannot change without a restart.

use crate::http::scoring::ladder::{Ladder, Weights};
use crate::http::scoring::scorer::Scorer;
use crate::http::{Detection, Scoring};

/// Weights and ladder, read together by one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    pub(crate) weights: Weights,
    pub(crate) ladder: Ladder,
}

/// Why a scoring change needs a restart: the field that differs.
pub(crate) fn fixed_change(now: &Scoring, next: &Scoring) -> Option<&'static str> {
    if now.capacity != next.capacity {
        return Some("scoring.capacity");
    }
    if now.half_life != next.half_life {
        return Some("scoring.half_life");
    }
    detection_fixed_change(&now.detection, &next.detection)
}

fn detection_fixed_change(now: &Detection, next: &Detection) -> Option<&'static str> {
    if now.tick != next.tick {
        Some("scoring.detection.tick")
    } else if now.window != next.window {
        Some("scoring.detection.window")
    } else if now.warmup != next.warmup {
        Some("scoring.detection.warmup")
    } else if now.top_k != next.top_k {
        Some("scoring.detection.top_k")
    } else {
        None
    }
}

impl Scorer {
    /// The ladder in force.
    pub(crate) fn ladder(&self) -> Ladder {
        self.tuning().ladder
    }

    /// Swaps `next`'s weights, ladder and detection thresholds in. The
    /// caller has checked them, and that nothing fixed changed: a reload
    /// is all or nothing, so nothing here may fail.
    pub(crate) fn retune(&self, next: &Scoring) {
        self.detector.retune(next.detection);
        self.set_tuning(Tuning {
            weights: next.weights,
            ladder: next.ladder,
        });
    }
}
