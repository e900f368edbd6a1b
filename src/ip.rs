//! IP keys: canonical addresses, prefixes and compact encodings.
//!
//! A botnet spreads over many addresses and one IPv6 host owns a whole /64,
//! so limits are kept per address and per network prefix. [`IpPrefix`] is a
//! small `Copy` key (17 bytes of payload) suitable for a
//! [`KeyedLimiter`](crate::KeyedLimiter).

use crate::error::ConfigError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The address as a client is identified: IPv4-mapped IPv6 (`::ffff:a.b.c.d`,
/// what a dual-stack socket reports for IPv4 peers) becomes plain IPv4, so
/// one client has one key.
///
/// ```
/// use std::net::IpAddr;
/// let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
/// assert_eq!(floodguard::ip::canonical(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
/// ```
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// An IPv4 address as a `u32` (network byte order value).
#[inline]
pub fn ipv4_bits(ip: Ipv4Addr) -> u32 {
    ip.to_bits()
}

/// The /64 network of an IPv6 address as a `u64`: the unit an ISP hands to
/// one subscriber.
///
/// ```
/// let ip: std::net::Ipv6Addr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
/// assert_eq!(floodguard::ip::ipv6_net64(ip), 0x2001_0db8_0001_0002);
/// ```
#[inline]
pub fn ipv6_net64(ip: Ipv6Addr) -> u64 {
    (ip.to_bits() >> 64) as u64
}

/// Prefix lengths to aggregate clients by, one per address family.
///
/// ```
/// use floodguard::ip::PrefixLengths;
/// let p = PrefixLengths::new(24, 64)?;
/// assert_eq!((p.v4(), p.v6()), (24, 64));
/// assert!(PrefixLengths::new(33, 64).is_err());
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "RawPrefixLengths")
)]
pub struct PrefixLengths {
    v4: u8,
    v6: u8,
}

/// The unchecked form read from configuration; turned into
/// [`PrefixLengths`] through [`PrefixLengths::new`], so a file cannot carry
/// an out-of-range length past the check.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct RawPrefixLengths {
    v4: u8,
    v6: u8,
}

#[cfg(feature = "serde")]
impl TryFrom<RawPrefixLengths> for PrefixLengths {
    type Error = ConfigError;

    fn try_from(raw: RawPrefixLengths) -> Result<Self, ConfigError> {
        PrefixLengths::new(raw.v4, raw.v6)
    }
}

impl PrefixLengths {
    /// Single addresses: IPv4 /32, IPv6 /128.
    pub const HOST: PrefixLengths = PrefixLengths { v4: 32, v6: 128 };
    /// IPv4 /24 and IPv6 /64: a small network, one IPv6 subscriber.
    pub const SUBNET: PrefixLengths = PrefixLengths { v4: 24, v6: 64 };
    /// IPv4 /16 and IPv6 /48: one site or organisation.
    pub const SITE: PrefixLengths = PrefixLengths { v4: 16, v6: 48 };
    /// IPv4 /32 and IPv6 /64: one subscriber either way.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) const HOST_V4_SUBNET_V6: PrefixLengths = PrefixLengths { v4: 32, v6: 64 };
    /// IPv4 /24 and IPv6 /48: the next network up from one subscriber.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) const SUBNET_V4_SITE_V6: PrefixLengths = PrefixLengths { v4: 24, v6: 48 };

    /// Checks both lengths (IPv4 ≤ 32, IPv6 ≤ 128).
    pub fn new(v4: u8, v6: u8) -> Result<Self, ConfigError> {
        check_len("v4", v4, 32)?;
        check_len("v6", v6, 128)?;
        Ok(PrefixLengths { v4, v6 })
    }

    /// The IPv4 length.
    pub fn v4(&self) -> u8 {
        self.v4
    }

    /// The IPv6 length.
    pub fn v6(&self) -> u8 {
        self.v6
    }
}

fn check_len(field: &'static str, len: u8, max: u8) -> Result<(), ConfigError> {
    if len > max {
        return Err(ConfigError::PrefixLength { field, len, max });
    }
    Ok(())
}

/// A network prefix, such as `203.0.113.0/24` or `2001:db8::/64`, held
/// compactly (address bits masked, and the length) so it can key a limiter.
/// Only made through checked constructors: its length always fits its
/// family.
///
/// ```
/// use std::net::IpAddr;
/// use floodguard::IpPrefix;
/// let ip: IpAddr = "2001:db8:0:7:1:2:3:4".parse().unwrap();
/// let net = IpPrefix::new(ip, 64)?;
/// assert_eq!(net.to_string(), "2001:db8:0:7::/64");
/// assert!(net.contains("2001:db8:0:7::99".parse().unwrap()));
/// assert_eq!("10.1.2.3/8".parse::<IpPrefix>()?.to_string(), "10.0.0.0/8");
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix(Net);

/// Masked address bits and a length that was checked against the family:
/// private, so no prefix can exist with a length longer than its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Net {
    V4 { bits: u32, len: u8 },
    V6 { bits: u128, len: u8 },
}

impl IpPrefix {
    /// The `len`-bit prefix of `ip` (canonicalised first, so an IPv4-mapped
    /// address takes an IPv4 length).
    pub fn new(ip: IpAddr, len: u8) -> Result<Self, ConfigError> {
        match canonical(ip) {
            IpAddr::V4(a) => {
                check_len("prefix_len", len, 32)?;
                Ok(Self::v4(a, len))
            }
            IpAddr::V6(a) => {
                check_len("prefix_len", len, 128)?;
                Ok(Self::v6(a, len))
            }
        }
    }

    /// The prefix of `ip` at the length for its family. Cannot fail: the
    /// lengths were checked when `lengths` was made.
    #[inline]
    pub fn of(ip: IpAddr, lengths: PrefixLengths) -> Self {
        match canonical(ip) {
            IpAddr::V4(a) => Self::v4(a, lengths.v4),
            IpAddr::V6(a) => Self::v6(a, lengths.v6),
        }
    }

    /// `len ≤ 32`, checked by every caller.
    fn v4(a: Ipv4Addr, len: u8) -> Self {
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        IpPrefix(Net::V4 {
            bits: a.to_bits() & mask,
            len,
        })
    }

    /// `len ≤ 128`, checked by every caller.
    fn v6(a: Ipv6Addr, len: u8) -> Self {
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        IpPrefix(Net::V6 {
            bits: a.to_bits() & mask,
            len,
        })
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        match self.0 {
            Net::V4 { len, .. } | Net::V6 { len, .. } => len,
        }
    }

    /// Whether this is an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.0, Net::V4 { .. })
    }

    /// Whether this is the zero-length prefix (every address of the family).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        match self.0 {
            Net::V4 { bits, .. } => IpAddr::V4(Ipv4Addr::from_bits(bits)),
            Net::V6 { bits, .. } => IpAddr::V6(Ipv6Addr::from_bits(bits)),
        }
    }

    /// Whether `ip` (canonicalised) lies in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.0, canonical(ip)) {
            (Net::V4 { len, .. }, IpAddr::V4(a)) => Self::v4(a, len) == *self,
            (Net::V6 { len, .. }, IpAddr::V6(a)) => Self::v6(a, len) == *self,
            _ => false,
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len())
    }
}

/// A single address as a prefix (/32 or /128, after canonicalising).
impl From<IpAddr> for IpPrefix {
    fn from(ip: IpAddr) -> Self {
        IpPrefix::of(ip, PrefixLengths::HOST)
    }
}

/// Written as its text, `"192.0.2.0/24"`; read from the same, or from a
/// bare address as a full-length prefix.
#[cfg(feature = "serde")]
impl serde::Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for IpPrefix {
    type Err = ConfigError;

    /// Parses `addr/len`, or a bare address as a full-length prefix.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadPrefix {
            field: "prefix",
            input: s.to_owned(),
        };
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let len = len.unwrap_or(if canonical(ip).is_ipv4() { 32 } else { 128 });
        IpPrefix::new(ip, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn aggregates_at_common_lengths() {
        let v4 = ip("203.0.113.77");
        assert_eq!(
            IpPrefix::new(v4, 32).unwrap().to_string(),
            "203.0.113.77/32"
        );
        assert_eq!(IpPrefix::new(v4, 24).unwrap().to_string(), "203.0.113.0/24");
        assert_eq!(IpPrefix::new(v4, 16).unwrap().to_string(), "203.0.0.0/16");
        assert_eq!(IpPrefix::new(v4, 0).unwrap().to_string(), "0.0.0.0/0");
        let v6 = ip("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff");
        let at = |l| IpPrefix::new(v6, l).unwrap().to_string();
        assert_eq!(at(128), "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff/128");
        assert_eq!(at(64), "2001:db8:aaaa:bbbb::/64");
        assert_eq!(at(56), "2001:db8:aaaa:bb00::/56");
        assert_eq!(at(48), "2001:db8:aaaa::/48");
    }

    #[test]
    fn mapped_addresses_share_the_ipv4_key() {
        let a = IpPrefix::of(ip("::ffff:10.1.2.3"), PrefixLengths::SUBNET);
        let b = IpPrefix::of(ip("10.1.2.200"), PrefixLengths::SUBNET);
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_bad_lengths_and_text() {
        assert!(IpPrefix::new(ip("1.2.3.4"), 33).is_err());
        assert!(IpPrefix::new(ip("::1"), 129).is_err());
        assert!("1.2.3.4/x".parse::<IpPrefix>().is_err());
        assert!("nope".parse::<IpPrefix>().is_err());
        assert!("1.2.3.4/40".parse::<IpPrefix>().is_err());
        assert_eq!("::1".parse::<IpPrefix>().unwrap().len(), 128);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn prefix_lengths_from_config_are_checked() {
        let p: PrefixLengths = serde_json::from_str(r#"{"v4": 24, "v6": 56}"#).unwrap();
        assert_eq!((p.v4(), p.v6()), (24, 56));
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"v4":24,"v6":56}"#);
        let err = serde_json::from_str::<PrefixLengths>(r#"{"v4": 40, "v6": 64}"#).unwrap_err();
        assert!(err.to_string().contains("/40"), "{err}");
    }

    #[test]
    fn compact_encodings() {
        assert_eq!(ipv4_bits("1.2.3.4".parse().unwrap()), 0x0102_0304);
        assert!(
            IpPrefix::new(ip("10.0.0.0"), 8)
                .unwrap()
                .contains(ip("10.9.9.9"))
        );
        assert!(
            !IpPrefix::new(ip("10.0.0.0"), 8)
                .unwrap()
                .contains(ip("::1"))
        );
    }
}
