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

use std::sync::LazyLock;

use http::{HeaderName, HeaderValue};
use parking_lot::Mutex;

use super::order::OrderFamily;
use super::user_agent::UaFamily;

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

    pub(super) fn code(self) -> u64 {
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
pub(super) enum Browser {
    Chrome,
    Edge,
    Opera,
    Samsung,
    Firefox,
    Safari,
}

/// Browser products: the token that names each (checked in this order:
/// Edge, Opera and Samsung also say `Chrome/`), its id and its name.
pub(super) const BROWSERS: [(&[u8], Browser, &str); 8] = [
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
pub(super) const PRODUCT_MASK: u32 = 0xff_ffff;

/// Longest product name kept (bytes).
pub(super) const MAX_PRODUCT_NAME: usize = 24;

/// Product names seen, by id, for saying a cluster in words; bounded.
pub(super) static PRODUCT_NAMES: LazyLock<Mutex<std::collections::HashMap<u32, String>>> =
    LazyLock::new(|| Mutex::new(std::collections::HashMap::new()));
pub(super) const MAX_PRODUCT_NAMES: usize = 4096;

/// A stable 24-bit id of a product name, ASCII case-insensitive (the same
/// on every machine, so a fleet's instances agree on cluster ids). Remembers
/// the name for [`Cluster`]'s text, up to a bound.
pub(super) fn product_id(name: &[u8]) -> u32 {
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

pub(super) fn product_name(id: u32) -> Option<String> {
    PRODUCT_NAMES.lock().get(&id).cloned()
}

/// The standard headers whose presence enters a cluster, one bit each
/// (names lowercase, as a `HeaderMap` holds them). Names outside this list
/// do not change a cluster.
pub(super) const STANDARD: [&str; 24] = [
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

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Version};

    use super::*;
    use crate::http::{Cluster, ua_family};

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
