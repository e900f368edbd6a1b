//! Each tick (100 ms): fold the counts into the baselines, judge the
//! rises, flag clusters, networks and routes, start and end attacks.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Detector;
use super::baseline::{Baseline, Counts, RouteName, TickState};
use super::detector::{Events, Judgement, SNAPSHOT_TOP, UNIT, WARM_WINDOWS, insert, nanos};
use crate::http::{AttackCause, Cluster, Event, Share};
use crate::{IpPrefix, Timestamp, TopK};

impl Detector {
    /// Closes the tick if `now` is past its end and nobody else is closing it.
    pub(super) fn maybe_tick(&self, now: Timestamp) -> Events {
        let end = self.tick_end.load(Ordering::Relaxed);
        if now.as_nanos() < end {
            return Vec::new();
        }
        let next = now.saturating_add(self.config.load().tick).as_nanos();
        if self
            .tick_end
            .compare_exchange(end, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Vec::new();
        }
        self.close_tick(now)
    }

    /// Takes this tick's counts, leaving zeros.
    fn take_tick(&self) -> Counts {
        let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed) as f64;
        Counts {
            requests: take(&self.requests),
            suspect: take(&self.suspect),
            refused: take(&self.refused),
            shed: take(&self.shed),
            answers: take(&self.answers),
            errors: take(&self.errors),
            latency_nanos: take(&self.latency_sum_nanos),
        }
    }

    fn close_tick(&self, now: Timestamp) -> Events {
        let c = self.config.load();
        let mut st = self.state.lock();
        let elapsed = now.saturating_duration_since(st.started).as_secs_f64();
        st.started = now;
        let tick = self.take_tick();
        if elapsed <= 0.0 {
            return Vec::new();
        }
        // A tick that ran long (no request came to close it) decays the
        // sums by its whole length.
        let decay = (-elapsed / c.window.as_secs_f64()).exp();
        st.sums.fold(&tick, decay);
        let keep = ((decay * 1024.0).round() as u64).min(1024);
        let (clusters, fresh, sites, providers, routes) = {
            let mut w = self.window.lock();
            let n = (st.sums.requests * UNIT as f64).max(1.0);
            let clusters: Vec<Share<Cluster>> = shares(&w.clusters, n, &st.clusters)
                .into_iter()
                .filter_map(|s| {
                    Some(Share {
                        key: *w.cluster_keys.get(s.key)?,
                        requests: s.requests,
                        new_clients: s.new_clients,
                        share: s.share,
                        baseline_share: s.baseline_share,
                    })
                })
                .collect();
            let sites = shares(&w.sites, n, &st.sites);
            let providers = shares(&w.providers, n, &Baseline::new(0));
            let routes: Vec<(Share<u64>, Box<str>)> = shares(&w.routes, n, &st.routes)
                .into_iter()
                .map(|s| {
                    let name = w
                        .route_names
                        .get(s.key)
                        .map_or("?", RouteName::as_str)
                        .into();
                    (s, name)
                })
                .collect();
            let fresh: Vec<(u64, u64)> = w
                .fresh
                .top(w.fresh.capacity())
                .into_iter()
                .map(|h| (h.key, h.count / UNIT))
                .collect();
            w.clusters.decay(keep, 1024);
            w.fresh.decay(keep, 1024);
            w.sites.decay(keep, 1024);
            w.providers.decay(keep, 1024);
            w.routes.decay(keep, 1024);
            (clusters, fresh, sites, providers, routes)
        };
        let fresh_of = |k: u64| fresh.iter().find(|(f, _)| *f == k).map_or(0, |(_, n)| *n);

        let span = c.span();
        let sums = st.sums;
        let rate = sums.requests / span;
        let suspect_rate = sums.suspect / span;
        let suspect_share = sums.suspect / sums.requests.max(1.0);
        let bad_share = (sums.refused + sums.errors) / sums.requests.max(1.0);
        let latency = if sums.answers >= 1.0 {
            sums.latency_nanos / sums.answers
        } else {
            st.latency
        };
        let min = f64::from(c.min_requests);
        let enough = sums.requests >= min;
        let surge = enough && st.rate.raised(rate, c.rate_margin, c.significance, span);
        let misbehaving = enough
            && sums.refused + sums.errors >= min / 2.0
            && bad_share >= c.misbehaviour_share
            && bad_share >= 2.0 * st.bad_share;
        let j = Judgement {
            surge,
            suspect_surge: (sums.suspect >= min
                && st
                    .suspect
                    .raised(suspect_rate, c.rate_margin, c.significance, span))
                || (surge && misbehaving),
            latency_degraded: sums.answers >= f64::from(c.min_answers)
                && latency >= c.latency_objective.as_nanos() as f64
                && latency >= c.latency_margin * st.latency,
            // Shedding over the window, and still shedding now.
            shedding: tick.shed > 0.0
                && sums.shed >= f64::from(c.min_shed)
                && sums.shed >= c.shed_share * sums.requests,
            misbehaving,
        };
        self.degraded
            .store(u64::from(j.degraded()), Ordering::Relaxed);

        if st.seen > 0.0 || tick.requests > 0.0 {
            st.ticks = st.ticks.saturating_add(1);
        }
        st.seen += tick.requests;
        // Armed once the warmup has passed and the baselines have seen
        // enough traffic: a service that starts quiet does not take its
        // first visitors for a surge.
        let armed = now >= st.armed_at && st.seen >= WARM_WINDOWS * min;
        // A busy period begins on a gentler rise than a surge (half the
        // margin and half the significance): it only ranks the clients who
        // come during it behind those who came before, when overload
        // protection has to choose, and the earlier it begins, the fewer of
        // a crowd's first members rank with the customers it found.
        let rising = enough
            && st.rate.raised(
                rate,
                1.0 + (c.rate_margin - 1.0) / 2.0,
                c.significance / 2.0,
                span,
            );
        self.mark_busy_period(&mut st, armed && (rising || j.degraded()), now);
        let attacking = self.under_attack();
        let mut events = Vec::new();
        if armed && !attacking && j.attack() {
            self.under_attack
                .store(now.as_nanos() | 1, Ordering::Relaxed);
            st.calm_since = None;
            st.snapshot.attack_since = Some(now);
            events.push(Event::AttackStarted {
                cause: if j.suspect_surge {
                    AttackCause::SuspectSurge
                } else if j.latency_degraded {
                    AttackCause::Latency
                } else {
                    AttackCause::Overload
                },
                rate,
                baseline_rate: st.rate.mean,
                latency: nanos(latency),
                baseline_latency: nanos(st.latency),
                suspect_share: (suspect_share, st.suspect.mean / st.rate.mean.max(1e-9)),
                refused_share: (
                    sums.refused / sums.requests.max(1.0),
                    sums.shed / sums.requests.max(1.0),
                ),
            });
        } else if attacking {
            match (j.attack(), st.calm_since) {
                (true, _) => st.calm_since = None,
                (false, None) => st.calm_since = Some(now),
                (false, Some(since)) if now.saturating_duration_since(since) >= c.cooldown => {
                    let began = st.snapshot.attack_since.take().unwrap_or(now);
                    self.end_attack();
                    st.snapshot.flagged_classes.clear();
                    st.snapshot.flagged_prefixes.clear();
                    st.snapshot.flagged_routes.clear();
                    events.push(Event::AttackEnded {
                        lasted: now.saturating_duration_since(began),
                    });
                }
                (false, Some(_)) => {}
            }
        }

        // The baselines learn from traffic that behaves like people, during
        // an attack too (so that growth, or a crowd that stays, becomes the
        // norm); from everything while warming up, as a plain mean.
        let warm = !armed;
        let alpha = if warm {
            1.0 / f64::from(st.ticks.max(1))
        } else {
            1.0 - (-elapsed / c.baseline_half_life.as_secs_f64()).exp2()
        };
        if warm || j.people_like() {
            st.rate.learn(rate, alpha);
            st.suspect.learn(suspect_rate, alpha);
            st.bad_share += alpha * (bad_share - st.bad_share);
        }
        if (warm || !j.degraded()) && sums.answers >= 1.0 {
            st.latency += alpha * (latency - st.latency);
        }
        if warm || (j.people_like() && !self.under_attack()) {
            let c: Vec<(u64, f64)> = clusters.iter().map(|s| (s.key.id(), s.share)).collect();
            st.clusters.learn(&c, alpha);
            let p: Vec<(IpPrefix, f64)> = sites.iter().map(|s| (s.key, s.share)).collect();
            st.sites.learn(&p, alpha);
            let r: Vec<(u64, f64)> = routes.iter().map(|(s, _)| (s.key, s.share)).collect();
            st.routes.learn(&r, alpha);
        }

        let clusters: Vec<Share<Cluster>> = clusters
            .into_iter()
            .map(|s| Share {
                new_clients: fresh_of(s.key.id()),
                ..s
            })
            .collect();
        let named = |s: &Share<u64>, name: &str| Share {
            key: name.to_owned(),
            requests: s.requests,
            new_clients: 0,
            share: s.share,
            baseline_share: s.baseline_share,
        };
        if self.under_attack() {
            // The widest clusters first: one flagged holds every cluster
            // inside it, which then need no place.
            let mut by_width: Vec<&Share<Cluster>> = clusters.iter().collect();
            by_width.sort_by_key(|s| std::cmp::Reverse(s.key.width()));
            for s in by_width {
                let known = st.snapshot.flagged_classes.iter().any(|f| {
                    f.key == s.key || f.key == s.key.coarse() || f.key == s.key.family_wide()
                });
                if !known
                    && s.new_clients >= u64::from(c.min_new_clients)
                    && self.surged(s, sums.requests)
                    && insert(&self.flagged_classes, s.key.id())
                {
                    self.flagged_count.fetch_add(1, Ordering::Relaxed);
                    st.snapshot.flagged_classes.push(*s);
                    events.push(Event::ClassFlagged(*s));
                }
            }
            for s in &sites {
                let known = st.snapshot.flagged_prefixes.iter().any(|f| f.key == s.key);
                let id = self.hasher.hash_one(s.key) | 1;
                let s = Share {
                    new_clients: fresh_of(self.fresh_site(s.key)),
                    ..*s
                };
                if !known
                    && s.new_clients >= u64::from(c.min_new_clients)
                    && self.surged(&s, sums.requests)
                    && insert(&self.flagged_sites, id)
                {
                    self.flagged_count.fetch_add(1, Ordering::Relaxed);
                    st.snapshot.flagged_prefixes.push(s);
                    events.push(Event::PrefixFlagged(s));
                }
            }
            for (s, name) in &routes {
                let known = st.snapshot.flagged_routes.iter().any(|f| *f.key == **name);
                if !known
                    && self.surged(s, sums.requests)
                    && insert(&self.flagged_routes, s.key | 1)
                {
                    self.flagged_count.fetch_add(1, Ordering::Relaxed);
                    let s = named(s, name);
                    st.snapshot.flagged_routes.push(s.clone());
                    events.push(Event::RouteFlagged(s));
                }
            }
        }

        let snap_latency = st.latency;
        let (baseline_rate, baseline_suspect) = (st.rate.mean, st.suspect.mean);
        let snap = &mut st.snapshot;
        snap.under_attack = self.under_attack();
        snap.degraded = j.degraded();
        snap.rate = rate;
        snap.latency = nanos(latency);
        snap.baseline_rate = baseline_rate;
        snap.baseline_latency = nanos(snap_latency);
        snap.suspect_share = suspect_share;
        snap.baseline_suspect_share = baseline_suspect / baseline_rate.max(1e-9);
        snap.bad_share = bad_share;
        snap.top_classes = clusters.into_iter().take(SNAPSHOT_TOP).collect();
        snap.top_prefixes = sites.into_iter().take(SNAPSHOT_TOP).collect();
        snap.top_networks = providers.into_iter().take(SNAPSHOT_TOP).collect();
        snap.top_routes = routes
            .iter()
            .take(SNAPSHOT_TOP)
            .map(|(s, name)| named(s, name))
            .collect();
        events
    }

    /// Whether a key's share surged: at least `surge_share` of the window's
    /// `requests`, `surge_factor` times its baseline share, significantly,
    /// over at least half of `min_requests`.
    fn surged<K>(&self, s: &Share<K>, requests: f64) -> bool {
        let c = self.config.load();
        let count = s.requests as f64;
        let expected = s.baseline_share * requests;
        count >= f64::from(c.min_requests) / 2.0
            && s.share >= c.surge_share
            && s.share >= c.surge_factor * s.baseline_share
            && count - expected >= c.significance * (expected + 1.0).sqrt()
    }

    /// Begins a busy period at a busy tick, or ends one after
    /// [`Detection::cooldown`] of ticks at ease.
    fn mark_busy_period(&self, st: &mut TickState, busy: bool, now: Timestamp) {
        let n = self.busy.load(Ordering::Relaxed);
        let in_period = n & 1 == 1;
        if busy {
            st.ease_since = None;
            if !in_period {
                self.busy.store(n.wrapping_add(1), Ordering::Relaxed);
            }
        } else if in_period {
            let since = *st.ease_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.config.load().cooldown {
                self.busy.store(n.wrapping_add(1), Ordering::Relaxed);
                st.ease_since = None;
            }
        }
    }

    fn end_attack(&self) {
        self.under_attack.store(0, Ordering::Relaxed);
        for a in self
            .flagged_classes
            .iter()
            .chain(&self.flagged_sites)
            .chain(&self.flagged_routes)
        {
            a.store(0, Ordering::Relaxed);
        }
        self.flagged_count.store(0, Ordering::Relaxed);
    }
}

/// The sketch's heavy hitters as shares of `total` (in sketch units), with
/// their baselines; counts in requests.
pub(super) fn shares<K: Copy + Eq + Hash>(
    top: &TopK<K>,
    total: f64,
    base: &Baseline<K>,
) -> Vec<Share<K>> {
    top.top(top.capacity())
        .into_iter()
        .map(|h| Share {
            requests: h.count / UNIT,
            new_clients: 0,
            share: h.count as f64 / total,
            baseline_share: base.share(&h.key),
            key: h.key,
        })
        .collect()
}
