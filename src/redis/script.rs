//! Lua scripts that run the algorithms on the Redis server, atomically.

use crate::algo::Algorithm;
use crate::decision::Decision;

/// What a script does with a key's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScriptOp {
    /// Decide, and charge the cost if admitted (strict mode).
    Check(u64),
    /// Decide as `Check` would, charge nothing.
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
        todo!("{limit}")
    }
}

/// The two scripts, loaded on first use and again after a `SCRIPT FLUSH`.
pub(crate) struct Scripts {}

impl Scripts {
    pub(crate) fn new() -> Self {
        todo!()
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
        todo!("{algorithm:?} {key} {op:?} {now_us:?}")
    }

    /// Runs `cmds` in one pipeline; on `NOSCRIPT` loads the scripts and
    /// retries once.
    pub(crate) async fn run<Con: redis::aio::ConnectionLike>(
        &self,
        con: &mut Con,
        cmds: &[redis::Cmd],
    ) -> redis::RedisResult<Vec<Reply>> {
        todo!("{}", cmds.len() + con.get_db() as usize)
    }
}
