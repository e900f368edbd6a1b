//! How much a request matters (its criticality, from the user's closure)
//! and its admission rank (criticality and the client's standing).

/// How much a request matters to the service, as your closure says
/// ([`Overload::criticality`](crate::http::Overload::criticality)): checkout above search above a crawler's
/// page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Criticality {
    /// Shed before anything else (prefetches, crawlers, reports).
    Sheddable,
    /// Most requests.
    #[default]
    Default,
    /// Shed last (checkout, login, health of the business).
    Critical,
}

/// The admission rank of a request: its [`Criticality`], moved up to two
/// steps by its client's standing (with scoring on: clean or suspicious
/// score, light or heavy use; light only for a client seen before, with a
/// good exchange while the service was calm).
///
/// A request is admitted while the requests in flight, as it counts them,
/// are fewer than its priority's [share](Self::share) of the limit. It
/// counts every request of its priority and above, and those of lower
/// priorities only as far as each may hold now (the lowest's up to its
/// share, the two lowest's together up to the second's, and so on): after
/// the limit falls, the lower priorities' requests still in the service
/// from before do not keep a higher priority out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Admitted while fewer than half the limit are in flight.
    Lowest,
    /// ... three quarters of the limit.
    Low,
    /// ... the limit.
    Normal,
    /// ... a quarter above the limit.
    High,
    /// ... half above the limit.
    Highest,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 5] = [
        Priority::Lowest,
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Highest,
    ];

    /// The share of the limit requests of this priority may fill (rounded
    /// down; at small limits each priority still has a place more than the
    /// one below it, and every priority at least one).
    pub fn share(self) -> f64 {
        match self {
            Priority::Lowest => 0.5,
            Priority::Low => 0.75,
            Priority::Normal => 1.0,
            Priority::High => 1.25,
            Priority::Highest => 1.5,
        }
    }

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Lowest => "lowest",
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Highest => "highest",
        }
    }

    /// The rank of a request of `criticality` from a client of `standing`
    /// (−2 to +2).
    pub(crate) fn of(criticality: Criticality, standing: i8) -> Priority {
        let base: i8 = match criticality {
            Criticality::Sheddable => 1,
            Criticality::Default => 2,
            Criticality::Critical => 3,
        };
        let rank = (base + standing).clamp(0, 4);
        Priority::ALL[rank as usize]
    }
}
