//! `--console`: checks that a floodguard run's shop serves its console,
//! as a browser would use it: the token for a session cookie, then the
//! state the page polls.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http1;

/// Tries for up to `within` to sign in to the console on 127.0.0.1:`port`
/// with `token` and read its state; whether it answered.
pub async fn answers(port: u16, token: u128, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if signed_in_state(port, token).await.is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// The state's status code after signing in, if both steps answered.
async fn signed_in_state(port: u16, token: u128) -> Option<u16> {
    let console = SocketAddr::from(([127, 0, 0, 1], port));
    let from = [127, 0, 0, 1].into();
    let timeout = Duration::from_secs(2);
    let mut conn = http1::connect(from, console, timeout).await.ok()?;
    let sign_in = format!("GET /?token={token:032x} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let reply = conn.exchange(sign_in.as_bytes(), timeout).await.ok()?;
    let cookie = reply.set_cookie.filter(|_| reply.status == 303)?;
    let state =
        format!("GET /?api=state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n");
    let reply = conn.exchange(state.as_bytes(), timeout).await.ok()?;
    (reply.status == 200).then_some(reply.status)
}
