//! Fuzzes the session cookie from both sides: the cookie a guard issues
//! and the parsing and check of whatever comes back in `Cookie` headers
//! (the `cookies` target only sends made-up ones through a guard).
//!
//! For any key, settings, client address, issue time and check time, the
//! target panics at the first broken guarantee:
//!
//! * a cookie the crate made verifies for its client's network (the
//!   address itself, or another in the same /64 for IPv6) within its
//!   `max_age`, and not once it has expired, nor for another network;
//! * changing any single byte of the `name=value` pair it sent, or
//!   cutting or extending the value, never leaves a valid cookie;
//! * arbitrary `Cookie` header bytes never panic and never verify, and
//!   a valid cookie among them is still found.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use arbitrary::Arbitrary;
use floodguard::Timestamp;
use floodguard::http::SessionCookie;
use floodguard::http::fuzzing::Session;
use http::{HeaderMap, HeaderValue, header::COOKIE};
use libfuzzer_sys::fuzz_target;

const MINUTE: u64 = 60_000_000_000;

#[derive(Arbitrary, Debug)]
struct Input {
    key: [u8; 16],
    /// Picks a name that is a valid token, or the default.
    name: Option<u8>,
    /// `max_age` in minutes, over the allowed 1 to 400 days' range.
    max_age_min: u32,
    base: u64,
    /// Issue time, after the base (ns).
    issued: u32,
    /// Minutes from issue to check, and a few nanoseconds more.
    later_min: u32,
    later_ns: u32,
    client: Addr,
    other: Addr,
    /// Byte of the `name=value` pair to change, and how.
    at: u8,
    xor: u8,
    /// Other `Cookie` headers, split at `\n`.
    noise: Vec<u8>,
    /// Where the valid pair goes among them.
    place: u8,
}

#[derive(Arbitrary, Debug)]
enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Addr {
    fn ip(&self) -> IpAddr {
        match *self {
            Addr::V4(a) => IpAddr::V4(Ipv4Addr::from(a)),
            Addr::V6(a) => IpAddr::V6(Ipv6Addr::from(a)),
        }
    }
}

/// The network a cookie is bound to by default: IPv4 /32, IPv6 /64. An
/// IPv4-mapped IPv6 address is its IPv4 address.
fn network(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (true, u128::from(u32::from(a))),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (true, u128::from(u32::from(v4))),
            None => (false, u128::from(a) >> 64),
        },
    }
}

fn headers(lines: &[Vec<u8>]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in lines {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            h.append(COOKIE, v);
        }
    }
    h
}

fuzz_target!(|input: Input| {
    let name = match input.name {
        None => None,
        Some(b) => Some(["s", "fg", "__Host-fg", "a.b", "x~1"][usize::from(b) % 5]),
    };
    let max_age = Duration::from_secs(60 * (1 + u64::from(input.max_age_min) % (400 * 24 * 60)));
    let mut cookie = SessionCookie::new(input.key).max_age(max_age);
    if let Some(n) = name {
        cookie = cookie.name(n);
    }
    let base = Timestamp::from_nanos(input.base >> 1);
    let Ok(session) = Session::new(cookie, base) else {
        panic!("valid settings refused");
    };
    let issued = base.saturating_add(Duration::from_nanos(u64::from(input.issued)));
    let client = input.client.ip();
    let set = session.set_cookie(client, issued);
    let set = set.to_str().expect("ASCII");
    let pair = set.split(';').next().expect("a pair").to_owned();
    let (cookie_name, value) = pair.split_once('=').expect("name=value");
    let cookie_name = cookie_name.to_owned();
    assert_eq!(value.len(), 40, "{set}");
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    if let Some(n) = name {
        assert_eq!(cookie_name, n);
    }

    // Checked at once, then later: valid through max_age (issue times are
    // whole minutes, with a minute's grace), invalid after.
    let sent = headers(&[pair.clone().into_bytes()]);
    assert_eq!(session.check(&sent, client, issued), Some(true), "{pair}");
    let later_min = u64::from(input.later_min) % (max_age.as_secs() / 60 + 10);
    let later = issued
        .saturating_add(Duration::from_nanos(later_min * MINUTE))
        .saturating_add(Duration::from_nanos(u64::from(input.later_ns % 1000)));
    let got = session.check(&sent, client, later);
    let max_min = max_age.as_secs() / 60;
    if later_min <= max_min {
        assert_eq!(
            got,
            Some(true),
            "expired early: {later_min} of {max_min} min"
        );
    } else if later_min > max_min + 2 {
        assert_eq!(got, Some(false), "valid after {later_min} of {max_min} min");
    }

    // Another client: valid only in the same network.
    let other = input.other.ip();
    let same = network(other) == network(client);
    assert_eq!(
        session.check(&sent, other, issued),
        Some(same),
        "{client} -> {other}"
    );

    // One byte changed anywhere in the pair.
    let mut bytes = pair.clone().into_bytes();
    if input.xor != 0 {
        let i = usize::from(input.at) % bytes.len();
        bytes[i] ^= input.xor;
        let got = session.check(&headers(&[bytes.clone()]), client, issued);
        assert_ne!(got, Some(true), "byte {i} ^ {:#x}: {:?}", input.xor, bytes);
        bytes[i] ^= input.xor;
    }
    // Cut, or a byte more.
    let n = bytes.len();
    let cut = session.check(&headers(&[bytes[..n - 1].to_vec()]), client, issued);
    assert_ne!(cut, Some(true));
    let mut longer = bytes.clone();
    longer.push(if input.xor.is_ascii_alphanumeric() {
        input.xor
    } else {
        b'0'
    });
    let got = session.check(&headers(&[longer]), client, issued);
    assert_ne!(got, Some(true));

    // Arbitrary headers: never valid alone; the real pair is found among
    // a few of them (the check looks at 8 headers, 64 pairs each, and 2
    // cookies of its name at most).
    let mut lines: Vec<Vec<u8>> = input
        .noise
        .split(|&b| b == b'\n')
        .take(8)
        .map(<[u8]>::to_vec)
        .collect();
    let noise = headers(&lines);
    assert_ne!(session.check(&noise, client, issued), Some(true), "forged");
    let plain = |l: &Vec<u8>| {
        l.split(|&b| b == b';').count() < 60
            && !l
                .windows(cookie_name.len())
                .any(|w| w == cookie_name.as_bytes())
    };
    if lines.len() < 8 && lines.iter().all(plain) {
        let at = usize::from(input.place) % (lines.len() + 1);
        lines.insert(at, pair.into_bytes());
        assert_eq!(
            session.check(&headers(&lines), client, issued),
            Some(true),
            "not found among {lines:?}"
        );
    }
});
