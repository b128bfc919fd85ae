"""The response cache's storage in the in-process state (gateway.state.memory): TTL, the LRU
byte bound, and the bounded per-scope vectors."""

from __future__ import annotations

import asyncio

import pytest

from gateway.state import memory
from gateway.state.memory import InProcessState


async def test_answers_expire_with_their_ttl() -> None:
    state = InProcessState()
    await state.cache_put("k", "v", ttl_ms=50)
    assert await state.cache_get("k") == "v"
    await asyncio.sleep(0.08)
    assert await state.cache_get("k") is None
    assert await state.cache_get("never") is None


async def test_least_recently_used_answers_go_past_the_byte_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "CACHE_MAX_BYTES", 30)
    state = InProcessState()
    for k in "abc":
        await state.cache_put(k, "x" * 10, ttl_ms=60_000)
    assert await state.cache_get("a") == "x" * 10  # a is now the most recently used
    await state.cache_put("d", "y" * 10, ttl_ms=60_000)
    assert await state.cache_get("b") is None  # b was the least recently used
    assert [await state.cache_get(k) for k in "acd"] == ["x" * 10, "x" * 10, "y" * 10]


async def test_a_scope_keeps_its_newest_vectors_until_they_expire() -> None:
    state = InProcessState()
    for i in range(5):
        await state.cache_vector_add("s", f"e{i}", f"v{i}", ttl_ms=60_000, keep=3)
    assert await state.cache_vectors("s") == {"e2": "v2", "e3": "v3", "e4": "v4"}
    await state.cache_vector_add("s", "short", "vs", ttl_ms=30, keep=3)
    await asyncio.sleep(0.05)
    assert "short" not in await state.cache_vectors("s")
    assert await state.cache_vectors("other") == {}
