"""Circuit breakers in Redis (gateway.state.redis): the same state machine as in-process, and
the healthy-path cache — a breaker seen closed and clean is trusted for 0.5 s by the replica
that saw it, so a healthy backend costs no round trip per request, and another replica's
opening is seen at most that late; after the cool-down one caller of all the replicas probes."""

from __future__ import annotations

import asyncio

import pytest

from gateway.state import redis_breaker as redis_state
from gateway.state.base import BreakerSettings
from gateway.state.redis import RedisState

pytestmark = pytest.mark.integration

CFG = BreakerSettings(failure_threshold=2, window_s=60, cooldown_s=0.05)
# half-open lasts 10 cool-downs: 2 s, so a busy machine cannot outrun it
PROBE_CFG = BreakerSettings(failure_threshold=2, window_s=60, cooldown_s=0.2)
TTL_S = 1.0  # longer than the shipped 0.5 s, so a busy machine cannot outrun the cache


@pytest.fixture()
def ttl(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(redis_state, "BREAKER_CLEAN_TTL_S", TTL_S)
    return TTL_S


async def test_state_machine_matches_in_process(redis_url: str, redis_prefix: str) -> None:
    state = RedisState(redis_url, redis_prefix)
    try:
        assert await state.breaker_allows("b")
        assert not await state.breaker_record("b", False, CFG)
        assert await state.breaker_record("b", False, CFG)  # threshold reached: open
        assert not await state.breaker_allows("b")  # an open breaker is never cached
        await asyncio.sleep(0.06)
        assert await state.breaker_allows("b")  # half-open: one probe allowed
        assert await state.breaker_record("b", False, CFG)  # probe failed: open again at once
        await asyncio.sleep(0.06)
        assert await state.breaker_allows("b")
        await state.breaker_record("b", True, CFG)  # probe succeeded: closed
        assert not await state.breaker_record("b", False, CFG)  # needs the full threshold again
        await state.breaker_record("b", True, CFG)  # a success resets the count
        assert not await state.breaker_record("b", False, CFG)
    finally:
        await state.close()


async def test_another_replicas_opening_is_seen_within_the_cache_ttl(
    redis_url: str, redis_prefix: str, ttl: float
) -> None:
    mine, other = RedisState(redis_url, redis_prefix), RedisState(redis_url, redis_prefix)
    try:
        assert await mine.breaker_allows("b")  # seen closed and clean: cached
        long = BreakerSettings(failure_threshold=2, window_s=60, cooldown_s=30)
        assert not await other.breaker_record("b", False, long)
        assert await other.breaker_record("b", False, long)  # the other replica opens it
        assert await mine.breaker_allows("b")  # still trusted, without a round trip
        await asyncio.sleep(ttl + 0.05)
        assert not await mine.breaker_allows("b")
    finally:
        await mine.close()
        await other.close()


async def test_a_success_resets_what_was_counted(
    redis_url: str, redis_prefix: str, ttl: float
) -> None:
    mine, other = RedisState(redis_url, redis_prefix), RedisState(redis_url, redis_prefix)
    fails = f"{redis_prefix}cb:b:fails"
    try:
        assert await mine.breaker_allows("b")
        assert not await other.breaker_record("b", False, CFG)  # counted by another replica
        await mine.breaker_record("b", True, CFG)  # within the ttl: not seen, not reset
        assert await mine._redis.exists(fails)
        await asyncio.sleep(ttl + 0.05)
        assert await mine.breaker_allows("b")  # reads the count: dirty, so not cached
        await mine.breaker_record("b", True, CFG)
        assert not await mine._redis.exists(fails)  # reset
        assert not await mine.breaker_record("b", False, CFG)  # own failure: counted afresh
        await mine.breaker_record("b", True, CFG)  # own failure known: reset at once
        assert not await mine._redis.exists(fails)
    finally:
        await mine.close()
        await other.close()


async def test_concurrent_requests_share_one_read(redis_url: str, redis_prefix: str) -> None:
    state = RedisState(redis_url, redis_prefix)
    reads = 0
    real = state._breakers._state_script

    async def counted(**kw: object) -> object:
        nonlocal reads
        reads += 1
        return await real(**kw)

    state._breakers._state_script = counted
    try:
        assert all(await asyncio.gather(*(state.breaker_allows("b") for _ in range(50))))
        await asyncio.gather(*(state.breaker_record("b", True, CFG) for _ in range(50)))
        assert reads == 1  # one read, then the clean view serves allows and successes alike
    finally:
        await state.close()


async def test_one_probe_across_replicas_after_the_cool_down(
    redis_url: str, redis_prefix: str
) -> None:
    replicas = [RedisState(redis_url, redis_prefix) for _ in range(3)]
    lease_ms = 5000
    try:
        assert not await replicas[0].breaker_record("b", False, PROBE_CFG)
        assert await replicas[1].breaker_record("b", False, PROBE_CFG)  # open
        claims = [r.breaker_allows("b", lease_ms) for r in replicas for _ in range(10)]
        assert not any(await asyncio.gather(*claims))  # cooling down: nobody
        await asyncio.sleep(0.25)
        claims = [r.breaker_allows("b", lease_ms) for r in replicas for _ in range(10)]
        assert sum(await asyncio.gather(*claims)) == 1  # half-open: one probe of 30 callers
        assert not await replicas[2].breaker_allows("b")  # a probe is out: routing avoids it
        assert await replicas[0].breaker_record("b", False, PROBE_CFG)  # the probe failed: open
        assert not any([await r.breaker_allows("b", lease_ms) for r in replicas])
        await asyncio.sleep(0.25)
        claims = [r.breaker_allows("b", lease_ms) for r in replicas for _ in range(10)]
        assert sum(await asyncio.gather(*claims)) == 1  # the next cool-down: one probe again
        await replicas[1].breaker_record("b", True, PROBE_CFG)  # the probe succeeded: closed
        assert all([await r.breaker_allows("b", lease_ms) for r in replicas for _ in range(3)])
    finally:
        for r in replicas:
            await r.close()


async def test_a_lost_probe_lapses_with_its_lease(redis_url: str, redis_prefix: str) -> None:
    mine, other = RedisState(redis_url, redis_prefix), RedisState(redis_url, redis_prefix)
    try:
        await mine.breaker_record("b", False, PROBE_CFG)
        assert await mine.breaker_record("b", False, PROBE_CFG)
        await asyncio.sleep(0.25)
        assert await mine.breaker_allows("b", 200)  # the probe; its replica then dies
        assert not await other.breaker_allows("b", 200)
        await asyncio.sleep(0.3)
        assert await other.breaker_allows("b", 200)  # the lease lapsed: another probe goes
    finally:
        await mine.close()
        await other.close()


async def test_a_probe_without_a_verdict_gives_its_lease_back(
    redis_url: str, redis_prefix: str
) -> None:
    """The probe was a client's mistake (or cancelled): its lease is released at once, so a
    hostile client cannot hold a half-open backend back from everyone for the lease."""
    mine, other = RedisState(redis_url, redis_prefix), RedisState(redis_url, redis_prefix)
    try:
        await mine.breaker_record("b", False, PROBE_CFG)
        assert await mine.breaker_record("b", False, PROBE_CFG)
        await asyncio.sleep(0.25)
        assert await mine.breaker_allows("b", 60_000)  # the probe: a 400 from upstream follows
        assert not await other.breaker_allows("b", 60_000)
        await mine.breaker_release("b")
        assert await other.breaker_allows("b", 60_000)  # the next caller probes at once
    finally:
        await mine.close()
        await other.close()
