//! Fuzzes the gate's stream path: the tracker that follows each
//! connection's bytes for the request-head and keep-alive deadlines.
//!
//! The first input byte seeds how the rest is cut into reads and writes.
//! The target panics at the first broken guarantee:
//!
//! * any bytes, cut anywhere, in any order of reads and writes: no panic;
//! * a client that only sends (no answer yet) leaves the deadline on its
//!   head until `httparse` (hyper's parser) would stop waiting: whenever
//!   the tracker says the head is complete, `httparse` reads a complete
//!   head or an error, never a partial one; so no byte sequence takes a
//!   connection off the clock while hyper still waits for its head;
//! * whatever `httparse` reads as a complete head, the tracker reads as
//!   complete too (a request being served is never timed as a head),
//!   however the bytes are cut;
//! * only the server's bytes can stop the tracking, except HTTP/2's
//!   preface: a client alone cannot take its connection out of the watch.
#![no_main]

use floodguard::http::fuzzing::gate_stream;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    client_alone(seed, input);
    conversation(seed, input);
});

/// `input` cut into reads by `seed`.
fn reads(seed: u8, input: &[u8]) -> Vec<(bool, &[u8])> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut s = u32::from(seed) | 1;
    while !rest.is_empty() {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((s >> 16) as usize % 24).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push((true, piece));
        rest = tail;
    }
    out
}

fn client_alone(seed: u8, input: &[u8]) {
    let (ended, stopped) = gate_stream(&reads(seed, input));
    // Fed whole, the same.
    assert_eq!(
        gate_stream(&[(true, input)]),
        (ended, stopped),
        "the cut changed the result"
    );
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let parsed = httparse::Request::new(&mut headers).parse(input);
    match parsed {
        Ok(httparse::Status::Partial) => {
            assert!(!ended, "off the clock while hyper still waits: {input:?}")
        }
        Ok(httparse::Status::Complete(_)) => {
            assert!(ended, "a complete head still on the clock: {input:?}")
        }
        Err(_) => {}
    }
    if stopped {
        assert!(
            input.starts_with(b"PRI * HTTP/2.0\r\n"),
            "the client alone stopped the tracking: {input:?}"
        );
    }
}

/// `input` as a conversation: each piece a read or a write by its first
/// byte's low bit.
fn conversation(seed: u8, input: &[u8]) {
    let events: Vec<(bool, &[u8])> = reads(seed, input)
        .into_iter()
        .map(|(_, piece)| (piece.first().is_none_or(|b| b & 1 == 0), piece))
        .collect();
    let _ = gate_stream(&events);
}
