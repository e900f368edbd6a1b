//! Which kind of client a `User-Agent` value claims to be: browser,
//! tool, crawler, empty or other, from one pass of one automaton.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// The kind of client a `User-Agent` claims to be; see [`ua_family`](crate::http::ua_family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UaFamily {
    /// `Mozilla/5.0` with a browser engine (`AppleWebKit`, `Gecko`,
    /// `Trident`), and no crawler or tool token.
    Browser,
    /// An HTTP library, command-line client, scanner or headless browser.
    Tool,
    /// A search engine, social network or other crawler (self-declared).
    Crawler,
    /// No `User-Agent`, or only whitespace.
    Empty,
    /// Anything else.
    Other,
}

impl UaFamily {
    /// A short lowercase name for logs and metrics: `browser`, `tool`,
    /// `crawler`, `empty`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            UaFamily::Browser => "browser",
            UaFamily::Tool => "tool",
            UaFamily::Crawler => "crawler",
            UaFamily::Empty => "empty",
            UaFamily::Other => "other",
        }
    }

    /// One letter, as in a fingerprint's text form.
    pub(super) fn letter(self) -> char {
        match self {
            UaFamily::Browser => 'b',
            UaFamily::Tool => 't',
            UaFamily::Crawler => 's',
            UaFamily::Empty => 'e',
            UaFamily::Other => 'o',
        }
    }

    pub(super) fn code(self) -> u64 {
        match self {
            UaFamily::Browser => 0,
            UaFamily::Tool => 1,
            UaFamily::Crawler => 2,
            UaFamily::Empty => 3,
            UaFamily::Other => 4,
        }
    }
}

/// What a token in a `User-Agent` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Crawler,
    Tool,
    Engine,
}

/// Self-declared crawlers. `bot`, `crawl` and `spider` catch most of them
/// (`AhrefsBot`, `GPTBot`, `Bytespider`, ...); the names are for those
/// without such a word. A phone model with `bot` in its name (`CUBOT`)
/// reads as a crawler too.
const CRAWLERS: &[&str] = &[
    "googlebot",
    "bingbot",
    "duckduckbot",
    "baiduspider",
    "yandex",
    "applebot",
    "facebookexternalhit",
    "mediapartners-google",
    "adsbot-google",
    "google-inspectiontool",
    "slurp",
    "ia_archiver",
    "bot",
    "crawl",
    "spider",
];

/// HTTP libraries, command-line clients, scanners and headless browsers.
const TOOLS: &[&str] = &[
    "curl/",
    "libcurl",
    "wget",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "httpx",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "apache-httpclient",
    "libwww-perl",
    "lwp::",
    "node-fetch",
    "axios",
    "undici",
    "httpie",
    "postmanruntime",
    "insomnia",
    "guzzlehttp",
    "winhttp",
    "powershell",
    "ruby",
    "dart:io",
    "fasthttp",
    "scrapy",
    "masscan",
    "zgrab",
    "nmap",
    "sqlmap",
    "nikto",
    "nuclei",
    "gobuster",
    "wfuzz",
    "java-http-client",
    "got (",
    "ureq/",
    "reqwest/",
    "hyper/",
    "http-tiny",
    "aria2",
    "apachebench",
    "php/",
    "faraday",
    "rest-client",
    "mechanize",
    "typhoeus",
    "deno/",
    "bun/",
    "k6/",
    "locust",
    "vegeta",
    "hey/",
    "jmeter",
    "headlesschrome",
    "phantomjs",
];

/// User agents that are a tool's whole value: Node's built-in `fetch`
/// says only `node`.
const TOOL_VALUES: &[&[u8]] = &[b"node", b"undici"];

/// What every browser's user agent starts with; checked apart from the
/// automaton, which then scans only the rest.
const BROWSER_PREFIX: &[u8] = b"mozilla/5.0";
const ENGINES: &[&str] = &["applewebkit", "gecko", "trident"];

/// Every token in one automaton, with what each one says (same order).
pub(super) struct UaTokens {
    automaton: AhoCorasick,
    tokens: Vec<Token>,
}

/// Built on first use; `None` only if the automaton could not be built,
/// which the tests rule out (every user agent then reads as `Other`).
pub(super) static UA_TOKENS: LazyLock<Option<UaTokens>> = LazyLock::new(|| {
    let groups: [(&[&str], Token); 3] = [
        (CRAWLERS, Token::Crawler),
        (TOOLS, Token::Tool),
        (ENGINES, Token::Engine),
    ];
    let (patterns, tokens): (Vec<&str>, Vec<Token>) = groups
        .iter()
        .flat_map(|(words, token)| words.iter().map(move |w| (*w, *token)))
        .unzip();
    // A DFA without prefilter: in a browser's user agent candidate bytes
    // are everywhere, and a prefilter only adds work (a quarter more).
    let automaton = AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostFirst)
        .kind(Some(AhoCorasickKind::DFA))
        .prefilter(false)
        .build(patterns)
        .ok()?;
    Some(UaTokens { automaton, tokens })
});

/// [`ua_family`](crate::http::ua_family) without the cache.
pub(crate) fn classify(user_agent: &[u8]) -> UaFamily {
    let ua = user_agent.trim_ascii();
    if ua.is_empty() {
        return UaFamily::Empty;
    }
    if TOOL_VALUES.iter().any(|t| ua.eq_ignore_ascii_case(t)) {
        return UaFamily::Tool;
    }
    let Some(ua_tokens) = UA_TOKENS.as_ref() else {
        return UaFamily::Other;
    };
    // No token starts inside the prefix and ends past it, so skipping it
    // loses no match.
    let (mozilla, rest) = match ua.split_at_checked(BROWSER_PREFIX.len()) {
        Some((head, rest)) if head.eq_ignore_ascii_case(BROWSER_PREFIX) => (true, rest),
        _ => (false, ua),
    };
    let (mut tool, mut engine) = (false, false);
    for m in ua_tokens.automaton.find_iter(rest) {
        match ua_tokens.tokens.get(m.pattern().as_usize()) {
            Some(Token::Crawler) => return UaFamily::Crawler,
            Some(Token::Tool) => tool = true,
            Some(Token::Engine) => engine = true,
            None => {}
        }
    }
    if tool {
        UaFamily::Tool
    } else if mozilla && engine {
        UaFamily::Browser
    } else {
        UaFamily::Other
    }
}
