//! Overload protection: an adaptive concurrency limit around the inner
//! service that sheds the least trusted requests first, with a short
//! waiting room.

pub(crate) mod shedder;
pub(crate) mod waiting;

pub use shedder::{
    Aimd, Criticality, DEFAULT_LATENCY_FLOOR, DEFAULT_ROUTE_IDLE, Gradient2, LimitAlgorithm,
    LimitStats, MAX_ROUTE_LIMITS, Overload, Priority, TokioClock, WaitingRoomStats,
};
