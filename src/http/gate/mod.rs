//! The connection gate: refuses connections at accept, before a byte is
//! read, watches each admitted connection's request cycle against its
//! deadlines, and serves an axum router through it in one call.
//!
//! `gate` holds the admission policy and the counts, `builder` its
//! configuration, `listener` the accept loop, `stream` an admitted
//! connection, `watch` the deadlines and the sweep; the adapters make the
//! listener what axum and tonic serve.

#[cfg(feature = "axum")]
pub(crate) mod axum_listener;
pub(crate) mod builder;
pub(crate) mod deadlines;
#[allow(clippy::module_inception)]
pub(crate) mod gate;
pub(crate) mod listener;
#[cfg(feature = "axum")]
pub(crate) mod serve;
pub(crate) mod stream;
#[cfg(feature = "tonic")]
pub(crate) mod tonic_incoming;
pub(crate) mod tracker;
pub(crate) mod watch;

#[cfg(feature = "axum")]
pub use axum_listener::AxumListener;
pub use builder::GateBuilder;
pub use deadlines::Deadlines;
pub use gate::{AcceptVerdict, Gate, GateStats};
pub use listener::GatedListener;
#[cfg(feature = "axum")]
pub use serve::{HEADER_READ_TIMEOUT, Serve, WithGracefulShutdown, serve};
pub use stream::GatedStream;
#[cfg(feature = "tonic")]
pub use tonic_incoming::GatedIncoming;
