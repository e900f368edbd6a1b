//! Overload protection's families: each limit and its waiting room.

use super::sink::{Kind, Out};
use crate::http::{LimitStats, WaitingRoomStats};

/// Overload protection: each adaptive limit (`route=""` for the
/// service's own) with its latency histogram.
pub(super) fn write_overload(t: &mut Out<'_>, limits: &[LimitStats]) {
    if limits.is_empty() {
        return;
    }
    let route = |l: &LimitStats| l.route.clone().unwrap_or_default();
    t.family(
        "floodguard_concurrency_limit",
        Kind::Gauge,
        "The adaptive concurrency limit now, per limit (route=\"\": the service's own).",
    );
    for l in limits {
        t.sample(
            "floodguard_concurrency_limit",
            &[("route", &route(l))],
            l.limit,
        );
    }
    t.family(
        "floodguard_in_flight",
        Kind::Gauge,
        "Requests in the service now, per limit.",
    );
    for l in limits {
        t.sample("floodguard_in_flight", &[("route", &route(l))], l.in_flight);
    }
    t.family(
        "floodguard_shed_total",
        Kind::Counter,
        "Requests shed at the concurrency limit, by limit and priority.",
    );
    for l in limits {
        let r = route(l);
        for (p, n) in l.shed {
            t.sample(
                "floodguard_shed_total",
                &[("route", &r), ("priority", p.name())],
                n,
            );
        }
    }
    let rooms: Vec<_> = limits
        .iter()
        .filter_map(|l| l.waiting_room.as_ref().map(|w| (route(l), w)))
        .collect();
    if !rooms.is_empty() {
        t.family(
            "floodguard_waiting",
            Kind::Gauge,
            "Requests waiting for a place now, per limit with a waiting room.",
        );
        for (r, w) in &rooms {
            t.sample("floodguard_waiting", &[("route", r)], w.waiting);
        }
        type Read = fn(&WaitingRoomStats) -> u64;
        let counters: [(&'static str, &'static str, Read); 3] = [
            (
                "floodguard_waited_total",
                "Requests admitted after waiting, per limit.",
                |w| w.waited,
            ),
            (
                "floodguard_wait_timeouts_total",
                "Requests shed when their wait ran out, per limit.",
                |w| w.timed_out,
            ),
            (
                "floodguard_turned_away_total",
                "Requests shed from a full waiting room for a higher priority, per limit.",
                |w| w.turned_away,
            ),
        ];
        for (name, help, value) in counters {
            t.family(name, Kind::Counter, help);
            for (r, w) in &rooms {
                t.sample(name, &[("route", r)], value(w));
            }
        }
    }
    t.family(
        "floodguard_service_latency_seconds",
        Kind::Histogram,
        "Latency of the service's answers, per limit (buckets a quarter octave apart).",
    );
    for l in limits {
        let r = route(l);
        let mut seen = 0;
        for (upper, n) in &l.buckets {
            seen += n;
            let le = format!("{}", upper.as_secs_f64());
            t.sample(
                "floodguard_service_latency_seconds_bucket",
                &[("route", &r), ("le", &le)],
                seen,
            );
        }
        t.sample(
            "floodguard_service_latency_seconds_bucket",
            &[("route", &r), ("le", "+Inf")],
            l.answers,
        );
        t.sample(
            "floodguard_service_latency_seconds_sum",
            &[("route", &r)],
            l.latency_sum.as_secs_f64(),
        );
        t.sample(
            "floodguard_service_latency_seconds_count",
            &[("route", &r)],
            l.answers,
        );
    }
}
