//! Client scoring: each request's score from how it looks and how its
//! client behaves, attack detection, and the ladder of actions (throttle,
//! challenge, ban) with the verdict the guard applies.

pub(crate) mod assessment;
pub(crate) mod challenge;
pub(crate) mod config;
pub(crate) mod detect;
#[cfg(feature = "serde")]
mod json;
pub(crate) mod ladder;
pub(crate) mod log;
pub(crate) mod profile;
pub(crate) mod scorer;
pub(crate) mod stats;
pub(crate) mod tuning;
pub(crate) mod verdict;

pub use challenge::{Challenge, ChallengePage};
pub use config::Scoring;
pub use detect::{AttackCause, Detection, DetectionSnapshot, Event, Share};
pub use ladder::{Action, Ladder, ScoreReport, Signal, Weights};
pub use scorer::Offender;
pub use stats::ScoringStats;
