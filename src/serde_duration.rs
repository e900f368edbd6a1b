//! Durations in configuration files: human-readable text such as `"1s"`,
//! `"250ms"` or `"1h 30m"`, read and written with `humantime`. Two forms
//! need more than plain `humantime_serde`: a duration that must not be zero
//! (a rule's window), and an optional one whose absence is written `"off"`
//! (a deadline turned off), so that every value a builder takes round-trips
//! through a file.

#![cfg_attr(not(feature = "tower"), allow(dead_code))]

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// A duration that must be more than zero, reported at its own field.
pub(crate) mod nonzero {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(d, s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let duration: Duration = humantime_serde::deserialize(d)?;
        if duration.is_zero() {
            return Err(D::Error::custom("must be more than zero"));
        }
        Ok(duration)
    }
}

/// The same, for an optional field.
pub(crate) mod nonzero_option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(d, s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::nonzero::deserialize(d).map(Some)
    }
}

/// An optional duration where `"off"` is none: TOML has no null.
pub(crate) mod or_off {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => humantime_serde::serialize(d, s),
            None => s.serialize_str("off"),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text == "off" {
            return Ok(None);
        }
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("{e} (a duration such as \"10s\", or \"off\")")))
    }
}
