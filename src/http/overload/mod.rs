//! Overload protection: an adaptive concurrency limit around the inner
//! service that sheds the least trusted requests first.
//!
//! The limit follows the service's latency (Netflix's concurrency-limits:
//! [`Gradient2`] or [`Aimd`]): while answers come as fast as usual it
//! grows, when they slow down it shrinks, so requests wait in the service
//! only as long as it can serve them. A request that finds the service at
//! its limit is refused at once (503 with `Retry-After`, gRPC
//! `UNAVAILABLE`) instead of queueing, unless it outranks the traffic the
//! limit protects: each priority may fill a different share of the limit,
//! so sheddable and suspicious requests go first and known-good clients'
//! critical requests last.
//!
//! `config` is what the guard is built with, `algorithm` how a limit
//! adapts, `limit` one adaptive limit, `priority` a request's rank,
//! `shedder` the guard's limits and admission, `waiting` the waiting room.

pub(crate) mod algorithm;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod limit;
pub(crate) mod priority;
pub(crate) mod shedder;
pub(crate) mod waiting;

pub use algorithm::{Aimd, Gradient2, LimitAlgorithm};
pub use clock::TokioClock;
pub use config::{DEFAULT_LATENCY_FLOOR, DEFAULT_ROUTE_IDLE, MAX_ROUTE_LIMITS, Overload};
pub use limit::{LimitStats, WaitingRoomStats};
pub use priority::{Criticality, Priority};
