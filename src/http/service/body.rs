//! Response bodies the layer can answer refusals with.

/// A response body type the layer can build a refusal from, so a refused
/// request is answered in the inner service's own body type (no wrapping,
/// no re-boxing by the framework).
///
/// Implemented for axum's `Body` (feature `axum`), tonic's `Body` (feature
/// `tonic`) and `String`. For another body type, implement it:
///
/// ```
/// use floodguard::http::RefusalBody;
///
/// struct MyBody(Vec<u8>);
/// impl RefusalBody for MyBody {
///     fn refusal(text: &'static str) -> Self {
///         MyBody(text.as_bytes().to_vec())
///     }
///     fn page(text: String) -> Self {
///         MyBody(text.into_bytes())
///     }
/// }
/// ```
pub trait RefusalBody: Sized {
    /// A body holding `text` (empty for gRPC refusals, whose status travels
    /// in headers).
    fn refusal(text: &'static str) -> Self;

    /// A body holding a page made at run time, such as a
    /// [`Challenge`](crate::http::Challenge)'s.
    fn page(text: String) -> Self;
}

#[cfg(feature = "axum")]
impl RefusalBody for axum::body::Body {
    fn refusal(text: &'static str) -> Self {
        axum::body::Body::from(text)
    }

    fn page(text: String) -> Self {
        axum::body::Body::from(text)
    }
}

/// tonic serves gRPC, whose refusals have empty bodies; a plain HTTP
/// request to a tonic server gets its status with an empty body too.
#[cfg(feature = "tonic")]
impl RefusalBody for tonic::body::Body {
    fn refusal(_text: &'static str) -> Self {
        tonic::body::Body::empty()
    }

    fn page(_text: String) -> Self {
        tonic::body::Body::empty()
    }
}

impl RefusalBody for String {
    fn refusal(text: &'static str) -> Self {
        text.to_owned()
    }

    fn page(text: String) -> Self {
        text
    }
}
