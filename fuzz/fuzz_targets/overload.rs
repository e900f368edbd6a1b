//! Fuzzes overload protection: the adaptive concurrency limits (Gradient2
//! or AIMD, any valid settings) and their waiting rooms, driven by
//! arbitrary sequences of arrivals (any criticality, standing and route),
//! answers after arbitrary latencies, requests dropped unanswered, waiters
//! leaving, and time moving on a paused Tokio clock.
//!
//! After every step each waiting ticket is polled, and the target panics
//! at the first broken guarantee:
//!
//! * in-flight counts are exact: each limit's total and per-priority
//!   counts equal the permits the target holds, never negative (no
//!   wrap-around);
//! * a request is admitted only within its priority's share: once it is
//!   in, the requests of its priority and above are at most that share of
//!   the limit (as `Priority::share` documents it, with the small-limit
//!   adjustments); lower priorities' requests from before a fall of the
//!   limit may remain;
//! * each limit stays within its configured floor and ceiling;
//! * every refusal is counted as shed once (refused at once, timed out,
//!   or turned away), and the admitted count covers every permit given;
//! * once every permit is given back and every waiter gone, nothing is in
//!   flight;
//! * nothing panics.
#![no_main]

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arbitrary::Arbitrary;
use floodguard::http::fuzzing::{Permit, Place, Shedder, Ticket};
use floodguard::http::{Aimd, Criticality, Gradient2, LimitAlgorithm, LimitStats, Overload};
use libfuzzer_sys::fuzz_target;

const MAX_STEPS: usize = 384;
const ROUTE: &str = "/slow";

#[derive(Arbitrary, Debug)]
struct Input {
    aimd: bool,
    /// Smoothing or backoff, in 1/256ths (0 and 256 are refused).
    ratio: u8,
    /// Tolerance − 1, in 1/16ths.
    tolerance: u8,
    initial: u8,
    min: u8,
    max: u16,
    floor_ms: u8,
    /// Waiting room: capacity and timeout in ms, if any.
    queue: Option<(u8, u16)>,
    /// A limit of its own for `ROUTE`.
    route: bool,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Arrive {
        criticality: u8,
        standing: i8,
        slow_route: bool,
    },
    /// The answer to the permit at this index (mod the count) comes now.
    Answer(u16),
    /// The permit at this index is dropped unanswered.
    Drop(u16),
    /// The waiter at this index leaves.
    Leave(u16),
    /// Time moves on by this many µs.
    Micros(u16),
    Millis(u16),
    /// 2^k ms, up to about 9 years.
    Idle(u8),
}

/// A permit the target holds: for which limit and priority.
struct Held {
    permit: Permit,
    slow: bool,
    priority: usize,
}

struct Waiting {
    ticket: Ticket,
    slow: bool,
    priority: usize,
}

/// The documented rank: criticality (sheddable 1, default 2, critical 3)
/// moved by the standing, within 0..=4.
fn priority(criticality: Criticality, standing: i8) -> usize {
    let base = match criticality {
        Criticality::Sheddable => 1,
        Criticality::Default => 2,
        Criticality::Critical => 3,
    };
    (base + standing).clamp(0, 4) as usize
}

fn criticality(b: u8) -> Criticality {
    match b % 3 {
        0 => Criticality::Sheddable,
        1 => Criticality::Default,
        _ => Criticality::Critical,
    }
}

fuzz_target!(|input: Input| {
    let ratio = f64::from(input.ratio) / 256.0;
    let tolerance = 1.0 + f64::from(input.tolerance) / 16.0;
    let algorithm = if input.aimd {
        let mut a = Aimd::default();
        a.backoff = ratio;
        a.tolerance = tolerance;
        LimitAlgorithm::Aimd(a)
    } else {
        let mut g = Gradient2::default();
        g.smoothing = ratio;
        g.tolerance = tolerance;
        LimitAlgorithm::Gradient2(g)
    };
    let (min, initial, max) = (
        u32::from(input.min),
        u32::from(input.initial),
        u32::from(input.max),
    );
    let mut config = Overload::default()
        .algorithm(algorithm)
        .limits(initial, min, max)
        .latency_floor(Duration::from_millis(u64::from(input.floor_ms)))
        .criticality(|parts| {
            criticality(
                parts
                    .headers
                    .get("x-criticality")
                    .and_then(|v| v.as_bytes().first().copied())
                    .unwrap_or(1),
            )
        });
    if let Some((capacity, timeout)) = input.queue {
        config = config.queue(
            usize::from(capacity),
            Duration::from_millis(u64::from(timeout)),
        );
    }
    if input.route {
        config = config.route(ROUTE);
    }
    let Ok(shedder) = Shedder::new(config) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(run(&shedder, &input.steps, min, max, input.route));
});

/// Each limit's stats: the service's, and the route's if it has one.
fn limits(shedder: &Shedder, route: bool) -> (LimitStats, LimitStats) {
    let stats = shedder.stats();
    let service = stats[0].clone();
    let slow = if route {
        stats
            .iter()
            .find(|s| s.route.as_deref() == Some(ROUTE))
            .expect("the route's limit")
            .clone()
    } else {
        service.clone()
    };
    (service, slow)
}

async fn run(shedder: &Shedder, steps: &[Step], min: u32, max: u32, route: bool) {
    let mut held: Vec<Held> = Vec::new();
    let mut waiting: Vec<Waiting> = Vec::new();
    // Refusals seen (at once or after waiting), permits given.
    let mut refused = 0u64;
    let mut given = 0u64;
    let mut cx = Context::from_waker(Waker::noop());
    for (i, step) in steps.iter().take(MAX_STEPS).enumerate() {
        match *step {
            Step::Arrive {
                criticality: c,
                standing,
                slow_route,
            } => {
                let standing = standing % 3;
                let c = b'0' + c % 3;
                let req = http::Request::get("/")
                    .header("x-criticality", [c].as_slice())
                    .body(())
                    .expect("a request");
                let (parts, ()) = req.into_parts();
                let slow = slow_route && route;
                let path = if slow_route { ROUTE } else { "/" };
                let p = priority(criticality(c), standing);
                match shedder.acquire(&parts, path, standing) {
                    Ok(Place::Now(permit)) => {
                        given += 1;
                        held.push(Held {
                            permit,
                            slow,
                            priority: p,
                        });
                        let (service, slow_limit) = limits(shedder, route);
                        let limit = if slow {
                            slow_limit.limit
                        } else {
                            service.limit
                        };
                        let mine = held
                            .iter()
                            .filter(|h| h.slow == slow && h.priority >= p)
                            .count();
                        let cap = caps(limit)[p];
                        assert!(
                            mine <= cap as usize,
                            "step {i}: {mine} of priority {p} and above in flight, share {cap} of {limit}"
                        );
                    }
                    Ok(Place::Wait(ticket)) => waiting.push(Waiting {
                        ticket,
                        slow,
                        priority: p,
                    }),
                    Err(got) => {
                        assert_eq!(got as usize, p, "step {i}: shed with another priority");
                        refused += 1;
                    }
                }
            }
            Step::Answer(k) | Step::Drop(k) => {
                if held.is_empty() {
                    continue;
                }
                let h = held.swap_remove(usize::from(k) % held.len());
                if matches!(step, Step::Answer(_)) {
                    let _ = h.permit.answered();
                }
            }
            Step::Leave(k) => {
                if !waiting.is_empty() {
                    waiting.swap_remove(usize::from(k) % waiting.len());
                }
            }
            Step::Micros(n) => tokio::time::advance(Duration::from_micros(u64::from(n))).await,
            Step::Millis(n) => tokio::time::advance(Duration::from_millis(u64::from(n))).await,
            Step::Idle(k) => {
                tokio::time::advance(Duration::from_millis(1 << (k % 39))).await;
            }
        }
        // Every waiter looks: a place given becomes a permit.
        let mut j = 0;
        while j < waiting.len() {
            match waiting[j].ticket.poll_place(&mut cx) {
                Poll::Pending => j += 1,
                Poll::Ready(place) => {
                    let w = waiting.swap_remove(j);
                    match place {
                        Some(permit) => {
                            given += 1;
                            held.push(Held {
                                permit,
                                slow: w.slow,
                                priority: w.priority,
                            });
                        }
                        None => refused += 1,
                    }
                }
            }
        }
        check(shedder, &held, route, min, max, refused, given, i);
    }
    // Everything given back: nothing is left in flight.
    drop(waiting);
    drop(held);
    for s in shedder.stats() {
        assert_eq!(s.in_flight, 0, "left in flight: {s:?}");
        assert!(s.in_flight_by.iter().all(|(_, n)| *n == 0), "{s:?}");
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    shedder: &Shedder,
    held: &[Held],
    route: bool,
    min: u32,
    max: u32,
    refused: u64,
    given: u64,
    i: usize,
) {
    let (service, slow) = limits(shedder, route);
    let all = shedder.stats();
    for (which, s) in [(false, &service), (true, &slow)] {
        if which && !route {
            continue;
        }
        let mine: Vec<&Held> = held.iter().filter(|h| h.slow == which).collect();
        assert_eq!(
            s.in_flight as usize,
            mine.len(),
            "step {i}: in flight {s:?}"
        );
        for (p, n) in s.in_flight_by {
            let count = mine.iter().filter(|h| h.priority == p as usize).count();
            assert_eq!(n as usize, count, "step {i}: {p:?} in flight {s:?}");
        }
        assert!(
            (min..=max).contains(&s.limit),
            "step {i}: limit {} outside {min}..={max}",
            s.limit
        );
    }
    let shed: u64 = all.iter().map(LimitStats::shed_total).sum();
    assert_eq!(shed, refused, "step {i}: shed count");
    let admitted: u64 = all.iter().map(|s| s.admitted).sum();
    assert!(
        admitted >= given,
        "step {i}: admitted {admitted} < given {given}"
    );
}

/// Each priority's share of `limit` as documented: half, three quarters,
/// all, 1¼ and 1½ of it, rounded down; above Normal each one more than
/// the one below, below it each one less than the one above, and every
/// one at least 1. (A probe lowers the shares below High: never higher.)
fn caps(limit: u32) -> [u32; 5] {
    let l = f64::from(limit);
    let mut caps = [0.5, 0.75, 1.0, 1.25, 1.5].map(|s| (l * s) as u32);
    for i in 3..5 {
        caps[i] = caps[i].max(caps[i - 1] + 1);
    }
    for i in (0..2).rev() {
        caps[i] = caps[i].min(caps[i + 1].saturating_sub(1));
    }
    caps.map(|c| c.max(1))
}
