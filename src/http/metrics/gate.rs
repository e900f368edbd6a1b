//! A gate's families: connections accepted, refused and closed by reason.

use super::sink::{Kind, Out};
use super::text::Text;
use crate::http::gate::gate::Gate;

impl Gate {
    /// The gate's counters in the Prometheus text format 0.0.4:
    /// connections accepted, refused by reason, open now, and held by the
    /// tarpit.
    ///
    /// ```
    /// use floodguard::http::Gate;
    /// let gate = Gate::builder().build()?;
    /// assert!(gate.prometheus().contains("floodguard_gate_accepted_total 0\n"));
    /// # Ok::<(), floodguard::ConfigError>(())
    /// ```
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(1024);
        self.write_prometheus(&mut out);
        out
    }

    /// Appends [`prometheus`](Self::prometheus)'s text to `out`; with a
    /// guard's text in the same buffer, one scrape gets both.
    pub fn write_prometheus(&self, out: &mut String) {
        self.families(&mut Out::new(&mut Text { out }));
    }

    /// Every family of the gate, in order, to `t`.
    pub(super) fn families(&self, t: &mut Out<'_>) {
        let s = self.stats();
        t.counter(
            "floodguard_gate_accepted_total",
            "Connections the gate admitted (exempt ones included).",
            s.accepted,
        );
        t.family(
            "floodguard_gate_refused_total",
            Kind::Counter,
            "Connections the gate refused at accept, by reason: blocked (the verdict hook: \
             blocklisted or banned), per_ip and per_prefix (too many open), rate and \
             network_rate (new connections too fast), slow (the address left a request head \
             half sent), budget (the descriptor budget full of requests being served).",
        );
        for (reason, n) in [
            ("blocked", s.refused_banned),
            ("per_ip", s.refused_per_ip),
            ("per_prefix", s.refused_per_prefix),
            ("rate", s.refused_rate),
            ("network_rate", s.refused_network_rate),
            ("slow", s.refused_slow),
            ("budget", s.refused_budget),
        ] {
            t.sample("floodguard_gate_refused_total", &[("reason", reason)], n);
        }
        t.family(
            "floodguard_gate_closed_total",
            Kind::Counter,
            "Admitted connections the gate closed, by reason: head_timeout (a request head \
             not complete by its deadline), idle (keep-alive time), budget (room made for a \
             new connection).",
        );
        for (reason, n) in [
            ("head_timeout", s.closed_head_timeout),
            ("idle", s.closed_idle),
            ("budget", s.closed_budget),
        ] {
            t.sample("floodguard_gate_closed_total", &[("reason", reason)], n);
        }
        t.gauge(
            "floodguard_gate_open_connections",
            "Admitted connections open now.",
            s.open,
        );
        t.gauge(
            "floodguard_gate_descriptor_budget",
            "Descriptors the gate lets its connections and tarpit hold.",
            s.budget,
        );
        t.counter(
            "floodguard_gate_tarpit_held_total",
            "Refused connections held open by the tarpit before their reset.",
            s.tarpit.held,
        );
        t.counter(
            "floodguard_gate_tarpit_full_total",
            "Refused connections reset at once because the tarpit was full.",
            s.tarpit.full,
        );
        t.gauge(
            "floodguard_gate_tarpit_holding",
            "Refused connections held by the tarpit now.",
            s.tarpit.holding,
        );
    }
}
