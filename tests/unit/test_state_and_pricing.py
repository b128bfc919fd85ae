"""Budget ledger arithmetic, circuit-breaker state machine, and pricing precedence."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from gateway.config import BackendConfig
from gateway.pricing import resolve_price
from gateway.state import BreakerSettings, InProcessState, from_nano, to_nano
from tests.support.fakes import FakeCaller


def test_nano_usd_round_trip_is_exact() -> None:
    assert from_nano(to_nano(Decimal("0.0000123"))) == Decimal("0.0000123")
    assert to_nano(Decimal("1e-10"), round_up=True) == 1


def test_reservations_never_exceed_the_limit_under_concurrency() -> None:
    async def run() -> int:
        state = InProcessState()
        results = await asyncio.gather(
            *(state.budget_reserve("k", 100, 7, f"h{i}", 60_000) for i in range(50))
        )
        _spent, reserved = await state.budget_spent("k")
        assert reserved == 7 * sum(results) <= 100
        return sum(results)

    assert asyncio.run(run()) == 14


def test_breaker_opens_half_opens_and_closes() -> None:
    async def run() -> None:
        state = InProcessState()
        cfg = BreakerSettings(failure_threshold=2, window_s=60, cooldown_s=0.05)
        assert not await state.breaker_record("b", False, cfg)
        assert await state.breaker_record("b", False, cfg)  # threshold reached: open
        assert not await state.breaker_allows("b")
        await asyncio.sleep(0.06)
        assert await state.breaker_allows("b")  # half-open: one probe allowed
        assert await state.breaker_record("b", False, cfg)  # probe failed: open again at once
        await asyncio.sleep(0.06)
        assert await state.breaker_allows("b")
        await state.breaker_record("b", True, cfg)  # probe succeeded: closed
        assert not await state.breaker_record("b", False, cfg)  # needs the full threshold again

    asyncio.run(run())


def test_half_open_breaker_lets_one_probe_through() -> None:
    async def run() -> None:
        state = InProcessState()
        cfg = BreakerSettings(failure_threshold=1, window_s=60, cooldown_s=0.05)
        assert await state.breaker_record("b", False, cfg)
        await asyncio.sleep(0.06)
        claims = await asyncio.gather(*(state.breaker_allows("b", 100) for _ in range(20)))
        assert sum(claims) == 1  # one probe; the others skip the backend
        assert not await state.breaker_allows("b")
        await asyncio.sleep(0.11)
        assert await state.breaker_allows("b", 100)  # the probe's lease lapsed: another goes
        await state.breaker_record("b", True, cfg)  # it succeeded: closed for everyone
        assert all(await asyncio.gather(*(state.breaker_allows("b", 100) for _ in range(5))))

    asyncio.run(run())


def test_price_precedence_and_self_hosted() -> None:
    caller = FakeCaller()
    cfg = BackendConfig(
        name="x",
        model="openai/x",
        input_cost_per_token=Decimal(1),
        output_cost_per_token=Decimal(2),
    )
    price = resolve_price(cfg, caller)
    assert price is not None and price.source == "config" and price.cost(3, 4) == 11
    gpu = BackendConfig.model_validate(
        {
            "name": "gpu",
            "model": "hosted_vllm/m",
            "self_hosted": {
                "gpu_hour_usd": "3.6",
                "output_tokens_per_second": 1000,
                "input_tokens_per_second": 10000,
            },
        }
    )
    price = resolve_price(gpu, caller)
    assert price is not None and price.source == "self_hosted"
    assert price.output_per_token == Decimal("0.000001") and price.input_per_token == Decimal(
        "1E-7"
    )
    assert resolve_price(BackendConfig(name="n", model="openai/unknown"), caller) is None


def test_writer_spools_a_batch_cancelled_mid_write(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """close() during a slow commit: the batch in flight is spooled, never dropped."""
    from datetime import UTC, datetime

    from gateway.store.writer import RecordWriter

    class SlowEngine:
        class dialect:
            name = "sqlite"

    async def run() -> list:  # type: ignore[type-arg]
        writer = RecordWriter(SlowEngine(), tmp_path / "spool", flush_interval_s=0.01)  # type: ignore[arg-type]

        async def slow_write(attempts, tasks):  # type: ignore[no-untyped-def]
            await asyncio.sleep(10)

        async def failing_write(attempts, tasks):  # type: ignore[no-untyped-def]
            raise ConnectionError("store down")

        writer._write = slow_write  # type: ignore[method-assign]
        await writer.start()
        now = datetime.now(UTC)
        writer.submit_attempt({"id": "a1", "created_at": now, "cost_usd": Decimal("0.1")})
        await asyncio.sleep(0.1)  # the loop has taken the row and is writing it
        writer._write = failing_write  # type: ignore[method-assign]
        await writer.close()
        return writer.spool_files()

    files = asyncio.run(run())
    assert len(files) == 1 and '"a1"' in files[0].read_text()


def test_a_released_probe_lets_the_next_caller_probe() -> None:
    async def run() -> None:
        state = InProcessState()
        cfg = BreakerSettings(failure_threshold=1, window_s=30, cooldown_s=0.01)
        assert await state.breaker_record("b", False, cfg)
        await asyncio.sleep(0.02)
        assert await state.breaker_allows("b", 60_000)
        assert not await state.breaker_allows("b", 60_000)
        await state.breaker_release("b")
        assert await state.breaker_allows("b", 60_000)

    asyncio.run(run())
