//! A proxy the guard was not told to trust. Requests from one untrusted
//! peer whose forwarding headers name many different clients come from a
//! proxy, a load balancer or a CDN: every client behind it is keyed on the
//! proxy's address, one key for all, and one busy client refuses the rest.
//! The guard counts such requests and warns, naming the fix.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Peers followed at once (direct-mapped; a collision only delays a
/// warning).
const SLOTS: usize = 256;

/// Different forwarded values from one peer that make it a proxy (of the
/// 32 buckets a slot keeps).
const DISTINCT: u32 = 8;

/// Per peer slot: the peer's hash in the high half, a bit per bucket of
/// forwarded values seen in the low half.
pub(crate) struct ForgottenProxy {
    slots: Box<[AtomicU64]>,
    hasher: ahash::RandomState,
}

impl std::fmt::Debug for ForgottenProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgottenProxy").finish_non_exhaustive()
    }
}

impl Default for ForgottenProxy {
    fn default() -> Self {
        ForgottenProxy {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl ForgottenProxy {
    /// Notes a request from the untrusted `peer` carrying the forwarding
    /// header `value`; true once the peer has forwarded enough different
    /// values to be a proxy.
    pub(crate) fn note(&self, peer: IpAddr, value: &[u8]) -> bool {
        let h = self.hasher.hash_one(peer);
        let slot = &self.slots[h as usize % SLOTS];
        let tag = h & !0xffff_ffff;
        let bit = 1u64 << (self.hasher.hash_one(value) % 32);
        let held = slot.load(Ordering::Relaxed);
        let next = if held & !0xffff_ffff == tag {
            held | bit
        } else {
            tag | bit
        };
        // Racy on purpose: a bit lost to another thread only delays the
        // warning by a request or two.
        if next != held {
            slot.store(next, Ordering::Relaxed);
        }
        (next as u32).count_ones() >= DISTINCT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_is_not_a_proxy_many_are() {
        let f = ForgottenProxy::default();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..100 {
            assert!(!f.note(peer, b"192.0.2.1"));
        }
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let seen = (0..200)
            .map(|i| f.note(proxy, format!("198.51.100.{i}").as_bytes()))
            .collect::<Vec<_>>();
        assert!(seen.iter().any(|&p| p));
        assert!(seen[199]);
    }
}
