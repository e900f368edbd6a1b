//! A cluster in an operator's words: what its clients claim to be, how
//! they speak HTTP, which standard headers they send, and what they lack
//! that the client they claim to be would send.

use std::fmt::Write as _;

use super::super::look::{STANDARD, product_name};
use super::Cluster;
use crate::http::{Os, UaFamily};

/// Browsers whose every current version sends `Accept-Language`,
/// `Accept-Encoding` and `Sec-Fetch-*` on a page request, with the first
/// major version that sends `Sec-Fetch-*`.
const SEC_FETCH_SINCE: [(&str, u16); 6] = [
    ("Chrome", 80),
    ("Edge", 80),
    ("Opera", 67),
    ("Samsung Internet", 13),
    ("Firefox", 90),
    ("Safari", 17),
];

/// Chromium browsers: they send client hints (`Sec-CH-UA`) from 89 on,
/// to secure origins only.
const CLIENT_HINTS: [&str; 4] = ["Chrome", "Edge", "Opera", "Samsung Internet"];

impl Cluster {
    /// The cluster in words, for an operator reading a flagged cluster:
    /// the product, version and system its clients claim, what kind of
    /// client that is, the HTTP version, the standard headers sent, and,
    /// for a browser, the ones that browser sends and these clients lack
    /// (the usual mark of a script wearing a browser's user agent).
    ///
    /// For a script claiming Chrome 131 without the headers Chrome sends:
    /// `Chrome 131 on Windows: claims a browser; HTTP/1.1; sends Host,
    /// User-Agent, Accept; lacks Accept-Language, Accept-Encoding,
    /// Sec-Fetch-*, which Chrome 131 sends`. Product names come from the
    /// requests' user agents: they are the client's words, so escape them
    /// wherever you show them.
    pub fn describe(&self) -> String {
        let product = self.product_text();
        let mut out = String::new();
        match self.level {
            0 => {
                out.push_str(&product);
                if self.major != 0 {
                    let _ = write!(out, " {}", self.major);
                }
                if self.os != Os::Unknown {
                    let _ = write!(out, " on {}", self.os.name());
                }
            }
            1 => {
                let _ = write!(out, "any version of {product}");
            }
            _ => return family_wide_words(self.family).into(),
        }
        let _ = write!(out, ": {}", family_words(self.family));
        if self.level > 0 {
            return out;
        }
        match self.http_version() {
            Some(v @ "HTTP/1.0") | Some(v @ "HTTP/0.9") => {
                let _ = write!(out, "; {v}, which no current browser speaks");
            }
            Some(v) => {
                let _ = write!(out, "; {v}");
            }
            None => {}
        }
        let sent = self.header_names();
        if sent.is_empty() {
            out.push_str("; no standard header");
        } else {
            let _ = write!(out, "; sends {}", sent.join(", "));
        }
        if self.family == UaFamily::Browser {
            let lacking = self.lacking(&product);
            if !lacking.is_empty() {
                let _ = write!(out, "; lacks {}, which {product}", lacking.join(", "));
                if self.major != 0 {
                    let _ = write!(out, " {}", self.major);
                }
                out.push_str(" sends");
            }
        }
        out
    }

    /// The product's name as the user agent gave it, or a placeholder.
    pub(crate) fn product_text(&self) -> String {
        match product_name(self.product) {
            Some(n) if n.is_empty() => "no user agent".into(),
            Some(n) => n,
            None => format!("product #{:06x}", self.product),
        }
    }

    /// `HTTP/1.1` and the like; `None` for a coarse cluster.
    pub(crate) fn http_version(&self) -> Option<&'static str> {
        match self.version {
            1 => Some("HTTP/0.9"),
            2 => Some("HTTP/1.0"),
            3 => Some("HTTP/1.1"),
            4 => Some("HTTP/2"),
            5 => Some("HTTP/3"),
            6 => Some("HTTP/?"),
            _ => None,
        }
    }

    /// The standard headers present, as written on the wire
    /// (`Accept-Language`, `Sec-Fetch-*`, `Sec-CH-UA*`).
    pub(crate) fn header_names(&self) -> Vec<String> {
        STANDARD
            .iter()
            .filter(|n| self.has_header(n))
            .map(|n| header_words(n))
            .collect()
    }

    /// What the browser `product` claims would send and these requests
    /// lack.
    fn lacking(&self, product: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut want = vec!["accept", "accept-language", "accept-encoding"];
        if self.version == 3 {
            // HTTP/2 carries the host as :authority, not a header.
            want.insert(0, "host");
        }
        if SEC_FETCH_SINCE
            .iter()
            .any(|(p, since)| *p == product && self.major >= *since)
        {
            want.push("sec-fetch-");
        }
        for h in want {
            if !self.has_header(h) {
                out.push(header_words(h));
            }
        }
        if CLIENT_HINTS.contains(&product) && self.major >= 89 && !self.has_header("sec-ch-ua") {
            out.push("client hints (Sec-CH-UA*, over HTTPS)".into());
        }
        out
    }
}

/// What a user-agent family means, in words.
fn family_words(f: UaFamily) -> &'static str {
    match f {
        UaFamily::Browser => "claims a browser",
        UaFamily::Tool => "a scripting tool or HTTP library",
        UaFamily::Crawler => "a self-declared crawler",
        UaFamily::Empty => "no User-Agent header",
        UaFamily::Other => "an unrecognised user agent",
    }
}

/// Every client of a user-agent family, in words.
fn family_wide_words(f: UaFamily) -> &'static str {
    match f {
        UaFamily::Browser => "any client claiming a browser",
        UaFamily::Tool => "any scripting tool or HTTP library",
        UaFamily::Crawler => "any self-declared crawler",
        UaFamily::Empty => "any client without a User-Agent header",
        UaFamily::Other => "any client with an unrecognised user agent",
    }
}

/// A lowercase standard header name as written on the wire.
fn header_words(name: &str) -> String {
    match name {
        "sec-fetch-" => return "Sec-Fetch-*".into(),
        "sec-ch-ua" => return "Sec-CH-UA*".into(),
        "if-" => return "If-*".into(),
        "dnt" => return "DNT".into(),
        "te" => return "TE".into(),
        _ => {}
    }
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| {
                f.to_ascii_uppercase().to_string() + c.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(feature = "serde")]
impl serde::Serialize for Cluster {
    /// An object: `id` (16 hex digits), `text` (`Display`),
    /// `description` ([`describe`](Cluster::describe)), `width` (`fine`,
    /// `product` or `family`), `family`, `product`, `major` (0: none),
    /// `os` (null: unknown), `http` (null for a coarse cluster) and
    /// `headers` (the standard headers sent).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Cluster", 10)?;
        st.serialize_field("id", &format_args!("{:016x}", self.id()).to_string())?;
        st.serialize_field("text", &self.to_string())?;
        st.serialize_field("description", &self.describe())?;
        let width = ["fine", "product", "family"];
        st.serialize_field("width", width[usize::from(self.level.min(2))])?;
        st.serialize_field("family", self.family.name())?;
        st.serialize_field("product", &(self.level < 2).then(|| self.product_text()))?;
        st.serialize_field("major", &self.major)?;
        st.serialize_field("os", &(self.os != Os::Unknown).then(|| self.os.name()))?;
        st.serialize_field("http", &self.http_version())?;
        st.serialize_field("headers", &self.header_names())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use http::Version;

    use super::super::super::look::{UaDetails, standard_bit};
    use super::*;
    use crate::http::ua_family;

    fn cluster(ua: &str, version: Version, headers: &[&str]) -> Cluster {
        let family = ua_family(ua.as_bytes());
        let details = UaDetails::of(ua.as_bytes(), family);
        let bits = headers
            .iter()
            .map(|h| standard_bit(&h.parse().unwrap()))
            .fold(0, |a, b| a | b);
        Cluster::fine(family, &details, version, bits)
    }

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    #[test]
    fn a_script_wearing_chrome_is_said_to_lack_what_chrome_sends() {
        let c = cluster(CHROME, Version::HTTP_11, &["host", "user-agent", "accept"]);
        assert_eq!(
            c.describe(),
            "Chrome 131 on Windows: claims a browser; HTTP/1.1; sends Host, User-Agent, \
             Accept; lacks Accept-Language, Accept-Encoding, Sec-Fetch-*, client hints \
             (Sec-CH-UA*, over HTTPS), which Chrome 131 sends"
        );
    }

    #[test]
    fn a_real_browser_lacks_nothing() {
        let c = cluster(
            CHROME,
            Version::HTTP_2,
            &[
                "user-agent",
                "accept",
                "accept-language",
                "accept-encoding",
                "sec-fetch-mode",
                "sec-ch-ua",
                "cookie",
            ],
        );
        let d = c.describe();
        assert!(!d.contains("lacks"), "{d}");
        assert!(
            d.starts_with("Chrome 131 on Windows: claims a browser; HTTP/2; sends User-Agent"),
            "{d}"
        );
        assert!(d.contains("Cookie") && d.contains("Sec-Fetch-*"), "{d}");
    }

    #[test]
    fn tools_old_http_and_missing_user_agents_are_named() {
        let curl = cluster("curl/8.5.0", Version::HTTP_10, &["host", "user-agent"]);
        assert_eq!(
            curl.describe(),
            "curl 8: a scripting tool or HTTP library; HTTP/1.0, which no current browser \
             speaks; sends Host, User-Agent"
        );
        let empty = cluster("", Version::HTTP_11, &[]);
        assert_eq!(
            empty.describe(),
            "no user agent: no User-Agent header; HTTP/1.1; no standard header"
        );
        assert_eq!(
            curl.coarse().describe(),
            "any version of curl: a scripting tool or HTTP library"
        );
        assert_eq!(
            curl.family_wide().describe(),
            "any scripting tool or HTTP library"
        );
    }

    #[test]
    fn an_old_browser_is_not_blamed_for_headers_it_predates() {
        let old = "Mozilla/5.0 (X11; Linux x86_64; rv:60.0) Gecko/20100101 Firefox/60.0";
        let c = cluster(
            old,
            Version::HTTP_11,
            &[
                "host",
                "user-agent",
                "accept",
                "accept-language",
                "accept-encoding",
            ],
        );
        assert!(!c.describe().contains("lacks"), "{}", c.describe());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serialises_as_words_and_fields() {
        let c = cluster(CHROME, Version::HTTP_11, &["host", "accept"]);
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v["id"], format!("{:016x}", c.id()));
        assert_eq!(v["description"], c.describe());
        assert_eq!(v["text"], c.to_string());
        assert_eq!(v["width"], "fine");
        assert_eq!(v["family"], "browser");
        assert_eq!(v["product"], "Chrome");
        assert_eq!(v["major"], 131);
        assert_eq!(v["os"], "Windows");
        assert_eq!(v["http"], "HTTP/1.1");
        assert_eq!(v["headers"], serde_json::json!(["Host", "Accept"]));
        let wide = serde_json::to_value(c.family_wide()).unwrap();
        assert_eq!(wide["width"], "family");
        assert!(wide["product"].is_null() && wide["http"].is_null());
    }
}
