//! Fuzzes `floodguard::http::HeadScanner`, the request-head scanner the
//! gate runs over every connection's first bytes, and the fingerprint
//! built on it.
//!
//! The first input byte seeds the split points; the rest is the
//! connection's bytes, fed in pieces of 0 to 40 bytes whose lengths come
//! from the seed and the bytes themselves. The target panics at the first
//! broken guarantee:
//!
//! * no split changes the result: fed whole or in pieces, the same `Scan`;
//! * once `Done` or `GaveUp`, every later feed says the same;
//! * a finished head keeps the limits (at most `MAX_HEADER_LINES` lines);
//! * whatever `httparse` (hyper's parser) reads as a complete HTTP/1.x
//!   request head within the limits, the scanner reads too, with the same
//!   header names in the same order and casing;
//! * `ua_family`, `Fingerprint`, `anomalies` and `WireHead::fits_browser`
//!   take any header bytes, and the fingerprint's text form keeps its
//!   fixed width.
#![no_main]

use floodguard::http::fuzzing::{MAX_HEAD_BYTES, MAX_HEADER_LINES};
use floodguard::http::{Fingerprint, HeadScanner, Scan, WireHead, anomalies, ua_family};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = HeadScanner::new().feed(input);
    assert_eq!(split(seed, input), whole, "split changed the result");
    if let Scan::Done(head) = whole {
        assert!(head.header_count() <= MAX_HEADER_LINES);
    }
    let wire = against_httparse(input, whole);
    fingerprint(input, wire);
});

/// Feeds `input` in pieces derived from `seed` and the input, checking
/// that a finished scanner stays finished.
fn split(seed: u8, input: &[u8]) -> Scan {
    let mut scanner = HeadScanner::new();
    let mut state = u32::from(seed);
    let mut rest = input;
    let mut finished: Option<Scan> = None;
    loop {
        state = state
            .wrapping_mul(1_103_515_245)
            .wrapping_add(u32::from(rest.first().copied().unwrap_or(0)) + 12_345);
        let n = ((state >> 16) as usize % 41).min(rest.len());
        let got = scanner.feed(&rest[..n]);
        if let Some(done) = finished {
            assert_eq!(got, done, "a finished scanner changed its mind");
        } else if got != Scan::NeedMore {
            finished = Some(got);
        }
        rest = &rest[n..];
        if rest.is_empty() {
            return got;
        }
    }
}

/// Where hyper's parser reads a complete head within the limits, the
/// scanner must agree; returns the scanner's head if it has one.
fn against_httparse(input: &[u8], scan: Scan) -> Option<WireHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADER_LINES as usize];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(input);
    if let Ok(httparse::Status::Complete(len)) = parsed
        && len <= MAX_HEAD_BYTES
    {
        let Scan::Done(head) = scan else {
            panic!("httparse read {len} bytes of head, the scanner says {scan:?}");
        };
        assert_eq!(usize::from(head.header_count()), req.headers.len());
        assert_eq!(head.is_http10(), req.version == Some(0));
        let names = req.headers.iter().map(|h| h.name.as_bytes());
        assert_eq!(head.names_hash(), fnv_names(names), "names differ");
    }
    match scan {
        Scan::Done(head) => Some(head),
        _ => None,
    }
}

/// The documented names hash: FNV-1a 64 over each name and a `:`.
fn fnv_names<'a>(names: impl Iterator<Item = &'a [u8]>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in names {
        for &b in name.iter().chain(b":") {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Fingerprint and anomalies of a request whose header values are the
/// input's lines, under names that matter to them.
fn fingerprint(input: &[u8], wire: Option<WireHead>) {
    let _ = ua_family(input);
    const NAMES: [&str; 6] = [
        "user-agent",
        "accept-language",
        "accept-encoding",
        "accept",
        "sec-fetch-mode",
        "cookie",
    ];
    let mut req = http::Request::builder();
    for (line, name) in input.split(|&b| b == b'\n').zip(NAMES.iter().cycle()) {
        if let Ok(value) = http::HeaderValue::from_bytes(line) {
            req = req.header(*name, value);
        }
    }
    let Ok(req) = req.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    for wire in [wire, None] {
        let fp = Fingerprint::of(&parts, wire.as_ref());
        assert_eq!(fp.to_string().len(), 21, "{fp}");
        let found = anomalies(&parts, fp.ua_family());
        assert_eq!(found.len(), found.iter().count());
    }
    // The order check takes any head and any user agent.
    if let Some(w) = wire {
        assert!(w.standard_names().count() <= 25);
        let _ = (w.name_casing(), w.fits_browser(input));
    }
}
