"""PredictorService: micro-batching in one worker thread, LRU cache, timeout -> None."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from types import MappingProxyType

import pytest

from predictors.service import Prediction, PredictorService


class StubPredictor:
    """Records each batch it is given and how long it takes; no model involved."""

    version = "stub-1"
    profiles = ["cheap", "premium"]

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def predict_batch(self, prompts: Sequence[str]) -> list[Prediction]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(prompts))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        return [
            Prediction(len(p) / 100, MappingProxyType({"cheap": 0.5, "premium": 0.9}))
            for p in prompts
        ]


async def test_concurrent_calls_are_micro_batched_in_one_worker_thread() -> None:
    stub = StubPredictor(delay_s=0.05)
    svc = PredictorService(stub, max_batch=64, max_wait_ms=20)  # type: ignore[arg-type]
    await svc.start()
    try:
        prompts = [f"prompt number {i}" for i in range(40)]
        results = await asyncio.gather(*(svc.predict(p, timeout_s=5.0) for p in prompts))
    finally:
        await svc.close()
    assert all(r is not None for r in results)
    assert results[7] is not None and results[7].complexity == pytest.approx(len(prompts[7]) / 100)
    assert len(stub.batches) < 10  # 40 calls, far fewer model calls
    assert max(len(b) for b in stub.batches) > 1
    assert stub.threads == {"tollgate-predictor"}


async def test_cache_hit_skips_the_model() -> None:
    stub = StubPredictor()
    svc = PredictorService(stub, cache_size=10)  # type: ignore[arg-type]
    await svc.start()
    try:
        a = await svc.predict("same prompt", timeout_s=5.0)
        b = await svc.predict("same prompt", timeout_s=5.0)
    finally:
        await svc.close()
    assert a == b and len(stub.batches) == 1 and svc.stats.cache_hits == 1


async def test_cache_is_lru_bounded() -> None:
    stub = StubPredictor()
    svc = PredictorService(stub, cache_size=2)  # type: ignore[arg-type]
    await svc.start()
    try:
        for p in ("a", "b", "c", "a"):
            await svc.predict(p, timeout_s=5.0)
    finally:
        await svc.close()
    assert len(stub.batches) == 4  # "a" was evicted by "c"


async def test_timeout_returns_none_without_blocking_the_loop() -> None:
    stub = StubPredictor(delay_s=0.5)
    svc = PredictorService(stub)  # type: ignore[arg-type]
    await svc.start()
    try:
        t0 = time.perf_counter()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while time.perf_counter() - t0 < 0.05:
                ticks += 1
                await asyncio.sleep(0.001)

        result, _ = await asyncio.gather(svc.predict("slow", timeout_s=0.05), ticker())
        elapsed = time.perf_counter() - t0
    finally:
        await svc.close()
    assert result is None
    assert elapsed < 0.3  # did not wait for the 0.5 s model call
    assert ticks > 5  # the event loop kept running meanwhile
    assert svc.stats.timeouts == 1


async def test_model_error_returns_none() -> None:
    svc = PredictorService(StubPredictor(fail=True))  # type: ignore[arg-type]
    await svc.start()
    try:
        assert await svc.predict("x", timeout_s=5.0) is None
    finally:
        await svc.close()
    assert svc.stats.errors == 1
