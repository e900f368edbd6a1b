//! Configuration errors.

/// A configuration that cannot be built. The message names the offending
/// builder field, so it can be shown to whoever wrote the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No algorithm was chosen on the builder.
    #[error("no algorithm chosen: call `.sliding_window(limit, window)` or `.gcra(rate, period)`")]
    MissingAlgorithm,
    /// A limit, rate or burst of zero: nothing would ever be admitted.
    #[error("`{field}` must be at least 1")]
    Zero {
        /// The builder field.
        field: &'static str,
    },
    /// A window or period of zero length.
    #[error("`{field}` must be a positive duration")]
    ZeroDuration {
        /// The builder field.
        field: &'static str,
    },
    /// A value above what the packed state can represent.
    #[error("`{field}` is {value}, above the maximum of {max}")]
    TooLarge {
        /// The builder field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// `rate` events per `period` is faster than one per nanosecond.
    #[error("`rate` {rate} per {period_nanos} ns is faster than one per nanosecond")]
    RateTooHigh {
        /// Events per period.
        rate: u64,
        /// The period in nanoseconds.
        period_nanos: u64,
    },
    /// `burst` times the emission interval does not fit in the clock's range.
    #[error(
        "`burst` {burst} times the emission interval of {interval_nanos} ns overflows the clock range"
    )]
    BurstOverflow {
        /// The burst given.
        burst: u64,
        /// Nanoseconds between two admissions at the sustained rate.
        interval_nanos: u64,
    },
    /// A quota finer than the clock can tell apart.
    #[error(
        "`{field}` spans {span_nanos} ns, less than the clock's resolution of {resolution_nanos} ns: \
         raise it to at least {needed}, or build with `.clock(MonotonicClock)`"
    )]
    BelowClockResolution {
        /// The builder field.
        field: &'static str,
        /// The time the field's value covers.
        span_nanos: u64,
        /// The clock's resolution.
        resolution_nanos: u64,
        /// The smallest value of the field that fits.
        needed: u64,
    },
    /// `burst` was set but the algorithm is not GCRA.
    #[error(
        "`burst` only applies to `.gcra(rate, period)`; the sliding window's burst is its limit"
    )]
    BurstWithoutGcra,
    /// A prefix length longer than the address.
    #[error("`{field}` prefix length /{len} is longer than the address (max /{max})")]
    PrefixLength {
        /// The builder field.
        field: &'static str,
        /// The length given.
        len: u8,
        /// The address length in bits.
        max: u8,
    },
    /// A text that is not an address or a prefix.
    #[error("`{field}`: {input:?} is not an IP address or CIDR prefix")]
    BadPrefix {
        /// The builder field.
        field: &'static str,
        /// The text given.
        input: String,
    },
    /// A rule of a [`Guard`](crate::http::Guard) failed to build; `source`
    /// names the field.
    #[error("rule `{rule}`: {source}")]
    InRule {
        /// The rule's name.
        rule: String,
        /// What is wrong with it.
        source: Box<ConfigError>,
    },
    /// A rule could not be shared through Redis (see
    /// `Rule::shared`, feature `redis`).
    #[error("cannot share the rule through Redis: {reason}")]
    SharedStore {
        /// Why.
        reason: String,
    },
    /// Two rules of one guard share a name, so stats and responses could
    /// not tell them apart.
    #[error("two rules are named `{rule}`")]
    DuplicateRule {
        /// The repeated name.
        rule: String,
    },
    /// A rule name that cannot appear in a `RateLimit` header: empty, or
    /// with characters other than visible ASCII, `"` and `\\` excepted.
    #[error("rule name {input:?} must be non-empty visible ASCII without quotes or backslashes")]
    BadRuleName {
        /// The name given.
        input: String,
    },
    /// A header name that HTTP does not allow.
    #[error("`{field}`: {input:?} is not a valid header name")]
    BadHeaderName {
        /// The builder field.
        field: &'static str,
        /// The text given.
        input: String,
    },
    /// Scoring thresholds out of order or outside 0 to 100.
    #[error(
        "ladder thresholds must satisfy 0 < throttle <= challenge <= ban <= 100; got throttle \
         {throttle}, challenge {challenge}, ban {ban}"
    )]
    BadLadder {
        /// The throttle threshold given.
        throttle: String,
        /// The challenge threshold given.
        challenge: String,
        /// The ban threshold given.
        ban: String,
    },
    /// A sliding window too short for its limit: its packed window
    /// counter would wrap within [`MAX_STALENESS`](crate::algo::sliding_window::MAX_STALENESS),
    /// and a caller whose clock reading is that stale could not be told
    /// from a long-idle key.
    #[error(
        "`window` of {window_nanos} ns is too short for a limit of {limit}: \
         at this limit a sliding window needs at least {min_nanos} ns"
    )]
    WindowTooShort {
        /// The window given, in nanoseconds.
        window_nanos: u64,
        /// The limit given.
        limit: u64,
        /// The shortest window this limit allows.
        min_nanos: u64,
    },
    /// A number outside the range its field allows.
    #[error("`{field}` is {value}, outside {range}")]
    OutOfRange {
        /// The builder field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The allowed range, e.g. `[0, 1)`.
        range: &'static str,
    },
    /// A trusted proxy prefix that holds every address: any client could
    /// name any address in the forwarding header.
    #[error(
        "`client_ip` trusts every address ({prefix}): any client could name any address in the \
         forwarding header. Trust only your proxies' networks, or call \
         `ClientIpConfig::allow_trusting_everyone()` if no client can reach the service except \
         through them"
    )]
    TrustsEveryone {
        /// The prefix, `0.0.0.0/0` or `::/0`.
        prefix: String,
    },
    /// A [`SessionCookie`](crate::http::SessionCookie) that browsers
    /// would refuse or that cannot work.
    #[error("session cookie: {reason}")]
    BadSessionCookie {
        /// What is wrong.
        reason: &'static str,
    },
}
