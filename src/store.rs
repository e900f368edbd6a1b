//! Where keyed state lives.

use crate::Timestamp;
use crate::algo::{Algorithm, Op};
use crate::decision::Decision;

/// A map from key hashes to algorithm state that applies one algorithm step
/// atomically.
///
/// The in-memory [`AtomicTable`](crate::AtomicTable) is the default; any
/// other map that keeps the contract below can take its place in a
/// [`KeyedLimiter`](crate::KeyedLimiter) ([`with_store`](crate::KeyedLimiter::with_store)),
/// with the same [`Algorithm`] parameters, so the algorithms do not change
/// with the store.
///
/// There is no Redis `Store`: the Redis-backed `SharedLimiter` (feature
/// `redis`) runs the algorithms in Lua scripts in Redis, a round trip per
/// step (or a near-cache's local share), so it is a limiter of its own,
/// not a store behind a `KeyedLimiter`. In near-cache mode
/// [`check_all`](crate::check_all) charges it together with local
/// limiters, all or none.
///
/// Contract: `apply` runs `algorithm.step(state, now, op)` on the state of
/// `key` as one atomic step, stores the new state if there is one, and
/// returns the decision. `Op::Peek` and `Op::Refund` never create an entry.
/// A store may drop entries to stay within its capacity.
pub trait Store: Send + Sync {
    /// Applies `op` for `key` at `now` and returns the decision.
    fn apply(&self, key: u64, now: Timestamp, algorithm: &Algorithm, op: Op) -> Decision;

    /// Maximum number of keys held at once.
    fn capacity(&self) -> usize;

    /// Number of keys held now (including ones whose state has expired but
    /// that were not yet replaced).
    fn occupancy(&self) -> usize;

    /// Live entries dropped to make room for a new key.
    fn evictions(&self) -> u64;
}
