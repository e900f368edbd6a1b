//! Attack detection: baselines of the request rate, the service's latency,
//! the share of traffic that looks automated or misbehaves, and the share of
//! each [`Cluster`], network and route; an "under attack" state with
//! hysteresis; and, during an attack, the clusters, networks and routes
//! whose share surged.
//!
//! Requests drive it: each one is counted and offered to bounded
//! heavy-hitter sketches ([`TopK`], Space-Saving), and once per tick the
//! first request past the tick's end closes it. Nothing is judged on one
//! tick: counts are kept over a decaying window of about a second (a tick's
//! weight falls by `e` per [`Detection::window`]), every judgement needs a
//! minimum count, and a rate counts as raised only when it is both a
//! multiple of its baseline and significant against the baseline's own
//! variance. The decisions:
//!
//! * **degraded**: the service's mean latency past an absolute objective
//!   ([`Detection::latency_objective`]) and a multiple of its baseline, or
//!   overload protection shedding a steady share of requests;
//! * **surge**: the request rate raised, significantly;
//! * **suspect surge**: the rate of requests that do not look like people
//!   (automated user agents, header anomalies) raised, significantly; or a
//!   large share of the traffic refused or answered with errors, far above
//!   its baseline;
//! * an attack is a surge while the service is degraded, or a suspect
//!   surge; never volume alone while the service copes (more people
//!   arriving is not an attack), nor a slow service without more traffic
//!   (that is not calm either: overload protection and scoring treat it as
//!   trouble, but no attack is declared);
//! * it ends once neither holds for [`Detection::cooldown`]. The baselines
//!   learn whenever the traffic behaves like people, during an attack too,
//!   so a site that grows, or a crowd that stays, becomes the new normal
//!   within a bounded time (with the defaults, a tenfold step is within the
//!   margin about 25 s after the traffic turns steady, and the attack ends
//!   10 s later).
//!
//! `config` is what the guard is built with, `baseline` what detection
//! remembers, `detector` what each request adds and scoring asks, `tick`
//! the judgement every 100 ms, `events` what it reports.

mod baseline;
mod config;
mod detector;
mod events;
#[cfg(test)]
mod tests;
mod tick;

pub use config::Detection;
pub(crate) use detector::{Detector, Sighting, site};
pub use events::{AttackCause, DetectionSnapshot, Event, Share};
