//! Request fingerprints, user-agent families and header anomalies: the
//! inputs of client scoring.

use std::fmt;

use http::header::{ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, COOKIE, HOST, REFERER, USER_AGENT};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Version};

use crate::http::identify::cluster::Cluster;
use crate::http::identify::look::{
    ClientHints, STANDARD_ACCEPT, STANDARD_ACCEPT_ENCODING, STANDARD_ACCEPT_LANGUAGE,
    STANDARD_COOKIE, STANDARD_HOST, STANDARD_REFERER, STANDARD_USER_AGENT, standard_bit,
};
use crate::http::identify::ua_profile::{UaProfile, ua_profile};
use crate::http::identify::user_agent::UaFamily;
use crate::http::identify::wire::WireHead;

/// The request method as a fingerprint keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum MethodCode {
    Get,
    Post,
    Head,
    Put,
    Delete,
    Options,
    Patch,
    Connect,
    Trace,
    /// An extension method.
    Other,
}

/// Each standard method with its code and its text in a fingerprint.
static METHODS: [(MethodCode, Method, &str); 9] = [
    (MethodCode::Get, Method::GET, "ge"),
    (MethodCode::Post, Method::POST, "po"),
    (MethodCode::Head, Method::HEAD, "he"),
    (MethodCode::Put, Method::PUT, "pu"),
    (MethodCode::Delete, Method::DELETE, "de"),
    (MethodCode::Options, Method::OPTIONS, "op"),
    (MethodCode::Patch, Method::PATCH, "pa"),
    (MethodCode::Connect, Method::CONNECT, "co"),
    (MethodCode::Trace, Method::TRACE, "tr"),
];

impl MethodCode {
    fn of(method: &Method) -> Self {
        METHODS
            .iter()
            .find(|(_, m, _)| m == method)
            .map_or(MethodCode::Other, |(code, _, _)| *code)
    }

    fn entry(self) -> Option<&'static (MethodCode, Method, &'static str)> {
        METHODS.iter().find(|(code, _, _)| *code == self)
    }

    fn text(self) -> &'static str {
        self.entry().map_or("xx", |(_, _, text)| text)
    }
}

/// The version's index in the text form and the class id.
fn version_code(v: Version) -> (u64, &'static str) {
    match v {
        Version::HTTP_09 => (0, "09"),
        Version::HTTP_10 => (1, "10"),
        Version::HTTP_11 => (2, "11"),
        Version::HTTP_2 => (3, "20"),
        Version::HTTP_3 => (4, "30"),
        _ => (5, "xx"),
    }
}

/// How a request is built, in 16 bytes; see [`Fingerprint::of`].
///
/// A [`Fingerprint`] sums up how a request is built rather than what it
/// asks for: method, version, which of a few telling headers it carries,
/// how many headers, and a hash of the header names. Requests from the
/// same client software share a fingerprint; a script that copies a
/// browser's `User-Agent` usually does not share the browser's.
/// [`anomalies`] lists what a request lacks that its kind of client always
/// sends. Neither allocates; together they take well under a microsecond.
///
/// This is floodguard's own format; it is not JA4H or any other published
/// fingerprint.
///
/// ```
/// use floodguard::http::{Anomaly, Fingerprint, UaFamily, anomalies};
///
/// let (parts, ()) = http::Request::get("/")
///     .version(http::Version::HTTP_10)
///     .header("host", "shop.test")
///     .header("user-agent", "curl/8.5.0")
///     .header("accept", "*/*")
///     .body(())
///     .unwrap()
///     .into_parts();
/// let fp = Fingerprint::of(&parts, None);
/// assert_eq!(fp.ua_family(), UaFamily::Tool);
/// assert_eq!(fp.to_string(), "ge10nn0300t_0f22cd62f");
/// let found = anomalies(&parts, fp.ua_family());
/// assert_eq!(found.iter().collect::<Vec<_>>(), [Anomaly::Http10]);
/// ```
///
///
/// Its text form (`Display`) has fixed width, 21 characters, e.g.
/// `ge11cr17enb_3fa2c9d1w`:
///
/// | chars | meaning |
/// |---|---|
/// | 2 | method: `ge` `po` `he` `pu` `de` `op` `pa` `co` `tr`, `xx` for others |
/// | 2 | version: `09` `10` `11` `20` `30` |
/// | 1 | `c` with a `Cookie` header, else `n` |
/// | 1 | `r` with a `Referer` header, else `n` |
/// | 2 | header count, decimal, at most `99` |
/// | 2 | first two letters of `Accept-Language`, lowercase, else `00` |
/// | 1 | user-agent family: `b`rowser, `t`ool, `s` crawler (spider), `e`mpty, `o`ther |
/// | 1 | `_` |
/// | 8 | the header-names hash, hex |
/// | 1 | `w` if that hash is of the wire order and casing, `f` for the order-free fallback |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    names_hash: u32,
    method: MethodCode,
    version: Version,
    header_count: u8,
    language: Option<[u8; 2]>,
    cookie: bool,
    referer: bool,
    wire: bool,
    family: UaFamily,
}

impl Fingerprint {
    /// The fingerprint of a request.
    ///
    /// With `wire`, the first request head of the connection as the
    /// [gate](crate::http::Gate) read it (see [`GateConnectInfo`]), the names
    /// hash and header count come from the wire: header order and casing
    /// count. `wire` describes a connection's first request only; for
    /// later requests on a kept-alive connection it still describes the
    /// first, so the hash stays the connection's. Without it they come
    /// from `parts.headers`, which keeps neither order nor casing: the
    /// hash is then order-free (the same names in any order give the same
    /// hash). The rest always comes from `parts`.
    ///
    /// [`GateConnectInfo`]: crate::http::GateConnectInfo
    pub fn of(parts: &Parts, wire: Option<&WireHead>) -> Fingerprint {
        let facts = HeaderFacts::of(&parts.headers, wire.is_none());
        Self::from_facts(parts, wire, &facts, ua_profile(facts.user_agent()).family)
    }

    /// The fingerprint from what a pass over the headers found (with the
    /// order-free names hash when `wire` is `None`) and the user agent's
    /// family.
    fn from_facts(
        parts: &Parts,
        wire: Option<&WireHead>,
        facts: &HeaderFacts<'_>,
        family: UaFamily,
    ) -> Fingerprint {
        let (names_hash, header_count) = match wire {
            Some(w) => (fold(w.names_hash()), w.header_count().into()),
            None => (fold(facts.names_sum), facts.count),
        };
        Fingerprint {
            names_hash,
            method: MethodCode::of(&parts.method),
            version: parts.version,
            header_count: u8::try_from(header_count).unwrap_or(u8::MAX),
            language: facts.accept_language.and_then(language),
            cookie: facts.cookie,
            referer: facts.referer,
            wire: wire.is_some(),
            family,
        }
    }

    /// [`Fingerprint::of`] with the wire head the server left in the
    /// request extensions: `ConnectInfo<GateConnectInfo>` (feature `axum`)
    /// or a [`GateConnectInfo`](crate::http::GateConnectInfo) inserted by hand;
    /// order-free if there is none.
    pub fn from_parts(parts: &Parts) -> Fingerprint {
        Self::of(
            parts,
            crate::http::identify::peer::wire_head(&parts.extensions).as_ref(),
        )
    }

    /// The method, `None` for an extension method.
    pub fn method(&self) -> Option<Method> {
        self.method.entry().map(|(_, m, _)| m.clone())
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the request carried a `Cookie` header.
    pub fn has_cookie(&self) -> bool {
        self.cookie
    }

    /// Whether the request carried a `Referer` header.
    pub fn has_referer(&self) -> bool {
        self.referer
    }

    /// Header lines (wire) or values (fallback), at most 255.
    pub fn header_count(&self) -> u8 {
        self.header_count
    }

    /// The first two letters of `Accept-Language`, lowercase (`"en"` for
    /// `en-US,en;q=0.9`); `None` without the header or when it does not
    /// start with two ASCII letters (`*`).
    pub fn language(&self) -> Option<&str> {
        self.language
            .as_ref()
            .and_then(|l| std::str::from_utf8(l).ok())
    }

    /// 32 bits of the header-names hash: of the wire order and casing if
    /// [`is_wire`](Self::is_wire), else order-free over the lowercase
    /// names. The same for the same names on any machine.
    pub fn names_hash(&self) -> u32 {
        self.names_hash
    }

    /// Whether the names hash and count came from the wire head.
    pub fn is_wire(&self) -> bool {
        self.wire
    }

    /// The family the `User-Agent` claims; see [`ua_family`](crate::http::ua_family).
    pub fn ua_family(&self) -> UaFamily {
        self.family
    }

    /// A 64-bit id of the whole fingerprint: equal ids, equal
    /// fingerprints. Stable within the process (today also across
    /// processes and versions, but do not store it).
    pub fn class(&self) -> u64 {
        // Packed, not hashed: every field fits, so ids never collide.
        // Letters a-z: five bits each, and one for "present".
        let letter = |l: u8| u64::from(l.wrapping_sub(b'a') & 31);
        let language = self
            .language
            .map_or(0, |[a, b]| 1 << 10 | letter(a) << 5 | letter(b));
        u64::from(self.names_hash)
            | u64::from(self.header_count) << 32
            | (self.method as u64) << 40
            | version_code(self.version).0 << 44
            | u64::from(self.cookie) << 47
            | u64::from(self.referer) << 48
            | u64::from(self.wire) << 49
            | self.family.code() << 50
            | language << 53
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let language = self.language().unwrap_or("00");
        write!(
            f,
            "{}{}{}{}{:02}{}{}_{:08x}{}",
            self.method.text(),
            version_code(self.version).1,
            if self.cookie { 'c' } else { 'n' },
            if self.referer { 'r' } else { 'n' },
            self.header_count.min(99),
            language,
            self.family.letter(),
            self.names_hash,
            if self.wire { 'w' } else { 'f' },
        )
    }
}

/// The order-free names hash alone, as [`HeaderFacts::of`] sums it in
/// its pass.
#[cfg(test)]
fn order_free_hash(headers: &HeaderMap) -> u64 {
    headers.iter().fold(0u64, |sum, (name, _)| {
        sum.wrapping_add(name_hash(name.as_str().as_bytes()))
    })
}

/// 64 bits to 32, keeping both halves' information.
fn fold(h: u64) -> u32 {
    (h ^ h >> 32) as u32
}

/// What a fingerprint and the anomaly checks read from a request's
/// headers, found in one pass over them rather than a map lookup each.
/// Values are each name's first, as `HeaderMap::get` gives them.
#[derive(Default)]
struct HeaderFacts<'a> {
    /// The order-free names hash: the sum of each header's name hash
    /// (addition does not care about order; names in a `HeaderMap` are
    /// lowercase already). 0 when not asked for.
    names_sum: u64,
    /// Header values, as `HeaderMap::len` counts them.
    count: usize,
    user_agent: Option<&'a HeaderValue>,
    accept_language: Option<&'a HeaderValue>,
    host: bool,
    accept: bool,
    cookie: bool,
    referer: bool,
    /// Any `Sec-Fetch-*` header.
    sec_fetch: bool,
    /// Any `Accept-Encoding` value offers a compressed coding.
    compression: bool,
    /// The standard headers present ([`standard_bit`]).
    standard: u32,
    /// Any `Sec-CH-UA*` header, and the values of `Sec-CH-UA-Platform`
    /// and `Sec-CH-UA`.
    client_hints: bool,
    hint_platform: Option<&'a HeaderValue>,
    hint_brands: Option<&'a HeaderValue>,
}

impl<'a> HeaderFacts<'a> {
    /// One pass over `h`; with `names_hash`, the order-free names hash too.
    fn of(h: &'a HeaderMap, names_hash: bool) -> Self {
        let mut f = HeaderFacts {
            count: h.len(),
            ..HeaderFacts::default()
        };
        for (name, value) in h {
            if names_hash {
                f.names_sum = f
                    .names_sum
                    .wrapping_add(name_hash(name.as_str().as_bytes()));
            }
            // The common headers are told by a cheap comparison each, and
            // carry their standard bit with them; the rest are looked up.
            let bit = if *name == USER_AGENT {
                f.user_agent.get_or_insert(value);
                STANDARD_USER_AGENT
            } else if *name == ACCEPT_LANGUAGE {
                f.accept_language.get_or_insert(value);
                STANDARD_ACCEPT_LANGUAGE
            } else if *name == ACCEPT_ENCODING {
                f.compression = f.compression || offers_compression(value.as_bytes());
                STANDARD_ACCEPT_ENCODING
            } else if *name == HOST {
                f.host = true;
                STANDARD_HOST
            } else if *name == ACCEPT {
                f.accept = true;
                STANDARD_ACCEPT
            } else if *name == COOKIE {
                f.cookie = true;
                STANDARD_COOKIE
            } else if *name == REFERER {
                f.referer = true;
                STANDARD_REFERER
            } else {
                let n = name.as_str();
                if n.starts_with("sec-") {
                    f.sec_fetch = f.sec_fetch || n.starts_with("sec-fetch-");
                    if n.starts_with("sec-ch-ua") {
                        f.client_hints = true;
                        if n == "sec-ch-ua-platform" {
                            f.hint_platform.get_or_insert(value);
                        } else if n == "sec-ch-ua" {
                            f.hint_brands.get_or_insert(value);
                        }
                    }
                }
                standard_bit(name)
            };
            f.standard |= bit;
        }
        f
    }

    /// The `User-Agent` value's bytes, empty without one.
    fn user_agent(&self) -> &'a [u8] {
        self.user_agent.map_or(b"", HeaderValue::as_bytes)
    }

    /// The anomalies of `parts`, whose headers these are, for a user agent
    /// whose profile is `ua`. `secure`: the request reached a secure origin
    /// (HTTPS, or `localhost`), where browsers send `Sec-Fetch-*` and
    /// client hints; over plain HTTP they send neither, and lacking them is
    /// no anomaly. `order`: the connection's wire head, when its order and
    /// casing are the client's own (no trusted proxy in between).
    fn anomalies(
        &self,
        parts: &Parts,
        ua: &UaProfile,
        secure: bool,
        order: Option<&WireHead>,
    ) -> Anomalies {
        let http1 = matches!(
            parts.version,
            Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
        );
        let mut found = Anomalies::default();
        found.insert_if(Anomaly::Http10, parts.version == Version::HTTP_10);
        found.insert_if(Anomaly::MissingHost, http1 && !self.host);
        found.insert_if(Anomaly::EmptyUserAgent, is_blank(self.user_agent));
        found.insert_if(Anomaly::NoAccept, !self.accept);
        if ua.family == UaFamily::Browser {
            found.insert_if(
                Anomaly::BrowserWithoutAcceptLanguage,
                is_blank(self.accept_language),
            );
            found.insert_if(Anomaly::BrowserWithoutCompression, !self.compression);
            found.insert_if(
                Anomaly::BrowserWithoutSecFetch,
                secure && parts.method == Method::GET && !self.sec_fetch && ua.sends_sec_fetch,
            );
            found.insert_if(
                Anomaly::BrowserWithoutClientHints,
                secure && !self.client_hints && ua.details.sends_client_hints(),
            );
            found.insert_if(
                Anomaly::ClientHintsMismatch,
                self.client_hints
                    && ClientHints::from_values(true, self.hint_platform, self.hint_brands)
                        .contradict(&ua.details),
            );
            let claimed = order.zip(ua.details.header_order());
            found.insert_if(
                Anomaly::HeaderOrderMismatch,
                claimed.is_some_and(|(head, browser)| !browser.fits(head)),
            );
        }
        found
    }
}

/// What scoring and detection read from one request, in one pass over its
/// headers and one look at its user agent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestLook {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) anomalies: Anomalies,
    /// The request's fine cluster ([`Cluster::coarse`] gives the coarse).
    pub(crate) cluster: Cluster,
    pub(crate) ua: UaProfile,
}

/// A request's fingerprint, anomalies and cluster; `secure` as for
/// [`HeaderFacts::anomalies`]. `direct`: the connection's peer is the
/// client, not a trusted proxy, so `wire`'s header order and casing are
/// the client's (a proxy rewrites both).
pub(crate) fn look(
    parts: &Parts,
    wire: Option<&WireHead>,
    secure: bool,
    direct: bool,
) -> RequestLook {
    let facts = HeaderFacts::of(&parts.headers, wire.is_none());
    let ua = ua_profile(facts.user_agent());
    let fingerprint = Fingerprint::from_facts(parts, wire, &facts, ua.family);
    let anomalies = facts.anomalies(parts, &ua, secure, wire.filter(|_| direct));
    let cluster = Cluster::fine(ua.family, &ua.details, parts.version, facts.standard);
    RequestLook {
        fingerprint,
        anomalies,
        cluster,
        ua,
    }
}

/// Whether `parts` itself says it reached a secure origin: an `https`
/// scheme (HTTP/2 and 3 carry it), or a `Host` (or authority) that is
/// `localhost` or a loopback address, which browsers treat as secure too.
pub(crate) fn secure_by_itself(parts: &Parts) -> bool {
    if parts.uri.scheme_str() == Some("https") {
        return true;
    }
    let host = parts
        .uri
        .host()
        .map(str::as_bytes)
        .or_else(|| parts.headers.get(HOST).map(HeaderValue::as_bytes))
        .unwrap_or_default();
    let host = match host.iter().rposition(|&b| b == b':') {
        // A port, unless the colon is inside a bracketed IPv6 literal.
        Some(i) if !host[i..].contains(&b']') => &host[..i],
        _ => host,
    };
    host.eq_ignore_ascii_case(b"localhost")
        || host.len() > 10 && host[host.len() - 10..].eq_ignore_ascii_case(b".localhost")
        || host.starts_with(b"127.")
        || host == b"[::1]"
        || host == b"::1"
}

/// One name's hash, eight bytes at a time (little-endian, so the same on
/// every machine), finished so that every input bit reaches every output
/// bit: a sum of such hashes stays spread out.
fn name_hash(name: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let n = name.len();
    let mut h = (n as u64).wrapping_mul(K);
    let mut chunks = name.chunks_exact(8);
    for chunk in &mut chunks {
        h = (h ^ le64(chunk)).wrapping_mul(K).rotate_left(29);
    }
    // The bytes left over, read as overlapping words rather than copied
    // into a buffer (a copy stalls the load that follows). With the
    // length mixed in, the reads still determine the name.
    let last = match (chunks.remainder().len(), n) {
        (0, _) => 0,
        (_, 8..) => le64(&name[n - 8..]),
        (_, 4..) => le32(&name[..4]) | le32(&name[n - 4..]) << 32,
        _ => u64::from(name[0]) | u64::from(name[n / 2]) << 8 | u64::from(name[n - 1]) << 16,
    };
    h = (h ^ last).wrapping_mul(K);
    // The MurmurHash3 finaliser.
    h = (h ^ h >> 33).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = (h ^ h >> 33).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ h >> 33
}

/// The first eight bytes of `b` as a little-endian word (0 if shorter).
fn le64(b: &[u8]) -> u64 {
    b.first_chunk::<8>().map_or(0, |w| u64::from_le_bytes(*w))
}

/// The first four bytes of `b` as a little-endian word (0 if shorter).
fn le32(b: &[u8]) -> u64 {
    b.first_chunk::<4>()
        .map_or(0, |w| u64::from(u32::from_le_bytes(*w)))
}

fn language(value: &HeaderValue) -> Option<[u8; 2]> {
    match value.as_bytes().trim_ascii_start() {
        [a, b, ..] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_lowercase(), b.to_ascii_lowercase()])
        }
        _ => None,
    }
}

/// Something a request lacks, or has, that its kind of client would not;
/// see [`anomalies`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Anomaly {
    /// HTTP/1.0: no current browser or common library speaks it.
    Http10,
    /// HTTP/1.x without `Host` (HTTP/2 and 3 carry `:authority` instead).
    MissingHost,
    /// No `User-Agent`, or an empty one.
    EmptyUserAgent,
    /// No `Accept` header.
    NoAccept,
    /// A browser user agent without `Accept-Language`, which every browser
    /// sends.
    BrowserWithoutAcceptLanguage,
    /// A browser user agent whose `Accept-Encoding` is missing or offers
    /// none of `gzip`, `deflate`, `br`, `zstd` (`identity` alone, say).
    BrowserWithoutCompression,
    /// A `GET` from a Chromium 80+ or Firefox 90+ user agent without any
    /// `Sec-Fetch-*` header, to a secure origin. Browsers send these only
    /// to secure origins (HTTPS, or `localhost`), so over plain HTTP this
    /// is not checked: a browser there lacks them and is still a browser.
    BrowserWithoutSecFetch,
    /// A Chromium 89+ user agent without client hints (`Sec-CH-UA`), to a
    /// secure origin (not checked over plain HTTP, where browsers send
    /// none).
    BrowserWithoutClientHints,
    /// Client hints that contradict the user agent: `Sec-CH-UA-Platform`
    /// names another system than the user agent, or `Sec-CH-UA` another
    /// Chromium version; or client hints from Firefox or Safari, which
    /// have none. A script that copied one browser's headers and another's
    /// user agent.
    ClientHintsMismatch,
    /// A Chromium or Firefox user agent on a connection whose first request
    /// head (read off the wire by the [gate](crate::http::Gate)) does not fit
    /// that browser's HTTP/1.1 header order and casing (see
    /// [`WireHead::fits_browser`]): a standard header out of place, a
    /// standard name spelled otherwise (`user-agent`, as Node and Go
    /// write it), or no `Connection`, `Accept-Encoding` or
    /// `Accept-Language`, which these browsers always send. A script
    /// wearing a browser's user agent over its library's headers. Checked
    /// only with a wire head (HTTP/1.x through the gate) and a peer that
    /// is not a trusted proxy (a proxy writes its own order); names that
    /// are not standard are ignored, so extra headers neither raise nor
    /// hide it.
    HeaderOrderMismatch,
}

impl Anomaly {
    /// Every anomaly, in the order [`Anomalies::iter`] yields them.
    const ALL: [Anomaly; 10] = [
        Anomaly::Http10,
        Anomaly::MissingHost,
        Anomaly::EmptyUserAgent,
        Anomaly::NoAccept,
        Anomaly::BrowserWithoutAcceptLanguage,
        Anomaly::BrowserWithoutCompression,
        Anomaly::BrowserWithoutSecFetch,
        Anomaly::BrowserWithoutClientHints,
        Anomaly::ClientHintsMismatch,
        Anomaly::HeaderOrderMismatch,
    ];

    /// A snake-case name for logs and metrics (`browser_without_sec_fetch`).
    pub fn name(self) -> &'static str {
        match self {
            Anomaly::Http10 => "http10",
            Anomaly::MissingHost => "missing_host",
            Anomaly::EmptyUserAgent => "empty_user_agent",
            Anomaly::NoAccept => "no_accept",
            Anomaly::BrowserWithoutAcceptLanguage => "browser_without_accept_language",
            Anomaly::BrowserWithoutCompression => "browser_without_compression",
            Anomaly::BrowserWithoutSecFetch => "browser_without_sec_fetch",
            Anomaly::BrowserWithoutClientHints => "browser_without_client_hints",
            Anomaly::ClientHintsMismatch => "client_hints_mismatch",
            Anomaly::HeaderOrderMismatch => "header_order_mismatch",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of [`Anomaly`]s, as [`anomalies`] finds them.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Anomalies(u16);

impl Anomalies {
    /// Whether no anomaly was found.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// How many anomalies were found.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether `anomaly` was found.
    pub fn contains(&self, anomaly: Anomaly) -> bool {
        self.0 & anomaly.bit() != 0
    }

    /// The anomalies found, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = Anomaly> + use<> {
        let set = *self;
        Anomaly::ALL.into_iter().filter(move |a| set.contains(*a))
    }

    fn insert_if(&mut self, anomaly: Anomaly, found: bool) {
        if found {
            self.0 |= anomaly.bit();
        }
    }
}

impl fmt::Debug for Anomalies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Anomaly::name))
            .finish()
    }
}

/// What `parts` lacks, given the user-agent `family` it claims (from
/// [`ua_family`](crate::http::ua_family) or [`Fingerprint::ua_family`]); see [`Anomaly`] for each
/// check. The browser checks run only for [`UaFamily::Browser`].
///
/// A real browser request has none; a script posing as a browser often has
/// several.
pub fn anomalies(parts: &Parts, family: UaFamily) -> Anomalies {
    let facts = HeaderFacts::of(&parts.headers, false);
    let ua = UaProfile {
        family,
        ..ua_profile(facts.user_agent())
    };
    facts.anomalies(parts, &ua, secure_by_itself(parts), None)
}

fn is_blank(value: Option<&HeaderValue>) -> bool {
    value.is_none_or(|v| v.as_bytes().trim_ascii().is_empty())
}

/// Whether an `Accept-Encoding` value offers a compressed coding with a
/// weight above zero.
fn offers_compression(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let mut params = item.split(|&b| b == b';');
        let coding = params.next().unwrap_or_default().trim_ascii();
        let compressed = [&b"gzip"[..], b"x-gzip", b"deflate", b"br", b"zstd"]
            .iter()
            .any(|c| coding.eq_ignore_ascii_case(c));
        compressed && !params.any(is_zero_weight)
    })
}

/// `q=0`, `q=0.0`, ... : "not acceptable".
fn is_zero_weight(param: &[u8]) -> bool {
    match param.trim_ascii() {
        [b'q' | b'Q', b'=', weight @ ..] => weight.iter().all(|&b| b == b'0' || b == b'.'),
        _ => false,
    }
}

mod describe;
#[cfg(test)]
mod tests;
