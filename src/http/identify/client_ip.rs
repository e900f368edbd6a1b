//! Which client address a request is keyed on.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::forwarded::{Hop, HopsRev, Syntax, parse_node, trim_ows};
use crate::ip::canonical;
use crate::{ConfigError, IpPrefix, PrefixSet};

/// Which forwarding header the trusted proxies in front of the service set.
/// Only that one header is read; others are ignored (reading a header the
/// proxy doesn't set would let clients choose their key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`, the de-facto standard:
    /// comma-separated addresses, each proxy appending its peer.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239): the `for=` node of
    /// each element.
    Forwarded,
    /// `X-Real-IP: client`: one address, set (not appended) by the proxy.
    XRealIp,
}

impl ForwardedHeader {
    /// The header's name.
    ///
    /// ```
    /// use floodguard::http::ForwardedHeader;
    /// assert_eq!(ForwardedHeader::XRealIp.name(), "x-real-ip");
    /// ```
    pub fn name(self) -> HeaderName {
        HeaderName::from_static(self.as_str())
    }

    fn as_str(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
            ForwardedHeader::XRealIp => "x-real-ip",
        }
    }
}

/// Where the address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpSource {
    /// The TCP peer of the connection.
    Peer,
    /// An `X-Forwarded-For` entry.
    XForwardedFor,
    /// The `for=` node of a `Forwarded` element.
    Forwarded,
    /// The `X-Real-IP` header.
    XRealIp,
}

/// The result of resolving a request's client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp {
    /// The address to key on, canonical (IPv4-mapped IPv6 is IPv4).
    pub ip: IpAddr,
    /// Where `ip` came from.
    pub source: IpSource,
    /// A forwarding header from a trusted peer was present but unusable; the
    /// key fell back to the nearest trusted hop.
    pub malformed: bool,
}

/// How to find the client address: which proxies are trusted and which
/// header they set.
///
/// A service behind a load balancer sees the balancer as its TCP peer; the
/// real client is named in a forwarding header the balancer writes. Every
/// byte of such a header is chosen by the client unless a proxy you trust
/// wrote it, so [`ClientIpConfig::resolve`] reads a header only when the TCP
/// peer is a trusted proxy, reads only the one header those proxies set, and
/// walks it from the right (the end the proxies append to), stopping at the
/// first address that is not itself a trusted proxy:
///
/// ```text
/// X-Forwarded-For: <spoofed>, <client>, <proxy 1>      peer: <proxy 2>
///                              ^ key    ^ trusted       ^ trusted
/// ```
///
/// Anything to the left of the key, or of an entry that cannot be read, is
/// never used. When the walk cannot go on (an unreadable entry, an `unknown`
/// or obfuscated `Forwarded` node), the key is the nearest trusted hop: the
/// proxy that reported it.
///
/// Only the rightmost 64 (`MAX_HOPS`) entries of a header are ever parsed, so a
/// huge header costs no more than a short one; walking past them counts as
/// meeting a malformed entry. All addresses are canonical: an IPv4-mapped
/// IPv6 address (`::ffff:192.0.2.1`) is the IPv4 address, both as a result
/// and when compared with the trusted set.
///
/// The module does no I/O: it turns a peer address and a [`HeaderMap`] into
/// a [`ClientIp`].
///
/// ```
/// use floodguard::http::{ClientIpConfig, ForwardedHeader, IpSource};
/// use http::HeaderMap;
/// use std::net::IpAddr;
///
/// let config = ClientIpConfig::new()
///     .trust("10.0.0.0/8".parse()?)
///     .header(ForwardedHeader::XForwardedFor);
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "198.51.100.1, 192.0.2.7, 10.1.1.1".parse().unwrap());
///
/// // Through the load balancer 10.0.0.2: the first untrusted hop from the right.
/// let lb: IpAddr = "10.0.0.2".parse().unwrap();
/// let client = config.resolve(lb, &headers);
/// assert_eq!(client.ip, "192.0.2.7".parse::<IpAddr>().unwrap());
/// assert_eq!(client.source, IpSource::XForwardedFor);
///
/// // Straight from the internet: the header is not read.
/// let direct: IpAddr = "203.0.113.5".parse().unwrap();
/// assert_eq!(config.resolve(direct, &headers).ip, direct);
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientIpConfig {
    trusted: PrefixSet,
    pub(crate) header: ForwardedHeader,
    /// A trusted prefix that holds every address (`0.0.0.0/0`, `::/0`).
    everyone: Option<IpPrefix>,
    pub(crate) everyone_allowed: bool,
}

impl ClientIpConfig {
    /// Trusts nobody: the peer address is the client.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a trusted proxy network.
    #[must_use]
    pub fn trust(mut self, prefix: IpPrefix) -> Self {
        if prefix.is_empty() {
            self.everyone = Some(prefix);
        }
        self.trusted.insert(prefix);
        self
    }

    /// Adds several trusted proxy networks.
    #[must_use]
    pub fn trust_all(self, prefixes: impl IntoIterator<Item = IpPrefix>) -> Self {
        prefixes.into_iter().fold(self, Self::trust)
    }

    /// Lets [`trust`](Self::trust) take `0.0.0.0/0` or `::/0`. Trusting
    /// every address lets any client name any address in the forwarding
    /// header, so a guard refuses to build with it unless told here: only
    /// for a service no client can reach except through its proxies.
    ///
    /// ```
    /// use floodguard::http::{ClientIpConfig, Guard};
    /// use floodguard::ConfigError;
    ///
    /// let everyone = || ClientIpConfig::new().trust("0.0.0.0/0".parse().unwrap());
    /// let err = Guard::builder().client_ip(everyone()).build().unwrap_err();
    /// assert!(matches!(err, ConfigError::TrustsEveryone { .. }));
    /// assert!(Guard::builder().client_ip(everyone().allow_trusting_everyone()).build().is_ok());
    /// ```
    #[must_use]
    pub fn allow_trusting_everyone(mut self) -> Self {
        self.everyone_allowed = true;
        self
    }

    /// Refuses a trusted prefix that holds every address, unless allowed.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self.everyone {
            Some(prefix) if !self.everyone_allowed => Err(ConfigError::TrustsEveryone {
                prefix: prefix.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Sets the header the trusted proxies write (default
    /// [`ForwardedHeader::XForwardedFor`]).
    #[must_use]
    pub fn header(mut self, h: ForwardedHeader) -> Self {
        self.header = h;
        self
    }

    /// The trusted proxy networks.
    pub fn trusted(&self) -> &PrefixSet {
        &self.trusted
    }

    /// The header that is read from trusted peers.
    pub fn forwarded_header(&self) -> ForwardedHeader {
        self.header
    }

    /// Resolve: `peer` is the TCP peer address of the connection.
    ///
    /// * Untrusted peer: the peer; no header is read.
    /// * Trusted peer, `X-Forwarded-For` or `Forwarded`: the header's lines
    ///   form one list, walked from the right past trusted addresses. The
    ///   first untrusted address is the client; if all are trusted, the
    ///   leftmost. An entry that cannot be read stops the walk at the last
    ///   trusted address seen (the peer or a trusted hop) with `malformed`
    ///   set; so does reaching the 64 (`MAX_HOPS`) cap. A `Forwarded` element
    ///   whose node is `unknown` or obfuscated, or that has no `for=`, stops
    ///   it the same way without `malformed` (those are legal). An absent or
    ///   empty header gives the peer.
    /// * Trusted peer, `X-Real-IP`: its address if it holds exactly one;
    ///   the peer with `malformed` set if it is unreadable or repeated on
    ///   several lines; the peer if absent.
    ///
    /// Never panics, whatever the header bytes.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientIp {
        let peer = ClientIp {
            ip: canonical(peer),
            source: IpSource::Peer,
            malformed: false,
        };
        if !self.trusted.contains(peer.ip) {
            return peer;
        }
        let lines = headers.get_all(self.header.as_str()).iter();
        match self.header {
            ForwardedHeader::XForwardedFor => self.walk(peer, Syntax::Xff, lines),
            ForwardedHeader::Forwarded => self.walk(peer, Syntax::Forwarded, lines),
            ForwardedHeader::XRealIp => Self::real_ip(peer, lines),
        }
    }

    /// Walks a list header's hops from the right.
    fn walk<'a>(
        &self,
        peer: ClientIp,
        syntax: Syntax,
        lines: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    ) -> ClientIp {
        let source = source_of(syntax);
        let mut nearest = peer;
        for hop in HopsRev::new(lines, syntax) {
            match hop {
                Hop::Addr(ip) => {
                    nearest = ClientIp {
                        ip,
                        source,
                        malformed: false,
                    };
                    if !self.trusted.contains(ip) {
                        break;
                    }
                }
                Hop::Unknown | Hop::Obfuscated => break,
                Hop::Malformed => {
                    nearest.malformed = true;
                    break;
                }
            }
        }
        nearest
    }

    fn real_ip<'a>(peer: ClientIp, mut lines: impl Iterator<Item = &'a HeaderValue>) -> ClientIp {
        let Some(line) = lines.next() else {
            return peer;
        };
        if lines.next().is_none() {
            if let Hop::Addr(ip) = parse_node(trim_ows(line.as_bytes()), Syntax::Xff) {
                return ClientIp {
                    ip,
                    source: IpSource::XRealIp,
                    malformed: false,
                };
            }
        }
        ClientIp {
            malformed: true,
            ..peer
        }
    }
}

/// Where a walk of `syntax`'s hops took the client address from.
fn source_of(syntax: Syntax) -> IpSource {
    match syntax {
        Syntax::Xff => IpSource::XForwardedFor,
        Syntax::Forwarded => IpSource::Forwarded,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::http::identify::forwarded::{MAX_HOPS, parse_forwarded, parse_x_forwarded_for};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(line).unwrap(),
            );
        }
        h
    }

    /// Trusts 10.0.0.0/8 and 2001:db8:ffff::/48.
    fn config(h: ForwardedHeader) -> ClientIpConfig {
        ClientIpConfig::new()
            .trust_all(["10.0.0.0/8", "2001:db8:ffff::/48"].map(|p| p.parse().unwrap()))
            .header(h)
    }

    const PROXY: &str = "10.0.0.1";

    fn source_of(h: ForwardedHeader) -> IpSource {
        match h {
            ForwardedHeader::XForwardedFor => IpSource::XForwardedFor,
            ForwardedHeader::Forwarded => IpSource::Forwarded,
            ForwardedHeader::XRealIp => IpSource::XRealIp,
        }
    }
    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;
    const XRI: ForwardedHeader = ForwardedHeader::XRealIp;

    fn resolve(h: ForwardedHeader, lines: &[&str]) -> ClientIp {
        config(h).resolve(ip(PROXY), &headers(h.as_str(), lines))
    }

    fn from(h: ForwardedHeader, addr: &str) -> ClientIp {
        ClientIp {
            ip: ip(addr),
            source: source_of(h),
            malformed: false,
        }
    }

    fn peer(addr: &str, malformed: bool) -> ClientIp {
        ClientIp {
            ip: ip(addr),
            source: IpSource::Peer,
            malformed,
        }
    }

    fn fallback(h: ForwardedHeader, addr: &str) -> ClientIp {
        ClientIp {
            malformed: true,
            ..from(h, addr)
        }
    }

    #[test]
    fn untrusted_peer_keeps_its_address() {
        let attacker = ip("203.0.113.66");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.insert("forwarded", "for=1.1.1.1".parse().unwrap());
        h.insert("x-real-ip", "1.1.1.1".parse().unwrap());
        for kind in [XFF, FWD, XRI] {
            assert_eq!(
                config(kind).resolve(attacker, &h),
                peer("203.0.113.66", false)
            );
        }
        // Trusting nobody: even a private peer is the client.
        assert_eq!(
            ClientIpConfig::new().resolve(ip(PROXY), &h),
            peer(PROXY, false)
        );
        // Mapped peers are canonicalised.
        assert_eq!(
            config(XFF).resolve(ip("::ffff:203.0.113.66"), &h),
            peer("203.0.113.66", false)
        );
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let mut h = HeaderMap::new();
        h.insert("forwarded", "for=1.1.1.1".parse().unwrap());
        h.insert("x-real-ip", "2.2.2.2".parse().unwrap());
        assert_eq!(config(XFF).resolve(ip(PROXY), &h), peer(PROXY, false));
        h.insert("x-forwarded-for", "3.3.3.3".parse().unwrap());
        assert_eq!(config(XFF).resolve(ip(PROXY), &h), from(XFF, "3.3.3.3"));
        assert_eq!(config(FWD).resolve(ip(PROXY), &h), from(FWD, "1.1.1.1"));
        assert_eq!(config(XRI).resolve(ip(PROXY), &h), from(XRI, "2.2.2.2"));
    }

    #[test]
    fn xff_chain_walks_from_the_right() {
        assert_eq!(
            resolve(XFF, &["192.0.2.1, 10.0.0.2"]),
            from(XFF, "192.0.2.1")
        );
        // A spoofed entry left of the client is never used.
        assert_eq!(
            resolve(XFF, &["6.6.6.6, 192.0.2.1, 10.0.0.2"]),
            from(XFF, "192.0.2.1")
        );
        // All trusted: the leftmost.
        assert_eq!(resolve(XFF, &["10.9.9.9, 10.0.0.2"]), from(XFF, "10.9.9.9"));
        assert_eq!(resolve(XFF, &["10.9.9.9"]), from(XFF, "10.9.9.9"));
        // Absent or empty: the peer.
        assert_eq!(resolve(XFF, &[]), peer(PROXY, false));
        assert_eq!(resolve(XFF, &[""]), peer(PROXY, false));
        assert_eq!(resolve(XFF, &[" , ,\t"]), peer(PROXY, false));
        // Empty entries are skipped.
        assert_eq!(
            resolve(XFF, &["192.0.2.1,,10.0.0.2,"]),
            from(XFF, "192.0.2.1")
        );
    }

    #[test]
    fn xff_malformed_entry_stops_the_walk() {
        // Malformed in the middle: back to the last trusted hop, never the
        // address left of it.
        assert_eq!(
            resolve(XFF, &["192.0.2.1, garbage, 10.0.0.2"]),
            fallback(XFF, "10.0.0.2")
        );
        assert_eq!(resolve(XFF, &["192.0.2.1, garbage"]), peer(PROXY, true));
        assert_eq!(resolve(XFF, &["192.0.2.1, unknown"]), peer(PROXY, true));
        // Left of the client it does not matter.
        assert_eq!(
            resolve(XFF, &["garbage, 192.0.2.1"]),
            from(XFF, "192.0.2.1")
        );
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.4:",
            "1.2.3.4:123456",
            "1.2.3.4:http",
            "[1.2.3.4]",
            "[::1",
            "::1]",
            "[::1]80",
            "[::1]:",
            "fe80::1%eth0",
            "\"1.2.3.4\"",
            "for=1.2.3.4",
            "1.2.3.4 5.6.7.8",
            "_hidden",
        ] {
            assert_eq!(resolve(XFF, &[bad]), peer(PROXY, true), "{bad:?}");
        }
    }

    #[test]
    fn xff_entry_forms() {
        for (text, want) in [
            (" 192.0.2.1 ", "192.0.2.1"),
            ("\t192.0.2.1:8080", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::ffff:192.0.2.9", "192.0.2.9"),
            ("[::ffff:192.0.2.9]:1", "192.0.2.9"),
        ] {
            assert_eq!(resolve(XFF, &[text]), from(XFF, want), "{text:?}");
        }
    }

    #[test]
    fn multiple_lines_are_one_list() {
        assert_eq!(
            resolve(XFF, &["6.6.6.6, 192.0.2.1", "10.0.0.3", "10.0.0.2"]),
            from(XFF, "192.0.2.1")
        );
        assert_eq!(
            resolve(XFF, &["192.0.2.1", "10.0.0.3, x", "10.0.0.2"]),
            fallback(XFF, "10.0.0.2")
        );
        assert_eq!(
            resolve(FWD, &["for=6.6.6.6, for=192.0.2.1", "for=10.0.0.3"]),
            from(FWD, "192.0.2.1")
        );
        // An open quote does not run into the next line.
        assert_eq!(
            resolve(FWD, &["for=\"6.6.6.6", "for=192.0.2.1"]),
            from(FWD, "192.0.2.1")
        );
        assert_eq!(
            resolve(FWD, &["for=\"6.6.6.6", "for=10.0.0.3"]),
            fallback(FWD, "10.0.0.3")
        );
    }

    #[test]
    fn mapped_addresses_are_canonical_everywhere() {
        // A mapped trusted hop is skipped; a mapped client comes out as IPv4.
        assert_eq!(
            resolve(XFF, &["::ffff:192.0.2.1, ::ffff:10.0.0.2"]),
            from(XFF, "192.0.2.1")
        );
        assert_eq!(
            resolve(
                FWD,
                &["for=\"[::ffff:192.0.2.1]:80\", for=\"[::ffff:10.0.0.2]\""]
            ),
            from(FWD, "192.0.2.1")
        );
        assert_eq!(resolve(XRI, &["::ffff:192.0.2.1"]), from(XRI, "192.0.2.1"));
        // A mapped peer is trusted through its IPv4 prefix.
        let h = headers("x-forwarded-for", &["192.0.2.1"]);
        assert_eq!(
            config(XFF).resolve(ip("::ffff:10.0.0.1"), &h),
            from(XFF, "192.0.2.1")
        );
        // IPv6 trusted ranges.
        assert_eq!(
            resolve(XFF, &["2001:db8::5, 2001:db8:ffff::1"]),
            from(XFF, "2001:db8::5")
        );
    }

    #[test]
    fn rfc7239_examples() {
        // RFC 7239 section 4 and 7.4.
        assert_eq!(resolve(FWD, &["for=\"_gazonk\""]), peer(PROXY, false));
        assert_eq!(
            resolve(FWD, &["For=\"[2001:db8:cafe::17]:4711\""]),
            from(FWD, "2001:db8:cafe::17")
        );
        assert_eq!(
            resolve(FWD, &["for=192.0.2.60;proto=http;by=203.0.113.43"]),
            from(FWD, "192.0.2.60")
        );
        assert_eq!(
            resolve(FWD, &["for=192.0.2.43, for=198.51.100.17"]),
            from(FWD, "198.51.100.17")
        );
        assert_eq!(
            resolve(FWD, &["for=192.0.2.43, for=10.0.0.17"]),
            from(FWD, "192.0.2.43")
        );
        assert_eq!(resolve(FWD, &["for=unknown"]), peer(PROXY, false));
        assert_eq!(
            resolve(
                FWD,
                &["for=192.0.2.43,for=\"[2001:db8:cafe::17]\",for=unknown"]
            ),
            peer(PROXY, false)
        );
        assert_eq!(
            resolve(FWD, &["for=192.0.2.43, for=_SEVKISEK, for=10.0.0.17"]),
            from(FWD, "10.0.0.17")
        );
    }

    #[test]
    fn forwarded_node_forms() {
        for (text, want) in [
            ("for=192.0.2.1", Hop::Addr(ip("192.0.2.1"))),
            ("FOR=\"192.0.2.1:8080\"", Hop::Addr(ip("192.0.2.1"))),
            ("for=192.0.2.1:_port", Hop::Addr(ip("192.0.2.1"))),
            ("for=\"[2001:db8::1]\"", Hop::Addr(ip("2001:db8::1"))),
            ("for=[2001:db8::1]:80", Hop::Addr(ip("2001:db8::1"))),
            ("for=\"[::1]:_abc\"", Hop::Addr(ip("::1"))),
            ("for=\"2001:db8::1\"", Hop::Addr(ip("2001:db8::1"))),
            ("for=\"\\1\\9\\2.0.2.1\"", Hop::Addr(ip("192.0.2.1"))),
            (
                " for = 192.0.2.1 ; proto=https ",
                Hop::Addr(ip("192.0.2.1")),
            ),
            (";;for=192.0.2.1;", Hop::Addr(ip("192.0.2.1"))),
            ("for=UNKNOWN", Hop::Unknown),
            ("for=unknown:80", Hop::Unknown),
            ("for=_hidden", Hop::Obfuscated),
            ("for=\"_hidden:_port\"", Hop::Obfuscated),
            ("proto=https;by=10.0.0.1", Hop::Unknown),
            ("for=192.0.2.1;for=192.0.2.2", Hop::Malformed),
            ("for=192.0.2.1;For=192.0.2.1", Hop::Malformed),
            ("for=", Hop::Malformed),
            ("for=\"\"", Hop::Malformed),
            ("for", Hop::Malformed),
            ("=192.0.2.1", Hop::Malformed),
            ("f(r=192.0.2.1", Hop::Malformed),
            ("for=192.0.2.1;proto", Hop::Malformed),
            ("for=192.0.2.1;proto=ht\"tp", Hop::Malformed),
            ("for=\"192.0.2.1", Hop::Malformed),
            ("for=192.0.2.1\"", Hop::Malformed),
            ("for=\"192.0.2.1\\\"", Hop::Malformed),
            ("for=\"19\"2.0.2.1\"", Hop::Malformed),
            ("for=\\192.0.2.1", Hop::Malformed),
            ("for=_", Hop::Malformed),
            ("for=_a!b", Hop::Malformed),
            ("for=192.0.2.1:", Hop::Malformed),
            ("for=192.0.2.1:_", Hop::Malformed),
            ("for=192.0.2.1:123456", Hop::Malformed),
            ("for=[192.0.2.1]", Hop::Malformed),
            ("for=\"[2001:db8::1]x\"", Hop::Malformed),
            ("for=192.0.2.1 192.0.2.2", Hop::Malformed),
            ("for=hostname", Hop::Malformed),
        ] {
            let h = headers("forwarded", &[text]);
            assert_eq!(parse_forwarded(h.get_all("forwarded")), [want], "{text:?}");
        }
    }

    #[test]
    fn forwarded_quoted_strings_hide_separators() {
        let h = headers(
            "forwarded",
            &[r#"for="_a,b;c";ext="x\",y;z", for=192.0.2.1;ext="\\", for=192.0.2.2;ext=",\"""#],
        );
        assert_eq!(
            parse_forwarded(h.get_all("forwarded")),
            [
                Hop::Malformed,
                Hop::Addr(ip("192.0.2.1")),
                Hop::Addr(ip("192.0.2.2"))
            ]
        );
        let h = headers("forwarded", &[r#"ext="a,b\"", for="_x\"y""#]);
        assert_eq!(
            parse_forwarded(h.get_all("forwarded")),
            [Hop::Unknown, Hop::Malformed]
        );
        let h = headers(
            "forwarded",
            &[r#"for=_a;ext="a,b;c", for="[::1]";ext="\",""#],
        );
        assert_eq!(
            parse_forwarded(h.get_all("forwarded")),
            [Hop::Obfuscated, Hop::Addr(ip("::1"))]
        );
        assert_eq!(
            resolve(FWD, &[r#"for=192.0.2.9;ext=",for=10.0.0.5", for=10.0.0.4"#]),
            from(FWD, "192.0.2.9")
        );
    }

    #[test]
    fn forwarded_walk_stops_at_unusable_elements() {
        // A malformed element: the proxy right of it, flagged.
        assert_eq!(
            resolve(FWD, &["for=192.0.2.1, for=bogus, for=10.0.0.2"]),
            fallback(FWD, "10.0.0.2")
        );
        // No `for=`: the reporting proxy, not flagged.
        assert_eq!(
            resolve(FWD, &["for=192.0.2.1, proto=http, for=10.0.0.2"]),
            from(FWD, "10.0.0.2")
        );
        // An unterminated quote left by the client swallows nothing the proxy
        // appended on the same line.
        assert_eq!(
            resolve(FWD, &["for=\"6.6.6.6, for=192.0.2.1"]),
            from(FWD, "192.0.2.1")
        );
        assert_eq!(
            resolve(FWD, &["for=\"6.6.6.6, for=10.0.0.3"]),
            fallback(FWD, "10.0.0.3")
        );
        // Empty elements, as `$http_forwarded, for=...` makes, are skipped.
        assert_eq!(resolve(FWD, &[", for=192.0.2.1"]), from(FWD, "192.0.2.1"));
        assert_eq!(resolve(FWD, &[""]), peer(PROXY, false));
    }

    #[test]
    fn x_real_ip() {
        assert_eq!(resolve(XRI, &["192.0.2.1"]), from(XRI, "192.0.2.1"));
        assert_eq!(
            resolve(XRI, &[" [2001:db8::1]:80 "]),
            from(XRI, "2001:db8::1")
        );
        assert_eq!(resolve(XRI, &["192.0.2.1:80"]), from(XRI, "192.0.2.1"));
        // Trusted or not, it is the client.
        assert_eq!(resolve(XRI, &["10.0.0.9"]), from(XRI, "10.0.0.9"));
        assert_eq!(resolve(XRI, &[]), peer(PROXY, false));
        for bad in [
            &[""][..],
            &["nope"],
            &["192.0.2.1, 192.0.2.2"],
            &["192.0.2.1", "192.0.2.2"],
        ] {
            assert_eq!(resolve(XRI, bad), peer(PROXY, true), "{bad:?}");
        }
    }

    #[test]
    fn non_visible_bytes_are_malformed() {
        for kind in [XFF, FWD, XRI] {
            let mut h = HeaderMap::new();
            let line = match kind {
                ForwardedHeader::Forwarded => &b"for=192.0.2.1\xff"[..],
                _ => b"192.0.2.1\xc3\xa9",
            };
            h.insert(kind.name(), HeaderValue::from_bytes(line).unwrap());
            assert_eq!(
                config(kind).resolve(ip(PROXY), &h),
                peer(PROXY, true),
                "{kind:?}"
            );
        }
        // Allowed in a quoted string of another parameter.
        let h: HeaderMap = [(
            ForwardedHeader::Forwarded.name(),
            HeaderValue::from_bytes(b"for=192.0.2.1;ext=\"\xff\"").unwrap(),
        )]
        .into_iter()
        .collect();
        assert_eq!(config(FWD).resolve(ip(PROXY), &h), from(FWD, "192.0.2.1"));
    }

    #[test]
    fn hop_cap() {
        // 100 trusted hops: only the rightmost MAX_HOPS are read, and the
        // walk ends, flagged, at the last of them.
        let chain: Vec<String> = (0..100).map(|i| format!("10.0.{i}.1")).collect();
        let line = chain.join(", ");
        let h = headers("x-forwarded-for", &[&line]);
        let hops = parse_x_forwarded_for(h.get_all("x-forwarded-for"));
        assert_eq!(hops.len(), MAX_HOPS + 1);
        assert_eq!(hops[0], Hop::Malformed);
        assert_eq!(hops[1], Hop::Addr(ip("10.0.36.1")));
        assert_eq!(hops[MAX_HOPS], Hop::Addr(ip("10.0.99.1")));
        assert_eq!(resolve(XFF, &[&line]), fallback(XFF, "10.0.36.1"));

        // Exactly MAX_HOPS: no marker, the leftmost is taken.
        let line = chain[36..].join(",");
        assert_eq!(
            parse_x_forwarded_for(headers("x-forwarded-for", &[&line]).get_all("x-forwarded-for"))
                .len(),
            MAX_HOPS
        );
        assert_eq!(resolve(XFF, &[&line]), from(XFF, "10.0.36.1"));
        // Empty entries beyond the cap do not count.
        let padded = format!(",,{line}");
        assert_eq!(resolve(XFF, &[&padded]), from(XFF, "10.0.36.1"));

        // An untrusted client within reach is found however long the header.
        let mut long = vec!["6.6.6.6"; 10_000];
        long.push("192.0.2.1");
        long.extend(std::iter::repeat_n("10.0.0.2", MAX_HOPS - 1));
        let line = long.join(",");
        assert_eq!(resolve(XFF, &[&line]), from(XFF, "192.0.2.1"));
        let fwd = long
            .iter()
            .map(|a| format!("for={a}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(resolve(FWD, &[&fwd]), from(FWD, "192.0.2.1"));
        // One more trusted hop puts it out of reach.
        let line = format!("{line},10.0.0.2");
        assert_eq!(resolve(XFF, &[&line]), fallback(XFF, "10.0.0.2"));

        // The cap counts across lines.
        let lines: Vec<&str> = chain.iter().map(String::as_str).collect();
        assert_eq!(resolve(XFF, &lines), fallback(XFF, "10.0.36.1"));
        let fwd: Vec<String> = chain.iter().map(|a| format!("for=\"{a}:1\"")).collect();
        let lines: Vec<&str> = fwd.iter().map(String::as_str).collect();
        assert_eq!(resolve(FWD, &lines), fallback(FWD, "10.0.36.1"));
    }

    // ---- property tests ----

    /// Header text built from pieces that look like the syntax, and raw bytes
    /// (any that a header value may hold).
    fn header_line() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => prop::sample::select(vec![
                "for=", "For=", "by=", "proto=http", ",", ", ", ";", "\"", "\\", "\\\"", "[", "]",
                ":", ":80", ":_p", " ", "\t", "unknown", "_x", "1.2.3.4", "10.0.0.7",
                "10.1.2.3", "::ffff:10.0.0.9", "::ffff:1.2.3.4", "2001:db8::1",
                "2001:db8:ffff::3", "[2001:db8::2]:80", "203.0.113.9", "::1", "0", ".",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(
                any::<u8>().prop_map(|b| if b == b'\t' || (b >= 0x20 && b != 0x7f) { b } else { b'?' }),
                0..8,
            ),
        ];
        prop::collection::vec(piece, 0..16).prop_map(|p| p.concat())
    }

    fn header_map(kind: ForwardedHeader, lines: &[Vec<u8>]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(kind.name(), HeaderValue::from_bytes(line).unwrap());
        }
        h
    }

    /// Whether `want` can be read out of `text`: some run of address
    /// characters (escapes dropped), whole or cut at a colon, parses to it.
    fn appears_in(want: IpAddr, text: &[u8]) -> bool {
        let text: Vec<u8> = text.iter().copied().filter(|&b| b != b'\\').collect();
        text.split(|&b| !(b.is_ascii_hexdigit() || b == b'.' || b == b':'))
            .filter_map(|run| std::str::from_utf8(run).ok())
            .any(|run| {
                let cuts = [
                    Some(run),
                    run.split_once(':').map(|c| c.0),
                    run.rsplit_once(':').map(|c| c.0),
                ];
                cuts.into_iter()
                    .flatten()
                    .filter_map(|s| s.parse::<IpAddr>().ok())
                    .any(|a| canonical(a) == want)
            })
    }

    /// A chain hop for the model tests.
    #[derive(Clone, Debug)]
    enum Spec {
        /// An address, written in one of several ways.
        Addr(IpAddr, u8),
        /// Unreadable.
        Junk,
        /// `unknown` / obfuscated / no `for=` (Forwarded only; junk for XFF).
        Opaque(u8),
    }

    fn spec() -> impl Strategy<Value = Spec> {
        let addr = prop::sample::select(vec![
            "10.0.0.2",
            "10.200.1.1",
            "::ffff:10.3.3.3",
            "2001:db8:ffff::9",
            "192.0.2.1",
            "198.51.100.7",
            "::ffff:203.0.113.3",
            "2001:db8::77",
            "::1",
        ])
        .prop_map(ip);
        prop_oneof![
            6 => (addr, any::<u8>()).prop_map(|(a, f)| Spec::Addr(a, f)),
            1 => Just(Spec::Junk),
            1 => any::<u8>().prop_map(Spec::Opaque),
        ]
    }

    fn render_xff(s: &Spec) -> String {
        match *s {
            Spec::Addr(IpAddr::V4(a), f) if f % 2 == 0 => format!("{a}:{f}"),
            Spec::Addr(IpAddr::V6(a), f) if f % 3 == 0 => format!("[{a}]"),
            Spec::Addr(IpAddr::V6(a), f) if f % 3 == 1 => format!("[{a}]:{f}"),
            Spec::Addr(a, _) => a.to_string(),
            Spec::Junk => "junk".into(),
            Spec::Opaque(_) => "unknown".into(),
        }
    }

    fn render_forwarded(s: &Spec) -> String {
        let node = match *s {
            Spec::Addr(IpAddr::V4(a), f) if f % 2 == 0 => format!("for=\"{a}:{f}\""),
            Spec::Addr(IpAddr::V4(a), _) => format!("for={a}"),
            Spec::Addr(IpAddr::V6(a), f) if f % 2 == 0 => format!("For=\"[{a}]:_p{f}\""),
            Spec::Addr(IpAddr::V6(a), _) => format!("for=\"[{a}]\""),
            Spec::Junk => "for=\"junk\"".into(),
            Spec::Opaque(f) => {
                ["for=unknown", "for=_hidden", "proto=https"][usize::from(f % 3)].into()
            }
        };
        match s {
            Spec::Addr(_, f) | Spec::Opaque(f) if f % 5 == 0 => {
                format!("{node};proto=\"a,b;c\\\"\"")
            }
            _ => node,
        }
    }

    /// The documented walk, over the specs.
    fn model(
        cfg: &ClientIpConfig,
        peer_ip: IpAddr,
        hops: &[Spec],
        kind: ForwardedHeader,
    ) -> ClientIp {
        let mut nearest = ClientIp {
            ip: peer_ip,
            source: IpSource::Peer,
            malformed: false,
        };
        for (i, s) in hops.iter().rev().enumerate() {
            if i == MAX_HOPS {
                nearest.malformed = true;
                break;
            }
            match (s, kind) {
                (Spec::Addr(a, _), _) => {
                    nearest = ClientIp {
                        ip: canonical(*a),
                        source: source_of(kind),
                        malformed: false,
                    };
                    if !cfg.trusted().contains(*a) {
                        break;
                    }
                }
                (Spec::Opaque(_), ForwardedHeader::Forwarded) => break,
                _ => {
                    nearest.malformed = true;
                    break;
                }
            }
        }
        nearest
    }

    proptest! {
        #[test]
        fn untrusted_peer_is_always_the_client(
            lines in prop::collection::vec(header_line(), 0..4),
            kind in prop::sample::select(vec![XFF, FWD, XRI]),
        ) {
            let h = header_map(kind, &lines);
            let attacker = ip("198.51.100.99");
            prop_assert_eq!(config(kind).resolve(attacker, &h), peer("198.51.100.99", false));
        }

        #[test]
        fn trusted_peer_result_comes_from_the_header(
            lines in prop::collection::vec(header_line(), 0..4),
            kind in prop::sample::select(vec![XFF, FWD, XRI]),
        ) {
            let h = header_map(kind, &lines);
            let got = config(kind).resolve(ip(PROXY), &h);
            if got.source == IpSource::Peer {
                prop_assert_eq!(got.ip, ip(PROXY));
            } else {
                prop_assert_eq!(got.source, source_of(kind));
                prop_assert!(!got.malformed || config(kind).trusted().contains(got.ip));
                prop_assert!(lines.iter().any(|l| appears_in(got.ip, l)), "{:?} not in the header", got);
            }
        }

        #[test]
        fn chains_resolve_as_documented(
            hops in prop::collection::vec(spec(), 0..80),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            kind in prop::sample::select(vec![XFF, FWD]),
        ) {
            let entries: Vec<String> = hops
                .iter()
                .map(|s| if kind == XFF { render_xff(s) } else { render_forwarded(s) })
                .collect();
            // Split the list over several lines at random points.
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(entries.len() + 1)).collect();
            at.sort_unstable();
            at.push(entries.len());
            let mut lines = Vec::new();
            let mut from_ = 0;
            for to in at {
                if to > from_ {
                    lines.push(entries[from_..to].join(", ").into_bytes());
                    from_ = to;
                }
            }
            let cfg = config(kind);
            let h = header_map(kind, &lines);
            prop_assert_eq!(cfg.resolve(ip(PROXY), &h), model(&cfg, ip(PROXY), &hops, kind));
        }
    }
}
