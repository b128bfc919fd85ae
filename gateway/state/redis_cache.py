"""The response cache's Redis keys and scripts (``RedisState`` delegates its ``cache_*`` ops
here; ``gateway.serve.cache`` decides what is cached).

Keys, under the state's prefix:

* ``cache:a:<key>``: one cached answer (a JSON string) that expires with its TTL (``PX``);
* ``cache:v:<scope>`` (hash entry -> base64 vector) and ``cache:vt:<scope>`` (sorted set
  entry -> deadline in Redis server time): the semantic entries of one scope (a tenant and a
  request shape). The scripts drop expired entries and keep only the newest ``keep``, so a
  scope never grows past its bound; both keys expire with the longest-lived entry.

There is no vector index in plain Redis: the caller reads a scope's (bounded) vectors and
compares them itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.state.redis_part import Call, RedisPart

_PURGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #dead > 0 then
  redis.call('HDEL', KEYS[1], unpack(dead))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
"""

# KEYS: vectors (hash), deadlines (zset). ARGV: entry, vector, ttl_ms, keep
_VECTOR_ADD = (
    _PURGE
    + """
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"""
)

# KEYS: vectors (hash), deadlines (zset)
_VECTORS = (
    _PURGE
    + """
return redis.call('HGETALL', KEYS[1])
"""
)


class RedisCache(RedisPart):
    """The cache ops over one Redis client (``call`` turns Redis errors into
    ``DependencyUnavailable``; ``key`` prefixes a key)."""

    def __init__(self, redis: Any, key: Callable[..., str], call: Call) -> None:
        super().__init__(redis, key, call)
        self._add = redis.register_script(_VECTOR_ADD)
        self._read = redis.register_script(_VECTORS)

    async def get(self, key: str) -> str | None:
        name = self._k("cache", "a", key)
        value = await self._call(lambda: self._redis.get(name))
        return None if value is None else str(value)

    async def put(self, key: str, value: str, ttl_ms: int) -> None:
        name = self._k("cache", "a", key)
        await self._call(lambda: self._redis.set(name, value, px=max(1, ttl_ms)))

    def _scope_keys(self, scope: str) -> list[str]:
        return [self._k("cache", "v", scope), self._k("cache", "vt", scope)]

    async def vectors(self, scope: str) -> dict[str, str]:
        keys = self._scope_keys(scope)
        flat = await self._call(lambda: self._read(keys=keys))
        return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def vector_add(self, scope: str, entry: str, vector: str, ttl_ms: int, keep: int) -> None:
        keys = self._scope_keys(scope)
        args = [entry, vector, max(1, ttl_ms), keep]
        await self._call(lambda: self._add(keys=keys, args=args))
