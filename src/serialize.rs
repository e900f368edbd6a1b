//! How counters, snapshots and events are written out with serde (feature
//! `serde`): `Serialize` only, for a JSON view of a guard.
//!
//! One convention everywhere, so that a JavaScript client reads every value
//! as a plain number: **durations are seconds as `f64`**, and **timestamps
//! are seconds as `f64` on the guard's clock** (its origin is arbitrary:
//! compare them with the snapshot's `now`). Addresses and networks are
//! their text form (`"192.0.2.0/24"`, `IpPrefix`'s impl in `ip.rs`), 64-bit ids are hexadecimal strings
//! (a JavaScript number holds only 53 bits), enumerations are their short
//! snake_case names.

#[cfg(feature = "tower")]
use std::time::Duration;

use serde::ser::{Serialize, Serializer};

use crate::Timestamp;

/// A duration as seconds.
#[cfg(feature = "tower")]
pub(crate) fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// An optional duration as seconds, or null.
#[cfg(feature = "tower")]
pub(crate) fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Pairs of a duration and a count (a histogram's buckets) as
/// `[[seconds, count], ...]`.
#[cfg(feature = "tower")]
pub(crate) fn secs_pairs<S: Serializer>(v: &[(Duration, u64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for (d, n) in v {
        seq.serialize_element(&(d.as_secs_f64(), n))?;
    }
    seq.end()
}

/// Counts by priority as a JSON object `{"lowest": n, ..., "highest": n}`.
#[cfg(feature = "tower")]
pub(crate) fn by_priority<S, V>(
    pairs: &[(crate::http::Priority, V)],
    s: S,
) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    V: Serialize,
{
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k.name(), v)?;
    }
    map.end()
}

/// Bans as `[{"prefix": "192.0.2.7/32", "remaining": seconds}, ...]`.
#[cfg(feature = "tower")]
pub(crate) fn prefix_durations<S: Serializer>(
    v: &[(crate::IpPrefix, Duration)],
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Ban<'a> {
        prefix: &'a crate::IpPrefix,
        #[serde(serialize_with = "secs")]
        remaining: Duration,
    }
    s.collect_seq(v.iter().map(|(prefix, remaining)| Ban {
        prefix,
        remaining: *remaining,
    }))
}

/// Seconds on its clock, as `f64`.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_nanos() as f64 / 1e9)
    }
}
