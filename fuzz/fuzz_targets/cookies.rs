//! Fuzzes the session cookie check with `Cookie` headers an attacker
//! wrote, through the public `Guard::check`: it never panics and never
//! takes anything made up for a valid session.
//!
//! The input is split at `\n` into `Cookie` header values (a line a
//! `HeaderValue` cannot hold is dropped); the first byte picks the peer.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use floodguard::ManualClock;
use floodguard::http::{Guard, PeerAddr, SessionCookie};
use http::{HeaderValue, Request};
use libfuzzer_sys::fuzz_target;

fn guard() -> &'static Guard<ManualClock> {
    static GUARD: OnceLock<Guard<ManualClock>> = OnceLock::new();
    GUARD.get_or_init(|| {
        Guard::builder()
            .session(SessionCookie::new(*b"fuzzing the key!"))
            .clock(ManualClock::new())
            .build()
            .expect("valid configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, rest)) = data.split_first() else {
        return;
    };
    let mut req = Request::get("/").body(()).unwrap();
    for line in rest.split(|&b| b == b'\n').take(16) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            req.headers_mut().append(http::header::COOKIE, v);
        }
    }
    let peer = SocketAddr::from(([198, 51, 100, who], 4000));
    req.extensions_mut().insert(PeerAddr(peer));
    let (parts, ()) = req.into_parts();
    let g = guard();
    let before = g.stats().session.expect("sessions are on");
    let _ = g.check(&parts);
    let after = g.stats().session.expect("sessions are on");
    // A made-up cookie never passes for one this key signed.
    assert_eq!(after.valid, before.valid, "a forged session was accepted");
});
