//! Distinct client addresses for benches and examples that need many keys
//! (included with `#[path]`, as `redis_server.rs` is).

use std::net::{IpAddr, Ipv4Addr};

/// `n` distinct IPv4 addresses of 10.0.0.0/8 (n ≤ 2^24), scattered by a
/// multiplicative hash so that neighbours in the list share no prefix.
pub fn scattered(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::from(
                0x0a00_0000 + i.wrapping_mul(2_654_435_761) % (1 << 24),
            ))
        })
        .collect()
}
