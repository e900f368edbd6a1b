//! Which standard headers a request head carries, in which order and
//! casing, and whether that fits the browser its user agent claims.
//!
//! Over HTTP/1.1 Chromium and Firefox each write their headers in one
//! order of their own (captured in `tests/data/heads`), and spell every
//! name the same way: Title-Case, Chromium's client hints (`sec-ch-ua*`)
//! lowercase. HTTP libraries write theirs in other orders, many all in
//! lowercase; a script that only copies a browser's user agent keeps its
//! library's order and casing. [`HeadScanner`](crate::http::HeadScanner) notes
//! the standard names of [`NAMES`] as it reads them; [`OrderFamily::fits`]
//! judges them. Names outside that list are not looked at, so extra
//! headers with random names neither raise nor hide a mismatch.

use crate::http::identify::wire::{NameCasing, WireHead};

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
const HOST: u8 = 1;
const CONNECTION: u8 = 2;
const USER_AGENT: u8 = 3;
const ACCEPT: u8 = 4;
const ACCEPT_LANGUAGE: u8 = 5;
const ACCEPT_ENCODING: u8 = 6;
const COOKIE: u8 = 7;
const REFERER: u8 = 8;
const UPGRADE_INSECURE_REQUESTS: u8 = 12;
const PRIORITY: u8 = 15;
const SEC_FETCH_SITE: u8 = 16;
const SEC_FETCH_MODE: u8 = 17;
const SEC_FETCH_USER: u8 = 18;
const SEC_FETCH_DEST: u8 = 19;
const CLIENT_HINTS: u8 = 21;

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

/// The browsers whose HTTP/1.1 header order is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrderFamily {
    /// Chrome, Edge, Opera, Samsung Internet, other Chromium browsers
    /// (not on iOS, where they are WebKit underneath).
    Chromium,
    /// Firefox (Gecko; not Firefox for iOS).
    Firefox,
}

/// Headers every Chromium and Firefox request carries over HTTP/1.1 (all
/// 48 captured ones do, every kind, both origins, headful and headless):
/// a head without one of them fits neither order. `Accept` is not among
/// them: Chromium's WebSocket handshake has none.
const REQUIRED: u32 =
    1 << HOST | 1 << CONNECTION | 1 << USER_AGENT | 1 << ACCEPT_ENCODING | 1 << ACCEPT_LANGUAGE;

impl OrderFamily {
    /// The places a header may take in this browser's order: a range of
    /// ranks, or `None` for a header whose place is not judged (not
    /// captured, or set by a page's script wherever it likes). Ranges let
    /// one table hold every captured order: where a header comes at two
    /// places (Chromium's client hints before or after `User-Agent`,
    /// Firefox's `Referer` before or after `Connection`), its range
    /// spans both.
    fn rank(self, id: u8) -> Option<(u8, u8)> {
        match self {
            // Host, Connection, [hints, Upgrade-Insecure-Requests,
            // User-Agent, Accept], Sec-Fetch-*, Referer, Accept-Encoding,
            // Accept-Language, Cookie. Documents send the hints before
            // User-Agent, subresources some after it; a script's `fetch`
            // or XHR puts the headers it sets (`Accept`,
            // `Accept-Language` too) among the hints, so those two float.
            OrderFamily::Chromium => Some(match id {
                HOST => (0, 0),
                CONNECTION => (1, 1),
                CLIENT_HINTS | ACCEPT => (2, 3),
                UPGRADE_INSECURE_REQUESTS => (2, 2),
                USER_AGENT => (3, 3),
                // The four in a fixed order in the captures; kept as one
                // rank so that a preflight's own order cannot trip it.
                SEC_FETCH_SITE | SEC_FETCH_MODE | SEC_FETCH_USER | SEC_FETCH_DEST => (4, 4),
                REFERER => (5, 5),
                ACCEPT_ENCODING => (6, 6),
                ACCEPT_LANGUAGE => (2, 7),
                COOKIE => (8, 8),
                _ => return None,
            }),
            // Host, User-Agent, Accept, Accept-Language, Accept-Encoding,
            // [Referer], Connection, [Referer], Cookie,
            // Upgrade-Insecure-Requests, Sec-Fetch-*, Priority. `fetch`
            // sends Referer before Connection, everything else after it.
            // Client hints are `ClientHintsMismatch`'s, not judged here.
            OrderFamily::Firefox => Some(match id {
                HOST => (0, 0),
                USER_AGENT => (1, 1),
                ACCEPT => (2, 2),
                ACCEPT_LANGUAGE => (3, 3),
                ACCEPT_ENCODING => (4, 4),
                REFERER => (5, 7),
                CONNECTION => (6, 6),
                COOKIE => (7, 7),
                UPGRADE_INSECURE_REQUESTS => (8, 8),
                SEC_FETCH_SITE | SEC_FETCH_MODE | SEC_FETCH_USER | SEC_FETCH_DEST => (9, 9),
                PRIORITY => (10, 10),
                _ => return None,
            }),
        }
    }

    /// Whether `head` could come from this browser over HTTP/1.1: every
    /// standard name spelled as the browser spells it, the headers it
    /// always sends there, and the judged ones in an order its table
    /// allows (optional ones may be missing; headers not judged, and
    /// names that are not standard, are skipped). A few comparisons per
    /// standard header, no allocation.
    pub(crate) fn fits(self, head: &WireHead) -> bool {
        if head.name_casing() != NameCasing::Browser || head.present() & REQUIRED != REQUIRED {
            return false;
        }
        // Greedy: each header takes the lowest rank its range allows at
        // or after the one before it; a header whose range ends earlier
        // is out of order.
        let mut at = 0;
        for id in head.ids() {
            if let Some((lo, hi)) = self.rank(id) {
                if hi < at {
                    return false;
                }
                at = at.max(lo);
            }
        }
        true
    }
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
