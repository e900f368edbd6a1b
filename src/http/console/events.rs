//! The latest events of a guard, for the console to list: [`EventLog`]
//! takes them from the guard's event hook. Bans come by the thousand in a
//! flood, so they are kept apart from the rarer events (an attack's start
//! and end, what it flagged), which a flood of bans must not push out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::http::Event;

/// Bans kept, the latest.
const BANS_KEPT: usize = 50;

/// The latest events of a [`Guard`](crate::http::Guard), for a
/// [`Console`](crate::http::Console) to show (feature `console`): give
/// its [`hook`](Self::hook) to
/// [`GuardBuilder::on_event`](crate::http::GuardBuilder::on_event), and the
/// log to [`Console::events`](crate::http::Console::events). It keeps the
/// last `capacity` attack events (started, ended, cluster, network or
/// route flagged) and, apart, the last 50 bans, each with the wall-clock
/// time it happened; memory is bounded whatever the flood.
///
/// ```
/// use floodguard::http::{Console, EventLog, Guard, Scoring};
///
/// let events = EventLog::new(100);
/// let guard = Guard::builder()
///     .default_rules()
///     .scoring(Scoring::new())
///     .on_event(events.hook())
///     .build()?;
/// let console = Console::new(guard).token("a-long-random-token-0123").events(&events);
/// # let _ = console;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Kept>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = self.inner.lock();
        f.debug_struct("EventLog")
            .field("events", &k.events.len())
            .field("bans", &k.bans.len())
            .finish_non_exhaustive()
    }
}

struct Kept {
    capacity: usize,
    events: VecDeque<(SystemTime, Event)>,
    bans: VecDeque<(SystemTime, Event)>,
}

/// One event as the page shows it.
#[derive(Debug, serde::Serialize)]
pub(super) struct Shown {
    /// Seconds since the Unix epoch.
    at: f64,
    /// The event's kind, as its JSON `type`.
    kind: &'static str,
    /// The event in words.
    text: String,
}

impl EventLog {
    /// A log keeping the last `capacity` attack events (at least one) and
    /// the last 50 bans.
    pub fn new(capacity: usize) -> Self {
        EventLog {
            inner: Arc::new(Mutex::new(Kept {
                capacity: capacity.max(1),
                events: VecDeque::new(),
                bans: VecDeque::new(),
            })),
        }
    }

    /// The hook to give [`GuardBuilder::on_event`](crate::http::GuardBuilder::on_event):
    /// it [`record`](Self::record)s each event.
    pub fn hook(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let log = self.clone();
        move |e: &Event| log.record(e)
    }

    /// Keeps `e` (a clone, under a short lock), for a hook of your own
    /// that does more with each event.
    pub fn record(&self, e: &Event) {
        let now = SystemTime::now();
        let mut k = self.inner.lock();
        let (list, cap) = match e {
            Event::ClientBanned { .. } => (&mut k.bans, BANS_KEPT),
            _ => {
                let cap = k.capacity;
                (&mut k.events, cap)
            }
        };
        if list.len() == cap {
            list.pop_front();
        }
        list.push_back((now, e.clone()));
    }

    /// The events kept, newest first, in words.
    pub(super) fn shown(&self) -> Vec<Shown> {
        let k = self.inner.lock();
        let mut all: Vec<Shown> = k
            .events
            .iter()
            .chain(&k.bans)
            .map(|(at, e)| Shown {
                at: at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                kind: kind(e),
                text: e.to_string(),
            })
            .collect();
        all.sort_by(|a, b| b.at.total_cmp(&a.at));
        all
    }
}

fn kind(e: &Event) -> &'static str {
    match e {
        Event::AttackStarted { .. } => "attack_started",
        Event::AttackEnded { .. } => "attack_ended",
        Event::ClassFlagged(_) => "class_flagged",
        Event::PrefixFlagged(_) => "prefix_flagged",
        Event::RouteFlagged(_) => "route_flagged",
        Event::ClientBanned { .. } => "client_banned",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bans_do_not_push_out_the_attack_and_memory_stays_bounded() {
        let log = EventLog::new(3);
        let hook = log.hook();
        hook(&Event::AttackEnded {
            lasted: Duration::from_secs(12),
        });
        for i in 0..1_000u32 {
            hook(&Event::ClientBanned {
                client: format!("192.0.2.{}", i % 250).parse().unwrap(),
                duration: Duration::from_secs(60),
                report: Default::default(),
                offences: 0,
                shadow: false,
            });
        }
        for _ in 0..5 {
            hook(&Event::AttackEnded {
                lasted: Duration::from_secs(1),
            });
        }
        let shown = log.shown();
        let ended = shown.iter().filter(|s| s.kind == "attack_ended").count();
        let banned = shown.iter().filter(|s| s.kind == "client_banned").count();
        assert_eq!((ended, banned), (3, BANS_KEPT));
        // The three attack events kept are the latest: the 12 s one went.
        assert!(shown.iter().all(|s| !s.text.contains("12.0 s")));
        assert!(shown.windows(2).all(|w| w[0].at >= w[1].at), "newest first");
        assert!(shown[0].text.starts_with("attack ended") || shown[0].kind == "client_banned");
    }
}
