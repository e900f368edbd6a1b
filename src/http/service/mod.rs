//! The Tower layer and service, and the responses it answers refusals
//! with.

pub(crate) mod body;
pub(crate) mod layer;
pub(crate) mod refusal;

pub use body::RefusalBody;
pub use layer::{GuardLayer, GuardService, ResponseFuture};
