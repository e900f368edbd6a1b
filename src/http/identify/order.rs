//! Which standard headers a request head carries, in which order and
//! casing, and whether that fits the browser its user agent claims.
//!
//! Over HTTP/1.1 Chromium and Firefox each write their headers in one
//! order of their own (captured in `tests/data/heads`), and spell every
//! name the same way: Title-Case, Chromium's client hints (`sec-ch-ua*`)
//! lowercase. HTTP libraries write theirs in other orders, many all in
//! lowercase; a script that only copies a browser's user agent keeps its
//! library's order and casing. [`HeadScanner`](crate::http::HeadScanner) notes
//! the standard names of `NAMES` (in `names.rs`) as it reads them; [`OrderFamily::fits`]
//! judges them. Names outside that list are not looked at, so extra
//! headers with random names neither raise nor hide a mismatch.

use crate::http::identify::names::{
    ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, CLIENT_HINTS, CONNECTION, COOKIE, HOST, PRIORITY,
    REFERER, SEC_FETCH_DEST, SEC_FETCH_MODE, SEC_FETCH_SITE, SEC_FETCH_USER,
    UPGRADE_INSECURE_REQUESTS, USER_AGENT,
};
use crate::http::identify::wire::{NameCasing, WireHead};

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
