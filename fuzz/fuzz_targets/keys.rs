//! Fuzzes key extraction: a whole request (method, path, arbitrary header
//! map, peer) through a `Guard` with one rule of every key kind.
//!
//! Input layout: byte 0 picks the peer (untrusted or trusted proxy) and the
//! forwarding header the guard believes; the rest is split at `\n`: the
//! first line is the method, the second the path, and each further line a
//! `name:value` header (lines a header map cannot hold are dropped). The
//! target panics at the first broken guarantee:
//!
//! * no panic, whatever the request;
//! * an untrusted peer is always the client, whatever its headers say;
//! * a trusted peer's client is the peer or an address the believed
//!   header's parser returned;
//! * an admitted request was charged on every enforced rule that applies
//!   (each rule's admitted count moves together), a refused one on none.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use floodguard::ManualClock;
use floodguard::http::fuzzing::{Hop, parse_forwarded, parse_x_forwarded_for};
use floodguard::http::{ClientIpConfig, ForwardedHeader, Guard, PeerAddr, Rule};
use floodguard::ip::PrefixLengths;
use http::{HeaderName, HeaderValue, Method, Request};
use libfuzzer_sys::fuzz_target;

const UNTRUSTED: &str = "198.51.100.7:5000";
const TRUSTED: &str = "10.0.0.1:5000";
const KINDS: [ForwardedHeader; 3] = [
    ForwardedHeader::XForwardedFor,
    ForwardedHeader::Forwarded,
    ForwardedHeader::XRealIp,
];

fn guard(kind: ForwardedHeader) -> Guard<ManualClock> {
    let minute = Duration::from_secs(60);
    Guard::builder()
        .rule(
            Rule::per_ip("ip")
                .sliding_window(1_000_000, minute)
                .capacity(64),
        )
        .rule(
            Rule::per_prefix("net", PrefixLengths::SUBNET)
                .gcra(1_000_000, minute)
                .capacity(64),
        )
        .rule(
            Rule::per_path("path")
                .sliding_window(1_000_000, minute)
                .capacity(64),
        )
        .rule(
            Rule::per_method("method")
                .sliding_window(1_000_000, minute)
                .capacity(64),
        )
        .rule(
            Rule::per_header("key", "x-api-key")
                .sliding_window(1_000_000, minute)
                .capacity(64),
        )
        .rule(Rule::global("all").sliding_window(1_000_000, minute))
        .rule(
            Rule::per_key("ua", |p| {
                p.headers
                    .get("user-agent")?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })
            .sliding_window(1_000_000, minute)
            .capacity(64),
        )
        .rule(
            Rule::per_ip("shadow")
                .sliding_window(1, minute)
                .shadow()
                .capacity(64),
        )
        .client_ip(
            ClientIpConfig::new()
                .trust("10.0.0.0/8".parse().unwrap())
                .header(kind),
        )
        .clock(ManualClock::new())
        .build()
        .unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let trusted = selector & 1 == 1;
    let kind = KINDS[usize::from(selector >> 1) % KINDS.len()];
    let mut lines = rest.split(|&b| b == b'\n');
    let method = Method::from_bytes(lines.next().unwrap_or_default()).unwrap_or(Method::GET);
    let path = std::str::from_utf8(lines.next().unwrap_or_default()).unwrap_or("/");
    let mut req = Request::builder().method(method);
    if let Ok(uri) = http::Uri::try_from(path) {
        req = req.uri(uri);
    }
    let Ok(req) = req.body(()) else { return };
    let (mut parts, ()) = req.into_parts();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            parts.headers.append(n, v);
        }
    }
    let peer: SocketAddr = if trusted { TRUSTED } else { UNTRUSTED }.parse().unwrap();
    parts.extensions.insert(PeerAddr(peer));

    let g = guard(kind);
    let result = g.check(&parts);
    let stats = g.stats();
    let enforced: Vec<_> = stats.rules.iter().filter(|r| !r.shadow).collect();
    match result {
        Ok(decision) => {
            let client = decision.client_ip().expect("a peer was given");
            if !trusted {
                assert_eq!(
                    client,
                    peer.ip(),
                    "key taken from an untrusted peer's headers"
                );
            } else if client != peer.ip() {
                let values = parts.headers.get_all(kind.name());
                let hops = match kind {
                    ForwardedHeader::Forwarded => parse_forwarded(values),
                    _ => parse_x_forwarded_for(values),
                };
                assert!(
                    hops.contains(&Hop::Addr(client)),
                    "client {client} is neither the peer nor a hop of {kind:?}"
                );
            }
            // The per-IP, per-prefix and global rules apply to every request.
            for name in ["ip", "net", "all"] {
                let r = enforced.iter().find(|r| r.name == name).unwrap();
                assert_eq!(r.limiter.admitted, 1, "rule {name} not charged");
            }
        }
        Err(refusal) => {
            // Quotas are far from reached: only the guard's own checks refuse.
            panic!("refused {:?} with {:?}", parts, refusal.kind());
        }
    }
});
