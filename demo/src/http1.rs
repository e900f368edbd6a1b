//! A minimal HTTP/1.x client over a TCP connection from a chosen loopback
//! address. Hand-written on purpose: a load generator must control the
//! exact bytes (header order and casing, HTTP/1.0, a request trickled
//! byte by byte), which a general client hides.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An open connection.
pub struct Conn {
    stream: BufReader<TcpStream>,
}

/// What a response said.
pub struct Reply {
    pub status: u16,
    /// The server will close the connection after this response.
    pub closing: bool,
    /// What floodguard's scoring did with the request, from the shop's
    /// `x-fg-action` header (served requests of a scoring guard only).
    pub action: Option<Scored>,
    /// The `name=value` of the response's first `Set-Cookie`, if any.
    pub set_cookie: Option<String>,
}

/// The scoring ladder's action for a served request, as the shop reports
/// it in `x-fg-action` (`floodguard::http::Action::name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scored {
    Allow,
    Throttle,
    Challenge,
    Ban,
}

impl Scored {
    fn parse(v: &str) -> Option<Self> {
        match v {
            "allow" => Some(Scored::Allow),
            "throttle" => Some(Scored::Throttle),
            "challenge" => Some(Scored::Challenge),
            "ban" => Some(Scored::Ban),
            _ => None,
        }
    }
}

/// Connects to `to` from `from` (any 127.x.y.z address works on Linux
/// without configuration), within `timeout`.
pub async fn connect(from: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<Conn> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => {
            let socket = TcpSocket::new_v6()?;
            // Addresses of a /64 routed to loopback (`ip -6 route add
            // local ... dev lo`) are not assigned to it: binding one needs
            // IP_FREEBIND.
            socket2::SockRef::from(&socket).set_freebind_v6(true)?;
            socket
        }
    };
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = tokio::time::timeout(timeout, socket.connect(to))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(Conn {
        stream: BufReader::new(stream),
    })
}

impl Conn {
    /// Sends `request` (a complete request head, and body if any) and reads
    /// the whole response, within `timeout`.
    pub async fn exchange(&mut self, request: &[u8], timeout: Duration) -> io::Result<Reply> {
        tokio::time::timeout(timeout, async {
            self.stream.get_mut().write_all(request).await?;
            self.read_reply().await
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "response timed out"))?
    }

    /// Writes raw bytes without waiting for an answer (slow clients).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.get_mut().write_all(bytes).await
    }

    /// Whether the server has closed the connection (a read returns end of
    /// stream or an error without blocking for long).
    pub async fn closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), self.stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        let mut line = String::new();
        let mut head_len = 0;
        self.read_line(&mut line, &mut head_len).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let http10 = line.starts_with("HTTP/1.0");
        let (mut length, mut chunked, mut closing) = (0usize, false, http10);
        let mut action = None;
        let mut set_cookie = None;
        loop {
            line.clear();
            self.read_line(&mut line, &mut head_len).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| bad("bad content-length"))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                closing = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("x-fg-action") {
                action = Scored::parse(value);
            } else if name.eq_ignore_ascii_case("set-cookie") && set_cookie.is_none() {
                let pair = value.split(';').next().unwrap_or_default().trim();
                set_cookie = Some(pair.to_owned());
            }
        }
        if chunked {
            self.skip_chunked().await?;
        } else {
            self.skip(length).await?;
        }
        Ok(Reply {
            status,
            closing,
            action,
            set_cookie,
        })
    }

    async fn read_line(&mut self, line: &mut String, head_len: &mut usize) -> io::Result<()> {
        let n = self.stream.read_line(line).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        *head_len += n;
        if *head_len > MAX_HEAD {
            return Err(bad("response head too long"));
        }
        Ok(())
    }

    async fn skip(&mut self, mut n: usize) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len());
            let got = self.stream.read(&mut buf[..want]).await?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body cut short",
                ));
            }
            n -= got;
        }
        Ok(())
    }

    async fn skip_chunked(&mut self) -> io::Result<()> {
        let mut line = String::new();
        let mut head_len = 0;
        loop {
            line.clear();
            self.read_line(&mut line, &mut head_len).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            self.skip(size + 2).await?;
            if size == 0 {
                return Ok(());
            }
            head_len = 0;
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}
