"""Rate-limit windows in Redis: their keys and Lua scripts (``RedisState`` calls them and
turns Redis errors into ``DependencyUnavailable``).

A rate scope is three keys under the state prefix: ``rl:<scope>:log`` (a sorted set, hold id ->
admission time), ``rl:<scope>:amt`` (a hash, hold id -> amount) and ``rl:<scope>:sum`` (the
window's running sum). One script purges what slid out of the window, checks every scope of a
request and admits it in all of them or in none; time is Redis's own (``TIME``), so every
replica sees one exact window. Each admission is an entry, so purging is amortised O(1) per
entry and the sum never needs a rescan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.state.base import RateScope, RateVerdict

# Sliding-window rate limits. KEYS: per scope its log (zset), amounts (hash), sum (string).
# ARGV: window_ms, hold id, then per scope: limit, amount.
# Returns {refused scope (0: admitted), retry-after ms (-1: never), then per scope: used, reset}.
_RATE_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local n = #KEYS / 3
local used = {}
local refused = 0
for i = 1, n do
  local log, amt, sum = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local total = tonumber(redis.call('GET', sum) or '0')
  while true do
    local dead = redis.call('ZRANGEBYSCORE', log, '-inf', now - window, 'LIMIT', 0, 500)
    if #dead == 0 then break end
    for _, v in ipairs(redis.call('HMGET', amt, unpack(dead))) do
      total = total - (tonumber(v) or 0)
    end
    redis.call('HDEL', amt, unpack(dead))
    redis.call('ZREM', log, unpack(dead))
  end
  if total < 0 or redis.call('ZCARD', log) == 0 then total = 0 end
  used[i] = total
  if refused == 0 and total + tonumber(ARGV[2 * i + 2]) > tonumber(ARGV[2 * i + 1]) then
    refused = i
  end
end
local retry = 0
if refused > 0 then
  local limit, amount = tonumber(ARGV[2 * refused + 1]), tonumber(ARGV[2 * refused + 2])
  retry = -1
  if amount <= limit then
    retry = window
    local excess, freed = used[refused] + amount - limit, 0
    local log, amt = KEYS[3 * refused - 2], KEYS[3 * refused - 1]
    local oldest = redis.call('ZRANGE', log, 0, 999, 'WITHSCORES')
    for j = 1, #oldest, 2 do
      freed = freed + tonumber(redis.call('HGET', amt, oldest[j]) or '0')
      if freed >= excess then
        retry = math.max(1, tonumber(oldest[j + 1]) + window - now)
        break
      end
    end
  end
end
local out = {refused, retry}
for i = 1, n do
  local log, amt, sum = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if refused == 0 then
    local amount = tonumber(ARGV[2 * i + 2])
    redis.call('ZADD', log, 'NX', now, ARGV[2])
    redis.call('HINCRBY', amt, ARGV[2], amount)
    used[i] = used[i] + amount
  end
  redis.call('SET', sum, used[i], 'PX', window * 2)
  redis.call('PEXPIRE', log, window * 2)
  redis.call('PEXPIRE', amt, window * 2)
  local first = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  local reset = 0
  if #first > 0 then reset = math.max(0, tonumber(first[2]) + window - now) end
  out[#out + 1] = used[i]
  out[#out + 1] = reset
end
return out
"""

# Settles one admission to its real amount while it is still in the window.
# KEYS: log, amounts, sum. ARGV: hold id, amount
_RATE_SETTLE = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCRBY', KEYS[3], tonumber(ARGV[2]) - tonumber(old))
end
return 1
"""


class RedisRates:
    """The rate-limit scripts bound to one Redis client and key prefix."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.prefix = prefix
        self._admit = redis.register_script(_RATE_ADMIT)
        self._settle = redis.register_script(_RATE_SETTLE)

    def keys(self, scope: str) -> list[str]:
        return [f"{self.prefix}rl:{scope}:{part}" for part in ("log", "amt", "sum")]

    async def admit(self, scopes: Sequence[RateScope], hold: str, window_ms: int) -> RateVerdict:
        keys = [k for scope in scopes for k in self.keys(scope.name)]
        args: list[object] = [window_ms, hold]
        for scope in scopes:
            args += [scope.limit, scope.amount]
        out = await self._admit(keys=keys, args=args)
        refused, retry = int(out[0]), int(out[1])
        pairs = [int(v) for v in out[2:]]
        return RateVerdict(
            admitted=refused == 0,
            used=tuple(pairs[0::2]),
            reset_ms=tuple(pairs[1::2]),
            refused=refused - 1 if refused else None,
            retry_after_ms=None if retry < 0 or not refused else retry,
        )

    async def settle(self, scope: str, hold: str, amount: int) -> None:
        await self._settle(keys=self.keys(scope), args=[hold, amount])
