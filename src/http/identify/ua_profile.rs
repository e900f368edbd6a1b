//! What a user agent claims, as scoring reads it: its family, whether it
//! sends `Sec-Fetch-*`, its details, kept in a small lock-free cache; and
//! whether a wire head's order fits the browser it claims.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};

use super::look::{UaDetails, major_version};
use super::user_agent::{UaFamily, classify};
use super::wire::WireHead;

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
pub(super) const UA_CACHE_SLOTS: usize = 1024;

/// Recently seen user agents and their profiles, direct-mapped: real
/// traffic repeats a few hundred values, and a hit costs one hash (about
/// 20 ns) where the automaton pass costs ten times that. Each slot is two
/// words: the value's hash above the low byte with the family in it, and
/// the details with 12 more bits of the hash; hashing is keyed per
/// process, so nobody can aim a collision, and a collision (or a torn
/// read of a slot two threads fill at once) would only mislabel one value.
pub(super) struct UaCache {
    hasher: ahash::RandomState,
    slots: Box<[[AtomicU64; 2]]>,
}

pub(super) static UA_CACHE: LazyLock<UaCache> = LazyLock::new(|| UaCache {
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
pub(super) const DETAILS_CHECK: u64 = 0xfff << 52;

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
