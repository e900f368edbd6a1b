//! A ready `/metrics` handler for axum (feature `axum`).

use axum::routing::MethodRouter;
use http::header::CONTENT_TYPE;

use crate::Clock;
use crate::http::{Gate, Guard, PROMETHEUS_CONTENT_TYPE};

/// A `GET` (and `HEAD`) route that answers with the guard's
/// [`prometheus`](Guard::prometheus) text and
/// `content-type: text/plain; version=0.0.4; charset=utf-8`. Mount it
/// at a path of your choosing:
///
/// ```
/// use axum::{Router, routing::get};
/// use floodguard::http::Guard;
///
/// let guard = Guard::builder().default_rules().build()?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { "shop" }))
///     .layer(guard.layer())
///     // Added after `.layer`: scrapes are not counted or limited.
///     .route("/metrics", floodguard::http::metrics_handler(guard.clone()));
/// # let _ = app;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
///
/// Where the route sits decides whether the guard sees the scrapes:
/// axum's `Router::layer` wraps only the routes added before it, so a
/// metrics route added after `.layer(guard.layer())` is in front of the
/// guard (scrapes are neither counted nor limited), and one added
/// before it is behind the guard (each scrape is a request, charged on
/// the rules like any other; a scraper on a safelisted address skips
/// them). A guard layered around the whole app (`ServiceBuilder`
/// around the router, or `Router::layer` on a merged router) covers
/// the metrics route too.
///
/// The text names clients and networks (offenders, flagged
/// networks): serve it where only your monitoring can reach it, on an
/// internal listener or behind your own authentication.
pub fn metrics_handler<C, S>(guard: Guard<C>) -> MethodRouter<S>
where
    C: Clock + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    axum::routing::get(move || {
        let body = guard.prometheus();
        async move { ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], body) }
    })
}

/// Like [`metrics_handler`], with the [`Gate`]'s counters after the
/// guard's in the same answer.
///
/// ```
/// use axum::Router;
/// use floodguard::http::{Guard, metrics_handler_with_gate};
///
/// let guard = Guard::builder().default_rules().build()?;
/// let gate = guard.gate().max_connections_per_ip(16).build()?;
/// let admin: Router = Router::new()
///     .route("/metrics", metrics_handler_with_gate(guard.clone(), gate.clone()));
/// # let _ = admin;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
pub fn metrics_handler_with_gate<C, S>(guard: Guard<C>, gate: Gate) -> MethodRouter<S>
where
    C: Clock + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    axum::routing::get(move || {
        let mut body = guard.prometheus();
        gate.write_prometheus(&mut body);
        async move { ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], body) }
    })
}
