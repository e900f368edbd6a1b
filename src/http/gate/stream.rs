//! An admitted connection: gives its place back on drop, reads its first
//! request head as it passes and follows its request cycle for the
//! deadlines.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::{fmt, io};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http::gate::gate::Slot;
use crate::http::gate::tracker::Tracker;
use crate::http::gate::watch::Epoch;
use crate::http::identify::connect_info::GateConnectInfo;
use crate::http::identify::wire::{HeadScanner, Scan, WireHead};
pin_project! {
    /// A connection the [`Gate`] admitted: a [`TcpStream`] that gives its
    /// place in the per-address and per-network counts back when dropped,
    /// however the connection ends.
    ///
    /// It reads the connection's first request head as it passes through
    /// [`poll_read`](AsyncRead::poll_read), before the server sees it, and
    /// keeps its [`WireHead`] for [`connect_info`](Self::connect_info).
    /// Nothing is consumed or changed. It also follows each request head
    /// and response for the gate's [`Deadlines`]: once the gate has closed
    /// the connection, reads and writes fail with
    /// [`io::ErrorKind::TimedOut`] and the server drops it.
    pub struct GatedStream {
        #[pin]
        pub(crate) inner: TcpStream,
        pub(crate) peer: SocketAddr,
        // `None` once the first head is read, or given up on.
        pub(super) scanner: Option<HeadScanner>,
        head: Arc<OnceLock<WireHead>>,
        // `None` for an exempt connection.
        tracker: Option<Tracker>,
        _slot: Slot,
    }
}

impl GatedStream {
    pub(super) fn new(inner: TcpStream, peer: SocketAddr, slot: Slot, epoch: Epoch) -> Self {
        let tracker = slot
            .watched
            .as_ref()
            .map(|c| Tracker::new(Arc::clone(&c.watch), epoch));
        GatedStream {
            inner,
            peer,
            scanner: Some(HeadScanner::new()),
            head: Arc::new(OnceLock::new()),
            tracker,
            _slot: slot,
        }
    }

    /// The peer's address as accepted (not canonicalised).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The TCP stream, for socket options such as `set_nodelay`.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// The TCP stream, mutably.
    pub fn get_mut(&mut self) -> &mut TcpStream {
        &mut self.inner
    }

    /// The peer address and the first request head of this connection,
    /// for the request extensions: axum's `ConnectInfo` makes it with
    /// `into_make_service_with_connect_info::<GateConnectInfo>()`; with
    /// plain hyper, insert it into each request yourself.
    pub fn connect_info(&self) -> GateConnectInfo {
        GateConnectInfo::new(self.peer, Arc::clone(&self.head))
    }
}

/// Scans the bytes a read just added; drops the scanner once the head is
/// complete or hopeless, so later reads cost one branch.
fn scan(scanner: &mut Option<HeadScanner>, head: &OnceLock<WireHead>, read: &[u8]) {
    let Some(s) = scanner else { return };
    // End of stream: no head will come.
    if read.is_empty() {
        *scanner = None;
        return;
    }
    match s.feed(read) {
        Scan::NeedMore => {}
        Scan::Done(wire) => {
            let _ = head.set(wire);
            *scanner = None;
        }
        Scan::GaveUp => *scanner = None,
    }
}

impl fmt::Debug for GatedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedStream")
            .field("inner", &self.inner)
            .field("peer", &self.peer)
            .field("head", &self.head.get())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for GatedStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let Some(tracker) = this.tracker else {
            return read_and_scan(this.inner, this.scanner, this.head, cx, buf);
        };
        if tracker.killed() {
            return Poll::Ready(Err(closed_by_gate(&this.inner)));
        }
        let before = buf.filled().len();
        match read_and_scan(this.inner.as_mut(), this.scanner, this.head, cx, buf) {
            Poll::Pending => {
                if tracker.killed_or_register(cx) {
                    return Poll::Ready(Err(closed_by_gate(&this.inner)));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                tracker.on_read(buf.filled().get(before..).unwrap_or_default());
                Poll::Ready(Ok(()))
            }
            err => err,
        }
    }
}

/// Reads, and scans the bytes read for the first head's wire facts.
#[inline]
fn read_and_scan(
    inner: Pin<&mut TcpStream>,
    scanner: &mut Option<HeadScanner>,
    head: &OnceLock<WireHead>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if scanner.is_none() {
        return inner.poll_read(cx, buf);
    }
    let before = buf.filled().len();
    let res = ready!(inner.poll_read(cx, buf));
    if res.is_ok() {
        // Before returning: the server parses these bytes only after
        // this read, so the head is known by the time it dispatches.
        let read = buf.filled().get(before..).unwrap_or_default();
        scan(scanner, head, read);
    }
    Poll::Ready(res)
}

/// The error a stream the gate closed returns; the reset spares the
/// server a `TIME_WAIT`.
fn closed_by_gate(stream: &TcpStream) -> io::Error {
    let _ = stream.set_zero_linger();
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection closed by the gate (request head deadline, keep-alive time or descriptor budget)",
    )
}

impl AsyncWrite for GatedStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        let Some(tracker) = this.tracker else {
            return this.inner.poll_write(cx, buf);
        };
        if tracker.killed() {
            return Poll::Ready(Err(closed_by_gate(&this.inner)));
        }
        let res = this.inner.as_mut().poll_write(cx, buf);
        watch_write(tracker, cx, &this.inner, res, |n| buf.get(..n))
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        let Some(tracker) = this.tracker else {
            return this.inner.poll_write_vectored(cx, bufs);
        };
        if tracker.killed() {
            return Poll::Ready(Err(closed_by_gate(&this.inner)));
        }
        let res = this.inner.as_mut().poll_write_vectored(cx, bufs);
        // The start of a response is in the first slice with bytes.
        let first = bufs.iter().find(|b| !b.is_empty());
        watch_write(tracker, cx, &this.inner, res, |n| {
            first.map(|b| &b[..n.min(b.len())])
        })
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// After a write: tells the tracker what went out, or keeps the waker of
/// a write that must wait, so that a close by the gate reaches it.
#[inline]
fn watch_write<'a>(
    tracker: &mut Tracker,
    cx: &Context<'_>,
    stream: &TcpStream,
    res: Poll<io::Result<usize>>,
    written: impl FnOnce(usize) -> Option<&'a [u8]>,
) -> Poll<io::Result<usize>> {
    match res {
        Poll::Pending if tracker.killed_or_register(cx) => Poll::Ready(Err(closed_by_gate(stream))),
        Poll::Ready(Ok(n)) => {
            tracker.on_write(written(n).unwrap_or_default());
            Poll::Ready(Ok(n))
        }
        other => other,
    }
}
