//! Fuzzes the parsing of network prefixes (`IpPrefix::from_str`, what
//! configuration files and shared-ban messages hold) and the prefix map
//! the ban list and the trusted-proxy sets are built on.
//!
//! Any text either fails to parse or gives a prefix that prints back to
//! text parsing to the same prefix, contains its own network address and
//! has a length its family allows. The same prefixes, inserted and removed
//! in a map, leave its lookups equal to a scan of what it holds.
#![no_main]

use std::net::IpAddr;

use floodguard::{IpPrefix, PrefixMap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut map = PrefixMap::new();
    let mut held: Vec<IpPrefix> = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').take(64).enumerate() {
        let Ok(text) = std::str::from_utf8(line) else {
            continue;
        };
        let Ok(p) = text.parse::<IpPrefix>() else {
            continue;
        };
        let printed = p.to_string();
        assert_eq!(
            printed.parse::<IpPrefix>().ok(),
            Some(p),
            "{text:?} → {printed}"
        );
        assert!(p.contains(p.network()), "{p}");
        assert!(p.len() <= if p.is_ipv4() { 32 } else { 128 }, "{p}");
        // Every third one removed again, the rest kept.
        if i % 3 == 2 {
            map.remove(&p);
            held.retain(|q| *q != p);
        } else {
            map.insert(p, i);
            if !held.contains(&p) {
                held.push(p);
            }
        }
        let probe: IpAddr = p.network();
        let scan = held
            .iter()
            .filter(|q| q.contains(probe))
            .max_by_key(|q| q.len());
        assert_eq!(map.get(probe).map(|(q, _)| *q), scan.copied(), "{probe}");
        assert_eq!(map.len(), held.len());
    }
});
