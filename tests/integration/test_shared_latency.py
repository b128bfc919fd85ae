"""Backends' latency shared by the replicas (gateway.latency over gateway.state): what one
replica observes moves the p95 another reads, in batches; a Redis outage leaves each replica
its own figures and never raises."""

from __future__ import annotations

import pytest

from gateway.latency import LatencyWindow
from gateway.state import InProcessState, RedisState

pytestmark = pytest.mark.integration


async def test_a_slow_backend_seen_by_one_replica_is_slow_for_another(
    redis_url: str, redis_prefix: str
) -> None:
    a_state, b_state = RedisState(redis_url, redis_prefix), RedisState(redis_url, redis_prefix)
    a, b = LatencyWindow(state=a_state), LatencyWindow(state=b_state)
    b.want(["slow"])  # the runtime wants every configured backend
    try:
        for _ in range(30):
            a.observe("slow", 900.0)
            b.observe("fast", 20.0)
        assert b.p95("slow") is None  # nothing pushed yet, nothing of its own
        assert a.p95("slow") == 900.0  # its own, before any sync
        await a.sync()
        await b.sync()
        assert b.p95("slow") == 900.0  # replica A's samples
        assert a.p95("fast") is None  # first asked about: read from the next refresh on
        await a.sync()
        assert a.p95("fast") == 20.0  # and the other way round
    finally:
        await a_state.close()
        await b_state.close()


async def test_the_merged_window_keeps_the_newest_samples_of_all_replicas(
    redis_url: str, redis_prefix: str
) -> None:
    states = [RedisState(redis_url, redis_prefix) for _ in range(2)]
    a, b = (LatencyWindow(size=40, state=s) for s in states)
    try:
        for _ in range(40):
            a.observe("x", 1000.0)
        await a.sync()
        for _ in range(40):
            b.observe("x", 10.0)  # the newest 40 of both: all of B's
        await b.sync()
        await a.sync()
        assert a.p95("x") == 10.0
        assert len(await states[0].latency_read(["x"], 60_000)) == 1
        assert len((await states[0].latency_read(["x"], 60_000))["x"]) == 40
    finally:
        for s in states:
            await s.close()


async def test_old_samples_stop_counting(redis_url: str, redis_prefix: str) -> None:
    state = RedisState(redis_url, redis_prefix)
    try:
        await state.latency_push({"x": [5.0] * 3}, 10, 60_000)
        assert (await state.latency_read(["x", "y"], 60_000)) == {"x": [5.0] * 3, "y": []}
        import asyncio

        await asyncio.sleep(0.05)
        assert (await state.latency_read(["x"], 20))["x"] == []
    finally:
        await state.close()


async def test_redis_down_falls_back_to_this_replicas_window() -> None:
    state = RedisState("redis://127.0.0.1:1/0", "tg:none:", timeout_s=0.2)
    window = LatencyWindow(state=state)
    try:
        for _ in range(25):
            window.observe("b", 300.0)
        await window.sync()  # never raises
        assert window.p95("b") == 300.0
    finally:
        await state.close()


async def test_in_process_state_keeps_the_same_contract() -> None:
    state = InProcessState()
    await state.latency_push({"b": [1.0, 2.0, 3.0]}, 2, 60_000)
    assert await state.latency_read(["b", "c"], 60_000) == {"b": [2.0, 3.0], "c": []}
