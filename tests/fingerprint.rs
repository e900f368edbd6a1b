//! Wire fingerprints end to end: axum served over a gated listener with
//! `GateConnectInfo`, raw request heads written by hand on 127.0.0.0/8.
#![cfg(feature = "axum")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Extension, Request};
use axum::routing::{any, get};
use common::{TIMEOUT, connect_from};
use floodguard::http::Gate;
use floodguard::http::{
    ClientIpConfig, Fingerprint, GateConnectInfo, Guard, GuardDecision, HeadScanner, Rule, Scan,
    Scoring, Signal, WireHead,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Answers `<wire fingerprint> <order-free fingerprint> <wire hash> <peer>`;
/// `none` where the connection has no wire head.
async fn describe(ConnectInfo(conn): ConnectInfo<GateConnectInfo>, req: Request) -> String {
    let (parts, _) = req.into_parts();
    let wire = conn.wire_head();
    let fp = Fingerprint::of(&parts, wire.as_ref());
    // The convenience finds the same head in the extensions.
    assert_eq!(Fingerprint::from_parts(&parts), fp);
    format!(
        "{} {} {} {}",
        wire.map_or("none".into(), |_| fp.to_string()),
        Fingerprint::of(&parts, None),
        wire.map_or("none".into(), |w| format!("{:016x}", w.names_hash())),
        conn.peer_addr().ip(),
    )
}

/// Serves `app` over a gated listener with `GateConnectInfo`.
async fn serve(app: Router) -> SocketAddr {
    let gate = Gate::builder().build().unwrap();
    let listener = gate.listen(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let make = app.into_make_service_with_connect_info::<GateConnectInfo>();
    tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
    addr
}

async fn describing_server() -> SocketAddr {
    serve(Router::new().route("/", any(describe))).await
}

/// One answer, split into its words.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    wire: String,
    order_free: String,
    wire_hash: String,
    peer: String,
}

/// A raw client connection that reads responses by `Content-Length`.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(from: &str, to: SocketAddr) -> Client {
        let stream = connect_from(from, to).await;
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response: status and body.
    async fn response(&mut self) -> (u16, String) {
        timeout(TIMEOUT, async {
            let end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                self.fill().await;
            };
            let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
            let status = head[9..12].parse().unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while self.buf.len() < end + length {
                self.fill().await;
            }
            let body = String::from_utf8(self.buf[end..end + length].to_vec()).unwrap();
            self.buf.drain(..end + length);
            (status, body)
        })
        .await
        .expect("response timed out")
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn describe(&mut self, head: &[u8]) -> Described {
        self.send(head).await;
        self.described().await
    }

    async fn described(&mut self) -> Described {
        let (status, body) = self.response().await;
        assert_eq!(status, 200, "{body}");
        parse(&body)
    }
}

fn parse(body: &str) -> Described {
    let words: Vec<&str> = body.split(' ').collect();
    let [wire, order_free, wire_hash, peer] = words[..] else {
        panic!("unexpected answer {body:?}");
    };
    Described {
        wire: wire.into(),
        order_free: order_free.into(),
        wire_hash: wire_hash.into(),
        peer: peer.into(),
    }
}

/// Sends `head` on a new connection from `from`.
async fn describe_once(from: &str, to: SocketAddr, head: &[u8]) -> Described {
    Client::connect(from, to).await.describe(head).await
}

const A: &[u8] =
    b"GET / HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
/// `A` reordered.
const B: &[u8] =
    b"GET / HTTP/1.1\r\nUser-Agent: curl/8.5.0\r\nHost: shop.test\r\nAccept: */*\r\n\r\n";
/// `A` in lowercase.
const C: &[u8] =
    b"GET / HTTP/1.1\r\nhost: shop.test\r\nuser-agent: curl/8.5.0\r\naccept: */*\r\n\r\n";

#[tokio::test]
async fn header_order_and_casing_change_the_wire_fingerprint() {
    let addr = describing_server().await;
    let a = describe_once("127.0.0.41", addr, A).await;
    let b = describe_once("127.0.0.41", addr, B).await;
    let c = describe_once("127.0.0.41", addr, C).await;
    assert_eq!(a.peer, "127.0.0.41");
    assert!(a.wire.ends_with('w'), "{a:?}");
    assert!(a.wire.starts_with("ge11nn03"), "{a:?}");
    for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
        assert_ne!(x.wire_hash, y.wire_hash);
        assert_ne!(x.wire, y.wire);
        // hyper's HeaderMap forgets both: the fallback cannot tell them apart.
        assert_eq!(x.order_free, y.order_free);
    }
    // The same bytes, the same fingerprint.
    assert_eq!(describe_once("127.0.0.42", addr, A).await.wire, a.wire);
}

#[tokio::test]
async fn a_head_split_over_many_reads_gives_the_same_fingerprint() {
    let addr = describing_server().await;
    let whole = describe_once("127.0.0.43", addr, A).await;
    let mut client = Client::connect("127.0.0.43", addr).await;
    // Small pieces with pauses, so the server reads them one by one.
    for piece in A.chunks(7) {
        client.send(piece).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(client.described().await, whole);
}

#[tokio::test]
async fn later_requests_on_a_connection_report_the_first_head() {
    let addr = describing_server().await;
    let a = describe_once("127.0.0.44", addr, A).await;
    let c = describe_once("127.0.0.44", addr, C).await;

    // Kept alive: the second request's own fields (a cookie now), the
    // first head's names.
    let mut client = Client::connect("127.0.0.44", addr).await;
    assert_eq!(client.describe(A).await, a);
    let with_cookie =
        b"GET / HTTP/1.1\r\nhost: shop.test\r\nuser-agent: curl/8.5.0\r\naccept: */*\r\ncookie: k=v\r\n\r\n";
    let second = client.describe(with_cookie).await;
    assert_eq!(second.wire_hash, a.wire_hash);
    assert!(second.wire.starts_with("ge11cn03"), "{second:?}");
    assert_ne!(second.wire_hash, c.wire_hash);

    // Pipelined in one write: one read holds both heads; the scanner
    // stops after the first.
    let mut client = Client::connect("127.0.0.44", addr).await;
    client.send(&[C, A].concat()).await;
    let first = client.described().await;
    let second = client.described().await;
    assert_eq!(first, c);
    assert_eq!(second.wire_hash, c.wire_hash);
}

#[tokio::test]
async fn http2_has_no_wire_head() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let addr = describing_server().await;
    let stream = connect_from("127.0.0.45", addr).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{addr}/"))
        .header("user-agent", "curl/8.5.0")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = timeout(TIMEOUT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let d = parse(std::str::from_utf8(&body).unwrap());
    assert_eq!((d.wire.as_str(), d.wire_hash.as_str()), ("none", "none"));
    assert!(d.order_free.starts_with("ge20"), "{d:?}");
    assert_eq!(d.peer, "127.0.0.45");
}

#[tokio::test]
async fn the_layer_finds_the_peer_in_gate_connect_info() {
    let guard = Guard::builder()
        .rule(
            Rule::per_ip("per-ip")
                .gcra(1, Duration::from_secs(3600))
                .burst(1),
        )
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            get(|Extension(d): Extension<GuardDecision>| async move {
                d.client_ip().map(|ip| ip.to_string()).unwrap_or_default()
            }),
        )
        .layer(guard.layer());
    let addr = serve(app).await;
    let mut first = Client::connect("127.0.0.46", addr).await;
    first.send(A).await;
    assert_eq!(first.response().await, (200, "127.0.0.46".into()));
    let mut second = Client::connect("127.0.0.46", addr).await;
    second.send(A).await;
    assert_eq!(second.response().await.0, 429);
    // Another address has its own budget.
    let mut other = Client::connect("127.0.0.47", addr).await;
    other.send(A).await;
    assert_eq!(other.response().await, (200, "127.0.0.47".into()));
    assert_eq!(guard.stats().no_peer_address, 0);
}

/// One captured request head of `tests/data/heads` and its `index.tsv` line.
struct Capture {
    file: String,
    client: String,
    family: String,
    head: Vec<u8>,
}

/// Every captured head, in `index.tsv`'s order.
fn captures() -> Vec<Capture> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/heads");
    let index = std::fs::read_to_string(dir.join("index.tsv")).unwrap();
    index
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            Capture {
                file: cols[0].into(),
                client: cols[1].into(),
                family: cols[2].into(),
                head: std::fs::read(dir.join(cols[0])).unwrap(),
            }
        })
        .collect()
}

/// The header lines of `head` (name, whole line without its CRLF), and its
/// request line.
fn lines(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = std::str::from_utf8(head).unwrap();
    let mut it = text.split("\r\n");
    let start = it.next().unwrap().to_string();
    let headers = it
        .take_while(|l| !l.is_empty())
        .map(|l| (l.split(':').next().unwrap().to_string(), l.to_string()))
        .collect();
    (start, headers)
}

fn join(start: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut h = format!("{start}\r\n");
    for (_, line) in headers {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

fn wire(head: &[u8]) -> WireHead {
    match HeadScanner::new().feed(head) {
        Scan::Done(w) => w,
        other => panic!("{other:?}: {}", String::from_utf8_lossy(head)),
    }
}

/// The `User-Agent` of a capture.
fn user_agent(c: &Capture) -> String {
    let (_, headers) = lines(&c.head);
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
        .map(|(_, l)| l.split_once(':').unwrap().1.trim().to_string())
        .unwrap_or_else(|| panic!("{} has no User-Agent", c.file))
}

/// The captured headful browsers' user agents (the headless ones say
/// `HeadlessChrome` or nothing of it, and are judged under these).
fn browser_uas(all: &[Capture]) -> [(&'static str, String); 2] {
    let ua = |client: &str| user_agent(all.iter().find(|c| c.client == client).unwrap());
    [("chromium", ua("chromium")), ("firefox", ua("firefox"))]
}

/// `head` with its `User-Agent` value set to `ua` (the line added at the
/// end if it had none, where a script's own header lands in most
/// libraries).
fn with_user_agent(head: &[u8], ua: &str) -> Vec<u8> {
    let (start, mut headers) = lines(head);
    match headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
    {
        Some((name, line)) => *line = format!("{name}: {ua}"),
        None => headers.push(("User-Agent".into(), format!("User-Agent: {ua}"))),
    }
    join(&start, &headers)
}

#[test]
fn every_captured_browser_head_fits_its_browser() {
    let all = captures();
    let uas = browser_uas(&all);
    let mut judged = 0;
    for c in all
        .iter()
        .filter(|c| c.family == "browser" || c.family == "headless")
    {
        let w = wire(&c.head);
        let own = user_agent(c);
        match c.client.as_str() {
            // HeadlessChrome claims no browser: not judged.
            "chromium-headless" => assert_eq!(w.fits_browser(own.as_bytes()), None, "{}", c.file),
            _ => assert_eq!(w.fits_browser(own.as_bytes()), Some(true), "{}", c.file),
        }
        // Under the headful user agent of its own browser too.
        let (_, ua) = &uas[usize::from(c.client.starts_with("firefox"))];
        let w = wire(&with_user_agent(&c.head, ua));
        assert_eq!(w.fits_browser(ua.as_bytes()), Some(true), "{}", c.file);
        judged += 1;
    }
    // Six kinds, two origins, headful and headless, two browsers.
    assert_eq!(judged, 48);
}

/// Captured clients whose own header order happens to fit a browser's once
/// they wear its user agent. Text browsers only: links2 writes Firefox's
/// order (Host, User-Agent, Accept, Accept-Language, Accept-Encoding,
/// Connection; its extra `Accept-Charset` is not a judged name). No
/// command-line tool or library slips through: curl and ab lack
/// `Connection`, wget and elinks one of `Accept-Encoding` and
/// `Accept-Language`, and every other one puts a header out of place or
/// writes lowercase names.
const FITS_ANYWAY: &[(&str, &str)] = &[("links2", "firefox")];

#[test]
fn captured_tools_wearing_a_browser_user_agent_do_not_fit() {
    let all = captures();
    let uas = browser_uas(&all);
    let mut checked = 0;
    for c in all
        .iter()
        .filter(|c| !matches!(c.family.as_str(), "browser" | "headless"))
    {
        for (browser, ua) in &uas {
            let w = wire(&with_user_agent(&c.head, ua));
            let fits = w.fits_browser(ua.as_bytes()).unwrap();
            let expected = FITS_ANYWAY.contains(&(c.client.as_str(), browser));
            assert_eq!(fits, expected, "{} as {browser}", c.file);
            checked += 1;
        }
    }
    assert!(checked >= 2 * 50, "{checked}");
}

/// The captured Chromium navigation to `localhost` (client hints,
/// Sec-Fetch-*): request line and header lines.
fn chromium_document(all: &[Capture]) -> (String, Vec<(String, String)>) {
    let c = all
        .iter()
        .find(|c| c.file == "chromium__document__localhost.http")
        .unwrap();
    lines(&c.head)
}

#[test]
fn a_shuffled_or_recased_chromium_head_does_not_fit() {
    let all = captures();
    let [(_, ua), _] = browser_uas(&all);
    let (start, headers) = chromium_document(&all);
    let fits =
        |headers: &[(String, String)]| wire(&join(&start, headers)).fits_browser(ua.as_bytes());
    assert_eq!(fits(&headers), Some(true));

    let mut reversed = headers.clone();
    reversed.reverse();
    assert_eq!(fits(&reversed), Some(false));
    let lower: Vec<_> = headers
        .iter()
        .map(|(n, l)| {
            (
                n.to_lowercase(),
                format!("{}{}", n.to_lowercase(), &l[n.len()..]),
            )
        })
        .collect();
    assert_eq!(fits(&lower), Some(false));
    // One name recased is enough.
    let mut one = headers.clone();
    one[1].1 = one[1].1.replacen("Connection", "connection", 1);
    assert_eq!(fits(&one), Some(false));

    // Every swap of two headers that Chromium writes in a fixed order
    // (all but the floating client hints, Accept and Accept-Language, and
    // the four Sec-Fetch-* among themselves) is caught.
    let fixed = |n: &str| {
        let n = n.to_ascii_lowercase();
        !(n.starts_with("sec-ch-ua") || n == "accept" || n == "accept-language")
    };
    let mut swaps = 0;
    for i in 0..headers.len() {
        for j in i + 1..headers.len() {
            let (a, b) = (&headers[i].0, &headers[j].0);
            let fetch = |n: &str| n.starts_with("Sec-Fetch-");
            if !fixed(a) || !fixed(b) || fetch(a) && fetch(b) {
                continue;
            }
            let mut swapped = headers.clone();
            swapped.swap(i, j);
            assert_eq!(fits(&swapped), Some(false), "{a} <-> {b}");
            swaps += 1;
        }
    }
    assert!(swaps >= 20, "{swaps}");

    // A Firefox head under Chromium's user agent, and the reverse.
    let firefox = all
        .iter()
        .find(|c| c.file == "firefox__document__localhost.http")
        .unwrap();
    assert_eq!(
        wire(&with_user_agent(&firefox.head, &ua)).fits_browser(ua.as_bytes()),
        Some(false)
    );
    let [_, (_, fx)] = browser_uas(&all);
    let chromium_as_firefox = with_user_agent(&join(&start, &headers), &fx);
    assert_eq!(
        wire(&chromium_as_firefox).fits_browser(fx.as_bytes()),
        Some(false)
    );
}

#[test]
fn extra_header_names_anywhere_do_not_change_the_verdict() {
    let all = captures();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: reproducible, no dependency.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for c in all
        .iter()
        .filter(|c| c.family == "browser" || c.client.ends_with("-headless"))
    {
        let ua = user_agent(c);
        let (start, headers) = lines(&c.head);
        let want = wire(&c.head).fits_browser(ua.as_bytes());
        for _ in 0..50 {
            let mut extra = headers.clone();
            for _ in 0..1 + next() % 6 {
                // Random names in random casing: `x-...`, or words no
                // standard name is (`Accept-Charset`, `Sec-GPC`).
                let name = match next() % 4 {
                    0 => "Accept-Charset".to_string(),
                    1 => "Sec-GPC".to_string(),
                    2 => "sec-ch-prefers-color-scheme".to_string(),
                    _ => format!("X-{:x}", next()),
                };
                let name: String = name
                    .chars()
                    .map(|ch| {
                        if next() % 2 == 0 {
                            ch.to_ascii_uppercase()
                        } else {
                            ch.to_ascii_lowercase()
                        }
                    })
                    .collect();
                let at = (next() % (extra.len() as u64 + 1)) as usize;
                extra.insert(at, (name.clone(), format!("{name}: 1")));
            }
            let got = wire(&join(&start, &extra)).fits_browser(ua.as_bytes());
            assert_eq!(got, want, "{}: {extra:?}", c.file);
        }
    }
}

/// Answers the inconsistency points the guard's scoring gave the request.
async fn inconsistency(Extension(d): Extension<GuardDecision>) -> String {
    let points = d.score().map_or(0.0, |s| {
        s.signals()
            .filter(|(s, _)| *s == Signal::Inconsistency)
            .fold(0.0, |sum, (_, p)| sum + p)
    });
    format!("{points}")
}

#[tokio::test]
async fn the_guard_judges_the_order_of_direct_clients_only() {
    let all = captures();
    let [(_, chrome), _] = browser_uas(&all);
    let guard = Guard::builder()
        .scoring(Scoring::new())
        .client_ip(ClientIpConfig::new().trust("127.0.0.61".parse::<IpAddr>().unwrap().into()))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/capture/page.html", get(inconsistency))
        .layer(guard.layer());
    let addr = serve(app).await;
    let points = |from: &'static str, head: Vec<u8>| async move {
        let mut client = Client::connect(from, addr).await;
        client.send(&head).await;
        let (status, body) = client.response().await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let real = all
        .iter()
        .find(|c| c.file == "chromium__document__plain.http")
        .unwrap();
    let script = all
        .iter()
        .find(|c| c.file == "python-requests__plain__plain.http")
        .unwrap();
    let spoofed = with_user_agent(&script.head, &chrome);
    assert_eq!(points("127.0.0.60", real.head.clone()).await, "0");
    assert_eq!(points("127.0.0.60", spoofed.clone()).await, "25");
    // Through a trusted proxy the order is the proxy's: not judged.
    let (start, mut headers) = lines(&spoofed);
    headers.push((
        "X-Forwarded-For".into(),
        "X-Forwarded-For: 192.0.2.7".into(),
    ));
    assert_eq!(points("127.0.0.61", join(&start, &headers)).await, "0");
}
