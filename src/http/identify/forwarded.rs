//! Forwarding headers read from the right: `X-Forwarded-For` and
//! `Forwarded` (RFC 7239) as a reversed walk of hops, strict about what it
//! accepts, bounded in what it parses.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderValue;

use crate::ip::canonical;

/// The most entries of one forwarding header that are parsed: the rightmost
/// `MAX_HOPS`, counted over all of the header's lines. Real chains are a few
/// hops long.
pub const MAX_HOPS: usize = 64;

/// One entry of a forwarding header: what a proxy said about the party that
/// connected to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// An address, canonical (IPv4-mapped IPv6 is IPv4); any port is
    /// dropped.
    Addr(IpAddr),
    /// `Forwarded` only: the node `unknown`, or an element with no `for=`
    /// parameter. The proxy did not know or did not say.
    Unknown,
    /// `Forwarded` only: an obfuscated node such as `_hidden`.
    Obfuscated,
    /// Not a well-formed entry. Also stands, as the leftmost item of a
    /// parser's output, for every entry beyond the [`MAX_HOPS`] cap.
    Malformed,
}

/// Parses `X-Forwarded-For` lines into hops, left to right, the lines
/// taken as one comma-separated list.
///
/// Each entry is an IPv4 or IPv6 address, optionally surrounded by spaces
/// or tabs, optionally with a port (`192.0.2.1:8080`, `[2001:db8::1]`,
/// `[2001:db8::1]:8080`); anything else (including `unknown`) is
/// [`Hop::Malformed`]. Empty entries (`a,,b`, a trailing comma) are skipped,
/// as HTTP list syntax asks. At most [`MAX_HOPS`] entries are parsed, the
/// rightmost; if there are more, the output starts with one
/// [`Hop::Malformed`] standing for the rest.
///
/// ```
/// use floodguard::http::fuzzing::{Hop, parse_x_forwarded_for};
/// use http::HeaderMap;
/// let mut h = HeaderMap::new();
/// h.append("x-forwarded-for", "192.0.2.1:443, [2001:db8::1]".parse().unwrap());
/// h.append("x-forwarded-for", "nonsense".parse().unwrap());
/// assert_eq!(
///     parse_x_forwarded_for(h.get_all("x-forwarded-for")),
///     [Hop::Addr("192.0.2.1".parse().unwrap()), Hop::Addr("2001:db8::1".parse().unwrap()), Hop::Malformed],
/// );
/// ```
pub fn parse_x_forwarded_for<'a, I>(values: I) -> Vec<Hop>
where
    I: IntoIterator<Item = &'a HeaderValue>,
    I::IntoIter: DoubleEndedIterator,
{
    collect(HopsRev::new(values.into_iter(), Syntax::Xff))
}

/// Parses RFC 7239 `Forwarded` lines into the `for=` node of each element,
/// left to right, the lines taken as one comma-separated list.
///
/// Elements are separated by commas and their parameters by semicolons;
/// parameter names are case-insensitive, values are tokens or quoted
/// strings with backslash escapes, in which commas and semicolons do not
/// split. A node is an IPv4 address, a bracketed IPv6 address (also
/// accepted unquoted, and unbracketed when that reads as nothing else),
/// either with an optional port or obfuscated port, `unknown`
/// ([`Hop::Unknown`]) or an obfuscated identifier like `_hidden`
/// ([`Hop::Obfuscated`]). An element without `for=` is [`Hop::Unknown`].
/// An element with a syntax error anywhere, a repeated `for`, or an
/// unreadable node is [`Hop::Malformed`]. Empty elements are skipped.
///
/// Each line is split into elements from its end, so a broken element
/// (such as an unterminated quoted string) cannot swallow the elements
/// proxies appended to its right; a quoted string never spans two lines.
/// The [`MAX_HOPS`] cap applies as for [`parse_x_forwarded_for`].
///
/// ```
/// use floodguard::http::fuzzing::{Hop, parse_forwarded};
/// use http::HeaderMap;
/// let mut h = HeaderMap::new();
/// h.append("forwarded", r#"for=192.0.2.60;proto=http, For="[2001:db8:cafe::17]:4711""#.parse().unwrap());
/// h.append("forwarded", "for=unknown, for=_hidden, for=not-an-ip".parse().unwrap());
/// assert_eq!(
///     parse_forwarded(h.get_all("forwarded")),
///     [
///         Hop::Addr("192.0.2.60".parse().unwrap()),
///         Hop::Addr("2001:db8:cafe::17".parse().unwrap()),
///         Hop::Unknown,
///         Hop::Obfuscated,
///         Hop::Malformed,
///     ],
/// );
/// ```
pub fn parse_forwarded<'a, I>(values: I) -> Vec<Hop>
where
    I: IntoIterator<Item = &'a HeaderValue>,
    I::IntoIter: DoubleEndedIterator,
{
    collect(HopsRev::new(values.into_iter(), Syntax::Forwarded))
}

/// Left to right, from hops given right to left.
pub(super) fn collect(hops: impl Iterator<Item = Hop>) -> Vec<Hop> {
    let mut v: Vec<Hop> = hops.collect();
    v.reverse();
    v
}

/// The two list headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Syntax {
    Xff,
    Forwarded,
}

/// The hops of a header, right to left, without allocating: lines from the
/// last, entries from the end of each line. Yields at most [`MAX_HOPS`]
/// hops, then one [`Hop::Malformed`] if any entry is left.
pub(super) struct HopsRev<'a, I> {
    lines: I,
    /// The unread start of the current line; `None` between lines.
    line: Option<&'a [u8]>,
    syntax: Syntax,
    yielded: usize,
    done: bool,
}

impl<'a, I: DoubleEndedIterator<Item = &'a HeaderValue>> HopsRev<'a, I> {
    pub(super) fn new(lines: I, syntax: Syntax) -> Self {
        HopsRev {
            lines,
            line: None,
            syntax,
            yielded: 0,
            done: false,
        }
    }
}

impl<'a, I: DoubleEndedIterator<Item = &'a HeaderValue>> Iterator for HopsRev<'a, I> {
    type Item = Hop;

    fn next(&mut self) -> Option<Hop> {
        if self.done {
            return None;
        }
        loop {
            let line = match self.line.take() {
                Some(line) => line,
                None => match self.lines.next_back() {
                    Some(v) => v.as_bytes(),
                    None => {
                        self.done = true;
                        return None;
                    }
                },
            };
            let (rest, entry, unterminated) = match self.syntax {
                Syntax::Xff => match line.iter().rposition(|&b| b == b',') {
                    Some(i) => (Some(&line[..i]), &line[i + 1..], false),
                    None => (None, line, false),
                },
                Syntax::Forwarded => split_last_element(line),
            };
            self.line = rest;
            let entry = trim_ows(entry);
            if entry.is_empty() {
                continue;
            }
            if self.yielded == MAX_HOPS {
                self.done = true;
                return Some(Hop::Malformed);
            }
            self.yielded += 1;
            return Some(match self.syntax {
                Syntax::Xff => parse_node(entry, Syntax::Xff),
                Syntax::Forwarded if unterminated => Hop::Malformed,
                Syntax::Forwarded => parse_element(entry),
            });
        }
    }
}

/// Splits the last `Forwarded` element off `line`: (what is left of it,
/// the element, whether a quoted string ran off the line's start). Commas
/// inside quoted strings do not split. Read from the right, a `"` opens its
/// string unless an odd run of backslashes precedes it, which for
/// well-formed text is exactly the left-to-right reading; for broken text
/// the element comes out malformed either way.
pub(super) fn split_last_element(line: &[u8]) -> (Option<&[u8]>, &[u8], bool) {
    let mut i = line.len();
    while i > 0 {
        i -= 1;
        match line[i] {
            b',' => return (Some(&line[..i]), &line[i + 1..], false),
            b'"' => loop {
                if i == 0 {
                    return (None, line, true);
                }
                i -= 1;
                if line[i] == b'"' {
                    let slashes = line[..i].iter().rev().take_while(|&&b| b == b'\\').count();
                    if slashes % 2 == 0 {
                        break;
                    }
                }
            },
            _ => {}
        }
    }
    (None, line, false)
}

/// The `for=` node of one non-empty `Forwarded` element.
pub(super) fn parse_element(element: &[u8]) -> Hop {
    let mut node = None;
    let mut rest = Some(element);
    while let Some(s) = rest {
        let Some((pair, next)) = split_first_pair(s) else {
            return Hop::Malformed;
        };
        rest = next;
        let pair = trim_ows(pair);
        if pair.is_empty() {
            continue;
        }
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            return Hop::Malformed;
        };
        let name = trim_ows(&pair[..eq]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Hop::Malformed;
        }
        let Some(value) = unquote(trim_ows(&pair[eq + 1..])) else {
            return Hop::Malformed;
        };
        if name.eq_ignore_ascii_case(b"for") {
            if node.is_some() {
                return Hop::Malformed;
            }
            node = Some(parse_node(&value, Syntax::Forwarded));
        }
    }
    node.unwrap_or(Hop::Unknown)
}

/// Splits the first `;`-separated pair off an element; `None` if a quoted
/// string is left open.
pub(super) fn split_first_pair(s: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let mut quoted = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b';' if !quoted => return Some((&s[..i], Some(&s[i + 1..]))),
            _ => {}
        }
        i += 1;
    }
    (!quoted).then_some((s, None))
}

/// A parameter value: a quoted string (unescaped; borrowed unless it held
/// escapes) or a bare value, taken leniently as any visible bytes but `"`
/// and `\`. `None` if it is neither.
pub(super) fn unquote(v: &[u8]) -> Option<Cow<'_, [u8]>> {
    match v {
        [] => None,
        [b'"', inner @ .., b'"'] => {
            if !inner.contains(&b'\\') {
                return (!inner.contains(&b'"')).then_some(Cow::Borrowed(inner));
            }
            let mut out = Vec::with_capacity(inner.len());
            let mut bytes = inner.iter();
            while let Some(&b) = bytes.next() {
                match b {
                    b'\\' => out.push(*bytes.next()?),
                    b'"' => return None,
                    _ => out.push(b),
                }
            }
            Some(Cow::Owned(out))
        }
        _ => v
            .iter()
            .all(|&b| b > b' ' && b != b'"' && b != b'\\' && b != 0x7f)
            .then_some(Cow::Borrowed(v)),
    }
}

/// One node: an address with an optional port (either syntax), or for
/// `Forwarded` also `unknown` or an obfuscated name, each with an optional
/// (possibly obfuscated) port.
pub(super) fn parse_node(node: &[u8], syntax: Syntax) -> Hop {
    let Ok(s) = std::str::from_utf8(node) else {
        return Hop::Malformed;
    };
    if let Ok(ip) = s.parse::<IpAddr>() {
        // Plain IPv4, or bare IPv6: unambiguous, if not RFC 7239 syntax.
        return Hop::Addr(canonical(ip));
    }
    let forwarded = syntax == Syntax::Forwarded;
    let (hop, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Hop::Malformed;
        };
        let Ok(ip) = inner.parse::<Ipv6Addr>() else {
            return Hop::Malformed;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Hop::Malformed,
            },
        };
        (Hop::Addr(canonical(IpAddr::V6(ip))), port)
    } else {
        let (name, port) = match s.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (s, None),
        };
        let hop = if let Ok(ip) = name.parse::<Ipv4Addr>() {
            Hop::Addr(IpAddr::V4(ip))
        } else if forwarded && name.eq_ignore_ascii_case("unknown") {
            Hop::Unknown
        } else if forwarded && is_obfuscated(name) {
            Hop::Obfuscated
        } else {
            return Hop::Malformed;
        };
        (hop, port)
    };
    match port {
        None => hop,
        Some(p) if is_port(p) || (forwarded && is_obfuscated(p)) => hop,
        Some(_) => Hop::Malformed,
    }
}

/// `1*5DIGIT`.
pub(super) fn is_port(p: &str) -> bool {
    (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 7239 `obfnode` / `obfport`: `"_" 1*(ALPHA / DIGIT / "." / "_" / "-")`.
pub(super) fn is_obfuscated(s: &str) -> bool {
    match s.as_bytes() {
        [b'_', rest @ ..] if !rest.is_empty() => rest
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
        _ => false,
    }
}

/// RFC 9110 `tchar`.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Strips optional whitespace (spaces and tabs) from both ends.
pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
