"""The response cache's Redis keys and scripts (gateway.state.redis_cache): answers with a TTL,
per-scope vectors bounded to the newest entries and dropped when they expire, and a Redis
that cannot be reached — a miss through the failover state."""

from __future__ import annotations

import asyncio

from gateway.errors import DependencyUnavailable
from gateway.state.failover import FailoverState
from gateway.state.redis import RedisState


async def test_answers_and_vectors_in_redis(redis_url: str, redis_prefix: str) -> None:
    state = RedisState(redis_url, redis_prefix)
    other = RedisState(redis_url, redis_prefix)  # another replica sees the same entries
    try:
        await state.cache_put("k", '{"a": "é"}', ttl_ms=200)
        assert await other.cache_get("k") == '{"a": "é"}'
        for i in range(6):
            await state.cache_vector_add("s", f"e{i}", f"v{i}", ttl_ms=60_000, keep=4)
        assert await other.cache_vectors("s") == {f"e{i}": f"v{i}" for i in range(2, 6)}
        await state.cache_vector_add("s", "short", "vs", ttl_ms=50, keep=10)
        await asyncio.sleep(0.25)
        assert await state.cache_get("k") is None
        vectors = await state.cache_vectors("s")
        assert "short" not in vectors and len(vectors) == 4
    finally:
        await state.close()
        await other.close()


async def test_unreachable_redis_is_a_miss_through_failover() -> None:
    dead = RedisState("redis://127.0.0.1:9/0", "tgtest:", timeout_s=0.2)
    try:
        try:
            await dead.cache_get("k")
            raise AssertionError("an unreachable Redis must raise")
        except DependencyUnavailable:
            pass
        failover = FailoverState(dead)
        assert await failover.cache_get("k") is None
        assert await failover.cache_vectors("s") == {}
        await failover.cache_put("k", "v", 1000)  # dropped, no error
        await failover.cache_vector_add("s", "e", "v", 1000, 3)
    finally:
        await dead.close()
