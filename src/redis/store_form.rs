//! The Redis store's settings in a configuration file:
//!
//! ```toml
//! url = "redis://127.0.0.1:6379/"
//! namespace = "shop"
//! secret = "000102030405060708090a0b0c0d0e0f"   # optional; keep the file secret
//! timeout = "100ms"
//! on_failure = "local"                          # or "refuse"
//! retry_every = "1s"
//! trip_after = 2
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::{OnFailure, RedisStore, RedisStoreBuilder};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreForm {
    url: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default = "default_timeout", with = "crate::serde_duration::nonzero")]
    timeout: Duration,
    #[serde(default)]
    on_failure: OnFailure,
    #[serde(default = "default_retry", with = "crate::serde_duration::nonzero")]
    retry_every: Duration,
    #[serde(default = "default_trip")]
    trip_after: u32,
}

fn defaults() -> RedisStoreBuilder {
    RedisStore::builder("")
}

fn default_namespace() -> String {
    defaults().namespace
}

fn default_timeout() -> Duration {
    defaults().timeout
}

fn default_retry() -> Duration {
    defaults().retry_every
}

fn default_trip() -> u32 {
    defaults().trip_after
}

/// `url`, `namespace`, `secret` (32 hex digits), `timeout`, `on_failure`
/// (`local` or `refuse`), `retry_every` and `trip_after`; all but `url`
/// default as [`RedisStore::builder`] does.
impl Serialize for RedisStoreBuilder {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoreForm {
            url: self.url.clone(),
            namespace: self.namespace.clone(),
            secret: self.secret.as_ref().map(crate::hex16::encode),
            timeout: self.timeout,
            on_failure: self.on_failure,
            retry_every: self.retry_every,
            trip_after: self.trip_after,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RedisStoreBuilder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = StoreForm::deserialize(d)?;
        let mut b = RedisStore::builder(f.url)
            .namespace(f.namespace)
            .timeout(f.timeout)
            .on_failure(f.on_failure)
            .retry_every(f.retry_every)
            .trip_after(f.trip_after);
        if let Some(secret) = f.secret {
            let key =
                crate::hex16::key_field("secret", &secret).map_err(serde::de::Error::custom)?;
            b = b.secret(key);
        }
        Ok(b)
    }
}
