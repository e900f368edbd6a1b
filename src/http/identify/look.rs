//! What a client claims to be and whether its request agrees: the
//! user agent's product, major version and operating system, the client
//! hints a Chromium browser sends, which standard headers are present, and
//! the [`Cluster`] that attack detection groups requests by.
//!
//! A cluster is built from what a client cannot vary for free: the product
//! and major version it claims, its operating system, the HTTP version, and
//! which *standard* headers it sends. Header names nobody standardised,
//! header casing and header order do not enter it, so a botnet that adds a
//! random header to every request, or shuffles or recases its headers, stays
//! one cluster. A coarser cluster (the product alone) catches one that varies
//! its version or its standard headers as well.

use std::fmt;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};
use http::{HeaderName, HeaderValue, Version};
use parking_lot::Mutex;

use crate::http::identify::order::OrderFamily;
use crate::http::identify::user_agent::{UaFamily, classify};
use crate::http::identify::wire::WireHead;

/// The operating system a user agent or a client hint names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Os {
    /// Not named, or not one of these.
    Unknown,
    /// Windows.
    Windows,
    /// macOS.
    MacOs,
    /// Linux (not Android, not ChromeOS).
    Linux,
    /// Android.
    Android,
    /// iOS and iPadOS.
    Ios,
    /// ChromeOS.
    ChromeOs,
}

impl Os {
    /// A short name: `Windows`, `macOS`, `Linux`, `Android`, `iOS`,
    /// `ChromeOS`, `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Os::Unknown => "unknown",
            Os::Windows => "Windows",
            Os::MacOs => "macOS",
            Os::Linux => "Linux",
            Os::Android => "Android",
            Os::Ios => "iOS",
            Os::ChromeOs => "ChromeOS",
        }
    }

    fn code(self) -> u64 {
        self as u64
    }

    fn from_code(c: u64) -> Os {
        [
            Os::Unknown,
            Os::Windows,
            Os::MacOs,
            Os::Linux,
            Os::Android,
            Os::Ios,
            Os::ChromeOs,
        ]
        .get(c as usize)
        .copied()
        .unwrap_or(Os::Unknown)
    }

    /// The operating system a `User-Agent` names.
    fn of_user_agent(ua: &[u8]) -> Os {
        let has = |needle: &[u8]| contains(ua, needle);
        if has(b"Windows") {
            Os::Windows
        } else if has(b"Android") {
            Os::Android
        } else if has(b"iPhone") || has(b"iPad") || has(b"iPod") {
            Os::Ios
        } else if has(b"CrOS") {
            Os::ChromeOs
        } else if has(b"Macintosh") || has(b"Mac OS X") {
            Os::MacOs
        } else if has(b"Linux") || has(b"X11") {
            Os::Linux
        } else {
            Os::Unknown
        }
    }

    /// The operating system a `Sec-CH-UA-Platform` value names (quoted, as
    /// a structured-field string); `None` for an empty or unknown value.
    fn of_platform_hint(value: &[u8]) -> Option<Os> {
        let v = value.trim_ascii();
        let v = v
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v);
        let is = |s: &[u8]| v.eq_ignore_ascii_case(s);
        Some(if is(b"Windows") {
            Os::Windows
        } else if is(b"macOS") {
            Os::MacOs
        } else if is(b"Linux") {
            Os::Linux
        } else if is(b"Android") {
            Os::Android
        } else if is(b"iOS") {
            Os::Ios
        } else if is(b"Chrome OS") || is(b"ChromeOS") || is(b"Chromium OS") {
            Os::ChromeOs
        } else {
            return None;
        })
    }
}

/// The browsers told apart by product; every other product is named by the
/// first token of its user agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Browser {
    Chrome,
    Edge,
    Opera,
    Samsung,
    Firefox,
    Safari,
}

/// Browser products: the token that names each (checked in this order:
/// Edge, Opera and Samsung also say `Chrome/`), its id and its name.
const BROWSERS: [(&[u8], Browser, &str); 8] = [
    (b"Edg/", Browser::Edge, "Edge"),
    (b"OPR/", Browser::Opera, "Opera"),
    (b"SamsungBrowser/", Browser::Samsung, "Samsung Internet"),
    (b"Firefox/", Browser::Firefox, "Firefox"),
    (b"FxiOS/", Browser::Firefox, "Firefox"),
    (b"Chrome/", Browser::Chrome, "Chrome"),
    (b"CriOS/", Browser::Chrome, "Chrome"),
    (b"Version/", Browser::Safari, "Safari"),
];

impl Browser {
    fn chromium(self) -> bool {
        matches!(
            self,
            Browser::Chrome | Browser::Edge | Browser::Opera | Browser::Samsung
        )
    }
}

/// What a `User-Agent` claims beyond its family: the product (a browser, or
/// a tool's or library's first token), its major version and the operating
/// system. Made by [`UaDetails::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct UaDetails {
    /// A stable 24-bit id of the product's name (see [`product_id`]).
    pub(crate) product: u32,
    /// The product's major version; 0 when none was found.
    pub(crate) major: u16,
    pub(crate) os: Os,
    /// The browser, when the product is one.
    browser: Option<Browser>,
    /// The Chromium version the user agent states (`Chrome/N`), for
    /// Chromium-based browsers.
    chromium_major: u16,
}

impl UaDetails {
    /// The details of `ua`, whose family is `family`.
    pub(crate) fn of(ua: &[u8], family: UaFamily) -> UaDetails {
        let ua = ua.trim_ascii();
        let os = Os::of_user_agent(ua);
        if family == UaFamily::Browser {
            let found = BROWSERS.iter().find_map(|(token, b, name)| {
                find(ua, token).map(|at| (at + token.len(), *b, *name))
            });
            if let Some((at, browser, name)) = found {
                let chromium_major =
                    find(ua, b"Chrome/").map_or(0, |i| major_version(&ua[i + b"Chrome/".len()..]));
                return UaDetails {
                    product: product_id(name.as_bytes()),
                    major: major_version(&ua[at..]),
                    os,
                    browser: Some(browser),
                    chromium_major,
                };
            }
        }
        // Another client: the first token names it (`curl/8.5.0`,
        // `python-requests/2.32`, `Java-http-client/17`, `node`).
        let end = ua
            .iter()
            .position(|b| matches!(b, b'/' | b' ' | b';' | b'(' | b')' | b','))
            .unwrap_or(ua.len());
        let name = &ua[..end.min(MAX_PRODUCT_NAME)];
        let major = match ua.get(end) {
            Some(b'/') => major_version(&ua[end + 1..]),
            _ => 0,
        };
        let name = if family == UaFamily::Crawler {
            &b"crawler"[..]
        } else {
            name
        };
        UaDetails {
            product: product_id(name),
            major,
            os,
            browser: None,
            chromium_major: 0,
        }
    }

    /// A Chromium-based browser (Chrome, Edge, Opera, Samsung Internet).
    pub(crate) fn is_chromium(&self) -> bool {
        self.browser.is_some_and(Browser::chromium)
    }

    /// A browser that sends client hints (`Sec-CH-UA`) to secure origins:
    /// Chromium 89 and later.
    pub(crate) fn sends_client_hints(&self) -> bool {
        self.is_chromium() && self.chromium_major >= 89
    }

    /// The browser whose HTTP/1.1 header order the user agent claims, if
    /// it is known: a Chromium browser that states its Chromium version,
    /// or Firefox; not on iOS, where every browser is WebKit underneath
    /// (Chrome for iOS says `CriOS/`, not `Chrome/`, and no version).
    pub(crate) fn header_order(&self) -> Option<OrderFamily> {
        if self.os == Os::Ios {
            return None;
        }
        match self.browser {
            Some(b) if b.chromium() && self.chromium_major > 0 => Some(OrderFamily::Chromium),
            Some(Browser::Firefox) => Some(OrderFamily::Firefox),
            _ => None,
        }
    }

    /// A browser that never sends client hints: Firefox and Safari.
    pub(crate) fn never_sends_client_hints(&self) -> bool {
        matches!(self.browser, Some(Browser::Firefox | Browser::Safari))
    }

    /// Packs the details in the low 52 bits of a word (for the user-agent
    /// cache): product 24 bits, major 12, system 4, browser 4, Chromium
    /// version 8.
    pub(crate) fn pack(&self) -> u64 {
        let browser = match self.browser {
            None => 0,
            Some(b) => 1 + b as u64,
        };
        u64::from(self.product & PRODUCT_MASK)
            | u64::from(self.major.min(0xfff)) << 24
            | self.os.code() << 36
            | browser << 40
            | u64::from(self.chromium_major.min(0xff)) << 44
    }

    /// The details [`pack`](Self::pack) packed (bits above 52 ignored).
    pub(crate) fn unpack(w: u64) -> UaDetails {
        let browser = match (w >> 40) & 0xf {
            0 => None,
            n => [
                Browser::Chrome,
                Browser::Edge,
                Browser::Opera,
                Browser::Samsung,
                Browser::Firefox,
                Browser::Safari,
            ]
            .get(n as usize - 1)
            .copied(),
        };
        UaDetails {
            product: (w as u32) & PRODUCT_MASK,
            major: ((w >> 24) & 0xfff) as u16,
            os: Os::from_code((w >> 36) & 0xf),
            browser,
            chromium_major: ((w >> 44) & 0xff) as u16,
        }
    }
}

/// Product ids are 24 bits.
const PRODUCT_MASK: u32 = 0xff_ffff;

/// Longest product name kept (bytes).
const MAX_PRODUCT_NAME: usize = 24;

/// Product names seen, by id, for saying a cluster in words; bounded.
static PRODUCT_NAMES: LazyLock<Mutex<std::collections::HashMap<u32, String>>> =
    LazyLock::new(|| Mutex::new(std::collections::HashMap::new()));
const MAX_PRODUCT_NAMES: usize = 4096;

/// A stable 24-bit id of a product name, ASCII case-insensitive (the same
/// on every machine, so a fleet's instances agree on cluster ids). Remembers
/// the name for [`Cluster`]'s text, up to a bound.
fn product_id(name: &[u8]) -> u32 {
    // FNV-1a over the lowercase bytes.
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h = (h ^ u32::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0193);
    }
    let h = (h ^ h >> 24) & PRODUCT_MASK;
    let mut names = PRODUCT_NAMES.lock();
    if names.len() < MAX_PRODUCT_NAMES && !names.contains_key(&h) {
        names.insert(h, String::from_utf8_lossy(name).into_owned());
    }
    h
}

fn product_name(id: u32) -> Option<String> {
    PRODUCT_NAMES.lock().get(&id).cloned()
}

/// The standard headers whose presence enters a cluster, one bit each
/// (names lowercase, as a `HeaderMap` holds them). Names outside this list
/// do not change a cluster.
const STANDARD: [&str; 24] = [
    "host",
    "connection",
    "user-agent",
    "accept",
    "accept-language",
    "accept-encoding",
    "cookie",
    "referer",
    "origin",
    "cache-control",
    "pragma",
    "upgrade-insecure-requests",
    "dnt",
    "te",
    "priority",
    "sec-fetch-",
    "sec-ch-ua",
    "content-type",
    "content-length",
    "authorization",
    "if-",
    "x-requested-with",
    "keep-alive",
    "range",
];

/// The bits of the headers the fingerprint pass tells apart by itself.
pub(crate) const STANDARD_HOST: u32 = 1 << 0;
pub(crate) const STANDARD_USER_AGENT: u32 = 1 << 2;
pub(crate) const STANDARD_ACCEPT: u32 = 1 << 3;
pub(crate) const STANDARD_ACCEPT_LANGUAGE: u32 = 1 << 4;
pub(crate) const STANDARD_ACCEPT_ENCODING: u32 = 1 << 5;
pub(crate) const STANDARD_COOKIE: u32 = 1 << 6;
pub(crate) const STANDARD_REFERER: u32 = 1 << 7;

/// The bit of a header name in [`STANDARD`], or 0. Names ending in `-`
/// there are prefixes (`sec-fetch-*`, `if-*`), and `sec-ch-ua` stands for
/// every client hint. A `match` on the name: the compiler sorts the
/// comparisons by length, so most names cost a few length checks.
pub(crate) fn standard_bit(name: &HeaderName) -> u32 {
    let i = match name.as_str() {
        "host" => 0,
        "connection" => 1,
        "user-agent" => 2,
        "accept" => 3,
        "accept-language" => 4,
        "accept-encoding" => 5,
        "cookie" => 6,
        "referer" => 7,
        "origin" => 8,
        "cache-control" => 9,
        "pragma" => 10,
        "upgrade-insecure-requests" => 11,
        "dnt" => 12,
        "te" => 13,
        "priority" => 14,
        "content-type" => 17,
        "content-length" => 18,
        "authorization" => 19,
        "x-requested-with" => 21,
        "keep-alive" => 22,
        "range" => 23,
        n if n.starts_with("sec-fetch-") => 15,
        n if n.starts_with("sec-ch-ua") => 16,
        n if n.starts_with("if-") => 20,
        _ => return 0,
    };
    1 << i
}

/// What the client hints of a request say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientHints {
    /// Any `Sec-CH-UA*` header.
    pub(crate) present: bool,
    /// The platform `Sec-CH-UA-Platform` names.
    pub(crate) platform: Option<Os>,
    /// The `Chromium` brand's version in `Sec-CH-UA`.
    pub(crate) chromium_major: Option<u16>,
}

impl ClientHints {
    /// Reads the hints from `headers`.
    #[cfg(test)]
    pub(crate) fn of(headers: &http::HeaderMap) -> ClientHints {
        let present = headers.keys().any(|n| n.as_str().starts_with("sec-ch-ua"));
        ClientHints::from_values(
            present,
            headers.get("sec-ch-ua-platform"),
            headers.get("sec-ch-ua"),
        )
    }

    /// The hints from what a pass over the headers found: whether any
    /// `Sec-CH-UA*` header was there, and the values of
    /// `Sec-CH-UA-Platform` and `Sec-CH-UA`.
    pub(crate) fn from_values(
        present: bool,
        platform: Option<&HeaderValue>,
        brands: Option<&HeaderValue>,
    ) -> ClientHints {
        ClientHints {
            present,
            platform: platform.and_then(|v| Os::of_platform_hint(v.as_bytes())),
            chromium_major: brands.and_then(chromium_brand_version),
        }
    }

    /// Whether the hints contradict the user agent: another platform, or
    /// another Chromium version; or hints at all from a browser that has
    /// none (Firefox, Safari).
    pub(crate) fn contradict(&self, ua: &UaDetails) -> bool {
        if !self.present {
            return false;
        }
        if ua.never_sends_client_hints() {
            return true;
        }
        if !ua.is_chromium() {
            return false;
        }
        let platform = matches!(self.platform, Some(p) if ua.os != Os::Unknown && p != ua.os);
        let version = matches!(self.chromium_major, Some(v) if ua.chromium_major != 0 && v != ua.chromium_major);
        platform || version
    }
}

/// The version of the `"Chromium"` brand in a `Sec-CH-UA` list
/// (`"Chromium";v="131", "Not_A Brand";v="24"`).
fn chromium_brand_version(value: &HeaderValue) -> Option<u16> {
    let v = value.as_bytes();
    let at = find(v, b"\"Chromium\"")? + b"\"Chromium\"".len();
    let rest = &v[at..];
    let q = find(rest, b"v=\"")?;
    // The version belongs to this brand only if no comma comes first.
    if rest[..q].contains(&b',') {
        return None;
    }
    Some(major_version(&rest[q + 3..]))
}

/// How requests are grouped for attack detection.
///
/// A cluster is built from what a client cannot vary for free: the product
/// and major version its user agent claims, its operating system, the HTTP
/// version, and which *standard* headers it sends. Header names nobody
/// standardised, header casing and header order do not enter it, so a
/// botnet that adds a random header to every request, or shuffles or
/// recases its headers, stays one cluster. The [coarse](Self::coarse)
/// cluster (the product alone) catches one that varies its version or its
/// standard headers too. `Display` says it in words (`Chrome 131 on
/// Linux, HTTP/1.1, 9 standard headers with cookie, referer, sec-fetch,
/// client hints`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cluster {
    family: UaFamily,
    product: u32,
    major: u16,
    os: Os,
    version: u8,
    headers: u32,
    /// 0: fine; 1: the product alone; 2: the family alone.
    level: u8,
}

impl Cluster {
    /// The fine cluster of a request: product, major version, operating
    /// system, HTTP version and standard headers present.
    pub(crate) fn fine(family: UaFamily, ua: &UaDetails, version: Version, headers: u32) -> Self {
        Cluster {
            family,
            product: ua.product,
            major: ua.major,
            os: ua.os,
            version: version_code(version),
            headers,
            level: 0,
        }
    }

    /// The coarse cluster that holds it: the product alone.
    pub fn coarse(&self) -> Self {
        Cluster {
            major: 0,
            os: Os::Unknown,
            version: 0,
            headers: 0,
            level: self.level.max(1),
            ..*self
        }
    }

    /// The widest cluster that holds it: every client of its user-agent
    /// family (every tool, say), for a botnet that spreads over many
    /// products.
    pub fn family_wide(&self) -> Self {
        Cluster {
            product: 0,
            level: 2,
            ..self.coarse()
        }
    }

    /// 0 for a fine cluster, 1 for a product's, 2 for a family's.
    pub(crate) fn width(&self) -> u8 {
        self.level
    }

    /// The ids of this cluster, its coarse one and its family-wide one.
    pub fn ids(&self) -> [u64; 3] {
        [self.id(), self.coarse_id(), self.family_wide().id()]
    }

    /// A 64-bit id, the same for the same cluster on every machine and in
    /// every process (a fleet shares flagged clusters by it). Never 0.
    pub fn id(&self) -> u64 {
        let family = match self.family {
            UaFamily::Browser => 0,
            UaFamily::Tool => 1,
            UaFamily::Crawler => 2,
            UaFamily::Empty => 3,
            _ => 4,
        };
        // Every field packed into two words (product 24 bits, major 16,
        // system 4, HTTP version 4, level 2, family 3; the header set), then
        // mixed (SplitMix64's finaliser, a bijection), forced odd.
        let a = u64::from(self.product & PRODUCT_MASK)
            | u64::from(self.major) << 24
            | self.os.code() << 40
            | u64::from(self.version & 0xf) << 44
            | u64::from(self.level & 3) << 48
            | family << 50;
        mix(a ^ mix(u64::from(self.headers) ^ 0x9e37_79b9_7f4a_7c15)) | 1
    }

    /// The [`id`](Self::id) of the coarse cluster that holds this one (the
    /// product alone).
    pub fn coarse_id(&self) -> u64 {
        self.coarse().id()
    }

    /// The user-agent family the cluster's clients claim.
    pub fn family(&self) -> UaFamily {
        self.family
    }

    /// The operating system they claim (`Unknown` for a coarse cluster).
    pub fn os(&self) -> Os {
        self.os
    }

    /// The major version they claim (0 for a coarse cluster, or none).
    pub fn major(&self) -> u16 {
        self.major
    }

    /// Whether this is a coarse cluster: every version, system and header
    /// set of one product, or ([`family_wide`](Self::family_wide)) of one
    /// user-agent family.
    pub fn is_coarse(&self) -> bool {
        self.level > 0
    }

    /// Whether the standard header `name` (lowercase; `sec-fetch-`,
    /// `sec-ch-ua` and `if-` stand for their families) is present in the
    /// cluster's requests. Always false for a coarse cluster.
    pub fn has_header(&self, name: &str) -> bool {
        STANDARD
            .iter()
            .position(|s| *s == name)
            .is_some_and(|i| self.headers & 1 << i != 0)
    }
}

fn version_code(v: Version) -> u8 {
    match v {
        Version::HTTP_09 => 1,
        Version::HTTP_10 => 2,
        Version::HTTP_11 => 3,
        Version::HTTP_2 => 4,
        Version::HTTP_3 => 5,
        _ => 6,
    }
}

impl fmt::Display for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = product_name(self.product).unwrap_or_else(|| format!("#{:08x}", self.product));
        let name = if name.is_empty() {
            "no user agent".into()
        } else {
            name
        };
        match self.level {
            0 => {}
            1 => return write!(f, "any {name} ({})", self.family.name()),
            _ => return write!(f, "any {} client", self.family.name()),
        }
        write!(f, "{name}")?;
        if self.major != 0 {
            write!(f, " {}", self.major)?;
        }
        if self.os != Os::Unknown {
            write!(f, " on {}", self.os.name())?;
        }
        let version = [
            "?", "HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3", "HTTP/?",
        ];
        write!(
            f,
            " ({}), {}, {} standard headers",
            self.family.name(),
            version.get(usize::from(self.version)).unwrap_or(&"?"),
            self.headers.count_ones()
        )?;
        let telling = [
            ("cookie", "cookie"),
            ("referer", "referer"),
            ("accept-language", "language"),
            ("sec-fetch-", "sec-fetch"),
            ("sec-ch-ua", "client hints"),
        ];
        let with: Vec<&str> = telling
            .iter()
            .filter(|(h, _)| self.has_header(h))
            .map(|(_, w)| *w)
            .collect();
        let without: Vec<&str> = telling
            .iter()
            .filter(|(h, _)| !self.has_header(h))
            .map(|(_, w)| *w)
            .collect();
        if !with.is_empty() {
            write!(f, " with {}", with.join(", "))?;
        }
        if !without.is_empty() {
            write!(
                f,
                "{} no {}",
                if with.is_empty() { "" } else { ";" },
                without.join(", ")
            )?;
        }
        Ok(())
    }
}

/// SplitMix64's finaliser: every input bit reaches every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// The leading decimal number of `s`, saturating at `u16::MAX`; 0 if none.
pub(crate) fn major_version(s: &[u8]) -> u16 {
    s.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u16, |n, &d| {
            n.saturating_mul(10).saturating_add(u16::from(d - b'0'))
        })
}

/// The family a `User-Agent` value claims, in one pass of one automaton
/// (ASCII case-insensitive; no regular expression):
///
/// 1. a crawler token anywhere makes it [`UaFamily::Crawler`]: `googlebot`,
///    `bingbot`, `duckduckbot`, `baiduspider`, `yandex`, `applebot`,
///    `facebookexternalhit`, `mediapartners-google`, `adsbot-google`,
///    `google-inspectiontool`, `slurp`, `ia_archiver`, and the words
///    `bot`, `crawl`, `spider`;
/// 2. else a tool token makes it [`UaFamily::Tool`]: `curl/`, `libcurl`,
///    `wget`, `python-requests`, `python-urllib`, `python-httpx`, `httpx`,
///    `aiohttp`, `go-http-client`, `java/`, `okhttp`, `apache-httpclient`,
///    `libwww-perl`, `lwp::`, `node-fetch`, `axios`, `undici`, `httpie`,
///    `postmanruntime`, `insomnia`, `guzzlehttp`, `winhttp`, `powershell`,
///    `ruby`, `dart:io`, `fasthttp`, `scrapy`, `masscan`, `zgrab`, `nmap`,
///    `sqlmap`, `nikto`, `nuclei`, `gobuster`, `wfuzz`, `java-http-client`,
///    `got (`, `ureq/`, `reqwest/`, `hyper/`, `http-tiny`, `aria2`,
///    `apachebench`, `php/`, `faraday`, `rest-client`, `mechanize`,
///    `typhoeus`, `deno/`, `bun/`, `k6/`, `locust`, `vegeta`, `hey/`,
///    `jmeter`, the headless browsers `headlesschrome`, `phantomjs`, and a
///    value that is only `node` (Node's built-in `fetch`) or `undici`;
/// 3. else a value that starts with `Mozilla/5.0` and names an engine
///    (`AppleWebKit`, `Gecko`, `Trident`) is [`UaFamily::Browser`];
/// 4. an empty or all-whitespace value is [`UaFamily::Empty`] (pass `b""`
///    for a missing header); anything else is [`UaFamily::Other`].
///
/// Only a claim: any client can send any of these.
///
/// ```
/// use floodguard::http::{UaFamily, ua_family};
/// assert_eq!(ua_family(b"curl/8.5.0"), UaFamily::Tool);
/// assert_eq!(ua_family(b"Mozilla/5.0 (compatible; Googlebot/2.1)"), UaFamily::Crawler);
/// assert_eq!(ua_family(b""), UaFamily::Empty);
/// ```
pub fn ua_family(user_agent: &[u8]) -> UaFamily {
    ua_profile(user_agent).family
}

/// What a user agent claims, as far as scoring cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UaProfile {
    pub(crate) family: UaFamily,
    /// A browser version that sends `Sec-Fetch-*`.
    pub(crate) sends_sec_fetch: bool,
    /// Product, version and system.
    pub(crate) details: UaDetails,
}

/// Slots of the user-agent cache (a power of two).
const UA_CACHE_SLOTS: usize = 1024;

/// Recently seen user agents and their profiles, direct-mapped: real
/// traffic repeats a few hundred values, and a hit costs one hash (about
/// 20 ns) where the automaton pass costs ten times that. Each slot is two
/// words: the value's hash above the low byte with the family in it, and
/// the details with 12 more bits of the hash; hashing is keyed per
/// process, so nobody can aim a collision, and a collision (or a torn
/// read of a slot two threads fill at once) would only mislabel one value.
struct UaCache {
    hasher: ahash::RandomState,
    slots: Box<[[AtomicU64; 2]]>,
}

static UA_CACHE: LazyLock<UaCache> = LazyLock::new(|| UaCache {
    hasher: ahash::RandomState::new(),
    slots: (0..UA_CACHE_SLOTS)
        .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
        .collect(),
});

pub(super) const FAMILIES: [UaFamily; 5] = [
    UaFamily::Browser,
    UaFamily::Tool,
    UaFamily::Crawler,
    UaFamily::Empty,
    UaFamily::Other,
];

/// Bits of the details word that check it belongs to the slot's value.
const DETAILS_CHECK: u64 = 0xfff << 52;

impl UaProfile {
    /// The family and sec-fetch bit in a byte: family index + 1 (never 0)
    /// and the sec-fetch bit.
    pub(super) fn encode(self) -> u64 {
        let family = FAMILIES.iter().position(|f| *f == self.family).unwrap_or(4) as u64;
        (family + 1) | u64::from(self.sends_sec_fetch) << 3
    }

    pub(super) fn decode(byte: u64, details: u64) -> Option<Self> {
        let family = *FAMILIES.get(((byte & 7) as usize).checked_sub(1)?)?;
        Some(UaProfile {
            family,
            sends_sec_fetch: byte & 8 != 0,
            details: UaDetails::unpack(details),
        })
    }
}

pub(crate) fn ua_profile(user_agent: &[u8]) -> UaProfile {
    let cache = &*UA_CACHE;
    let hash = cache.hasher.hash_one(user_agent);
    let slot = &cache.slots[hash as usize % UA_CACHE_SLOTS];
    let tag = hash & !0xff;
    let check = hash.rotate_left(20) & DETAILS_CHECK;
    let held = slot[0].load(Ordering::Relaxed);
    if held & !0xff == tag {
        let details = slot[1].load(Ordering::Relaxed);
        if details & DETAILS_CHECK == check {
            if let Some(profile) = UaProfile::decode(held & 0xff, details) {
                return profile;
            }
        }
    }
    let family = classify(user_agent);
    let profile = UaProfile {
        family,
        sends_sec_fetch: family == UaFamily::Browser && sends_sec_fetch(user_agent),
        details: UaDetails::of(user_agent, family),
    };
    slot[1].store(check | profile.details.pack(), Ordering::Relaxed);
    slot[0].store(tag | profile.encode(), Ordering::Relaxed);
    profile
}

/// Version tokens of the browsers that send `Sec-Fetch-*`.
pub(super) static BROWSER_VERSIONS: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .build(["Chrome/", "Firefox/"])
        .ok()
});

/// Whether the user agent is Chromium 80+ (Chrome, Edge, Opera, ...) or
/// Firefox 90+, which send `Sec-Fetch-*` with every request to a secure
/// origin.
pub(super) fn sends_sec_fetch(ua: &[u8]) -> bool {
    let Some(ac) = BROWSER_VERSIONS.as_ref() else {
        return false;
    };
    ac.find_iter(ua).any(|m| {
        let min = if m.pattern().as_usize() == 0 { 80 } else { 90 };
        major_version(&ua[m.end()..]) >= min
    })
}

// The check lives here, where the user agent is read, so that the wire
// head knows nothing of browsers.
impl WireHead {
    /// Whether this head's standard headers are in an order and casing
    /// the browser `user_agent` claims writes over HTTP/1.1: `Some(false)`
    /// when they are not (a script wearing a browser's user agent, or a
    /// proxy that rewrote the head), `None` when the claim is not judged
    /// (no Chromium or Firefox user agent, or one on iOS, where both are
    /// WebKit). Scoring reports `false` as
    /// [`Anomaly::HeaderOrderMismatch`](crate::http::Anomaly::HeaderOrderMismatch).
    ///
    /// ```
    /// use floodguard::http::{HeadScanner, Scan};
    ///
    /// let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    /// let head = |names: &[&str]| {
    ///     let mut h = String::from("GET / HTTP/1.1\r\n");
    ///     for n in names {
    ///         let v = if *n == "User-Agent" { ua } else { "x" };
    ///         h.push_str(&format!("{n}: {v}\r\n"));
    ///     }
    ///     h.push_str("\r\n");
    ///     let Scan::Done(w) = HeadScanner::new().feed(h.as_bytes()) else { panic!() };
    ///     w
    /// };
    /// let firefox = ["Host", "User-Agent", "Accept", "Accept-Language",
    ///                "Accept-Encoding", "Connection"];
    /// assert_eq!(head(&firefox).fits_browser(ua.as_bytes()), Some(true));
    /// // python-requests' order under Firefox's user agent.
    /// let script = ["Host", "User-Agent", "Accept-Encoding", "Accept",
    ///               "Connection", "Accept-Language"];
    /// assert_eq!(head(&script).fits_browser(ua.as_bytes()), Some(false));
    /// assert_eq!(head(&script).fits_browser(b"curl/8.5.0"), None);
    /// ```
    pub fn fits_browser(&self, user_agent: &[u8]) -> Option<bool> {
        let ua = ua_profile(user_agent);
        if ua.family != UaFamily::Browser {
            return None;
        }
        ua.details.header_order().map(|f| f.fits(self))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    const CHROME_LINUX: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const CHROME_WINDOWS: &[u8] = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const EDGE: &[u8] = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86";
    const FIREFOX: &[u8] =
        b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    const SAFARI: &[u8] = b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";
    const ANDROID: &[u8] = b"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

    fn details(ua: &[u8]) -> UaDetails {
        UaDetails::of(ua, ua_family(ua))
    }

    fn hints(pairs: &[(&str, &str)]) -> ClientHints {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        ClientHints::of(&h)
    }

    #[test]
    fn browsers_products_versions_and_systems() {
        let c = details(CHROME_LINUX);
        assert_eq!((c.major, c.os, c.is_chromium()), (131, Os::Linux, true));
        let e = details(EDGE);
        assert_ne!(e.product, c.product);
        assert_eq!((e.major, e.os, e.chromium_major), (131, Os::Windows, 131));
        let f = details(FIREFOX);
        assert_eq!(
            (f.major, f.os, f.never_sends_client_hints()),
            (128, Os::Linux, true)
        );
        let s = details(SAFARI);
        assert_eq!((s.major, s.os), (17, Os::MacOs));
        assert_eq!(details(ANDROID).os, Os::Android);
        assert_eq!(UaDetails::unpack(e.pack()), e);
        assert_eq!(UaDetails::unpack(f.pack()), f);
    }

    #[test]
    fn tools_are_named_by_their_first_token() {
        let a = details(b"python-requests/2.32.3");
        let b = details(b"Python-Requests/2.31.0");
        assert_eq!((a.product, a.major), (b.product, 2));
        let j = details(b"Java-http-client/17.0.15");
        assert_eq!(j.major, 17);
        assert_ne!(j.product, a.product);
        assert_eq!(details(b"node").major, 0);
        assert_eq!(
            product_name(details(b"curl/8.5.0").product).unwrap(),
            "curl"
        );
    }

    #[test]
    fn client_hints_must_agree_with_the_user_agent() {
        let honest = hints(&[
            (
                "sec-ch-ua",
                "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
            ),
            ("sec-ch-ua-platform", "\"Linux\""),
        ]);
        assert_eq!(honest.chromium_major, Some(131));
        assert_eq!(honest.platform, Some(Os::Linux));
        assert!(!honest.contradict(&details(CHROME_LINUX)));
        // A Windows user agent with Linux hints: a spoofed browser.
        assert!(honest.contradict(&details(CHROME_WINDOWS)));
        // Another Chromium version in the hints than in the user agent.
        let old = hints(&[(
            "sec-ch-ua",
            "\"Not A;Brand\";v=\"99\", \"Chromium\";v=\"120\"",
        )]);
        assert!(old.contradict(&details(CHROME_LINUX)));
        // Firefox has no client hints at all.
        assert!(honest.contradict(&details(FIREFOX)));
        assert!(!hints(&[]).contradict(&details(FIREFOX)));
        // Android's reduced user agent says Linux too, but names Android.
        let android = hints(&[("sec-ch-ua-platform", "\"Android\"")]);
        assert!(!android.contradict(&details(ANDROID)));
    }

    #[test]
    fn every_standard_header_has_its_own_bit() {
        for (i, s) in STANDARD.iter().enumerate() {
            let name = if s.ends_with('-') {
                format!("{s}x")
            } else {
                s.to_string()
            };
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(standard_bit(&name), 1 << i, "{s}");
        }
        assert_eq!(
            standard_bit(&HeaderName::from_static("sec-ch-ua-platform")),
            1 << 16
        );
        assert_eq!(standard_bit(&HeaderName::from_static("x-random")), 0);
        for (name, bit) in [
            ("host", STANDARD_HOST),
            ("user-agent", STANDARD_USER_AGENT),
            ("accept", STANDARD_ACCEPT),
            ("accept-language", STANDARD_ACCEPT_LANGUAGE),
            ("accept-encoding", STANDARD_ACCEPT_ENCODING),
            ("cookie", STANDARD_COOKIE),
            ("referer", STANDARD_REFERER),
        ] {
            assert_eq!(standard_bit(&HeaderName::from_static(name)), bit, "{name}");
        }
    }

    #[test]
    fn clusters_ignore_unknown_headers_and_say_themselves_in_words() {
        let ua = details(CHROME_LINUX);
        let mut h = HeaderMap::new();
        let mut mask = 0;
        for name in [
            "host",
            "user-agent",
            "accept",
            "x-random-7f3a",
            "sec-ch-ua",
            "cookie",
        ] {
            let n = HeaderName::from_static(name);
            mask |= standard_bit(&n);
            h.append(n, HeaderValue::from_static("x"));
        }
        assert_eq!(mask.count_ones(), 5);
        let c = Cluster::fine(UaFamily::Browser, &ua, Version::HTTP_11, mask);
        assert!(c.has_header("cookie") && c.has_header("sec-ch-ua") && !c.has_header("referer"));
        assert_eq!(
            c.to_string(),
            "Chrome 131 on Linux (browser), HTTP/1.1, 5 standard headers with cookie, client hints; no referer, language, sec-fetch"
        );
        assert_eq!(c.coarse().to_string(), "any Chrome (browser)");
        assert_eq!(c.family_wide().to_string(), "any browser client");
        let ids = c.ids();
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        assert_ne!(c.id(), c.coarse().id());
        let other = Cluster::fine(
            UaFamily::Browser,
            &details(CHROME_WINDOWS),
            Version::HTTP_11,
            mask,
        );
        assert_ne!(c.id(), other.id());
        assert_eq!(c.coarse().id(), other.coarse().id());
    }
}
