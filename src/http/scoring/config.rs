//! Scoring's configuration: weights, the ladder, detection, the challenge
//! hook and how many clients are remembered.

use std::sync::Arc;
use std::time::Duration;

use super::challenge::Challenge;
use super::detect::Detection;
use super::ladder::{Ladder, Weights};

/// Client scoring and attack detection for a [`Guard`](crate::http::Guard);
/// off unless set with [`GuardBuilder::scoring`](crate::http::GuardBuilder::scoring).
///
/// ```
/// use std::time::Duration;
/// use floodguard::http::{Guard, Ladder, Scoring};
///
/// let mut ladder = Ladder::default();
/// ladder.shadow_ban = true; // watch what it would ban before letting it
/// let guard = Guard::builder()
///     .default_rules()
///     .scoring(Scoring::new().ladder(ladder).half_life(Duration::from_secs(120)))
///     .on_event(|e| eprintln!("floodguard: {e}"))
///     .build()?;
/// # let _ = guard;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use = "scoring does nothing until given to `GuardBuilder::scoring`"]
pub struct Scoring {
    pub(crate) weights: Weights,
    pub(crate) ladder: Ladder,
    pub(crate) detection: Detection,
    pub(crate) half_life: Duration,
    pub(crate) capacity: usize,
    pub(crate) challenge: Option<Arc<dyn Challenge>>,
}

impl Default for Scoring {
    fn default() -> Self {
        Scoring {
            weights: Weights::default(),
            ladder: Ladder::default(),
            detection: Detection::default(),
            half_life: Duration::from_secs(60),
            capacity: 1 << 16,
            challenge: None,
        }
    }
}

impl std::fmt::Debug for Scoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoring")
            .field("weights", &self.weights)
            .field("ladder", &self.ladder)
            .field("detection", &self.detection)
            .field("half_life", &self.half_life)
            .field("capacity", &self.capacity)
            .field("challenge", &self.challenge.is_some())
            .finish()
    }
}

impl Scoring {
    /// The defaults: [`Weights::default`], [`Ladder::default`],
    /// [`Detection::default`], a 60 s half-life, 65,536 clients (1 MiB).
    pub fn new() -> Self {
        Self::default()
    }

    /// Points per signal.
    pub fn weights(mut self, weights: Weights) -> Self {
        self.weights = weights;
        self
    }

    /// Thresholds, bans and shadow modes.
    pub fn ladder(mut self, ladder: Ladder) -> Self {
        self.ladder = ladder;
        self
    }

    /// Attack detection tuning.
    pub fn detection(mut self, detection: Detection) -> Self {
        self.detection = detection;
        self
    }

    /// How fast behaviour is forgiven: a client's stored score halves every
    /// `half_life` without news (default 60 s).
    pub fn half_life(mut self, half_life: Duration) -> Self {
        self.half_life = half_life;
        self
    }

    /// Clients (IPv4 addresses, IPv6 /64s) remembered at once; memory is 16
    /// bytes each, fixed at build (default 65,536). Networks get a quarter
    /// of that.
    pub fn capacity(mut self, clients: usize) -> Self {
        self.capacity = clients;
        self
    }

    /// The hook that challenges clients whose score reaches
    /// [`Ladder::challenge`]; without one they are throttled instead.
    pub fn challenge(mut self, hook: impl Challenge) -> Self {
        self.challenge = Some(Arc::new(hook));
        self
    }
}
