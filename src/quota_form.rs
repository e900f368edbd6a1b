//! A quota in a configuration file: a sliding window as `limit` and
//! `window`, GCRA as `rate`, `period` and an optional `burst`. The same
//! five fields sit in a guard rule's table, so they are a value of their
//! own here, checked for which algorithm they describe.

use std::time::Duration;

use crate::Quota;
use crate::quota::Kind;

/// A quota's fields as a file spells them; each conversion names what is
/// missing or out of place.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::serde_duration::nonzero_option"
    )]
    pub(crate) window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rate: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::serde_duration::nonzero_option"
    )]
    pub(crate) period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) burst: Option<u64>,
}

const WHICH: &str = "give `limit` and `window` (a sliding window) or `rate` and `period` (GCRA, with an optional `burst`)";

impl TryFrom<QuotaFields> for Quota {
    type Error = String;

    fn try_from(f: QuotaFields) -> Result<Self, String> {
        match f {
            QuotaFields {
                limit: Some(limit),
                window: Some(window),
                rate: None,
                period: None,
                burst: None,
            } => Ok(Quota::sliding_window(limit, window)),
            QuotaFields {
                limit: None,
                window: None,
                rate: Some(rate),
                period: Some(period),
                burst,
            } => {
                let q = Quota::gcra(rate, period);
                Ok(burst.map_or(q, |b| q.burst(b)))
            }
            QuotaFields {
                burst: Some(_),
                window: Some(_),
                ..
            } => Err(format!("`burst` is for GCRA only: {WHICH}")),
            _ => Err(format!("no quota, or one of two kinds: {WHICH}")),
        }
    }
}

impl TryFrom<Quota> for QuotaFields {
    type Error = &'static str;

    fn try_from(q: Quota) -> Result<Self, &'static str> {
        match q.kind {
            Kind::Unset => Err("the quota is not set"),
            Kind::SlidingWindow { limit, window } => Ok(QuotaFields {
                limit: Some(limit),
                window: Some(window),
                burst: q.burst,
                ..QuotaFields::default()
            }),
            Kind::Gcra { rate, period } => Ok(QuotaFields {
                rate: Some(rate),
                period: Some(period),
                burst: q.burst,
                ..QuotaFields::default()
            }),
        }
    }
}

/// `{ limit = 100, window = "1m" }` or `{ rate = 20, period = "1s", burst = 40 }`.
impl serde::Serialize for Quota {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        QuotaFields::try_from(*self)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Quota {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Quota::try_from(QuotaFields::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_read_back_as_written_and_mixed_fields_are_refused() {
        let second = Duration::from_secs(1);
        for q in [
            Quota::sliding_window(600, Duration::from_secs(10)),
            Quota::gcra(20, second),
            Quota::gcra(20, second).burst(40),
        ] {
            let text = serde_json::to_string(&q).unwrap();
            assert_eq!(serde_json::from_str::<Quota>(&text).unwrap(), q, "{text}");
        }
        let text = serde_json::to_string(&Quota::gcra(20, second).burst(40)).unwrap();
        assert_eq!(text, r#"{"rate":20,"period":"1s","burst":40}"#);
        let err = |t: &str| serde_json::from_str::<Quota>(t).unwrap_err().to_string();
        assert!(err(r#"{"limit":5,"window":"1s","burst":2}"#).contains("GCRA only"));
        assert!(err(r#"{"limit":5,"period":"1s"}"#).contains("one of two kinds"));
        assert!(err(r#"{"limit":5,"window":"0s"}"#).contains("more than zero"));
        assert!(serde_json::from_str::<Quota>(r#"{"limit":5,"window":"soon"}"#).is_err());
        assert!(err(r#"{"limit":5,"windw":"1s"}"#).contains("unknown field"));
    }
}
