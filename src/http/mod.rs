//! The Tower layer and the connection gate (feature `tower`).
//!
//! * The guard: [`Guard`] is the shared state (rules, trusted proxies,
//!   lists, bans, counters), built once; [`Guard::layer`] makes the Tower
//!   layer that axum's `Router::layer` and tonic's `Server::builder().layer`
//!   accept. A [`Rule`] is one limit over a request key (client address,
//!   prefix, route, method, header, global, or your own), enforced or in
//!   shadow mode.
//! * Who sent a request: [`ClientIpConfig`] says which address a request is
//!   keyed on, believing forwarding headers only from trusted proxies; a
//!   [`Fingerprint`] sums up how a request is built, [`ua_family`] which
//!   client its `User-Agent` claims and [`anomalies`] what it lacks for that
//!   claim; a [`WireHead`] is the first head as it came off the wire, read by
//!   a [`HeadScanner`]; a [`SessionCookie`] is an opt-in signed cookie,
//!   bound to the client's network, that browsers return and most bots do
//!   not.
//! * [`Scoring`]: client scores from how requests look and how clients
//!   behave, attack detection ([`Detection`], [`Event`]) and the
//!   [`Ladder`] of actions: throttle, [`Challenge`], ban.
//! * [`Overload`]: an adaptive concurrency limit around the service that
//!   sheds the lowest [`Priority`] first ([`Criticality`] and the client's
//!   standing).
//! * The connection gate: a [`Gate`] refuses connections at accept, before
//!   a byte is read, holds admitted ones to their [`Deadlines`], and hands
//!   each connection's first request head on ([`GateConnectInfo`]).
//! * Metrics: [`Guard::prometheus`] and [`Gate::prometheus`] write the
//!   counters in the Prometheus text format; under feature `axum`,
//!   `metrics_handler` serves them; under feature `metrics`,
//!   `MetricsBridge` publishes the same values through the `metrics`
//!   facade; with `serde`, `json_handler` serves the [`Snapshot`] as
//!   JSON.
//! * The console (feature `console`): `Console` serves a live page of
//!   the guard's state to operators, with an unban button.
//!
//! Refusals are answered at once, without calling the service: 429 with
//! `Retry-After`, `RateLimit` and `RateLimit-Policy` headers; 403 for
//! blocked clients; 503 with `Retry-After` when overloaded; for gRPC
//! requests the matching gRPC status (`RESOURCE_EXHAUSTED`,
//! `PERMISSION_DENIED`, `UNAVAILABLE`). A blocked client's refusal is
//! held for a while first (the [`Tarpit`]), so that a flood tool waiting
//! on its answers slows down.

#[cfg(feature = "console")]
mod console;
pub(crate) mod gate;
pub(crate) mod guard;
pub(crate) mod identify;
mod metrics;
mod millis;
pub(crate) mod overload;
pub(crate) mod scoring;
mod service;
pub(crate) mod tarpit;

#[doc(hidden)]
pub mod fuzzing;

// Who sent the request and how it was built.
pub use identify::{
    Anomalies, Anomaly, ClientIp, ClientIpConfig, Cluster, Fingerprint, ForwardedHeader,
    GateConnectInfo, HeadScanner, IpSource, NameCasing, Os, PeerAddr, SameSite, Scan,
    SessionCookie, SessionStats, UaFamily, WireHead, anomalies, ua_family,
};
// The guard, its rules and its decisions.
pub use guard::{
    DEFAULT_MAX_BANS, Guard, GuardBuilder, GuardDecision, GuardStats, MissingPeer, Refusal,
    RefusalInfo, RefusalKind, RefusalResponse, ReloadError, Rule, RuleStats, SharedBanStats,
    Snapshot,
};
// The seams a fleet plugs into: sharing bans (the Redis one is in
// `redis/bans/`) and counting rules (`redis/rules.rs`).
#[cfg_attr(not(feature = "redis"), allow(unused_imports))]
pub(crate) use guard::{
    fleet::{BanFleet, BanTarget, FleetLink, GuardHandle, Joined},
    shared_rule::{RuleCounter, RuleFleet},
};
// Scoring, detection and the ladder.
pub use scoring::{
    Action, AttackCause, Challenge, ChallengePage, Detection, DetectionSnapshot, Event, Ladder,
    Offender, ScoreReport, Scoring, ScoringStats, Share, Signal, Weights,
};
// Overload protection.
pub use overload::{
    Aimd, Criticality, DEFAULT_LATENCY_FLOOR, DEFAULT_ROUTE_IDLE, Gradient2, LimitAlgorithm,
    LimitStats, MAX_ROUTE_LIMITS, Overload, Priority, TokioClock, WaitingRoomStats,
};
// The Tower layer and its refusals.
pub use service::{GuardLayer, GuardService, RefusalBody, ResponseFuture};
// The connection gate.
#[cfg(feature = "tonic")]
pub use gate::GatedIncoming;
pub use gate::{
    AcceptVerdict, Deadlines, Gate, GateBuilder, GateStats, GatedListener, GatedStream,
};
#[cfg(feature = "axum")]
pub use gate::{AxumListener, HEADER_READ_TIMEOUT, Serve, WithGracefulShutdown, serve};
// The live console.
#[cfg(feature = "console")]
#[cfg_attr(docsrs, doc(cfg(feature = "console")))]
pub use console::{Console, EventLog};
// Shared by the guard and the gate.
pub use metrics::PROMETHEUS_CONTENT_TYPE;
#[cfg(feature = "metrics")]
pub use metrics::{MetricsBridge, PublishTask};
#[cfg(all(feature = "axum", feature = "serde"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "axum", feature = "serde"))))]
pub use metrics::{json_handler, json_handler_with_gate};
#[cfg(feature = "axum")]
pub use metrics::{metrics_handler, metrics_handler_with_gate};
pub use tarpit::{Tarpit, TarpitStats};
