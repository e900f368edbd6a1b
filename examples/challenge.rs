//! A stateless proof-of-work challenge for the scoring ladder, and a demo
//! shop behind it.
//!
//! ```text
//! cargo run --release --example challenge --features axum                   # self-test, then exit
//! cargo run --release --example challenge --features axum -- serve [ADDR]   # for a browser (127.0.0.1:3000)
//! ```
//!
//! A client whose score reaches the ladder's challenge threshold gets a
//! small HTML page instead of the shop. The page carries a token,
//! `expiry.nonce.mac`: a Unix time, 12 random bytes and an HMAC-SHA-256,
//! under a secret drawn at start, of the client's address, the expiry and
//! the nonce. Its script looks for a counter such that
//! SHA-256(`token.counter`) starts with `difficulty` zero bits (16: about
//! 65,000 hashes, under a second in a browser), sets the cookie
//! `fg_pow=token.counter` and reloads. [`ProofOfWork::verify`] checks the
//! cookie's shape and lengths, the expiry, the MAC (in constant time; it
//! also binds the token to the client) and the zero bits. The server
//! keeps nothing per client: a solved cookie is good for its address until
//! it expires, and a restart (a new secret) voids every cookie.
//!
//! The self-test serves the shop over the floodguard gate on 127.0.0.1
//! and plays a suspicious client over raw HTTP/1.1 from 127.0.0.21: no
//! user agent, two missing pages, then the challenge page; it solves the
//! puzzle as the page's script would, gets in with the cookie, and then
//! tries forged cookies (wrong MAC, another address, expired, too little
//! work, malformed), which are all refused. Last, `verify` is fed
//! malformed and mutated cookies in-process. Every network step has a
//! timeout; the whole test takes well under a second in release mode.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{ConnectInfo, Extension, Path, Request};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use floodguard::http::{
    Challenge, ChallengePage, GateConnectInfo, Guard, GuardDecision, Ladder, Scoring, Weights,
};
use hmac::{Hmac, KeyInit, Mac};
use http::header::COOKIE;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

// ---------------------------------------------------------------------------
// The challenge

/// The cookie that carries a solved challenge.
const COOKIE_NAME: &str = "fg_pow";
/// Random bytes in a token.
const NONCE_LEN: usize = 12;
/// Bytes of an HMAC-SHA-256.
const MAC_LEN: usize = 32;
/// Most digits of the expiry and the counter (a `u64` has 20).
const MAX_DIGITS: usize = 20;
/// The longest cookie value `expiry.nonce.mac.counter` there can be.
const MAX_VALUE: usize = MAX_DIGITS + 1 + 2 * NONCE_LEN + 1 + 2 * MAC_LEN + 1 + MAX_DIGITS;
/// `fg_pow` cookies looked at per request, at most: each costs an HMAC
/// and a hash, and a browser sends one.
const MAX_CANDIDATES: usize = 4;
/// Most zero bits a difficulty may ask for: 2^28 hashes is minutes of a
/// browser's time already.
const MAX_DIFFICULTY: u32 = 28;
/// Tells this MAC apart from anything else the secret might key.
const DOMAIN: &[u8] = b"floodguard proof-of-work v1";

/// A proof-of-work [`Challenge`]: stateless, the secret in the keyed MAC
/// is all it holds. Clones share the secret.
#[derive(Clone)]
pub struct ProofOfWork {
    /// HMAC-SHA-256 keyed with the secret, cloned per token.
    key: Hmac<Sha256>,
    difficulty: u32,
    ttl: Duration,
}

/// Why a cookie was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not `expiry.nonce.mac.counter` in canonical form (decimal without
    /// leading zeros, lower-case hex of the right lengths).
    Malformed,
    /// Past its expiry.
    Expired,
    /// The MAC does not match: forged, or issued to another client.
    BadMac,
    /// SHA-256 of the cookie value has too few leading zero bits.
    TooLittleWork,
}

impl ProofOfWork {
    /// A challenge asking for `difficulty` leading zero bits (1 to 28;
    /// each one doubles the work), whose tokens are good for `ttl`, under
    /// a secret drawn from the operating system.
    ///
    /// # Panics
    ///
    /// On a difficulty outside 1..=28 (a configuration mistake).
    pub fn new(difficulty: u32, ttl: Duration) -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(Self::with_secret(&secret, difficulty, ttl))
    }

    /// The same with a given secret; servers that share one accept each
    /// other's cookies.
    pub fn with_secret(secret: &[u8; 32], difficulty: u32, ttl: Duration) -> Self {
        assert!(
            (1..=MAX_DIFFICULTY).contains(&difficulty),
            "difficulty {difficulty} is not in 1..={MAX_DIFFICULTY}"
        );
        let key = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        ProofOfWork {
            key,
            difficulty,
            ttl,
        }
    }

    /// The MAC of a token: the client's address (an IPv4 address, or the
    /// /64 of an IPv6 one, as the guard scores clients), expiry and nonce.
    fn mac(&self, client: IpAddr, expiry: u64, nonce: &[u8; NONCE_LEN]) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        mac.update(DOMAIN);
        match client.to_canonical() {
            IpAddr::V4(v4) => {
                mac.update(&[4]);
                mac.update(&v4.octets());
            }
            IpAddr::V6(v6) => {
                mac.update(&[6]);
                mac.update(&v6.octets()[..8]);
            }
        }
        mac.update(&expiry.to_be_bytes());
        mac.update(nonce);
        mac
    }

    /// A token for `client` that expires at `expiry` (Unix seconds).
    pub fn token(&self, client: IpAddr, expiry: u64) -> String {
        // The nonce makes each puzzle new; the MAC carries the security,
        // so a failed read (getrandom read the secret already) leaves
        // zeros without harm.
        let mut nonce = [0u8; NONCE_LEN];
        let _ = getrandom::fill(&mut nonce);
        let mac = self.mac(client, expiry, &nonce).finalize().into_bytes();
        format!("{expiry}.{}.{}", hex(&nonce), hex(&mac))
    }

    /// Checks one cookie value, `token.counter`, for `client` at `now`
    /// (Unix seconds).
    pub fn check(&self, value: &str, client: IpAddr, now: u64) -> Result<(), Refused> {
        let cookie = Cookie::parse(value).ok_or(Refused::Malformed)?;
        if cookie.expiry <= now {
            return Err(Refused::Expired);
        }
        self.mac(client, cookie.expiry, &cookie.nonce)
            .verify_slice(&cookie.mac)
            .map_err(|_| Refused::BadMac)?;
        if leading_zero_bits(&Sha256::digest(value.as_bytes())) < self.difficulty {
            return Err(Refused::TooLittleWork);
        }
        Ok(())
    }
}

impl Challenge for ProofOfWork {
    fn verify(&self, parts: &Parts, client: IpAddr) -> bool {
        let now = unix_now();
        pow_cookies(&parts.headers)
            .take(MAX_CANDIDATES)
            .any(|value| self.check(value, client, now).is_ok())
    }

    fn issue(&self, _parts: &Parts, client: IpAddr) -> ChallengePage {
        let ttl = self.ttl.as_secs().max(1);
        let token = self.token(client, unix_now().saturating_add(ttl));
        ChallengePage::new(
            PAGE.replace("__TOKEN__", &token)
                .replace("__BITS__", &self.difficulty.to_string())
                .replace("__MAX_AGE__", &ttl.to_string()),
        )
    }
}

/// The values of every `fg_pow` cookie in the request's `Cookie` headers
/// (HTTP/2 may split cookies over several), in order.
fn pow_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name.trim() == COOKIE_NAME).then(|| value.trim())
        })
}

/// A cookie value taken apart.
struct Cookie {
    expiry: u64,
    nonce: [u8; NONCE_LEN],
    mac: [u8; MAC_LEN],
}

impl Cookie {
    /// `expiry.nonce.mac.counter`, in canonical form, or `None`.
    fn parse(value: &str) -> Option<Cookie> {
        if value.len() > MAX_VALUE {
            return None;
        }
        let mut fields = value.split('.');
        let (expiry, nonce, mac, counter) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if fields.next().is_some() {
            return None;
        }
        // The counter's value does not matter, only its hash; requiring it
        // canonical gives each counter one spelling.
        decimal(counter)?;
        Some(Cookie {
            expiry: decimal(expiry)?,
            nonce: unhex(nonce)?,
            mac: unhex(mac)?,
        })
    }
}

/// A `u64` in decimal without sign or leading zeros.
fn decimal(s: &str) -> Option<u64> {
    let canonical = (1..=MAX_DIGITS).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// Exactly `N` bytes in lower-case hex.
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let &[hi, lo] = pair else { return None };
        *o = (nibble(hi)? << 4) | nibble(lo)?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut n = 0;
    for &b in hash {
        if b != 0 {
            return n + b.leading_zeros();
        }
        n += 8;
    }
    n
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The challenge page. Its script hashes with WebCrypto where the page is
/// a secure context (HTTPS, or localhost), and with a small SHA-256 of its
/// own elsewhere (plain HTTP), where `crypto.subtle` does not exist.
const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>One moment</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:4em auto;padding:0 1em;color:#222}</style>
</head><body>
<h1>One moment</h1>
<p id="status">Your browser is doing a little arithmetic to show that it is not a flood of requests. This takes about a second.</p>
<noscript><p>This check needs JavaScript. Please enable it and reload.</p></noscript>
<script>
"use strict";
// SHA-256 (FIPS 180-4) for pages without WebCrypto. The constants are the
// fractional bits of the cube (k) and square (h0) roots of the first primes.
const sha256js = (() => {
  const frac = (x) => ((x - Math.floor(x)) * 4294967296) | 0;
  const primes = [];
  for (let n = 2; primes.length < 64; n++) if (primes.every((p) => n % p !== 0)) primes.push(n);
  const k = Int32Array.from(primes, (p) => frac(Math.cbrt(p)));
  const h0 = Int32Array.from(primes.slice(0, 8), (p) => frac(Math.sqrt(p)));
  const ror = (x, n) => (x >>> n) | (x << (32 - n));
  const w = new Int32Array(64);
  return (bytes) => {
    const h = h0.slice();
    const length = Math.ceil((bytes.length + 9) / 64) * 64;
    const m = new Uint8Array(length);
    m.set(bytes);
    m[bytes.length] = 0x80;
    const view = new DataView(m.buffer);
    view.setUint32(length - 8, Math.floor(bytes.length / 536870912));
    view.setUint32(length - 4, (bytes.length * 8) >>> 0);
    for (let off = 0; off < length; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + 4 * i);
      for (let i = 16; i < 64; i++) {
        const a = w[i - 15], b = w[i - 2];
        const s0 = ror(a, 7) ^ ror(a, 18) ^ (a >>> 3);
        const s1 = ror(b, 17) ^ ror(b, 19) ^ (b >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = (hh + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i]) | 0;
        const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        hh = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      [a, b, c, d, e, f, g, hh].forEach((x, i) => { h[i] = (h[i] + x) | 0; });
    }
    const out = new Uint8Array(32);
    const o = new DataView(out.buffer);
    h.forEach((x, i) => o.setUint32(4 * i, x >>> 0));
    return out;
  };
})();

// Finds a counter such that SHA-256("token.counter") has `bits` leading
// zero bits, sets the cookie and reloads.
(async () => {
  const token = "__TOKEN__", bits = __BITS__, maxAge = __MAX_AGE__;
  const status = document.getElementById("status");
  const utf8 = new TextEncoder();
  const zeroBits = (h) => {
    let n = 0;
    for (const b of h) { if (b !== 0) return n + Math.clz32(b) - 24; n += 8; }
    return n;
  };
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  const sha256 = subtle
    ? async (s) => new Uint8Array(await subtle.digest("SHA-256", utf8.encode(s)))
    : async (s) => sha256js(utf8.encode(s));
  const started = Date.now();
  const batch = 1024;
  for (let from = 0; ; from += batch) {
    const work = [];
    for (let c = from; c < from + batch; c++) work.push(sha256(token + "." + c));
    const hashes = await Promise.all(work);
    const i = hashes.findIndex((h) => zeroBits(h) >= bits);
    if (i >= 0) {
      const secure = location.protocol === "https:" ? "; Secure" : "";
      document.cookie = `fg_pow=${token}.${from + i}; Max-Age=${maxAge}; Path=/; SameSite=Lax${secure}`;
      status.textContent = `Done in ${Date.now() - started} ms. Loading the page...`;
      location.reload();
      return;
    }
  }
})().catch((e) => {
  document.getElementById("status").textContent = "The check failed: " + e;
});
</script>
</body></html>
"#;

// ---------------------------------------------------------------------------
// The demo shop

/// The guard: default rules, and a ladder that challenges a client after a
/// couple of missing pages. The defaults are throttle 40, challenge 60,
/// ban 80 and 6 points a 404; here a 404 is worth 10 (a shop without
/// dead links), and 45 to 90 is the challenge's band. A client with no
/// user agent and no `Accept` starts at 34 (20 + 9 + 5 for no history),
/// so its third request after two 404s scores 54; a browser starts at 5
/// and is challenged after four missing pages.
fn guard(pow: ProofOfWork) -> Result<Guard, floodguard::ConfigError> {
    let mut weights = Weights::default();
    weights.not_found = 10.0;
    let mut ladder = Ladder::default();
    ladder.throttle = 40.0;
    ladder.challenge = 45.0;
    ladder.ban = 90.0;
    Guard::builder()
        .default_rules()
        .scoring(
            Scoring::new()
                .weights(weights)
                .ladder(ladder)
                .challenge(pow),
        )
        .build()
}

/// The score of a request, as the guard saw it.
fn score_of(d: &GuardDecision) -> String {
    match (d.score(), d.action()) {
        (Some(score), Some(action)) => format!("{score}, {}", action.name()),
        _ => "not scored".into(),
    }
}

fn page(title: &str, d: &GuardDecision, body: &str) -> Response {
    let score = score_of(d);
    let html = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>{title}</title>\
         <h1>{title}</h1><p>Your score: {score}.</p>{body}\
         <p><a href=\"/\">Home</a> &middot; <a href=\"/product/1\">Product 1</a> &middot; \
         <a href=\"/product/2\">Product 2</a></p>"
    );
    ([("x-score", score)], Html(html)).into_response()
}

async fn home(Extension(d): Extension<GuardDecision>) -> Response {
    page(
        "The demo shop",
        &d,
        "<p>Browse as you like. To be challenged, behave like a scanner and \
         open missing pages, such as <a href=\"/wp-login.php\">/wp-login.php</a>, \
         <a href=\"/.env\">/.env</a>, <a href=\"/admin\">/admin</a> and \
         <a href=\"/backup.zip\">/backup.zip</a>; each adds 10 points, and from 45 \
         the next page asks your browser for a proof of work. Past 90 the \
         address is banned for a minute. Points halve every minute.</p>",
    )
}

async fn product(Path(id): Path<u32>, Extension(d): Extension<GuardDecision>) -> Response {
    page(&format!("Product {id}"), &d, "<p>A fine product.</p>")
}

async fn missing(Extension(d): Extension<GuardDecision>) -> Response {
    let mut res = page("Not found", &d, "");
    *res.status_mut() = http::StatusCode::NOT_FOUND;
    res
}

fn shop(guard: &Guard) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/product/{id}", get(product))
        .fallback(missing)
        .layer(guard.layer())
}

/// Serves `app` over the gate until the task is dropped.
fn serve(
    guard: &Guard,
    listener: TcpListener,
    app: Router,
) -> Result<tokio::task::JoinHandle<io::Result<()>>, floodguard::ConfigError> {
    let gate = guard.gate().build()?;
    let make = app.into_make_service_with_connect_info::<GateConnectInfo>();
    let listener = gate.listen(listener);
    Ok(tokio::spawn(
        async move { axum::serve(listener, make).await },
    ))
}

/// One line per request in `serve` mode.
async fn log(
    ConnectInfo(conn): ConnectInfo<GateConnectInfo>,
    req: Request,
    next: Next,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let res = next.run(req).await;
    let what = match res.headers().get("x-score").and_then(|v| v.to_str().ok()) {
        Some(score) => format!("score {score}"),
        None if res.status() == http::StatusCode::FORBIDDEN => {
            let html = res
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
            if html { "challenge page" } else { "refused" }.into()
        }
        None => "refused".into(),
    };
    println!(
        "{} {method} {path} -> {} ({what})",
        conn.peer_addr().ip(),
        res.status().as_u16()
    );
    res
}

/// Leading zero bits asked: about 65,000 hashes.
const DIFFICULTY: u32 = 16;
/// How long a token, and so a solved cookie, is good for.
const TTL: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let pow = ProofOfWork::new(DIFFICULTY, TTL)?;
    if args.next().as_deref() == Some("serve") {
        let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
        let guard = guard(pow)?;
        let listener = TcpListener::bind(&addr).await?;
        println!(
            "serving the demo shop on http://{} (Ctrl-C to stop)",
            listener.local_addr()?
        );
        println!("open a few missing pages (the home page links some) to be challenged");
        let app = shop(&guard).layer(middleware::from_fn(log));
        serve(&guard, listener, app)?.await??;
        return Ok(());
    }
    match tokio::time::timeout(Duration::from_secs(60), self_test(pow)).await {
        Ok(result) => result,
        Err(_) => Err("the self-test took more than 60 s".into()),
    }
}

// ---------------------------------------------------------------------------
// The self-test

type Error = Box<dyn std::error::Error>;

const STEP_TIMEOUT: Duration = Duration::from_secs(5);
const SUSPECT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 21));
const NEIGHBOUR: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 22));

/// Fails the self-test with `msg` unless `ok`.
fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(msg().into()) }
}

async fn self_test(pow: ProofOfWork) -> Result<(), Error> {
    let guard = guard(pow.clone())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = serve(&guard, listener, shop(&guard))?;
    println!(
        "self-test against http://{addr} (difficulty {DIFFICULTY}, tokens good for {} s)\n",
        TTL.as_secs()
    );
    let client = Client { to: addr };

    println!("{SUSPECT}: no user agent, no Accept, scans for missing pages");
    for path in ["/", "/wp-login.php", "/.env"] {
        let r = client.get(SUSPECT, path, None).await?;
        println!(
            "  GET {path:<14} {} score {}",
            r.status,
            r.header("x-score")
        );
        let want = if path == "/" { 200 } else { 404 };
        ensure(r.status == want, || {
            format!("GET {path}: {} not {want}", r.status)
        })?;
    }
    let r = client.get(SUSPECT, "/", None).await?;
    ensure(r.status == 403, || {
        format!("expected the challenge, got {}", r.status)
    })?;
    let (token, bits) = challenge_of(&r.body).ok_or("no token in the challenge page")?;
    println!(
        "  GET {:<14} {} challenge page, {} bytes, token {}..., {bits} zero bits asked",
        "/",
        r.status,
        r.body.len(),
        token.get(..24).unwrap_or(&token)
    );

    let started = Instant::now();
    let (counter, tries) = solve(&token, bits).ok_or("no solution found")?;
    let took = started.elapsed();
    let cookie = format!("{token}.{counter}");
    println!(
        "  solved: counter {counter} after {tries} hashes in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    let r = client.get(SUSPECT, "/", Some(&cookie)).await?;
    println!(
        "  GET / with the cookie: {} score {}",
        r.status,
        r.header("x-score")
    );
    ensure(r.status == 200, || {
        format!("solved cookie refused: {}", r.status)
    })?;

    println!("\nforged cookies from {SUSPECT} (each is refused with the challenge page)");
    let now = unix_now();
    let (_, rest) = token.split_once('.').ok_or("token without expiry")?;
    let forged_mac = {
        // One hex digit of the MAC changed, the work redone.
        let mut t = token.clone().into_bytes();
        let last = t.len() - 1;
        t[last] = if t[last] == b'0' { b'1' } else { b'0' };
        let t = String::from_utf8(t)?;
        let (c, _) = solve(&t, bits).ok_or("no solution")?;
        format!("{t}.{c}")
    };
    let expired = {
        let t = pow.token(SUSPECT, now.saturating_sub(1));
        let (c, _) = solve(&t, bits).ok_or("no solution")?;
        format!("{t}.{c}")
    };
    let too_little = {
        let c = (0u64..)
            .find(|c| zero_bits_of(&format!("{token}.{c}")) < bits)
            .ok_or("no weak counter")?;
        format!("{token}.{c}")
    };
    let far_future = format!("{}.{rest}.{counter}", now + 86_400 * 365);
    let cases: [(&str, String, Refused); 6] = [
        ("MAC changed", forged_mac, Refused::BadMac),
        ("expiry moved", far_future, Refused::BadMac),
        ("expired", expired, Refused::Expired),
        ("too few zero bits", too_little, Refused::TooLittleWork),
        ("garbage", "hello.world".into(), Refused::Malformed),
        ("4 KiB long", "9".repeat(4096), Refused::Malformed),
    ];
    for (what, value, why) in &cases {
        let r = client.get(SUSPECT, "/", Some(value)).await?;
        let got = pow.check(value, SUSPECT, unix_now());
        println!("  {what:<18} {} ({got:?})", r.status);
        ensure(r.status == 403 && challenge_of(&r.body).is_some(), || {
            format!("{what}: {} not the challenge page", r.status)
        })?;
        ensure(got == Err(*why), || format!("{what}: {got:?}, not {why:?}"))?;
    }

    println!("\n{NEIGHBOUR}: scans too until challenged, then shows {SUSPECT}'s solved cookie");
    let mut challenged = false;
    for path in ["/admin", "/backup.zip", "/old", "/test"] {
        let r = client.get(NEIGHBOUR, path, None).await?;
        challenged = r.status == 403 && challenge_of(&r.body).is_some();
        let what = if challenged {
            "challenge page".to_owned()
        } else {
            format!("score {}", r.header("x-score"))
        };
        println!("  GET {path:<14} {} {what}", r.status);
        if challenged {
            break;
        }
        ensure(r.status == 404, || format!("GET {path}: {}", r.status))?;
    }
    ensure(challenged, || format!("{NEIGHBOUR} was never challenged"))?;
    let r = client.get(NEIGHBOUR, "/", Some(&cookie)).await?;
    let got = pow.check(&cookie, NEIGHBOUR, unix_now());
    println!("  GET / with another's cookie: {} ({got:?})", r.status);
    ensure(r.status == 403 && got == Err(Refused::BadMac), || {
        format!("another address's cookie: {} {got:?}", r.status)
    })?;

    let r = client.get(SUSPECT, "/", Some(&cookie)).await?;
    println!(
        "\n{SUSPECT} again with its cookie (no server state, good until it expires): {} score {}",
        r.status,
        r.header("x-score")
    );
    ensure(r.status == 200, || {
        format!("second use refused: {}", r.status)
    })?;

    let stats = guard.stats();
    let scoring = stats.scoring.ok_or("no scoring stats")?;
    println!(
        "\nguard: {} requests, {} challenge pages, {} challenges passed",
        stats.requests, scoring.challenged, scoring.challenges_passed
    );
    ensure(scoring.challenges_passed == 2, || {
        format!("{} challenges passed, not 2", scoring.challenges_passed)
    })?;
    server.abort();

    in_process(&pow, &cookie)?;
    println!("\nself-test passed");
    Ok(())
}

/// The token and difficulty in a challenge page, read as its script does.
fn challenge_of(html: &str) -> Option<(String, u32)> {
    let after = |key: &str| html.split_once(key).map(|(_, rest)| rest);
    let token = after("const token = \"")?.split('"').next()?;
    let bits = after(", bits = ")?;
    let bits = bits
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let sane =
        !token.is_empty() && token.len() <= MAX_VALUE && (1..=MAX_DIFFICULTY).contains(&bits);
    sane.then(|| (token.to_owned(), bits))
}

/// What the page's script does: the first counter whose `token.counter`
/// hashes to `bits` leading zero bits, and the hashes it took.
fn solve(token: &str, bits: u32) -> Option<(u64, u64)> {
    let mut prefix = Sha256::new();
    prefix.update(token.as_bytes());
    prefix.update(b".");
    let mut digits = String::with_capacity(MAX_DIGITS);
    // 2^(bits + 8) tries fail with odds of e^-256.
    let limit = 1u64 << (bits + 8);
    (0..limit)
        .find(|c| {
            digits.clear();
            let _ = write!(digits, "{c}");
            let mut h = prefix.clone();
            h.update(digits.as_bytes());
            leading_zero_bits(&h.finalize()) >= bits
        })
        .map(|c| (c, c + 1))
}

fn zero_bits_of(value: &str) -> u32 {
    leading_zero_bits(&Sha256::digest(value.as_bytes()))
}

/// `verify` on crafted requests: malformed, oversized, non-ASCII, several
/// cookies, other addresses, and mutations of a good cookie.
fn in_process(pow: &ProofOfWork, good: &str) -> Result<(), Error> {
    println!("\nverify in-process");
    let verify = |headers: &[&[u8]], client: IpAddr| -> Result<bool, Error> {
        let mut req = http::Request::builder().uri("/");
        for h in headers {
            req = req.header(COOKIE, HeaderValue::from_bytes(h)?);
        }
        let (parts, ()) = req.body(())?.into_parts();
        Ok(pow.verify(&parts, client))
    };
    let cookie = |v: &str| format!("{COOKIE_NAME}={v}");
    let (token, counter) = good.rsplit_once('.').ok_or("cookie without counter")?;
    let upper = good.to_ascii_uppercase();
    let decoys = format!("{0}=1; {0}=2; {0}=3; {0}=4; {1}", COOKIE_NAME, cookie(good));
    let two = format!("theme=dark; {}; lang=en", cookie(good));
    let long = cookie(&"a".repeat(64 * 1024));
    let cases: Vec<(&str, Vec<Vec<u8>>, bool)> = vec![
        ("the good cookie", vec![cookie(good).into()], true),
        ("among other cookies", vec![two.into()], true),
        (
            "in a second Cookie header",
            vec![b"a=b".to_vec(), cookie(good).into()],
            true,
        ),
        ("no cookie", vec![], false),
        ("empty value", vec![cookie("").into()], false),
        ("only dots", vec![cookie("...").into()], false),
        (
            "a fifth field",
            vec![cookie(&format!("{good}.1")).into()],
            false,
        ),
        (
            "expiry with a leading zero",
            vec![cookie(&format!("0{good}")).into()],
            false,
        ),
        (
            "counter with a leading zero",
            vec![cookie(&format!("{token}.0{counter}")).into()],
            false,
        ),
        (
            "counter +1",
            vec![cookie(&format!("{token}.+{counter}")).into()],
            false,
        ),
        (
            "counter past u64",
            vec![cookie(&format!("{token}.99999999999999999999")).into()],
            false,
        ),
        ("upper-case hex", vec![cookie(&upper).into()], false),
        ("quoted", vec![cookie(&format!("\"{good}\"")).into()], false),
        ("another name", vec![format!("fg_pox={good}").into()], false),
        (
            "non-ASCII bytes",
            vec![b"fg_pow=\xff\xfe.\xc3\xa9".to_vec()],
            false,
        ),
        ("64 KiB value", vec![long.into()], false),
        ("behind four decoys", vec![decoys.into()], false),
    ];
    for (what, headers, want) in &cases {
        let refs: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
        let got = verify(&refs, SUSPECT)?;
        ensure(got == *want, || format!("{what}: verify said {got}"))?;
    }
    println!("  {} crafted Cookie headers: as expected", cases.len());

    // The address binding: exact for IPv4 (mapped into IPv6 or not), the
    // /64 for IPv6, as the guard scores clients.
    let now = unix_now();
    let bound = |issued: IpAddr, shown: IpAddr| -> Result<bool, Error> {
        let t = pow.token(issued, now + 60);
        let (c, _) = solve(&t, pow.difficulty).ok_or("no solution")?;
        Ok(pow.check(&format!("{t}.{c}"), shown, now).is_ok())
    };
    let ip = |s: &str| s.parse::<IpAddr>();
    let bindings = [
        ("127.0.0.21", "::ffff:127.0.0.21", true),
        ("127.0.0.21", "127.0.0.22", false),
        ("2001:db8::1", "2001:db8::ffff:2", true),
        ("2001:db8::1", "2001:db8:0:1::1", false),
    ];
    for (issued, shown, want) in bindings {
        let got = bound(ip(issued)?, ip(shown)?)?;
        ensure(got == want, || {
            format!("issued to {issued}, shown by {shown}: {got}")
        })?;
    }
    println!("  binding: IPv4 exact (mapped too), IPv6 by /64: as expected");

    // Mutations of the good cookie: a byte changed, removed or added.
    // Anything the MAC covers fails; a changed counter passes only if its
    // hash has the zero bits, which the reference below recomputes.
    let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
    let mut next = move |n: usize| rng.usize(..n);
    let alphabet = b"0123456789abcdefABCDEF.;= \"-+x";
    let (mut tried, mut accepted) = (0, 0);
    for _ in 0..20_000 {
        let mut v = good.as_bytes().to_vec();
        for _ in 0..=next(3) {
            let at = next(v.len() + 1);
            let byte = alphabet[next(alphabet.len())];
            match next(3) {
                0 if at < v.len() => v[at] = byte,
                1 if at < v.len() => {
                    v.remove(at);
                }
                _ => v.insert(at, byte),
            }
        }
        let Ok(v) = String::from_utf8(v) else {
            continue;
        };
        if v == good {
            continue;
        }
        tried += 1;
        let got = pow.check(&v, SUSPECT, now).is_ok();
        let reference = v
            .strip_prefix(token)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|c| decimal(c).is_some() && zero_bits_of(&v) >= pow.difficulty);
        ensure(got == reference, || {
            format!("mutation {v:?}: check said {got}")
        })?;
        accepted += usize::from(got);
    }
    println!(
        "  {tried} mutated cookies: {accepted} accepted (only a new counter with the work done may pass)"
    );
    Ok(())
}

/// A raw HTTP/1.1 client: one request per connection, from a chosen
/// loopback address.
struct Client {
    to: SocketAddr,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("-", |(_, v)| v.as_str())
    }
}

impl Client {
    /// `GET path` without a user agent or `Accept`, with the `fg_pow`
    /// cookie if given; the whole exchange within [`STEP_TIMEOUT`].
    async fn get(&self, from: IpAddr, path: &str, cookie: Option<&str>) -> Result<Reply, Error> {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(c) = cookie {
            let _ = write!(head, "Cookie: {COOKIE_NAME}={c}\r\n");
        }
        head.push_str("\r\n");
        let exchange = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(from, 0))?;
            let mut stream = socket.connect(self.to).await?;
            stream.write_all(head.as_bytes()).await?;
            let mut raw = Vec::new();
            stream.take(1 << 20).read_to_end(&mut raw).await?;
            io::Result::Ok(raw)
        };
        let raw = tokio::time::timeout(STEP_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("GET {path} from {from} timed out"))??;
        parse_reply(&raw).ok_or_else(|| format!("GET {path} from {from}: bad response").into())
    }
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}
