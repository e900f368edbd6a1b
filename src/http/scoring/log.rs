//! How scoring's events reach the logs: as `tracing` events with fields
//! (`client`, `duration_ms`, `score`, `reason`, shares), attack and flag
//! events one line each, and bans gathered into waves. A botnet of 5,000
//! banned in a minute is one line per interval with the count and the
//! networks most banned, not 5,000 lines; each ban is still a `debug`
//! event, an [`Event`] for the hook, and counted in the metrics.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::detect::site;
use crate::http::{AttackCause, Event};
use crate::{IpPrefix, Timestamp};

/// How long bans gather before their wave is logged.
pub(crate) const WAVE_EVERY: Duration = Duration::from_secs(10);

/// Networks a wave remembers, and names in its line.
const WAVE_SITES: usize = 1024;
const WAVE_TOP: usize = 5;

/// The bans since the last wave line.
#[derive(Debug, Default)]
pub(crate) struct BanWave {
    /// When the open wave's line is due (nanoseconds + 1; 0: none open).
    due: AtomicU64,
    open: Mutex<Wave>,
}

#[derive(Debug, Default)]
struct Wave {
    bans: u64,
    shadow: u64,
    sites: HashMap<IpPrefix, u32>,
}

impl BanWave {
    /// Notes a ban of `client` (`shadow`: only observed).
    fn note(&self, client: IpPrefix, shadow: bool, now: Timestamp) {
        let mut w = self.open.lock();
        if w.bans + w.shadow == 0 {
            let due = now.saturating_add(WAVE_EVERY).as_nanos() + 1;
            self.due.store(due, Ordering::Relaxed);
        }
        if shadow {
            w.shadow += 1;
        } else {
            w.bans += 1;
        }
        let site = site(client.network());
        if w.sites.len() < WAVE_SITES || w.sites.contains_key(&site) {
            *w.sites.entry(site).or_default() += 1;
        }
    }

    /// Logs the open wave if its interval is over. Cheap when none is
    /// open: one load.
    pub(crate) fn flush_due(&self, now: Timestamp) {
        let due = self.due.load(Ordering::Relaxed);
        if due == 0 || now.as_nanos() + 1 < due {
            return;
        }
        let wave = {
            let mut w = self.open.lock();
            if self.due.load(Ordering::Relaxed) != due {
                return;
            }
            self.due.store(0, Ordering::Relaxed);
            std::mem::take(&mut *w)
        };
        let mut top: Vec<(IpPrefix, u32)> = wave.sites.into_iter().collect();
        top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut networks = String::new();
        for (i, (site, n)) in top.iter().take(WAVE_TOP).enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(networks, "{sep}{site} ×{n}");
        }
        tracing::info!(
            bans = wave.bans,
            shadow_bans = wave.shadow,
            networks = top.len(),
            top = %networks,
            interval_s = WAVE_EVERY.as_secs(),
            "floodguard: clients banned"
        );
    }
}

/// Logs one event with its fields; bans go into `wave`.
pub(crate) fn log_event(e: &Event, wave: &BanWave, now: Timestamp) {
    match e {
        Event::AttackStarted {
            cause,
            rate,
            baseline_rate,
            latency,
            baseline_latency,
            suspect_share,
            refused_share,
        } => tracing::warn!(
            reason = match cause {
                AttackCause::Latency => "latency",
                AttackCause::Overload => "overload",
                AttackCause::SuspectSurge => "suspect_surge",
            },
            rate = *rate,
            baseline_rate = *baseline_rate,
            latency_ms = latency.as_millis() as u64,
            baseline_latency_ms = baseline_latency.as_millis() as u64,
            suspect_share = suspect_share.0,
            suspect_share_before = suspect_share.1,
            refused_share = refused_share.0,
            shed_share = refused_share.1,
            "floodguard: {e}"
        ),
        Event::AttackEnded { lasted } => {
            tracing::info!(duration_ms = lasted.as_millis() as u64, "floodguard: {e}")
        }
        Event::ClassFlagged(s) => tracing::warn!(
            cluster = %s.key,
            share = s.share,
            share_before = s.baseline_share,
            "floodguard: {e}"
        ),
        Event::PrefixFlagged(s) => tracing::warn!(
            network = %s.key,
            share = s.share,
            share_before = s.baseline_share,
            "floodguard: {e}"
        ),
        Event::RouteFlagged(s) => tracing::info!(
            route = %s.key,
            share = s.share,
            share_before = s.baseline_share,
            "floodguard: {e}"
        ),
        Event::ClientBanned {
            client,
            duration,
            report,
            offences,
            shadow,
        } => {
            tracing::debug!(
                client = %client,
                duration_ms = duration.as_millis() as u64,
                score = report.score(),
                offences = *offences,
                shadow = *shadow,
                reason = "score",
                "floodguard: client banned"
            );
            wave.note(*client, *shadow, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wave_gathers_bans_and_opens_again_after_its_line() {
        let wave = BanWave::default();
        let at = |s: u64| Timestamp::from_nanos(s * 1_000_000_000);
        for i in 0..50u8 {
            let client = IpPrefix::new(std::net::IpAddr::from([192, 0, 2, i]), 32).unwrap();
            wave.note(client, i % 10 == 0, at(1));
        }
        {
            let w = wave.open.lock();
            assert_eq!((w.bans, w.shadow, w.sites.len()), (45, 5, 1));
        }
        wave.flush_due(at(5));
        assert_eq!(wave.open.lock().bans, 45, "not due yet");
        wave.flush_due(at(11));
        assert_eq!(wave.open.lock().bans, 0);
        assert_eq!(wave.due.load(Ordering::Relaxed), 0);
        let client = IpPrefix::new(std::net::IpAddr::from([198, 51, 100, 1]), 32).unwrap();
        wave.note(client, false, at(12));
        assert_eq!(wave.open.lock().bans, 1);
    }
}
