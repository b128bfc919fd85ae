"""Budget holds lapse on their own deadline (a dead replica's reservations), in process and in
a real Redis, however much traffic keeps reserving on the same scope; settling is exact."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.state import InProcessState, RedisState, SharedState
from tests.support.harness import REDIS_URL

pytestmark = pytest.mark.integration


@pytest.fixture(params=["in-process", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[SharedState]:
    if request.param == "in-process":
        yield InProcessState()
        return
    prefix = f"tgtest:{uuid.uuid4().hex[:8]}:"
    redis = RedisState(REDIS_URL, prefix=prefix)
    try:
        yield redis
    finally:
        client = redis._redis
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await redis.close()


async def test_a_dead_holders_reservation_lapses_while_traffic_continues(
    state: SharedState,
) -> None:
    # a replica reserved 80 of 100 and died: its hold must lapse after its own 300 ms, even
    # though other requests keep reserving (and settling) on the same scope all along
    await state.budget_seed("key:k", 0)
    assert await state.budget_reserve("key:k", 100, 80, "dead", 300)
    refused = 0
    for i in range(12):
        if await state.budget_reserve("key:k", 100, 30, f"live{i}", 60_000):
            await state.budget_settle("key:k", f"live{i}", 0)
        else:
            refused += 1
        await asyncio.sleep(0.05)
    assert refused >= 4  # while the dead hold was alive, 80 + 30 > 100
    assert await state.budget_reserve("key:k", 100, 90, "after", 60_000)  # it lapsed
    spent, reserved = await state.budget_spent("key:k")
    assert (spent, reserved) == (0, 90)


async def test_settle_releases_exactly_its_own_hold(state: SharedState) -> None:
    await state.budget_seed("key:s", 10)
    assert await state.budget_reserve("key:s", 100, 40, "a", 60_000)
    assert await state.budget_reserve("key:s", 100, 40, "b", 60_000)
    assert not await state.budget_reserve("key:s", 100, 11, "c", 60_000)
    await state.budget_settle("key:s", "a", 25)
    assert await state.budget_spent("key:s") == (35, 40)
    await state.budget_settle("key:s", "b", 5)
    assert await state.budget_spent("key:s") == (40, 0)


async def test_a_hold_settled_after_it_lapsed_still_counts_its_spend(state: SharedState) -> None:
    # the call outlived its hold: the money was still spent and must count toward the budget
    await state.budget_seed("key:late", 0)
    assert await state.budget_reserve("key:late", 100, 50, "slow", 100)
    await asyncio.sleep(0.2)
    await state.budget_settle("key:late", "slow", 70)
    assert await state.budget_spent("key:late") == (70, 0)
    assert not await state.budget_reserve("key:late", 100, 31, "next", 60_000)
