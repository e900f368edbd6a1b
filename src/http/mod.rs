//! The Tower layer and the connection gate (feature `tower`).
//!
//! * [`Guard`]: the shared state (rules, trusted proxies, lists, bans,
//!   counters), built once; [`Guard::layer`] makes the Tower layer that
//!   axum's `Router::layer` and tonic's `Server::builder().layer` accept.
//! * [`Rule`]: one limit over a request key (client address, prefix, route,
//!   method, header, global, or your own), enforced or in shadow mode.
//! * [`client_ip`]: which address a request is keyed on, believing
//!   forwarding headers only from trusted proxies.
//! * [`gate`]: a listener wrapper that refuses connections at accept, before
//!   a byte is read, and reads each connection's first request head as it
//!   passes ([`GateConnectInfo`], [`WireHead`]).
//! * [`fingerprint`]: how a request is built ([`Fingerprint`]), which
//!   client its `User-Agent` claims ([`ua_family`]), and what it lacks for
//!   that claim ([`anomalies`]); the inputs of client scoring.
//! * [`wire`]: the incremental request-head scanner the gate runs.
//! * [`Scoring`]: client scores from how requests look and how clients
//!   behave, attack detection ([`Detection`], [`Event`]) and the
//!   [`Ladder`] of actions: throttle, [`Challenge`], ban.
//! * [`SessionCookie`]: an opt-in signed cookie, bound to the client's
//!   network, that browsers return and most bots do not.
//! * [`Overload`]: an adaptive concurrency limit around the service that
//!   sheds the lowest [`Priority`] first ([`Criticality`] and the client's
//!   standing).
//! * Metrics: [`Guard::prometheus`] and [`Gate::prometheus`] write the
//!   counters in the Prometheus text format; under feature `axum`,
//!   `metrics_handler` serves them.
//!
//! Refusals are answered at once, without calling the service: 429 with
//! `Retry-After`, `RateLimit` and `RateLimit-Policy` headers; 403 for
//! blocked clients; 503 with `Retry-After` when overloaded; for gRPC
//! requests the matching gRPC status (`RESOURCE_EXHAUSTED`,
//! `PERMISSION_DENIED`, `UNAVAILABLE`). A blocked client's refusal is
//! held for a while first (the [`Tarpit`]), so that a flood tool waiting
//! on its answers slows down.

mod ban_list;
mod body;
mod challenge;
pub mod client_ip;
mod detect;
pub mod fingerprint;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
mod guard;
mod layer;
mod look;
mod metrics;
mod millis;
mod order;
mod overload;
mod peer;
mod profile;
mod refusal;
mod rules;
mod scorer;
mod scoring;
#[cfg(feature = "axum")]
mod serve;
mod session;
mod tarpit;
mod waiting;
mod watch;
pub mod wire;

pub use body::RefusalBody;
pub use challenge::{Challenge, ChallengePage};
pub use client_ip::{ClientIp, ClientIpConfig, ForwardedHeader, IpSource};
pub use detect::{AttackCause, Detection, DetectionSnapshot, Event, Share};
pub use fingerprint::{Anomalies, Anomaly, Fingerprint, UaFamily, anomalies, ua_family};
pub use gate::{
    AcceptVerdict, Deadlines, Gate, GateBuilder, GateConnectInfo, GateStats, GatedListener,
    GatedStream,
};
pub use guard::{
    DEFAULT_MAX_BANS, Guard, GuardBuilder, GuardDecision, GuardStats, MissingPeer, Refusal,
    ScoringStats, Snapshot,
};
pub use layer::{GuardLayer, GuardService, ResponseFuture};
pub use look::{Cluster, Os};
pub use metrics::PROMETHEUS_CONTENT_TYPE;
#[cfg(feature = "axum")]
pub use metrics::{metrics_handler, metrics_handler_with_gate};
pub use overload::{
    Aimd, Criticality, DEFAULT_LATENCY_FLOOR, DEFAULT_ROUTE_IDLE, Gradient2, LimitAlgorithm,
    LimitStats, MAX_ROUTE_LIMITS, Overload, Priority, TokioClock, WaitingRoomStats,
};
pub use peer::PeerAddr;
pub use refusal::RefusalKind;
pub use rules::{Rule, RuleStats};
pub use scorer::{Offender, Scoring};
pub use scoring::{Action, Ladder, ScoreReport, Signal, Weights};
#[cfg(feature = "axum")]
pub use serve::{HEADER_READ_TIMEOUT, Serve, WithGracefulShutdown, serve};
pub use session::{SameSite, SessionCookie, SessionStats};
pub use tarpit::{Tarpit, TarpitStats};
pub use wire::{HeadScanner, NameCasing, Scan, WireHead};
