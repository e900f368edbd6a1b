//! Longest-prefix lookup over a set of networks: trusted proxies, safe and
//! block lists, bans.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::ip::{IpPrefix, canonical};

/// A map from network prefixes to values, looked up by address with the
/// longest matching prefix winning.
///
/// A lookup costs one hash probe per distinct prefix length in the map (a
/// list of a thousand /32s and /24s costs two probes), and nothing when the
/// map is empty.
///
/// ```
/// use floodguard::{IpPrefix, PrefixMap};
/// let mut m = PrefixMap::new();
/// m.insert("10.0.0.0/8".parse::<IpPrefix>()?, "corp");
/// m.insert("10.1.0.0/16".parse::<IpPrefix>()?, "lab");
/// assert_eq!(m.get("10.1.2.3".parse().unwrap()).map(|(_, v)| *v), Some("lab"));
/// assert_eq!(m.get("10.9.2.3".parse().unwrap()).map(|(_, v)| *v), Some("corp"));
/// assert!(m.get("192.0.2.1".parse().unwrap()).is_none());
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct PrefixMap<V> {
    entries: HashMap<IpPrefix, V, ahash::RandomState>,
    /// Distinct lengths present, longest first, per family.
    v4_lengths: Vec<u8>,
    v6_lengths: Vec<u8>,
    /// Entries of each length, per family (IPv4 /0-/32 first, then IPv6
    /// /0-/128): a removal drops its length in O(1), not by a scan.
    per_length: Box<[usize; 33 + 129]>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> PrefixMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        PrefixMap {
            entries: HashMap::default(),
            v4_lengths: Vec::new(),
            v6_lengths: Vec::new(),
            per_length: Box::new([0; 33 + 129]),
        }
    }

    /// Number of prefixes held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Inserts or replaces the value for `prefix`; returns the old value.
    pub fn insert(&mut self, prefix: IpPrefix, value: V) -> Option<V> {
        let old = self.entries.insert(prefix, value);
        if old.is_none() {
            self.count(&prefix, true);
        }
        old
    }

    /// Removes `prefix` (exactly that network, not the ones inside it).
    pub fn remove(&mut self, prefix: &IpPrefix) -> Option<V> {
        let old = self.entries.remove(prefix)?;
        self.count(prefix, false);
        Some(old)
    }

    /// Keeps only the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&IpPrefix, &mut V) -> bool) {
        let mut gone = Vec::new();
        self.entries.retain(|p, v| {
            let kept = keep(p, v);
            if !kept {
                gone.push(*p);
            }
            kept
        });
        for p in &gone {
            self.count(p, false);
        }
    }

    /// Whether exactly `prefix` is in the map (not a prefix containing or
    /// inside it).
    pub fn contains_prefix(&self, prefix: &IpPrefix) -> bool {
        self.entries.contains_key(prefix)
    }

    /// The longest prefix containing `ip` (canonicalised), with its value.
    #[inline]
    pub fn get(&self, ip: IpAddr) -> Option<(&IpPrefix, &V)> {
        if self.entries.is_empty() {
            return None;
        }
        let ip = canonical(ip);
        let lengths = if ip.is_ipv4() {
            &self.v4_lengths
        } else {
            &self.v6_lengths
        };
        lengths.iter().find_map(|&len| {
            let p = IpPrefix::new(ip, len).ok()?;
            self.entries.get_key_value(&p)
        })
    }

    /// Whether some prefix in the map contains `ip`.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.get(ip).is_some()
    }

    /// Every (prefix, value) pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&IpPrefix, &V)> {
        self.entries.iter()
    }

    fn lengths_mut(&mut self, v4: bool) -> &mut Vec<u8> {
        if v4 {
            &mut self.v4_lengths
        } else {
            &mut self.v6_lengths
        }
    }

    /// Counts an entry of `prefix`'s length in (`added`) or out, keeping
    /// the list of lengths present.
    fn count(&mut self, prefix: &IpPrefix, added: bool) {
        let (v4, len) = (prefix.is_ipv4(), prefix.len());
        let slot = if v4 { 0 } else { 33 } + usize::from(len);
        let n = &mut self.per_length[slot];
        if added {
            *n += 1;
            if *n == 1 {
                let lengths = self.lengths_mut(v4);
                if let Err(at) = lengths.binary_search_by(|l| len.cmp(l)) {
                    lengths.insert(at, len);
                }
            }
        } else {
            *n -= 1;
            if *n == 0 {
                self.lengths_mut(v4).retain(|&l| l != len);
            }
        }
    }
}

/// A set of network prefixes: [`PrefixMap`] without values.
///
/// ```
/// use floodguard::PrefixSet;
/// let trusted: PrefixSet = ["10.0.0.0/8", "::1"].iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
/// assert!(trusted.contains("10.2.3.4".parse().unwrap()));
/// assert!(trusted.contains("::1".parse().unwrap()));
/// assert!(!trusted.contains("192.0.2.1".parse().unwrap()));
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct PrefixSet(PrefixMap<()>);

impl PrefixSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `prefix`; returns whether it was new.
    pub fn insert(&mut self, prefix: IpPrefix) -> bool {
        self.0.insert(prefix, ()).is_none()
    }

    /// Removes exactly `prefix`; returns whether it was present.
    pub fn remove(&mut self, prefix: &IpPrefix) -> bool {
        self.0.remove(prefix).is_some()
    }

    /// Whether some prefix in the set contains `ip`.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(ip)
    }

    /// The longest prefix in the set that contains `ip`.
    pub fn matching(&self, ip: IpAddr) -> Option<IpPrefix> {
        self.0.get(ip).map(|(p, _)| *p)
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every prefix, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &IpPrefix> {
        self.0.iter().map(|(p, _)| p)
    }
}

impl FromIterator<IpPrefix> for PrefixSet {
    fn from_iter<T: IntoIterator<Item = IpPrefix>>(iter: T) -> Self {
        let mut s = PrefixSet::new();
        for p in iter {
            s.insert(p);
        }
        s
    }
}

impl Extend<IpPrefix> for PrefixSet {
    fn extend<T: IntoIterator<Item = IpPrefix>>(&mut self, iter: T) {
        for p in iter {
            self.insert(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_match_wins_and_removal_forgets_lengths() {
        let mut m = PrefixMap::new();
        m.insert(p("2001:db8::/32"), 1);
        m.insert(p("2001:db8:1::/48"), 2);
        m.insert(p("2001:db8:1:2::/64"), 3);
        assert_eq!(m.get(ip("2001:db8:1:2::9")).map(|(_, v)| *v), Some(3));
        assert!(m.contains_prefix(&p("2001:db8:1::/48")));
        assert!(!m.contains_prefix(&p("2001:db8:1::/56")));
        assert_eq!(m.get(ip("2001:db8:1:3::9")).map(|(_, v)| *v), Some(2));
        assert_eq!(m.remove(&p("2001:db8:1::/48")), Some(2));
        assert_eq!(m.get(ip("2001:db8:1:3::9")).map(|(_, v)| *v), Some(1));
        assert_eq!(m.v6_lengths, vec![64, 32]);
        m.retain(|_, v| *v != 1);
        assert!(m.get(ip("2001:db8:1:3::9")).is_none());
        assert_eq!(m.v6_lengths, vec![64]);
    }

    #[test]
    fn mapped_ipv6_matches_ipv4_prefixes_and_families_stay_apart() {
        let s: PrefixSet = [p("192.0.2.0/24"), p("::/0")].into_iter().collect();
        assert!(s.contains(ip("::ffff:192.0.2.7")));
        assert_eq!(s.matching(ip("192.0.2.7")), Some(p("192.0.2.0/24")));
        assert_eq!(s.matching(ip("2001:db8::1")), Some(p("::/0")));
        assert!(!s.contains(ip("198.51.100.1")));
    }

    proptest::proptest! {
        /// Any mix of inserts, removals and retains leaves lookups as a
        /// scan of the entries finds them, and the lengths list exact.
        #[test]
        fn lookups_match_a_scan(ops in proptest::collection::vec((0u8..3, 0u8..8, 0u8..4, 0u8..4), 1..200)) {
            let mut m = PrefixMap::new();
            for (op, a, len, v) in ops {
                let prefix = IpPrefix::new(IpAddr::from([10, a, 0, 1]), [8, 16, 24, 32][usize::from(len)]).unwrap();
                match op {
                    0 => { m.insert(prefix, v); }
                    1 => { m.remove(&prefix); }
                    _ => m.retain(|_, x| *x != v),
                }
                for b in 0..8 {
                    let addr = IpAddr::from([10, b, 0, 1]);
                    let scan = m.entries.iter().filter(|(p, _)| p.contains(addr)).max_by_key(|(p, _)| p.len()).map(|(p, v)| (*p, *v));
                    proptest::prop_assert_eq!(m.get(addr).map(|(p, v)| (*p, *v)), scan);
                }
                let mut lengths: Vec<u8> = m.entries.keys().map(|p| p.len()).collect();
                lengths.sort_unstable_by(|a, b| b.cmp(a));
                lengths.dedup();
                proptest::prop_assert_eq!(&m.v4_lengths, &lengths);
            }
        }
    }
}
