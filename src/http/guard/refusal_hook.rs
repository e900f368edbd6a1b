//! The user's hook that shapes the HTTP refusals the layer sends: a JSON
//! 429 for an API, a branded 403 for a shop. The layer keeps the headers
//! that must stay right (`Retry-After`, `RateLimit`, `RateLimit-Policy`,
//! `Cache-Control: no-store`, `Connection: close`) whatever the hook sets.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::http::RefusalKind;

/// A refusal about to be sent, as [`GuardBuilder::on_refusal`]'s hook
/// sees it.
///
/// [`GuardBuilder::on_refusal`]: crate::http::GuardBuilder::on_refusal
#[derive(Debug)]
#[non_exhaustive]
pub struct RefusalInfo<'a> {
    /// Why the request is refused.
    pub kind: RefusalKind,
    /// For a rate-limit refusal, the rule with the longest wait.
    pub rule: Option<&'a str>,
    /// How long the client should wait before trying again, when the
    /// refusal says (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The request; `None` for a request shed after waiting in an overload
    /// limit's waiting room.
    pub request: Option<&'a Parts>,
}

/// What a hook answers instead of floodguard's plain-text refusal: a body,
/// and optionally a status and headers of its own.
///
/// ```
/// use floodguard::http::RefusalResponse;
/// use http::{HeaderValue, StatusCode, header::CONTENT_TYPE};
///
/// let r = RefusalResponse::new(r#"{"error":"slow down"}"#)
///     .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
/// # let _ = r.status(StatusCode::TOO_MANY_REQUESTS);
/// ```
#[derive(Clone, Debug, Default)]
pub struct RefusalResponse {
    pub(crate) status: Option<StatusCode>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl RefusalResponse {
    /// A refusal with this body, floodguard's status for its kind and a
    /// `text/plain` content type unless [`header`](Self::header) sets one.
    pub fn new(body: impl Into<String>) -> Self {
        RefusalResponse {
            status: None,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    /// Another status (say 404 instead of 403, to tell a banned scanner
    /// nothing).
    #[must_use]
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// A header of the hook's own. Those floodguard must keep right
    /// (`Retry-After`, `RateLimit`, `RateLimit-Policy`, `Cache-Control`,
    /// `Connection`) are set by the layer after the hook's.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// The hook, as the guard holds it.
pub(crate) type RefusalHook =
    Arc<dyn Fn(&RefusalInfo<'_>) -> Option<RefusalResponse> + Send + Sync>;
