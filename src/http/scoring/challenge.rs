//! The challenge hook: what a client whose score reached the ladder's
//! challenge threshold must pass to be served.

use std::net::IpAddr;

use http::request::Parts;
use http::{HeaderMap, StatusCode};

/// A challenge for suspicious clients, such as a proof-of-work or a
/// captcha page, set with [`Scoring::challenge`](crate::http::Scoring::challenge).
///
/// For a request whose score reaches [`Ladder::challenge`](crate::http::Ladder)
/// (and stays below the ban), the guard asks [`verify`](Challenge::verify)
/// whether the request carries a solved challenge (a cookie, a header); if
/// so it is served, else the client gets [`issue`](Challenge::issue)'s
/// page. gRPC requests cannot show a page: they are refused with
/// `UNAVAILABLE` unless they pass `verify`.
///
/// `examples/challenge.rs` is a complete proof-of-work challenge. The
/// smallest hook:
///
/// ```
/// use std::net::IpAddr;
/// use floodguard::http::{Challenge, ChallengePage};
/// use http::request::Parts;
///
/// struct Knock;
/// impl Challenge for Knock {
///     fn verify(&self, parts: &Parts, _client: IpAddr) -> bool {
///         parts.headers.get("x-knock").is_some_and(|v| v == "open sesame")
///     }
///     fn issue(&self, _parts: &Parts, _client: IpAddr) -> ChallengePage {
///         ChallengePage::new("Say the word in an X-Knock header.\n")
///     }
/// }
/// ```
pub trait Challenge: Send + Sync + 'static {
    /// Whether the request carries a solved challenge. Called on the
    /// request path: keep it quick and never block.
    fn verify(&self, parts: &Parts, client: IpAddr) -> bool;

    /// The page asking the client to solve one.
    fn issue(&self, parts: &Parts, client: IpAddr) -> ChallengePage;
}

/// The response a [`Challenge`] sends: by default 403 with an HTML
/// content type and `Cache-Control: no-store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengePage {
    /// The status code.
    pub status: StatusCode,
    /// Headers, content type included.
    pub headers: HeaderMap,
    /// The body.
    pub body: String,
}

impl ChallengePage {
    /// A 403 page with `body` as HTML, never cached.
    pub fn new(body: impl Into<String>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        ChallengePage {
            status: StatusCode::FORBIDDEN,
            headers,
            body: body.into(),
        }
    }
}
