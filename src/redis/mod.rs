//! Limits shared by a fleet through Redis (feature `redis`).

mod script;
