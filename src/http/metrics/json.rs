//! A ready JSON view of a guard (features `axum` and `serde`): its
//! [`Snapshot`](crate::http::Snapshot), and a gate's counters with it.

use axum::Json;
use axum::routing::MethodRouter;
use http::header::CACHE_CONTROL;

use crate::Clock;
use crate::http::{Gate, GateStats, Guard, Snapshot};

/// What the JSON view answers: the snapshot's fields, and `gate` when a
/// gate was given.
#[derive(serde::Serialize)]
struct View {
    #[serde(flatten)]
    snapshot: Snapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    gate: Option<GateStats>,
}

/// A `GET` (and `HEAD`) route that answers with the guard's
/// [`snapshot`](Guard::snapshot) as JSON (`application/json`,
/// `cache-control: no-store`): counters, the attack state with the
/// flagged clusters in words, the worst offenders with their reasons, and
/// the bans in force.
///
/// The shape is the snapshot's, field for field (see
/// [`Snapshot`](crate::http::Snapshot)), with one convention: durations
/// and timestamps are seconds as numbers (`f64`), timestamps on the
/// guard's clock, to compare with the top-level `now`. Networks are text
/// (`"192.0.2.0/24"`); a cluster is an object whose `description` says it
/// in words ([`Cluster::describe`](crate::http::Cluster::describe)).
///
/// ```
/// use axum::Router;
/// use floodguard::http::{Guard, json_handler};
///
/// let guard = Guard::builder().default_rules().build()?;
/// // On an internal listener: the view names clients and networks.
/// let admin: Router = Router::new().route("/guard.json", json_handler(guard.clone()));
/// # let _ = admin;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
///
/// Serve it where only your operators can reach it, as
/// [`metrics_handler`](crate::http::metrics_handler): it names clients.
/// Strings in it (cluster products, routes, rule names) come partly from
/// clients' requests: escape them wherever you display them.
pub fn json_handler<C, S>(guard: Guard<C>) -> MethodRouter<S>
where
    C: Clock + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    view_handler(guard, None)
}

/// Like [`json_handler`], with the [`Gate`]'s counters under `gate`.
///
/// ```
/// use axum::Router;
/// use floodguard::http::{Guard, json_handler_with_gate};
///
/// let guard = Guard::builder().default_rules().build()?;
/// let gate = guard.gate().max_connections_per_ip(16).build()?;
/// let admin: Router =
///     Router::new().route("/guard.json", json_handler_with_gate(guard.clone(), gate.clone()));
/// # let _ = admin;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
pub fn json_handler_with_gate<C, S>(guard: Guard<C>, gate: Gate) -> MethodRouter<S>
where
    C: Clock + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    view_handler(guard, Some(gate))
}

/// The snapshot, and the gate's counters when there is a gate, as JSON.
fn view_handler<C, S>(guard: Guard<C>, gate: Option<Gate>) -> MethodRouter<S>
where
    C: Clock + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    axum::routing::get(move || {
        let view = View {
            snapshot: guard.snapshot(),
            gate: gate.as_ref().map(Gate::stats),
        };
        async move { ([(CACHE_CONTROL, "no-store")], Json(view)) }
    })
}
