"""Backends' recent latencies shared by every replica in Redis (``RedisState`` delegates its
``latency_*`` ops here; ``gateway.latency`` batches what a replica observes and reads the merged
figure back).

Key, under the state's prefix: ``lat:<backend>``, a list of ``<ms since epoch>:<latency ms>``
samples, newest first, stamped in Redis server time. One script pushes a replica's batch for
every backend at once and trims each list to the newest ``keep``; it expires ``max_age_ms`` after
the last push. Readers drop samples older than ``max_age_ms`` (a backend that fell silent is
judged by nothing stale).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.state.redis_part import Call, RedisPart

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: one list per backend. ARGV: keep, max_age_ms, then per key a count and its samples.
_PUSH = (
    _NOW
    + """
local keep, ttl, at = tonumber(ARGV[1]), tonumber(ARGV[2]), 3
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  for i = at + 1, at + n do redis.call('LPUSH', key, now .. ':' .. ARGV[i]) end
  at = at + n + 1
  redis.call('LTRIM', key, 0, keep - 1)
  redis.call('PEXPIRE', key, ttl)
end
return 1
"""
)

# KEYS: one list per backend. Returns the server time, then each list.
_READ = (
    _NOW
    + """
local out = {now}
for _, key in ipairs(KEYS) do out[#out + 1] = redis.call('LRANGE', key, 0, -1) end
return out
"""
)


class RedisLatency(RedisPart):
    def __init__(self, redis: Any, key: Callable[..., str], call: Call) -> None:
        super().__init__(redis, key, call)
        self._push = redis.register_script(_PUSH)
        self._read = redis.register_script(_READ)

    async def push(
        self, samples: Mapping[str, Sequence[float]], keep: int, max_age_ms: int
    ) -> None:
        keys: list[str] = []
        args: list[Any] = [keep, max_age_ms]
        for backend, values in samples.items():
            if values:
                keys.append(self._k("lat", backend))
                args += [len(values), *(f"{v:.3f}" for v in values)]
        if keys:
            await self._call(lambda: self._push(keys=keys, args=args))

    async def read(self, backends: Sequence[str], max_age_ms: int) -> dict[str, list[float]]:
        if not backends:
            return {}
        keys = [self._k("lat", b) for b in backends]
        now, *lists = await self._call(lambda: self._read(keys=keys))
        oldest = int(now) - max_age_ms
        out: dict[str, list[float]] = {}
        for backend, entries in zip(backends, lists, strict=True):
            values = []
            for entry in entries:
                stamp, _, value = entry.partition(":")
                if int(stamp) >= oldest:
                    values.append(float(value))
            out[backend] = values
        return out
