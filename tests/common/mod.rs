//! Shared helpers for the end-to-end tests: a server on 127.0.0.1 and a
//! hyper client that connects from a chosen loopback address.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

/// Bound on any single exchange in a test.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on 127.0.0.1 with axum's connect info, in the background.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
    addr
}

/// Serves `app` without recording peer addresses (a setup mistake).
pub async fn serve_without_peer(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Sends `GET path` with `headers` over a new HTTP/1.1 connection from
/// `from` (a 127.x.y.z address) to `to`.
pub async fn get(from: &str, to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path).header("host", "shop.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(from, to, req.body(Empty::<Bytes>::new()).unwrap()).await
}

/// Sends `req` from `from` to `to` and reads the whole response.
pub async fn send(from: &str, to: SocketAddr, req: Request<Empty<Bytes>>) -> Reply {
    tokio::time::timeout(TIMEOUT, async {
        let res: Response<_> = {
            let stream = connect_from(from, to).await;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        };
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
    .await
    .expect("exchange timed out")
}

/// A TCP connection to `to` whose source address is `from`.
pub async fn connect_from(from: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let ip: IpAddr = from.parse().unwrap();
    let socket = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Writes `request` (raw bytes) on `stream` and returns what one read of the
/// answer gave, as text.
pub async fn exchange_raw(stream: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
