//! Several limiters, one request: charged on all or on none.

use crate::Timestamp;
use crate::algo::Op;
use crate::decision::Decision;

/// What [`check_all`] needs from a limiter, whatever its key type.
pub(crate) trait Charge: Sync {
    /// `aux` is a second hash of the key for limiters that need one (the
    /// shared limiter's Redis key); others ignore it.
    fn apply_hashed(&self, key: u64, aux: u64, now: Timestamp, op: Op) -> Decision;
    fn record(&self, allowed: bool);
}

/// One (limiter, key, cost) check waiting to run in [`check_all`]; made by
/// [`KeyedLimiter::pending`](crate::KeyedLimiter::pending).
#[derive(Clone, Copy)]
pub struct Pending<'a> {
    limiter: &'a dyn Charge,
    key: u64,
    aux: u64,
    cost: u64,
}

impl std::fmt::Debug for Pending<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("cost", &self.cost).finish()
    }
}

/// Fills unused places of fixed-size arrays of [`Pending`]; never checked.
#[cfg(feature = "tower")]
struct NoCharge;

#[cfg(feature = "tower")]
impl Charge for NoCharge {
    fn apply_hashed(&self, _: u64, _: u64, _: Timestamp, _: Op) -> Decision {
        Decision::allow(u64::MAX, u64::MAX, 1, 0)
    }

    fn record(&self, _: bool) {}
}

impl<'a> Pending<'a> {
    pub(crate) fn new(limiter: &'a dyn Charge, key: u64, cost: u64) -> Self {
        Pending {
            limiter,
            key,
            aux: 0,
            cost,
        }
    }

    /// A check that also carries a second hash of the key.
    #[cfg(feature = "redis")]
    pub(crate) fn with_aux(limiter: &'a dyn Charge, key: u64, aux: u64, cost: u64) -> Self {
        Pending {
            limiter,
            key,
            aux,
            cost,
        }
    }

    /// A placeholder to fill a fixed-size array before the real checks are
    /// written into it, so a request's checks need no heap allocation.
    #[cfg(feature = "tower")]
    pub(crate) const PLACEHOLDER: Pending<'static> = Pending {
        limiter: &NoCharge,
        key: 0,
        aux: 0,
        cost: 0,
    };

    fn run(&self, now: Timestamp, op: Op) -> Decision {
        self.limiter.apply_hashed(self.key, self.aux, now, op)
    }

    /// Whether the check would admit now, charging and counting nothing.
    #[cfg(feature = "tower")]
    pub(crate) fn would_admit(&self, now: Timestamp) -> bool {
        self.run(now, Op::Peek(self.cost)).is_allowed()
    }
}

/// The outcome of [`check_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompositeDecision {
    /// The binding decision: for a denial, the refusing check with the
    /// longest wait (the client must wait for all of them); when admitted,
    /// the check with the least remaining allowance.
    pub decision: Decision,
    /// Index of that check in the slice; `None` for an empty slice.
    pub index: Option<usize>,
}

impl CompositeDecision {
    /// Whether every check admitted the request (and all were charged).
    pub fn is_allowed(&self) -> bool {
        self.decision.is_allowed()
    }
}

/// Runs every check for one request at one time and charges all of them or
/// none: a later check's refusal never leaves earlier ones charged.
///
/// The checks are first peeked (no writes), so a request that any limiter
/// refuses costs only reads. If all admit, each is charged; should a charge
/// be refused after all (another thread got there first), the charges
/// already made are refunded. Each limiter's `denied` counter counts the
/// requests it refused itself; `admitted` counts requests admitted by all.
///
/// ```
/// use std::net::IpAddr;
/// use std::time::Duration;
/// use floodguard::{check_all, IpPrefix, KeyedLimiter, ManualClock};
///
/// let clock = ManualClock::new();
/// let per_ip = KeyedLimiter::<IpAddr>::builder()
///     .sliding_window(10, Duration::from_secs(1))
///     .clock(clock.clone())
///     .build()?;
/// let per_net = KeyedLimiter::<IpPrefix>::builder()
///     .sliding_window(1, Duration::from_secs(1))
///     .clock(clock.clone())
///     .build()?;
///
/// let ip: IpAddr = "198.51.100.7".parse().unwrap();
/// let net = IpPrefix::new(ip, 24)?;
/// let now = clock.now();
/// assert!(check_all(now, &[per_ip.pending(&ip), per_net.pending(&net)]).is_allowed());
/// let second = check_all(now, &[per_ip.pending(&ip), per_net.pending(&net)]);
/// assert!(!second.is_allowed());
/// assert_eq!(second.index, Some(1));
/// // The refused request left the per-IP limiter uncharged: 9 remain.
/// assert_eq!(per_ip.peek_at(&ip, 0, now).remaining(), 9);
/// # use floodguard::Clock;
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
pub fn check_all(now: Timestamp, checks: &[Pending<'_>]) -> CompositeDecision {
    if let [only] = checks {
        let decision = only.run(now, Op::Check(only.cost));
        only.limiter.record(decision.is_allowed());
        return CompositeDecision {
            decision,
            index: Some(0),
        };
    }
    if let Some(denial) = first_pass(now, checks) {
        return denial;
    }
    let mut binding: Option<(usize, Decision)> = None;
    for (i, c) in checks.iter().enumerate() {
        let d = c.run(now, Op::Check(c.cost));
        if d.is_denied() {
            for earlier in &checks[..i] {
                earlier.run(now, Op::Refund(earlier.cost));
            }
            c.limiter.record(false);
            return CompositeDecision {
                decision: d,
                index: Some(i),
            };
        }
        if binding.is_none_or(|(_, b)| d.remaining() < b.remaining()) {
            binding = Some((i, d));
        }
    }
    for c in checks {
        c.limiter.record(true);
    }
    match binding {
        Some((i, decision)) => CompositeDecision {
            decision,
            index: Some(i),
        },
        None => CompositeDecision {
            decision: Decision::allow(u64::MAX, u64::MAX, 1, 0),
            index: None,
        },
    }
}

/// Peeks every check; returns the binding denial if any refuses.
fn first_pass(now: Timestamp, checks: &[Pending<'_>]) -> Option<CompositeDecision> {
    let mut worst: Option<(usize, Decision)> = None;
    for (i, c) in checks.iter().enumerate() {
        let d = c.run(now, Op::Peek(c.cost));
        if d.is_denied() {
            c.limiter.record(false);
            if worst.is_none_or(|(_, w)| d.retry_after() > w.retry_after()) {
                worst = Some((i, d));
            }
        }
    }
    worst.map(|(i, decision)| CompositeDecision {
        decision,
        index: Some(i),
    })
}
