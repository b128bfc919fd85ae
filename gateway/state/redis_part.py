"""The base of the Redis state's parts (``redis_breaker``, ``redis_cache``, ``redis_latency``):
the one Redis client of a replica, its key prefixer and the call wrapper that turns Redis
errors into ``DependencyUnavailable`` (``gateway.state.redis.RedisState`` owns all three)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Call = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class RedisPart:
    """What every part of the Redis state works with; a part registers its scripts on top."""

    def __init__(self, redis: Any, key: Callable[..., str], call: Call) -> None:
        self._redis = redis
        self._k = key
        self._call = call
