//! The first request head of a connection as it came off the wire.

/// Longest request head the scanner reads, request line and final empty
/// line included (16 KiB); a longer one makes it give up.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header lines the scanner reads (hyper's default limit); one more
/// makes it give up.
pub const MAX_HEADER_LINES: u16 = 100;

use crate::http::identify::names::Spelling;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashed after each name, so that `ab` + `c` differs from `a` + `bc`; a
/// colon cannot occur in a name.
const NAME_END: u8 = b':';

/// Standard names whose wire order a [`WireHead`] keeps (five bits each
/// in a `u128`); later ones still count for presence and casing.
const ORDER_SLOTS: u32 = 25;

/// How a request head spells its standard header names, compared with how
/// Chromium and Firefox spell them over HTTP/1.1: Title-Case (`User-Agent`,
/// `Sec-Fetch-Site`; `DNT`, `TE`), client hints (`sec-ch-ua*`) lowercase.
/// Names a page's script may set itself (`Accept`, `Accept-Language`,
/// `Content-Type`, ...) and names that are not standard are not judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameCasing {
    /// Every judged name as the browsers spell it (also when there is
    /// none).
    Browser,
    /// Every judged name lowercase, and some not as the browsers spell
    /// it (`host`, `user-agent`): Node, Go's HTTP/2-minded clients, many
    /// scripts.
    Lowercase,
    /// Some judged names spelled otherwise (`user-Agent`, `HOST`), among
    /// capitals.
    Mixed,
}

/// The header names of a request head in wire order and casing, summed
/// up; made by [`HeadScanner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireHead {
    names_hash: u64,
    /// Ids of the standard names in wire order, five bits each from the
    /// low end, a repeat of the name before collapsed into it; 0 ends it.
    order: u128,
    /// One bit per standard name id present.
    present: u32,
    header_count: u16,
    http10: bool,
    casing: NameCasing,
}

impl WireHead {
    /// FNV-1a (64 bits) over every header name exactly as written, each
    /// followed by a `:`, in wire order: a reordered or recased header
    /// changes it. The same for the same names on any machine.
    pub fn names_hash(&self) -> u64 {
        self.names_hash
    }

    /// Header lines in the head (repeated names counted each time), at
    /// most [`MAX_HEADER_LINES`].
    pub fn header_count(&self) -> u16 {
        self.header_count
    }

    /// Whether the request line said `HTTP/1.0` (else `HTTP/1.1`).
    pub fn is_http10(&self) -> bool {
        self.http10
    }

    /// The standard header names of the head in wire order, lowercase
    /// (`host`, `user-agent`, `sec-fetch-site`; `sec-ch-ua` for every
    /// client hint, `if-` and `sec-fetch-` for the other members of those
    /// families), a name repeated right after itself once; the first 25.
    /// Other names are left out.
    pub fn standard_names(&self) -> impl Iterator<Item = &'static str> + use<> {
        self.ids().filter_map(crate::http::identify::names::name_of)
    }

    /// How the head spells its standard names; see [`NameCasing`].
    pub fn name_casing(&self) -> NameCasing {
        self.casing
    }

    /// The ids of the standard names in wire order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = u8> + use<> {
        let mut order = self.order;
        std::iter::from_fn(move || {
            let id = (order & 0x1f) as u8;
            order >>= 5;
            (id != 0).then_some(id)
        })
    }

    /// One bit per standard name id present.
    pub(crate) fn present(&self) -> u32 {
        self.present
    }
}

/// What [`HeadScanner::feed`] found so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The head is not complete yet; feed the next bytes.
    NeedMore,
    /// The head ended (empty line) within the bytes fed; bytes after it
    /// (a body, pipelined requests) are not read.
    Done(WireHead),
    /// Not an HTTP/1.x request head, or over the limits; nothing more will
    /// be read.
    GaveUp,
}

/// Where the scanner stands in the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the request line; empty lines here are skipped, as hyper
    /// does.
    Start,
    /// A `\r` before the request line; `\n` must follow.
    StartCr,
    Method,
    /// The first byte of the request target.
    TargetStart,
    /// The request target, up to the space before the version.
    Target,
    /// Matching `HTTP/1.` then `0` or `1`; `matched` counts the bytes.
    Version,
    /// After the version: the line must end.
    VersionEnd,
    /// A `\r` ending a line; `\n` must follow.
    LineCr,
    /// At the start of a header line, or of the empty line.
    LineStart,
    Name,
    /// The value, up to the line feed.
    Value,
    /// A `\r` at the start of a line: the head ends with the `\n`.
    EndCr,
    Done,
    GaveUp,
}

const VERSION_PREFIX: &[u8; 7] = b"HTTP/1.";

/// Reads one request head incrementally.
///
/// `http::HeaderMap` keeps neither the order nor the casing in which a
/// client wrote its header names, yet both tell clients apart: every HTTP
/// library writes its headers in its own order and casing, and a script
/// that copies a browser's user agent rarely copies the rest. The
/// [`HeadScanner`] reads the raw bytes of a request head, fed in whatever
/// pieces they arrive, and sums up the header names in wire order and
/// casing in a [`WireHead`]. It never allocates and never panics, whatever
/// the input; it gives up on anything that is not an HTTP/1.0 or HTTP/1.1
/// request head (the HTTP/2 preface, TLS, garbage) and on heads over
/// [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADER_LINES`] header lines.
///
/// The [gate](crate::http::Gate) runs one over the first request of every
/// connection; [`GateConnectInfo`](crate::http::GateConnectInfo) hands the result
/// to handlers and to [`Fingerprint`](crate::http::Fingerprint).
///
/// ```
/// use floodguard::http::{HeadScanner, Scan};
///
/// let mut scanner = HeadScanner::new();
/// assert_eq!(scanner.feed(b"GET / HTTP/1.1\r\nHost: a\r\n"), Scan::NeedMore);
/// let Scan::Done(head) = scanner.feed(b"Accept: */*\r\n\r\n") else {
///     panic!("a whole head");
/// };
/// assert_eq!(head.header_count(), 2);
/// assert!(!head.is_http10());
/// ```
///
///
/// Feed it the bytes of a connection exactly as they are read, split
/// anywhere: the result does not depend on where the splits fall. Once it
/// has returned [`Scan::Done`] or [`Scan::GaveUp`] it returns the same for
/// every later feed.
#[derive(Clone, Debug)]
pub struct HeadScanner {
    state: State,
    hash: u64,
    count: u16,
    /// Bytes of head read so far, at most [`MAX_HEAD_BYTES`].
    seen: u16,
    /// Bytes of `HTTP/1.` matched.
    matched: u8,
    http10: bool,
    /// The first bytes of the name being read (every standard name fits),
    /// its length so far, and whether it has a capital.
    name: [u8; NAME_KEPT],
    name_len: u16,
    name_upper: bool,
    /// The standard names so far: see [`WireHead`]; `slots` filled, the
    /// last id written.
    order: u128,
    slots: u32,
    last_id: u8,
    present: u32,
    /// A judged standard name not spelled as browsers spell it; one with
    /// a capital.
    miscased: bool,
    upper: bool,
}

/// Bytes of each header name kept for telling standard names apart.
const NAME_KEPT: usize = 32;

impl Default for HeadScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl HeadScanner {
    /// A scanner at the start of a request head.
    pub const fn new() -> Self {
        Self {
            state: State::Start,
            hash: FNV_OFFSET,
            count: 0,
            seen: 0,
            matched: 0,
            http10: false,
            name: [0; NAME_KEPT],
            name_len: 0,
            name_upper: false,
            order: 0,
            slots: 0,
            last_id: 0,
            present: 0,
            miscased: false,
            upper: false,
        }
    }

    /// Reads the next `bytes` of the connection.
    pub fn feed(&mut self, bytes: &[u8]) -> Scan {
        // Bytes past the limit are never looked at: the head gives up as
        // soon as its budget is spent, however the input is split.
        let budget = MAX_HEAD_BYTES - usize::from(self.seen);
        let mut rest = &bytes[..bytes.len().min(budget)];
        while !rest.is_empty() && !self.is_finished() {
            let used = self.step(rest);
            self.seen += used as u16;
            rest = &rest[used..];
        }
        if !self.is_finished() && usize::from(self.seen) == MAX_HEAD_BYTES {
            self.state = State::GaveUp;
        }
        self.result()
    }

    fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::GaveUp)
    }

    fn result(&self) -> Scan {
        match self.state {
            State::Done => Scan::Done(WireHead {
                names_hash: self.hash,
                order: self.order,
                present: self.present,
                header_count: self.count,
                http10: self.http10,
                casing: match (self.miscased, self.upper) {
                    (false, _) => NameCasing::Browser,
                    (true, false) => NameCasing::Lowercase,
                    (true, true) => NameCasing::Mixed,
                },
            }),
            State::GaveUp => Scan::GaveUp,
            _ => Scan::NeedMore,
        }
    }

    /// Reads from the start of `bytes` (not empty) and returns how many
    /// bytes it used (at least one). Runs of target, name or value bytes
    /// are taken in one step.
    fn step(&mut self, bytes: &[u8]) -> usize {
        let b = bytes[0];
        match self.state {
            State::Target => return self.target(bytes),
            State::Name => return self.name(bytes),
            State::Value => return value(bytes, &mut self.state),
            _ => {}
        }
        self.state = match (self.state, b) {
            (State::Start, b'\r') => State::StartCr,
            (State::Start, b'\n') | (State::StartCr, b'\n') => State::Start,
            (State::Start, b) | (State::Method, b) if is_tchar(b) => State::Method,
            (State::Method, b' ') => State::TargetStart,
            // An empty target, or a line ending after the method.
            (State::TargetStart, b' ' | b'\r' | b'\n') => State::GaveUp,
            (State::TargetStart, _) => State::Target,
            (State::Version, b) => self.version(b),
            (State::VersionEnd, b'\r') => State::LineCr,
            (State::VersionEnd, b'\n') | (State::LineCr, b'\n') => State::LineStart,
            (State::LineStart, b'\r') => State::EndCr,
            (State::LineStart, b'\n') | (State::EndCr, b'\n') => State::Done,
            (State::LineStart, b) if is_tchar(b) => self.start_name(b),
            // Anything else: a bare `\r`, a space or control byte where
            // none may be (folded lines included), a missing version.
            _ => State::GaveUp,
        };
        1
    }

    /// The rest of the request target, up to the space before the version.
    /// A line that ends without a version (HTTP/0.9) is not HTTP/1.x.
    fn target(&mut self, bytes: &[u8]) -> usize {
        match bytes
            .iter()
            .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
        {
            None => bytes.len(),
            Some(i) => {
                self.state = if bytes[i] == b' ' {
                    State::Version
                } else {
                    State::GaveUp
                };
                i + 1
            }
        }
    }

    /// One byte of `HTTP/1.0` or `HTTP/1.1`; `PRI * HTTP/2.0` stops here.
    fn version(&mut self, b: u8) -> State {
        let at = usize::from(self.matched);
        if let Some(&want) = VERSION_PREFIX.get(at) {
            if b != want {
                return State::GaveUp;
            }
            self.matched += 1;
            return State::Version;
        }
        match b {
            b'0' | b'1' => {
                self.http10 = b == b'0';
                State::VersionEnd
            }
            _ => State::GaveUp,
        }
    }

    fn start_name(&mut self, b: u8) -> State {
        if self.count == MAX_HEADER_LINES {
            return State::GaveUp;
        }
        self.count += 1;
        self.name_len = 0;
        self.name_upper = false;
        self.name_byte(b);
        State::Name
    }

    /// Name bytes up to the colon, hashed as they are.
    fn name(&mut self, bytes: &[u8]) -> usize {
        for (i, &b) in bytes.iter().enumerate() {
            if b == b':' {
                self.hash = fnv(self.hash, NAME_END);
                self.end_name();
                self.state = State::Value;
                return i + 1;
            }
            if !is_tchar(b) {
                // Whitespace before the colon, or a line with no colon.
                self.state = State::GaveUp;
                return i + 1;
            }
            self.name_byte(b);
        }
        bytes.len()
    }

    /// One byte of a name: hashed, and kept while there is room.
    fn name_byte(&mut self, b: u8) {
        self.hash = fnv(self.hash, b);
        if let Some(slot) = self.name.get_mut(usize::from(self.name_len)) {
            *slot = b;
        }
        // A name is shorter than the head, which is at most 16 KiB.
        self.name_len = self.name_len.saturating_add(1);
        self.name_upper |= b.is_ascii_uppercase();
    }

    /// A whole name read: if it is standard, note its place and casing.
    fn end_name(&mut self) {
        let len = usize::from(self.name_len);
        let kept = &self.name[..len.min(NAME_KEPT)];
        let Some((id, spelling)) = crate::http::identify::names::identify(kept, len) else {
            return;
        };
        let judged = match spelling {
            Spelling::Exact(s) => Some(kept == s.as_bytes()),
            Spelling::Lowercase => Some(!self.name_upper),
            Spelling::Any => None,
        };
        if let Some(right) = judged {
            self.miscased |= !right;
            self.upper |= self.name_upper;
        }
        self.present |= 1 << id;
        if id != self.last_id && self.slots < ORDER_SLOTS {
            self.order |= u128::from(id) << (5 * self.slots);
            self.slots += 1;
        }
        self.last_id = id;
    }
}

/// A header value, skipped up to its line feed.
fn value(bytes: &[u8], state: &mut State) -> usize {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => {
            *state = State::LineStart;
            i + 1
        }
        None => bytes.len(),
    }
}

#[inline]
fn fnv(hash: u64, b: u8) -> u64 {
    (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

/// RFC 9110 token characters: what a method or a header name is made of.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

#[inline]
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A Chrome 124 navigation as it comes off the wire (17 headers): the
/// fixture of the scanner's and the fingerprint's tests.
#[cfg(test)]
pub(crate) const CHROME_HEAD: &str = "GET /search?q=shoes HTTP/1.1\r\n\
Host: shop.test\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Windows\"\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-User: ?1\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://shop.test/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=abc\r\n\
Priority: u=0, i\r\n\r\n";

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CHROME: &[u8] = CHROME_HEAD.as_bytes();

    fn whole(head: &[u8]) -> Scan {
        HeadScanner::new().feed(head)
    }

    fn done(head: &[u8]) -> WireHead {
        match whole(head) {
            Scan::Done(h) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(head)),
        }
    }

    /// Feeds `head` in pieces cut at `cuts` (offsets, any order, clamped).
    fn split(head: &[u8], cuts: &[usize]) -> Scan {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(head.len())).collect();
        cuts.sort_unstable();
        let mut scanner = HeadScanner::new();
        let mut last = Scan::NeedMore;
        let mut from = 0;
        for to in cuts.into_iter().chain([head.len()]) {
            last = scanner.feed(&head[from..to]);
            from = to;
        }
        last
    }

    /// The hash the scanner should give for `names`.
    fn expected_hash(names: &[&str]) -> u64 {
        names
            .iter()
            .fold(FNV_OFFSET, |h, n| n.bytes().chain([NAME_END]).fold(h, fnv))
    }

    /// Names to build heads of: standard ones (some the browsers spell
    /// exactly, some not judged, prefixes) and look-alikes.
    const NAMES_TO_PICK: &[&str] = &[
        "Host",
        "Connection",
        "User-Agent",
        "Accept",
        "Accept-Language",
        "Accept-Encoding",
        "Cookie",
        "Referer",
        "DNT",
        "sec-ch-ua",
        "sec-ch-ua-platform",
        "Sec-Fetch-Site",
        "Sec-Fetch-Dest",
        "Sec-Fetch-Storage-Access",
        "If-None-Match",
        "Content-Type",
        "Hosts",
        "Accept-Charset",
        "sec-ch-prefers-color-scheme",
    ];

    /// The table's entry for a lowercase header name, looked up whole.
    fn table_entry(lower: &str) -> Option<&'static crate::http::identify::names::Known> {
        crate::http::identify::names::NAMES.iter().find(|k| {
            if k.prefix {
                lower.starts_with(k.name)
            } else {
                lower == k.name
            }
        })
    }

    /// A plain model of the standard-name sequence: every name looked up
    /// in the table whole, lowercase, a name repeating the one before
    /// (other names between them aside) collapsed, the first 25 kept.
    fn expected_order(names: &[&str]) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        let mut last = None;
        for n in names {
            let lower = n.to_ascii_lowercase();
            let Some(k) = table_entry(&lower) else {
                continue;
            };
            if last != Some(k.name) && out.len() < ORDER_SLOTS as usize {
                out.push(k.name);
            }
            last = Some(k.name);
        }
        out
    }

    /// A plain model of the casing summary.
    fn expected_casing(names: &[&str]) -> NameCasing {
        let (mut miscased, mut upper) = (false, false);
        for n in names {
            let lower = n.to_ascii_lowercase();
            let Some(k) = table_entry(&lower) else {
                continue;
            };
            let right = match k.spelling {
                Spelling::Exact(s) => *n == s,
                Spelling::Lowercase => *n == lower,
                Spelling::Any => continue,
            };
            miscased |= !right;
            upper |= *n != lower;
        }
        match (miscased, upper) {
            (false, _) => NameCasing::Browser,
            (true, false) => NameCasing::Lowercase,
            (true, true) => NameCasing::Mixed,
        }
    }

    #[test]
    fn standard_names_in_wire_order_and_their_casing() {
        let head = done(CHROME);
        assert_eq!(
            head.standard_names().collect::<Vec<_>>(),
            [
                "host",
                "connection",
                "sec-ch-ua",
                "upgrade-insecure-requests",
                "user-agent",
                "accept",
                "sec-fetch-site",
                "sec-fetch-mode",
                "sec-fetch-user",
                "sec-fetch-dest",
                "referer",
                "accept-encoding",
                "accept-language",
                "cookie",
                "priority",
            ]
        );
        assert_eq!(head.name_casing(), NameCasing::Browser);
        let lower = done(b"GET / HTTP/1.1\r\nhost: a\r\nuser-agent: b\r\nX-Odd: c\r\n\r\n");
        assert_eq!(lower.name_casing(), NameCasing::Lowercase);
        let mixed = done(b"GET / HTTP/1.1\r\nHost: a\r\nuser-agent: b\r\n\r\n");
        assert_eq!(mixed.name_casing(), NameCasing::Mixed);
        let hints = done(b"GET / HTTP/1.1\r\nSec-CH-UA: a\r\n\r\n");
        assert_eq!(hints.name_casing(), NameCasing::Mixed);
        // Names a page may set are not judged; other names are not looked at.
        let free = done(b"GET / HTTP/1.1\r\naccept: a\r\nCONTENT-TYPE: b\r\nx-y: c\r\n\r\n");
        assert_eq!(free.name_casing(), NameCasing::Browser);
        assert_eq!(
            free.standard_names().collect::<Vec<_>>(),
            ["accept", "content-type"]
        );
        // Past 25 standard names the order is cut; presence still counts.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..30 {
            let n = if i % 2 == 0 { "Accept" } else { "Range" };
            many.extend_from_slice(format!("{n}: v\r\nCookie: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"Host: a\r\n\r\n");
        let many = done(&many);
        assert_eq!(many.standard_names().count(), 25);
        assert_ne!(many.present() & 1 << 1, 0);
    }

    #[test]
    fn chrome_head_whole_and_split_at_every_byte() {
        let head = done(CHROME);
        assert_eq!(head.header_count(), 17);
        assert!(!head.is_http10());
        assert_eq!(
            head.names_hash(),
            expected_hash(&[
                "Host",
                "Connection",
                "sec-ch-ua",
                "sec-ch-ua-mobile",
                "sec-ch-ua-platform",
                "Upgrade-Insecure-Requests",
                "User-Agent",
                "Accept",
                "Sec-Fetch-Site",
                "Sec-Fetch-Mode",
                "Sec-Fetch-User",
                "Sec-Fetch-Dest",
                "Referer",
                "Accept-Encoding",
                "Accept-Language",
                "Cookie",
                "Priority",
            ])
        );
        for at in 0..=CHROME.len() {
            assert_eq!(split(CHROME, &[at]), Scan::Done(head), "split at {at}");
        }
        let mut scanner = HeadScanner::new();
        for (i, b) in CHROME.iter().enumerate() {
            let want = if i + 1 == CHROME.len() {
                Scan::Done(head)
            } else {
                Scan::NeedMore
            };
            assert_eq!(scanner.feed(std::slice::from_ref(b)), want, "byte {i}");
        }
        // Finished: later bytes change nothing.
        assert_eq!(scanner.feed(b"GET / HTTP/1.0\r\n\r\n"), Scan::Done(head));
    }

    #[test]
    fn order_and_casing_change_the_hash() {
        let base = done(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
        let reordered = done(b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: a\r\n\r\n");
        let lower = done(b"GET / HTTP/1.1\r\nhost: a\r\naccept: */*\r\n\r\n");
        let glued = done(b"GET / HTTP/1.1\r\nHostA: a\r\nccept: */*\r\n\r\n");
        let hashes = [base, reordered, lower, glued].map(|h| h.names_hash());
        for (i, a) in hashes.iter().enumerate() {
            for b in &hashes[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Values, method and target are not part of it.
        let other = done(b"POST /x?y HTTP/1.1\r\nHost: b\r\nAccept: text/html\r\n\r\n");
        assert_eq!(other.names_hash(), base.names_hash());
    }

    #[test]
    fn http10_bare_line_feeds_and_leading_empty_lines() {
        let head = done(b"\r\n\nGET / HTTP/1.0\nUser-Agent: x\nAccept:\n\n");
        assert!(head.is_http10());
        assert_eq!(head.header_count(), 2);
        assert_eq!(head.names_hash(), expected_hash(&["User-Agent", "Accept"]));
        let empty = done(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!((empty.header_count(), empty.names_hash()), (0, FNV_OFFSET));
    }

    #[test]
    fn not_http1_gives_up() {
        for head in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET /\r\n",
            b"GET  HTTP/1.1\r\n\r\n",
            b" GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\n: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert_eq!(
                whole(head),
                Scan::GaveUp,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        // The preface gives up on its first wrong byte, well before the end.
        assert_eq!(whole(b"PRI * HTTP/2"), Scan::GaveUp);
        assert_eq!(whole(b"PRI * HTTP/1"), Scan::NeedMore);
    }

    #[test]
    fn limits() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADER_LINES {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut at_limit = head.clone();
        at_limit.extend_from_slice(b"\r\n");
        assert_eq!(done(&at_limit).header_count(), MAX_HEADER_LINES);
        head.extend_from_slice(b"X-last: v\r\n\r\n");
        assert_eq!(whole(&head), Scan::GaveUp);

        // Exactly 16 KiB is read; one byte more is not.
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES - 4, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(big.len(), MAX_HEAD_BYTES);
        assert_eq!(done(&big).header_count(), 1);
        big.insert(20, b'a');
        assert_eq!(whole(&big), Scan::GaveUp);
        assert_eq!(split(&big, &[MAX_HEAD_BYTES - 1]), Scan::GaveUp);
        // An endless value gives up at the limit, not at the end of input.
        let mut scanner = HeadScanner::new();
        assert_eq!(scanner.feed(&big[..MAX_HEAD_BYTES - 1]), Scan::NeedMore);
        assert_eq!(scanner.feed(b"a"), Scan::GaveUp);
    }

    #[test]
    fn bytes_after_the_head_are_not_read() {
        let head = done(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nX: y\r\n\r\n");
        assert_eq!(head.header_count(), 1);
    }

    proptest! {
        #[test]
        fn any_bytes_split_anywhere_give_one_result(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..8),
        ) {
            prop_assert_eq!(split(&bytes, &cuts), whole(&bytes));
        }

        #[test]
        fn heads_of_arbitrary_names_split_anywhere(
            names in proptest::collection::vec("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", 0..20),
            values in proptest::collection::vec("[ -~]{0,20}", 20),
            bare_lf in any::<bool>(),
            cuts in proptest::collection::vec(0usize..600, 0..8),
        ) {
            let eol = if bare_lf { "\n" } else { "\r\n" };
            let mut head = format!("GET / HTTP/1.1{eol}");
            for (n, v) in names.iter().zip(&values) {
                head.push_str(&format!("{n}:{v}{eol}"));
            }
            head.push_str(eol);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let got = split(head.as_bytes(), &cuts);
            prop_assert_eq!(got, whole(head.as_bytes()));
            let Scan::Done(got) = got else {
                return Err(TestCaseError::fail(format!("{got:?}")));
            };
            prop_assert_eq!(got.names_hash(), expected_hash(&names));
            prop_assert_eq!(got.header_count(), names.len() as u16);
            prop_assert!(!got.is_http10());
            prop_assert_eq!(got.standard_names().collect::<Vec<_>>(), expected_order(&names));
            prop_assert_eq!(got.name_casing(), expected_casing(&names));
        }

        #[test]
        fn standard_names_any_casing_with_extra_names_split_anywhere(
            picks in proptest::collection::vec((0usize..NAMES_TO_PICK.len(), any::<u32>()), 0..40),
            extras in proptest::collection::vec("[xX]-[a-zA-Z0-9]{1,10}", 0..40),
            cuts in proptest::collection::vec(0usize..1500, 0..8),
        ) {
            // Standard names, each recased at random (bit i of the seed
            // flips letter i), with random other names between them.
            let mut names = Vec::new();
            for (i, (pick, seed)) in picks.iter().enumerate() {
                let name: String = NAMES_TO_PICK[*pick]
                    .chars()
                    .enumerate()
                    .map(|(j, c)| if seed >> (j % 32) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                    .collect();
                names.push(name);
                if let Some(x) = extras.get(i) {
                    names.push(x.clone());
                }
            }
            let mut head = String::from("GET / HTTP/1.1\r\n");
            for n in &names {
                head.push_str(&format!("{n}: v\r\n"));
            }
            head.push_str("\r\n");
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let got = split(head.as_bytes(), &cuts);
            prop_assert_eq!(got, whole(head.as_bytes()));
            let Scan::Done(got) = got else {
                return Err(TestCaseError::fail(format!("{got:?}")));
            };
            prop_assert_eq!(got.standard_names().collect::<Vec<_>>(), expected_order(&names));
            prop_assert_eq!(got.name_casing(), expected_casing(&names));
        }
    }
}
