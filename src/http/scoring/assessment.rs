//! What scoring made of one request: its score, the action the ladder
//! picks, the client's volume and record, and what the answer will update.

use super::ladder::{Action, ScoreReport};
use super::profile::Profile;
use super::tuning::Tuning;
use crate::http::Cluster;
use crate::http::identify::fingerprint::Fingerprint;
use crate::{IpPrefix, ScoreRecord};

/// One request's assessment, kept until its answer is observed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Assessment {
    pub(crate) client: IpPrefix,
    pub(super) client_key: u64,
    pub(super) site_key: u64,
    /// The client's recent request volume (see [`VOLUME_HALF_LIFE`]).
    pub(crate) volume: f32,
    pub(super) record: Option<ScoreRecord>,
    pub(super) look: Look,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) cluster: Cluster,
    /// The client's routes so far, this request's included.
    pub(super) profile: Profile,
    /// The busy period now (0: at ease); see `Detector::busy_stamp`.
    pub(super) busy_stamp: u8,
    pub(crate) report: ScoreReport,
    pub(crate) action: Action,
    /// This request found the client not returning the session cookie
    /// (its third miss): counted once.
    pub(crate) session_unreturned_news: bool,
    /// The weights and ladder the request is judged by.
    pub(super) tuning: Tuning,
}

/// What watching a request's answer needs of its assessment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Watch {
    pub(super) client_key: u64,
    pub(super) site_key: u64,
    pub(super) volume: f32,
    /// The request looked like a person's browser or text browser, with
    /// nothing anomalous, and its client had asked for more than one route:
    /// a good answer to it earns standing even in trouble.
    pub(super) people_like: bool,
    /// What the answer weighs, by the weights the request was judged by.
    pub(super) answer: AnswerWeights,
}

/// The [`Weights`](crate::http::Weights) an answer is scored by: the watch of every admitted
/// request carries them, so only these.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AnswerWeights {
    pub(super) success_credit: f32,
    pub(super) not_found: f32,
    pub(super) error_response: f32,
}

impl Assessment {
    /// Good exchanges the client has had.
    pub(crate) fn good(&self) -> u8 {
        self.record.map_or(0, |r| r.good)
    }

    /// A client without a good exchange, while the service is under
    /// attack or degraded. One that returned a valid session cookie is no
    /// newcomer.
    pub(crate) fn newcomer_in_trouble(&self) -> bool {
        self.look.under_attack && self.good() == 0 && !self.look.session_valid
    }

    /// The client has a record of its own: good exchanges, or a valid
    /// session cookie (a browser session that began before).
    pub(crate) fn seen(&self) -> bool {
        self.good() > 0 || self.look.session_valid
    }

    /// The client came before the current busy period (or the service is
    /// at ease): overload protection serves it before those who came in
    /// the crowd.
    pub(crate) fn came_before_the_rush(&self) -> bool {
        self.profile.came_before(self.busy_stamp)
    }

    /// A newcomer whose cluster is flagged in the attack.
    pub(crate) fn flagged_newcomer(&self) -> bool {
        self.look.class_surge > 0.0
    }

    pub(crate) fn watch(&self) -> Watch {
        Watch {
            client_key: self.client_key,
            site_key: self.site_key,
            volume: self.volume,
            people_like: self.look.people_like && self.profile.route_count() >= 2,
            answer: AnswerWeights {
                success_credit: self.tuning.weights.success_credit,
                not_found: self.tuning.weights.not_found,
                error_response: self.tuning.weights.error_response,
            },
        }
    }
}

/// The parts of a score that come from the request and the moment, not
/// from the client's stored behaviour.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Look {
    /// The client's own evidence in this request.
    pub(super) anomalies: f32,
    pub(super) inconsistency: f32,
    pub(super) automated: f32,
    pub(super) route_mix: f32,
    /// A session cookie that is not this client's (forged, expired, from
    /// another network): acts, never bans (see [`Scorer::action`]).
    pub(super) session_invalid: f32,
    /// The session cookie sent and not returned.
    pub(super) session_not_returned: f32,
    /// Context: what the client's cluster and network did.
    pub(super) class_surge: f32,
    pub(super) hot_prefix: f32,
    pub(super) under_attack: bool,
    /// A browser or text browser with nothing anomalous.
    pub(super) people_like: bool,
    /// The request returned a valid session cookie.
    pub(super) session_valid: bool,
}
