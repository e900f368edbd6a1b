//! The standard header names a request head is judged by: their ids, and
//! how browsers spell each over HTTP/1.1. The head scanner notes them as
//! it reads; the order check judges their places.

/// How browsers spell a standard name over HTTP/1.1, as far as it is
/// judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spelling {
    /// Exactly this: what both Chromium and Firefox write.
    Exact(&'static str),
    /// Lowercase (Chromium's client hints).
    Lowercase,
    /// Not judged: a page's script may set this header itself, in any
    /// casing (`fetch(url, {headers: {accept: ...}})` sends `accept`), or
    /// the name is a family whose members are not all known.
    Any,
}

/// A standard name: lowercase, a prefix when `prefix`, and its spelling.
pub(crate) struct Known {
    pub(crate) name: &'static str,
    pub(crate) prefix: bool,
    pub(crate) spelling: Spelling,
}

const fn exact(name: &'static str, spelling: &'static str) -> Known {
    Known {
        name,
        prefix: false,
        spelling: Spelling::Exact(spelling),
    }
}

const fn any(name: &'static str) -> Known {
    Known {
        name,
        prefix: false,
        spelling: Spelling::Any,
    }
}

/// The standard names the scanner tracks: those of the cluster's standard
/// set (`look.rs`), with `Sec-Fetch-*` split into its four members. A
/// name's id is its index + 1 (0 marks the end of a sequence). The exact
/// `sec-fetch-*` names come before their family's prefix.
pub(crate) const NAMES: [Known; 28] = [
    exact("host", "Host"),
    exact("connection", "Connection"),
    exact("user-agent", "User-Agent"),
    any("accept"),
    any("accept-language"),
    exact("accept-encoding", "Accept-Encoding"),
    exact("cookie", "Cookie"),
    exact("referer", "Referer"),
    exact("origin", "Origin"),
    any("cache-control"),
    any("pragma"),
    exact("upgrade-insecure-requests", "Upgrade-Insecure-Requests"),
    exact("dnt", "DNT"),
    exact("te", "TE"),
    exact("priority", "Priority"),
    exact("sec-fetch-site", "Sec-Fetch-Site"),
    exact("sec-fetch-mode", "Sec-Fetch-Mode"),
    exact("sec-fetch-user", "Sec-Fetch-User"),
    exact("sec-fetch-dest", "Sec-Fetch-Dest"),
    Known {
        name: "sec-fetch-",
        prefix: true,
        spelling: Spelling::Any,
    },
    Known {
        name: "sec-ch-ua",
        prefix: true,
        spelling: Spelling::Lowercase,
    },
    any("content-type"),
    exact("content-length", "Content-Length"),
    any("authorization"),
    Known {
        name: "if-",
        prefix: true,
        spelling: Spelling::Any,
    },
    any("x-requested-with"),
    any("keep-alive"),
    any("range"),
];

// Ids of the names the orders below judge (index in `NAMES` + 1).
pub(crate) const HOST: u8 = 1;
pub(crate) const CONNECTION: u8 = 2;
pub(crate) const USER_AGENT: u8 = 3;
pub(crate) const ACCEPT: u8 = 4;
pub(crate) const ACCEPT_LANGUAGE: u8 = 5;
pub(crate) const ACCEPT_ENCODING: u8 = 6;
pub(crate) const COOKIE: u8 = 7;
pub(crate) const REFERER: u8 = 8;
pub(crate) const UPGRADE_INSECURE_REQUESTS: u8 = 12;
pub(crate) const PRIORITY: u8 = 15;
pub(crate) const SEC_FETCH_SITE: u8 = 16;
pub(crate) const SEC_FETCH_MODE: u8 = 17;
pub(crate) const SEC_FETCH_USER: u8 = 18;
pub(crate) const SEC_FETCH_DEST: u8 = 19;
pub(crate) const CLIENT_HINTS: u8 = 21;

/// The id of a header name whose first bytes are `kept` (at most 32) and
/// whose length is `len`, with how browsers spell it; `None` for a name
/// that is not standard. A prefix's name is shorter than `kept` can be, and
/// every exact name fits in it.
pub(crate) fn identify(kept: &[u8], len: usize) -> Option<(u8, Spelling)> {
    NAMES.iter().zip(1u8..).find_map(|(k, id)| {
        let n = k.name.len();
        let hit = if k.prefix {
            kept.len() >= n && kept[..n].eq_ignore_ascii_case(k.name.as_bytes())
        } else {
            len == n && kept.eq_ignore_ascii_case(k.name.as_bytes())
        };
        hit.then_some((id, k.spelling))
    })
}

/// The lowercase name (or prefix) of id `id`.
pub(crate) fn name_of(id: u8) -> Option<&'static str> {
    NAMES.get(usize::from(id).checked_sub(1)?).map(|k| k.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_entries() {
        for (id, name) in [
            (HOST, "host"),
            (CONNECTION, "connection"),
            (USER_AGENT, "user-agent"),
            (ACCEPT, "accept"),
            (ACCEPT_LANGUAGE, "accept-language"),
            (ACCEPT_ENCODING, "accept-encoding"),
            (COOKIE, "cookie"),
            (REFERER, "referer"),
            (UPGRADE_INSECURE_REQUESTS, "upgrade-insecure-requests"),
            (PRIORITY, "priority"),
            (SEC_FETCH_SITE, "sec-fetch-site"),
            (SEC_FETCH_MODE, "sec-fetch-mode"),
            (SEC_FETCH_USER, "sec-fetch-user"),
            (SEC_FETCH_DEST, "sec-fetch-dest"),
            (CLIENT_HINTS, "sec-ch-ua"),
        ] {
            assert_eq!(name_of(id), Some(name));
        }
        assert_eq!(name_of(0), None);
        assert_eq!(name_of(NAMES.len() as u8 + 1), None);
        // Ids fit the scanner's five bits and the presence mask's 32.
        assert!(NAMES.len() < 31);
    }

    #[test]
    fn names_and_prefixes() {
        let id = |n: &str| identify(&n.as_bytes()[..n.len().min(32)], n.len()).map(|(id, _)| id);
        assert_eq!(id("Host"), Some(HOST));
        assert_eq!(id("HOST"), Some(HOST));
        assert_eq!(id("Hostx"), None);
        assert_eq!(id("Sec-Fetch-Site"), Some(SEC_FETCH_SITE));
        assert_eq!(id("Sec-Fetch-Storage-Access"), Some(20));
        assert_eq!(id("sec-ch-ua-platform"), Some(CLIENT_HINTS));
        assert_eq!(id("sec-ch-ua"), Some(CLIENT_HINTS));
        let long = format!("sec-ch-ua-{}", "x".repeat(40));
        assert_eq!(id(&long), Some(CLIENT_HINTS));
        assert_eq!(id("If-None-Match"), Some(25));
        assert_eq!(id("X-Random"), None);
        assert_eq!(id("sec-ch-prefers-color-scheme"), None);
        // Every exact name fits the scanner's 32 kept bytes.
        assert!(NAMES.iter().all(|k| k.name.len() <= 32));
    }
}
