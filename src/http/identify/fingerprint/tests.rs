use http::HeaderName;

use super::*;
use crate::http::identify::look::UaDetails;
use crate::http::identify::ua_profile::{
    BROWSER_VERSIONS, FAMILIES, UaProfile, sends_sec_fetch, ua_family,
};
use crate::http::identify::user_agent::{UA_TOKENS, classify};
use crate::http::identify::wire::{HeadScanner, Scan};

const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

use crate::http::identify::wire::CHROME_HEAD as CHROME;

const PYTHON_REQUESTS: &str = "GET /api/items HTTP/1.1\r\n\
Host: shop.test\r\n\
User-Agent: python-requests/2.32.3\r\n\
Accept-Encoding: gzip, deflate\r\n\
Accept: */*\r\n\
Connection: keep-alive\r\n\r\n";

/// A script wearing Chrome's user agent and little else.
const MIMIC: &str = "GET /search?q=x HTTP/1.0\r\n\
Host: shop.test\r\n\
User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n\
Accept: */*\r\n\
Accept-Encoding: identity\r\n\r\n";

/// Request parts as hyper would make them from `head`, and the wire head.
fn request(head: &str) -> (Parts, Option<WireHead>) {
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap().split(' ');
    let method = start.next().unwrap();
    let target = start.next().unwrap();
    let version = match start.next().unwrap() {
        "HTTP/1.0" => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri(target)
        .version(version);
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap();
        req = req.header(name, value.trim());
    }
    let wire = match HeadScanner::new().feed(head.as_bytes()) {
        Scan::Done(w) => Some(w),
        _ => None,
    };
    (req.body(()).unwrap().into_parts().0, wire)
}

fn parts(version: Version, method: Method, headers: &[(&str, &str)]) -> Parts {
    let mut req = http::Request::builder().method(method).version(version);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(()).unwrap().into_parts().0
}

fn list(found: Anomalies) -> Vec<Anomaly> {
    found.iter().collect()
}

#[test]
fn automata_build() {
    assert!(UA_TOKENS.is_some());
    assert!(BROWSER_VERSIONS.is_some());
}

#[test]
fn user_agent_families() {
    use UaFamily::*;
    let table = [
        (CHROME_UA, Browser),
        (
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
            Browser,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
            Browser,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
            Browser,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
            Browser,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
            Browser,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
            Browser,
        ),
        ("curl/8.5.0", Tool),
        ("python-requests/2.32.3", Tool),
        ("Go-http-client/1.1", Tool),
        ("Go-http-client/2.0", Tool),
        ("Wget/1.21.4", Tool),
        ("okhttp/4.12.0", Tool),
        ("Python-urllib/3.11", Tool),
        ("Python/3.12 aiohttp/3.9.5", Tool),
        ("python-httpx/0.27.0", Tool),
        ("Java/17.0.10", Tool),
        ("Apache-HttpClient/4.5.14 (Java/17.0.10)", Tool),
        ("axios/1.6.8", Tool),
        (
            "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
            Tool,
        ),
        ("PostmanRuntime/7.37.3", Tool),
        ("Scrapy/2.11.1 (+https://scrapy.org)", Tool),
        ("sqlmap/1.8#stable (https://sqlmap.org)", Tool),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
            Tool,
        ),
        (
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            Tool,
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            Crawler,
        ),
        (
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.201 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            Crawler,
        ),
        (
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            Crawler,
        ),
        (
            "Mozilla/5.0 (compatible; YandexImages/3.0; +http://yandex.com/bots)",
            Crawler,
        ),
        (
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            Crawler,
        ),
        (
            "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
            Crawler,
        ),
        (
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
            Crawler,
        ),
        // A crawler token wins over a tool token.
        ("curl/8.5.0 (my-crawler)", Crawler),
        ("", Empty),
        ("  \t ", Empty),
        ("flood/1.0", Other),
        ("Mozilla/5.0", Other),
        ("Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)", Other),
        // Mozilla/5.0 must lead.
        ("X Mozilla/5.0 AppleWebKit/537.36", Other),
    ];
    for (ua, want) in table {
        assert_eq!(ua_family(ua.as_bytes()), want, "{ua}");
    }
    assert_eq!(ua_family(&[0xff, 0x00, b'b', b'o', b'T']), Crawler);
    assert_eq!(ua_family(b"CURL/7.1"), Tool, "case-insensitive");
}

#[test]
fn real_chrome_request_has_no_anomaly() {
    let (p, wire) = request(CHROME);
    let fp = Fingerprint::of(&p, wire.as_ref());
    assert_eq!(fp.ua_family(), UaFamily::Browser);
    assert!(anomalies(&p, fp.ua_family()).is_empty());
    assert!(fp.is_wire());
    assert_eq!(fp.header_count(), 17);
    assert_eq!(fp.language(), Some("en"));
    assert!(fp.has_cookie() && fp.has_referer());
    assert_eq!(fp.method(), Some(Method::GET));
    assert_eq!(fp.version(), Version::HTTP_11);
    let text = fp.to_string();
    assert_eq!(text.len(), 21, "{text}");
    assert!(text.starts_with("ge11cr17enb_"), "{text}");
    assert!(text.ends_with('w'), "{text}");
}

#[test]
fn python_requests_has_no_browser_anomaly() {
    let (p, _) = request(PYTHON_REQUESTS);
    let family = Fingerprint::of(&p, None).ua_family();
    assert_eq!(family, UaFamily::Tool);
    assert_eq!(list(anomalies(&p, family)), []);
}

#[test]
fn mimic_bot_is_caught() {
    let (p, wire) = request(MIMIC);
    let fp = Fingerprint::of(&p, wire.as_ref());
    assert_eq!(fp.ua_family(), UaFamily::Browser);
    let found = anomalies(&p, fp.ua_family());
    // Over plain HTTP (Host shop.test) a browser sends no Sec-Fetch-*:
    // lacking them is no anomaly there.
    assert_eq!(
        list(found),
        [
            Anomaly::Http10,
            Anomaly::BrowserWithoutAcceptLanguage,
            Anomaly::BrowserWithoutCompression,
        ]
    );
    assert_eq!(found.len(), 3);
    assert!(found.contains(Anomaly::Http10));
    assert!(!found.contains(Anomaly::NoAccept));
    assert_eq!(
        format!("{found:?}"),
        "{\"http10\", \"browser_without_accept_language\", \"browser_without_compression\"}"
    );
    // To a secure origin it would have sent them.
    let (p, _) = request(&MIMIC.replace("Host: shop.test", "Host: localhost:8080"));
    assert!(anomalies(&p, UaFamily::Browser).contains(Anomaly::BrowserWithoutSecFetch));
    assert!(fp.to_string().starts_with("ge10nn0400b_"), "{fp}");
}

#[test]
fn generic_anomalies() {
    let h11 = parts(Version::HTTP_11, Method::GET, &[]);
    assert_eq!(
        list(anomalies(&h11, UaFamily::Empty)),
        [
            Anomaly::MissingHost,
            Anomaly::EmptyUserAgent,
            Anomaly::NoAccept
        ]
    );
    // HTTP/2 carries the authority in the URI.
    let h2 = parts(Version::HTTP_2, Method::GET, &[("user-agent", " ")]);
    assert_eq!(
        list(anomalies(&h2, UaFamily::Empty)),
        [Anomaly::EmptyUserAgent, Anomaly::NoAccept]
    );
}

#[test]
fn browser_checks() {
    let base = [
        ("host", "localhost"),
        ("accept", "*/*"),
        ("accept-language", "de"),
        ("accept-encoding", "gzip"),
    ];
    let with = |ua: &str, method: Method, extra: &[(&str, &str)]| {
        let mut h = base.to_vec();
        h.push(("user-agent", ua));
        h.extend_from_slice(extra);
        let p = parts(Version::HTTP_11, method, &h);
        list(anomalies(&p, ua_family(ua.as_bytes())))
    };
    let firefox =
        |v: u32| format!("Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0");
    let sec_fetch = [Anomaly::BrowserWithoutSecFetch];
    assert_eq!(with(&firefox(125), Method::GET, &[]), sec_fetch);
    // Over plain HTTP, not checked.
    let plain = |ua: &str| {
        let mut h = base.to_vec();
        h[0] = ("host", "shop.test");
        h.push(("user-agent", ua));
        list(anomalies(
            &parts(Version::HTTP_11, Method::GET, &h),
            ua_family(ua.as_bytes()),
        ))
    };
    assert_eq!(plain(&firefox(125)), []);
    assert_eq!(plain(CHROME_UA), []);
    assert_eq!(with(&firefox(89), Method::GET, &[]), []);
    assert_eq!(
        with(CHROME_UA, Method::POST, &[("sec-ch-ua-mobile", "?0")]),
        [],
        "Sec-Fetch: GET only"
    );
    // Chrome 89+ sends client hints to a secure origin too.
    assert_eq!(
        with(CHROME_UA, Method::GET, &[("sec-fetch-site", "none")]),
        [Anomaly::BrowserWithoutClientHints]
    );
    assert_eq!(
        with(
            CHROME_UA,
            Method::GET,
            &[
                ("sec-fetch-site", "none"),
                ("sec-ch-ua-platform", "\"Windows\"")
            ]
        ),
        []
    );
    // Hints that contradict the user agent, secure origin or not.
    assert_eq!(
        with(
            CHROME_UA,
            Method::GET,
            &[
                ("sec-fetch-site", "none"),
                ("sec-ch-ua-platform", "\"Linux\"")
            ]
        ),
        [Anomaly::ClientHintsMismatch]
    );
    let old_chrome = CHROME_UA.replace("Chrome/120", "Chrome/79");
    assert_eq!(with(&old_chrome, Method::GET, &[]), []);
    // Safari: no version check.
    let safari = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15";
    assert_eq!(with(safari, Method::GET, &[]), []);

    assert!(offers_compression(b"gzip, deflate, br, zstd"));
    assert!(offers_compression(b"identity, BR;q=0.5"));
    assert!(!offers_compression(b"identity"));
    assert!(!offers_compression(b"gzip;q=0, br; q=0.00"));
    assert!(!offers_compression(b""));
    assert!(!offers_compression(b"gzipped, *"));
}

#[test]
fn order_free_fingerprint_ignores_insertion_order() {
    let headers = [
        ("host", "a"),
        ("user-agent", CHROME_UA),
        ("accept", "*/*"),
        ("accept-language", "fr-CH, fr;q=0.9"),
        ("cookie", "a=1"),
        ("x-custom", "1"),
        ("x-custom", "2"),
    ];
    let forward = parts(Version::HTTP_11, Method::GET, &headers);
    let mut reversed = headers;
    reversed.reverse();
    let backward = parts(Version::HTTP_11, Method::GET, &reversed);
    let (a, b) = (
        Fingerprint::of(&forward, None),
        Fingerprint::of(&backward, None),
    );
    assert_eq!(a, b);
    assert_eq!(a.class(), b.class());
    assert_eq!(a.to_string(), b.to_string());
    assert!(!a.is_wire());
    assert_eq!(a.header_count(), 7);
    assert_eq!(a.language(), Some("fr"));
    // A different set of names is a different hash.
    let fewer = parts(Version::HTTP_11, Method::GET, &headers[..6]);
    assert_ne!(Fingerprint::of(&fewer, None).names_hash(), a.names_hash());
}

#[test]
fn wire_fingerprint_sees_order_and_casing() {
    let a = "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nUser-Agent: x\r\n\r\n";
    let b = "GET / HTTP/1.1\r\nAccept: */*\r\nHost: a\r\nUser-Agent: x\r\n\r\n";
    let c = "GET / HTTP/1.1\r\nhost: a\r\naccept: */*\r\nuser-agent: x\r\n\r\n";
    let fps = [a, b, c].map(|head| {
        let (p, wire) = request(head);
        (
            Fingerprint::of(&p, wire.as_ref()),
            Fingerprint::of(&p, None),
        )
    });
    assert_ne!(fps[0].0, fps[1].0);
    assert_ne!(fps[0].0, fps[2].0);
    assert_ne!(fps[1].0, fps[2].0);
    assert!(fps.iter().all(|(w, f)| w.is_wire() && !f.is_wire()));
    // Without the wire the three are one.
    assert_eq!(fps[0].1, fps[1].1);
    assert_eq!(fps[0].1, fps[2].1);
}

#[test]
fn class_tells_every_field_apart() {
    let (p, wire) = request(CHROME);
    let base = Fingerprint::of(&p, wire.as_ref());
    let mut variants = vec![base];
    let mut push = |f: &dyn Fn(&mut Fingerprint)| {
        let mut v = base;
        f(&mut v);
        variants.push(v);
    };
    push(&|v| v.names_hash ^= 1);
    push(&|v| v.header_count = 3);
    push(&|v| v.method = MethodCode::Other);
    push(&|v| v.version = Version::HTTP_2);
    push(&|v| v.cookie = false);
    push(&|v| v.referer = false);
    push(&|v| v.wire = false);
    push(&|v| v.family = UaFamily::Other);
    push(&|v| v.language = None);
    push(&|v| v.language = Some(*b"ne"));
    for (i, a) in variants.iter().enumerate() {
        for b in &variants[i + 1..] {
            assert_ne!(a.class(), b.class(), "{a} {b}");
        }
    }
}

#[test]
fn text_form() {
    let p = parts(
        Version::HTTP_2,
        Method::from_bytes(b"PURGE").unwrap(),
        &[("accept-language", "*")],
    );
    let fp = Fingerprint::of(&p, None);
    assert_eq!(fp.method(), None);
    assert_eq!(fp.language(), None);
    let want = format!("xx20nn0100e_{:08x}f", fp.names_hash());
    assert_eq!(fp.to_string(), want);
    let hash = |name: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("v"),
        );
        order_free_hash(&h)
    };
    assert_eq!(fold(order_free_hash(&p.headers)), fp.names_hash());
    assert_ne!(hash("ab"), hash("ba"));
}

#[test]
fn name_hashes_differ_for_every_length_and_byte() {
    let mut seen = std::collections::HashSet::new();
    for len in 0..=20usize {
        let base: Vec<u8> = (0..len).map(|i| b'a' + i as u8).collect();
        assert!(seen.insert(name_hash(&base)), "len {len}");
        for at in 0..len {
            let mut changed = base.clone();
            changed[at] = b'-';
            assert!(seen.insert(name_hash(&changed)), "len {len} at {at}");
        }
    }
}

#[test]
fn cached_profiles_match_fresh_ones() {
    let agents: [&[u8]; 6] = [
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.0.0 Safari/537.36",
        b"curl/8.5.0",
        b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        b"",
        b"flood/1.0",
    ];
    for ua in agents {
        let fresh = classify(ua);
        let sec_fetch = fresh == UaFamily::Browser && sends_sec_fetch(ua);
        // The first call fills the cache, the second reads it.
        for _ in 0..2 {
            let p = ua_profile(ua);
            assert_eq!((p.family, p.sends_sec_fetch), (fresh, sec_fetch), "{ua:?}");
        }
    }
    for family in FAMILIES {
        for sends_sec_fetch in [false, true] {
            let details = UaDetails::of(b"curl/8.5.0", UaFamily::Tool);
            let p = UaProfile {
                family,
                sends_sec_fetch,
                details,
            };
            assert_eq!(UaProfile::decode(p.encode(), details.pack()), Some(p));
        }
    }
    assert_eq!(UaProfile::decode(0, 0), None);
}

#[test]
fn one_pass_matches_fingerprint_and_anomalies() {
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    let mut cases: Vec<(Parts, Option<WireHead>)> = [CHROME, PYTHON_REQUESTS, MIMIC]
        .into_iter()
        .map(request)
        .collect();
    let by_hand: [&[(&str, &str)]; 5] = [
        &[],
        &[("user-agent", " "), ("accept-language", "*")],
        &[
            ("user-agent", firefox),
            ("accept-encoding", "identity"),
            ("accept-encoding", "br;q=0"),
            ("accept-language", ""),
            ("accept-language", "fr"),
        ],
        &[
            ("user-agent", firefox),
            ("user-agent", "curl/8.5.0"),
            ("accept-encoding", "identity"),
            ("accept-encoding", "zstd"),
            ("sec-fetch-dest", "document"),
            ("cookie", "a=1"),
        ],
        &[("user-agent", CHROME_UA), ("host", "a"), ("referer", "/")],
    ];
    for headers in by_hand {
        for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            for method in [Method::GET, Method::POST] {
                cases.push((parts(version, method.clone(), headers), None));
            }
        }
    }
    for (p, wire) in &cases {
        for wire in [wire.as_ref(), None] {
            let fp = Fingerprint::of(p, wire);
            let mut found = anomalies(p, fp.ua_family());
            // Behind a trusted proxy the order is not judged.
            let proxied = look(p, wire, secure_by_itself(p), false);
            assert_eq!((proxied.fingerprint, proxied.anomalies), (fp, found));
            // Directly, it is (the public `anomalies` has no wire head).
            let ua = p.headers.get(USER_AGENT).map_or(&b""[..], |v| v.as_bytes());
            let misfit = wire.and_then(|w| w.fits_browser(ua)) == Some(false);
            found.insert_if(Anomaly::HeaderOrderMismatch, misfit);
            let l = look(p, wire, secure_by_itself(p), true);
            assert_eq!((l.fingerprint, l.anomalies), (fp, found), "{:?}", p.headers);
        }
    }
}

#[test]
fn header_order_mismatch_needs_a_direct_wire_head_and_a_browser_claim() {
    let order = |head: &str, direct: bool| {
        let (p, wire) = request(head);
        look(&p, wire.as_ref(), false, direct)
            .anomalies
            .contains(Anomaly::HeaderOrderMismatch)
    };
    // Chrome's own head fits; python-requests' under Chrome's user agent
    // does not, unless a trusted proxy wrote it.
    assert!(!order(CHROME, true));
    let spoofed = PYTHON_REQUESTS.replace("python-requests/2.32.3", CHROME_UA);
    assert!(order(&spoofed, true));
    assert!(!order(&spoofed, false));
    // python-requests as itself claims no browser: not judged.
    assert!(!order(PYTHON_REQUESTS, true));
    // No wire head (HTTP/2, or no gate): not judged.
    let (p, _) = request(&spoofed);
    assert!(
        !look(&p, None, false, true)
            .anomalies
            .contains(Anomaly::HeaderOrderMismatch)
    );
    // Chrome's head all lowercase, as Node writes it.
    let mut lower = String::new();
    for line in CHROME.split_inclusive("\r\n") {
        match line.split_once(':') {
            Some((n, v)) if !line.starts_with("GET ") => {
                lower.push_str(&n.to_ascii_lowercase());
                lower.push(':');
                lower.push_str(v);
            }
            _ => lower.push_str(line),
        }
    }
    assert!(order(&lower, true));
    assert_eq!(Anomaly::HeaderOrderMismatch.name(), "header_order_mismatch");
}
