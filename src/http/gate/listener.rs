//! The gated listener: accepts, asks the gate, and hands out admitted
//! connections.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::{fmt, io};

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use crate::http::gate::gate::{ACCEPT_ERROR_BACKOFF, Turned};
use crate::http::{Gate, GatedStream};
use crate::ip::canonical;
/// A [`TcpListener`] behind a [`Gate`]; made by [`Gate::listen`].
///
/// With feature `axum` it is an [`axum::serve::Listener`]; with feature
/// `tonic`, [`into_incoming`](Self::into_incoming) makes it a stream for
/// tonic's `serve_with_incoming`.
pub struct GatedListener {
    pub(crate) listener: TcpListener,
    gate: Gate,
    /// Set after an accept error; no accept until it fires.
    backoff: Option<Pin<Box<Sleep>>>,
}

impl GatedListener {
    pub(super) fn new(listener: TcpListener, gate: Gate) -> Self {
        GatedListener {
            listener,
            gate,
            backoff: None,
        }
    }

    /// The next connection the gate admits, with its peer address (as the
    /// socket reports it, not canonicalised).
    ///
    /// Refused connections are closed here and never returned. Accept
    /// errors do not end the loop either: connection errors are skipped,
    /// others (such as `EMFILE`) are logged at `warn` and retried after
    /// 10 ms, as axum's `serve` does. The `Result` is kept for errors a
    /// later version may report; this one never returns `Err`.
    ///
    /// Cancel safe: dropping the future loses no admitted connection.
    pub async fn accept(&mut self) -> io::Result<(GatedStream, SocketAddr)> {
        Ok(poll_fn(|cx| self.poll_admitted(cx)).await)
    }

    /// Polls for the next admitted connection; see [`accept`](Self::accept).
    pub fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(GatedStream, SocketAddr)>> {
        self.poll_admitted(cx).map(Ok)
    }

    pub(crate) fn poll_admitted(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<(GatedStream, SocketAddr)> {
        // Each trip round the loop goes through `TcpListener::poll_accept`,
        // which spends tokio's cooperative budget: a flood of refused
        // connections makes this return `Pending` now and then instead of
        // starving the worker thread.
        self.gate.shared.start_sweeping();
        loop {
            if let Some(sleep) = self.backoff.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.backoff = None;
            }
            match ready!(self.listener.poll_accept(cx)) {
                Ok((stream, peer)) => match self.gate.shared.admit(canonical(peer.ip())) {
                    Ok(slot) => {
                        let stream = GatedStream::new(stream, peer, slot, self.gate.shared.epoch);
                        return Poll::Ready((stream, peer));
                    }
                    Err(why) => self.refuse(stream, peer, why),
                },
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "connection failed before accept");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept error; retrying in 10 ms");
                    self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_BACKOFF)));
                }
            }
        }
    }

    fn refuse(&self, stream: TcpStream, peer: SocketAddr, why: Turned) {
        // Linger 0: closing sends a reset and leaves no TIME_WAIT behind.
        // Failure only costs the TIME_WAIT, so it is ignored.
        // Counted first, so the stats never lag what the client saw.
        self.gate.shared.count_refusal(why);
        tracing::debug!(%peer, reason = why.as_str(), "connection refused");
        // Held only while the budget has room: a held refusal keeps its
        // descriptor.
        let shared = &self.gate.shared;
        let held = match why {
            Turned::Banned if shared.used() < shared.budget => shared.tarpit.hold(),
            _ => None,
        };
        if let Some((hold, place)) = held {
            // Unread until the reset; the place is given back with it.
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                let _ = stream.set_zero_linger();
                drop((stream, place));
            });
            return;
        }
        if shared.answer_refusals && why != Turned::Banned {
            // Written without waiting: an accept loop must not block on a
            // client. A full socket buffer on a fresh connection cannot
            // happen; if the write fails the client gets the reset.
            let answer: &[u8] = if why == Turned::Budget {
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            if stream.try_write(answer).is_ok_and(|n| n == answer.len()) {
                drop(stream);
                return;
            }
        }
        let _ = stream.set_zero_linger();
        drop(stream);
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The gate deciding for this listener.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The wrapped listener.
    pub fn get_ref(&self) -> &TcpListener {
        &self.listener
    }
}

impl fmt::Debug for GatedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedListener")
            .field("listener", &self.listener)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
