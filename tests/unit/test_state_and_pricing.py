"""Budget ledger arithmetic, circuit-breaker state machine, and pricing precedence."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from gateway.config import BackendConfig
from gateway.pricing import resolve_price
from gateway.state import BreakerSettings, InProcessState, from_nano, to_nano
from tests.fakes import FakeCaller


def test_nano_usd_round_trip_is_exact() -> None:
    assert from_nano(to_nano(Decimal("0.0000123"))) == Decimal("0.0000123")
    assert to_nano(Decimal("1e-10"), round_up=True) == 1


def test_reservations_never_exceed_the_limit_under_concurrency() -> None:
    async def run() -> int:
        state = InProcessState()
        results = await asyncio.gather(*(state.budget_reserve("k", 100, 7) for _ in range(50)))
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
