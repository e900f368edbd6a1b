//! The console's builder and its one route: the page, its script and
//! style, the state it polls and the actions it posts, told apart by the
//! query so that the console works wherever it is mounted.

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    RETRY_AFTER, SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Method, StatusCode};

use super::auth::{Auth, COOKIE_NAME, Caller, SESSION_LIFE};
use super::events::EventLog;
use super::guesses::Guesses;
use super::history::{History, Sample};
use super::state::State;
use crate::http::identify::peer::peer;
use crate::http::{Gate, Guard};
use crate::{Clock, CoarseClock, ConfigError, IpPrefix};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The longest ban the console sets: 30 days.
const MAX_BAN: Duration = Duration::from_secs(30 * 86_400);

/// Every answer's security headers: nothing but this origin's script,
/// style and requests; never in a frame; no referrer; never cached.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

/// A live operator console for a [`Guard`] (feature `console`): one page
/// of HTML, CSS and JavaScript, served by the crate itself (no other
/// origin, no CDN: it works air-gapped), that shows at a glance whether
/// the service is under attack and why; the last five minutes of request
/// rate, refusals by reason, latency and the overload limit as charts; the
/// flagged clusters in words with their share now and before; the worst
/// offenders with their score and reasons; the bans, each with an unban
/// button; rule hits and shadow refusals; and, given a [`Gate`], its
/// connection counts. It polls once a second.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use floodguard::http::{Console, Guard, Scoring};
///
/// let guard = Guard::builder().default_rules().scoring(Scoring::new()).build()?;
/// let gate = guard.gate().max_connections_per_ip(32).build()?;
/// let console = Console::new(guard.clone())
///     .token(std::env::var("CONSOLE_TOKEN")?) // 16+ characters
///     .gate(&gate)
///     .router()?;
/// // An internal address only: open http://127.0.0.1:9090/?token=...
/// let internal = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
/// tokio::spawn(async move { axum::serve(internal, console).await });
/// # Ok(())
/// # }
/// ```
///
/// Mount the router at the root of an internal listener, or nest it
/// (`Router::new().nest("/console", router)`, then open
/// `/console?token=...`): every URL the page uses is relative to its own.
///
/// **Access.** Every answer needs the token: opening the page with
/// `?token=...` exchanges it (compared in constant time) for a session
/// cookie (`HttpOnly`, `SameSite=Strict`, 12 hours, signed with a key
/// drawn when the router is built, so restarting ends every session) and
/// redirects to the page without it; programs may send
/// `Authorization: Bearer <token>` instead. Without either the answer is
/// 401. Actions (unban, ban) from a session must carry the session's CSRF
/// value in an `X-Floodguard-Csrf` header and come from this origin
/// (`Origin`, `Sec-Fetch-Site`), else 403 with the reason. Ten wrong
/// tokens a minute from one address (all callers together when the
/// server records no peer address) bar it for about a minute: its
/// sign-ins are answered 429 with `Retry-After`, the right token's too.
///
/// **Safety of the page.** Its answers carry a `Content-Security-Policy`
/// allowing only this origin's script, style and requests
/// (`frame-ancestors 'none'`), `X-Frame-Options: DENY`,
/// `Referrer-Policy: no-referrer` and `Cache-Control: no-store`. Whatever
/// came from clients (user-agent products in cluster names, routes) is
/// written into the page as text, never as markup.
///
/// **Its history** is one sample of the guard's counters a second (on
/// the guard's clock), 300 kept: taken by a task the router spawns (when
/// built inside a Tokio runtime; it ends when the router is dropped) and
/// by each poll.
pub struct Console<C = CoarseClock> {
    guard: Guard<C>,
    token: Option<String>,
    gate: Option<Gate>,
    events: Option<EventLog>,
}

impl<C> std::fmt::Debug for Console<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("gate", &self.gate.is_some())
            .field("events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: Clock + Send + Sync + 'static> Console<C> {
    /// A console for `guard`; set its [`token`](Self::token) before
    /// building the [`router`](Self::router).
    pub fn new(guard: Guard<C>) -> Self {
        Console {
            guard,
            token: None,
            gate: None,
            events: None,
        }
    }

    /// The operator's token: 16 to 256 characters of `A-Z a-z 0-9 - . _
    /// ~` (32 random hex digits, say), checked by [`router`](Self::router).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Shows `gate`'s connection counts too.
    pub fn gate(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.clone());
        self
    }

    /// Lists the latest events `log` took from the guard (attack started
    /// and ended, what it flagged, bans), newest first.
    pub fn events(mut self, log: &EventLog) -> Self {
        self.events = Some(log.clone());
        self
    }

    /// The console's router: one route, `/`, to mount on an internal
    /// listener or nest under a path.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] (field `token`) when no token was set,
    /// or it is shorter than 16 characters, longer than 256, or has
    /// characters outside `A-Z a-z 0-9 - . _ ~`.
    pub fn router<S>(self) -> Result<Router<S>, ConfigError>
    where
        S: Clone + Send + Sync + 'static,
    {
        let auth = Auth::new(self.token.unwrap_or_default())?;
        let inner = Arc::new(Inner {
            guard: self.guard,
            gate: self.gate,
            events: self.events,
            auth,
            guesses: Guesses::new()?,
            history: History::default(),
        });
        inner.sample();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sampler(Arc::downgrade(&inner)));
        }
        let route = axum::routing::any(move |req: Request| {
            let inner = Arc::clone(&inner);
            async move { inner.answer(req).await }
        });
        Ok(Router::new().route("/", route))
    }
}

/// Samples the guard four times a second of real time (a sample is
/// recorded once per second of the guard's clock), until the console is
/// dropped.
async fn sampler<C: Clock + Send + Sync + 'static>(inner: Weak<Inner<C>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match inner.upgrade() {
            Some(inner) => inner.sample(),
            None => return,
        }
    }
}

struct Inner<C> {
    guard: Guard<C>,
    gate: Option<Gate>,
    events: Option<EventLog>,
    auth: Auth,
    guesses: Guesses,
    history: History,
}

/// What a request asks for, from its method and query.
enum Ask<'a> {
    Login(&'a str),
    Page,
    Script,
    Style,
    State,
    Unban,
    Ban,
    Unknown,
}

impl<'a> Ask<'a> {
    fn of(method: &Method, query: &'a str) -> Ask<'a> {
        let get = matches!(*method, Method::GET | Method::HEAD);
        match (get, query) {
            (true, "") => Ask::Page,
            (true, "js") => Ask::Script,
            (true, "css") => Ask::Style,
            (true, "api=state") => Ask::State,
            (false, "api=unban") if method == Method::POST => Ask::Unban,
            (false, "api=ban") if method == Method::POST => Ask::Ban,
            (true, q) => q.strip_prefix("token=").map_or(Ask::Unknown, Ask::Login),
            _ => Ask::Unknown,
        }
    }
}

impl<C: Clock + Send + Sync + 'static> Inner<C> {
    fn sample(&self) {
        let now = self.guard.now();
        if self.history.due(now) {
            let stats = self.guard.stats();
            let detection = self.guard.detection();
            let gate = self.gate.as_ref().map(Gate::stats);
            self.history
                .record(Sample::of(now, &stats, detection.as_ref(), gate.as_ref()));
        }
    }

    async fn answer(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let query = parts.uri.query().unwrap_or("");
        let ask = Ask::of(&parts.method, query);
        if let Ask::Unknown = ask {
            return text(StatusCode::NOT_FOUND, "404: the console has no such page");
        }
        // A sign-in or a bearer token is a guess until it proves right.
        let peer = peer(&parts.extensions).map(|p| p.addr.ip());
        let guessing = matches!(ask, Ask::Login(_)) || parts.headers.contains_key(AUTHORIZATION);
        if guessing {
            if let Some(wait) = self.guesses.barred(peer) {
                let mut r = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "429: too many wrong tokens from this address; try again in a minute",
                );
                let secs = wait.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    r.headers_mut().insert(RETRY_AFTER, v);
                }
                return r;
            }
        }
        if let Ask::Login(token) = ask {
            return self.login(token, peer);
        }
        let caller = self.auth.caller(&parts.headers);
        if caller == Caller::Nobody {
            if guessing {
                self.guesses.wrong(peer);
            }
            return text(
                StatusCode::UNAUTHORIZED,
                "401: this console needs its token. Open its address with ?token=<token> \
                 (the token you gave Console::token), or send Authorization: Bearer <token>.",
            );
        }
        match ask {
            Ask::Page => asset(PAGE, "text/html; charset=utf-8"),
            Ask::Script => asset(SCRIPT, "text/javascript; charset=utf-8"),
            Ask::Style => asset(STYLE, "text/css; charset=utf-8"),
            Ask::State => self.state(caller),
            Ask::Unban | Ask::Ban => {
                if let Err(why) = self.auth.check_action(caller, &parts.headers) {
                    return text(StatusCode::FORBIDDEN, &format!("403: refused: {why}"));
                }
                let Ok(body) = axum::body::to_bytes(body, 256).await else {
                    return text(StatusCode::BAD_REQUEST, "400: the body is over 256 bytes");
                };
                let body = String::from_utf8_lossy(&body);
                if let Ask::Unban = ask {
                    self.unban(body.trim())
                } else {
                    self.ban(body.trim())
                }
            }
            // Answered above.
            Ask::Login(_) | Ask::Unknown => text(StatusCode::NOT_FOUND, "404"),
        }
    }

    fn login(&self, token: &str, peer: Option<IpAddr>) -> Response {
        if !self.auth.token_is(token) {
            self.guesses.wrong(peer);
            return text(
                StatusCode::UNAUTHORIZED,
                "401: wrong token. Open the console with the token you gave Console::token.",
            );
        }
        let cookie = format!(
            "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.auth.new_session(),
            SESSION_LIFE.as_secs()
        );
        let mut r = text(StatusCode::SEE_OTHER, "signed in");
        // The same page without the token in the address bar or history.
        r.headers_mut()
            .insert(LOCATION, HeaderValue::from_static("?"));
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(SET_COOKIE, v);
        }
        r
    }

    fn state(&self, caller: Caller) -> Response {
        self.sample();
        let csrf = match caller {
            Caller::Session(id) => Some(self.auth.csrf(&id)),
            _ => None,
        };
        let state = State::new(
            self.guard.snapshot(),
            self.history.series(),
            self.gate.as_ref().map(Gate::stats),
            csrf,
            self.events.as_ref().map(EventLog::shown),
        );
        match serde_json::to_vec(&state) {
            Ok(body) => respond(StatusCode::OK, "application/json", Body::from(body)),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("500: the state did not serialise: {e}"),
            ),
        }
    }

    fn unban(&self, prefix: &str) -> Response {
        let Ok(prefix) = prefix.parse::<IpPrefix>() else {
            return text(
                StatusCode::BAD_REQUEST,
                "400: the body must be an address or a prefix (192.0.2.7, 192.0.2.0/24)",
            );
        };
        let lifted = self.guard.unban(&prefix);
        tracing::info!(client = %prefix, lifted, "floodguard: console unban");
        json(&serde_json::json!({ "prefix": prefix, "lifted": lifted }))
    }

    fn ban(&self, body: &str) -> Response {
        let mut words = body.split_ascii_whitespace();
        let prefix = words.next().and_then(|p| p.parse::<IpPrefix>().ok());
        let secs = words.next().and_then(|s| s.parse::<u64>().ok());
        let (Some(prefix), Some(secs), None) = (prefix, secs, words.next()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "400: the body must be a prefix and seconds: \"192.0.2.0/24 3600\"",
            );
        };
        let duration = Duration::from_secs(secs).min(MAX_BAN);
        if duration.is_zero() {
            return text(StatusCode::BAD_REQUEST, "400: a ban lasts 1 second or more");
        }
        self.guard.ban(prefix, duration);
        json(&serde_json::json!({
            "prefix": prefix,
            "banned": true,
            "duration": duration.as_secs_f64(),
        }))
    }
}

fn json(v: &serde_json::Value) -> Response {
    respond(
        StatusCode::OK,
        "application/json",
        Body::from(v.to_string()),
    )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    respond(StatusCode::OK, content_type, Body::from(body))
}

fn text(status: StatusCode, body: &str) -> Response {
    respond(
        status,
        "text/plain; charset=utf-8",
        Body::from(body.to_owned()),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}
