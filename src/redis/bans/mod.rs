//! Shared bans (features `tower` and `redis`): a [`Guard`](crate::http::Guard)'s
//! bans and flagged fingerprint classes, published through Redis so that
//! every instance of a fleet refuses a banned client.
//!
//! The key and message layout is in the [module docs](super#shared-bans).
//!
//! This is a fleet the guard's seam takes ([`BanFleet`], [`FleetLink`];
//! the guard owns them): [`GuardBuilder::share_bans`] gives the builder a
//! [`Setup`], which `build` joins with the guard's final clock and
//! `max_bans`. What other instances publish is applied through the
//! [`GuardHandle`] the guard hands over once it exists.
//!
//! # Tasks
//!
//! Recording a ban never waits for Redis: it puts the change in a bounded
//! queue (and counts it as dropped when the queue is full). A publisher task
//! sends the queue to Redis, through the store's breaker and timeout,
//! retrying a change until it is published or has expired. A subscriber task
//! holds its own pub/sub connection; on each (re)connection it subscribes,
//! then loads the bans and classes in force from the sets (so an instance
//! started late, or cut off for a while, catches up), then applies every
//! message from another guard. Bans load in pages of 1,000, those ending
//! last first, each applied as it comes: no reply is unbounded, however
//! many bans the fleet holds and however many instances reconnect at once.
//! A page resumes after the last entry of the one before (its score and
//! member), not at an offset, so a ban added or lifted between pages moves
//! no other past the reader; the change itself arrives as a message. A reload also lifts the bans this guard holds
//! only because Redis told it (a message or an earlier load) that are no
//! longer in the set: they were lifted while it was cut off. While Redis is
//! unreachable it retries every second at most. Both tasks end once the
//! guard is dropped.
//!
//! Everything read from Redis is parsed strictly: a message or set member
//! that does not parse, bans less than an IPv4 /8 or an IPv6 /16, or lasts
//! more than a year and a day is counted in [`SharedBanStats::rejected`] and
//! ignored.
//!
//! # Files
//!
//! * `format.rs`: the wire format, messages and set pages, signed or not;
//! * `scripts.rs`: the Lua scripts that write, lift and page the sets;
//! * `tracked.rs`: which bans a reload may lift;
//! * `seam.rs`: the guard's seam: [`Setup`], [`Starter`], [`BanSink`];
//! * `task.rs`: what the tasks share, the publisher and the subscriber;
//! * `reload.rs`: loading the sets in pages, and reconciling lifts.
//!
//! [`BanFleet`]: crate::http::BanFleet
//! [`FleetLink`]: crate::http::FleetLink
//! [`GuardBuilder::share_bans`]: crate::http::GuardBuilder::share_bans
//! [`GuardHandle`]: crate::http::GuardHandle
//! [`SharedBanStats::rejected`]: crate::http::SharedBanStats::rejected
//! [`Setup`]: seam::Setup
//! [`Starter`]: seam::Starter
//! [`BanSink`]: seam::BanSink

mod format;
mod reload;
mod scripts;
mod seam;
mod task;
mod tracked;

// What the fuzz hooks (`super::fuzzing`) drive.
pub(super) use format::{Change, decode, decode_page, encode, sign, verify};
