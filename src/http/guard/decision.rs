//! What the guard decided for one request: the decision handlers read,
//! the refusal `check` returns, and the inspection the layer acts on.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;

use crate::http::Cluster;
use crate::http::identify::client_ip::ClientIp;
use crate::http::identify::fingerprint::Fingerprint;
use crate::http::overload::shedder::Place;
use crate::http::scoring::assessment::Watch;
use crate::http::scoring::challenge::ChallengePage;
use crate::http::scoring::ladder::{Action, ScoreReport};
use crate::{Decision, Timestamp};

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// A rule's limit: HTTP 429, gRPC `RESOURCE_EXHAUSTED`.
    RateLimited,
    /// The client is blocklisted or banned: HTTP 403, gRPC `PERMISSION_DENIED`.
    Blocked,
    /// The request carried no peer address (a setup error): HTTP 500, gRPC
    /// `INTERNAL`.
    NoPeerAddress,
    /// The client's score asks for a challenge it has not passed: the
    /// challenge hook's page, gRPC `UNAVAILABLE`.
    Challenged,
    /// The client's score asks for a challenge and no challenge hook is
    /// set: the request is held back without a ban. HTTP 429 with
    /// `Retry-After: 1`, gRPC `RESOURCE_EXHAUSTED` with a one-second
    /// pushback.
    Suspect,
    /// The service is at its concurrency limit and the request did not
    /// outrank what it protects: HTTP 503 with `Retry-After: 1`, gRPC
    /// `UNAVAILABLE` with a one-second pushback.
    Overloaded,
}

impl RefusalKind {
    /// A short name for logs and metrics: `rate_limited`, `blocked`,
    /// `no_peer_address`, `challenged`, `suspect`, `overloaded`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::RateLimited => "rate_limited",
            RefusalKind::Blocked => "blocked",
            RefusalKind::NoPeerAddress => "no_peer_address",
            RefusalKind::Challenged => "challenged",
            RefusalKind::Suspect => "suspect",
            RefusalKind::Overloaded => "overloaded",
        }
    }
}

/// The decision for one request, put into the request's extensions for
/// handlers to read.
///
/// ```
/// use axum::Extension;
/// use floodguard::http::GuardDecision;
///
/// async fn handler(Extension(d): Extension<GuardDecision>) -> String {
///     format!("{:?} has {:?} left", d.client_ip(), d.decision().map(|d| d.remaining()))
/// }
/// # let _ = handler;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GuardDecision {
    pub(super) client: Option<ClientIp>,
    pub(super) safelisted: bool,
    pub(super) binding: Option<(Arc<str>, Decision)>,
    pub(super) score: Option<(ScoreReport, Action, Fingerprint, Cluster)>,
}

impl GuardDecision {
    /// The resolved client address and where it came from; `None` when the
    /// request had no peer address and [`MissingPeer::SkipAddressRules`](crate::http::MissingPeer::SkipAddressRules) let
    /// it through.
    pub fn client(&self) -> Option<&ClientIp> {
        self.client.as_ref()
    }

    /// The resolved client address.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client.map(|c| c.ip)
    }

    /// Whether the client is safelisted (no rule was checked).
    pub fn is_safelisted(&self) -> bool {
        self.safelisted
    }

    /// The enforced rule with the least allowance left, if any applied.
    pub fn rule(&self) -> Option<&str> {
        self.binding.as_ref().map(|(n, _)| &**n)
    }

    /// That rule's decision (remaining, reset).
    pub fn decision(&self) -> Option<&Decision> {
        self.binding.as_ref().map(|(_, d)| d)
    }

    /// The client's score and the signals behind it, when scoring is on.
    pub fn score(&self) -> Option<&ScoreReport> {
        self.score.as_ref().map(|(r, _, _, _)| r)
    }

    /// What the ladder did at that score (a request that reached
    /// [`Action::Ban`] is only served when bans are in shadow mode).
    pub fn action(&self) -> Option<Action> {
        self.score.as_ref().map(|(_, a, _, _)| *a)
    }

    /// The request's fingerprint, when scoring is on.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        self.score.as_ref().map(|(_, _, f, _)| f)
    }

    /// The request's cluster (what attack detection groups it by), when
    /// scoring is on.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.score.as_ref().map(|(_, _, _, c)| c)
    }
}

// A score is a float, but never NaN: equality is total.
impl Eq for GuardDecision {}

/// A rule's decision ready to become `RateLimit` headers.
#[derive(Clone, Debug)]
pub(crate) struct RateInfo {
    pub(crate) rule: Arc<str>,
    pub(crate) policy: HeaderValue,
    pub(crate) decision: Decision,
}

/// The outcome of [`Guard::inspect`].
// Made and taken apart once per request: boxing the larger variant would
// cost an allocation for every admitted request instead of a few bytes
// moved.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inspection {
    /// Serve; `headers` when rate-limit headers go on successful responses;
    /// `watch` when scoring watches the answer; `permit` the request's place
    /// in an overload limit; `at` the time the request was decided at, on
    /// the guard's clock; `session` the client address to send a session
    /// cookie for, if the answer is a success.
    Pass {
        decision: GuardDecision,
        headers: Option<RateInfo>,
        watch: Option<Watch>,
        permit: Option<Place>,
        at: Timestamp,
        session: Option<IpAddr>,
    },
    /// Answer with a refusal (or a challenge `page`); `close` the
    /// connection after it (HTTP/1).
    Refuse {
        kind: RefusalKind,
        rate: Option<RateInfo>,
        close: bool,
        page: Option<Box<ChallengePage>>,
    },
}

impl Inspection {
    pub(super) fn refuse(kind: RefusalKind, close: bool) -> Self {
        Inspection::Refuse {
            kind,
            rate: None,
            close,
            page: None,
        }
    }
}

/// A refusal from [`Guard::check`](crate::http::Guard::check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub(super) kind: RefusalKind,
    pub(super) rate: Option<(Arc<str>, Decision)>,
}

impl Refusal {
    /// Why the request was refused.
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// For a rate-limit refusal, the refusing rule with the longest wait.
    pub fn rule(&self) -> Option<&str> {
        self.rate.as_ref().map(|(n, _)| &**n)
    }

    /// That rule's decision (retry-after, reset).
    pub fn decision(&self) -> Option<&Decision> {
        self.rate.as_ref().map(|(_, d)| d)
    }
}
