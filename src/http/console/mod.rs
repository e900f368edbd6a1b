//! A live operator console (feature `console`): [`Console`] makes a
//! router serving one page that shows a guard at a glance and lets an
//! operator lift bans.
//!
//! `auth` checks the token, sessions and CSRF values; `events` keeps the
//! latest events for the page; `guesses` bars an
//! address that sends wrong tokens; `history` keeps the
//! last five minutes of samples; `state` is what the page polls;
//! `console` is the builder and the route. The page itself is
//! `page.html`, `page.js` and `page.css`, embedded in the crate.

mod auth;
#[allow(clippy::module_inception)]
mod console;
mod events;
mod guesses;
mod history;
mod state;

pub use console::Console;
pub use events::EventLog;
