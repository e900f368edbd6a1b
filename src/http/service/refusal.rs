//! The responses floodguard sends instead of calling the inner service:
//! HTTP status codes with standard headers, or gRPC status codes.

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};

use crate::Decision;
use crate::http::RefusalKind;
use crate::http::guard::decision::RateInfo;
use crate::http::guard::pipeline::MISSING_PEER_FIX;
use crate::http::guard::refusal_hook::{RefusalHook, RefusalInfo};
use crate::http::service::body::RefusalBody;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// gRPC's retry delay hint, honoured by gRPC retry policies.
const GRPC_RETRY_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The content type of a gRPC request (`application/grpc…` over HTTP/2)
/// or a gRPC-Web one (`application/grpc-web…`, any version), which wants
/// a gRPC status rather than an HTTP one; `None` for other requests.
/// gRPC runs over HTTP/2 only: an HTTP/1.1 request that claims
/// `application/grpc` is not a gRPC call, and gets an HTTP refusal (a
/// 200 with a `grpc-status` would pass for a success to a browser or a
/// cache).
pub(crate) fn grpc_content_type(parts: &Parts) -> Option<&HeaderValue> {
    parts.headers.get(CONTENT_TYPE).filter(|v| {
        let v = v.as_bytes();
        v.starts_with(b"application/grpc-web")
            || (v.starts_with(b"application/grpc") && parts.version == Version::HTTP_2)
    })
}

/// Every refusal is about this request at this moment: no cache may keep
/// it (a cached gRPC refusal is an empty 200).
fn no_store(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

impl RefusalKind {
    /// The wait a refusal of this kind asks for by itself (a rule's comes
    /// from its decision): a second for an overloaded service or a held
    /// suspect.
    pub(crate) fn own_wait(self) -> Option<Duration> {
        matches!(self, RefusalKind::Overloaded | RefusalKind::Suspect)
            .then_some(Duration::from_secs(1))
    }

    fn http(self) -> (StatusCode, &'static str) {
        match self {
            RefusalKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n"),
            RefusalKind::Blocked => (StatusCode::FORBIDDEN, "Forbidden\n"),
            RefusalKind::NoPeerAddress => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
            }
            RefusalKind::Challenged => (StatusCode::FORBIDDEN, "Challenge required\n"),
            RefusalKind::Suspect => (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n"),
            RefusalKind::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n"),
        }
    }

    fn grpc(self) -> (&'static str, &'static str) {
        match self {
            RefusalKind::RateLimited => ("8", "rate limit exceeded"),
            RefusalKind::Blocked => ("7", "client blocked"),
            RefusalKind::NoPeerAddress => ("13", "server cannot identify the client"),
            RefusalKind::Challenged => ("14", "client must pass a challenge"),
            RefusalKind::Suspect => ("8", "client held back"),
            RefusalKind::Overloaded => ("14", "server overloaded"),
        }
    }
}

/// A refusal response: plain text for HTTP, a trailers-only response for
/// gRPC (status 200 with `grpc-status` in the headers, as the gRPC spec
/// prescribes for calls that fail before any message), in the content type
/// the request used (`application/grpc-web…` stays gRPC-Web).
pub(crate) fn respond<B: RefusalBody>(
    kind: RefusalKind,
    grpc: Option<&HeaderValue>,
) -> Response<B> {
    if let Some(content_type) = grpc {
        let (code, message) = kind.grpc();
        let mut res = Response::new(B::refusal(""));
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, content_type.clone());
        h.insert(GRPC_STATUS, HeaderValue::from_static(code));
        h.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
        if kind.own_wait().is_some() {
            h.insert(GRPC_RETRY_PUSHBACK, HeaderValue::from_static("1000"));
        }
        no_store(h);
        res
    } else {
        let (status, text) = kind.http();
        // A debug build says how to fix the setup where the developer looks.
        let body = if cfg!(debug_assertions) && kind == RefusalKind::NoPeerAddress {
            B::page(format!("{text}\n{MISSING_PEER_FIX}\n"))
        } else {
            B::refusal(text)
        };
        let mut res = Response::new(body);
        *res.status_mut() = status;
        finish_http(res.headers_mut(), kind);
        res
    }
}

/// The headers every HTTP refusal carries: a plain-text content type
/// unless one is set, `Retry-After` for a wait of the kind's own, and
/// `no-store`.
fn finish_http(h: &mut HeaderMap, kind: RefusalKind) {
    h.entry(CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("text/plain; charset=utf-8"));
    if kind.own_wait().is_some() {
        h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    no_store(h);
}

/// A challenge page as a response (HTTP only: gRPC gets the
/// [`RefusalKind::Challenged`] status from [`respond`]).
pub(crate) fn challenge_page<B: RefusalBody>(page: crate::http::ChallengePage) -> Response<B> {
    let mut res = Response::new(B::page(page.body));
    *res.status_mut() = page.status;
    *res.headers_mut() = page.headers;
    // A page of the hook's own may say how long it keeps.
    if !res.headers().contains_key(CACHE_CONTROL) {
        no_store(res.headers_mut());
    }
    res
}

/// A refusal of `kind`: for HTTP, shaped by the user's hook when it
/// gives a shape, with the headers every refusal carries set after the
/// hook's; else floodguard's plain text or gRPC status. `request` is `None`
/// after a wait in an overload limit's waiting room.
pub(crate) fn refusal<B: RefusalBody>(
    hook: Option<&RefusalHook>,
    kind: RefusalKind,
    rate: Option<&RateInfo>,
    grpc: Option<&HeaderValue>,
    request: Option<&Parts>,
) -> Response<B> {
    let custom = hook.filter(|_| grpc.is_none()).and_then(|hook| {
        hook(&RefusalInfo {
            kind,
            rule: rate.map(|r| &*r.rule),
            retry_after: kind
                .own_wait()
                .or_else(|| rate.and_then(|r| r.decision.retry_after())),
            request,
        })
    });
    let Some(custom) = custom else {
        return respond(kind, grpc);
    };
    let mut res = Response::new(B::page(custom.body));
    *res.status_mut() = custom.status.unwrap_or(kind.http().0);
    *res.headers_mut() = custom.headers;
    finish_http(res.headers_mut(), kind);
    res
}

/// Adds the rate-limit headers of `decision` under `policy` (the rule's
/// pre-formatted `RateLimit-Policy` value): `RateLimit` always, and on a
/// denial `Retry-After` (whole seconds, rounded up, never 0) plus, for gRPC,
/// `grpc-retry-pushback-ms`.
pub(crate) fn add_rate_headers(
    headers: &mut HeaderMap,
    rule: &str,
    policy: &HeaderValue,
    decision: &Decision,
    grpc: bool,
) {
    let reset = decision.reset_after().as_nanos().div_ceil(1_000_000_000);
    let limit = format!("\"{rule}\";r={};t={reset}", decision.remaining());
    if let Ok(v) = HeaderValue::from_str(&limit) {
        headers.insert(RATELIMIT, v);
    }
    headers.insert(RATELIMIT_POLICY, policy.clone());
    if let Some(wait) = decision.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(decision.retry_after_secs()));
        if grpc {
            let ms = u64::try_from(wait.as_millis().max(1)).unwrap_or(u64::MAX);
            headers.insert(GRPC_RETRY_PUSHBACK, HeaderValue::from(ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn parts(version: Version, content_type: &str) -> Parts {
        Request::builder()
            .version(version)
            .header(CONTENT_TYPE, content_type)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn grpc_form_only_for_http2_grpc_or_grpc_web() {
        let grpc = |v, ct| grpc_content_type(&parts(v, ct)).is_some();
        assert!(grpc(Version::HTTP_2, "application/grpc"));
        assert!(grpc(Version::HTTP_2, "application/grpc+proto"));
        assert!(grpc(Version::HTTP_11, "application/grpc-web"));
        assert!(grpc(Version::HTTP_11, "application/grpc-web-text+proto"));
        assert!(grpc(Version::HTTP_2, "application/grpc-web+proto"));
        // gRPC is HTTP/2 only: over HTTP/1.x it is no gRPC call.
        assert!(!grpc(Version::HTTP_11, "application/grpc"));
        assert!(!grpc(Version::HTTP_10, "application/grpc+proto"));
        assert!(!grpc(Version::HTTP_2, "text/html"));
    }

    #[test]
    fn an_http1_request_claiming_grpc_gets_an_http_refusal() {
        let p = parts(Version::HTTP_11, "application/grpc");
        let res: Response<String> = respond(RefusalKind::Overloaded, grpc_content_type(&p));
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!res.headers().contains_key(GRPC_STATUS));
    }

    #[test]
    fn every_refusal_is_not_to_be_stored() {
        let grpc = HeaderValue::from_static("application/grpc");
        for kind in [
            RefusalKind::RateLimited,
            RefusalKind::Blocked,
            RefusalKind::NoPeerAddress,
            RefusalKind::Challenged,
            RefusalKind::Suspect,
            RefusalKind::Overloaded,
        ] {
            for g in [None, Some(&grpc)] {
                let res: Response<String> = respond(kind, g);
                assert_eq!(res.headers()[CACHE_CONTROL], "no-store", "{kind:?} {g:?}");
            }
        }
        let page = crate::http::ChallengePage {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: "solve me".into(),
        };
        let res: Response<String> = challenge_page(page);
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    }
}
