//! Following one connection's bytes both ways: where its request heads
//! begin and end, whether it is HTTP/1 at all, and what each read and
//! write does to its phase.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Context;

use super::watch::{Epoch, Phase, Watch, unpack};

/// What a connection speaks, as far as the gate can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// No byte from the client yet.
    Unknown,
    /// HTTP/1.x: the gate follows each head and response.
    Http1,
    /// TLS, HTTP/2 or anything else: watched until the server first
    /// answers it, then left alone.
    Opaque,
    /// No longer followed (upgraded, or past an opaque handshake).
    Done,
}

/// The stream's side of its [`Watch`]: follows the bytes both ways and
/// moves the phase.
#[derive(Debug)]
pub(crate) struct Tracker {
    watch: Arc<Watch>,
    epoch: Epoch,
    pub(super) kind: Kind,
    end: HeadEnd,
    /// The connection's first bytes, to tell HTTP/2's preface.
    start: [u8; PREFACE.len()],
    started: usize,
}

/// How HTTP/2 with prior knowledge opens: a "head" the tracker would take
/// for HTTP/1's.
pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

impl Tracker {
    pub(crate) fn new(watch: Arc<Watch>, epoch: Epoch) -> Self {
        Tracker {
            watch,
            epoch,
            kind: Kind::Unknown,
            end: HeadEnd::default(),
            start: [0; PREFACE.len()],
            started: 0,
        }
    }

    /// Keeps the connection's first bytes; whether they are HTTP/2's
    /// preface.
    fn is_http2(&mut self, read: &[u8]) -> bool {
        let n = read.len().min(self.start.len() - self.started);
        self.start[self.started..self.started + n].copy_from_slice(&read[..n]);
        self.started += n;
        self.start[..self.started] == *PREFACE
    }

    /// Whether the gate closed the connection (checked before each read
    /// and write).
    pub(crate) fn killed(&self) -> bool {
        self.kind != Kind::Done && self.watch.phase() == Phase::Killed
    }

    /// For a read or write that must wait: whether the gate closed the
    /// connection, else keeps the waker so that a close wakes the task.
    pub(crate) fn killed_or_register(&self, cx: &Context<'_>) -> bool {
        self.kind != Kind::Done && self.watch.killed_or_register(cx)
    }

    /// Bytes the client sent.
    pub(crate) fn on_read(&mut self, read: &[u8]) {
        let Some(&first) = read.first() else { return };
        match self.kind {
            Kind::Done => return,
            Kind::Unknown => {
                // A request line starts with a method, a token (or a
                // stray line end): anything an HTTP/1 server would answer
                // as a request is followed as one, or a made-up method
                // would buy an untracked connection. TLS starts with
                // 0x16; HTTP/2's preface with "PRI", which the first
                // answer sorts out (`on_write`).
                self.kind = if is_token(first) || first == b'\r' || first == b'\n' {
                    Kind::Http1
                } else {
                    Kind::Opaque
                };
            }
            _ => {}
        }
        match (self.kind, self.watch.phase()) {
            (Kind::Opaque, Phase::Fresh) => self.watch.add_head_bytes(read.len()),
            (Kind::Http1, Phase::Fresh | Phase::Next) => {
                let http2 = self.watch.phase() == Phase::Fresh && self.is_http2(read);
                if self.end.feed(read) {
                    self.watch.enter(Phase::Request, self.epoch.now(), 0);
                    if http2 {
                        // Frames from now on: the server's own limits apply.
                        self.kind = Kind::Done;
                    }
                } else {
                    self.watch.add_head_bytes(read.len());
                }
            }
            (Kind::Http1, Phase::Idle) => {
                self.end = HeadEnd::default();
                let now = self.epoch.now();
                if self.end.feed(read) {
                    self.watch.enter(Phase::Request, now, 0);
                } else {
                    let n = u32::try_from(read.len()).unwrap_or(u32::MAX);
                    self.watch.enter(Phase::Next, now, n);
                }
            }
            _ => {}
        }
    }

    /// Bytes the server wrote (the start of one write).
    pub(crate) fn on_write(&mut self, written: &[u8]) {
        if written.is_empty() {
            return;
        }
        match (self.kind, self.watch.phase()) {
            (Kind::Opaque, Phase::Fresh) => {
                // The server answered the handshake: past it the gate
                // cannot see requests.
                self.watch.enter(Phase::Request, self.epoch.now(), 0);
                self.kind = Kind::Done;
            }
            (Kind::Http1, Phase::Request) => {
                // Any write ends the request phase, whatever it starts
                // with (a pipelined response's head can follow the end of
                // the one before in one write): trusting what a write looks
                // like would let a client steer the tracker.
                match written.strip_prefix(b"HTTP/1.").and_then(|r| r.get(2..5)) {
                    // Switching protocols: a WebSocket or such from now on.
                    Some(b"101") => self.kind = Kind::Done,
                    // 100 Continue: the body comes next.
                    Some(b"100") => {}
                    _ => self.watch.enter(Phase::Idle, self.epoch.now(), 0),
                }
            }
            (Kind::Http1, Phase::Idle) => {
                // A response under way keeps the connection from idling.
                let now = self.epoch.now();
                if unpack(self.watch.state.load(Relaxed)).1 != now {
                    self.watch.enter(Phase::Idle, now, 0);
                }
            }
            _ => {}
        }
    }
}

/// An HTTP token character (RFC 9110 `tchar`), as a method is made of.
pub(super) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Finds where a request head ends (an empty line after at least one
/// that is not), across reads, as `httparse` does: a line ends at LF,
/// with or without CR, and empty lines before the request line are
/// skipped.
#[derive(Debug, Default)]
pub(super) struct HeadEnd {
    /// A line with content has been seen.
    lines: bool,
    /// The line under way has a byte other than CR.
    partial: bool,
}

impl HeadEnd {
    /// Feeds the next bytes; whether the head ended in them.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', bytes) {
            let content = self.partial || bytes[start..nl].iter().any(|&b| b != b'\r');
            if !content && self.lines {
                return true;
            }
            self.lines |= content;
            self.partial = false;
            start = nl + 1;
        }
        self.partial |= bytes[start..].iter().any(|&b| b != b'\r');
        false
    }
}

/// For the fuzz target of the gate's read path: a tracker fed `events` in
/// order (`true`: bytes the client sent; `false`: bytes the server wrote);
/// whether it ended in the request phase, and whether it stopped
/// following the connection.
pub(crate) fn drive(events: &[(bool, &[u8])]) -> (bool, bool) {
    let epoch = Epoch::new();
    let watch = Arc::new(Watch::new("192.0.2.1".parse().expect("address"), 0));
    let mut t = Tracker::new(Arc::clone(&watch), epoch);
    for &(from_client, bytes) in events {
        if from_client {
            t.on_read(bytes);
        } else {
            t.on_write(bytes);
        }
    }
    (watch.phase() == Phase::Request, t.kind == Kind::Done)
}
