//! Wrong tokens, counted: a console reachable by many (an internal
//! network is rarely one person) must not let anyone guess at its token
//! at line rate. Ten wrong tokens a minute from one address bar that
//! address for about a minute (a sliding window): every sign-in from it is then
//! answered 429 without the token being compared, the right one too (else
//! the bar would tell a guess apart). A server that records no peer
//! address counts all callers together.

use std::net::IpAddr;
use std::time::Duration;

use crate::{ConfigError, KeyedLimiter, Quota};

/// Wrong tokens allowed per address in a minute.
pub(super) const WRONG_TOKENS: u64 = 10;

/// Addresses whose wrong tokens are tracked at once.
const TRACKED: usize = 4_096;

pub(super) struct Guesses {
    wrong: KeyedLimiter<[u8]>,
}

impl Guesses {
    pub(super) fn new() -> Result<Self, ConfigError> {
        let wrong = KeyedLimiter::<[u8]>::builder()
            .quota(Quota::sliding_window(WRONG_TOKENS, Duration::from_secs(60)))
            .capacity(TRACKED)
            .build()?;
        Ok(Guesses { wrong })
    }

    /// How long `peer` must wait before it may try a token again, if it
    /// is barred.
    pub(super) fn barred(&self, peer: Option<IpAddr>) -> Option<Duration> {
        let d = self.wrong.peek_at(&key(peer), 1, self.wrong.now());
        d.retry_after()
    }

    /// `peer` sent a wrong token.
    pub(super) fn wrong(&self, peer: Option<IpAddr>) {
        let _ = self.wrong.check(&key(peer));
    }
}

fn key(peer: Option<IpAddr>) -> Vec<u8> {
    match peer.map(crate::ip::canonical) {
        Some(IpAddr::V4(a)) => a.octets().to_vec(),
        Some(IpAddr::V6(a)) => a.octets().to_vec(),
        None => Vec::new(),
    }
}
