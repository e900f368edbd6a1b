//! A fingerprint's compact text form, decoded into words.

use std::fmt::Write as _;

use super::{Fingerprint, MethodCode};

impl Fingerprint {
    /// The fingerprint in words: what its 21-character text form
    /// (`ge11cr17enb_3fa2c9d1w`) packs, decoded.
    ///
    /// ```
    /// use floodguard::http::Fingerprint;
    ///
    /// let (parts, ()) = http::Request::get("/")
    ///     .version(http::Version::HTTP_10)
    ///     .header("user-agent", "curl/8.5.0")
    ///     .header("accept-language", "de-CH")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// let fp = Fingerprint::of(&parts, None);
    /// assert_eq!(
    ///     fp.describe(),
    ///     format!(
    ///         "GET over HTTP/1.0 from a scripting tool or HTTP library; 2 headers, \
    ///          no cookie, no referer, Accept-Language de; header names {:08x} \
    ///          (order-free)",
    ///         fp.names_hash()
    ///     )
    /// );
    /// ```
    pub fn describe(&self) -> String {
        let method = match self.method {
            MethodCode::Other => "an extension method".to_string(),
            m => m
                .entry()
                .map_or_else(|| "?".into(), |(_, m, _)| m.as_str().to_string()),
        };
        let version = match self.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_11 => "HTTP/1.1",
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/?",
        };
        let who = match self.family {
            crate::http::UaFamily::Browser => "a browser user agent",
            crate::http::UaFamily::Tool => "a scripting tool or HTTP library",
            crate::http::UaFamily::Crawler => "a self-declared crawler",
            crate::http::UaFamily::Empty => "no user agent",
            crate::http::UaFamily::Other => "an unrecognised user agent",
        };
        let mut out = format!(
            "{method} over {version} from {who}; {} header{}, {}, {}",
            self.header_count,
            if self.header_count == 1 { "" } else { "s" },
            if self.cookie { "a cookie" } else { "no cookie" },
            if self.referer {
                "a referer"
            } else {
                "no referer"
            },
        );
        match self.language() {
            Some(l) => {
                let _ = write!(out, ", Accept-Language {l}");
            }
            None => out.push_str(", no Accept-Language"),
        }
        let _ = write!(
            out,
            "; header names {:08x} ({})",
            self.names_hash,
            if self.wire {
                "wire order and casing"
            } else {
                "order-free"
            }
        );
        out
    }
}
