//! How requests are grouped for attack detection: the cluster a request
//! belongs to, finer and coarser, and how it is said in words.

use std::fmt;

mod describe;

use http::Version;

use super::look::{PRODUCT_MASK, STANDARD, UaDetails, product_name};
use super::user_agent::UaFamily;
use crate::http::Os;

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

pub(super) fn version_code(v: Version) -> u8 {
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
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
