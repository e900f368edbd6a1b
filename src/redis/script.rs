//! Lua scripts that run the algorithms on the Redis server, atomically.
//!
//! One script per algorithm, each touching only `KEYS[1]`, so a cluster can
//! route every call by its key. The scripts decide exactly as the Rust state
//! machines in [`crate::algo`] do, in integer microseconds: Lua numbers are
//! doubles, exact below 2^53, and epoch microseconds (about 2^51) fit where
//! epoch nanoseconds would not. Time is the server's `TIME` unless the
//! caller passes `now_us` (tests); Redis 7 replicates a script's effects,
//! not the script, so reading the clock in a writing script is safe.
//!
//! # Call layout
//!
//! `EVALSHA <sha> 1 <key> <op> <cost> <p1> <p2> [now_us]`, where `op` is
//! `check`, `peek` or `push`, `cost` a decimal integer (negative only for
//! `push`) and `now_us` is absent or empty to use the server's clock:
//!
//! | script | `p1` | `p2` | state (one hash) |
//! |---|---|---|---|
//! | sliding window | limit | window in µs | `e` window index, `c` current count, `p` previous count |
//! | GCRA | burst | emission interval `T` in **ns** | `t` TAT in whole µs, `n` the TAT's sub-µs part in ns (0–999) |
//!
//! Every reply is `[allowed (0/1), remaining, reset_after_us, retry_after_us]`,
//! with `retry_after_us = -1` for a cost that can never be admitted.
//!
//! # Rounding compared with the Rust algorithms
//!
//! * Durations in replies are the Rust nanosecond values rounded **up** to
//!   the microsecond, so a client told to wait is never early.
//! * The sliding window runs on whole microseconds: a window that is not a
//!   whole number of µs is rounded up, which only makes the server
//!   stricter. With a whole-µs window below 2^32 ns (4.3 s) and whole-µs
//!   times, admissions and counts are identical. Longer windows are exact on
//!   the server, while the Rust side reads time in units of 2^s ns (see
//!   [`SlidingWindow::window`]), so the two can differ within one such unit
//!   (at most 2^27 ns for the longest windows) of an admission threshold.
//! * GCRA keeps `T` in ns and the TAT to the nanosecond (whole µs plus a
//!   0–999 ns part), so a fractional-µs `T` accumulates no error: admissions
//!   match the Rust GCRA exactly at whole-µs times.
//! * Exactness needs the products to stay below 2^53: `limit · window_µs`
//!   (104 days at a limit of 1000 per window) and `burst · T` in ns
//!   (104 days). Beyond, doubles round by less than one part in 2^52.
//! * The sliding window reads a state up to `max(1 s / W, 3)` windows ahead
//!   of `now` as current, like [`SlidingWindow::max_ahead`], but without the
//!   Rust cap at a quarter of the epoch range: the server stores the full
//!   window index, which never wraps.
//!
//! `push` semantics: the sliding window gives back from the current window
//! only (`cur = max(0, cur + n)`); GCRA sets `TAT = max(now, max(TAT, now) +
//! n·T)`. A give-back on a missing key creates nothing.
//!
//! [`SlidingWindow::window`]: crate::algo::SlidingWindow::window
//! [`SlidingWindow::max_ahead`]: crate::algo::SlidingWindow::max_ahead
// The limiter that drives these scripts comes in a later change; until then
// only the tests use them.

use crate::algo::Algorithm;
use crate::decision::Decision;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};

/// What a script does with a key's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScriptOp {
    /// Decide, and charge the cost if admitted (strict mode).
    Check(u64),
    /// Decide as `Check` would, charge nothing.
    #[cfg(test)]
    Peek(u64),
    /// Charge this many units whatever the limit says (negative: give back,
    /// never below an empty state), then report as `Peek(1)` would. The
    /// near-cache pushes what it admitted locally this way.
    Push(i64),
}

/// A script's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    pub(crate) reset_after_us: u64,
    /// `None` for a cost that can never be admitted.
    pub(crate) retry_after_us: Option<u64>,
}

impl Reply {
    /// The reply as a [`Decision`] for a limit of `limit`.
    pub(crate) fn decision(&self, limit: u64) -> Decision {
        let ns = |us: u64| us.saturating_mul(1000);
        let reset = ns(self.reset_after_us);
        let room = (self.remaining, 1);
        match (self.allowed, self.retry_after_us) {
            (true, _) => Decision::allow(limit, self.remaining, 1, reset),
            (false, None) => Decision::never(limit, room, reset),
            // A finite wait, however long, is not "never".
            (false, Some(retry)) => Decision::deny(limit, room, reset, ns(retry).min(u64::MAX - 1)),
        }
    }
}

/// Extra life given to every key past the instant its state stops
/// mattering, so that a clock read a little late (a failover to a replica
/// whose clock lags) still finds the state. Keep in step with `MARGIN_MS`
/// in both scripts.
#[cfg(test)]
const TTL_MARGIN_MS: u64 = 1000;

/// The first lines of both scripts: the key, the TTL margin, and integer
/// formatting (Lua would write large numbers in exponent notation).
macro_rules! lua_head {
    () => {
        r#"
local MARGIN_MS = 1000
local function int(x) return string.format('%.0f', x) end
local key = KEYS[1]
"#
    };
}

/// `now` in µs: the server's clock, or `ARGV[5]` when given (tests).
macro_rules! lua_now {
    () => {
        r#"local now
if ARGV[5] == nil or ARGV[5] == '' then
  -- Redis < 5 replicates the script itself unless told otherwise.
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[5])
  if not now then return redis.error_reply('ERR floodguard: bad now_us') end
end
"#
    };
}

/// Sliding window; see the module docs for the call layout. The decision
/// mirrors `SlidingWindow::check`/`refuse` line by line, in µs.
const SLIDING_WINDOW_LUA: &str = concat!(
    lua_head!(),
    r#"local op, n, limit, w = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if (op ~= 'check' and op ~= 'peek' and op ~= 'push') or not n or not limit or not w
    or limit < 1 or w < 1 or (n < 0 and op ~= 'push') then
  return redis.error_reply('ERR floodguard: bad sliding window arguments')
end
"#,
    lua_now!(),
    r#"
-- The view: the window `now` falls in, the offset into it, the counts that
-- apply there, and `lead` (µs from `now` to the instant judged).
local epoch = math.floor(now / w)
local x = now - epoch * w
local cur, prev, lead = 0, 0, 0
local s = redis.call('HMGET', key, 'e', 'c', 'p')
local stored = tonumber(s[1])
if stored then
  local behind = epoch - stored
  if behind == 0 then
    cur, prev = tonumber(s[2]) or 0, tonumber(s[3]) or 0
  elseif behind == 1 then
    prev = tonumber(s[2]) or 0
  elseif behind < 0 and -behind <= math.max(math.floor(1000000 / w), 3) then
    -- The state is from a later window (the clock stepped back): judge at
    -- the start of that window rather than wipe its counts.
    cur, prev = tonumber(s[2]) or 0, tonumber(s[3]) or 0
    lead = -behind * w - x
    epoch, x = stored, 0
  end
end
local cap = limit * w

local function reset_after(c)
  local to_end = lead + w - x
  if c > 0 then return to_end + w elseif prev > 0 then return to_end end
  return 0
end

-- Wait until `k` fits, for a `k` that does not fit now (k <= limit).
local function retry_after(k)
  if cur + k <= limit and prev > 0 then
    -- Same window: the previous window's weight falls as x grows.
    local at = w - math.min(math.floor((limit - cur - k) * w / prev), w)
    if at < w then return lead + at - x end
  end
  -- Next window: today's count becomes the previous one.
  local fits = w
  if cur > 0 then fits = math.floor((limit - k) * w / cur) end
  return lead + (w - x) + (w - math.min(fits, w))
end

local function decide(k)
  local used = cur * w + prev * (w - x)
  if k <= limit and used + k * w <= cap then
    return {1, math.floor((cap - used - k * w) / w), reset_after(cur + k), 0}
  end
  local r = {0, math.floor(math.max(cap - used, 0) / w), reset_after(cur), -1}
  if k <= limit then r[4] = retry_after(k) end
  return r
end

local function save()
  redis.call('HSET', key, 'e', int(epoch), 'c', int(cur), 'p', int(prev))
  -- The counts matter until the end of the window after `epoch`.
  redis.call('PEXPIRE', key, int(math.ceil((lead + 2 * w - x) / 1000) + MARGIN_MS))
end

if op == 'push' then
  if stored or n > 0 then
    cur = math.max(cur + n, 0)
    save()
  end
  return decide(1)
end
local r = decide(n)
if op == 'check' and r[1] == 1 then
  cur = cur + n
  save()
end
return r
"#
);

/// GCRA; see the module docs for the call layout. The decision mirrors
/// `Gcra::check`/`refuse`, with durations in ns relative to `now` (small,
/// hence exact) and the TAT stored as whole µs plus a ns remainder.
const GCRA_LUA: &str = concat!(
    lua_head!(),
    r#"local op, n, burst, t = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if (op ~= 'check' and op ~= 'peek' and op ~= 'push') or not n or not burst or not t
    or burst < 1 or t < 1 or (n < 0 and op ~= 'push') then
  return redis.error_reply('ERR floodguard: bad GCRA arguments')
end
"#,
    lua_now!(),
    r#"
local tol = burst * t
local s = redis.call('HMGET', key, 't', 'n')
local tat = tonumber(s[1])
-- max(TAT, now) - now, in ns.
local backlog = 0
if tat then backlog = math.max((tat - now) * 1000 + (tonumber(s[2]) or 0), 0) end

-- ns to µs, rounded up: a wait is never reported short.
local function us(ns) return math.ceil(ns / 1000) end

local function decide(k)
  if k <= burst and backlog + k * t <= tol then
    local after = backlog + k * t
    return {1, math.floor((tol - after) / t), us(after), 0}
  end
  local r = {0, math.floor(math.max(tol - backlog, 0) / t), us(backlog), -1}
  if k <= burst then r[4] = us(backlog + k * t - tol) end
  return r
end

-- Stores TAT = now + after (ns), kept until the TAT has passed.
local function save(after)
  local whole = math.floor(after / 1000)
  redis.call('HSET', key, 't', int(now + whole), 'n', int(after - whole * 1000))
  redis.call('PEXPIRE', key, int(math.ceil(after / 1000000) + MARGIN_MS))
end

if op == 'push' then
  if tat or n > 0 then
    backlog = math.max(backlog + n * t, 0)
    save(backlog)
  end
  return decide(1)
end
local r = decide(n)
if op == 'check' and r[1] == 1 then save(backlog + n * t) end
return r
"#
);

/// The two scripts, loaded on first use and again after a `SCRIPT FLUSH`.
pub(crate) struct Scripts {
    sliding_window: Script,
    gcra: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            sliding_window: Script::new(SLIDING_WINDOW_LUA),
            gcra: Script::new(GCRA_LUA),
        }
    }

    /// The `EVALSHA` command for `op` on `key`. `now_us` replaces the
    /// server's clock (tests only).
    pub(crate) fn cmd(
        &self,
        algorithm: &Algorithm,
        key: &str,
        op: ScriptOp,
        now_us: Option<u64>,
    ) -> redis::Cmd {
        let (script, p1, p2) = match algorithm {
            Algorithm::SlidingWindow(a) => (
                &self.sliding_window,
                a.limit(),
                // Whole µs, rounded up: never a looser limit than asked.
                crate::clock::duration_nanos(a.window()).div_ceil(1000),
            ),
            Algorithm::Gcra(a) => (
                &self.gcra,
                a.burst(),
                crate::clock::duration_nanos(a.interval()),
            ),
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(1).arg(key);
        match op {
            ScriptOp::Check(n) => cmd.arg("check").arg(n),
            #[cfg(test)]
            ScriptOp::Peek(n) => cmd.arg("peek").arg(n),
            ScriptOp::Push(n) => cmd.arg("push").arg(n),
        };
        cmd.arg(p1).arg(p2);
        if let Some(now) = now_us {
            cmd.arg(now);
        }
        cmd
    }

    /// Runs `cmds` in one pipeline; on `NOSCRIPT` loads the scripts and
    /// retries once.
    ///
    /// Only the commands that got `NOSCRIPT` are sent again: the others
    /// already ran (a flush can land between two commands of a pipeline),
    /// and running them twice would charge twice.
    pub(crate) async fn run<Con: redis::aio::ConnectionLike>(
        &self,
        con: &mut Con,
        cmds: &[redis::Cmd],
    ) -> redis::RedisResult<Vec<Reply>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let mut results = pipeline(con, cmds.iter()).await?;
        let missing: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| is_noscript(r))
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            self.load(con).await?;
            let again = pipeline(con, missing.iter().map(|&i| &cmds[i])).await?;
            for (i, r) in missing.into_iter().zip(again) {
                results[i] = r;
            }
        }
        results
            .into_iter()
            .map(|r| r.and_then(parse_reply))
            .collect()
    }

    /// Loads both scripts in one round trip: a flush drops both, and the
    /// next batch may need either.
    async fn load<Con: redis::aio::ConnectionLike>(&self, con: &mut Con) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for code in [SLIDING_WINDOW_LUA, GCRA_LUA] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(code);
        }
        let hashes: Vec<String> = pipe.query_async(con).await?;
        let expected = [self.sliding_window.get_hash(), self.gcra.get_hash()];
        if hashes.iter().map(String::as_str).ne(expected) {
            // A retry would fail the same way; say why instead.
            return Err(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "floodguard: SCRIPT LOAD returned unexpected hashes",
                format!("{hashes:?}, expected {expected:?}"),
            )));
        }
        Ok(())
    }
}

/// Sends `cmds` as one pipeline and returns each command's own result, so
/// one failed command does not hide the others' outcomes.
async fn pipeline<'a, Con: redis::aio::ConnectionLike>(
    con: &mut Con,
    cmds: impl Iterator<Item = &'a Cmd>,
) -> RedisResult<Vec<RedisResult<Value>>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for cmd in cmds {
        pipe.add_command(cmd.clone());
    }
    let results: Vec<RedisResult<Value>> = pipe.query_async(con).await?;
    if results.len() != pipe.len() {
        return Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "floodguard: pipeline answered the wrong number of commands",
            format!("{} replies to {} commands", results.len(), pipe.len()),
        )));
    }
    Ok(results)
}

fn is_noscript(result: &RedisResult<Value>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
}

/// Reads `[allowed, remaining, reset_after_us, retry_after_us]`; anything
/// else is an error, never a guess.
pub(super) fn parse_reply(value: Value) -> RedisResult<Reply> {
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let fields = match &value {
        Value::Array(items) => match items.as_slice() {
            [a, r, reset, retry] => Some((int(a), int(r), int(reset), int(retry))),
            _ => None,
        },
        _ => None,
    };
    match fields {
        Some((Some(a @ 0..=1), Some(r @ 0..), Some(reset @ 0..), Some(retry @ -1..)))
            if a == 0 || retry == 0 =>
        {
            Ok(Reply {
                allowed: a == 1,
                remaining: r.unsigned_abs(),
                reset_after_us: reset.unsigned_abs(),
                retry_after_us: u64::try_from(retry).ok(),
            })
        }
        _ => Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "floodguard: malformed script reply",
            format!("{value:?}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::{Gcra, SlidingWindow};
    use crate::redis::redis_server::RedisServer;
    use redis::aio::MultiplexedConnection;
    use std::time::Duration;

    /// An epoch-µs instant aligned to none of the tests' windows.
    const BASE_US: u64 = 1_700_000_000_123_457;
    const SEC_US: u64 = 1_000_000;

    async fn connect(server: &RedisServer) -> MultiplexedConnection {
        redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn sliding(limit: u64, window_us: u64) -> SlidingWindow {
        SlidingWindow::new(limit, Duration::from_micros(window_us)).unwrap()
    }

    fn ceil_us(d: Duration) -> u64 {
        u64::try_from(d.as_nanos().div_ceil(1000)).unwrap()
    }

    /// The reply the server owes for the Rust decision `d`: the same counts,
    /// durations rounded up to the µs.
    fn expected(d: &Decision) -> Reply {
        Reply {
            allowed: d.is_allowed(),
            remaining: d.remaining(),
            reset_after_us: ceil_us(d.reset_after()),
            retry_after_us: match d.retry_after() {
                None => Some(0),
                Some(Duration::MAX) => None,
                Some(r) => Some(ceil_us(r)),
            },
        }
    }

    /// A walk through time: mostly small steps forward (`fine`), some
    /// standing still, some long jumps (`coarse`), some steps back (a
    /// lagging clock, which the algorithms tolerate).
    fn advance(rng: &mut fastrand::Rng, now: u64, fine: u64, coarse: u64) -> u64 {
        match rng.u64(..12) {
            0..=2 => now,
            3 => now.saturating_sub(rng.u64(..2 * fine) + 1).max(BASE_US),
            4 => now.saturating_sub(rng.u64(..2 * coarse) + 1).max(BASE_US),
            5 => now + rng.u64(..3 * coarse) + 1,
            _ => now + rng.u64(..fine) + 1,
        }
    }

    /// Mostly small costs, with zero, the whole limit and one too many.
    fn cost(rng: &mut fastrand::Rng, limit: u64) -> u64 {
        match rng.u64(..10) {
            0 => 0,
            1 => limit + 1,
            2 => rng.u64(..limit + 1),
            _ => 1 + rng.u64(..limit.min(3)),
        }
    }

    /// Sends `steps` for `key` in one pipeline (so the test's own pace
    /// cannot let a key expire midway) and returns the replies.
    async fn replay(
        con: &mut MultiplexedConnection,
        scripts: &Scripts,
        algorithm: &Algorithm,
        key: &str,
        steps: &[(u64, ScriptOp)],
    ) -> Vec<Reply> {
        let cmds: Vec<Cmd> = steps
            .iter()
            .map(|&(now, op)| scripts.cmd(algorithm, key, op, Some(now)))
            .collect();
        let replies = scripts.run(con, &cmds).await.unwrap();
        assert_eq!(replies.len(), steps.len());
        replies
    }

    #[tokio::test]
    async fn sliding_window_matches_the_rust_algorithm() {
        let server = RedisServer::start();
        let mut con = connect(&server).await;
        let scripts = Scripts::new();
        let mut rng = fastrand::Rng::with_seed(0x5EED_0001);
        // (limit, window µs); windows below 2^32 ns so the Rust side works
        // in whole ns (no coarser unit) and both sides are exact.
        let params = [
            (1, 1),
            (3, 7),
            (5, 1_000),
            (10, SEC_US),
            (7, 3 * SEC_US),
            (100, 250_000),
            (1_000, 1_234_567),
        ];
        for (limit, window_us) in params {
            let sw = sliding(limit, window_us);
            let algorithm = Algorithm::SlidingWindow(sw);
            let fine = (window_us / limit).max(1);
            let mut now = BASE_US;
            let steps: Vec<(u64, ScriptOp)> = (0..400)
                .map(|_| {
                    now = advance(&mut rng, now, fine, window_us);
                    let n = cost(&mut rng, limit);
                    let op = if rng.u64(..10) < 7 {
                        ScriptOp::Check(n)
                    } else {
                        ScriptOp::Peek(n)
                    };
                    (now, op)
                })
                .collect();
            let key = format!("sw:{limit}:{window_us}");
            let replies = replay(&mut con, &scripts, &algorithm, &key, &steps).await;
            let mut state = None;
            let mut denied = 0;
            for (i, (&(now, op), reply)) in steps.iter().zip(&replies).enumerate() {
                let d = match op {
                    ScriptOp::Check(n) => {
                        let o = sw.check(state, now * 1000, n);
                        state = o.state.or(state);
                        o.decision
                    }
                    ScriptOp::Peek(n) => sw.check(state, now * 1000, n).decision,
                    ScriptOp::Push(_) => unreachable!(),
                };
                denied += usize::from(!d.is_allowed());
                assert_eq!(
                    *reply,
                    expected(&d),
                    "L={limit} W={window_us}µs step {i}: {op:?} at +{}µs",
                    now - BASE_US
                );
                assert_eq!(reply.decision(limit).is_allowed(), d.is_allowed());
            }
            // The walk must reach the interesting cases, not only admit.
            assert!(denied > 40, "L={limit} W={window_us}: {denied} denials");
        }
    }

    #[tokio::test]
    async fn gcra_matches_the_rust_algorithm() {
        let server = RedisServer::start();
        let mut con = connect(&server).await;
        let scripts = Scripts::new();
        let mut rng = fastrand::Rng::with_seed(0x5EED_0002);
        // (rate, period, burst); some intervals are fractional µs
        // (3334 ns, 1500 ns, 142857143 ns) since the server keeps the TAT
        // to the ns.
        let params = [
            (1, Duration::from_secs(1), 1),
            (5, Duration::from_secs(60), 3),
            (3, Duration::from_micros(10), 2),
            (7, Duration::from_secs(1), 10),
            (1_000, Duration::from_secs(1), 50),
            (2, Duration::from_micros(3), 4),
        ];
        for (rate, period, burst) in params {
            let g = Gcra::new(rate, period, burst).unwrap();
            let algorithm = Algorithm::Gcra(g);
            let t = crate::clock::duration_nanos(g.interval());
            let fine = t.div_ceil(1000);
            let mut now = BASE_US;
            let steps: Vec<(u64, ScriptOp)> = (0..400)
                .map(|_| {
                    now = advance(&mut rng, now, fine, fine * burst);
                    let op = match rng.u64(..10) {
                        0..=5 => ScriptOp::Check(cost(&mut rng, burst)),
                        6..=7 => ScriptOp::Peek(cost(&mut rng, burst)),
                        _ => {
                            let b = i64::try_from(burst).unwrap();
                            ScriptOp::Push(i64::try_from(rng.u64(..2 * burst + 1)).unwrap() - b)
                        }
                    };
                    (now, op)
                })
                .collect();
            let key = format!("gcra:{rate}:{period:?}:{burst}");
            let replies = replay(&mut con, &scripts, &algorithm, &key, &steps).await;
            // The TAT in ns, as the Rust GCRA keeps it.
            let mut state: Option<u64> = None;
            let mut denied = 0;
            for (i, (&(now_us, op), reply)) in steps.iter().zip(&replies).enumerate() {
                let now = now_us * 1000;
                let d = match op {
                    ScriptOp::Check(n) => {
                        let o = g.check(state, now, n);
                        state = o.state.or(state);
                        o.decision
                    }
                    ScriptOp::Peek(n) => g.check(state, now, n).decision,
                    ScriptOp::Push(n) => {
                        if state.is_some() || n > 0 {
                            let tat = state.unwrap_or(now).max(now);
                            let charge = n.unsigned_abs() * t;
                            state = Some(if n >= 0 {
                                tat + charge
                            } else {
                                tat.saturating_sub(charge).max(now)
                            });
                        }
                        g.check(state, now, 1).decision
                    }
                };
                denied += usize::from(!d.is_allowed());
                assert_eq!(
                    *reply,
                    expected(&d),
                    "rate={rate}/{period:?} burst={burst} step {i}: {op:?} at +{}µs",
                    now_us - BASE_US
                );
            }
            assert!(denied > 40, "rate={rate}/{period:?}: {denied} denials");
        }
    }

    async fn exists(con: &mut MultiplexedConnection, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(con)
            .await
            .unwrap()
            == 1
    }

    async fn pttl(con: &mut MultiplexedConnection, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query_async(con).await.unwrap()
    }

    fn both(limit: u64) -> [Algorithm; 2] {
        [
            Algorithm::SlidingWindow(sliding(limit, SEC_US)),
            Algorithm::Gcra(Gcra::new(limit, Duration::from_secs(1), limit).unwrap()),
        ]
    }

    #[tokio::test]
    async fn only_charges_create_keys() {
        let server = RedisServer::start();
        let mut con = connect(&server).await;
        let scripts = Scripts::new();
        for (i, algorithm) in both(5).iter().enumerate() {
            let key = format!("k{i}");
            let at = |op| scripts.cmd(algorithm, &key, op, Some(BASE_US));
            let cmds = [
                at(ScriptOp::Peek(1)),
                at(ScriptOp::Peek(6)),
                at(ScriptOp::Check(6)),
                at(ScriptOp::Push(-3)),
            ];
            let replies = scripts.run(&mut con, &cmds).await.unwrap();
            assert!(replies[0].allowed && replies[0].remaining == 4);
            assert_eq!(replies[1].retry_after_us, None, "6 > 5: never");
            assert_eq!(replies[2].retry_after_us, None);
            assert!(replies[3].allowed, "a give-back on nothing is a no-op");
            assert!(!exists(&mut con, &key).await, "{algorithm:?}");
            scripts
                .run(&mut con, &[at(ScriptOp::Check(1))])
                .await
                .unwrap();
            assert!(exists(&mut con, &key).await, "{algorithm:?}");
        }
    }

    #[tokio::test]
    async fn push_charges_past_the_limit_and_gives_back() {
        let server = RedisServer::start();
        let mut con = connect(&server).await;
        let scripts = Scripts::new();
        let run = async |con: &mut MultiplexedConnection, algorithm, key, op, now| {
            let cmd = scripts.cmd(algorithm, key, op, Some(now));
            scripts.run(con, &[cmd]).await.unwrap()[0]
        };
        let reply = |allowed, remaining, reset_after_us, retry: Option<u64>| Reply {
            allowed,
            remaining,
            reset_after_us,
            retry_after_us: retry,
        };

        // 5 per second, a quarter into a window.
        let sw = Algorithm::SlidingWindow(sliding(5, SEC_US));
        let now = BASE_US.next_multiple_of(SEC_US) + SEC_US / 4;
        let r = run(&mut con, &sw, "sw", ScriptOp::Push(8), now).await;
        // 8 in the window: next window at x where 8·(1 − x) + 1 ≤ 5, x = 1/2.
        assert_eq!(r, reply(false, 0, 1_750_000, Some(1_250_000)));
        let r = run(&mut con, &sw, "sw", ScriptOp::Check(1), now).await;
        assert!(!r.allowed);
        let r = run(&mut con, &sw, "sw", ScriptOp::Push(-6), now).await;
        assert_eq!(
            r,
            reply(true, 2, 1_750_000, Some(0)),
            "2 left in the window"
        );
        let r = run(&mut con, &sw, "sw", ScriptOp::Push(-10), now).await;
        assert_eq!(r, reply(true, 4, 1_750_000, Some(0)), "never below empty");
        let r = run(&mut con, &sw, "sw", ScriptOp::Check(5), now).await;
        assert_eq!(r, reply(true, 0, 1_750_000, Some(0)));

        // One per second, 5 at once.
        let g = Algorithm::Gcra(Gcra::new(1, Duration::from_secs(1), 5).unwrap());
        let r = run(&mut con, &g, "g", ScriptOp::Push(8), BASE_US).await;
        // TAT 8 s ahead: one more fits once it is 4 s ahead.
        assert_eq!(r, reply(false, 0, 8 * SEC_US, Some(4 * SEC_US)));
        let r = run(&mut con, &g, "g", ScriptOp::Push(-6), BASE_US).await;
        assert_eq!(r, reply(true, 2, 3 * SEC_US, Some(0)));
        let r = run(&mut con, &g, "g", ScriptOp::Push(-100), BASE_US).await;
        assert_eq!(r, reply(true, 4, SEC_US, Some(0)), "never below empty");
    }

    #[tokio::test]
    async fn keys_live_as_long_as_their_state() {
        let server = RedisServer::start();
        let mut con = connect(&server).await;
        let scripts = Scripts::new();
        let margin = i64::try_from(TTL_MARGIN_MS).unwrap();

        // 2.5 s into a 10 s window: the count matters for 17.5 s more.
        let sw = Algorithm::SlidingWindow(sliding(5, 10 * SEC_US));
        let now = BASE_US.next_multiple_of(10 * SEC_US) + 2_500_000;
        let cmd = scripts.cmd(&sw, "sw", ScriptOp::Check(1), Some(now));
        scripts.run(&mut con, &[cmd]).await.unwrap();
        let ttl = pttl(&mut con, "sw").await;
        assert!(ttl > 17_000 + margin && ttl <= 17_500 + margin, "{ttl}");

        // Three units at one per second: the TAT is 3 s ahead.
        let g = Algorithm::Gcra(Gcra::new(1, Duration::from_secs(1), 5).unwrap());
        let cmd = scripts.cmd(&g, "g", ScriptOp::Check(3), Some(BASE_US));
        scripts.run(&mut con, &[cmd]).await.unwrap();
        let ttl = pttl(&mut con, "g").await;
        assert!(ttl > 2_500 + margin && ttl <= 3_000 + margin, "{ttl}");
        // Two more a second later: 4 s from then.
        let cmd = scripts.cmd(&g, "g", ScriptOp::Check(2), Some(BASE_US + SEC_US));
        scripts.run(&mut con, &[cmd]).await.unwrap();
        let ttl = pttl(&mut con, "g").await;
        assert!(ttl > 3_500 + margin && ttl <= 4_000 + margin, "{ttl}");
    }

    #[tokio::test]
    async fn recovers_from_script_flush() {
        let server = RedisServer::start();
        let mut con = connect(&server).await;
        let scripts = Scripts::new();
        let [sw, g] = both(5);
        let check = |a: &Algorithm, key| scripts.cmd(a, key, ScriptOp::Check(1), Some(BASE_US));
        let remaining =
            |replies: Vec<Reply>| -> Vec<u64> { replies.iter().map(|r| r.remaining).collect() };

        // First use: nothing loaded yet.
        let r = scripts
            .run(&mut con, &[check(&sw, "a"), check(&g, "b")])
            .await;
        assert_eq!(remaining(r.unwrap()), [4, 4]);

        let flush = redis::cmd("SCRIPT").arg("FLUSH").clone();
        flush.exec_async(&mut con).await.unwrap();
        let cmds = [check(&sw, "a"), check(&sw, "a"), check(&g, "b")];
        let r = scripts.run(&mut con, &cmds).await;
        assert_eq!(remaining(r.unwrap()), [3, 2, 3], "state kept, charged once");

        // Only one script missing: the commands that ran are not run again.
        flush.exec_async(&mut con).await.unwrap();
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SLIDING_WINDOW_LUA)
            .exec_async(&mut con)
            .await
            .unwrap();
        let cmds = [check(&sw, "a"), check(&g, "b"), check(&sw, "a")];
        let r = scripts.run(&mut con, &cmds).await;
        assert_eq!(remaining(r.unwrap()), [1, 2, 0]);
        let loaded: Vec<bool> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(scripts.sliding_window.get_hash())
            .arg(scripts.gcra.get_hash())
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(loaded, [true, true]);
    }

    #[tokio::test]
    async fn server_clock_admits_exactly_the_limit() {
        let server = RedisServer::start();
        let mut con = connect(&server).await;
        let scripts = Scripts::new();
        let limit = 10;
        let algorithms = [
            Algorithm::SlidingWindow(sliding(limit, 3600 * SEC_US)),
            Algorithm::Gcra(Gcra::new(limit, Duration::from_secs(3600), limit).unwrap()),
        ];
        for (i, algorithm) in algorithms.iter().enumerate() {
            let key = format!("clock{i}");
            let mut admitted = 0;
            for _ in 0..limit + 5 {
                let cmd = scripts.cmd(algorithm, &key, ScriptOp::Check(1), None);
                let r = scripts.run(&mut con, &[cmd]).await.unwrap()[0];
                if r.allowed {
                    admitted += 1;
                    assert_eq!(r.remaining, limit - admitted);
                } else {
                    assert!(r.retry_after_us.is_some_and(|us| us > 0));
                }
            }
            assert_eq!(admitted, limit, "{algorithm:?}");
            assert!(pttl(&mut con, &key).await > 0);
        }
    }

    #[tokio::test]
    async fn errors_are_errors_and_empty_batches_cost_nothing() {
        let mut server = RedisServer::start();
        let mut con = connect(&server).await;
        let scripts = Scripts::new();
        let sw = Algorithm::SlidingWindow(sliding(5, SEC_US));
        let check = scripts.cmd(&sw, "k", ScriptOp::Check(1), Some(BASE_US));
        scripts
            .run(&mut con, std::slice::from_ref(&check))
            .await
            .unwrap();

        // A key of another type, and arguments the script refuses.
        redis::cmd("SET")
            .arg("str")
            .arg("x")
            .exec_async(&mut con)
            .await
            .unwrap();
        let wrong_type = scripts.cmd(&sw, "str", ScriptOp::Check(1), Some(BASE_US));
        let mut bad_op = redis::cmd("EVALSHA");
        bad_op
            .arg(scripts.sliding_window.get_hash())
            .arg(1)
            .arg("k")
            .arg("refund")
            .arg(1)
            .arg(5)
            .arg(SEC_US);
        for cmd in [wrong_type, bad_op] {
            assert!(scripts.run(&mut con, &[check.clone(), cmd]).await.is_err());
        }

        server.kill();
        assert_eq!(scripts.run(&mut con, &[]).await.unwrap(), []);
        let down = [check];
        let down = tokio::time::timeout(Duration::from_secs(5), scripts.run(&mut con, &down));
        assert!(down.await.unwrap().is_err());

        // A fresh server on the same port: no state, no scripts, and `run`
        // copes with both.
        server.restart();
        let mut con = connect(&server).await;
        let check = scripts.cmd(&sw, "k", ScriptOp::Check(1), Some(BASE_US));
        let r = scripts.run(&mut con, &[check]).await.unwrap();
        assert_eq!(r[0].remaining, 4);
    }

    #[test]
    fn malformed_replies_are_errors() {
        let arr = |v: Vec<i64>| Value::Array(v.into_iter().map(Value::Int).collect());
        let ok = parse_reply(arr(vec![0, 3, 1_500, -1])).unwrap();
        assert_eq!(ok.retry_after_us, None);
        assert!(!ok.allowed);
        for bad in [
            Value::Int(1),
            Value::Nil,
            arr(vec![1, 2, 3]),
            arr(vec![1, 2, 3, 0, 5]),
            arr(vec![2, 0, 0, 0]),
            arr(vec![1, -1, 0, 0]),
            arr(vec![0, 0, -5, 1]),
            arr(vec![0, 0, 0, -2]),
            arr(vec![1, 0, 0, 7]),
            Value::Array(vec![
                Value::Int(1),
                Value::BulkString(b"2".to_vec()),
                Value::Int(0),
                Value::Int(0),
            ]),
        ] {
            let shown = format!("{bad:?}");
            let e = parse_reply(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnexpectedReturnType, "{shown}");
        }
    }

    #[test]
    fn replies_become_decisions_in_nanoseconds() {
        let r = |allowed, retry| Reply {
            allowed,
            remaining: 3,
            reset_after_us: 1_500,
            retry_after_us: retry,
        };
        assert_eq!(
            r(true, Some(0)).decision(10),
            Decision::allow(10, 3, 1, 1_500_000)
        );
        assert_eq!(
            r(false, Some(7)).decision(10),
            Decision::deny(10, (3, 1), 1_500_000, 7_000)
        );
        let never = r(false, None).decision(10);
        assert!(never.exceeds_limit());
        assert_eq!(never, Decision::never(10, (3, 1), 1_500_000));
    }

    /// The redis fuzz target's finding: a reply's retry-after (up to 2^63
    /// µs) of 2^64 ns or more saturated to the value that means "never",
    /// and the decision claimed the cost exceeds the limit.
    #[test]
    fn a_finite_wait_is_not_never() {
        let arr = |v: Vec<i64>| Value::Array(v.into_iter().map(Value::Int).collect());
        let r = parse_reply(arr(vec![0, 3, 0, i64::MAX])).unwrap();
        let d = r.decision(10);
        assert!(d.is_denied());
        assert!(!d.exceeds_limit(), "{d:?}");
        assert!(d.retry_after().is_some_and(|w| w < Duration::MAX));
    }
}
