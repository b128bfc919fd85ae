"""Rate-limit windows in the shared state (issue 13), the same semantics in-process and in the
real Redis: a sliding window that admits exactly its limit and rolls over, all scopes of a
request or none, token reservations settled to the real count, retry-after that is right, and
exactness under 200 concurrent admissions from two clients (two replicas) on one Redis; with
Redis down, the failover state admits on this replica's share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import DependencyUnavailable
from gateway.state import FailoverState, InProcessState, RateScope, RedisState, SharedState
from tests.support.private_redis import PrivateRedis

pytestmark = pytest.mark.integration
WINDOW = 400  # ms: short, so the tests see windows roll over


@pytest.fixture(params=["memory", "redis"])
async def state(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[SharedState]:
    if request.param == "memory":
        yield InProcessState()
        return
    st = RedisState(redis_url, redis_prefix)
    try:
        yield st
    finally:
        await st.close()


def req(name: str, limit: int, amount: int = 1) -> RateScope:
    return RateScope(f"t:{name}:requests", limit, amount)


async def test_window_admits_its_limit_then_rolls_over(state: SharedState) -> None:
    verdicts = [await state.rate_admit([req("a", 3)], f"h{i}", WINDOW) for i in range(5)]
    assert [v.admitted for v in verdicts] == [True, True, True, False, False]
    assert [v.used[0] for v in verdicts] == [1, 2, 3, 3, 3]
    refused = verdicts[3]
    assert refused.refused == 0
    assert refused.retry_after_ms is not None and 0 < refused.retry_after_ms <= WINDOW
    assert 0 < verdicts[2].reset_ms[0] <= WINDOW
    await asyncio.sleep(refused.retry_after_ms / 1000 + 0.05)
    # the first entries slid out: room again, and only as much as slid out
    after = [await state.rate_admit([req("a", 3)], f"j{i}", WINDOW) for i in range(4)]
    assert sum(v.admitted for v in after) == 3 and not after[-1].admitted


async def test_sliding_window_counts_the_last_window_not_a_calendar_one(
    state: SharedState,
) -> None:
    assert (await state.rate_admit([req("s", 2)], "a", WINDOW)).admitted
    await asyncio.sleep(WINDOW * 0.6 / 1000)
    assert (await state.rate_admit([req("s", 2)], "b", WINDOW)).admitted
    await asyncio.sleep(WINDOW * 0.5 / 1000)  # "a" slid out, "b" has not
    assert (await state.rate_admit([req("s", 2)], "c", WINDOW)).admitted
    assert not (await state.rate_admit([req("s", 2)], "d", WINDOW)).admitted


async def test_all_scopes_or_none(state: SharedState) -> None:
    key, tenant = req("key", 10), req("tenant", 1)
    assert (await state.rate_admit([key, tenant], "x", WINDOW)).admitted
    refused = await state.rate_admit([key, tenant], "y", WINDOW)
    assert not refused.admitted and refused.refused == 1
    # the refused request took nothing from the key's window
    assert refused.used == (1, 1)
    assert (await state.rate_admit([key], "z", WINDOW)).used == (2,)


async def test_tokens_reserved_then_settled_to_the_real_count(state: SharedState) -> None:
    tokens = RateScope("t:tok:tokens", 1000, 600)
    assert (await state.rate_admit([tokens], "r1", WINDOW)).admitted
    assert not (await state.rate_admit([tokens], "r2", WINDOW)).admitted  # 600 + 600 > 1000
    await state.rate_settle(tokens.name, "r1", 150)  # it used 150 of the 600 reserved
    v = await state.rate_admit([tokens], "r3", WINDOW)
    assert v.admitted and v.used == (750,)
    # more than the whole limit can never fit: no retry time
    huge = await state.rate_admit([RateScope(tokens.name, 1000, 5000)], "r4", WINDOW)
    assert not huge.admitted and huge.retry_after_ms is None
    await asyncio.sleep(WINDOW / 1000 + 0.05)
    await state.rate_settle(tokens.name, "r3", 10)  # out of the window: changes nothing
    assert (await state.rate_admit([tokens], "r5", WINDOW)).used == (600,)


async def test_retry_after_waits_for_enough_tokens_to_slide_out(state: SharedState) -> None:
    name = "t:wait:tokens"
    assert (await state.rate_admit([RateScope(name, 100, 50)], "a", 1000)).admitted
    await asyncio.sleep(0.3)
    assert (await state.rate_admit([RateScope(name, 100, 50)], "b", 1000)).admitted
    v = await state.rate_admit([RateScope(name, 100, 80)], "c", 1000)
    # 80 fits only when both a and b slid out: ~1000 ms after b, not ~700 ms after a
    assert not v.admitted and v.retry_after_ms is not None and v.retry_after_ms > 800
    small = await state.rate_admit([RateScope(name, 100, 40)], "d", 1000)
    assert not small.admitted and small.retry_after_ms is not None
    assert small.retry_after_ms < 800  # a sliding out is enough


async def test_concurrent_admissions_from_two_replicas_admit_exactly_the_limit(
    redis_url: str, redis_prefix: str
) -> None:
    replicas = [RedisState(redis_url, redis_prefix) for _ in range(2)]
    try:
        scopes = [req("burst", 37), RateScope("t:burst:tokens", 37 * 10, 10)]
        verdicts = await asyncio.gather(
            *(replicas[i % 2].rate_admit(scopes, f"h{i}", 10_000) for i in range(200))
        )
        assert sum(v.admitted for v in verdicts) == 37
        assert max(v.used[0] for v in verdicts) == 37
        assert max(v.used[1] for v in verdicts) == 370
    finally:
        for r in replicas:
            await r.close()


async def test_failover_admits_on_the_local_share_while_redis_is_down(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path).start()
    state = FailoverState(RedisState(server.url, timeout_s=0.3), local_share=0.5)
    try:
        assert (await state.rate_admit([req("f", 10)], "up", 60_000)).admitted
        server.kill()
        with pytest.raises(DependencyUnavailable):
            await state.redis.rate_admit([req("f", 10)], "closed", 60_000)  # fail closed alone
        t0 = time.monotonic()
        local = [await state.rate_admit([req("f", 10)], f"d{i}", 60_000) for i in range(7)]
        assert [v.admitted for v in local] == [True] * 5 + [False] * 2  # half of 10
        await state.rate_settle("t:f:requests", "d0", 1)  # settles locally, never raises
        assert time.monotonic() - t0 < 10
    finally:
        server.kill()
        await state.close()
