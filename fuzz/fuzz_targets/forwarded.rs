//! Fuzzes `floodguard::http::client_ip`: which client address a request is
//! keyed on, given forwarding headers an attacker wrote.
//!
//! The first input byte picks the trusted set; the rest is split at `\n`
//! into header lines (a line a `HeaderValue` cannot hold is dropped). The
//! same lines are sent as `X-Forwarded-For`, `Forwarded` and `X-Real-IP`
//! together, and each header kind is resolved for an untrusted and a
//! trusted peer. The target panics at the first broken guarantee:
//!
//! * an untrusted peer is the client, whatever the headers;
//! * a trusted peer gives exactly the documented walk over the public
//!   parser's output for the configured header (so the other two headers
//!   are not read, and `resolve` agrees with `parse_*`);
//! * the result is the peer, or an address some parsed hop holds, and that
//!   address can be read out of the header text itself; a flagged fallback
//!   to a hop is a trusted hop;
//! * the parsers keep the hop cap and return canonical addresses.
#![no_main]

use std::net::IpAddr;

use floodguard::IpPrefix;
use floodguard::http::fuzzing::{Hop, MAX_HOPS, parse_forwarded, parse_x_forwarded_for};
use floodguard::http::{ClientIp, ClientIpConfig, ForwardedHeader, IpSource};
use floodguard::ip::canonical;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const KINDS: [ForwardedHeader; 3] = [
    ForwardedHeader::XForwardedFor,
    ForwardedHeader::Forwarded,
    ForwardedHeader::XRealIp,
];

/// Trusted sets; both hold `TRUSTED_PEER`. The wide one trusts half of each
/// family, so that walks often pass several hops.
const TRUSTED: [&[&str]; 2] = [&["10.0.0.0/8", "2001:db8::/32"], &["0.0.0.0/1", "::/1"]];
const TRUSTED_PEER: &str = "10.0.0.1";
/// Outside both trusted sets; also tried IPv4-mapped.
const UNTRUSTED_PEER: &str = "203.0.113.5";

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let trusted = TRUSTED[usize::from(pick) % TRUSTED.len()]
        .iter()
        .map(|p| p.parse::<IpPrefix>().expect("valid prefix"));
    let lines: Vec<HeaderValue> = text
        .split(|&b| b == b'\n')
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();
    let mut headers = HeaderMap::new();
    for kind in KINDS {
        for line in &lines {
            headers.append(kind.name(), line.clone());
        }
    }
    let base = ClientIpConfig::new().trust_all(trusted);

    let xff = parse_x_forwarded_for(&lines);
    let fwd = parse_forwarded(&lines);
    check_hops(&xff);
    check_hops(&fwd);

    for kind in KINDS {
        let config = base.clone().header(kind);

        let untrusted: IpAddr = UNTRUSTED_PEER.parse().unwrap();
        let want = ClientIp {
            ip: untrusted,
            source: IpSource::Peer,
            malformed: false,
        };
        assert_eq!(config.resolve(untrusted, &headers), want, "{kind:?}");
        let mapped: IpAddr = format!("::ffff:{UNTRUSTED_PEER}").parse().unwrap();
        assert_eq!(config.resolve(mapped, &headers), want, "{kind:?} mapped");

        let peer: IpAddr = TRUSTED_PEER.parse().unwrap();
        let got = config.resolve(peer, &headers);
        let (hops, want) = match kind {
            ForwardedHeader::XForwardedFor => {
                (&xff, walk(&config, peer, &xff, IpSource::XForwardedFor))
            }
            ForwardedHeader::Forwarded => (&fwd, walk(&config, peer, &fwd, IpSource::Forwarded)),
            ForwardedHeader::XRealIp => (&xff, real_ip(peer, &lines, &xff)),
        };
        assert_eq!(
            got, want,
            "{kind:?}: resolve differs from the walk over {hops:?}"
        );

        if got.source == IpSource::Peer {
            assert_eq!(got.ip, peer, "{kind:?}");
        } else {
            assert!(
                hops.contains(&Hop::Addr(got.ip)),
                "{kind:?}: {got:?} is in no hop of {hops:?}"
            );
            assert!(
                lines.iter().any(|l| appears_in(got.ip, l.as_bytes())),
                "{kind:?}: {got:?} cannot be read out of the header text"
            );
            assert!(
                !got.malformed || config.trusted().contains(got.ip),
                "{kind:?}: fallback {got:?} to an untrusted hop"
            );
        }
    }
});

/// The parsers' own promises: the cap, and canonical addresses.
fn check_hops(hops: &[Hop]) {
    assert!(hops.len() <= MAX_HOPS + 1, "{} hops", hops.len());
    if hops.len() == MAX_HOPS + 1 {
        assert_eq!(hops[0], Hop::Malformed, "no cap marker");
    }
    for hop in hops {
        if let Hop::Addr(ip) = *hop {
            assert_eq!(ip, canonical(ip), "not canonical");
        }
    }
}

/// The documented walk over left-to-right hops: from the right, past
/// trusted addresses; stop at the first untrusted one, or at an unusable
/// hop with the last trusted address seen.
fn walk(config: &ClientIpConfig, peer: IpAddr, hops: &[Hop], source: IpSource) -> ClientIp {
    let mut nearest = ClientIp {
        ip: peer,
        source: IpSource::Peer,
        malformed: false,
    };
    for hop in hops.iter().rev() {
        match *hop {
            Hop::Addr(ip) => {
                nearest = ClientIp {
                    ip,
                    source,
                    malformed: false,
                };
                if !config.trusted().contains(ip) {
                    break;
                }
            }
            Hop::Unknown | Hop::Obfuscated => break,
            Hop::Malformed => {
                nearest.malformed = true;
                break;
            }
        }
    }
    nearest
}

/// `X-Real-IP`: one line holding one address (read as an `X-Forwarded-For`
/// entry), else the peer, flagged if the header was there.
fn real_ip(peer: IpAddr, lines: &[HeaderValue], hops: &[Hop]) -> ClientIp {
    let mut result = ClientIp {
        ip: peer,
        source: IpSource::Peer,
        malformed: !lines.is_empty(),
    };
    if let ([line], [Hop::Addr(ip)]) = (lines, hops)
        && !line.as_bytes().contains(&b',')
    {
        result = ClientIp {
            ip: *ip,
            source: IpSource::XRealIp,
            malformed: false,
        };
    }
    result
}

/// Whether `want` can be read out of `text`: some run of address characters
/// (backslashes dropped, as quoted strings escape with them), whole or cut
/// at a colon, parses to it.
fn appears_in(want: IpAddr, text: &[u8]) -> bool {
    let text: Vec<u8> = text.iter().copied().filter(|&b| b != b'\\').collect();
    text.split(|&b| !(b.is_ascii_hexdigit() || b == b'.' || b == b':'))
        .filter_map(|run| std::str::from_utf8(run).ok())
        .any(|run| {
            [
                Some(run),
                run.split_once(':').map(|c| c.0),
                run.rsplit_once(':').map(|c| c.0),
            ]
            .into_iter()
            .flatten()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .any(|a| canonical(a) == want)
        })
}
