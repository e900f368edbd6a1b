//! Limits shared by a fleet through Redis (feature `redis`).

mod script;

/// The test server the integration tests use too.
#[cfg(test)]
#[path = "../../tests/common/redis_server.rs"]
mod redis_server;
