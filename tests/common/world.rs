//! A guard on a manual clock in front of a shop that answers at once, for
//! tests that drive traffic through the real layer in simulated time
//! (included with `#[path]`, as `redis_server.rs` is).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use floodguard::http::{ClientIpConfig, Event, Guard, GuardDecision, Scoring, Tarpit};
use floodguard::{Clock, ManualClock};
use http::{Request, Response, StatusCode};
use parking_lot::Mutex;
use tower::{Layer, Service, ServiceExt};

/// The shop's answer to a request: a status, no body.
pub type Shop = fn(&Request<String>) -> StatusCode;

/// A guard with the default rules and `scoring`, its events recorded with
/// their time, in front of `shop`.
pub struct World {
    pub clock: ManualClock,
    pub guard: Guard<ManualClock>,
    pub events: Arc<Mutex<Vec<(Duration, Event)>>>,
    shop: Shop,
}

impl World {
    pub fn new(scoring: Scoring, client_ip: ClientIpConfig, shop: Shop) -> Self {
        let clock = ManualClock::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let (sink, c) = (Arc::clone(&events), clock.clone());
        let guard = Guard::builder()
            .default_rules()
            .scoring(scoring)
            .client_ip(client_ip)
            // Time here is the manual clock's; held refusals would wait in
            // real time (the tarpit has tests of its own).
            .tarpit(Tarpit::off())
            .on_event(move |e| {
                sink.lock()
                    .push((Duration::from_nanos(c.now().as_nanos()), e.clone()))
            })
            .clock(clock.clone())
            .build()
            .unwrap();
        World {
            clock,
            guard,
            events,
            shop,
        }
    }

    /// Sends one request through the layer; returns the status and, when
    /// the shop saw it, the guard's decision.
    pub async fn send(&self, req: Request<String>) -> (StatusCode, Option<GuardDecision>) {
        let seen = Arc::new(Mutex::new(None));
        let (s, shop) = (Arc::clone(&seen), self.shop);
        let svc = tower::service_fn(move |req: Request<String>| {
            *s.lock() = req.extensions().get::<GuardDecision>().cloned();
            let mut res = Response::new(String::new());
            *res.status_mut() = shop(&req);
            std::future::ready(Ok::<_, Infallible>(res))
        });
        let mut svc = self.guard.layer().layer(svc);
        let status = svc.ready().await.unwrap().call(req).await.unwrap().status();
        let decision = seen.lock().take();
        (status, decision)
    }

    /// Time since the world began.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.clock.now().as_nanos())
    }

    /// The events `f` selects, with their time.
    pub fn events(&self, f: impl Fn(&Event) -> bool) -> Vec<(Duration, Event)> {
        self.events
            .lock()
            .iter()
            .filter(|(_, e)| f(e))
            .cloned()
            .collect()
    }
}
