//! Fuzzes what floodguard reads back from Redis (feature `redis`): the
//! limiter scripts' replies, shared-ban pub/sub messages (signed or not)
//! and the ban set's load replies. Redis is outside input: a compromised
//! or misbehaving server, or anyone who can publish on its channels.
//!
//! Each step is one of these, and the target panics at the first broken
//! guarantee:
//!
//! * a script reply (any tree of values) parses exactly when it is an
//!   array of four integers `[allowed 0|1, remaining ≥ 0, reset ≥ 0,
//!   retry ≥ −1]` with `retry = 0` when allowed; the decision made of it
//!   says what the reply said (admitted, never, or a positive wait) and
//!   never panics, for any limit;
//! * a message (arbitrary bytes) never panics `decode` or `verify`; what
//!   decodes re-encodes to a message that decodes the same (the same bytes
//!   but for leading zeros of the time) and keeps its documented bounds
//!   (prefix at least /8 or /16, 1 ms to a year and a day);
//! * a change the crate encodes and signs verifies under its key, and no
//!   other key; changing any one byte of it (or cutting or extending it)
//!   makes it fail verification;
//! * a load reply (any tree of values) decodes to one entry per pair,
//!   each entry within the bounds.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use floodguard::IpPrefix;
use floodguard::redis::fuzzing::{
    BanChange, ScriptReply, decode_ban, decode_ban_page, encode_ban, sign_ban, verify_ban,
};
use libfuzzer_sys::fuzz_target;
use redis::Value;

/// Steps per input.
const MAX_STEPS: usize = 32;
/// Deepest value tree built.
const MAX_DEPTH: u32 = 3;
/// Longest message accepted (`bans::MAX_MESSAGE`).
const MAX_MESSAGE: usize = 128;
/// Longest ban accepted, ms.
const MAX_TTL_MS: u64 = 366 * 24 * 3600 * 1000;

#[derive(Arbitrary, Debug)]
enum Step {
    /// A script reply built from the input.
    Reply { limit: u64 },
    /// A script reply of four integers, mostly in or near the valid ranges.
    NearReply { fields: [Small; 4], limit: u64 },
    /// Raw message bytes, checked unsigned and signed.
    Message { bytes: Vec<u8>, key: (u64, u64) },
    /// A change the crate encodes and signs, then one byte changed.
    Signed {
        sender: u64,
        change: Change,
        key: (u64, u64),
        other: (u64, u64),
        at: u16,
        xor: u8,
    },
    /// A ban-set load reply.
    Entries,
}

/// An integer near the edges that matter.
#[derive(Arbitrary, Debug)]
enum Small {
    Tiny(i8),
    Any(i64),
}

impl Small {
    fn get(&self) -> i64 {
        match *self {
            Small::Tiny(v) => i64::from(v),
            Small::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Change {
    Ban {
        addr: [u8; 16],
        v4: bool,
        len: u8,
        ttl: u64,
    },
    Lift {
        addr: [u8; 16],
        v4: bool,
        len: u8,
    },
    Class {
        class: u64,
        ttl: u64,
    },
}

impl Change {
    /// A change as a guard would publish it (prefixes long enough to share,
    /// times within bounds), or `None`.
    fn get(&self) -> Option<BanChange> {
        let prefix = |addr: &[u8; 16], v4: bool, len: u8| {
            let (text, min, max) = if v4 {
                let a = std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
                (a.to_string(), 8, 32)
            } else {
                (std::net::Ipv6Addr::from(*addr).to_string(), 16, 128)
            };
            let len = min + len % (max - min + 1);
            let p: IpPrefix = format!("{text}/{len}").parse().ok()?;
            // An IPv4-mapped address is read as IPv4.
            let ok = p.len() >= if p.is_ipv4() { 8 } else { 16 };
            ok.then_some(p)
        };
        let ttl = |t: u64| 1 + t % MAX_TTL_MS;
        Some(match *self {
            Change::Ban {
                ref addr,
                v4,
                len,
                ttl: t,
            } => BanChange::Ban {
                prefix: prefix(addr, v4, len)?,
                ttl_ms: ttl(t),
            },
            Change::Lift { ref addr, v4, len } => BanChange::Lift {
                prefix: prefix(addr, v4, len)?,
            },
            Change::Class { class, ttl: t } => BanChange::Class {
                class,
                ttl_ms: ttl(t),
            },
        })
    }
}

/// A value tree from the input.
fn value(u: &mut Unstructured, depth: u32) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=7)? {
        0 => Value::Nil,
        1 | 2 => Value::Int(Small::arbitrary(u)?.get()),
        3 => Value::BulkString(Vec::arbitrary(u)?),
        4 => Value::SimpleString(String::arbitrary(u)?),
        5 => Value::Okay,
        _ if depth >= MAX_DEPTH => Value::Int(u.arbitrary()?),
        _ => {
            let n = u.int_in_range(0..=9)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(u, depth + 1)?);
            }
            Value::Array(items)
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    for _ in 0..MAX_STEPS {
        let Ok(step) = Step::arbitrary(&mut u) else {
            return;
        };
        match step {
            Step::Reply { limit } => {
                let Ok(v) = value(&mut u, 0) else { return };
                reply(v, limit);
            }
            Step::NearReply { fields, limit } => {
                let v = Value::Array(fields.iter().map(|f| Value::Int(f.get())).collect());
                reply(v, limit);
            }
            Step::Message { bytes, key } => message(&bytes, key),
            Step::Signed {
                sender,
                change,
                key,
                other,
                at,
                xor,
            } => signed(sender, &change, key, other, at, xor),
            Step::Entries => {
                let Ok(v) = value(&mut u, 0) else { return };
                entries(&v);
            }
        }
    }
});

/// The documented reading of a script reply.
fn expected(v: &Value) -> Option<ScriptReply> {
    let Value::Array(items) = v else { return None };
    let [
        Value::Int(a),
        Value::Int(r),
        Value::Int(reset),
        Value::Int(retry),
    ] = items.as_slice()
    else {
        return None;
    };
    let ok =
        (*a == 0 || *a == 1) && *r >= 0 && *reset >= 0 && *retry >= -1 && (*a == 0 || *retry == 0);
    ok.then(|| ScriptReply {
        allowed: *a == 1,
        remaining: *r as u64,
        reset_after_us: *reset as u64,
        retry_after_us: u64::try_from(*retry).ok(),
    })
}

fn reply(v: Value, limit: u64) {
    let want = expected(&v);
    let shown = format!("{v:?}");
    let got = ScriptReply::parse(v);
    assert_eq!(got, want, "{shown}");
    let Some(r) = got else { return };
    let d = r.decision(limit);
    let ctx = || format!("{r:?} for limit {limit} -> {d:?}");
    assert_eq!(d.is_allowed(), r.allowed, "{}", ctx());
    assert_eq!(d.limit(), limit, "{}", ctx());
    assert_eq!(d.remaining(), r.remaining, "{}", ctx());
    let _ = (d.reset_after(), d.retry_after_secs());
    if r.allowed {
        assert_eq!(d.retry_after(), None, "{}", ctx());
    } else {
        let wait = d.retry_after().expect("a denial has a wait");
        assert!(!wait.is_zero(), "{}", ctx());
        // Only a reply that says so is a cost that can never fit.
        assert_eq!(d.exceeds_limit(), r.retry_after_us.is_none(), "{}", ctx());
        assert!(d.retry_after_secs() >= 1, "{}", ctx());
    }
}

/// Arbitrary bytes as a message: no panic, and what decodes is canonical.
fn message(bytes: &[u8], key: (u64, u64)) {
    if let Some((sender, change)) = decode_ban(bytes) {
        assert!(bytes.len() <= MAX_MESSAGE);
        let again = encode_ban(sender, change);
        assert_eq!(
            decode_ban(again.as_bytes()),
            Some((sender, change)),
            "{again}"
        );
        assert!(again.len() <= bytes.len(), "{again}");
        check_bounds(&change);
    }
    if let Some(message) = verify_ban(key, bytes) {
        // Only a signature made under the key verifies: made here, it is
        // the same text.
        let text = std::str::from_utf8(message).expect("signed text is UTF-8 here");
        assert_eq!(sign_ban(key, text.to_owned()).as_bytes(), bytes);
    }
}

fn check_bounds(change: &BanChange) {
    match *change {
        BanChange::Ban { prefix, ttl_ms } => {
            assert!(
                prefix.len() >= if prefix.is_ipv4() { 8 } else { 16 },
                "{prefix}"
            );
            assert!((1..=MAX_TTL_MS).contains(&ttl_ms), "{ttl_ms}");
        }
        BanChange::Lift { prefix } => {
            assert!(
                prefix.len() >= if prefix.is_ipv4() { 8 } else { 16 },
                "{prefix}"
            );
        }
        BanChange::Class { ttl_ms, .. } => {
            assert!((1..=MAX_TTL_MS).contains(&ttl_ms), "{ttl_ms}");
        }
    }
}

/// A change the crate signs verifies, round-trips, and fails once touched.
fn signed(sender: u64, change: &Change, key: (u64, u64), other: (u64, u64), at: u16, xor: u8) {
    let Some(change) = change.get() else { return };
    let text = encode_ban(sender, change);
    assert!(text.len() <= MAX_MESSAGE, "{text}");
    assert_eq!(
        decode_ban(text.as_bytes()),
        Some((sender, change)),
        "{text}"
    );
    let signed = sign_ban(key, text.clone());
    let message = verify_ban(key, signed.as_bytes()).expect("a signed message verifies");
    assert_eq!(message, text.as_bytes());
    if other != key {
        assert_eq!(
            verify_ban(other, signed.as_bytes()),
            None,
            "verified under another key"
        );
    }
    assert_eq!(verify_ban(key, text.as_bytes()), None, "unsigned");
    let mut bytes = signed.into_bytes();
    // One byte changed, anywhere.
    if xor != 0 {
        let i = usize::from(at) % bytes.len();
        bytes[i] ^= xor;
        assert_eq!(
            verify_ban(key, &bytes),
            None,
            "byte {i} ^ {xor:#x} still verifies"
        );
        bytes[i] ^= xor;
    }
    // Cut short, or with a byte more at either end.
    let n = bytes.len();
    assert_eq!(verify_ban(key, &bytes[..n - 1]), None, "cut");
    assert_eq!(verify_ban(key, &bytes[1..]), None, "cut in front");
    bytes.push(xor);
    assert_eq!(verify_ban(key, &bytes), None, "extended");
    bytes.pop();
    bytes.insert(0, xor);
    assert_eq!(verify_ban(key, &bytes), None, "extended in front");
}

fn entries(v: &Value) {
    let got = decode_ban_page(v);
    // [more (0 or 1), score, member, member, ms, member, ms, ...]
    let Value::Array(items) = v else {
        assert!(got.is_none(), "{v:?}");
        return;
    };
    let header = match &items[..] {
        [
            Value::Int(more @ (0 | 1)),
            Value::Int(score),
            Value::BulkString(member),
            rest @ ..,
        ] if rest.len() % 2 == 0 => {
            Some(((*more == 1).then_some((*score, member.as_slice())), rest))
        }
        _ => None,
    };
    let Some((next, pairs)) = header else {
        assert!(got.is_none(), "{v:?}");
        return;
    };
    let (got, got_next) = got.expect("a well-formed page decodes");
    assert_eq!(got_next, next);
    assert_eq!(got.len(), pairs.len() / 2);
    for (entry, pair) in got.iter().zip(pairs.chunks_exact(2)) {
        let Some((member, ms)) = *entry else { continue };
        assert!(matches!(pair[0], Value::BulkString(ref b) if b == member.as_bytes()));
        assert!(matches!(pair[1], Value::Int(i) if i as u64 == ms));
        assert!((1..=MAX_TTL_MS).contains(&ms), "{ms}");
        assert!(member.len() <= MAX_MESSAGE);
    }
}
