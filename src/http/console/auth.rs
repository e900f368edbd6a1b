//! Who may use the console: the operator's token, checked in constant
//! time; the session cookie it is exchanged for (HttpOnly,
//! SameSite=Strict), signed with a key drawn at start; and the CSRF value
//! each session's actions must carry in a header.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use siphasher::sip128::{Hasher128, SipHasher24};

use crate::{ConfigError, hex16};

/// The session cookie's name.
pub(super) const COOKIE_NAME: &str = "floodguard_console";
/// The header a session's actions carry its CSRF value in.
pub(crate) const CSRF_HEADER: &str = "x-floodguard-csrf";
/// How long a session lasts.
pub(super) const SESSION_LIFE: Duration = Duration::from_secs(12 * 3600);
/// The shortest token accepted: 16 characters of the URL-safe alphabet
/// hold 96 bits or more when drawn at random.
pub(super) const MIN_TOKEN: usize = 16;
const MAX_TOKEN: usize = 256;

/// Whether `token` is acceptable: 16 to 256 characters of
/// `A-Z a-z 0-9 - . _ ~`, so that it goes into a URL as it is.
pub(super) fn check_token(token: &str) -> Result<(), ConfigError> {
    let ok_chars = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !(MIN_TOKEN..=MAX_TOKEN).contains(&token.len()) || !ok_chars {
        return Err(ConfigError::OutOfRange {
            field: "token",
            value: if ok_chars {
                format!("{} characters", token.len())
            } else {
                "a string with characters outside A-Z a-z 0-9 - . _ ~".into()
            },
            range: "16 to 256 characters of A-Z a-z 0-9 - . _ ~ (e.g. 32 random hex digits)",
        });
    }
    Ok(())
}

/// Equality in time that depends on the lengths only, not on where the
/// first difference is.
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The console's secrets: the operator's token and the key sessions are
/// signed with.
pub(super) struct Auth {
    token: String,
    key: [u8; 16],
}

/// What a request proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Caller {
    /// Nothing: no token, a wrong one, or no valid session.
    Nobody,
    /// The token in an `Authorization: Bearer` header: a program, which
    /// no other site can make a browser send (no CSRF check).
    Bearer,
    /// A browser session, by its cookie: actions need its CSRF value.
    Session([u8; 16]),
}

impl Auth {
    pub(super) fn new(token: String) -> Result<Auth, ConfigError> {
        check_token(&token)?;
        let mut key = [0u8; 16];
        // The operating system's generator; without one, no console (a
        // guessable key would let anyone forge a session).
        getrandom::fill(&mut key).map_err(|_| ConfigError::OutOfRange {
            field: "token",
            value: "no random source for the session key".into(),
            range: "a system with getrandom",
        })?;
        Ok(Auth { token, key })
    }

    /// Whether `given` is the token.
    pub(super) fn token_is(&self, given: &str) -> bool {
        ct_eq(given.as_bytes(), self.token.as_bytes())
    }

    /// Who sent a request with these headers.
    pub(super) fn caller(&self, headers: &HeaderMap) -> Caller {
        if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            if let Some(t) = v.strip_prefix("Bearer ") {
                return if self.token_is(t.trim()) {
                    Caller::Bearer
                } else {
                    Caller::Nobody
                };
            }
        }
        for v in headers.get_all(COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for pair in v.split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name == COOKIE_NAME {
                    if let Some(id) = self.session(value, now_secs()) {
                        return Caller::Session(id);
                    }
                }
            }
        }
        Caller::Nobody
    }

    /// A new session's cookie value: a random id, its expiry (Unix
    /// seconds) and their MAC, in hex.
    pub(super) fn new_session(&self) -> String {
        let mut id = [0u8; 16];
        if getrandom::fill(&mut id).is_err() {
            // Unreachable in practice (the key was drawn the same way);
            // the MAC still binds the id, and the expiry varies it.
            id = self.mac(b"fallback", &now_secs().to_le_bytes());
        }
        self.session_value(id, now_secs() + SESSION_LIFE.as_secs())
    }

    fn session_value(&self, id: [u8; 16], expires: u64) -> String {
        let mac = self.mac(&id, &expires.to_le_bytes());
        format!("{}.{expires:x}.{}", hex16::encode(&id), hex16::encode(&mac))
    }

    /// The session id in a cookie value, if its MAC holds and it has not
    /// expired.
    fn session(&self, value: &str, now: u64) -> Option<[u8; 16]> {
        let mut parts = value.split('.');
        let (id, expires, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let id = hex16::decode(id)?;
        let expires = u64::from_str_radix(expires, 16).ok()?;
        let mac = hex16::decode(mac)?;
        let ok = ct_eq(&mac, &self.mac(&id, &expires.to_le_bytes()));
        (ok && parts.next().is_none() && now < expires).then_some(id)
    }

    /// A session's CSRF value: its id's MAC under another label, so it is
    /// not the cookie and cannot be made without the key.
    pub(super) fn csrf(&self, session: &[u8; 16]) -> String {
        hex16::encode(&self.mac(b"csrf", session))
    }

    /// Whether a state-changing request from a browser session is the
    /// console's own: it carries the session's CSRF value, and the
    /// browser says it comes from this origin. `Err` says why not.
    pub(super) fn check_action(
        &self,
        caller: Caller,
        headers: &HeaderMap,
    ) -> Result<(), &'static str> {
        let session = match caller {
            Caller::Nobody => return Err("no session"),
            Caller::Bearer => return Ok(()),
            Caller::Session(id) => id,
        };
        if let Some(site) = headers.get("sec-fetch-site") {
            if site.as_bytes() != b"same-origin" {
                return Err("the request comes from another site (Sec-Fetch-Site)");
            }
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let host = headers.get(HOST).map(|h| h.as_bytes());
            let authority = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .map(|(_, a)| a.as_bytes());
            if authority.is_none() || authority != host {
                return Err("the request's Origin is not this console's");
            }
        }
        let given = headers.get(CSRF_HEADER).map_or(&b""[..], |v| v.as_bytes());
        if !ct_eq(given, self.csrf(&session).as_bytes()) {
            return Err("missing or wrong X-Floodguard-Csrf header");
        }
        Ok(())
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> [u8; 16] {
        let mut h = SipHasher24::new_with_key(&self.key);
        std::hash::Hasher::write(&mut h, &(label.len() as u64).to_le_bytes());
        std::hash::Hasher::write(&mut h, label);
        std::hash::Hasher::write(&mut h, data);
        h.finish128().as_bytes()
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tokens_must_be_long_and_url_safe() {
        assert!(check_token(TOKEN).is_ok());
        for bad in ["", "short", "0123456789abcde", "0123456789abcdef/+"] {
            let e = check_token(bad).unwrap_err().to_string();
            assert!(e.contains("token") && e.contains("16 to 256"), "{e}");
        }
        assert!(check_token(&"a".repeat(257)).is_err());
    }

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn sessions_are_signed_and_expire() {
        let auth = Auth::new(TOKEN.into()).unwrap();
        let value = auth.new_session();
        let cookie = format!("other=1; {COOKIE_NAME}={value}");
        let Caller::Session(id) = auth.caller(&headers(&[("cookie", &cookie)])) else {
            panic!("a fresh session is valid");
        };
        // Another console's key, a changed MAC or expiry, an old session:
        // nobody.
        let other = Auth::new(TOKEN.into()).unwrap();
        assert_eq!(
            other.caller(&headers(&[("cookie", &cookie)])),
            Caller::Nobody
        );
        let mut forged = value.clone();
        forged.replace_range(forged.len() - 1.., "0");
        if forged == value {
            forged.replace_range(forged.len() - 1.., "1");
        }
        assert_eq!(auth.session(&forged, now_secs()), None);
        let later = auth.session_value(id, now_secs() + 10);
        assert_eq!(auth.session(&later, now_secs()), Some(id));
        assert_eq!(auth.session(&later, now_secs() + 11), None);
        let extended = later.replacen(&format!("{:x}", now_secs() + 10), "ffffffff", 1);
        assert_eq!(auth.session(&extended, now_secs()), None);
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let auth = Auth::new(TOKEN.into()).unwrap();
        let ok = format!("Bearer {TOKEN}");
        assert_eq!(
            auth.caller(&headers(&[("authorization", &ok)])),
            Caller::Bearer
        );
        assert_eq!(
            auth.caller(&headers(&[(
                "authorization",
                "Bearer 0123456789abcdef0124"
            )])),
            Caller::Nobody
        );
        assert_eq!(auth.caller(&HeaderMap::new()), Caller::Nobody);
    }

    #[test]
    fn actions_need_the_csrf_value_and_this_origin() {
        let auth = Auth::new(TOKEN.into()).unwrap();
        let id = [7u8; 16];
        let caller = Caller::Session(id);
        let csrf = auth.csrf(&id);
        let good = [
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9000"),
            ("sec-fetch-site", "same-origin"),
            (CSRF_HEADER, csrf.as_str()),
        ];
        assert_eq!(auth.check_action(caller, &headers(&good)), Ok(()));
        // Without the header, with another session's, from another site
        // or origin: refused, saying why.
        let without: Vec<_> = good[..3].to_vec();
        assert!(
            auth.check_action(caller, &headers(&without))
                .unwrap_err()
                .contains("Csrf")
        );
        let other = auth.csrf(&[8u8; 16]);
        let mut wrong = good.to_vec();
        wrong[3] = (CSRF_HEADER, &other);
        assert!(auth.check_action(caller, &headers(&wrong)).is_err());
        let mut cross = good.to_vec();
        cross[2] = ("sec-fetch-site", "cross-site");
        assert!(
            auth.check_action(caller, &headers(&cross))
                .unwrap_err()
                .contains("another site")
        );
        let mut evil = good.to_vec();
        evil[1] = ("origin", "http://evil.example");
        assert!(
            auth.check_action(caller, &headers(&evil))
                .unwrap_err()
                .contains("Origin")
        );
        assert!(auth.check_action(Caller::Nobody, &headers(&good)).is_err());
        assert_eq!(auth.check_action(Caller::Bearer, &HeaderMap::new()), Ok(()));
    }
}
