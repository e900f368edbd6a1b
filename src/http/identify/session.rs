//! An opt-in signed session cookie: stateless, keyed, bound to the
//! client's network. A browser keeps it and sends it back; a bot that
//! never does, or shares one cookie across many addresses, shows it.
//!
//! The value is 40 lowercase hex digits: the issue time in Unix minutes
//! (4 bytes, little-endian) and a SipHash-2-4 128-bit MAC, under the
//! configured key, of that time and the client's prefix (IPv4 /32, IPv6
//! /64 by default). Nothing is stored per cookie: checking one costs one
//! SipHash.

use std::hash::Hasher as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use siphasher::sip128::{Hasher128, SipHasher24};

use crate::ip::PrefixLengths;
use crate::{ConfigError, IpPrefix, Timestamp};

/// Bytes of the issue time in a value.
const TIME_LEN: usize = 4;
/// Bytes of the MAC.
const MAC_LEN: usize = 16;
/// Characters of a value: hex of the time and the MAC.
const VALUE_LEN: usize = 2 * (TIME_LEN + MAC_LEN);
/// `Cookie` headers looked at per request: a browser sends one (HTTP/2
/// may split it into several); more is hostile, and ignored.
const MAX_HEADERS: usize = 8;
/// Cookie pairs looked at per header, at most.
const MAX_PAIRS: usize = 64;
/// Cookies of our name checked per request, at most: each costs a MAC.
/// A browser holding two (one from a parent domain) sends both.
const MAX_CANDIDATES: usize = 2;
/// Minutes an issue time may lie ahead of ours (another instance of the
/// fleet with its clock a little ahead).
const FUTURE_SLACK: u64 = 2;
/// Tells this MAC apart from anything else the key might be used for.
const DOMAIN: &[u8] = b"floodguard session v1";
/// Browsers cap a cookie's life at 400 days.
const MAX_AGE_LIMIT: Duration = Duration::from_secs(400 * 24 * 3600);

/// The `SameSite` attribute of the cookie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum SameSite {
    /// Sent on same-site requests and top-level navigations (the default).
    #[default]
    Lax,
    /// Sent on same-site requests only.
    Strict,
    /// Sent on every request, cross-site ones too; needs
    /// [`SessionCookie::secure`].
    None,
}

/// The opt-in session cookie, given to
/// [`GuardBuilder::session`](crate::http::GuardBuilder::session).
///
/// The layer sets it on successful (2xx, 3xx) answers to requests that did
/// not carry a valid one (never on refusals, nor on gRPC), and checks it
/// on every request. The value is stateless: an issue time and a keyed MAC
/// of that time and the client's network, so every instance holding the
/// same key accepts it, and a restart voids nothing. Keep the key secret
/// and the same across the fleet; a new key voids every cookie.
///
/// ```
/// use std::time::Duration;
/// use floodguard::http::{SameSite, SessionCookie};
///
/// let cookie = SessionCookie::new(*b"sixteen byte key")
///     .name("__shop")
///     .max_age(Duration::from_secs(7 * 24 * 3600))
///     .secure(true)
///     .same_site(SameSite::Strict);
/// # let _ = cookie;
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use = "a session cookie does nothing until given to `GuardBuilder::session`"]
pub struct SessionCookie {
    pub(crate) key: [u8; 16],
    pub(crate) name: String,
    pub(crate) max_age: Duration,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) bind: PrefixLengths,
}

impl std::fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("SessionCookie")
            .field("name", &self.name)
            .field("max_age", &self.max_age)
            .field("secure", &self.secure)
            .field("same_site", &self.same_site)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl SessionCookie {
    /// A cookie signed with `key`: named `__fg`, good for a day,
    /// `HttpOnly; SameSite=Lax; Path=/`, not `Secure`, bound to the
    /// client's IPv4 address or IPv6 /64. Draw the key at random once
    /// (e.g. from `getrandom`) and keep it in your configuration.
    pub fn new(key: [u8; 16]) -> Self {
        SessionCookie {
            key,
            name: "__fg".to_owned(),
            max_age: Duration::from_secs(24 * 3600),
            secure: false,
            same_site: SameSite::Lax,
            bind: PrefixLengths::new(32, 64).expect("valid lengths"),
        }
    }

    /// The cookie's name (default `__fg`): letters, digits and
    /// ``!#$%&'*+-.^_`|~``, as RFC 6265 allows.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long a cookie is good for (default one day; at least a minute,
    /// at most 400 days, as browsers cap it). Sent as `Max-Age`.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Adds the `Secure` attribute (off by default): set it when clients
    /// reach the service over HTTPS only.
    pub fn secure(mut self, on: bool) -> Self {
        self.secure = on;
        self
    }

    /// The `SameSite` attribute (default [`SameSite::Lax`]).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// The network a cookie is bound to (default IPv4 /32, IPv6 /64: one
    /// host or home). IPv4 /24 lets a client whose carrier moves it
    /// within a block keep its cookie; anything wider lets a bot farm in
    /// one network share one.
    pub fn bind(mut self, lengths: PrefixLengths) -> Self {
        self.bind = lengths;
        self
    }

    /// Checks the settings and fixes the time base.
    pub(crate) fn compile(self, now: Timestamp) -> Result<Session, ConfigError> {
        let bad = |reason| Err(ConfigError::BadSessionCookie { reason });
        if self.name.is_empty() || !self.name.bytes().all(is_token) {
            return bad("the name must be a non-empty RFC 6265 token");
        }
        if self.max_age < Duration::from_secs(60) || self.max_age > MAX_AGE_LIMIT {
            return bad("max_age must be from a minute to 400 days");
        }
        if self.same_site == SameSite::None && !self.secure {
            return bad("SameSite=None needs `secure(true)`: browsers drop it otherwise");
        }
        let same_site = match self.same_site {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        };
        let secure = if self.secure { "; Secure" } else { "" };
        let attributes = format!(
            "; Max-Age={}; Path=/; HttpOnly; SameSite={same_site}{secure}",
            self.max_age.as_secs()
        );
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Ok(Session {
            key: self.key,
            name: self.name.into_boxed_str(),
            attributes: attributes.into_boxed_str(),
            max_age_minutes: self.max_age.as_secs() / 60,
            bind: self.bind,
            unix_at_base: unix,
            base: now,
        })
    }
}

/// Counters of the session cookie, in
/// [`GuardStats::session`](crate::http::GuardStats::session).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Requests that carried a valid cookie.
    pub valid: u64,
    /// Requests that carried a cookie of the name that is not valid for
    /// their client: forged, malformed, expired, or from another network.
    pub invalid: u64,
    /// Cookies sent (`Set-Cookie` on a successful answer).
    pub issued: u64,
    /// Clients found not returning the cookie: sent it, and back three
    /// times without it (with scoring on; counted once per client while
    /// it is remembered).
    pub not_returned: u64,
}

/// RFC 6265's cookie-name characters (an RFC 7230 token).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a request showed of a session cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No cookie of our name.
    Absent,
    /// A cookie we issued to this client's network, not expired.
    Valid,
    /// A cookie of our name that is not: forged, malformed, expired, or
    /// issued to another network.
    Invalid,
}

/// A [`SessionCookie`] ready for requests.
pub(crate) struct Session {
    key: [u8; 16],
    name: Box<str>,
    /// What follows the value in `Set-Cookie`.
    attributes: Box<str>,
    max_age_minutes: u64,
    bind: PrefixLengths,
    /// Unix seconds when the guard's clock read `base`: issue times are
    /// wall-clock minutes, so cookies outlive a restart and cross a fleet,
    /// while tests on a manual clock still move them.
    unix_at_base: u64,
    base: Timestamp,
}

impl Session {
    /// Unix minutes at `now` on the guard's clock.
    fn minutes(&self, now: Timestamp) -> u64 {
        (self.unix_at_base + now.saturating_duration_since(self.base).as_secs()) / 60
    }

    /// The MAC of an issue time for a client at `ip`.
    fn mac(&self, minutes: u32, ip: IpAddr) -> [u8; MAC_LEN] {
        let prefix = IpPrefix::of(ip, self.bind);
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write(DOMAIN);
        h.write(&minutes.to_le_bytes());
        match prefix.network() {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        h.write_u8(prefix.len());
        h.finish128().as_bytes()
    }

    /// A fresh value for a client at `ip`.
    fn value(&self, ip: IpAddr, now: Timestamp) -> [u8; VALUE_LEN] {
        let minutes = u32::try_from(self.minutes(now)).unwrap_or(u32::MAX);
        let mut raw = [0u8; TIME_LEN + MAC_LEN];
        raw[..TIME_LEN].copy_from_slice(&minutes.to_le_bytes());
        raw[TIME_LEN..].copy_from_slice(&self.mac(minutes, ip));
        let mut out = [0u8; VALUE_LEN];
        for (i, b) in raw.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        out
    }

    /// The `Set-Cookie` header for a client at `ip`: the one allocation
    /// sessions make.
    pub(crate) fn set_cookie(&self, ip: IpAddr, now: Timestamp) -> HeaderValue {
        let value = self.value(ip, now);
        let mut s = String::with_capacity(self.name.len() + 1 + VALUE_LEN + self.attributes.len());
        s.push_str(&self.name);
        s.push('=');
        // Hex digits are ASCII.
        s.extend(value.iter().map(|&b| char::from(b)));
        s.push_str(&self.attributes);
        HeaderValue::try_from(s).expect("a token, hex and fixed attributes are a valid header")
    }

    /// Whether `value` is a cookie issued to `ip`'s network, not expired.
    fn verify(&self, value: &[u8], ip: IpAddr, now: Timestamp) -> bool {
        let Some(raw) = decode(value) else {
            return false;
        };
        let minutes = u32::from_le_bytes(raw[..TIME_LEN].try_into().expect("4 bytes"));
        let now = self.minutes(now);
        let issued = u64::from(minutes);
        // One minute of grace: issue times are rounded down to the minute.
        if issued > now + FUTURE_SLACK || now.saturating_sub(issued) > self.max_age_minutes + 1 {
            return false;
        }
        let mac = self.mac(minutes, ip);
        // Every byte compared, whatever differs: how long the check takes
        // tells nothing of how much of a forged MAC was right.
        let diff = mac
            .iter()
            .zip(&raw[TIME_LEN..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// What the request's `Cookie` headers show of a session for a client
    /// at `ip`. Bounded on hostile input: a few headers, a few dozen pairs
    /// each, two candidates; nothing allocated.
    pub(crate) fn check(&self, headers: &HeaderMap, ip: IpAddr, now: Timestamp) -> Presented {
        let name = self.name.as_bytes();
        let mut seen = Presented::Absent;
        let mut candidates = 0;
        for header in headers.get_all(COOKIE).iter().take(MAX_HEADERS) {
            for pair in header.as_bytes().split(|&b| b == b';').take(MAX_PAIRS) {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                    continue;
                };
                if pair[..eq].trim_ascii() != name {
                    continue;
                }
                if self.verify(pair[eq + 1..].trim_ascii(), ip, now) {
                    return Presented::Valid;
                }
                seen = Presented::Invalid;
                candidates += 1;
                if candidates == MAX_CANDIDATES {
                    return seen;
                }
            }
        }
        seen
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The bytes of a value: exactly [`VALUE_LEN`] lowercase hex digits.
fn decode(value: &[u8]) -> Option<[u8; TIME_LEN + MAC_LEN]> {
    if value.len() != VALUE_LEN {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; TIME_LEN + MAC_LEN];
    for (o, pair) in out.iter_mut().zip(value.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: [u8; 16] = *b"0123456789abcdef";

    fn session() -> Session {
        SessionCookie::new(KEY).compile(Timestamp::ZERO).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mins(m: u64) -> Timestamp {
        Timestamp::from_nanos(m * 60_000_000_000)
    }

    /// The value of a `Set-Cookie` header.
    fn value_of(set: &HeaderValue) -> String {
        let s = set.to_str().unwrap();
        let (pair, _) = s.split_once(';').unwrap();
        pair.split_once('=').unwrap().1.to_owned()
    }

    fn cookie(headers: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in headers {
            h.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_cookie_round_trips_for_its_network_only() {
        let s = session();
        let me = ip("192.0.2.7");
        let set = s.set_cookie(me, mins(0));
        let text = set.to_str().unwrap();
        assert!(text.starts_with("__fg="), "{text}");
        assert!(text.ends_with("; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax"));
        let v = value_of(&set);
        assert_eq!(v.len(), VALUE_LEN);
        let h = cookie(&[&format!("a=1; __fg={v}; b=2")]);
        assert_eq!(s.check(&h, me, mins(5)), Presented::Valid);
        // Another IPv4 address is another client.
        assert_eq!(s.check(&h, ip("192.0.2.8"), mins(5)), Presented::Invalid);
        // Without the cookie, nothing to say.
        assert_eq!(s.check(&cookie(&["a=1"]), me, mins(5)), Presented::Absent);
        assert_eq!(s.check(&HeaderMap::new(), me, mins(5)), Presented::Absent);
    }

    #[test]
    fn one_ipv6_subscriber_keeps_its_cookie_across_its_64() {
        let s = session();
        let v = value_of(&s.set_cookie(ip("2001:db8:1:2::5"), mins(0)));
        let h = cookie(&[&format!("__fg={v}")]);
        assert_eq!(
            s.check(&h, ip("2001:db8:1:2:aaaa::9"), mins(1)),
            Presented::Valid
        );
        assert_eq!(
            s.check(&h, ip("2001:db8:1:3::5"), mins(1)),
            Presented::Invalid
        );
        // A /24 binding does the same for IPv4.
        let wide = SessionCookie::new(KEY)
            .bind(PrefixLengths::new(24, 64).unwrap())
            .compile(Timestamp::ZERO)
            .unwrap();
        let v = value_of(&wide.set_cookie(ip("192.0.2.7"), mins(0)));
        let h = cookie(&[&format!("__fg={v}")]);
        assert_eq!(wide.check(&h, ip("192.0.2.200"), mins(0)), Presented::Valid);
        assert_eq!(wide.check(&h, ip("192.0.3.7"), mins(0)), Presented::Invalid);
    }

    #[test]
    fn tampered_expired_and_foreign_cookies_are_invalid() {
        let s = session();
        let me = ip("192.0.2.7");
        let v = value_of(&s.set_cookie(me, mins(10)));
        // Each digit changed in turn.
        for i in 0..VALUE_LEN {
            let mut t = v.clone().into_bytes();
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            let h = cookie(&[&format!("__fg={}", String::from_utf8(t).unwrap())]);
            assert_eq!(s.check(&h, me, mins(11)), Presented::Invalid, "digit {i}");
        }
        let h = cookie(&[&format!("__fg={v}")]);
        // A day and the minute of grace, then expired.
        assert_eq!(s.check(&h, me, mins(10 + 1440 + 1)), Presented::Valid);
        assert_eq!(s.check(&h, me, mins(10 + 1440 + 2)), Presented::Invalid);
        // Issued far in the future (a guess at a time, or a clock off).
        assert_eq!(s.check(&h, me, mins(0)), Presented::Invalid);
        // Another key's cookie.
        let other = SessionCookie::new([7; 16])
            .compile(Timestamp::ZERO)
            .unwrap();
        let v2 = value_of(&other.set_cookie(me, mins(10)));
        let h = cookie(&[&format!("__fg={v2}")]);
        assert_eq!(s.check(&h, me, mins(10)), Presented::Invalid);
        // Upper-case hex is not what we issue.
        let h = cookie(&[&format!("__fg={}", v.to_uppercase())]);
        assert_eq!(s.check(&h, me, mins(10)), Presented::Invalid);
    }

    #[test]
    fn a_valid_cookie_is_found_among_bad_ones_and_headers() {
        let s = session();
        let me = ip("192.0.2.7");
        let v = value_of(&s.set_cookie(me, mins(0)));
        let h = cookie(&["__fg=junk; x=1", &format!("y=2;__fg = {v} ")]);
        assert_eq!(s.check(&h, me, mins(0)), Presented::Valid);
        // Past the candidates checked, it is not looked at.
        let h = cookie(&[&format!("__fg=a; __fg=b; __fg={v}")]);
        assert_eq!(s.check(&h, me, mins(0)), Presented::Invalid);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |c: SessionCookie| c.compile(Timestamp::ZERO).is_err();
        assert!(bad(SessionCookie::new(KEY).name("")));
        assert!(bad(SessionCookie::new(KEY).name("a b")));
        assert!(bad(SessionCookie::new(KEY).name("a=b")));
        assert!(bad(SessionCookie::new(KEY).max_age(Duration::from_secs(59))));
        assert!(bad(
            SessionCookie::new(KEY).max_age(Duration::from_secs(401 * 24 * 3600))
        ));
        assert!(bad(SessionCookie::new(KEY).same_site(SameSite::None)));
        let ok = SessionCookie::new(KEY)
            .same_site(SameSite::None)
            .secure(true)
            .compile(Timestamp::ZERO)
            .unwrap();
        let set = ok.set_cookie(ip("192.0.2.1"), mins(0));
        assert!(set.to_str().unwrap().ends_with("SameSite=None; Secure"));
        // The key never shows in logs.
        let dbg = format!("{:?}", SessionCookie::new(KEY));
        assert!(
            !dbg.contains("0123456789abcdef") && !dbg.contains("48"),
            "{dbg}"
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics_and_is_never_valid(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..12),
            prefix in proptest::collection::vec(any::<u8>(), 0..VALUE_LEN + 4),
        ) {
            let s = session();
            let me = ip("192.0.2.7");
            let mut h = HeaderMap::new();
            for v in &values {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    h.append(COOKIE, v);
                }
            }
            prop_assert_ne!(s.check(&h, me, mins(3)), Presented::Valid);
            // Near-misses of the right shape too.
            let mut v = String::from("__fg=");
            v.extend(prefix.iter().map(|b| char::from(HEX[usize::from(b & 15)])));
            let h = cookie(&[&v]);
            prop_assert_ne!(s.check(&h, me, mins(3)), Presented::Valid);
        }
    }
}
