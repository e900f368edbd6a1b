//! The Tower `Layer` and `Service`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::http::guard::decision::{Inspection, RateInfo};
use crate::http::overload::shedder::{Permit, Place, Ticket};
use crate::http::scoring::assessment::Watch;
use crate::http::service::body::RefusalBody;
use crate::http::service::refusal::{add_rate_headers, challenge_page, grpc_content_type, refusal};
use crate::http::tarpit::Held;
use crate::http::{Guard, RefusalKind};
use crate::{Clock, CoarseClock, Timestamp};

/// A Tower layer that puts a [`Guard`] in front of a service; made by
/// [`Guard::layer`]. Works with `axum::Router::layer` and
/// `tonic::transport::Server::builder().layer`.
pub struct GuardLayer<C = CoarseClock> {
    guard: Guard<C>,
}

impl<C: Clock> Guard<C> {
    /// A Tower layer that guards the service it wraps with this state.
    pub fn layer(&self) -> GuardLayer<C> {
        GuardLayer::new(self.clone())
    }
}

impl<C> GuardLayer<C> {
    fn new(guard: Guard<C>) -> Self {
        GuardLayer { guard }
    }
}

impl<C> Clone for GuardLayer<C> {
    fn clone(&self) -> Self {
        GuardLayer {
            guard: self.guard.clone(),
        }
    }
}

impl<C> std::fmt::Debug for GuardLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardLayer")
            .field("guard", &self.guard)
            .finish()
    }
}

impl<S, C> Layer<S> for GuardLayer<C> {
    type Service = GuardService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service [`GuardLayer`] makes: decides each request in `call` and
/// either refuses it at once or passes it on with a
/// [`GuardDecision`](crate::http::GuardDecision) in its extensions.
///
/// `poll_ready` is the inner service's. A refused request never reaches the
/// inner service, so an inner service that reserves capacity in
/// `poll_ready` (a concurrency limit, a buffer) should sit outside this
/// layer, as is usual for such middleware.
pub struct GuardService<S, C = CoarseClock> {
    inner: S,
    guard: Guard<C>,
}

impl<S: Clone, C> Clone for GuardService<S, C> {
    fn clone(&self) -> Self {
        GuardService {
            inner: self.inner.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<S, C> std::fmt::Debug for GuardService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardService")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<S, C, ReqB, ResB> Service<Request<ReqB>> for GuardService<S, C>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: RefusalBody,
    C: Clock,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        match self.guard.inspect(&parts, true) {
            Inspection::Pass {
                decision,
                headers,
                watch,
                permit,
                at,
                session,
            } => {
                parts.extensions.insert(decision);
                let issue = session.map(|ip| Issue {
                    guard: self.guard.clone(),
                    ip,
                    at,
                });
                // The answer's latency counts from the time the request was
                // decided at: no second clock read.
                let watch = watch.map(|watch| Watched {
                    guard: self.guard.clone(),
                    watch,
                    started: at,
                });
                let (permit, waiting) = match permit {
                    Some(Place::Now(p)) => (Some(p), None),
                    Some(Place::Wait(ticket)) => (
                        None,
                        Some(Box::new(Waiting {
                            ticket,
                            guard: self.guard.clone(),
                            grpc: grpc_content_type(&parts).cloned(),
                        })),
                    ),
                    None => (None, None),
                };
                // Called now, polled once the request has its place: the
                // inner service's future does the work when polled.
                let fut = self.inner.call(Request::from_parts(parts, body));
                ResponseFuture {
                    state: State::Inner {
                        fut,
                        headers,
                        watch,
                        issue,
                        permit,
                        waiting,
                    },
                }
            }
            Inspection::Refuse {
                kind,
                rate,
                close,
                page,
            } => {
                let grpc = grpc_content_type(&parts);
                let mut res = match page {
                    Some(page) if grpc.is_none() => challenge_page(*page),
                    _ => refusal(
                        self.guard.refusal_hook(),
                        kind,
                        rate.as_ref(),
                        grpc,
                        Some(&parts),
                    ),
                };
                if close && parts.version <= http::Version::HTTP_11 {
                    res.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                if let Some(r) = rate {
                    let h = res.headers_mut();
                    add_rate_headers(h, &r.rule, &r.policy, &r.decision, grpc.is_some());
                }
                let held = match kind {
                    RefusalKind::Blocked => self.guard.hold_refusal(),
                    _ => None,
                };
                ResponseFuture {
                    state: State::Ready {
                        res: Some(res),
                        held: held.map(|(hold, place)| (Box::pin(tokio::time::sleep(hold)), place)),
                    },
                }
            }
        }
    }
}

/// A request waiting for a place in an overload limit; `grpc` the
/// request's gRPC content type, for the refusal if no place comes.
struct Waiting<C> {
    ticket: Ticket,
    guard: Guard<C>,
    grpc: Option<http::HeaderValue>,
}

/// A request whose answer scoring watches: its status and latency move
/// the client's score and the latency baseline.
struct Watched<C> {
    guard: Guard<C>,
    watch: Watch,
    started: Timestamp,
}

/// A session cookie to send with the answer if it is a success: the
/// client's address and when its request was decided.
struct Issue<C> {
    guard: Guard<C>,
    ip: std::net::IpAddr,
    at: Timestamp,
}

pin_project_lite::pin_project! {
    /// The future of a [`GuardService`] call.
    pub struct ResponseFuture<F, B, C = CoarseClock> {
        #[pin]
        state: State<F, B, C>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B, C> {
        Inner {
            #[pin] fut: F,
            headers: Option<RateInfo>,
            watch: Option<Watched<C>>,
            issue: Option<Issue<C>>,
            // Dropped with the future if the answer never comes.
            permit: Option<Permit>,
            // Until its place comes, the inner future is not polled.
            // Boxed: only a request that waits pays for its size.
            waiting: Option<Box<Waiting<C>>>,
        },
        Ready {
            res: Option<Response<B>>,
            // The tarpit's hold on a blocked client's refusal: sent when
            // the timer fires. Boxed: the timer is large, and every other
            // request's future would carry its size.
            held: Option<(Pin<Box<tokio::time::Sleep>>, Held)>,
        },
    }
}

impl<F, B, E, C: Clock> Future for ResponseFuture<F, B, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: RefusalBody,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        if let StateProj::Inner {
            permit, waiting, ..
        } = state.as_mut().project()
        {
            if let Some(w) = waiting {
                match ready!(w.ticket.poll_place(cx)) {
                    Some(p) => {
                        w.guard.count_waited_admitted();
                        *permit = Some(p);
                        *waiting = None;
                    }
                    None => {
                        w.guard.count_shed();
                        let res = refusal(
                            w.guard.refusal_hook(),
                            RefusalKind::Overloaded,
                            None,
                            w.grpc.as_ref(),
                            None,
                        );
                        state.set(State::Ready {
                            res: Some(res),
                            held: None,
                        });
                    }
                }
            }
        }
        match state.project() {
            StateProj::Inner {
                fut,
                headers,
                watch,
                issue,
                permit,
                waiting: _,
            } => {
                let res = ready!(fut.poll(cx));
                // The place is given back whether the service answered or
                // failed.
                if let Some(p) = permit.take() {
                    p.answered();
                }
                let mut res = res?;
                if let Some(i) = issue.take() {
                    let status = res.status();
                    if status.is_success() || status.is_redirection() {
                        let w = watch.as_ref().map(|w| &w.watch);
                        if let Some(v) = i.guard.issue_session(i.ip, i.at, w) {
                            res.headers_mut().append(http::header::SET_COOKIE, v);
                        }
                    }
                }
                if let Some(w) = watch.take() {
                    w.guard.answered(&w.watch, res.status(), w.started);
                }
                if let Some(r) = headers.take() {
                    add_rate_headers(res.headers_mut(), &r.rule, &r.policy, &r.decision, false);
                }
                Poll::Ready(Ok(res))
            }
            StateProj::Ready { res, held } => {
                if let Some((sleep, _)) = held {
                    ready!(sleep.as_mut().poll(cx));
                }
                match res.take() {
                    Some(res) => Poll::Ready(Ok(res)),
                    None => panic!("ResponseFuture polled after completion"),
                }
            }
        }
    }
}
