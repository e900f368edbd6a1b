//! The pipeline that decides one request: resolve the client, apply
//! lists and bans, the session cookie and scoring's verdict, charge the
//! enforced rules all or none, observe the shadow rules, then take a place
//! in the overload limit.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::request::Parts;

use crate::http::guard::decision::{Inspection, RateInfo, RefusalKind};
use crate::http::guard::live::Live;
use crate::http::guard::notice::{setup_error, setup_warning};
use crate::http::guard::stats::{GuardCount, WiringCount};
use crate::http::identify::client_ip::IpSource;
use crate::http::identify::facts::{Facts, claims_grpc};
use crate::http::identify::peer::peer;
use crate::http::identify::session::Presented;
use crate::http::overload::shedder::Place;
use crate::http::scoring::assessment::{Assessment, Watch};
use crate::http::scoring::verdict::Verdict;
use crate::http::{Guard, GuardDecision, MissingPeer, Refusal};
use crate::{Clock, CompositeDecision, Pending, Timestamp, check_all};

/// Enforced rules whose checks fit on the stack; more use the heap.
pub(super) const INLINE_RULES: usize = 8;

/// How often the missing-peer setup error is logged at most.
/// How often the forgotten-proxy warning is given at most.
const PROXY_WARN_EVERY: Duration = Duration::from_secs(60);

/// How a server that records no peer address is fixed; logged, and in
/// debug builds the 500's body.
pub(crate) const MISSING_PEER_FIX: &str = "floodguard: request has no peer address, refused with 500. Serve axum \
with `floodguard::http::serve(listener, router)` or `into_make_service_with_connect_info::<SocketAddr>()`, \
serve tonic with its own server or `serve_with_incoming` over the Gate, or insert a \
`floodguard::http::PeerAddr` extension; to serve such requests anyway, set \
`.on_missing_peer(MissingPeer::SkipAddressRules)`";

pub(super) const NO_PEER_LOG_EVERY: Duration = Duration::from_secs(10);

impl<C: Clock> Guard<C> {
    /// Decides one request as the layer would (and charges it the same),
    /// for servers that are not Tower services, or to test a configuration.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::http::{Guard, PeerAddr, RefusalKind, Rule};
    ///
    /// let guard = Guard::builder()
    ///     .rule(Rule::per_ip("per-ip").sliding_window(1, Duration::from_secs(60)))
    ///     .build()?;
    /// let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    /// parts.extensions.insert(PeerAddr("192.0.2.1:4000".parse().unwrap()));
    /// assert!(guard.check(&parts).is_ok());
    /// let refusal = guard.check(&parts).unwrap_err();
    /// assert_eq!(refusal.kind(), RefusalKind::RateLimited);
    /// assert_eq!(refusal.rule(), Some("per-ip"));
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn check(&self, parts: &Parts) -> Result<GuardDecision, Refusal> {
        match self.inspect(parts, false) {
            Inspection::Pass { decision, .. } => Ok(decision),
            Inspection::Refuse { kind, rate, .. } => Err(Refusal {
                kind,
                rate: rate.map(|r| (r.rule, r.decision)),
            }),
        }
    }

    /// Decides one request inside a `floodguard_decision` span (at `debug`:
    /// the client, the reason, the binding rule and the score as fields).
    pub(crate) fn inspect(&self, parts: &Parts, admit: bool) -> Inspection {
        // One load when debug is off everywhere, before the span's checks.
        if tracing::level_filters::LevelFilter::current() < tracing::Level::DEBUG {
            return self.decide(parts, admit);
        }
        let span = tracing::debug_span!(
            "floodguard_decision",
            client = tracing::field::Empty,
            reason = tracing::field::Empty,
            rule = tracing::field::Empty,
            score = tracing::field::Empty,
        );
        if span.is_disabled() {
            return self.decide(parts, admit);
        }
        let outcome = span.in_scope(|| self.decide(parts, admit));
        if let Some(p) = peer(&parts.extensions) {
            let client = self
                .shared
                .live
                .load()
                .admission
                .client_ip
                .resolve(p.addr.ip(), &parts.headers)
                .ip;
            span.record("client", tracing::field::display(client));
        }
        match &outcome {
            Inspection::Pass { decision, .. } => {
                span.record("reason", "admitted");
                if let Some(rule) = decision.rule() {
                    span.record("rule", rule);
                }
                if let Some(score) = decision.score() {
                    span.record("score", score.score());
                }
            }
            Inspection::Refuse { kind, rate, .. } => {
                span.record("reason", kind.as_str());
                if let Some(r) = rate {
                    span.record("rule", &*r.rule);
                }
            }
        }
        outcome
    }

    /// Decides one request: resolve the client, apply lists and bans, then
    /// charge every enforced rule that applies, all or none; then, for the
    /// layer (`admit`), take a place in the overload limit.
    fn decide(&self, parts: &Parts, admit: bool) -> Inspection {
        let s = &*self.shared;
        // One version of the rules and lists decides the whole request,
        // whatever a reload swaps in meanwhile.
        let live = s.live.load();
        let live = &**live;
        s.counters.add(GuardCount::Requests, 1);
        let mut facts = Facts::new(parts, s.clock.now());
        let now = facts.now;
        match &facts.peer {
            Some(peer) => {
                let peer_ip = peer.addr.ip();
                let c = live.admission.client_ip.resolve(peer_ip, &parts.headers);
                if c.malformed {
                    s.counters.add(GuardCount::Malformed, 1);
                }
                facts.client = Some(c);
            }
            None => {
                s.counters.add(GuardCount::NoPeer, 1);
                if live.admission.missing_peer == MissingPeer::Refuse {
                    self.log_missing_peer(now);
                    return Inspection::refuse(RefusalKind::NoPeerAddress, false);
                }
            }
        }
        let client = facts.client;
        // Only a connection that is the client's own is closed after a
        // refusal: one from a trusted proxy carries other clients too.
        let close =
            live.admission.close_refused && client.is_some_and(|c| c.source == IpSource::Peer);
        if let Some(c) = client {
            if live.admission.safelist.contains(c.ip) {
                s.counters.add(GuardCount::Safelisted, 1);
                s.counters.add(GuardCount::Admitted, 1);
                let decision = GuardDecision {
                    client,
                    safelisted: true,
                    binding: None,
                    score: None,
                };
                return Inspection::Pass {
                    decision,
                    headers: None,
                    watch: None,
                    permit: None,
                    at: now,
                    session: None,
                };
            }
            if live.admission.blocklist.contains(c.ip) || self.banned_at(c.ip, now) {
                s.counters.add(GuardCount::RefusedBlocked, 1);
                if let Some(sc) = &s.scorer {
                    sc.blocked();
                }
                return Inspection::refuse(RefusalKind::Blocked, close);
            }
        }
        // gRPC clients keep no cookies: sessions leave them alone.
        facts.session = match (&s.session, client) {
            (Some(session), Some(c)) if !claims_grpc(&parts.headers) => {
                let p = session.check(&parts.headers, c.ip, now);
                match p {
                    Presented::Valid => s.counters.add(GuardCount::SessionValid, 1),
                    Presented::Invalid => s.counters.add(GuardCount::SessionInvalid, 1),
                    Presented::Absent => {}
                }
                Some(p)
            }
            _ => None,
        };
        if live.needs_route || s.scorer.is_some() {
            facts.read_route();
        }
        let mut cost_factor = 1;
        let mut standing = 0;
        let assessment = match (&s.scorer, client) {
            (Some(sc), Some(c)) => {
                let trusted = live.admission.client_ip.trusted();
                let seen = facts.read_look(live.admission.tls, |p| trusted.contains(p));
                let a = sc.assess(&facts, c.ip, &seen);
                if a.session_unreturned_news {
                    s.counters.add(GuardCount::SessionNotReturned, 1);
                }
                match sc.judge(&a, &facts, c.ip) {
                    Verdict::Serve { cost, standing: st } => {
                        cost_factor = cost;
                        standing = st;
                    }
                    Verdict::Ban(order) => {
                        self.record_ban(order.client, order.duration, now);
                        s.counters.add(GuardCount::RefusedScore, 1);
                        return Inspection::refuse(RefusalKind::Blocked, close);
                    }
                    Verdict::Hold => {
                        s.counters.add(GuardCount::RefusedSuspect, 1);
                        return Inspection::refuse(RefusalKind::Suspect, close);
                    }
                    Verdict::Challenge(page) => {
                        s.counters.add(GuardCount::RefusedChallenge, 1);
                        return Inspection::Refuse {
                            kind: RefusalKind::Challenged,
                            rate: None,
                            close: false,
                            page: Some(page),
                        };
                    }
                }
                Some(a)
            }
            _ => None,
        };
        let n = live.enforced.len();
        let (verdict, binding) = if n <= INLINE_RULES {
            let mut checks = [Pending::PLACEHOLDER; INLINE_RULES];
            let mut owners = [0; INLINE_RULES];
            let (checks, owners) = (&mut checks[..n], &mut owners[..n]);
            self.charge_enforced(live, &facts, cost_factor, checks, owners)
        } else {
            let (mut checks, mut owners) = (vec![Pending::PLACEHOLDER; n], vec![0; n]);
            self.charge_enforced(live, &facts, cost_factor, &mut checks, &mut owners)
        };
        let rate_info = |i: usize| {
            let rule = &live.enforced[i];
            RateInfo {
                rule: Arc::clone(&rule.name),
                policy: rule.policy.clone(),
                decision: verdict.decision,
            }
        };
        if !verdict.is_allowed() {
            if let Some(sc) = &s.scorer {
                // A throttled request refused only because of its throttled
                // cost is not pressure of its own: counting it would let a
                // throttle climb by itself to a ban.
                let pressure = cost_factor == 1 || !Self::admits_at_normal_cost(live, &facts);
                if let Some(order) = sc.rate_refused(assessment.as_ref(), pressure, now) {
                    self.record_ban(order.client, order.duration, now);
                    s.counters.add(GuardCount::RefusedScore, 1);
                    return Inspection::refuse(RefusalKind::Blocked, close);
                }
            }
            s.counters.add(GuardCount::RefusedRate, 1);
            // A proxy nobody trusted shows as its clients refused together:
            // looked for on refusals only, where it does harm.
            if let (Some(c), Some(p)) = (client, &facts.peer) {
                if c.source == IpSource::Peer {
                    let header = live.admission.client_ip.forwarded_header().name();
                    if let Some(v) = parts.headers.get(header) {
                        if !live.admission.client_ip.trusted().contains(p.addr.ip()) {
                            self.note_untrusted_forwarding(live, p.addr.ip(), v.as_bytes(), now);
                        }
                    }
                }
            }
            return Inspection::Refuse {
                kind: RefusalKind::RateLimited,
                rate: binding.map(rate_info),
                close,
                page: None,
            };
        }
        if !live.shadow.is_empty() {
            Self::observe_shadow_rules(live, &facts);
        }
        let permit = match (&s.shedder, admit) {
            (Some(shedder), true) => {
                if !live.needs_route {
                    facts.route = "";
                    facts.route_matched = false;
                }
                match shedder.acquire(&facts, standing) {
                    Ok(place) => Some(place),
                    Err(_) => {
                        self.count_shed();
                        return Inspection::refuse(RefusalKind::Overloaded, false);
                    }
                }
            }
            _ => None,
        };
        // A waiting request is counted when its wait ends.
        if !matches!(permit, Some(Place::Wait(_))) {
            s.counters.add(GuardCount::Admitted, 1);
        }
        let decision = GuardDecision {
            client,
            safelisted: false,
            binding: binding.map(|i| (Arc::clone(&live.enforced[i].name), verdict.decision)),
            score: assessment
                .as_ref()
                .map(|a| (a.report, a.action, a.fingerprint, a.cluster)),
        };
        Inspection::Pass {
            decision,
            headers: binding
                .filter(|_| live.admission.headers_on_success)
                .map(rate_info),
            watch: assessment.as_ref().map(Assessment::watch),
            permit,
            at: now,
            session: client
                .filter(|_| matches!(facts.session, Some(Presented::Absent | Presented::Invalid)))
                .map(|c| c.ip),
        }
    }

    /// The session cookie for a client at `ip` whose request, decided at
    /// `at`, was answered with a success; marks it sent in the client's
    /// profile when scoring watched the request.
    pub(crate) fn issue_session(
        &self,
        ip: IpAddr,
        at: Timestamp,
        watch: Option<&Watch>,
    ) -> Option<HeaderValue> {
        let s = &*self.shared;
        let session = s.session.as_ref()?;
        s.counters.add(GuardCount::SessionIssued, 1);
        if let (Some(sc), Some(w)) = (&s.scorer, watch) {
            sc.session_issued(w, at);
        }
        Some(session.set_cookie(ip, at))
    }

    /// The service answered a request that scoring assessed.
    pub(crate) fn answered(&self, a: &Watch, status: http::StatusCode, started: Timestamp) {
        if let Some(sc) = &self.shared.scorer {
            let now = self.shared.clock.now();
            sc.answered(a, status, now.saturating_duration_since(started), now);
        }
    }

    /// Writes the checks the enforced rules that apply to this request owe
    /// into `checks` (and each one's rule index into `owners`), runs them
    /// all or none, and returns the verdict with the binding rule's index.
    fn charge_enforced<'g>(
        &self,
        live: &'g Live<C>,
        facts: &Facts<'_>,
        cost_factor: u64,
        checks: &mut [Pending<'g>],
        owners: &mut [usize],
    ) -> (CompositeDecision, Option<usize>) {
        let mut len = 0;
        for (i, rule) in live.enforced.iter().enumerate() {
            if let Some(p) = rule.pending(facts, cost_factor) {
                checks[len] = p;
                owners[len] = i;
                len += 1;
            }
        }
        let verdict = check_all(facts.now, &checks[..len]);
        (verdict, verdict.index.map(|k| owners[k]))
    }

    /// Whether every enforced rule would admit the request at its normal
    /// cost now (peeked: nothing charged or counted).
    fn admits_at_normal_cost(live: &Live<C>, facts: &Facts<'_>) -> bool {
        live.enforced
            .iter()
            .filter_map(|r| r.pending(facts, 1))
            .all(|p| p.would_admit(facts.now))
    }

    /// Charges each shadow rule on its own; its limiter counts what it
    /// would have refused.
    fn observe_shadow_rules(live: &Live<C>, facts: &Facts<'_>) {
        for rule in &live.shadow {
            if let Some(p) = rule.pending(facts, 1) {
                if !check_all(facts.now, &[p]).is_allowed() {
                    tracing::debug!(rule = &*rule.name, client = ?facts.ip(), "floodguard: shadow rule would refuse");
                }
            }
        }
    }

    fn log_missing_peer(&self, now: Timestamp) {
        if self.shared.no_peer_notice.due(now, NO_PEER_LOG_EVERY) {
            setup_error(MISSING_PEER_FIX);
        }
    }

    /// A request from an untrusted `peer` carrying the forwarding header:
    /// counted, and when the peer forwards for many clients, a warning that
    /// names the fix.
    fn note_untrusted_forwarding(
        &self,
        live: &Live<C>,
        peer: IpAddr,
        value: &[u8],
        now: Timestamp,
    ) {
        let s = &*self.shared;
        s.wiring.add(WiringCount::UntrustedForwarding, 1);
        if s.forgotten_proxy.note(peer, value) && s.proxy_notice.due(now, PROXY_WARN_EVERY) {
            s.wiring.add(WiringCount::ForgottenProxyWarnings, 1);
            setup_warning(&format!(
                "floodguard: {peer} sends `{}` naming many different clients but is not a \
                 trusted proxy, so every client behind it shares one key (its address). If {peer} \
                 is your load balancer or CDN, trust its network: \
                 `.client_ip(ClientIpConfig::new().trust(\"{peer}/32\".parse()?))`",
                live.admission.client_ip.forwarded_header().name()
            ));
        }
    }
}
