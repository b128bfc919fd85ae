"""Shared state under Redis faults, on a private redis-server the test kills: fail closed with
a 503-class error, fail open on local limits with settlements replayed, and budget holds that
survive a Redis restart (re-registered by the replica that owns them)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import DependencyUnavailable
from gateway.state import FailoverState, RedisState
from tests.support.private_redis import PrivateRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path).start()
    try:
        yield server
    finally:
        server.kill()


async def test_redis_down_fails_closed_with_a_dependency_error(private_redis: PrivateRedis) -> None:
    state = RedisState(private_redis.url, timeout_s=0.5)
    try:
        await state.budget_seed("key:a", 0)
        assert await state.budget_reserve("key:a", 100, 10, "h1", 60_000)
        private_redis.kill()
        with pytest.raises(DependencyUnavailable) as err:
            await state.budget_reserve("key:a", 100, 10, "h2", 60_000)
        assert err.value.status == 503 and err.value.headers["retry-after"]
    finally:
        await state.close()


async def test_fail_open_serves_local_share_and_replays_settlements(
    private_redis: PrivateRedis,
) -> None:
    state = FailoverState(RedisState(private_redis.url, timeout_s=0.5), local_share=0.5)
    try:
        await state.budget_seed("key:b", 0)
        assert await state.budget_reserve("key:b", 1000, 100, "h1", 60_000)
        await state.budget_settle("key:b", "h1", 100)
        assert await state.budget_reserve("key:b", 1000, 100, "h2", 60_000)  # seen: 100 + 100
        private_redis.kill()
        # headroom left at last sight: 1000 - 200 = 800, this replica's share: 400
        granted = [
            await state.budget_reserve("key:b", 1000, 100, f"d{i}", 60_000) for i in range(6)
        ]
        assert granted == [True] * 4 + [False] * 2
        for i in range(4):
            await state.budget_settle("key:b", f"d{i}", 90)
        await state.budget_settle("key:b", "h2", 100)  # a Redis hold settled during the outage
        with pytest.raises(DependencyUnavailable):  # a scope never seen is refused
            await state.budget_reserve("key:unseen", 1000, 1, "u", 60_000)
        # Redis comes back empty (it was killed): the ledger re-seeds it from the store, which
        # holds every attempt already, so the queued settlements are not replayed on top
        private_redis.start()
        await state.budget_seed("key:b", 100 + 100 + 4 * 90)
        assert await state.budget_reserve("key:b", 1000, 1, "after", 60_000)
        assert await state.redis.budget_spent("key:b") == (560, 1)
    finally:
        await state.close()


async def test_fail_open_replays_settlements_after_a_blip(private_redis: PrivateRedis) -> None:
    state = FailoverState(RedisState(private_redis.url, timeout_s=0.3), local_share=1.0)
    try:
        await state.budget_seed("key:d", 0)
        assert await state.budget_reserve("key:d", 1000, 100, "h1", 60_000)
        private_redis.pause()  # unreachable, data kept
        await state.budget_settle("key:d", "h1", 80)
        assert await state.budget_reserve("key:d", 1000, 100, "local", 60_000)
        await state.budget_settle("key:d", "local", 50)
        private_redis.resume()
        assert await state.budget_reserve("key:d", 1000, 1, "after", 60_000)
        assert await state.redis.budget_spent("key:d") == (130, 1)
    finally:
        private_redis.resume()
        await state.close()


async def test_holds_survive_a_redis_restart(private_redis: PrivateRedis) -> None:
    a = RedisState(private_redis.url, timeout_s=0.5)  # replica A, a request in flight
    b = RedisState(private_redis.url, timeout_s=0.5)  # replica B
    try:
        await a.budget_seed("key:c", 0)
        assert await a.budget_reserve("key:c", 100, 70, "long", 60_000)
        private_redis.kill()
        private_redis.start()  # empty: every hold and counter is gone
        await b.budget_seed("key:c", 0)
        await asyncio.sleep(1.5)  # A's epoch watch notices and re-registers its hold
        assert not await b.budget_reserve("key:c", 100, 40, "new", 60_000)
        assert await b.budget_spent("key:c") == (0, 70)
        await a.budget_settle("key:c", "long", 65)
        assert await b.budget_spent("key:c") == (65, 0)
    finally:
        await a.close()
        await b.close()


async def test_close_ends_the_epoch_watch_even_if_its_cancel_is_turned_into_a_timeout(
    private_redis: PrivateRedis,
) -> None:
    """A Redis client may turn the cancel of a call in flight into a timeout; the epoch
    watch treats timeouts as "still down, try again", so close must not depend on the cancel
    (a paused Redis once hung a shutdown here for 300 s)."""
    state = RedisState(private_redis.url, timeout_s=0.3)
    assert await state.budget_reserve("key:w", 1000, 1, "h", 60_000)  # starts the watch

    async def swallowing_get(*_: object, **__: object) -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise TimeoutError("cancelled mid-call") from None
        return ""

    state._redis.get = swallowing_get
    state._epoch = state._epoch or "e"
    await asyncio.sleep(1.5)  # the watch is now inside the call
    await asyncio.wait_for(state.close(), 5)  # returned, not hung
