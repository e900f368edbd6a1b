//! The wire format of shared bans: messages (`1 ban <sender> <prefix>
//! <ms>`, ...), their signatures under a store secret, and the pages of a
//! set as the load script answers them. Everything from Redis is parsed
//! strictly here.

use redis::Value;

use crate::IpPrefix;

/// Longest ban or flag accepted from Redis: a year and a day.
pub(super) const MAX_TTL_MS: u64 = 366 * 24 * 3600 * 1000;
/// Longest message accepted.
pub(super) const MAX_MESSAGE: usize = 128;
/// Shortest prefixes shared: a message cannot ban an address family.
const MIN_V4_LEN: u8 = 8;
const MIN_V6_LEN: u8 = 16;
/// The message format's version.
const VERSION: &str = "1";

/// A change as carried by a message or a stored entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::redis) enum Change {
    Ban { prefix: IpPrefix, ttl_ms: u64 },
    Lift { prefix: IpPrefix },
    Class { class: u64, ttl_ms: u64 },
}

/// Whether a prefix is long enough to be shared.
pub(super) fn shareable(p: &IpPrefix) -> bool {
    p.len() >= if p.is_ipv4() { MIN_V4_LEN } else { MIN_V6_LEN }
}

/// `message` followed by its signature under `key`: a space and the
/// SipHash-2-4 128-bit MAC of the message, in 32 lowercase hex digits.
pub(in crate::redis) fn sign(key: (u64, u64), message: String) -> String {
    format!("{message} {:032x}", mac(key, message.as_bytes()))
}

fn mac((k0, k1): (u64, u64), message: &[u8]) -> u128 {
    use siphasher::sip128::{Hasher128, SipHasher24};
    use std::hash::Hasher;
    let mut h = SipHasher24::new_with_keys(k0, k1);
    h.write(message);
    h.finish128().as_u128()
}

/// The message of a payload signed under `key`, if the signature is
/// right. Compared without an early exit on the first differing byte.
pub(in crate::redis) fn verify(key: (u64, u64), payload: &[u8]) -> Option<&[u8]> {
    if payload.len() > MAX_MESSAGE + 33 {
        return None;
    }
    let at = payload.len().checked_sub(33)?;
    let (message, tail) = payload.split_at(at);
    let hex = tail.strip_prefix(b" ")?;
    let want = format!("{:032x}", mac(key, message));
    let diff = hex
        .iter()
        .zip(want.as_bytes())
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    (diff == 0).then_some(message)
}

pub(in crate::redis) fn encode(sender: u64, change: &Change) -> String {
    match change {
        Change::Ban { prefix, ttl_ms } => format!("{VERSION} ban {sender:016x} {prefix} {ttl_ms}"),
        Change::Lift { prefix } => format!("{VERSION} lift {sender:016x} {prefix}"),
        Change::Class { class, ttl_ms } => {
            format!("{VERSION} class {sender:016x} {class:016x} {ttl_ms}")
        }
    }
}

/// Exactly 16 lowercase hex digits.
pub(super) fn parse_hex16(s: &str) -> Option<u64> {
    let ok = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| u64::from_str_radix(s, 16).ok()).flatten()
}

/// A prefix in its canonical text, long enough to share.
pub(super) fn parse_prefix(s: &str) -> Option<IpPrefix> {
    let p: IpPrefix = s.parse().ok()?;
    (shareable(&p) && p.to_string() == s).then_some(p)
}

/// Decimal milliseconds, 1 to [`MAX_TTL_MS`].
fn parse_ttl(s: &str) -> Option<u64> {
    let ok = (1..=12).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| s.parse().ok())
        .flatten()
        .filter(|ms| (1..=MAX_TTL_MS).contains(ms))
}

/// Parses a message: its sender and change.
pub(in crate::redis) fn decode(payload: &[u8]) -> Option<(u64, Change)> {
    if payload.len() > MAX_MESSAGE {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    let mut fields = text.split(' ');
    let mut next = || fields.next();
    if next()? != VERSION {
        return None;
    }
    let (kind, sender) = (next()?, parse_hex16(next()?)?);
    let change = match kind {
        "ban" => Change::Ban {
            prefix: parse_prefix(next()?)?,
            ttl_ms: parse_ttl(next()?)?,
        },
        "lift" => Change::Lift {
            prefix: parse_prefix(next()?)?,
        },
        "class" => Change::Class {
            class: parse_hex16(next()?)?,
            ttl_ms: parse_ttl(next()?)?,
        },
        _ => return None,
    };
    next().is_none().then_some((sender, change))
}

/// A page of a set, as `LOAD_PAGE_SCRIPT` answers.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::redis) struct Page<'a> {
    /// Members and the milliseconds each has left; bad pairs are `None`.
    pub(in crate::redis) entries: Vec<Option<(&'a str, u64)>>,
    /// Where the next page starts (the score and member of this one's last
    /// entry), when another may follow.
    pub(in crate::redis) next: Option<(i64, &'a [u8])>,
}

/// Parses a `LOAD_PAGE_SCRIPT` reply; `None` when it is malformed.
pub(in crate::redis) fn decode_page(reply: &Value) -> Option<Page<'_>> {
    let Value::Array(items) = reply else {
        return None;
    };
    let [more, score, member, entries @ ..] = &items[..] else {
        return None;
    };
    let next = match (more, score, member) {
        (Value::Int(0), Value::Int(_), Value::BulkString(_)) => None,
        (Value::Int(1), Value::Int(score), Value::BulkString(member)) => {
            Some((*score, member.as_slice()))
        }
        _ => return None,
    };
    if entries.len() % 2 != 0 {
        return None;
    }
    let entries = entries.chunks_exact(2).map(|pair| match pair {
        [Value::BulkString(member), Value::Int(ms)] => {
            let member = std::str::from_utf8(member).ok()?;
            let ms = u64::try_from(*ms)
                .ok()
                .filter(|ms| (1..=MAX_TTL_MS).contains(ms))?;
            (member.len() <= MAX_MESSAGE).then_some((member, ms))
        }
        _ => None,
    });
    Some(Page {
        entries: entries.collect(),
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn a_signed_message_verifies_only_unchanged_and_under_its_key() {
        let key = (1, 2);
        let change = Change::Ban {
            prefix: prefix("198.51.100.7/32"),
            ttl_ms: 60_000,
        };
        let text = sign(key, encode(7, &change));
        assert!(text.len() <= MAX_MESSAGE + 33, "{text}");
        let message = verify(key, text.as_bytes()).unwrap();
        assert_eq!(decode(message), Some((7, change)));
        assert_eq!(verify((1, 3), text.as_bytes()), None, "another key");
        let tampered = text.replace("198.51.100.7/32", "198.51.100.8/32");
        assert_eq!(verify(key, tampered.as_bytes()), None);
        assert_eq!(verify(key, encode(7, &change).as_bytes()), None, "unsigned");
        for bad in [&b""[..], b" ", &[0xff; 40], &[b'a'; 400]] {
            assert_eq!(verify(key, bad), None);
        }
    }

    #[test]
    fn messages_round_trip() {
        let sender = 0x0123_4567_89ab_cdef;
        for change in [
            Change::Ban {
                prefix: prefix("192.0.2.7/32"),
                ttl_ms: 60_000,
            },
            Change::Ban {
                prefix: prefix("2001:db8:1:2::/64"),
                ttl_ms: 1,
            },
            Change::Lift {
                prefix: prefix("198.51.100.0/24"),
            },
            Change::Class {
                class: u64::MAX,
                ttl_ms: MAX_TTL_MS,
            },
        ] {
            let text = encode(sender, &change);
            assert!(text.len() <= MAX_MESSAGE, "{text}");
            assert_eq!(decode(text.as_bytes()), Some((sender, change)), "{text}");
        }
        assert_eq!(
            encode(
                sender,
                &Change::Lift {
                    prefix: prefix("192.0.2.7")
                }
            ),
            "1 lift 0123456789abcdef 192.0.2.7/32"
        );
    }

    #[test]
    fn bad_messages_are_refused() {
        let s = "0123456789abcdef";
        for bad in [
            String::new(),
            "1".into(),
            format!("2 ban {s} 192.0.2.7/32 1000"),
            format!("1 ban {s} 192.0.2.7/32"),
            format!("1 ban {s} 192.0.2.7/32 1000 extra"),
            format!("1 ban {s} 192.0.2.7/32  1000"),
            format!("1 ban {s} 192.0.2.7/32 1000 "),
            format!("1 ban {s} 192.0.2.7 1000"),
            format!("1 ban {s} 192.0.2.7/24 1000"),
            format!("1 ban {s} 0.0.0.0/0 1000"),
            format!("1 ban {s} 10.0.0.0/7 1000"),
            format!("1 ban {s} ::/0 1000"),
            format!("1 ban {s} ::ffff:192.0.2.7/128 1000"),
            format!("1 ban {s} 192.0.2.7/33 1000"),
            format!("1 ban {s} 192.0.2.7/32 0"),
            format!("1 ban {s} 192.0.2.7/32 -5"),
            format!("1 ban {s} 192.0.2.7/32 +5"),
            format!("1 ban {s} 192.0.2.7/32 1e3"),
            format!("1 ban {s} 192.0.2.7/32 {}", MAX_TTL_MS + 1),
            format!("1 ban {s} 192.0.2.7/32 99999999999999999999999"),
            "1 ban 0123456789ABCDEF 192.0.2.7/32 1000".into(),
            "1 ban 123456789abcdef 192.0.2.7/32 1000".into(),
            "1 ban +123456789abcdef 192.0.2.7/32 1000".into(),
            format!("1 unban {s} 192.0.2.7/32"),
            format!("1 lift {s} 192.0.2.7/32 1000"),
            format!("1 class {s} 12 1000"),
            format!("1 class {s} {s}"),
            format!("1 BAN {s} 192.0.2.7/32 1000"),
            format!("1\tban {s} 192.0.2.7/32 1000"),
            format!("1 ban {s} 192.0.2.7/32 1000{}", " ".repeat(MAX_MESSAGE)),
        ] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(decode(&[0xff, 0xfe, b' ']), None);
    }

    #[test]
    fn stored_entries_are_parsed_strictly() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let page = |head: [Value; 3], entries: &[Value]| {
            let mut items = head.to_vec();
            items.extend_from_slice(entries);
            Value::Array(items)
        };
        let last = [Value::Int(0), Value::Int(0), bulk("")];
        let entries = [
            bulk("192.0.2.7/32"),
            Value::Int(1_500),
            bulk("192.0.2.8/32"),
            Value::Int(0),
            Value::Int(5),
            bulk("x"),
            bulk("192.0.2.9/32"),
            Value::Int(i64::MAX),
        ];
        let reply = page(last.clone(), &entries);
        let p = decode_page(&reply).unwrap();
        assert_eq!(p.entries, [Some(("192.0.2.7/32", 1_500)), None, None, None]);
        assert_eq!(p.next, None);
        let more = [Value::Int(1), Value::Int(1_700_000_000_000), bulk("x")];
        let reply = page(more, &entries[..2]);
        let p = decode_page(&reply).unwrap();
        assert_eq!(p.next, Some((1_700_000_000_000, &b"x"[..])));
        assert_eq!(p.entries, [Some(("192.0.2.7/32", 1_500))]);
        for bad in [
            page(last.clone(), &[bulk("a")]),
            page([Value::Int(2), Value::Int(0), bulk("")], &[]),
            page([Value::Int(1), bulk("1"), bulk("")], &[]),
            page([Value::Int(1), Value::Int(1), Value::Int(1)], &[]),
            Value::Array(vec![Value::Int(0), Value::Int(0)]),
            Value::Int(3),
        ] {
            assert!(decode_page(&bad).is_none(), "{bad:?}");
        }
        let empty = page(last, &[]);
        let p = decode_page(&empty).unwrap();
        assert_eq!((p.entries.len(), p.next), (0, None));
    }
}
