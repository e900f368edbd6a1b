//! The Lua scripts that write a ban or flag to its sorted set and publish
//! it, lift one, and read a set in pages: each one atomic step in Redis,
//! timed on the Redis server's clock.

/// Writes a ban or flag to the sorted set `KEYS[1]` (member `ARGV[1]`,
/// ending `ARGV[2]` ms from now on the server's clock), drops expired ones,
/// keeps at most `ARGV[3]` (the soonest to end go first), lets the key expire
/// with its last member, and publishes `ARGV[5]` on channel `ARGV[4]`.
pub(super) const RECORD_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if not redis.call('ZSCORE', key, ARGV[1]) then
  local over = redis.call('ZCARD', key) - tonumber(ARGV[3]) + 1
  if over > 0 then
    redis.call('ZPOPMIN', key, over)
  end
end
redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', key, last[2])
return redis.call('PUBLISH', ARGV[4], ARGV[5])
";

/// Removes member `ARGV[1]` of `KEYS[1]` and publishes `ARGV[3]` on channel
/// `ARGV[2]`.
pub(super) const LIFT_SCRIPT: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('PUBLISH', ARGV[2], ARGV[3])
";

/// One page of the members of `KEYS[1]` in force, those that end last
/// first (and, ending together, by member descending, as `ZREVRANGE`
/// orders them): at most `ARGV[1]` members, each followed by the
/// milliseconds it has left on the server's clock. `ARGV[2]` and `ARGV[3]`
/// are the cursor, the score and member of the last entry of the page
/// before (both empty for the first page): the page holds the members that
/// come after that entry in this order, wherever they are now, so members
/// added or removed between pages shift no one past the cursor. When the
/// cursor's member is gone (lifted, or ending anew), its place is found
/// among the members ending with it by binary search, comparing bytes as
/// Redis does.
///
/// The reply is `{more, score, member, m1, ms1, m2, ms2, ...}`: `more` is 1
/// when the page is full and another may follow from the cursor `score`
/// and `member` (the page's last entry), else 0. A page stops at the first
/// ended member: all after it have ended too.
pub(super) const LOAD_PAGE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, count = KEYS[1], tonumber(ARGV[1])
local function below(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local start = 0
if ARGV[2] ~= '' then
  local score, member = tonumber(ARGV[2]), ARGV[3]
  local s = redis.call('ZSCORE', key, member)
  if s and tonumber(s) == score then
    start = redis.call('ZREVRANK', key, member) + 1
  else
    local lo = redis.call('ZCOUNT', key, '(' .. ARGV[2], '+inf')
    local hi = lo + redis.call('ZCOUNT', key, ARGV[2], ARGV[2])
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if below(redis.call('ZREVRANGE', key, mid, mid)[1], member) then
        hi = mid
      else
        lo = mid + 1
      end
    end
    start = lo
  end
end
local r = redis.call('ZREVRANGE', key, start, start + count - 1, 'WITHSCORES')
local out = {#r == 2 * count and 1 or 0, 0, ''}
for i = 1, #r, 2 do
  local left = tonumber(r[i + 1]) - now
  if left <= 0 then
    out[1] = 0
    break
  end
  out[#out + 1] = r[i]
  out[#out + 1] = left
  out[2], out[3] = tonumber(r[i + 1]), r[i]
end
return out
";
