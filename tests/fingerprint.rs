//! Wire fingerprints end to end: axum served over a gated listener with
//! `GateConnectInfo`, raw request heads written by hand on 127.0.0.0/8.
#![cfg(feature = "axum")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Extension, Request};
use axum::routing::{any, get};
use common::{TIMEOUT, connect_from};
use floodguard::http::gate::Gate;
use floodguard::http::{Fingerprint, GateConnectInfo, Guard, GuardDecision, Rule};
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
